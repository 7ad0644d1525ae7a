//! The progress line of a long command (`verify`, `gc`, `restore`): while the daemon works on
//! the request, the CLI asks `status` how far the operation is and redraws one line on
//! standard error. Only on a terminal, and only after a second, so scripts, pipes and quick
//! runs stay quiet.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fybrk_control::{Client, OperationStatus};

use crate::state::StateDir;

/// How often the line is redrawn.
const EVERY: Duration = Duration::from_millis(250);

/// Nothing is drawn for an operation that ends sooner.
const QUIET_FOR: Duration = Duration::from_secs(1);

/// Runs `f` (a request the daemon answers when operation `what` is done) and draws the
/// operation's progress until it returns.
pub fn with_progress<T>(state: &StateDir, what: &'static str, f: impl FnOnce() -> T) -> T {
    if !std::io::stderr().is_terminal() || !state.socket().exists() {
        return f();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let drawer = {
        let stop = stop.clone();
        let client = Client::new(state.socket());
        std::thread::spawn(move || draw_until(&client, what, &stop))
    };
    let out = f();
    stop.store(true, Ordering::Relaxed);
    let _ = drawer.join();
    out
}

fn draw_until(client: &Client, what: &str, stop: &AtomicBool) {
    let start = Instant::now();
    let mut drawn = false;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(EVERY);
        if stop.load(Ordering::Relaxed) || start.elapsed() < QUIET_FOR {
            continue;
        }
        let Ok(s) = client.call(fybrk_control::Status, Some(Duration::from_secs(2))) else {
            continue;
        };
        if let Some(op) = s.operations.iter().find(|o| o.what == what) {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{}", line(op, start.elapsed()));
            let _ = err.flush();
            drawn = true;
        }
    }
    if drawn {
        let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
    }
}

/// `verify: 1,234 of 5,678 (21%), 12 s`, or `restore: working, 3 s` when the total is unknown.
fn line(op: &OperationStatus, elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    if op.total == 0 {
        return format!("{}: working, {secs} s", op.what);
    }
    let pct = op.done.min(op.total) * 100 / op.total;
    format!(
        "{}: {} of {} ({pct}%), {secs} s",
        op.what, op.done, op.total
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_how_far() {
        let op = |done, total| OperationStatus {
            what: "verify".into(),
            done,
            total,
        };
        assert_eq!(
            line(&op(5, 20), Duration::from_secs(3)),
            "verify: 5 of 20 (25%), 3 s"
        );
        assert_eq!(
            line(&op(30, 20), Duration::from_secs(3)),
            "verify: 30 of 20 (100%), 3 s",
            "an estimate passed is never over 100%"
        );
        assert_eq!(
            line(&op(0, 0), Duration::from_secs(1)),
            "verify: working, 1 s"
        );
    }
}
