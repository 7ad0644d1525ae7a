//! The small inline SVG chart of a peer's last minutes: throughput as a filled area, round trip
//! as a line, each scaled to its own maximum (printed in the caption).

use super::samples::{Sample, INTERVAL_SECS, KEEP};

const W: f64 = 240.0;
const H: f64 = 48.0;

/// The shortest window drawn: a daemon that just started shows its first minute, not a dot at
/// the right edge of ten minutes.
const MIN_WINDOW_SECS: u64 = 60;

/// The chart of `samples` (oldest first) over the window ending at `now`: ten minutes, or
/// since the first sample when that is less (at least a minute).
pub fn svg(samples: &[Sample], now: u64) -> String {
    let span = samples.first().map_or(0, |s| now.saturating_sub(s.unix));
    let window = span.clamp(MIN_WINDOW_SECS, KEEP as u64 * INTERVAL_SECS) as f64;
    let x = |unix: u64| W - (now.saturating_sub(unix) as f64 / window * W).min(W);
    let max_tp = samples
        .iter()
        .filter_map(|s| s.throughput_bps)
        .fold(0.0f64, f64::max);
    let max_rtt = samples
        .iter()
        .filter_map(|s| s.rtt_ms)
        .fold(0.0f64, f64::max);
    let scale = |v: f64, max: f64| {
        if max > 0.0 {
            H - v / max * (H - 2.0)
        } else {
            H
        }
    };
    let mut area = String::new();
    let mut line = String::new();
    for s in samples {
        if let Some(tp) = s.throughput_bps {
            area.push_str(&format!("{:.1},{:.1} ", x(s.unix), scale(tp, max_tp)));
        }
        if let Some(rtt) = s.rtt_ms {
            line.push_str(&format!("{:.1},{:.1} ", x(s.unix), scale(rtt, max_rtt)));
        }
    }
    let fill = match (
        samples.iter().find(|s| s.throughput_bps.is_some()),
        samples.iter().rev().find(|s| s.throughput_bps.is_some()),
    ) {
        (Some(first), Some(last)) => format!(
            "<polygon points=\"{:.1},{H} {area}{:.1},{H}\" fill=\"#9cc3e6\" stroke=\"#3a7bbf\"/>",
            x(first.unix),
            x(last.unix)
        ),
        _ => String::new(),
    };
    format!(
        "<svg class=\"chart\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         xmlns=\"http://www.w3.org/2000/svg\" role=\"img\"><title>last {} s: \
         throughput up to {tp}/s, round trip up to {max_rtt:.1} ms</title>\
         <rect width=\"{W}\" height=\"{H}\" fill=\"#f4f6f8\"/>{fill}\
         <polyline points=\"{line}\" fill=\"none\" stroke=\"#d9534f\" stroke-width=\"1.5\"/></svg>\
         <div class=\"muted\" style=\"font-size:11px\"><span style=\"color:#3a7bbf\">■</span> \
         received, up to {tp}/s · <span style=\"color:#d9534f\">—</span> round trip, up to \
         {max_rtt:.1} ms</div>",
        window,
        tp = crate::human::human_bytes(max_tp as u64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_what_it_has() {
        assert!(svg(&[], 100).starts_with("<svg"));
        let s = [
            Sample {
                unix: 90,
                rtt_ms: Some(2.0),
                throughput_bps: Some(1000.0),
            },
            Sample {
                unix: 95,
                rtt_ms: Some(4.0),
                throughput_bps: Some(0.0),
            },
            Sample {
                unix: 100,
                rtt_ms: None,
                throughput_bps: None,
            },
        ];
        let out = svg(&s, 100);
        assert!(out.contains("<polygon"), "{out}");
        assert!(out.contains("round trip up to 4.0 ms"), "{out}");
        // The newest point is at the right edge, the older ones left of it.
        assert!(out.contains("220.0,2.0"), "{out}");
    }
}
