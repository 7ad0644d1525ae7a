//! Which versions history keeps: staggered thinning like Syncthing's, and an optional size cap.
//!
//! Pure functions of the versions' times and `now`: no store, no clock, so every rule is tested
//! with made-up times. The store applies what they decide.
//!
//! The rules, by a version's age:
//!
//! | age | kept |
//! | --- | --- |
//! | under [`KEEP_ALL`] (1 h) | every version |
//! | up to 1 day | the newest version of each clock hour |
//! | up to 30 days | the newest version of each day (UTC) |
//! | up to `max_age` (default 1 year) | the newest version of each week |
//! | older | none |
//!
//! and, whatever the age, the newest version of a path is never thinned: it is what the path is
//! now (or the deletion that ended it, which the versions before it need to make sense).
//!
//! Buckets are aligned to absolute time (hour `t / 1 h`, not "1 h before now"), so thinning is
//! stable: a version kept once stays kept until its age moves it into a coarser band, and running
//! it twice in a row removes nothing the second time. Keeping the newest of each bucket means
//! "the folder as it was at the end of that hour/day/week" is always exact.

use std::time::Duration;

/// Versions younger than this are never thinned, by age or by the size cap. An hour covers the
/// "I just broke it" case whatever the limits say.
pub const KEEP_ALL: Duration = Duration::from_secs(3600);

const HOUR_NS: i64 = 3_600_000_000_000;
const DAY_NS: i64 = 24 * HOUR_NS;
const WEEK_NS: i64 = 7 * DAY_NS;
/// Until this age versions are thinned to one per hour, then one per day.
const HOURLY_UNTIL_NS: i64 = DAY_NS;
/// Until this age versions are thinned to one per day, then one per week.
const DAILY_UNTIL_NS: i64 = 30 * DAY_NS;

/// How long history keeps versions and how much space it may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Versions older than this are dropped (the newest version of a path excepted).
    pub max_age: Duration,
    /// When history takes more than this many bytes, the oldest versions go first (never the
    /// newest of a path, never one younger than [`KEEP_ALL`]). `None`: no cap.
    pub max_bytes: Option<u64>,
}

impl Default for Retention {
    /// One year, no size cap: what a user who never opens the config file gets.
    fn default() -> Self {
        Retention {
            max_age: Duration::from_secs(365 * 24 * 3600),
            max_bytes: None,
        }
    }
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Which band a version of this age falls in: `Some((band, bucket width))`, `None` when it is
/// past `max_age` (or `Some((0, 0))`: keep, it is younger than [`KEEP_ALL`]).
fn band(age_ns: i64, max_age_ns: i64) -> Option<(u8, i64)> {
    if age_ns < nanos(KEEP_ALL) {
        Some((0, 0))
    } else if age_ns > max_age_ns {
        None
    } else if age_ns <= HOURLY_UNTIL_NS {
        Some((1, HOUR_NS))
    } else if age_ns <= DAILY_UNTIL_NS {
        Some((2, DAY_NS))
    } else {
        Some((3, WEEK_NS))
    }
}

impl Retention {
    /// Which of one path's versions to keep: `times` are the versions' commit times in
    /// nanoseconds since the Unix epoch, in the order they were made (oldest first). Returns one
    /// flag per version, `true` = keep.
    ///
    /// Times from a skewed clock are taken as they are: a version "from the future" has age 0
    /// and is kept until `now` passes it. Equal times count the later index as newer.
    pub fn thin(&self, times: &[i64], now_ns: i64) -> Vec<bool> {
        let mut keep = vec![false; times.len()];
        let Some(last) = times.len().checked_sub(1) else {
            return keep;
        };
        keep[last] = true;
        let max_age = nanos(self.max_age);
        // The newest version seen so far in each (band, bucket), walking newest first so the
        // first one met in a bucket is the one to keep.
        let mut seen = std::collections::HashSet::new();
        for i in (0..times.len()).rev() {
            let age = now_ns.saturating_sub(times[i]).max(0);
            match band(age, max_age) {
                None => {}
                Some((0, _)) => keep[i] = true,
                Some((b, width)) if seen.insert((b, times[i].div_euclid(width))) => keep[i] = true,
                Some(_) => {}
            }
        }
        keep
    }

