//! TURN requests as bytes and answers as verdicts, without I/O: building Allocate, Refresh,
//! CreatePermission and ChannelBind requests (with long-term credentials once challenged) and
//! judging what the server answered (success, "learn the new nonce and try again", or an
//! error).
//!
//! Long-term credentials (RFC 8489 §9.2): the first request goes without; the server answers
//! 401 with a realm and nonce; every later request carries USERNAME, REALM, NONCE and
//! MESSAGE-INTEGRITY under a key derived from user, realm and password. A 438 "stale nonce"
//! brings a fresh nonce and the request is sent again.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use stun_rs::attributes::stun::{MessageIntegrity, Nonce, Realm, UserName};
use stun_rs::attributes::turn::{ChannelNumber, LifeTime, RequestedTrasport, XorPeerAddress};
use stun_rs::methods::{ALLOCATE, CHANNEL_BIND, CREATE_PERMMISSION, REFRESH};
use stun_rs::{
    Algorithm, AlgorithmId, DecoderContextBuilder, HMACKey, MessageClass, MessageDecoderBuilder,
    MessageMethod, StunAttribute, StunMessage, StunMessageBuilder, TransactionId,
};
use tracing::debug;

use super::TurnError;
use crate::stun::{decode_reply, encode, error_code};

/// Re-authentications allowed per request: a 438 (stale nonce) or a 401 after we sent
/// credentials carries a fresh nonce and is worth one more try; a server that keeps saying so is
/// refusing us.
pub(super) const MAX_STALE_NONCE: u32 = 3;

/// Long-term credential state from the server's last challenge.
#[derive(Clone)]
pub(super) struct Auth {
    realm: String,
    nonce: String,
    key: HMACKey,
}

/// The user's credentials and what the server last told us about them, for one server.
pub(super) struct Credentials {
    server: SocketAddr,
    username: String,
    password: String,
    /// From the last challenge; `None` until the first one.
    auth: Option<Auth>,
}

/// What a request asks for. Kept so the request can be built afresh for every try (a new
/// transaction id, the latest nonce).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ask {
    /// A relayed address (UDP).
    Allocate,
    /// `lifetime` more for the allocation; zero deletes it.
    Refresh {
        /// What we ask for.
        lifetime: Duration,
    },
    /// Lets datagrams from these IPs through the relay.
    CreatePermission {
        /// The peers' IPs.
        peers: Vec<IpAddr>,
    },
    /// Binds (or renews) channel `number` to `peer`.
    ChannelBind {
        /// The peer.
        peer: SocketAddr,
        /// The channel number.
        number: u16,
    },
}

impl Ask {
    fn method(&self) -> MessageMethod {
        match self {
            Ask::Allocate => ALLOCATE,
            Ask::Refresh { .. } => REFRESH,
            Ask::CreatePermission { .. } => CREATE_PERMMISSION,
            Ask::ChannelBind { .. } => CHANNEL_BIND,
        }
    }

    /// What we asked for, in words, for error messages.
    pub(super) fn what(&self) -> &'static str {
        match self {
            Ask::Allocate => "the allocation",
            Ask::Refresh { .. } => "the allocation refresh",
            Ask::CreatePermission { .. } => "the permission",
            Ask::ChannelBind { .. } => "the channel binding",
        }
    }

    fn attributes(&self) -> Vec<StunAttribute> {
        match self {
            Ask::Allocate => vec![StunAttribute::from(RequestedTrasport::new(
                stun_rs::protocols::UDP,
            ))],
            Ask::Refresh { lifetime } => {
                let secs = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
                vec![StunAttribute::from(LifeTime::new(secs))]
            }
            // The port of XOR-PEER-ADDRESS is ignored for permissions (RFC 8656 §9).
            Ask::CreatePermission { peers } => peers
                .iter()
                .map(|ip| StunAttribute::from(XorPeerAddress::from(SocketAddr::new(*ip, 0))))
                .collect(),
            Ask::ChannelBind { peer, number } => vec![
                StunAttribute::from(ChannelNumber::new(*number)),
                StunAttribute::from(XorPeerAddress::from(*peer)),
            ],
        }
    }
}

