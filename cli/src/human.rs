//! The human output of the commands: each formats the protocol's typed replies
//! (`fybrk-control`); `--json` prints the same values serialized.

use std::time::{SystemTime, UNIX_EPOCH};

use fybrk_control::{Mapping, NatCheckReport, PeersReply, StatusReply};

/// One line of `fybrk ping`: `pong from laptop (192.168.1.7:22100) via lan in 0.4 ms`, or
/// `... ([2001:db8::7]:22100) via direct (IPv6) in 12.0 ms`.
pub fn ping_line(r: &fybrk_control::PingReply) -> String {
    let (Some(path), Some(addr), Some(rtt)) = (r.path, r.addr, r.rtt_ms) else {
        return format!("no link to {} (dialled; not reachable yet)", r.name);
    };
    let via = match (path, r.relay) {
        (fybrk_control::PathKind::Relay, Some(host)) => format!("relay via {host}"),
        // IPv4 is the usual case; IPv6 is named (the address shows it too, less plainly).
        (p, _) if addr.is_ipv6() => format!("{} (IPv6)", p.as_str()),
        (p, _) => p.as_str().to_string(),
    };
    format!("pong from {} ({addr}) via {via} in {rtt:.1} ms", r.name)
}

/// `n` bytes in binary units: `512 B`, `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A span of seconds: `42 s`, `3 min 5 s`, `2 h 10 min`.
pub fn fmt_secs(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn last_seen(unix: Option<u64>) -> String {
    match unix {
        Some(t) => format!("last seen {} ago", fmt_secs(unix_now().saturating_sub(t))),
        None => "never connected".into(),
    }
}

/// `fybrk status`.
/// `status`'s storage lines: shown for an on-demand device, or when something is pinned or
/// unreadable.
fn print_storage(st: &fybrk_control::StorageStatus) {
    if let (Some(budget), Some(used)) = (st.cache_budget, st.cache_used) {
        println!(
            "on demand     {} of {} content here; cache {} of {}",
            human_bytes(st.local_bytes),
            human_bytes(st.total_bytes),
            human_bytes(used),
            human_bytes(budget)
        );
    }
    if !st.pinned.is_empty() {
        let list: Vec<&str> = st
            .pinned
            .iter()
            .map(|p| {
                if p.is_empty() {
                    "(whole folder)"
                } else {
                    p.as_str()
                }
            })
            .collect();
        println!(
            "pinned        {} ({})",
            list.join(", "),
            human_bytes(st.pinned_bytes)
        );
    }
    for u in &st.unreadable {
        println!(
            "UNREADABLE    {} at {}: {}",
            u.path,
            fybrk_fs::when::format_local(u.at_ns),
            u.reason
        );
    }
}

pub fn print_status(s: &StatusReply) {
    println!("device        {} ({})", s.device_name, s.device_id);
    println!("mount point   {}", s.mount_point.display());
    println!("daemon pid    {}", s.pid);
    println!(
        "files         {} (directories {}, symlinks {})",
        s.files, s.dirs, s.symlinks
    );
    println!("logical size  {}", human_bytes(s.logical_bytes));
    println!(
        "history       {} on disk for old versions and deleted files",
        human_bytes(s.history_bytes)
    );
    for r in &s.pair_requests {
        println!(
            "JOIN REQUEST  {} ({}) asks to join; its screen must show: {}. \
             `fybrk approve {}` or `fybrk deny {}`",
            r.name, r.id, r.code, r.id, r.id
        );
    }
    for c in &s.member_changes {
        let by = if c.by_name.is_empty() {
            c.by_id.chars().take(7).collect()
        } else {
            c.by_name.clone()
        };
        let what = match c.change {
            fybrk_control::MemberChangeKind::Added => "added",
            fybrk_control::MemberChangeKind::Removed => "removed",
        };
        let short: String = c.id.chars().take(7).collect();
        println!(
            "MEMBER        {} ({short}) {what} by {by}, {}",
            c.name,
            fybrk_fs::when::format_local(i64::try_from(c.at_unix).unwrap_or(0) * 1_000_000_000)
        );
    }
    for m in &s.mass_deletions {
        println!(
            "WARNING       {} deleted {} files within minutes (since {}); to undo: {}",
            m.device,
            m.deleted,
            fybrk_fs::when::format_local(i64::try_from(m.since_unix).unwrap_or(0) * 1_000_000_000),
            m.undo
        );
    }
    println!(
        "stored size   {} in {} chunks (encrypted, deduplicated)",
        human_bytes(s.stored_bytes),
        s.chunks
    );
    print_storage(&s.storage);
    println!("dedup ratio   {:.2}x", s.dedup_ratio);
    let net = &s.network;
    println!("listening     {} (UDP)", net.listen_addr);
    if let Some(r) = &s.rendezvous {
        println!("rendezvous    {r}");
    }
    if let Some(c) = &s.config_file {
        println!("config file   {}", c.display());
    }
    if let Some(nat) = &net.nat {
        if nat.udp_works {
            let public = nat
                .public_addr
                .map_or_else(|| "unknown".to_string(), |a| a.to_string());
            println!(
                "public        {public} ({} mapping)",
                match nat.mapping {
                    Mapping::EndpointIndependent => "endpoint-independent",
                    Mapping::EndpointDependent => "symmetric NAT, endpoint-dependent",
                    Mapping::Unknown => "unknown",
                }
            );
        } else {
            println!("public        no answer from the STUN servers over UDP");
        }
        if let Some(v6) = nat.ipv6 {
            println!("IPv6          {} (no NAT)", v6.ip());
        }
    }
    if let Some(m) = &net.port_mapping {
        println!(
            "port mapping  {} via {} (the router forwards it here)",
            m.external_addr, m.protocol
        );
    }
    if let Some(relay) = &net.relay {
        let how = if !relay.active {
            "lost, not relaying"
        } else if relay.everything {
            "all traffic goes through it: this network lets UDP out only to the TURN server"
        } else {
            "used only for peers with no direct path"
        };
        println!(
            "relay         {} via {} ({how})",
            relay.relayed_addr, relay.server
        );
    }
    if let Some(dht) = &net.dht {
        let published = dht.last_publish_unix.map_or_else(
            || "not published yet".to_string(),
            |t| format!("published {} ago", fmt_secs(unix_now().saturating_sub(t))),
        );
        if dht.running {
            println!("dht           {} nodes known, {published}", dht.known_nodes);
        } else {
            println!("dht           on, starts once a paired device's key is known");
        }
    }
    print_peers_status(s);
}

/// The peers part of `fybrk status`.
fn print_peers_status(s: &StatusReply) {
    let net = &s.network;
    if net.peers.is_empty() {
        println!("peers         none (`fybrk pair` invites a device)");
        return;
    }
    let items = s.files.saturating_add(s.dirs).saturating_add(s.symlinks);
    match net.pending_items {
        0 => println!("sync          {items} items here, nothing to fetch"),
        n => println!(
            "sync          {items} items here, {n} items ({}) still to fetch",
            human_bytes(net.pending_bytes)
        ),
    }
    println!("peers");
    for p in &net.peers {
        let name = &p.name;
        let short: String = p.id.chars().take(7).collect();
        if p.connected {
            let state = if p.in_sync {
                "in sync".to_string()
            } else {
                format!(
                    "syncing: {} items, {} to fetch",
                    p.pending_items,
                    human_bytes(p.pending_bytes)
                )
            };
            println!(
                "  {name:<16} {short}  {} {}  rtt {:.1} ms  {}/s  loss {:.1} %  {}  in {}  out {}  {state}",
                p.path.map_or("?", |k| k.as_str()),
                p.addr.map_or_else(|| "?".to_string(), |a| a.to_string()),
                p.rtt_ms.unwrap_or(0.0),
                human_bytes(p.throughput_bps.unwrap_or(0.0) as u64),
                p.loss.unwrap_or(0.0) * 100.0,
                p.quality.map_or("?", |q| q.as_str()),
                human_bytes(p.bytes_in),
                human_bytes(p.bytes_out),
            );
        } else {
            println!(
                "  {name:<16} {short}  offline ({})  {}",
                last_seen(p.last_seen_unix),
                p.addr
                    .map_or_else(|| "no known address".to_string(), |a| a.to_string())
            );
        }
    }
}

/// `fybrk peers`.
pub fn print_peers(r: &PeersReply) {
    if r.peers.is_empty() {
        println!("no paired devices: `fybrk pair` invites one");
    }
    for p in &r.peers {
        println!(
            "{:<20} {}  {}",
            p.name,
            p.id,
            if p.connected {
                "connected".to_string()
            } else {
                last_seen(p.last_seen_unix)
            }
        );
    }
}

/// `fybrk nat-check`.
pub fn print_nat_check(r: &NatCheckReport) {
    println!("local socket   {}", r.local_addr);
    println!(
        "UDP            {}",
        if r.udp_works {
            "works"
        } else {
            "BLOCKED: no STUN server answered"
        }
    );
    for s in &r.servers {
        let server = &s.server;
        match s.reflexive {
            Some(a) => println!("  {server:<28} sees us at {a}"),
            None => {
                let why = r
                    .errors
                    .iter()
                    .find(|f| &f.server == server)
                    .map(|f| f.error.as_str());
                println!("  {server:<28} {}", why.unwrap_or("no answer"));
            }
        }
    }
    println!(
        "public address {}",
        r.public_addr.map_or("unknown".into(), |a| a.to_string())
    );
    println!("NAT mapping    {}", r.mapping.in_words());
    match (&r.gateway, &r.port_mapping) {
        (_, Some(m)) => println!(
            "port mapping   {} maps {} to this device (test mapping, deleted again)",
            m.protocol, m.external_addr
        ),
        (Some(g), None) => println!("port mapping   none: {g} answers none of PCP, NAT-PMP, UPnP"),
        (None, None) => {
            println!("port mapping   not asked (no IPv4 default gateway, or switched off)")
        }
    }
    println!(
        "IPv6           {}",
        match (r.ipv6, r.local_addr.is_ipv6()) {
            (Some(a), _) => format!("works, reachable at {} (no NAT)", a.ip()),
            (None, true) => "no answer over IPv6".to_string(),
            (None, false) => "not checked: IPv6 is off on this host".to_string(),
        }
    );
    println!(
        "verdict        {}",
        match (r.udp_works, r.mapping) {
            (false, _) => "no UDP: peers can only be reached through a TURN relay (--turn)",
            (true, Mapping::EndpointIndependent) =>
                "direct connections through hole punching should work",
            (true, Mapping::EndpointDependent) =>
                "hole punching will mostly fail; expect a relay with peers behind NAT",
            (true, Mapping::Unknown) => "ask at least two STUN servers to know the NAT type",
        }
    );
}

/// `fybrk log`: one line per version, newest first.
pub fn print_log(r: &fybrk_control::LogReply) {
    if r.versions.is_empty() {
        println!("no versions kept");
        return;
    }
    println!(
        "{:>8}  {:<19}  {:<9}  {:>10}  {:<8}  path",
        "id", "time", "device", "size", "what"
    );
    for v in &r.versions {
        let device = match (&v.device, v.this_device) {
            (_, true) => "this".to_string(),
            (Some(d), false) => d.clone(),
            (None, false) => "?".to_string(),
        };
        let size = if v.deleted {
            "-".to_string()
        } else if v.kind == "dir" {
            "dir".to_string()
        } else {
            human_bytes(v.size)
        };
        let what = match (&v.renamed_from, &v.renamed_to) {
            (Some(from), _) => format!("{} (from {from})", v.event),
            (_, Some(to)) => format!("{} (to {to})", v.event),
            _ => v.event.clone(),
        };
        println!(
            "{:>8}  {:<19}  {:<9}  {:>10}  {:<8}  {}",
            v.id,
            fybrk_fs::when::format_local(v.time_ns),
            device,
            size,
            what,
            if v.path.is_empty() { "/" } else { &v.path }
        );
    }
}
