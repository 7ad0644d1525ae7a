//! A close reaches the peer even when the congestion window is full.
//!
//! quinn-proto 0.11.19 gated the packet carrying CONNECTION_CLOSE on the congestion window
//! whenever the space still held unsent stream data, and a closed connection never processes
//! another ACK, so the close was never sent: the peer kept a dead link as "connected" until its
//! idle timeout (30 s). fybrk closes links under load all the time (unpair, a replaced link, an
//! unmount mid-transfer); `net/quinn-proto` carries the fix (quinn PR #2787). This test fails
//! without it.

// Test code: an unwrap that fails is a failing test.
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fybrk_link::identity::DeviceKey;
use fybrk_link::tls::{AllowList, PeerPolicy};
use fybrk_link::transport::{Transport, IDLE_TIMEOUT};
use quinn::{ConnectionError, VarInt};

/// How long the receiver's runtime is frozen: no ACK leaves it, so the sender's window fills.
const FREEZE: Duration = Duration::from_millis(800);
/// Far less than the idle timeout: the close itself must arrive, not the timeout.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);
const CODE: VarInt = VarInt::from_u32(7);

#[test]
fn a_close_under_a_full_congestion_window_reaches_the_peer() {
    assert!(CLOSE_WITHIN < IDLE_TIMEOUT / 2);
    let (a_key, b_key) = (
        DeviceKey::generate().unwrap(),
        DeviceKey::generate().unwrap(),
    );
    let (a_allow, b_allow) = (Arc::new(AllowList::new()), Arc::new(AllowList::new()));
    a_allow.add(b_key.id());
    b_allow.add(a_key.id());
    let b_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b_addr = b_socket.local_addr().unwrap();
    let b_id = b_key.id();

    // The receiver runs on a runtime of its own thread, so blocking that thread stops it whole
    // (endpoint driver included) while the kernel keeps queueing what arrives.
    let (freeze_tx, freeze_rx) = tokio::sync::oneshot::channel::<()>();
    let receiver = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let policy: Arc<dyn PeerPolicy> = b_allow;
            let b = Transport::bind(b_socket, &b_key, policy).unwrap();
            let accepted = b.accept().await.expect("the sender connects");
            freeze_rx.await.unwrap();
            std::thread::sleep(FREEZE);
            let woke = Instant::now();
            let reason = tokio::time::timeout(CLOSE_WITHIN, accepted.connection.closed()).await;
            (reason, woke.elapsed())
        })
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let policy: Arc<dyn PeerPolicy> = a_allow;
        let a = Transport::bind(socket, &a_key, policy).unwrap();
        let (conn, _) = a.connect(b_addr, b_id).await.unwrap();
        freeze_tx.send(()).unwrap();
        // Far more than a congestion window: the space keeps unsent stream data at the close.
        let mut stream = conn.open_uni().await.unwrap();
        let writer = tokio::spawn(async move {
            let _ = stream.write_all(&vec![0x5a; 4 << 20]).await;
        });
        // The window fills within a few milliseconds; nothing is acknowledged while frozen.
        tokio::time::sleep(FREEZE / 4).await;
        conn.close(CODE, b"bye");
        writer.abort();
        // Keep the endpoint (and its socket) alive until the close could have been resent.
        tokio::time::sleep(FREEZE).await;
    });

    let (reason, after) = receiver.join().unwrap();
    match reason {
        Ok(ConnectionError::ApplicationClosed(close)) => {
            assert_eq!(close.error_code, CODE, "the sender's close code");
            assert_eq!(&close.reason[..], b"bye");
        }
        Ok(other) => panic!("the link ended otherwise: {other}"),
        Err(_) => panic!(
            "no CONNECTION_CLOSE reached the receiver within {after:?} of waking: it would \
             show the dead link as connected until its idle timeout"
        ),
    }
}
