//! The daemon's side: [`Handler`] answers each command with its reply type, and [`answer`]
//! turns a request line into a reply line with it. The socket I/O (a thread per connection, so
//! a long `verify` never blocks `status`) stays in the daemon.

use std::fmt::Display;

use crate::history::{Log, LogReply, Restore, RestoreReply};
use crate::members::{Members, MembersReply, Remove};
use crate::pairing::{
    Approve, Deny, Invite, Pair, PairCancel, PairCancelReply, PairWait, PairWaitReply, PairWith,
    PairWithReply, PairWithWait,
};
use crate::ping::{Ping, PingReply};
use crate::reply::{ErrorReply, GcReply, PeerRef, PeersReply, UnmountReply, VerifyReply};
use crate::request::{Call, Gc, Peers, Request, Status, Unmount, Unpair, Verify};
use crate::status::StatusReply;
use crate::storage::{Free, FreeReply, Ls, LsReply, Pin, PinReply, Unpin};

/// What the daemon does for each command. [`answer`] checks at compile time that each method
/// returns its command's [`Call::Reply`].
pub trait Handler {
    /// A failure, sent as [`ErrorReply`] (formatted with `{:#}`, so an `anyhow::Error` shows
    /// its whole chain).
    type Error: Display;
    /// [`Status`].
    fn status(&self, req: Status) -> Result<StatusReply, Self::Error>;
    /// [`Verify`].
    fn verify(&self, req: Verify) -> Result<VerifyReply, Self::Error>;
    /// [`Gc`].
    fn gc(&self, req: Gc) -> Result<GcReply, Self::Error>;
    /// [`Unmount`]: answer, then unmount.
    fn unmount(&self, req: Unmount) -> Result<UnmountReply, Self::Error>;
    /// [`Pair`].
    fn pair(&self, req: Pair) -> Result<Invite, Self::Error>;
    /// [`PairWait`].
    fn pair_wait(&self, req: PairWait) -> Result<PairWaitReply, Self::Error>;
    /// [`PairWith`].
    fn pair_with(&self, req: PairWith) -> Result<PairWithReply, Self::Error>;
    /// [`PairWithWait`].
    fn pair_with_wait(&self, req: PairWithWait) -> Result<PairWithReply, Self::Error>;
    /// [`Approve`].
    fn approve(&self, req: Approve) -> Result<PeerRef, Self::Error>;
    /// [`Deny`].
    fn deny(&self, req: Deny) -> Result<PeerRef, Self::Error>;
    /// [`PairCancel`].
    fn pair_cancel(&self, req: PairCancel) -> Result<PairCancelReply, Self::Error>;
    /// [`Peers`].
    fn peers(&self, req: Peers) -> Result<PeersReply, Self::Error>;
    /// [`Unpair`].
    fn unpair(&self, req: Unpair) -> Result<PeerRef, Self::Error>;
    /// [`Members`].
    fn members(&self, req: Members) -> Result<MembersReply, Self::Error>;
    /// [`Remove`].
    fn remove(&self, req: Remove) -> Result<PeerRef, Self::Error>;
    /// [`Log`].
    fn log(&self, req: Log) -> Result<LogReply, Self::Error>;
    /// [`Restore`].
    fn restore(&self, req: Restore) -> Result<RestoreReply, Self::Error>;
    /// [`Ping`].
    fn ping(&self, req: Ping) -> Result<PingReply, Self::Error>;
    /// [`Pin`]: pin, then fetch what the pinned files lack.
    fn pin(&self, req: Pin) -> Result<PinReply, Self::Error>;
    /// [`Unpin`].
    fn unpin(&self, req: Unpin) -> Result<PinReply, Self::Error>;
    /// [`Free`].
    fn free(&self, req: Free) -> Result<FreeReply, Self::Error>;
    /// [`Ls`].
    fn ls(&self, req: Ls) -> Result<LsReply, Self::Error>;
}

/// The reply line (ending in `\n`) to the request line `line`.
pub fn answer(line: &str, h: &impl Handler) -> String {
    let mut out = match serde_json::from_str::<Request>(line) {
        Ok(req) => dispatch(req, h),
        Err(e) => error(format!("unknown request: {e}")),
    };
    out.push('\n');
    out
}

fn dispatch<H: Handler>(req: Request, h: &H) -> String {
    match req {
        Request::Status(r) => encode::<Status, H>(h.status(r)),
        Request::Verify(r) => encode::<Verify, H>(h.verify(r)),
        Request::Gc(r) => encode::<Gc, H>(h.gc(r)),
        Request::Unmount(r) => encode::<Unmount, H>(h.unmount(r)),
        Request::Pair(r) => encode::<Pair, H>(h.pair(r)),
        Request::PairWait(r) => encode::<PairWait, H>(h.pair_wait(r)),
        Request::PairWith(r) => encode::<PairWith, H>(h.pair_with(r)),
        Request::PairWithWait(r) => encode::<PairWithWait, H>(h.pair_with_wait(r)),
        Request::Approve(r) => encode::<Approve, H>(h.approve(r)),
        Request::Deny(r) => encode::<Deny, H>(h.deny(r)),
        Request::PairCancel(r) => encode::<PairCancel, H>(h.pair_cancel(r)),
        Request::Peers(r) => encode::<Peers, H>(h.peers(r)),
        Request::Unpair(r) => encode::<Unpair, H>(h.unpair(r)),
        Request::Members(r) => encode::<Members, H>(h.members(r)),
        Request::Remove(r) => encode::<Remove, H>(h.remove(r)),
        Request::Log(r) => encode::<Log, H>(h.log(r)),
        Request::Restore(r) => encode::<Restore, H>(h.restore(r)),
        Request::Ping(r) => encode::<Ping, H>(h.ping(r)),
        Request::Pin(r) => encode::<Pin, H>(h.pin(r)),
        Request::Unpin(r) => encode::<Unpin, H>(h.unpin(r)),
        Request::Free(r) => encode::<Free, H>(h.free(r)),
        Request::Ls(r) => encode::<Ls, H>(h.ls(r)),
    }
}

