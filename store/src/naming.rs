//! Names of conflict copies: `name.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.ext`, Syncthing's form,
//! so people (and tools) that know one know the other.
//!
//! - The time is the losing version's mtime in UTC: it says *which* version the copy holds, and
//!   every device derives the same name without talking.
//! - `DEVICE` is the first 7 base32 characters of the short id of the device that made the
//!   losing version, the same characters as the first group of its displayed `DeviceId`.
//! - The extension is what follows the last dot of the file name, so the copy still opens with
//!   the same application: `report.final.txt` -> `report.final.sync-conflict-...-ABCDEFG.txt`.
//!   A name without one gets the suffix at the end; a leading dot (`.bashrc`) is part of the
//!   name, not an extension start.

use crate::record::{split_parent, ShortId};

/// What marks a conflict copy's name.
pub const CONFLICT_MARKER: &str = ".sync-conflict-";

/// Longest file name (bytes) Linux filesystems accept; a copy of a long name is shortened so
/// it can still be created on every device.
const NAME_MAX: usize = 255;

/// The RFC 4648 base32 alphabet (the one device ids are shown in).
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Characters of the device tag: one display group of a device id.
const TAG_LEN: usize = 7;

/// `YYYYMMDD-HHMMSS-DEVICE`: 8 + 1 + 6 + 1 + 7.
const STAMP_LEN: usize = 23;

/// The path of the conflict copy of the version at `path` with mtime `mtime_ns` made by
/// `device`. Only the last component changes.
pub fn conflict_copy_path(path: &str, mtime_ns: i64, device: ShortId) -> String {
    numbered_copy_path(path, mtime_ns, device, 0)
}

/// Candidate `n` for a conflict copy's path: candidate 0 is [`conflict_copy_path`]; later ones
/// (used when that name already holds a different file) add `-n` after the device tag:
/// `name.sync-conflict-YYYYMMDD-HHMMSS-DEVICE-2.ext`.
pub fn numbered_copy_path(path: &str, mtime_ns: i64, device: ShortId, n: u32) -> String {
    let (dir, name) = split_parent(path);
    let mut suffix = format!(
        "{CONFLICT_MARKER}{}-{}",
        utc_stamp(mtime_ns),
        device_tag(device)
    );
    if n > 0 {
        suffix.push_str(&format!("-{n}"));
    }
    let (stem, ext) = split_ext(name);
    let budget = NAME_MAX - suffix.len();
    let new_name = if stem.len() + ext.len() <= budget {
        format!("{stem}{suffix}{ext}")
    } else if ext.len() < budget {
        format!("{}{suffix}{ext}", truncate(stem, budget - ext.len()))
    } else {
        // An "extension" too long to keep is not one anyone opens files by.
        format!("{}{suffix}", truncate(name, budget))
    };
    crate::record::join(dir, &new_name)
}

/// The path a conflict copy was made from (one level: a copy of a copy gives the first copy),
/// or `None` when `path` is not a conflict copy's name. For a copy whose name had to be
/// shortened, this is the shortened original.
pub fn conflict_origin(path: &str) -> Option<String> {
    let (dir, name) = split_parent(path);
    let at = name.rfind(CONFLICT_MARKER)?;
    let rest = &name[at + CONFLICT_MARKER.len()..];
    let stamp = rest.get(..STAMP_LEN)?;
    let b = stamp.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let tag_ok = b[16..].iter().all(|c| BASE32.contains(c));
    if !(digits(0..8) && b[8] == b'-' && digits(9..15) && b[15] == b'-' && tag_ok) {
        return None;
    }
    // An optional `-n` (a numbered candidate) follows the tag; the extension starts with '.'.
    let mut tail = &rest[STAMP_LEN..];
    if let Some(num) = tail.strip_prefix('-') {
        let digits = num.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        tail = &num[digits..];
    }
    if !(tail.is_empty() || tail.starts_with('.')) {
        return None;
    }
    let original = format!("{}{tail}", &name[..at]);
    Some(crate::record::join(dir, &original))
}

/// The 7-character tag of a device in conflict names: base32 of the short id's big-endian
/// bytes, first 35 bits.
pub fn device_tag(device: ShortId) -> String {
    (0..TAG_LEN)
        .map(|i| {
            let shift = 64 - 5 * (i + 1);
            char::from(BASE32[((device >> shift) & 31) as usize])
        })
        .collect()
}

