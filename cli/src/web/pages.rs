//! The pages, rendered on the server from the control protocol's typed replies: plain HTML,
//! one inline style sheet, no script (the overview refreshes itself with a meta refresh).

use fybrk_control::{Invite, JoinRequestInfo, LogReply, MembersReply, PeerStatus, StatusReply};

use super::http::encode;
use super::samples::Sample;
use crate::human::{fmt_secs, human_bytes};

/// `<`, `>`, `&`, `"` and `'` escaped, for text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:0;color:#222;background:#fff}\
header{background:#234;color:#fff;padding:10px 20px;display:flex;gap:24px;align-items:baseline}\
header a{color:#cde;text-decoration:none}header b{font-size:18px}\
main{padding:12px 20px;max-width:1100px}h2{font-size:16px;margin:22px 0 8px}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:5px 8px;\
border-bottom:1px solid #e3e6ea;vertical-align:middle}th{background:#f4f6f8;font-weight:600}\
.ok{color:#2a7a2a}.warn{color:#b36b00}.bad{color:#b00}.muted{color:#777}\
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{border:1px solid #e3e6ea;border-radius:6px;\
padding:8px 14px;min-width:120px}.card b{display:block;font-size:18px}\
button{padding:3px 10px}code{background:#f4f6f8;padding:1px 4px;word-break:break-all}\
.msg{background:#eef7ee;border:1px solid #bcdcbc;padding:6px 10px}\
.err{background:#fbeeee;border:1px solid #e0b4b4;padding:6px 10px}";

/// The frame around every page. `refresh`: seconds before the page reloads itself.
pub fn layout(title: &str, device: &str, refresh: Option<u64>, body: &str) -> String {
    let meta = refresh.map_or(String::new(), |s| {
        format!("<meta http-equiv=\"refresh\" content=\"{s}\">")
    });
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{meta}\
         <title>{t} · fybrk {d}</title><style>{STYLE}</style></head><body>\
         <header><b>fybrk</b><span>{d}</span><nav><a href=\"/\">Overview</a> · \
         <a href=\"/pair\">Pair</a> · <a href=\"/history\">History</a> · \
         <a href=\"/metrics\">Metrics</a></nav></header><main><h1 style=\"font-size:20px\">{t}</h1>\
         {body}</main></body></html>",
        t = esc(title),
        d = esc(device),
    )
}

fn card(label: &str, value: &str) -> String {
    format!(
        "<div class=\"card\"><span class=\"muted\">{label}</span><b>{}</b></div>",
        esc(value)
    )
}

/// `/`: the folder, sync progress, devices with their charts, members, join requests.
pub fn overview(
    s: &StatusReply,
    members: &MembersReply,
    chart: impl Fn(&PeerStatus) -> String,
) -> String {
    let net = &s.network;
    let mut b = String::new();
    b.push_str("<h2>Folder</h2><div class=\"cards\" id=\"summary\">");
    b.push_str(&card("Mounted at", &s.mount_point.display().to_string()));
    b.push_str(&card("Files", &s.files.to_string()));
    b.push_str(&card("Directories", &s.dirs.to_string()));
    b.push_str(&card("Size", &human_bytes(s.logical_bytes)));
    b.push_str(&card("Stored", &human_bytes(s.stored_bytes)));
    b.push_str(&card("Dedup", &format!("{:.2}×", s.dedup_ratio)));
    b.push_str(&card("History", &human_bytes(s.history_bytes)));
    b.push_str("</div>");

    b.push_str("<h2>Sync</h2><p id=\"sync\">");
    if net.pending_items == 0 {
        let connected = net.peers.iter().filter(|p| p.connected).count();
        b.push_str(&format!(
            "<span class=\"ok\">Up to date</span> with {connected} connected device(s)."
        ));
    } else {
        b.push_str(&format!(
            "<span class=\"warn\">Fetching</span> {} records ({}) from peers.",
            net.pending_items,
            human_bytes(net.pending_bytes)
        ));
    }
    b.push_str("</p>");
    for a in &s.mass_deletions {
        b.push_str(&format!(
            "<p class=\"err\">{} deleted {} files. Undo: <code>{}</code></p>",
            esc(&a.device),
            a.deleted,
            esc(&a.undo)
        ));
    }

    b.push_str(
        "<h2>Devices</h2><table id=\"devices\"><tr><th>Device</th><th>State</th><th>Path</th>\
         <th>Round trip</th><th>Throughput</th><th>Quality</th><th>Sent / received</th>\
         <th>Sync</th><th>Last 10 minutes</th></tr>",
    );
    if net.peers.is_empty() {
        b.push_str(
            "<tr><td colspan=\"9\" class=\"muted\">No paired device yet: see Pair.</td></tr>",
        );
    }
    for p in &net.peers {
        let state = if p.connected {
            format!(
                "<span class=\"ok\">connected</span> {}",
                p.connected_secs.map(fmt_secs).unwrap_or_default()
            )
        } else {
            "<span class=\"muted\">offline</span>".to_string()
        };
        let sync = if p.in_sync {
            "<span class=\"ok\">in sync</span>".to_string()
        } else if p.pending_items > 0 {
            format!(
                "{} records ({})",
                p.pending_items,
                human_bytes(p.pending_bytes)
            )
        } else {
            "–".to_string()
        };
        b.push_str(&format!(
            "<tr class=\"peer\" data-id=\"{id}\"><td><b>{name}</b><br><span class=\"muted\">{short}</span></td>\
             <td>{state}</td><td>{path}</td><td>{rtt}</td><td>{tp}</td><td>{q}</td><td>{out} / {inn}</td>\
             <td>{sync}</td><td>{chart}</td></tr>",
            id = esc(&p.id),
            name = esc(&p.name),
            short = esc(p.id.split('-').next().unwrap_or_default()),
            path = p.path.map_or("–", |k| k.as_str()),
            rtt = p.rtt_ms.map_or("–".into(), |r| format!("{r:.1} ms")),
            tp = p
                .throughput_bps
                .map_or("–".into(), |t| format!("{}/s", human_bytes(t as u64))),
            q = p.quality.map_or("–", |q| q.as_str()),
            out = human_bytes(p.bytes_out),
            inn = human_bytes(p.bytes_in),
            chart = chart(p),
        ));
    }
    b.push_str("</table>");

    b.push_str(&requests(&s.pair_requests));

    b.push_str("<h2>Members</h2><table id=\"members\"><tr><th>Device</th><th>Added by</th><th>Added</th><th>Link</th></tr>");
    if !members.founded {
        b.push_str("<tr><td colspan=\"4\" class=\"muted\">No member list yet.</td></tr>");
    }
    for m in &members.members {
        let link = if m.this_device {
            "this device".to_string()
        } else if m.connected {
            "<span class=\"ok\">connected</span>".to_string()
        } else {
            "<span class=\"muted\">offline</span>".to_string()
        };
        b.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{link}</td></tr>",
            esc(&m.name),
            esc(&m.added_by_name),
            fybrk_fs::when::format_utc(
                i64::try_from(m.added_unix)
                    .unwrap_or(0)
                    .saturating_mul(1_000_000_000)
            ),
        ));
    }
    b.push_str("</table>");
    layout("Overview", &s.device_name, Some(5), &b)
}

/// Join requests waiting for a person, with approve and deny buttons.
fn requests(reqs: &[JoinRequestInfo]) -> String {
    if reqs.is_empty() {
        return String::new();
    }
    let mut b = String::from(
        "<h2>Devices asking to join</h2><p>Allow one only if its screen shows the same words.</p>\
         <table id=\"requests\"><tr><th>Device</th><th>Words</th><th></th></tr>",
    );
    for r in reqs {
        b.push_str(&format!(
            "<tr><td>{name}<br><span class=\"muted\">{id}</span></td><td><b>{code}</b></td><td>\
             <form method=\"post\" action=\"/approve\" style=\"display:inline\">\
             <input type=\"hidden\" name=\"id\" value=\"{id}\"><button class=\"approve\" \
             data-id=\"{id}\">Approve</button></form> \
             <form method=\"post\" action=\"/deny\" style=\"display:inline\">\
             <input type=\"hidden\" name=\"id\" value=\"{id}\"><button class=\"deny\" \
             data-id=\"{id}\">Deny</button></form></td></tr>",
            name = esc(&r.name),
            id = esc(&r.id),
            code = esc(&r.code),
        ));
    }
    b.push_str("</table>");
    b
}

/// `/pair`: a button that makes an invitation; after it, the invitation's QR code and text.
/// The page refreshes while an invitation is shown only if asked (`refresh`), since the QR code
/// is made once.
pub fn pair(s: &StatusReply, invite: Option<(&Invite, Option<String>)>) -> String {
    let mut b = String::new();
    match invite {
        Some((inv, qr)) => {
            b.push_str(&format!(
                "<p>Scan this with the other device, or run <code>fybrk pair-with</code> there \
                 with the text below. Valid until {} (UTC). When it asks, compare the words and \
                 approve it here or on the overview.</p>{}<p><code id=\"payload\">{}</code></p>",
                fybrk_fs::when::format_utc(
                    i64::try_from(inv.expires_unix)
                        .unwrap_or(0)
                        .saturating_mul(1_000_000_000)
                ),
                qr.unwrap_or_default(),
                esc(&inv.payload)
            ));
        }
        None => b.push_str(
            "<p>An invitation lets one more device into this folder. It holds a secret: show it \
             only to the device you mean.</p><form method=\"post\" action=\"/pair\">\
             <button id=\"invite\">Make an invitation (valid 10 minutes)</button></form>",
        ),
    }
    b.push_str(&requests(&s.pair_requests));
    layout("Pair a device", &s.device_name, None, &b)
}

/// `/history?path=`: the kept versions of a path, each with a restore button.
pub fn history(
    device: &str,
    path: &str,
    log: Result<&LogReply, String>,
    note: Option<&str>,
) -> String {
    let mut b = format!(
        "<form method=\"get\" action=\"/history\">Path in the folder: \
         <input name=\"path\" value=\"{}\" size=\"50\"> <button>Show versions</button></form>",
        esc(path)
    );
    if let Some(n) = note {
        b.push_str(&format!("<p class=\"msg\" id=\"note\">{}</p>", esc(n)));
    }
    match log {
        Err(e) => b.push_str(&format!("<p class=\"err\">{}</p>", esc(&e))),
        Ok(log) => {
            b.push_str(
                "<table id=\"versions\"><tr><th>When (UTC)</th><th>Path</th><th>What</th>\
                 <th>Size</th><th>Device</th><th></th></tr>",
            );
            if log.versions.is_empty() {
                b.push_str("<tr><td colspan=\"6\" class=\"muted\">No versions kept.</td></tr>");
            }
            for v in &log.versions {
                let what = match (&v.renamed_from, &v.renamed_to) {
                    (Some(f), _) => format!("{} from {}", v.event, esc(f)),
                    (_, Some(t)) => format!("{} to {}", v.event, esc(t)),
                    _ => esc(&v.event),
                };
                let device = if v.this_device {
                    "this device".to_string()
                } else {
                    esc(v.device.as_deref().unwrap_or("?"))
                };
                b.push_str(&format!(
                    "<tr><td>{when}</td><td>{p}</td><td>{what}</td><td>{size}</td><td>{device}</td>\
                     <td><form method=\"post\" action=\"/restore\">\
                     <input type=\"hidden\" name=\"path\" value=\"{p}\">\
                     <input type=\"hidden\" name=\"version\" value=\"{id}\">\
                     <button id=\"restore-{id}\" title=\"bring {p} back as it was then\">Restore</button>\
                     </form></td></tr>",
                    when = fybrk_fs::when::format_utc(v.time_ns),
                    p = esc(&v.path),
                    size = if v.deleted { "–".into() } else { human_bytes(v.size) },
                    id = v.id,
                ));
            }
            b.push_str("</table>");
        }
    }
    layout(&format!("History of /{path}"), device, None, &b)
}

/// A link to the history of `path`.
pub fn history_link(path: &str) -> String {
    format!("/history?path={}", encode(path))
}

/// A page for a failed action.
pub fn failed(device: &str, what: &str, why: &str) -> String {
    layout(
        what,
        device,
        None,
        &format!(
            "<p class=\"err\">{}</p><p><a href=\"/\">Back</a></p>",
            esc(why)
        ),
    )
}

/// The chart cell of one peer.
pub fn chart_of(samples: &[Sample], now: u64) -> String {
    super::chart::svg(samples, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_that_could_open_a_tag_or_attribute() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
