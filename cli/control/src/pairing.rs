//! Pairing on the control socket: making an invitation ([`Pair`]), following it
//! ([`PairWait`]), approving or denying the devices that ask ([`Approve`], [`Deny`]), cancelling
//! it ([`PairCancel`]), and joining another device's folder ([`PairWith`], [`PairWithWait`]).
//!
//! A valid request does not get the folder until a person on the inviting device allows it
//! (or the invitation was made with `yes`). Both sides show the same words ([`JoinRequestInfo::code`]
//! and [`PairWithReply::Waiting`]'s `code`), so the person can tell their device from a stranger
//! holding a leaked invitation.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::reply::PeerRef;

/// Make an invitation into this folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// How long the invitation stays valid, in seconds.
    pub expires_secs: u64,
    /// Approve the first device with a valid proof without asking (`fybrk pair --yes`).
    #[serde(default)]
    pub yes: bool,
    /// How long a request waits for approval, in seconds (`None`: the daemon's default, 120).
    #[serde(default)]
    pub approve_within_secs: Option<u64>,
    /// The QR code's PNG, which the daemon deletes when the invitation ends (used,
    /// cancelled, denied or expired): it holds the secret.
    #[serde(default)]
    pub png: Option<PathBuf>,
}

impl Pair {
    /// An invitation valid for `secs`, asking before any device joins, with no PNG.
    pub fn expiring(secs: u64) -> Pair {
        Pair {
            expires_secs: secs,
            yes: false,
            approve_within_secs: None,
            png: None,
        }
    }
}

/// Wait until something happens to an invitation: a device asks, joins, or it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairWait {
    /// The invitation's number ([`Invite::invite`]).
    pub invite: u64,
    /// How long to wait at most, in seconds, before answering that it is still waiting.
    pub wait_secs: u64,
}

/// Allow the device that asks to join (by a prefix of its id, or its name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approve {
    /// The asking device's id, a unique prefix of it, or its name.
    pub id: String,
}

/// Refuse the device that asks to join; the invitation ends with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deny {
    /// The asking device's id, a unique prefix of it, or its name.
    pub id: String,
}

/// End one invitation (`Some(number)`) or every open one (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairCancel {
    /// Which invitation.
    pub invite: Option<u64>,
}

/// Join the folder of the device that made this invitation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairWith {
    /// The invitation's text (`fybrk1:...`).
    pub payload: String,
}

/// Wait for the answer to a join that is waiting for approval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairWithWait {
    /// The join's number ([`PairWithReply::Waiting`]'s `join`).
    pub join: u64,
    /// How long to wait at most, in seconds, before answering that it is still waiting.
    pub wait_secs: u64,
}

/// `pair`: a new invitation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// The invitation's number on this daemon, for [`PairWait`].
    pub invite: u64,
    /// The text for `fybrk pair-with` (`fybrk1:...`).
    pub payload: String,
    /// The same invitation in the form drawn as a QR code.
    pub qr: String,
    /// When it expires, in unix seconds.
    pub expires_unix: u64,
    /// The addresses it names for reaching this device.
    pub addrs: Vec<SocketAddr>,
}

/// `fybrk pair --json`'s first line: the invitation as shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteShown {
    /// The text for `fybrk pair-with`.
    pub payload: String,
    /// When it expires, in unix seconds.
    pub expires_unix: u64,
    /// Where the QR code was saved as PNG.
    pub png: PathBuf,
}

/// A device that presented a valid proof and waits for a person to allow it: in
/// [`PairWaitReply::Request`], in `status`'s `pair_requests`, and printed by `fybrk pair --json`
/// as one line each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequestInfo {
    /// The invitation it used.
    pub invite: u64,
    /// The device's id (what `fybrk approve` / `fybrk deny` take, or a prefix of it).
    pub id: String,
    /// The name it gives itself (chosen by that device: compare the code, not the name).
    pub name: String,
    /// The words its screen must show too.
    pub code: String,
    /// When the request times out unanswered, in unix seconds.
    pub deadline_unix: u64,
}

