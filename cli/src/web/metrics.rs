//! `/metrics` in the Prometheus text format (version 0.0.4): the `status` reply's numbers and
//! the FUSE operation counters of `fybrk_fs::metrics`, each family with HELP and TYPE lines,
//! names `fybrk_...` with their unit.

use std::fmt::Write;

use fybrk_control::StatusReply;
use fybrk_fs::metrics::{OpSnapshot, BUCKETS_US};

/// The `Content-Type` Prometheus expects.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label value, escaped as the format asks.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Accumulates families.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let inner: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
                .collect();
            let _ = write!(self.0, "{{{}}}", inner.join(","));
        }
        let v = if value.is_finite() { value } else { 0.0 };
        let _ = writeln!(self.0, " {v}");
    }

    /// A family with one unlabelled sample.
    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// The whole page.
pub fn render(s: &StatusReply, ops: &[OpSnapshot]) -> String {
    let mut o = Out(String::with_capacity(16 * 1024));
    o.one(
        "fybrk_files",
        "gauge",
        "Live regular files in the folder.",
        s.files as f64,
    );
    o.one(
        "fybrk_directories",
        "gauge",
        "Live directories in the folder.",
        s.dirs as f64,
    );
    o.one(
        "fybrk_symlinks",
        "gauge",
        "Live symbolic links in the folder.",
        s.symlinks as f64,
    );
    o.one(
        "fybrk_logical_bytes",
        "gauge",
        "Sum of the live files' sizes.",
        s.logical_bytes as f64,
    );
    o.one(
        "fybrk_chunk_store_bytes",
        "gauge",
        "Bytes of encrypted chunks stored.",
        s.stored_bytes as f64,
    );
    o.one(
        "fybrk_chunks",
        "gauge",
        "Distinct chunks stored.",
        s.chunks as f64,
    );
    o.one(
        "fybrk_dedup_ratio",
        "gauge",
        "Logical bytes over stored bytes (1 for an empty folder).",
        s.dedup_ratio,
    );
    o.one(
        "fybrk_history_bytes",
        "gauge",
        "Bytes on disk only history holds (old versions, deleted files), as of the last retention pass.",
        s.history_bytes as f64,
    );
    o.one(
        "fybrk_commits_total",
        "counter",
        "Commits to this device's store since the daemon started (local changes, peers' versions, restores).",
        s.commits as f64,
    );
    o.one(
        "fybrk_change_sequence",
        "gauge",
        "This device's change sequence (the last local sequence number).",
        s.sequence as f64,
    );
    let c = &s.chunk_cache;
    o.one(
        "fybrk_chunk_cache_bytes",
        "gauge",
        "Bytes of decrypted chunks in the read cache.",
        c.bytes as f64,
    );
    o.one(
        "fybrk_chunk_cache_budget_bytes",
        "gauge",
        "The most the read cache may hold.",
        c.budget_bytes as f64,
    );
    o.one(
        "fybrk_chunk_cache_hits_total",
        "counter",
        "Chunk reads answered from the cache since the daemon started.",
        c.hits as f64,
    );
    o.one(
        "fybrk_chunk_cache_misses_total",
        "counter",
        "Chunk reads that read and decrypted the chunk since the daemon started.",
        c.misses as f64,
    );
    let net = &s.network;
    o.one(
        "fybrk_pending_bytes",
        "gauge",
        "Bytes still to fetch from connected peers.",
        net.pending_bytes as f64,
    );
    o.one(
        "fybrk_pending_records",
        "gauge",
        "Records still to fetch from connected peers.",
        net.pending_items as f64,
    );

    type PeerValue = fn(&fybrk_control::PeerStatus) -> Option<f64>;
    let per_peer: [(&str, &str, &str, PeerValue); 8] = [
        (
            "fybrk_peer_connected",
            "gauge",
            "1 while a connection to the peer is up.",
            |p| Some(if p.connected { 1.0 } else { 0.0 }),
        ),
        (
            "fybrk_peer_received_bytes_total",
            "counter",
            "UDP bytes received on the current connection to the peer.",
            |p| Some(p.bytes_in as f64),
        ),
        (
            "fybrk_peer_sent_bytes_total",
            "counter",
            "UDP bytes sent on the current connection to the peer.",
            |p| Some(p.bytes_out as f64),
        ),
        (
            "fybrk_peer_rtt_seconds",
            "gauge",
            "Round trip to the peer (connected peers only).",
            |p| p.rtt_ms.map(|ms| ms / 1000.0),
        ),
        (
            "fybrk_peer_throughput_bytes_per_second",
            "gauge",
            "Bytes per second received from the peer over the last 5 s.",
            |p| p.throughput_bps,
        ),
        (
            "fybrk_peer_loss_ratio",
            "gauge",
            "Lost over sent packets on the path to the peer, 0 to 1.",
            |p| p.loss,
        ),
        (
            "fybrk_peer_pending_bytes",
            "gauge",
            "Bytes still to fetch from the peer.",
            |p| Some(p.pending_bytes as f64),
        ),
        (
            "fybrk_peer_pending_records",
            "gauge",
            "Records still to fetch from the peer.",
            |p| Some(p.pending_items as f64),
        ),
    ];
    o.family(
        "fybrk_peer_info",
        "gauge",
        "Always 1: a paired device, with its name and how the connection goes (path: lan, direct, relay or none).",
    );
    for p in &net.peers {
        let path = p.path.map_or("none", |k| k.as_str());
        o.sample(
            "fybrk_peer_info",
            &[("peer", &p.id), ("name", &p.name), ("path", path)],
            1.0,
        );
    }
    for (name, kind, help, value) in per_peer {
        o.family(name, kind, help);
        for p in &net.peers {
            if let Some(v) = value(p) {
                o.sample(name, &[("peer", &p.id), ("name", &p.name)], v);
            }
        }
    }

    o.family(
        "fybrk_fuse_operations_total",
        "counter",
        "FUSE requests answered, by operation.",
    );
    for op in ops {
        o.sample(
            "fybrk_fuse_operations_total",
            &[("op", op.op)],
            op.count as f64,
        );
    }
    let h = "fybrk_fuse_operation_duration_seconds";
    o.family(
        h,
        "histogram",
        "Time the daemon took to answer a FUSE request, by operation.",
    );
    for op in ops {
        for (bound, count) in BUCKETS_US.iter().zip(op.cumulative.iter()) {
            let le = format!("{}", *bound as f64 / 1e6);
            o.sample(
                &format!("{h}_bucket"),
                &[("op", op.op), ("le", &le)],
                *count as f64,
            );
        }
        o.sample(
            &format!("{h}_bucket"),
            &[("op", op.op), ("le", "+Inf")],
            op.count as f64,
        );
        o.sample(
            &format!("{h}_sum"),
            &[("op", op.op)],
            op.sum_ns as f64 / 1e9,
        );
        o.sample(&format!("{h}_count"), &[("op", op.op)], op.count as f64);
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn every_sample_belongs_to_a_family_with_help_and_type() {
        let mut st = crate::web::fake::status(vec![
            crate::web::fake::peer("AAAAAAA", Some(2.0)),
            crate::web::fake::peer("BB\"B", None),
        ]);
        st.dedup_ratio = f64::NAN;
        let text = render(&st, &fybrk_fs::metrics::snapshot());
        let mut typed = std::collections::HashMap::new();
        let mut helped = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                typed.insert(name.to_string(), kind.to_string());
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                helped.insert(rest.split_once(' ').unwrap().0.to_string());
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| {
                        name.strip_suffix(s)
                            .filter(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
                    })
                    .unwrap_or(name);
                assert!(
                    typed.contains_key(family) && helped.contains(family),
                    "{line}"
                );
                assert!(family.starts_with("fybrk_"), "{line}");
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok_and(f64::is_finite), "{line}");
            }
        }
        assert!(
            text.contains("fybrk_dedup_ratio 0\n"),
            "NaN is written as 0"
        );
        assert!(
            text.contains("peer=\"BB\\\"B\",name=\"BB\\\"B\",path=\"none\""),
            "{text}"
        );
        // The offline peer has no round trip sample; the connected one has it in seconds.
        assert!(text.contains("fybrk_peer_rtt_seconds{peer=\"AAAAAAA\",name=\"AAAAAAA\"} 0.002"));
        assert!(!text.contains("fybrk_peer_rtt_seconds{peer=\"BB"));
    }
}