/// How the server answered one try of a request.
pub(super) enum Verdict {
    /// Granted; the response (its integrity checked if we sent credentials).
    Granted(StunMessage),
    /// A challenge or a fresh nonce, now learned: send the request again.
    TryAgain,
    /// Refused, or an answer we cannot use.
    Failed(TurnError),
}

/// One try of a request: its transaction id, and the credentials it carried.
pub(super) struct Try {
    /// Its transaction id.
    pub(super) tid: [u8; 12],
    /// The credentials it was sent with (`None`: not challenged yet).
    auth: Option<Auth>,
    /// Re-authentications so far for this request (see [`MAX_STALE_NONCE`]).
    stale: u32,
}

impl Credentials {
    /// Credentials for `server`, not yet challenged.
    pub(super) fn new(server: SocketAddr, username: String, password: String) -> Self {
        Credentials {
            server,
            username,
            password,
            auth: None,
        }
    }

    fn malformed(&self, reason: impl Into<String>) -> TurnError {
        TurnError::Malformed {
            server: self.server,
            reason: reason.into(),
        }
    }

    /// Builds the first try of `ask` (transaction id `tid`) with the current credentials.
    pub(super) fn first_try(&self, ask: &Ask, tid: [u8; 12]) -> Result<(Try, Vec<u8>), TurnError> {
        self.next_try(ask, tid, 0)
    }

    /// Builds the next try of `ask` after `previous` was answered with [`Verdict::TryAgain`].
    pub(super) fn retry(
        &self,
        ask: &Ask,
        previous: &Try,
        tid: [u8; 12],
    ) -> Result<(Try, Vec<u8>), TurnError> {
        self.next_try(ask, tid, previous.stale)
    }

    fn next_try(&self, ask: &Ask, tid: [u8; 12], stale: u32) -> Result<(Try, Vec<u8>), TurnError> {
        let auth = self.auth.clone();
        let msg = self.build(ask, tid, auth.as_ref())?;
        let bytes = encode(&msg)
            .map_err(|e| self.malformed(format!("cannot encode our own request: {e}")))?;
        Ok((Try { tid, auth, stale }, bytes))
    }

    fn build(
        &self,
        ask: &Ask,
        tid: [u8; 12],
        auth: Option<&Auth>,
    ) -> Result<StunMessage, TurnError> {
        let mut msg = StunMessageBuilder::new(ask.method(), MessageClass::Request)
            .with_transaction_id(TransactionId::from(tid));
        for attr in ask.attributes() {
            msg = msg.with_attribute(attr);
        }
        if let Some(auth) = auth {
            let cred = |e: stun_rs::StunError| TurnError::Credentials(e.to_string());
            msg = msg
                .with_attribute(UserName::new(&self.username).map_err(cred)?)
                .with_attribute(Realm::new(&auth.realm).map_err(|e| self.malformed(e.to_string()))?)
                .with_attribute(Nonce::new(&auth.nonce).map_err(|e| self.malformed(e.to_string()))?)
                .with_attribute(MessageIntegrity::new(auth.key.clone()));
        }
        Ok(msg.build())
    }

    /// Judges `data`, the server's answer to `sent` (a try of `ask`). Learns a new realm and
    /// nonce from a challenge; `stale_nonces` counts the 438s handled.
    pub(super) fn judge(
        &mut self,
        ask: &Ask,
        sent: &mut Try,
        data: &[u8],
        stale_nonces: &mut u64,
    ) -> Verdict {
        match self.judge_inner(ask, sent, data, stale_nonces) {
            Ok(verdict) => verdict,
            Err(e) => Verdict::Failed(e),
        }
    }