    /// Which versions the size cap drops, given every version that [`Retention::thin`] kept:
    /// `(time_ns, bytes only this version holds, is the newest of its path)`. Returns the indexes
    /// to drop, oldest first, until the total is at most `max_bytes`. Versions younger than
    /// [`KEEP_ALL`] and the newest of each path are never dropped, so the result can leave the
    /// total above the cap; that is the user's data winning over the limit.
    pub fn over_cap(&self, versions: &[(i64, u64, bool)], now_ns: i64) -> Vec<usize> {
        let Some(cap) = self.max_bytes else {
            return Vec::new();
        };
        let mut total: u64 = versions.iter().map(|v| v.1).fold(0, u64::saturating_add);
        let keep_all = nanos(KEEP_ALL);
        let mut candidates: Vec<usize> = (0..versions.len())
            .filter(|&i| {
                let (t, _, newest) = versions[i];
                !newest && now_ns.saturating_sub(t) >= keep_all
            })
            .collect();
        candidates.sort_by_key(|&i| (versions[i].0, i));
        let mut drop = Vec::new();
        for i in candidates {
            if total <= cap {
                break;
            }
            total = total.saturating_sub(versions[i].1);
            drop.push(i);
        }
        drop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000_000;
    /// A fixed "now", on an hour and day boundary plus a bit, so buckets are easy to reason about.
    const NOW: i64 = 20_000 * DAY_NS + 10 * MIN;

    fn kept(r: &Retention, times: &[i64]) -> Vec<i64> {
        let flags = r.thin(times, NOW);
        times
            .iter()
            .zip(flags)
            .filter(|(_, k)| *k)
            .map(|(t, _)| *t)
            .collect()
    }

    #[test]
    fn every_version_of_the_last_hour_is_kept() {
        let times: Vec<i64> = (1..=59).rev().map(|m| NOW - m * MIN).collect();
        assert_eq!(kept(&Retention::default(), &times), times);
    }

    #[test]
    fn one_per_hour_for_a_day_newest_of_each_hour() {
        // Every 10 minutes from 23 h ago to 2 h ago.
        let times: Vec<i64> = (12..=138).rev().map(|k| NOW - k * 10 * MIN).collect();
        let k = kept(&Retention::default(), &times);
        let mut hours: Vec<i64> = k.iter().map(|t| t.div_euclid(HOUR_NS)).collect();
        hours.dedup();
        assert_eq!(hours.len(), k.len(), "one version per clock hour: {k:?}");
        for t in &k {
            // The newest in its hour: nothing later in the same hour exists in the input.
            assert!(!times
                .iter()
                .any(|u| u > t && u.div_euclid(HOUR_NS) == t.div_euclid(HOUR_NS)));
        }
        assert!(k.len() >= 21 && k.len() <= 23, "{}", k.len());
    }

    #[test]
    fn one_per_day_for_a_month_then_one_per_week() {
        // Every 6 hours for 200 days.
        let times: Vec<i64> = (8..=800).rev().map(|k| NOW - k * 6 * HOUR_NS).collect();
        let k = kept(&Retention::default(), &times);
        let daily: Vec<&i64> = k
            .iter()
            .filter(|t| NOW - **t > DAY_NS && NOW - **t <= 30 * DAY_NS)
            .collect();
        assert!((28..=30).contains(&daily.len()), "{}", daily.len());
        let weekly = k.iter().filter(|t| NOW - **t > 30 * DAY_NS).count();
        // 170 days of weeks: 24-26 buckets depending on alignment.
        assert!((24..=26).contains(&weekly), "{weekly}");
    }

    #[test]
    fn past_max_age_only_the_newest_survives() {
        let r = Retention {
            max_age: Duration::from_secs(10 * 24 * 3600),
            max_bytes: None,
        };
        let times = vec![NOW - 40 * DAY_NS, NOW - 30 * DAY_NS, NOW - 20 * DAY_NS];
        assert_eq!(kept(&r, &times), vec![NOW - 20 * DAY_NS]);
        let times = vec![NOW - 40 * DAY_NS, NOW - 5 * DAY_NS];
        assert_eq!(kept(&r, &times), vec![NOW - 5 * DAY_NS]);
    }

    #[test]
    fn the_newest_is_kept_even_when_ancient() {
        assert_eq!(
            kept(&Retention::default(), &[NOW - 5000 * DAY_NS]),
            vec![NOW - 5000 * DAY_NS]
        );
        assert!(Retention::default().thin(&[], NOW).is_empty());
    }

    #[test]
    fn thinning_twice_removes_nothing_more() {
        let times: Vec<i64> = (1..=3000).rev().map(|k| NOW - k * 37 * MIN).collect();
        let r = Retention::default();
        let once = kept(&r, &times);
        assert_eq!(kept(&r, &once), once);
        // And later: what is kept at NOW + 1 day is a subset of what was kept at NOW.
        let later: Vec<i64> = {
            let flags = r.thin(&once, NOW + DAY_NS);
            once.iter()
                .zip(flags)
                .filter(|(_, k)| *k)
                .map(|(t, _)| *t)
                .collect()
        };
        assert!(later.iter().all(|t| once.contains(t)));
    }

    #[test]
    fn future_times_and_extremes_do_not_panic() {
        let r = Retention {
            max_age: Duration::MAX,
            max_bytes: Some(0),
        };
        let times = vec![i64::MIN, -1, 0, NOW + 1000 * DAY_NS, i64::MAX, i64::MAX];
        let flags = r.thin(&times, NOW);
        assert!(flags[3] && flags[5], "future versions are young");
        let thin = Retention::default().thin(&times, i64::MIN);
        assert_eq!(thin.len(), times.len());
        let v: Vec<(i64, u64, bool)> = times.iter().map(|t| (*t, 10, false)).collect();
        let huge: Vec<(i64, u64, bool)> = times.iter().map(|t| (*t, u64::MAX, false)).collect();
        assert_eq!(
            r.over_cap(&huge, NOW),
            vec![0],
            "saturating sums stop early, not overflow"
        );
        let dropped = r.over_cap(&v, NOW);
        assert_eq!(dropped, vec![0, 1, 2], "the old ones, oldest first");
    }

    #[test]
    fn the_cap_drops_oldest_first_but_never_newest_or_young() {
        let r = Retention {
            max_age: Duration::from_secs(365 * 24 * 3600),
            max_bytes: Some(100),
        };
        let v = vec![
            (NOW - 50 * DAY_NS, 60, false), // 0: oldest, goes first
            (NOW - 40 * DAY_NS, 60, true),  // 1: newest of its path: stays
            (NOW - 30 * DAY_NS, 60, false), // 2: goes second
            (NOW - 20 * DAY_NS, 60, false), // 3: total is 120 after 0 and 2 ... goes too
            (NOW - 10 * MIN, 60, false),    // 4: younger than an hour: stays
        ];
        assert_eq!(r.over_cap(&v, NOW), vec![0, 2, 3]);
        let none = Retention::default();
        assert!(none.over_cap(&v, NOW).is_empty());
        let roomy = Retention {
            max_bytes: Some(1000),
            ..r
        };
        assert!(roomy.over_cap(&v, NOW).is_empty());
    }
}
