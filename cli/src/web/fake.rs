//! Test support: a `status` reply to build on, and a [`Handler`] that answers from memory and
//! records the actions asked of it.

use std::sync::Mutex;

use anyhow::{anyhow, Result};
use fybrk_control::*;

/// A status with `peers`, nothing else.
pub fn status(peers: Vec<PeerStatus>) -> StatusReply {
    StatusReply {
        mount_point: "/m".into(),
        device_id: "x".into(),
        device_name: "desk <&>".into(),
        pid: 1,
        folder_id: String::new(),
        files: 0,
        dirs: 0,
        symlinks: 0,
        logical_bytes: 0,
        stored_bytes: 0,
        chunks: 0,
        dedup_ratio: 1.0,
        sequence: 0,
        history_bytes: 0,
        config_file: None,
        rendezvous: None,
        network: NetworkStatus {
            listen_addr: "127.0.0.1:1".parse().expect("an address"),
            nat: None,
            relay: None,
            peers,
            pending_items: 0,
            pending_bytes: 0,
            port_mapping: None,
            dht: None,
        },
        mass_deletions: Vec::new(),
        pair_requests: Vec::new(),
        member_changes: Vec::new(),
        commits: 0,
        operations: Vec::new(),
        chunk_cache: Default::default(),
        storage: Default::default(),
    }
}

/// A peer; connected when `rtt` is set.
pub fn peer(id: &str, rtt: Option<f64>) -> PeerStatus {
    PeerStatus {
        id: id.into(),
        name: id.into(),
        connected: rtt.is_some(),
        path: rtt.map(|_| PathKind::Lan),
        loss: None,
        throughput_bps: rtt.map(|_| 100.0),
        reconnects: None,
        quality: None,
        addr: None,
        rtt_ms: rtt,
        bytes_in: 0,
        bytes_out: 0,
        lost_packets: None,
        sent_packets: None,
        connected_secs: None,
        early_chunks: None,
        last_seen_unix: None,
        pending_items: 0,
        pending_bytes: 0,
        in_sync: true,
    }
}

/// Answers from memory; records approve, deny, pair and restore.
#[derive(Default)]
pub struct Fake {
    /// What was asked, e.g. `restore a/b 7`.
    pub calls: Mutex<Vec<String>>,
}

impl Fake {
    fn note(&self, s: String) {
        self.calls.lock().expect("not poisoned").push(s);
    }
}

fn no<T>() -> Result<T> {
    Err(anyhow!("not in this test"))
}

impl Handler for Fake {
    type Error = anyhow::Error;
    fn status(&self, _: Status) -> Result<StatusReply> {
        let mut s = status(vec![peer("AAAAAAA-BBBBBBB", Some(1.5))]);
        s.pair_requests.push(JoinRequestInfo {
            invite: 1,
            id: "CCCCCCC-DDDDDDD".into(),
            name: "<script>".into(),
            code: "arena nest".into(),
            deadline_unix: 0,
        });
        Ok(s)
    }
    fn verify(&self, _: Verify) -> Result<VerifyReply> {
        no()
    }
    fn gc(&self, _: Gc) -> Result<GcReply> {
        no()
    }
    fn unmount(&self, _: Unmount) -> Result<UnmountReply> {
        no()
    }
    fn pair(&self, r: Pair) -> Result<Invite> {
        self.note(format!("pair {} {}", r.expires_secs, r.yes));
        Ok(Invite {
            invite: 1,
            payload: "fybrk1:ABC".into(),
            qr: "FYBRK1:ABC".into(),
            expires_unix: 0,
            addrs: Vec::new(),
        })
    }
    fn pair_wait(&self, _: PairWait) -> Result<PairWaitReply> {
        no()
    }
    fn pair_with(&self, _: PairWith) -> Result<PairWithReply> {
        no()
    }
    fn pair_with_wait(&self, _: PairWithWait) -> Result<PairWithReply> {
        no()
    }
    fn approve(&self, r: Approve) -> Result<PeerRef> {
        self.note(format!("approve {}", r.id));
        Ok(PeerRef {
            id: r.id,
            name: "n".into(),
        })
    }
    fn deny(&self, r: Deny) -> Result<PeerRef> {
        self.note(format!("deny {}", r.id));
        Err(anyhow!("no such request"))
    }
    fn pair_cancel(&self, _: PairCancel) -> Result<PairCancelReply> {
        no()
    }
    fn peers(&self, _: Peers) -> Result<PeersReply> {
        no()
    }
    fn unpair(&self, _: Unpair) -> Result<PeerRef> {
        no()
    }
    fn members(&self, _: Members) -> Result<MembersReply> {
        Ok(MembersReply::default())
    }
    fn remove(&self, _: Remove) -> Result<PeerRef> {
        no()
    }
    fn ping(&self, _: fybrk_control::Ping) -> Result<fybrk_control::PingReply> {
        no()
    }
    fn pin(&self, _: fybrk_control::Pin) -> Result<fybrk_control::PinReply> {
        no()
    }
    fn unpin(&self, _: fybrk_control::Unpin) -> Result<fybrk_control::PinReply> {
        no()
    }
    fn free(&self, _: fybrk_control::Free) -> Result<fybrk_control::FreeReply> {
        no()
    }
    fn ls(&self, _: fybrk_control::Ls) -> Result<fybrk_control::LsReply> {
        no()
    }
    fn log(&self, r: Log) -> Result<LogReply> {
        if r.path != "a b.txt" {
            return Err(anyhow!("{} has no history", r.path));
        }
        Ok(LogReply {
            path: r.path.clone(),
            versions: vec![LogEntry {
                id: 7,
                path: r.path,
                time_ns: 0,
                device: None,
                this_device: true,
                event: "create".into(),
                renamed_from: None,
                renamed_to: None,
                kind: "file".into(),
                size: 3,
                deleted: false,
            }],
        })
    }
    fn restore(&self, r: Restore) -> Result<RestoreReply> {
        self.note(format!("restore {} {:?} {:?}", r.path, r.version, r.at_ns));
        Ok(RestoreReply {
            restored: 1,
            ..RestoreReply::default()
        })
    }
}