/// `YYYYMMDD-HHMMSS` in UTC for a time in nanoseconds since the Unix epoch (before 1970 too).
pub fn utc_stamp(mtime_ns: i64) -> String {
    let secs = mtime_ns.div_euclid(1_000_000_000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Splits a file name into stem and extension (with its dot). No extension when the only dot
/// is the first character (a dotfile) or the last one.
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 && i + 1 < name.len() => name.split_at(i),
        _ => (name, ""),
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01: Howard Hinnant's
/// `civil_from_days`, exact for every `i64` nanosecond time.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_700_000_000 * 1_000_000_000; // 2023-11-14 22:13:20 UTC
    /// A short id whose tag is "ABCDEFG": 0, 1, 2, ... 6 as 5-bit groups from the top.
    const DEV: ShortId = (1 << 54) | (2 << 49) | (3 << 44) | (4 << 39) | (5 << 34) | (6 << 29);

    #[test]
    fn stamps_are_utc() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(T), "20231114-221320");
        assert_eq!(
            utc_stamp(T + 999_999_999),
            "20231114-221320",
            "sub-second part is dropped"
        );
        assert_eq!(
            utc_stamp(951_782_400 * 1_000_000_000),
            "20000229-000000",
            "leap day"
        );
        assert_eq!(
            utc_stamp(-1),
            "19691231-235959",
            "before the epoch rounds down"
        );
        assert_eq!(utc_stamp(i64::MAX), "22620411-234716");
        assert_eq!(utc_stamp(i64::MIN), "16770921-001243");
    }

    #[test]
    fn device_tag_is_the_first_display_group() {
        assert_eq!(device_tag(DEV), "ABCDEFG");
        assert_eq!(device_tag(0), "AAAAAAA");
        assert_eq!(device_tag(u64::MAX), "7777777");
        // That it matches the first group of a displayed DeviceId is tested in fybrk-net.
    }

    #[test]
    fn names_keep_the_extension() {
        let s = "sync-conflict-20231114-221320-ABCDEFG";
        let cases = [
            ("report.final.txt", format!("report.final.{s}.txt")),
            ("Makefile", format!("Makefile.{s}")),
            (".bashrc", format!(".bashrc.{s}")),
            (".config.json", format!(".config.{s}.json")),
            ("archive.tar.gz", format!("archive.tar.{s}.gz")),
            ("trailing.", format!("trailing..{s}")),
            ("a.d/Makefile", format!("a.d/Makefile.{s}")),
            ("docs/x/report.txt", format!("docs/x/report.{s}.txt")),
            ("été.txt", format!("été.{s}.txt")),
        ];
        for (path, want) in cases {
            assert_eq!(conflict_copy_path(path, T, DEV), want, "{path}");
            assert_eq!(conflict_origin(&want).as_deref(), Some(path), "{want}");
        }
    }

    #[test]
    fn numbered_candidates() {
        let s = "sync-conflict-20231114-221320-ABCDEFG";
        assert_eq!(
            numbered_copy_path("a/r.txt", T, DEV, 0),
            conflict_copy_path("a/r.txt", T, DEV)
        );
        assert_eq!(
            numbered_copy_path("a/r.txt", T, DEV, 2),
            format!("a/r.{s}-2.txt")
        );
        assert_eq!(
            numbered_copy_path("Makefile", T, DEV, 13),
            format!("Makefile.{s}-13")
        );
        for n in [1, 2, 13] {
            for p in ["a/r.txt", "Makefile", ".bashrc"] {
                assert_eq!(
                    conflict_origin(&numbered_copy_path(p, T, DEV, n)).as_deref(),
                    Some(p)
                );
            }
        }
        assert_eq!(conflict_origin(&format!("x.{s}-.txt")), None);
        assert_eq!(conflict_origin(&format!("x.{s}x")), None);
    }

    #[test]
    fn copies_of_copies_unwrap_one_level() {
        let once = conflict_copy_path("a/b.txt", T, DEV);
        let twice = conflict_copy_path(&once, 0, 0);
        assert_eq!(conflict_origin(&twice).as_deref(), Some(once.as_str()));
        assert_eq!(conflict_origin("a/b.txt"), None);
        assert_eq!(conflict_origin("x.sync-conflict-2023-oops.txt"), None);
        assert_eq!(
            conflict_origin("x.sync-conflict-20231114-221320-abcdefg"),
            None
        );
    }

    #[test]
    fn long_names_are_shortened_to_fit() {
        let long = format!("d/{}.txt", "é".repeat(200)); // 400 bytes of stem
        let copy = conflict_copy_path(&long, T, DEV);
        let name = copy.strip_prefix("d/").unwrap();
        assert!(name.len() <= NAME_MAX, "{}", name.len());
        assert!(name.ends_with("-ABCDEFG.txt"));
        let huge_ext = format!("x.{}", "e".repeat(300));
        let copy = conflict_copy_path(&huge_ext, T, DEV);
        assert!(
            copy.len() <= NAME_MAX && copy.ends_with("-ABCDEFG"),
            "{copy}"
        );
    }
}
