//! The Binding client (RFC 8489 §3): one request for our reflexive address, its
//! retransmissions driven by the [`Transaction`] state machine, and decoding of the answer.
//! The same driver ([`transact`]) and helpers serve any STUN-format request to one server.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use stun_rs::attributes::stun::{ErrorCode, MappedAddress, XorMappedAddress};
use stun_rs::methods::BINDING;
use stun_rs::{
    MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, StunMessage, StunMessageBuilder,
    TransactionId,
};
use tokio::time::sleep_until;

use super::transaction::{Outcome, Transaction};
use crate::mux::{Datagram, MuxSocket};

/// Why a STUN query failed.
#[derive(Debug, thiserror::Error)]
pub enum StunError {
    /// The server name did not resolve.
    #[error("cannot resolve STUN server {server}: {source} (check the name and DNS)")]
    Resolve {
        /// The server as configured.
        server: String,
        /// The resolver's reason.
        source: io::Error,
    },
    /// The server has no address of our socket's IP family.
    #[error("STUN server {server} has no address reachable from the socket on {local} (IPv4/IPv6 mismatch)")]
    NoUsableAddress {
        /// The server as configured.
        server: String,
        /// Our socket's address.
        local: SocketAddr,
    },
    /// The request could not be sent.
    #[error("cannot send to STUN server {server}: {source} (is the network up?)")]
    Send {
        /// The server's address.
        server: SocketAddr,
        /// The OS's reason.
        source: io::Error,
    },
    /// No answer in time.
    #[error(
        "no answer from STUN server {server} within {}s: UDP may be blocked on this network, or \
         the server is down (try another with --stun HOST:PORT)", after.as_secs()
    )]
    Timeout {
        /// The server's address.
        server: SocketAddr,
        /// How long we waited.
        after: Duration,
    },
    /// The answer was not a valid STUN response.
    #[error(
        "malformed STUN reply from {server}: {reason} (is that a STUN server? try another with \
         --stun HOST:PORT)"
    )]
    Malformed {
        /// The server's address.
        server: SocketAddr,
        /// What is wrong with the reply.
        reason: String,
    },
    /// The server answered with an error.
    #[error("STUN server {server} refused the Binding request: {code} {reason}")]
    Rejected {
        /// The server's address.
        server: SocketAddr,
        /// STUN error code (e.g. 400).
        code: u16,
        /// The server's reason phrase.
        reason: String,
    },
    /// A success response without our address in it.
    #[error("STUN reply from {server} does not say our address (no XOR-MAPPED-ADDRESS): the server is broken; try another with --stun HOST:PORT")]
    NoMappedAddress {
        /// The server's address.
        server: SocketAddr,
    },
}

/// Why a transaction got no response.
#[derive(Debug)]
pub(crate) enum TransactError {
    Timeout(Duration),
    Send(io::Error),
    /// The socket was dropped while we waited.
    Closed,
}

/// Sends `request` (whose transaction id is `tid`) to `server`, retransmitting as the
/// [`Transaction`] says, and returns the first response with that id.
pub(crate) async fn transact(
    mux: &MuxSocket,
    server: SocketAddr,
    tid: [u8; 12],
    request: Vec<u8>,
) -> Result<Datagram, TransactError> {
    // Registered before the first send, so a fast answer cannot be missed.
    let mut waiter = mux.expect_stun_reply(tid, server);
    let mut transaction = Transaction::new(request, std::time::Instant::now());
    loop {
        let now = std::time::Instant::now();
        transaction.handle_timeout(now);
        while let Some(request) = transaction.poll_transmit(now) {
            mux.send_to(request, server)
                .await
                .map_err(TransactError::Send)?;
        }
        if let Some(Outcome::TimedOut(after)) = transaction.poll_outcome() {
            return Err(TransactError::Timeout(after));
        }
        let Some(deadline) = transaction.poll_timeout() else {
            // Only a response ends it otherwise, and that returns below.
            return Err(TransactError::Closed);
        };
        tokio::select! {
            reply = waiter.recv() => {
                let reply = reply.ok_or(TransactError::Closed)?;
                transaction.handle_response(std::time::Instant::now(), &reply.data);
                return Ok(reply);
            }
            () = sleep_until(deadline.into()) => {}
        }
    }
}

