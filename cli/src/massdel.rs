//! Mass deletions by peers: noticed, logged loudly, and shown in `status` with the command that
//! undoes them.
//!
//! A policy without I/O or clock ([`MassDeletions`]): the commit watcher hands it each commit's
//! deletions from peers with `now`; it keeps a five-minute window per device and raises an
//! [`Alert`] when a device deleted more than [`MANY`] files, or more than a fifth of the folder
//! (and at least [`MIN_SHARE_FILES`]), within the window.
//!
//! The deletions are applied, not held back for a person to approve: nothing is lost (history
//! keeps every deleted version on every device, and `fybrk restore / --at T` brings them back in
//! one step), while holding them would leave devices disagreeing for as long as nobody looks, and
//! a legitimate clean-up (a build directory, a moved project) would stall everything behind it.
//! The alert says what happened and how to undo it, which is what a person needs.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The window deletions are counted in.
pub const WINDOW: Duration = Duration::from_secs(300);
/// More deletions than this by one device within [`WINDOW`] is a mass deletion.
pub const MANY: u64 = 100;
/// A share of the folder counts only from this many files on (3 of a 10-file folder is no
/// disaster worth a warning).
pub const MIN_SHARE_FILES: u64 = 20;
/// How long an alert stays in `status` after the deletions stopped.
pub const SHOWN_FOR: Duration = Duration::from_secs(24 * 3600);

/// One device's burst of deletions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    /// The device that deleted (short id).
    pub device: u64,
    /// Files it deleted in this burst.
    pub deleted: u64,
    /// Wall-clock time of the first deletion of the burst, nanoseconds since the Unix epoch: the
    /// folder as it was just before is what `restore / --at` should bring back.
    pub first_ns: i64,
    /// When the burst's last deletion was seen.
    last: Instant,
}

#[derive(Default)]
struct Device {
    /// (when, how many, wall clock) per commit in the window.
    recent: VecDeque<(Instant, u64, i64)>,
    alert: Option<Alert>,
}

/// Per-device windows of deletions and the alerts they raised.
#[derive(Default)]
pub struct MassDeletions {
    devices: HashMap<u64, Device>,
}

impl MassDeletions {
    /// `deleted` files were deleted by `device` in one commit, seen at `now` (`wall_ns` on the
    /// wall clock), leaving `files` live files. Returns the alert when this raised a new one
    /// (the caller logs it).
    pub fn handle_deletions(
        &mut self,
        now: Instant,
        wall_ns: i64,
        device: u64,
        deleted: u64,
        files: u64,
    ) -> Option<Alert> {
        let d = self.devices.entry(device).or_default();
        while d
            .recent
            .front()
            .is_some_and(|(t, _, _)| now.saturating_duration_since(*t) > WINDOW)
        {
            d.recent.pop_front();
        }
        d.recent.push_back((now, deleted, wall_ns));
        let in_window: u64 = d.recent.iter().map(|(_, n, _)| n).sum();
        if let Some(a) = d.alert.as_mut() {
            // The same burst goes on: count it in.
            if now.saturating_duration_since(a.last) <= WINDOW {
                a.deleted += deleted;
                a.last = now;
                return None;
            }
        }
        let before = files.saturating_add(in_window);
        let share = before >= MIN_SHARE_FILES && in_window.saturating_mul(5) > before;
        if in_window > MANY || share {
            let first_ns = d.recent.front().map_or(wall_ns, |(_, _, w)| *w);
            let alert = Alert {
                device,
                deleted: in_window,
                first_ns,
                last: now,
            };
            d.alert = Some(alert.clone());
            return Some(alert);
        }
        None
    }

    /// The alerts to show at `now`, oldest burst first.
    pub fn alerts(&mut self, now: Instant) -> Vec<Alert> {
        let mut out: Vec<Alert> = self
            .devices
            .values_mut()
            .filter_map(|d| {
                if d.alert
                    .as_ref()
                    .is_some_and(|a| now.saturating_duration_since(a.last) > SHOWN_FOR)
                {
                    d.alert = None;
                }
                d.alert.clone()
            })
            .collect();
        out.sort_by_key(|a| a.first_ns);
        out
    }
}