/// `pair_wait`: a device joined, one asks, or still waiting. On the wire one of
/// `{"joined": {"id": .., "name": ..}}`, `{"request": {..}}`, or `{"waiting": true,
/// "expires_unix": ..}`; an invitation that ended otherwise (expired, denied, timed out,
/// cancelled) is an [`crate::ErrorReply`] saying so. `fybrk pair --json` prints the `joined`
/// form as its last line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PairWaitReply {
    /// A device joined with it.
    Joined {
        /// That device.
        joined: PeerRef,
    },
    /// A device with a valid proof waits for approval.
    Request {
        /// Who, and the words to compare.
        request: JoinRequestInfo,
    },
    /// Nobody used it yet.
    Waiting {
        /// Always `true`.
        waiting: bool,
        /// When it expires, in unix seconds.
        expires_unix: u64,
    },
}

impl PairWaitReply {
    /// Still waiting for invitation that expires at `expires_unix`.
    pub fn waiting(expires_unix: u64) -> PairWaitReply {
        PairWaitReply::Waiting {
            waiting: true,
            expires_unix,
        }
    }
}

/// `pair_with` and `pair_with_wait`: joined, or waiting for the inviting device's user. On the
/// wire `{"peer": {..}}` or `{"waiting": true, "join": .., "code": .., "inviter": {..},
/// "deadline_unix": ..}`; a refusal is an [`crate::ErrorReply`] that says why and what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PairWithReply {
    /// The folder is joined.
    Joined {
        /// The device whose folder this one joined.
        peer: PeerRef,
    },
    /// The inviting device asks its user; ask again with [`PairWithWait`].
    Waiting {
        /// Always `true`.
        waiting: bool,
        /// This join's number, for [`PairWithWait`].
        join: u64,
        /// The words the inviting device shows for this request.
        code: String,
        /// The device asked.
        inviter: PeerRef,
        /// When the inviting device stops waiting for its user, in unix seconds (its clock).
        deadline_unix: u64,
    },
}

/// `pair_cancel`: how many invitations ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairCancelReply {
    /// Invitations cancelled (a used one is not counted).
    pub cancelled: u64,
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;
    use serde_json::{json, Value};
    use std::fmt::Debug;

    use super::*;

    fn same<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: T, wire: Value) {
        assert_eq!(serde_json::to_value(&value).unwrap(), wire);
        assert_eq!(serde_json::from_value::<T>(wire).unwrap(), value);
    }

    fn laptop() -> PeerRef {
        PeerRef {
            id: "AAAAAAA".into(),
            name: "laptop".into(),
        }
    }

    #[test]
    fn pairing_replies_keep_their_wire_form() {
        same(
            Invite {
                invite: 1,
                payload: "fybrk1:x".into(),
                qr: "FYBRK1:X".into(),
                expires_unix: 99,
                addrs: vec!["127.0.0.1:22100".parse().unwrap()],
            },
            json!({"invite": 1, "payload": "fybrk1:x", "qr": "FYBRK1:X", "expires_unix": 99,
                   "addrs": ["127.0.0.1:22100"]}),
        );
        same(
            InviteShown {
                payload: "fybrk1:x".into(),
                expires_unix: 99,
                png: "/tmp/q.png".into(),
            },
            json!({"payload": "fybrk1:x", "expires_unix": 99, "png": "/tmp/q.png"}),
        );
        same(
            PairWaitReply::waiting(99),
            json!({"waiting": true, "expires_unix": 99}),
        );
        same(
            PairWaitReply::Joined { joined: laptop() },
            json!({"joined": {"id": "AAAAAAA", "name": "laptop"}}),
        );
        let request = JoinRequestInfo {
            invite: 2,
            id: "AAAAAAA".into(),
            name: "laptop".into(),
            code: "acorn bell cedar delta ember".into(),
            deadline_unix: 120,
        };
        same(
            PairWaitReply::Request {
                request: request.clone(),
            },
            json!({"request": {"invite": 2, "id": "AAAAAAA", "name": "laptop",
                               "code": "acorn bell cedar delta ember", "deadline_unix": 120}}),
        );
        same(
            PairWithReply::Joined { peer: laptop() },
            json!({"peer": {"id": "AAAAAAA", "name": "laptop"}}),
        );
        same(
            PairWithReply::Waiting {
                waiting: true,
                join: 3,
                code: "acorn bell cedar delta ember".into(),
                inviter: laptop(),
                deadline_unix: 120,
            },
            json!({"waiting": true, "join": 3, "code": "acorn bell cedar delta ember",
                   "inviter": {"id": "AAAAAAA", "name": "laptop"}, "deadline_unix": 120}),
        );
        same(PairCancelReply { cancelled: 2 }, json!({"cancelled": 2}));
    }
}
