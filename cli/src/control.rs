//! The daemon's end of the control socket (`STATE/control.sock`, mode 0600 inside a 0700
//! directory: only the owner can connect): one JSON request per connection, one JSON reply.
//!
//! The protocol's types live in `fybrk-control`; [`Control`] answers each command with its
//! typed reply ([`fybrk_control::Handler`]) and [`serve`] does the socket I/O.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use fybrk_control::{
    Gc, GcReply, Handler, Invite, LogReply, PairCancelReply, PairWaitReply, PairWithReply, PeerRef,
    PeersReply, RestoreReply, StatusReply, UnmountReply, VerifyReply,
};
use fybrk_fs::Fs;
use fybrk_net::identity::DeviceId;
use fybrk_store::VerifyReport;

use crate::config::MountOptions;
use crate::node::Node;

/// Unmounts the folder (the daemon exits once the FUSE session ends).
pub type Unmounter = Arc<dyn Fn() -> Result<()> + Send + Sync>;

/// What the daemon answers with.
pub struct Control {
    /// The mounted filesystem (and through it the current store).
    pub fs: Arc<Fs>,
    /// The network side.
    pub node: Arc<Node>,
    /// Where the folder is mounted.
    pub mount_point: PathBuf,
    /// This device's id.
    pub device_id: DeviceId,
    /// This device's name.
    pub device_name: String,
    /// The options the daemon runs with (`status` shows the config file and rendezvous server).
    pub options: MountOptions,
    /// Unmounts.
    pub unmount: Unmounter,
}

impl Handler for Control {
    type Error = anyhow::Error;

    fn status(&self, _: fybrk_control::Status) -> Result<StatusReply> {
        let store = self.fs.store();
        let s = store.stats();
        let ratio = if s.stored_bytes == 0 {
            1.0
        } else {
            s.logical_bytes as f64 / s.stored_bytes as f64
        };
        let folder_id: String = store
            .folder_id()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(StatusReply {
            mount_point: self.mount_point.clone(),
            device_id: self.device_id.to_string(),
            device_name: self.device_name.clone(),
            pid: std::process::id(),
            folder_id,
            files: s.files,
            dirs: s.dirs,
            symlinks: s.symlinks,
            logical_bytes: s.logical_bytes,
            stored_bytes: s.stored_bytes,
            chunks: s.chunks,
            dedup_ratio: ratio,
            sequence: store.sequence(),
            history_bytes: store.history_bytes()?,
            config_file: self.options.config_file.clone(),
            rendezvous: self.options.traversal.rendezvous.clone(),
            network: self.node.status(),
            mass_deletions: self.node.mass_deletions(),
            pair_requests: self.node.pair_requests(),
            member_changes: self.node.member_changes(),
            commits: store.commits(),
            operations: crate::operations::snapshot(),
            storage: crate::ondemand::status(&self.fs)?,
            chunk_cache: {
                let c = store.cache_stats();
                fybrk_control::ChunkCacheStatus {
                    bytes: c.bytes,
                    budget_bytes: c.budget,
                    hits: c.hits,
                    misses: c.misses,
                }
            },
        })
    }

    fn verify(&self, _: fybrk_control::Verify) -> Result<VerifyReply> {
        let op = crate::operations::start("verify");
        let report = self
            .fs
            .store()
            .verify_with(&|done, total| op.set(done, total))?;
        Ok(verify_reply(report))
    }

    fn gc(&self, _: Gc) -> Result<GcReply> {
        let _op = crate::operations::start("gc");
        crate::history::collect(&self.fs.store(), &self.options.retention)
    }

