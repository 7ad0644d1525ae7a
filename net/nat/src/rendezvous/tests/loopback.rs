//! The real thing on 127.0.0.1: a server task and two client drivers on their own UDP sockets.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

use super::key;
use crate::identity::DeviceId;
use crate::rendezvous::{
    is_rendezvous, run_server_with, spawn_client, Client, ClientConfig, ClientEvent, ClientHandle,
    PunchPath, ServerConfig, WallClock,
};
use crate::tls::{AllowList, PeerPolicy};

/// A device: its socket's address, the driver's handle and a task that records its events.
struct Device {
    id: DeviceId,
    addr: SocketAddr,
    handle: ClientHandle,
    registered: oneshot::Receiver<()>,
    /// When the driver reported `PunchStarted`, and the `Punched` path.
    punch: mpsc::UnboundedReceiver<(Instant, Option<PunchPath>)>,
}

/// Starts a device like the daemon will: one socket, a reader that passes rendezvous datagrams
/// to the driver, and a send function writing to the same socket.
async fn device(server: SocketAddr, policy: Arc<dyn PeerPolicy>) -> io::Result<Device> {
    let std_socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    std_socket.set_nonblocking(true)?;
    // Send through a std clone of the socket: a plain non-blocking send_to. (tokio's
    // `try_send_to` reports WouldBlock until its reactor has seen the socket writable, which
    // would drop the very first Register.)
    let sender = std_socket.try_clone()?;
    let socket = Arc::new(UdpSocket::from_std(std_socket)?);
    let addr = socket.local_addr()?;
    let (to_driver, incoming) = mpsc::channel(256);
    let reader = Arc::clone(&socket);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            let (len, from) = match reader.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(_) => break,
            };
            if is_rendezvous(&buf[..len])
                && to_driver.send((from, buf[..len].to_vec())).await.is_err()
            {
                break;
            }
        }
    });
    let send = move |to: SocketAddr, bytes: &[u8]| sender.send_to(bytes, to).map(|_| ());
    let now = Instant::now();
    let client = Client::new(
        key(),
        ClientConfig {
            server,
            lan: vec![addr],
        },
        policy,
        now,
        WallClock::system(now),
    );
    let id = client.id();
    let (handle, mut events, _task) = spawn_client(client, send, incoming);
    let (registered_tx, registered) = oneshot::channel();
    let (punch_tx, punch) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut registered_tx = Some(registered_tx);
        while let Some(event) = events.recv().await {
            let now = Instant::now();
            match event {
                ClientEvent::Registered { .. } => {
                    if let Some(tx) = registered_tx.take() {
                        let _ = tx.send(());
                    }
                }
                ClientEvent::PunchStarted { .. } => {
                    let _ = punch_tx.send((now, None));
                }
                ClientEvent::Punched { path, .. } => {
                    let _ = punch_tx.send((now, Some(path)));
                }
                _ => {}
            }
        }
    });
    Ok(Device {
        id,
        addr,
        handle,
        registered,
        punch,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_meet_through_a_real_server_on_loopback() {
    let server_socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind server");
    let server_addr = server_socket.local_addr().expect("server addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(run_server_with(
        server_socket,
        ServerConfig::default(),
        async move {
            let _ = stopped.await;
        },
    ));

    let a = device(server_addr, Arc::new(AllowList::new()))
        .await
        .expect("device a");
    // B accepts introductions from A (they are paired).
    let b = device(server_addr, Arc::new(AllowList::with_ids([a.id])))
        .await
        .expect("device b");
    let Device {
        id: a_id,
        addr: a_addr,
        handle: a_handle,
        registered: a_reg,
        punch: mut a_punch,
    } = a;
    let Device {
        id: b_id,
        addr: b_addr,
        registered: b_reg,
        punch: mut b_punch,
        handle: b_handle,
    } = b;
    timeout(Duration::from_secs(5), a_reg)
        .await
        .expect("A registers in time")
        .expect("A events");
    timeout(Duration::from_secs(5), b_reg)
        .await
        .expect("B registers in time")
        .expect("B events");

    let path = timeout(Duration::from_secs(5), a_handle.connect(b_id))
        .await
        .expect("connect finishes in time")
        .expect("A finds a path to B");
    assert_eq!(path.addr, b_addr, "A talks to B's socket");

    // Both were told at (nearly) the same moment.
    let (a_started, a_path) = timeout(Duration::from_secs(1), a_punch.recv())
        .await
        .unwrap()
        .unwrap();
    let (b_started, b_path) = timeout(Duration::from_secs(1), b_punch.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        a_path.is_none() && b_path.is_none(),
        "PunchStarted comes first"
    );
    let gap = if a_started > b_started {
        a_started - b_started
    } else {
        b_started - a_started
    };
    assert!(
        gap < Duration::from_millis(100),
        "Punch arrived {gap:?} apart"
    );

    // B found the path back to A.
    let (_, b_path) = timeout(Duration::from_secs(5), b_punch.recv())
        .await
        .unwrap()
        .unwrap();
    let b_path = b_path.expect("B punched");
    assert_eq!(b_path.addr, a_addr, "B talks to A's socket");
    assert_ne!(a_id, b_id);

    drop((a_handle, b_handle));
    let _ = stop.send(());
    timeout(Duration::from_secs(5), server)
        .await
        .expect("server stops")
        .expect("server task")
        .expect("server ran without I/O errors");
}
