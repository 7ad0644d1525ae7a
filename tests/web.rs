//! The local web page and `/metrics` against two real paired daemons, driven in a real headless
//! Chromium through chromedriver: the devices table shows the peer, a version restored from the
//! history page is back on both devices byte for byte, an invitation made on the pairing page
//! lets a third device in once its request is approved on the overview, requests without the
//! token, with a wrong Host or from another origin are refused, and `/metrics` parses with the
//! Prometheus client library's own text parser and carries the series the README lists. A
//! busy port or `web = false` never fails the mount.
//!
//! Screenshots go to `CARGO_TARGET_TMPDIR/web-screenshots/` and, when `FYBRK_SCREENSHOTS=DIR` is
//! set, to DIR too (tests/screenshots/ holds two of them, shown in the README).
//!
//! Needs root and /dev/fuse (see `tests/lib.rs`), Debian's `chromium`, `chromium-driver` and
//! `python3-prometheus-client` (`scripts/setup-deps.sh --test`). Outside CI a missing one skips
//! loudly; in CI it fails. Run: `cargo build --release -p fybrk && cargo test --release -p
//! fybrk-tests --test web`.

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "web/webdriver.rs"]
mod webdriver;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fybrk_control::LogReply;
use fybrk_tests::{
    describe, have_tool, in_ci, pair, wait_connected, wait_file, write_file_synced, Gen, Peer,
    CONNECT_TIMEOUT, SYNC_TIMEOUT,
};
use serde_json::Value;
use webdriver::{http, Browser};

const CMD: Duration = Duration::from_secs(60);

/// A peer whose page listens on a free loopback port (two daemons on one machine).
fn peer(name: &str) -> Option<Peer> {
    let mut p = Peer::prepare(name)?;
    std::fs::write(
        p.state.join("config.toml"),
        "web_listen = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    p.up();
    Some(p)
}

/// `fybrk web --json --no-open`: the URL with the token, and the address.
fn web(p: &Peer) -> (String, String) {
    let out = p.run(&["web", "--json", "--no-open"], CMD);
    assert!(out.status.success(), "fybrk web\n{}", describe(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["opened"], false);
    (
        v["url"].as_str().unwrap().to_string(),
        v["addr"].as_str().unwrap().to_string(),
    )
}

fn token(p: &Peer) -> String {
    std::fs::read_to_string(p.state.join("web.token"))
        .unwrap()
        .trim()
        .to_string()
}

fn get(addr: &str, path: &str, headers: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n");
    let (status, _, body) = http(addr, req.as_bytes());
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Saves a screenshot as `name` in the test's output dir and in `FYBRK_SCREENSHOTS`.
fn save_screenshot(b: &Browser, name: &str) {
    let png = b.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
    let mut dirs = vec![PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots")];
    if let Some(d) = std::env::var_os("FYBRK_SCREENSHOTS") {
        dirs.push(PathBuf::from(d));
    }
    for d in dirs {
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), &png).unwrap();
        eprintln!("screenshot: {}", d.join(name).display());
    }
}

/// A Python with `prometheus_client` (Debian's python3-prometheus-client), if any.
fn prometheus_python() -> Option<&'static str> {
    let found = ["/usr/bin/python3", "python3"].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import prometheus_client.parser"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        assert!(!in_ci(), "CI must have python3-prometheus-client installed");
        eprintln!("\n!!!!!!!!!! SKIPPED: no python3-prometheus-client; runs in CI !!!!!!!!!!\n");
    }
    found
}