    fn unmount(&self, _: fybrk_control::Unmount) -> Result<UnmountReply> {
        let unmount = self.unmount.clone();
        // Reply first; the process exits once the unmount completes.
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            if let Err(e) = unmount() {
                tracing::error!(error = %e, "unmount failed");
            }
        });
        Ok(UnmountReply {
            pid: std::process::id(),
            mount_point: self.mount_point.clone(),
        })
    }

    fn pair(&self, req: fybrk_control::Pair) -> Result<Invite> {
        self.node.invite(req)
    }

    fn pair_wait(&self, req: fybrk_control::PairWait) -> Result<PairWaitReply> {
        self.node
            .wait_invite(req.invite, Duration::from_secs(req.wait_secs))
    }

    fn pair_with(&self, req: fybrk_control::PairWith) -> Result<PairWithReply> {
        self.node.pair_with(&req.payload)
    }

    fn pair_with_wait(&self, req: fybrk_control::PairWithWait) -> Result<PairWithReply> {
        self.node
            .wait_join(req.join, Duration::from_secs(req.wait_secs))
    }

    fn approve(&self, req: fybrk_control::Approve) -> Result<PeerRef> {
        self.node.decide(&req.id, true)
    }

    fn deny(&self, req: fybrk_control::Deny) -> Result<PeerRef> {
        self.node.decide(&req.id, false)
    }

    fn pair_cancel(&self, req: fybrk_control::PairCancel) -> Result<PairCancelReply> {
        Ok(self.node.cancel_invites(req.invite))
    }

    fn peers(&self, _: fybrk_control::Peers) -> Result<PeersReply> {
        Ok(self.node.peers())
    }

    fn unpair(&self, req: fybrk_control::Unpair) -> Result<PeerRef> {
        self.node.remove(&req.id)
    }

    fn members(&self, _: fybrk_control::Members) -> Result<fybrk_control::MembersReply> {
        Ok(self.node.members())
    }

    fn remove(&self, req: fybrk_control::Remove) -> Result<PeerRef> {
        self.node.remove(&req.id)
    }

    fn log(&self, req: fybrk_control::Log) -> Result<LogReply> {
        crate::history::log(&self.fs.store(), &req)
    }

    fn restore(&self, req: fybrk_control::Restore) -> Result<RestoreReply> {
        let _op = crate::operations::start("restore");
        crate::history::restore(&self.fs.store(), &req)
    }

    fn pin(&self, req: fybrk_control::Pin) -> Result<fybrk_control::PinReply> {
        crate::ondemand::pin(&self.fs.store(), &req.paths)
    }

    fn unpin(&self, req: fybrk_control::Unpin) -> Result<fybrk_control::PinReply> {
        crate::ondemand::unpin(&self.fs.store(), &req.paths)
    }

    fn free(&self, req: fybrk_control::Free) -> Result<fybrk_control::FreeReply> {
        crate::ondemand::free(&self.fs.store(), &req.paths)
    }

    fn ls(&self, req: fybrk_control::Ls) -> Result<fybrk_control::LsReply> {
        crate::ondemand::ls(&self.fs.store(), &req.path)
    }

    fn ping(&self, req: fybrk_control::Ping) -> Result<fybrk_control::PingReply> {
        self.node
            .ping(&req.id, Duration::from_millis(req.wait_ms.min(30_000)))
    }
}

/// The store's verify report as the protocol's reply (also `verify` without a daemon).
pub fn verify_reply(r: VerifyReport) -> VerifyReply {
    VerifyReply {
        chunks_checked: r.chunks_checked,
        records_checked: r.records_checked,
        problems: r.problems,
    }
}

/// Serves requests on `listener` forever, answering each with `handler`.
pub fn serve(listener: UnixListener, handler: impl Handler + Send + Sync + 'static) {
    let handler = Arc::new(handler);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let handler = handler.clone();
        // A thread per request: verify can take minutes and must not block status.
        std::thread::spawn(move || {
            if let Err(e) = answer(stream, &*handler) {
                tracing::warn!(error = %e, "control request failed");
            }
        });
    }
}

fn answer(stream: UnixStream, handler: &impl Handler) -> Result<()> {
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let reply = fybrk_control::server::answer(&line, handler);
    (&stream).write_all(reply.as_bytes())?;
    Ok(())
}