    fn judge_inner(
        &mut self,
        ask: &Ask,
        sent: &mut Try,
        data: &[u8],
        stale_nonces: &mut u64,
    ) -> Result<Verdict, TurnError> {
        let decoder = match &sent.auth {
            Some(a) => MessageDecoderBuilder::default()
                .with_context(
                    DecoderContextBuilder::default()
                        .with_key(a.key.clone())
                        .with_validation()
                        .build(),
                )
                .build(),
            None => MessageDecoderBuilder::default().build(),
        };
        let msg = decode_reply(sent.tid, data, &decoder).map_err(|e| self.malformed(e))?;
        if msg.method() != ask.method() {
            return Err(self.malformed(format!(
                "answer to method {:#06x}, not {}",
                msg.method().as_u16(),
                ask.what()
            )));
        }
        match msg.class() {
            MessageClass::SuccessResponse => {
                // With credentials sent, RFC 8489 §9.2.4 has the server sign its answer; an
                // unsigned "success" could be forged by anyone on the path.
                if sent.auth.is_some() && msg.get::<MessageIntegrity>().is_none() {
                    return Err(self.malformed("a success response without MESSAGE-INTEGRITY"));
                }
                return Ok(Verdict::Granted(msg));
            }
            MessageClass::ErrorResponse => {}
            other => return Err(self.malformed(format!("a {other:?} instead of a response"))),
        }
        let (code, reason) =
            error_code(&msg).ok_or_else(|| self.malformed("an error without ERROR-CODE"))?;
        match code {
            // First contact: the challenge. Or a stale nonce (438), or a 401 after we sent
            // credentials, which some servers use for a nonce they rotated: learn the new
            // realm/nonce and try again, a bounded number of times.
            401 if sent.auth.is_none() => self.learn_challenge(&msg)?,
            401 if sent.stale == 0 => {
                sent.stale += 1;
                self.learn_challenge(&msg)?;
            }
            438 if sent.stale < MAX_STALE_NONCE => {
                sent.stale += 1;
                *stale_nonces += 1;
                debug!(server = %self.server, "stale nonce; retrying with the new one");
                self.learn_challenge(&msg)?;
            }
            401 | 441 => {
                return Err(TurnError::Unauthorized {
                    server: self.server,
                    user: self.username.clone(),
                    code,
                    reason,
                })
            }
            _ => {
                return Err(TurnError::Rejected {
                    server: self.server,
                    request: ask.what(),
                    code,
                    reason,
                })
            }
        }
        Ok(Verdict::TryAgain)
    }

    /// Takes the realm and nonce from a 401/438 and derives the key.
    fn learn_challenge(&mut self, msg: &StunMessage) -> Result<(), TurnError> {
        let realm = match msg.get::<Realm>() {
            Some(attr) => attr
                .as_realm()
                .map_err(|e| self.malformed(e.to_string()))?
                .as_str()
                .to_string(),
            None => match self.auth.as_ref() {
                Some(a) => a.realm.clone(),
                None => return Err(self.malformed("a 401 challenge without REALM")),
            },
        };
        let nonce = msg
            .get::<Nonce>()
            .ok_or_else(|| self.malformed("a challenge without NONCE"))?
            .as_nonce()
            .map_err(|e| self.malformed(e.to_string()))?
            .as_str()
            .to_string();
        let key = match self.auth.as_ref() {
            Some(a) if a.realm == realm => a.key.clone(),
            _ => HMACKey::new_long_term(
                &self.username,
                &realm,
                &self.password,
                Algorithm::from(AlgorithmId::MD5),
            )
            .map_err(|e| TurnError::Credentials(e.to_string()))?,
        };
        self.auth = Some(Auth { realm, nonce, key });
        Ok(())
    }
}

/// The lifetime a response grants, if it says.
pub(super) fn granted_lifetime(msg: &StunMessage) -> Option<Duration> {
    let secs = msg.get::<LifeTime>()?.as_life_time().ok()?.as_u32();
    Some(Duration::from_secs(u64::from(secs)))
}

#[cfg(test)]
mod fuzz_tests;
