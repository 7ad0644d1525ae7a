//! The driver against a small scripted TURN server on loopback: the client's API end to end
//! without coturn (the coturn tests in `turn/tests.rs` check it against the real thing).

use std::net::SocketAddr;
use std::time::Duration;

use stun_rs::attributes::stun::{
    ErrorCode as ErrorCodeAttr, MessageIntegrity, Nonce, Realm, XorMappedAddress,
};
use stun_rs::attributes::turn::{LifeTime, XorRelayedAddress};
use stun_rs::methods::ALLOCATE;
use stun_rs::{
    Algorithm, AlgorithmId, ErrorCode, HMACKey, MessageClass, MessageDecoderBuilder, StunAttribute,
    StunMessageBuilder,
};
use tokio::net::UdpSocket;

use super::*;
use crate::stun::encode;

const USER: &str = "u";
const PASS: &str = "p";
const REALM: &str = "scripted";

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A TURN server that challenges the first request, then grants everything, on loopback.
/// Returns its address and the relayed address it hands out.
async fn scripted_server() -> (SocketAddr, SocketAddr) {
    let socket = UdpSocket::bind(loopback()).await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let relayed: SocketAddr = "127.0.0.1:61999".parse().expect("addr");
    let key =
        HMACKey::new_long_term(USER, REALM, PASS, Algorithm::from(AlgorithmId::MD5)).expect("key");
    tokio::spawn(async move {
        let decoder = MessageDecoderBuilder::default().build();
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Ok((request, _)) = decoder.decode(&buf[..n]) else {
                continue;
            };
            let reply = StunMessageBuilder::new(request.method(), MessageClass::SuccessResponse)
                .with_transaction_id(*request.transaction_id());
            let reply = if request.get::<MessageIntegrity>().is_none() {
                let code = ErrorCode::new(401, "Unauthorized").expect("code");
                StunMessageBuilder::new(request.method(), MessageClass::ErrorResponse)
                    .with_transaction_id(*request.transaction_id())
                    .with_attribute(StunAttribute::from(ErrorCodeAttr::from(code)))
                    .with_attribute(Realm::new(REALM).expect("realm"))
                    .with_attribute(Nonce::new("n").expect("nonce"))
            } else if request.method() == ALLOCATE {
                reply
                    .with_attribute(XorRelayedAddress::from(relayed))
                    .with_attribute(XorMappedAddress::from(from))
                    .with_attribute(LifeTime::new(600))
                    .with_attribute(MessageIntegrity::new(key.clone()))
            } else {
                reply.with_attribute(MessageIntegrity::new(key.clone()))
            };
            let bytes = encode(&reply.build()).expect("encode");
            let _ = socket.send_to(&bytes, from).await;
        }
    });
    (addr, relayed)
}

fn config(server: SocketAddr) -> TurnConfig {
    format!("turn:{server}?user={USER}&pass={PASS}")
        .parse()
        .expect("turn URL")
}

#[tokio::test]
async fn allocate_bind_unbind_and_close_through_the_driver() {
    let (server, relayed) = scripted_server().await;
    let mux = MuxSocket::bind(loopback()).expect("bind");
    let client = TurnClient::allocate(&mux, &config(server))
        .await
        .expect("allocate");
    assert_eq!(client.relayed_addr(), relayed);
    assert_eq!(client.server_addr(), server);
    assert_eq!(client.mapped_addr(), Some(mux.local_addr().expect("addr")));
    assert!(client.is_active());

    let peer: SocketAddr = "127.0.0.1:4000".parse().expect("addr");
    let channel = client.bind_peer(peer).await.expect("bind");
    assert_eq!(channel, 0x4000);
    let route = mux.relay_route(peer).expect("routed");
    assert_eq!((route.server, route.channel), (server, Some(0x4000)));
    assert_eq!(client.bind_peer(peer).await.expect("renew"), 0x4000);
    client
        .create_permission(&[peer.ip()])
        .await
        .expect("permission");
    client.unbind_peer(peer);
    assert!(mux.relay_route(peer).is_none());

    client.close().await.expect("deallocate");
    assert!(mux.relay_route(peer).is_none());
    // The server is forgotten: a new allocation on it starts from scratch.
    let again = TurnClient::allocate(&mux, &config(server))
        .await
        .expect("allocate again");
    assert!(again.is_active());
}

#[tokio::test]
async fn a_silent_server_fails_the_allocation_after_the_transaction_timeout() {
    let silent = std::net::UdpSocket::bind(loopback()).expect("bind");
    let server = silent.local_addr().expect("addr");
    let mux = MuxSocket::bind(loopback()).expect("bind");
    let started = tokio::time::Instant::now();
    let err = TurnClient::allocate(&mux, &config(server))
        .await
        .expect_err("silence");
    let took = started.elapsed();
    assert!(matches!(err, TurnError::Timeout { .. }), "{err}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_millis(3500),
        "{took:?}"
    );
    assert!(err.to_string().contains("UDP may be blocked"), "{err}");
}