/// Every sample of `text`, as parsed by `prometheus_client.parser`: (name, labels, value).
fn parse_metrics(py: &str, text: &str, dir: &Path) -> Vec<(String, HashMap<String, String>, f64)> {
    let file = dir.join("metrics.txt");
    std::fs::write(&file, text).unwrap();
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in fam.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let out = Command::new(py)
        .args(["-c", script])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn value(
    samples: &[(String, HashMap<String, String>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
        })
        .map(|(_, _, v)| *v)
}

fn log(p: &Peer, path: &str) -> LogReply {
    let out = p.run(&["log", &p.path(path).to_string_lossy(), "--json"], CMD);
    assert!(out.status.success(), "fybrk log\n{}", describe(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Bravo, paired with and connected to `a`, and `a`'s page: its URL with the token, its address
/// and an `Authorization` header line.
fn paired_page(a: &Peer) -> Option<(Peer, String, String, String)> {
    let b = peer("bravo")?;
    pair(a, &b);
    wait_connected(a, &b, CONNECT_TIMEOUT);
    let (url, addr) = web(a);
    let bearer = format!("Authorization: Bearer {}\r\n", token(a));
    Some((b, url, addr, bearer))
}

#[test]
fn the_page_shows_the_peer_restores_a_version_and_refuses_strangers() {
    let Some(a) = peer("alpha") else {
        return;
    };
    if !have_tool("chromium") || !have_tool("chromedriver") {
        return;
    }
    let Some((b, url, addr, bearer)) = paired_page(&a) else {
        return;
    };

    // Strangers: no token, a rebinding Host, a cross-site form.
    assert_eq!(get(&addr, "/", "").0, 401);
    assert_eq!(get(&addr, "/metrics", "").0, 401);
    let req =
        format!("GET / HTTP/1.1\r\nHost: fybrk.evil.example\r\n{bearer}Connection: close\r\n\r\n");
    assert_eq!(
        http(&addr, req.as_bytes()).0,
        403,
        "a wrong Host must be refused"
    );

    let mut g = Gen::new(16);
    let v1 = g.bytes(200_000);
    let mut v2 = v1.clone();
    v2[500..600].copy_from_slice(&g.bytes(100));
    write_file_synced(&a.path("doc.txt"), &v1).unwrap();
    wait_file(&b, "doc.txt", &v1, SYNC_TIMEOUT);
    std::thread::sleep(Duration::from_millis(1100));
    write_file_synced(&a.path("doc.txt"), &v2).unwrap();
    wait_file(&b, "doc.txt", &v2, SYNC_TIMEOUT);
    let versions = log(&a, "doc.txt").versions;
    let old = versions
        .iter()
        .rev()
        .find(|v| v.event == "create")
        .unwrap_or_else(|| panic!("no create in {versions:?}"));

    let body = format!("path=doc.txt&version={}", old.id);
    let req = format!(
        "POST /restore HTTP/1.1\r\nHost: {addr}\r\n{bearer}Origin: http://evil.example\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(
        http(&addr, req.as_bytes()).0,
        403,
        "a cross-origin POST must be refused"
    );
    assert_eq!(
        std::fs::read(a.path("doc.txt")).unwrap(),
        v2,
        "the refused POST restored"
    );

    let browser = Browser::start();
    // The token URL trades the token for a cookie and lands on the overview.
    browser.go(&url);
    assert!(
        !browser.url().contains("token="),
        "the token stays in the address bar"
    );
    let row = browser.wait_for(
        &format!("tr.peer[data-id='{}']", b.id()),
        Duration::from_secs(30),
    );
    let text = browser.text(&row);
    assert!(
        text.contains("bravo") && text.contains("connected"),
        "devices row: {text}"
    );
    save_screenshot(&browser, "devices.png");

    // History: click the first version's restore button.
    browser.go(&format!("http://{addr}/history?path=doc.txt"));
    let button = browser.wait_for(&format!("#restore-{}", old.id), Duration::from_secs(30));
    save_screenshot(&browser, "history.png");
    browser.click(&button);
    let note = browser.wait_for("#note", Duration::from_secs(60));
    assert!(
        browser.text(&note).contains("Restored 1"),
        "{}",
        browser.text(&note)
    );
    wait_file(&a, "doc.txt", &v1, SYNC_TIMEOUT);
    wait_file(&b, "doc.txt", &v1, SYNC_TIMEOUT);

    // The pairing page draws the invitation's QR code.
    browser.go(&format!("http://{addr}/pair"));
    let invite = browser.wait_for("#invite", Duration::from_secs(30));
    browser.click(&invite);
    browser.wait_for("#qr", Duration::from_secs(30));
    let payload = browser.wait_for("#payload", Duration::from_secs(5));
    assert!(browser.text(&payload).starts_with("fybrk1:"));
    save_screenshot(&browser, "pair.png");

    // A third device uses that invitation; it waits until someone approves it on the page.
    let payload = browser.text(&payload);
    let Some(c) = peer("charlie") else {
        return;
    };
    let mut joining = c
        .cmd(&["pair-with", "--yes", &payload])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    browser.go(&format!("http://{addr}/"));
    // The overview reloads itself every 5 s: the request shows up with its buttons.
    let approve = browser.wait_for("button.approve", Duration::from_secs(60));
    save_screenshot(&browser, "request.png");
    browser.click(&approve);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = joining.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = joining.kill();
            panic!("pair-with did not finish after the approval");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = joining.wait_with_output().unwrap();
    assert!(
        status.success(),
        "pair-with after approval\n{}",
        describe(&out)
    );
    wait_file(&c, "doc.txt", &v1, SYNC_TIMEOUT);

    // Back on the overview (it reloads itself every 5 s): the chart has throughput samples.
    std::thread::sleep(Duration::from_secs(10));
    browser.go(&format!("http://{addr}/"));
    browser.wait_for("svg.chart polygon", Duration::from_secs(60));
    save_screenshot(&browser, "overview.png");
    drop(browser);
    a.assert_verify_ok();
    b.assert_verify_ok();
    c.assert_verify_ok();
}

#[test]
fn metrics_parse_and_carry_the_series() {
    let Some(a) = peer("alpha") else {
        return;
    };
    let Some(py) = prometheus_python() else {
        return;
    };
    let Some((b, url, addr, bearer)) = paired_page(&a) else {
        return;
    };

    // With a display and $BROWSER, `fybrk web` starts it on the URL.
    let seen = a.root().join("browser-saw");
    let browser = a.root().join("browser.sh");
    std::fs::write(
        &browser,
        format!("#!/bin/sh\necho \"$1\" > {}\n", seen.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        &browser,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = a
        .cmd(&["web", "--json"])
        .env("DISPLAY", ":99")
        .env("BROWSER", &browser)
        .output()
        .unwrap();
    assert!(out.status.success(), "fybrk web\n{}", describe(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["opened"], true, "{v}");
    fybrk_tests::wait_for(
        "the browser to be started",
        CMD,
        || match std::fs::read_to_string(&seen) {
            Ok(s) if s.trim() == url => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    let scrape = || {
        let (status, text) = get(&addr, "/metrics", &bearer);
        assert_eq!(status, 200, "{text}");
        parse_metrics(py, &text, a.root())
    };
    let before = scrape();
    let writes = |s: &[(String, HashMap<String, String>, f64)]| {
        value(s, "fybrk_fuse_operations_total", &[("op", "write")]).unwrap()
    };
    let data = Gen::new(7).bytes(1 << 20);
    write_file_synced(&a.path("big.bin"), &data).unwrap();
    write_file_synced(&a.path("copy.bin"), &data).unwrap();
    wait_file(&b, "big.bin", &data, SYNC_TIMEOUT);
    wait_file(&b, "copy.bin", &data, SYNC_TIMEOUT);
    let after = scrape();
    assert!(
        writes(&after) > writes(&before),
        "FUSE write count did not grow"
    );

    let peer = [("peer", b.id())];
    let peer: Vec<(&str, &str)> = peer.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let info = after
        .iter()
        .find(|(n, l, _)| n == "fybrk_peer_info" && l.get("peer") == Some(&b.id()))
        .unwrap_or_else(|| panic!("no fybrk_peer_info for bravo"));
    assert_eq!(info.1.get("path").map(String::as_str), Some("lan"));
    assert_eq!(info.1.get("name").map(String::as_str), Some("bravo"));
    assert!(value(&after, "fybrk_peer_sent_bytes_total", &peer).unwrap() > 0.0);
    assert!(value(&after, "fybrk_peer_received_bytes_total", &peer).unwrap() > 0.0);
    let rtt = value(&after, "fybrk_peer_rtt_seconds", &peer).unwrap();
    assert!((0.0..1.0).contains(&rtt), "loopback rtt {rtt}");
    assert_eq!(value(&after, "fybrk_peer_connected", &peer), Some(1.0));
    assert!(value(&after, "fybrk_peer_pending_bytes", &peer).is_some());
    assert!(value(&after, "fybrk_peer_pending_records", &peer).is_some());
    assert!(value(&after, "fybrk_pending_bytes", &[]).is_some());
    assert!(value(&after, "fybrk_pending_records", &[]).is_some());
    assert!(value(&after, "fybrk_commits_total", &[]).unwrap() >= 2.0);
    assert_eq!(value(&after, "fybrk_files", &[]), Some(2.0));
    let stored = value(&after, "fybrk_chunk_store_bytes", &[]).unwrap();
    assert!(
        stored > 1e6 && stored < 1.5e6,
        "two copies stored once: {stored}"
    );
    let ratio = value(&after, "fybrk_dedup_ratio", &[]).unwrap();
    assert!(ratio > 1.5, "two identical files dedup about 2x: {ratio}");
    assert!(value(&after, "fybrk_history_bytes", &[]).is_some());
    assert!(value(&after, "fybrk_chunk_cache_budget_bytes", &[]).unwrap() > 0.0);
    assert!(value(&after, "fybrk_chunk_cache_bytes", &[]).is_some());
    assert!(value(&after, "fybrk_chunk_cache_hits_total", &[]).is_some());
    assert!(value(&after, "fybrk_chunk_cache_misses_total", &[]).is_some());
    assert!(value(&after, "fybrk_change_sequence", &[]).unwrap() >= 2.0);
    let h = "fybrk_fuse_operation_duration_seconds";
    let count = value(&after, &format!("{h}_count"), &[("op", "write")]).unwrap();
    let inf = value(
        &after,
        &format!("{h}_bucket"),
        &[("op", "write"), ("le", "+Inf")],
    )
    .unwrap();
    assert_eq!(count, inf);
    assert!(value(&after, &format!("{h}_sum"), &[("op", "write")]).unwrap() > 0.0);
    assert_eq!(count, writes(&after));
}

#[test]
fn a_busy_port_or_web_off_never_fails_the_mount() {
    let Some(mut m) = fybrk_tests::Mount::prepare() else {
        return;
    };
    // Something else holds the port: the folder mounts anyway, the log says why there is no
    // page, and `fybrk web` says so too.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap();
    let config = m.state.join("config.toml");
    std::fs::write(&config, format!("web_listen = \"{taken}\"\n")).unwrap();
    m.mount_with(&["--listen", "127.0.0.1:0"]);
    let log = m.log_tail();
    assert!(log.contains("no web page: cannot listen"), "{log}");
    let out = m.run(&["web", "--no-open"], CMD);
    assert!(
        !out.status.success(),
        "fybrk web with no page\n{}",
        describe(&out)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("serves no web page"));
    m.unmount();
    drop(squatter);

    // Off: no page, but /metrics on its own listener without a token.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = free.local_addr().unwrap().to_string();
    drop(free);
    std::fs::write(
        &config,
        format!("web = false\nmetrics_listen = \"{metrics}\"\n"),
    )
    .unwrap();
    m.mount_with(&["--listen", "127.0.0.1:0"]);
    assert!(!m.state.join("web.addr").exists());
    let (status, text) = get(&metrics, "/metrics", "");
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("# TYPE fybrk_fuse_operations_total counter"),
        "{text}"
    );
    assert_eq!(get(&metrics, "/", "").0, 404);
    m.unmount();
}