/// The command that brings back what the burst deleted: the whole folder as it was one
/// nanosecond before its first deletion was committed here (RFC 3339 with nanoseconds: a
/// whole second earlier could predate files that arrived just before the deletion).
pub fn undo_command(a: &Alert) -> String {
    format!(
        "fybrk restore / --at {}",
        rfc3339_nanos(a.first_ns.saturating_sub(1))
    )
}

/// `2026-12-02T10:00:00.123456789Z`.
fn rfc3339_nanos(ns: i64) -> String {
    let whole = fybrk_fs::when::format_utc(ns);
    let stem = whole.strip_suffix('Z').unwrap_or(&whole);
    format!("{stem}.{:09}Z", ns.rem_euclid(1_000_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn a_hundred_and_one_files_in_five_minutes_is_a_mass_deletion() {
        let t0 = Instant::now();
        let mut m = MassDeletions::default();
        for i in 0..10u64 {
            let t = t0 + Duration::from_secs(i * 20);
            assert!(m
                .handle_deletions(t, 1000 * S + i as i64, 7, 10, 10_000)
                .is_none());
        }
        let a = m
            .handle_deletions(t0 + Duration::from_secs(200), 2000 * S, 7, 1, 10_000)
            .expect("101 in the window");
        assert_eq!((a.device, a.deleted, a.first_ns), (7, 101, 1000 * S));
        // It goes on: the same alert grows, no new one.
        assert!(m
            .handle_deletions(t0 + Duration::from_secs(210), 2001 * S, 7, 50, 10_000)
            .is_none());
        let shown = m.alerts(t0 + Duration::from_secs(220));
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].deleted, 151);
        // Gone from status a day after the last deletion.
        assert!(m
            .alerts(t0 + Duration::from_secs(210) + SHOWN_FOR + Duration::from_secs(1))
            .is_empty());
    }

    #[test]
    fn the_undo_names_the_instant_before_the_first_deletion() {
        let t0 = Instant::now();
        let mut m = MassDeletions::default();
        let first = 1_764_669_600 * S + 5;
        let a = m.handle_deletions(t0, first, 9, 500, 0).unwrap();
        let cmd = undo_command(&a);
        assert_eq!(cmd, "fybrk restore / --at 2025-12-02T10:00:00.000000004Z");
        let at = cmd.rsplit(' ').next().unwrap();
        assert_eq!(fybrk_fs::when::parse_time(at, 0), Ok(first - 1));
    }

    #[test]
    fn slow_deletions_and_other_devices_do_not_add_up() {
        let t0 = Instant::now();
        let mut m = MassDeletions::default();
        for i in 0..30u64 {
            // 10 every 6 minutes: never more than 10 in a window.
            let t = t0 + Duration::from_secs(i * 360);
            assert!(m.handle_deletions(t, 0, 1, 10, 100_000).is_none());
            assert!(m.handle_deletions(t, 0, 2, 60, 100_000).is_none());
        }
        assert!(m.alerts(t0 + Duration::from_secs(30 * 360)).is_empty());
    }

    #[test]
    fn a_fifth_of_a_small_folder_is_a_mass_deletion_but_a_tiny_folder_is_not() {
        let t0 = Instant::now();
        let mut m = MassDeletions::default();
        // 30 of 100 files.
        assert!(m.handle_deletions(t0, 5 * S, 3, 30, 70).is_some());
        let mut m = MassDeletions::default();
        // 5 of 10: too small a folder to tell.
        assert!(m.handle_deletions(t0, 5 * S, 3, 5, 5).is_none());
        // 10 of 1,000: nothing.
        assert!(m.handle_deletions(t0, 5 * S, 4, 10, 990).is_none());
    }
}
