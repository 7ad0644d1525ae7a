//! fybrk's control protocol: what `fybrk` commands ask the running daemon over its control socket
//! (`STATE/control.sock`), what the daemon answers, and what `--json` prints.
//!
//! The wire format is one JSON object per connection each way, each on one line: the client
//! writes a [`Request`] (`{"cmd":"status"}`, `{"cmd":"pair","expires_secs":600}`, ...), the
//! daemon answers with the request's reply type ([`Call::Reply`]) or with an [`ErrorReply`]
//! (`{"error":"..."}`). `--json` prints these same types, so their field names are a scripting
//! interface: they stay stable (see the README's "Scripting interface").
//!
//! This crate owns the types and the plumbing that needs nothing but `std`: no async runtime,
//! no other fybrk crate. The daemon fills the replies and serves the socket; the CLI and the
//! tests read them.
//!
//! # Layout
//!
//! - [`request`]: [`Request`], one struct per command, and [`Call`], which names each
//!   command's reply type.
//! - [`status`]: the reply to `status` ([`StatusReply`]): the folder, the network side
//!   ([`NetworkStatus`]), each peer's link ([`PeerStatus`]).
//! - [`members`]: the folder's member list and removing a device from it.
//! - [`pairing`]: invitations, approving the devices that ask, joining (requests and replies),
//!   and `pair --json`'s first line.
//! - [`storage`]: what this device keeps (`status`'s `storage`), `pin`, `unpin`, `free`, `ls`.
//! - [`ping`]: `fybrk ping`'s request and reply (one attempt each).
//! - [`reply`]: the other replies (verify, gc, unmount, peers, unpair), the error reply, and
//!   `nat-check --json`'s report.
//! - [`history`]: `log` and `restore`.
//! - [`client`]: [`Client`], a blocking typed client over the unix socket.
//! - [`server`]: [`Handler`], one method per command, and [`server::answer`], which turns a
//!   request line into a reply line with it (the daemon does the socket I/O).

pub mod client;
pub mod history;
pub mod members;
pub mod pairing;
pub mod ping;
pub mod reply;
pub mod request;
pub mod server;
pub mod status;
pub mod storage;

pub use client::{Client, ControlError};
pub use history::{Log, LogEntry, LogReply, Restore, RestoreReply};
pub use members::{MemberInfo, Members, MembersReply, Remove};
pub use pairing::{
    Approve, Deny, Invite, InviteShown, JoinRequestInfo, Pair, PairCancel, PairCancelReply,
    PairWait, PairWaitReply, PairWith, PairWithReply, PairWithWait,
};
pub use ping::{Ping, PingReply};
pub use reply::{
    ErrorReply, GcReply, Mapping, MountReply, NatCheckReport, PeerInfo, PeerRef, PeersReply,
    StunAnswer, StunFailure, UnmountReply, VerifyReply,
};
pub use request::{Call, Gc, Peers, Request, Status, Unmount, Unpair, Verify};
pub use server::Handler;
pub use status::{
    ChunkCacheStatus, DhtStatus, MassDeletionAlert, MemberChange, MemberChangeKind, NatStatus,
    NetworkStatus, OperationStatus, PathKind, PeerStatus, PortMappingStatus, Quality, RelayStatus,
    StatusReply,
};
pub use storage::{
    Free, FreeReply, Ls, LsEntry, LsReply, Pin, PinReply, StorageStatus, Unpin, UnreadableFile,
};