/// `C`'s reply or the error, as one JSON line (without the newline).
fn encode<C: Call, H: Handler>(r: Result<C::Reply, H::Error>) -> String {
    match r {
        Ok(reply) => serde_json::to_string(&reply)
            .unwrap_or_else(|e| error(format!("cannot encode the reply: {e}"))),
        Err(e) => error(format!("{e:#}")),
    }
}

fn error(message: String) -> String {
    let reply = ErrorReply { error: message };
    // A struct of one string always serializes; the fallback only keeps this total.
    serde_json::to_string(&reply).unwrap_or_else(|_| r#"{"error":"unknown error"}"#.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails everything: enough to see the envelope.
    struct Refuse;

    impl Handler for Refuse {
        type Error = &'static str;
        fn status(&self, _: Status) -> Result<StatusReply, &'static str> {
            Err("refused")
        }
        fn verify(&self, _: Verify) -> Result<VerifyReply, &'static str> {
            Ok(VerifyReply::default())
        }
        fn gc(&self, _: Gc) -> Result<GcReply, &'static str> {
            Err("refused")
        }
        fn unmount(&self, _: Unmount) -> Result<UnmountReply, &'static str> {
            Err("refused")
        }
        fn pair(&self, _: Pair) -> Result<Invite, &'static str> {
            Err("refused")
        }
        fn pair_wait(&self, r: PairWait) -> Result<PairWaitReply, &'static str> {
            Ok(PairWaitReply::waiting(r.invite))
        }
        fn pair_with(&self, _: PairWith) -> Result<PairWithReply, &'static str> {
            Err("refused")
        }
        fn pair_with_wait(&self, _: PairWithWait) -> Result<PairWithReply, &'static str> {
            Err("refused")
        }
        fn approve(&self, _: Approve) -> Result<PeerRef, &'static str> {
            Err("refused")
        }
        fn deny(&self, _: Deny) -> Result<PeerRef, &'static str> {
            Err("refused")
        }
        fn pair_cancel(&self, _: PairCancel) -> Result<PairCancelReply, &'static str> {
            Ok(PairCancelReply::default())
        }
        fn members(&self, _: Members) -> Result<MembersReply, &'static str> {
            Ok(MembersReply::default())
        }
        fn remove(&self, _: Remove) -> Result<PeerRef, &'static str> {
            Err("refused")
        }
        fn peers(&self, _: Peers) -> Result<PeersReply, &'static str> {
            Ok(PeersReply::default())
        }
        fn unpair(&self, r: Unpair) -> Result<PeerRef, &'static str> {
            Ok(PeerRef {
                id: r.id,
                name: "n".into(),
            })
        }
        fn log(&self, _: crate::Log) -> Result<crate::LogReply, &'static str> {
            Err("refused")
        }
        fn restore(&self, _: crate::Restore) -> Result<crate::RestoreReply, &'static str> {
            Err("refused")
        }
        fn ping(&self, _: Ping) -> Result<PingReply, &'static str> {
            Err("refused")
        }
        fn pin(&self, _: Pin) -> Result<PinReply, &'static str> {
            Err("refused")
        }
        fn unpin(&self, _: Unpin) -> Result<PinReply, &'static str> {
            Err("refused")
        }
        fn free(&self, _: Free) -> Result<FreeReply, &'static str> {
            Err("refused")
        }
        fn ls(&self, _: Ls) -> Result<LsReply, &'static str> {
            Err("refused")
        }
    }

    #[test]
    fn replies_errors_and_unknown_requests() {
        assert_eq!(
            answer(r#"{"cmd":"verify"}"#, &Refuse),
            "{\"chunks_checked\":0,\"records_checked\":0,\"problems\":[]}\n"
        );
        assert_eq!(
            answer(r#"{"cmd":"pair_wait","invite":5,"wait_secs":1}"#, &Refuse),
            "{\"waiting\":true,\"expires_unix\":5}\n"
        );
        assert_eq!(
            answer(r#"{"cmd":"unpair","id":"x"}"#, &Refuse),
            "{\"id\":\"x\",\"name\":\"n\"}\n"
        );
        assert_eq!(answer(r#"{"cmd":"peers"}"#, &Refuse), "{\"peers\":[]}\n");
        assert_eq!(
            answer("{\"cmd\":\"status\"}\n", &Refuse),
            "{\"error\":\"refused\"}\n"
        );
        let e = answer(r#"{"cmd":"format"}"#, &Refuse);
        assert!(e.starts_with("{\"error\":\"unknown request: "), "{e}");
        assert!(e.ends_with("\"}\n"), "{e}");
    }
}
