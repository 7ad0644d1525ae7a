//! What a client asks the daemon: [`Request`], one struct per command, and [`Call`], which ties
//! each command to the type of its reply.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::history::{Log, LogReply, Restore, RestoreReply};
use crate::members::{Members, MembersReply, Remove};
use crate::pairing::{
    Approve, Deny, Invite, Pair, PairCancel, PairCancelReply, PairWait, PairWaitReply, PairWith,
    PairWithReply, PairWithWait,
};
use crate::ping::{Ping, PingReply};
use crate::reply::{GcReply, PeerRef, PeersReply, UnmountReply, VerifyReply};
use crate::status::StatusReply;
use crate::storage::{Free, FreeReply, Ls, LsReply, Pin, PinReply, Unpin};

/// A request on the wire: `{"cmd": "<command>", ...its fields}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// `{"cmd":"status"}`.
    Status(Status),
    /// `{"cmd":"verify"}`.
    Verify(Verify),
    /// `{"cmd":"gc"}`.
    Gc(Gc),
    /// `{"cmd":"unmount"}`.
    Unmount(Unmount),
    /// `{"cmd":"pair","expires_secs":600,"yes":false,"approve_within_secs":null,"png":null}`.
    Pair(Pair),
    /// `{"cmd":"pair_wait","invite":1,"wait_secs":1}`.
    PairWait(PairWait),
    /// `{"cmd":"pair_with","payload":"fybrk1:..."}`.
    PairWith(PairWith),
    /// `{"cmd":"pair_with_wait","join":1,"wait_secs":1}`.
    PairWithWait(PairWithWait),
    /// `{"cmd":"approve","id":"AB12"}`.
    Approve(Approve),
    /// `{"cmd":"deny","id":"AB12"}`.
    Deny(Deny),
    /// `{"cmd":"pair_cancel","invite":null}`.
    PairCancel(PairCancel),
    /// `{"cmd":"peers"}`.
    Peers(Peers),
    /// `{"cmd":"unpair","id":"..."}` (an alias of `remove`).
    Unpair(Unpair),
    /// `{"cmd":"members"}`.
    Members(Members),
    /// `{"cmd":"remove","id":"..."}`.
    Remove(Remove),
    /// `{"cmd":"log","path":"docs/a.txt","limit":null}`.
    Log(Log),
    /// `{"cmd":"restore","path":"docs","at_ns":1764669600000000000,"version":null,"to":null}`.
    Restore(Restore),
    /// `{"cmd":"ping","id":"laptop","wait_ms":3000}`.
    Ping(Ping),
    /// `{"cmd":"pin","paths":["docs"]}`.
    Pin(Pin),
    /// `{"cmd":"unpin","paths":["docs"]}`.
    Unpin(Unpin),
    /// `{"cmd":"free","paths":["videos"]}`.
    Free(Free),
    /// `{"cmd":"ls","path":"docs"}`.
    Ls(Ls),
}

/// A command and the type of the daemon's answer to it.
pub trait Call: Into<Request> {
    /// What the daemon answers (unless it answers with an error).
    type Reply: Serialize + DeserializeOwned;
}

/// The folder, this device, its network side and its peers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status;

/// Re-read, decrypt and re-hash every chunk; check every record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verify;

/// Free the chunks no file references any more.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gc;

/// Unmount the folder and stop the daemon (it answers first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unmount;

/// The paired devices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peers;

/// Remove a paired device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unpair {
    /// Its id, a unique prefix of its id, or its name.
    pub id: String,
}

/// `Request::$variant($ty)` from `$ty`, and `$ty`'s reply type.
macro_rules! call {
    ($($ty:ident => $reply:ty),* $(,)?) => {$(
        impl From<$ty> for Request {
            fn from(r: $ty) -> Request {
                Request::$ty(r)
            }
        }
        impl Call for $ty {
            type Reply = $reply;
        }
    )*};
}

call! {
    Status => StatusReply,
    Verify => VerifyReply,
    Gc => GcReply,
    Unmount => UnmountReply,
    Pair => Invite,
    PairWait => PairWaitReply,
    PairWith => PairWithReply,
    PairWithWait => PairWithReply,
    Approve => PeerRef,
    Deny => PeerRef,
    PairCancel => PairCancelReply,
    Peers => PeersReply,
    Unpair => PeerRef,
    Members => MembersReply,
    Remove => PeerRef,
    Log => LogReply,
    Restore => RestoreReply,
    Ping => PingReply,
    Pin => PinReply,
    Unpin => PinReply,
    Free => FreeReply,
    Ls => LsReply,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire form of every request, as today's clients send it.
    #[test]
    fn requests_keep_their_wire_form() {
        let cases: [(Request, &str); 14] = [
            (
                Ping {
                    id: "laptop".into(),
                    wait_ms: 3000,
                }
                .into(),
                r#"{"cmd":"ping","id":"laptop","wait_ms":3000}"#,
            ),
            (Status.into(), r#"{"cmd":"status"}"#),
            (Verify.into(), r#"{"cmd":"verify"}"#),
            (Gc.into(), r#"{"cmd":"gc"}"#),
            (Unmount.into(), r#"{"cmd":"unmount"}"#),
            (
                Pair::expiring(600).into(),
                r#"{"cmd":"pair","expires_secs":600,"yes":false,"approve_within_secs":null,"png":null}"#,
            ),
            (
                PairWithWait {
                    join: 2,
                    wait_secs: 1,
                }
                .into(),
                r#"{"cmd":"pair_with_wait","join":2,"wait_secs":1}"#,
            ),
            (
                Approve { id: "AB12".into() }.into(),
                r#"{"cmd":"approve","id":"AB12"}"#,
            ),
            (
                Deny { id: "AB12".into() }.into(),
                r#"{"cmd":"deny","id":"AB12"}"#,
            ),
            (
                PairCancel { invite: None }.into(),
                r#"{"cmd":"pair_cancel","invite":null}"#,
            ),
            (
                PairWait {
                    invite: 3,
                    wait_secs: 1,
                }
                .into(),
                r#"{"cmd":"pair_wait","invite":3,"wait_secs":1}"#,
            ),
            (
                PairWith {
                    payload: "fybrk1:abc".into(),
                }
                .into(),
                r#"{"cmd":"pair_with","payload":"fybrk1:abc"}"#,
            ),
            (Peers.into(), r#"{"cmd":"peers"}"#),
            (
                Unpair {
                    id: "laptop".into(),
                }
                .into(),
                r#"{"cmd":"unpair","id":"laptop"}"#,
            ),
        ];
        for (req, wire) in cases {
            assert_eq!(serde_json::to_string(&req).unwrap(), wire);
            assert_eq!(serde_json::from_str::<Request>(wire).unwrap(), req);
        }
    }

    #[test]
    fn older_pair_requests_still_read() {
        let old: Request = serde_json::from_str(r#"{"cmd":"pair","expires_secs":60}"#).unwrap();
        assert_eq!(old, Pair::expiring(60).into());
    }

    #[test]
    fn unknown_commands_and_missing_fields_are_errors() {
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"format"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"pair"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"expires_secs":1}"#).is_err());
    }
}