/// A new random transaction id.
pub(crate) fn new_tid() -> [u8; 12] {
    *TransactionId::default().as_bytes()
}

/// Encodes `msg` (requests are small: no attribute we send comes near 1 KiB).
pub(crate) fn encode(msg: &StunMessage) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; 1024];
    let n = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, msg)
        .map_err(|e| e.to_string())?;
    buf.truncate(n);
    Ok(buf)
}

/// Asks `server` for our reflexive address (a Binding request).
pub async fn binding(mux: &MuxSocket, server: SocketAddr) -> Result<SocketAddr, StunError> {
    let tid = new_tid();
    let request = StunMessageBuilder::new(BINDING, MessageClass::Request)
        .with_transaction_id(TransactionId::from(tid))
        .build();
    let request = encode(&request).map_err(|reason| StunError::Malformed {
        server,
        reason: format!("cannot encode our own request: {reason}"),
    })?;
    let reply = transact(mux, server, tid, request)
        .await
        .map_err(|e| match e {
            TransactError::Timeout(after) => StunError::Timeout { server, after },
            TransactError::Send(source) => StunError::Send { server, source },
            TransactError::Closed => StunError::Send {
                server,
                source: io::Error::new(io::ErrorKind::NotConnected, "the socket was closed"),
            },
        })?;
    parse_binding_response(server, tid, &reply.data)
}

/// Decodes any STUN reply to a request with `tid`, or says what is wrong with it.
pub(crate) fn decode_reply(
    tid: [u8; 12],
    data: &[u8],
    decoder: &stun_rs::MessageDecoder,
) -> Result<StunMessage, String> {
    if data.len() < 20 {
        return Err(format!(
            "{} bytes, shorter than the 20-byte STUN header",
            data.len()
        ));
    }
    let (msg, _) = decoder.decode(data).map_err(|e| e.to_string())?;
    if msg.transaction_id().as_bytes() != &tid {
        return Err("its transaction id is not the one we sent".into());
    }
    Ok(msg)
}

/// The error code and reason of an error response.
pub(crate) fn error_code(msg: &StunMessage) -> Option<(u16, String)> {
    let attr = msg.get::<ErrorCode>()?.as_error_code().ok()?;
    let code = attr.error_code();
    Some((code.error_code(), code.reason().to_string()))
}

/// Our reflexive address from a Binding response.
fn parse_binding_response(
    server: SocketAddr,
    tid: [u8; 12],
    data: &[u8],
) -> Result<SocketAddr, StunError> {
    let malformed = |reason: String| StunError::Malformed { server, reason };
    let msg =
        decode_reply(tid, data, &MessageDecoderBuilder::default().build()).map_err(malformed)?;
    if msg.method() != BINDING {
        return Err(malformed(format!(
            "a response to method {:#06x}, not to Binding",
            msg.method().as_u16()
        )));
    }
    match msg.class() {
        MessageClass::SuccessResponse => {}
        MessageClass::ErrorResponse => {
            let (code, reason) = error_code(&msg)
                .ok_or_else(|| malformed("an error response without ERROR-CODE".into()))?;
            return Err(StunError::Rejected {
                server,
                code,
                reason,
            });
        }
        other => return Err(malformed(format!("a {other:?} instead of a response"))),
    }
    if let Some(attr) = msg.get::<XorMappedAddress>() {
        let xor = attr
            .as_xor_mapped_address()
            .map_err(|e| malformed(e.to_string()))?;
        return Ok(*xor.socket_address());
    }
    // RFC 3489 servers answer with MAPPED-ADDRESS only.
    if let Some(attr) = msg.get::<MappedAddress>() {
        let mapped = attr
            .as_mapped_address()
            .map_err(|e| malformed(e.to_string()))?;
        return Ok(*mapped.socket_address());
    }
    Err(StunError::NoMappedAddress { server })
}

#[cfg(test)]
mod fuzz_tests;
