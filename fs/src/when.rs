//! Times as a user types and reads them: the TIME of `fybrk restore PATH --at TIME`, the
//! `.fybrk/at/<TIME>/` directory names of the time-travel tree, and the times `fybrk log` prints.
//!
//! Everything is nanoseconds since the Unix epoch in an `i64`, the unit the store records, which
//! covers 1677-09-21 to 2262-04-11; a time outside that is an error, never a wrap or a panic.
//!
//! UTC and explicit offsets are converted in pure Rust (Howard Hinnant's days-from-civil), so
//! they are exact and do not depend on the machine. Only times without a zone, which mean the
//! user's local time, go through libc (`mktime` / `localtime_r`), because the time zone rules
//! (`TZ`, `/etc/localtime`, daylight saving) live there.

const NS_PER_SEC: i64 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// The accepted forms, appended to every "this is not a time" message.
const FORMS: &str = "use 2026-12-02T10:00:00Z, 2026-12-02 10:00 (local time), or 10m / 2h / 3d ago";

/// Parses a time given by a user into nanoseconds since the Unix epoch.
///
/// Accepted, with `now_ns` the current time:
/// - RFC 3339: `2026-12-02T10:00:00Z`, `2026-12-02T10:00:00.5+01:00`, `-05:30` offsets,
///   lowercase `t`/`z`, a space instead of `T`; the seconds may be left out (`2026-12-02T10:00Z`);
/// - no zone (`2026-12-02T10:00:00`, `2026-12-02 10:00`): local time;
/// - a date alone (`2026-12-02`): local midnight;
/// - `now`, or an integer and a unit `s`/`m`/`h`/`d`/`w` (`10m`, `3d`, optionally `10m ago`):
///   that long before `now_ns`.
///
/// The error is a message for the user naming the input and the accepted forms.
pub fn parse_time(s: &str, now_ns: i64) -> Result<i64, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("now") {
        return Ok(now_ns);
    }
    let parsed = match parse_relative(t) {
        Some(r) => r.and_then(|ago| now_ns.checked_sub(ago).ok_or(Bad::OutOfRange)),
        None => parse_absolute(t),
    };
    parsed.map_err(|bad| bad.message(s))
}

/// Formats a time for people as `2026-12-02 10:00:00` in local time (seconds truncated), or as
/// `2026-12-02 10:00:00 UTC` if the local time cannot be computed.
pub fn format_local(ns: i64) -> String {
    let secs = ns.div_euclid(NS_PER_SEC);
    match local_civil(secs) {
        Some((y, mo, d, h, mi, s)) => format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}"),
        // Same width as the local form plus the zone, so columns stay aligned.
        None => format_utc(ns).replace('T', " ").replace('Z', " UTC"),
    }
}

/// Formats a time as RFC 3339 in UTC with whole seconds (truncated), `2026-12-02T10:00:00Z`.
/// [`parse_time`] reads it back.
pub fn format_utc(ns: i64) -> String {
    let (y, mo, d, h, mi, s) = utc_civil(ns.div_euclid(NS_PER_SEC));
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// The name of a time's directory in the time-travel tree (`.fybrk/at/<name>/`): the same as
/// [`format_utc`], so it is unambiguous whatever the zone, sorts by time, and [`parse_time`]
/// reads it back. Colons are fine in Linux file names.
pub fn dir_name(ns: i64) -> String {
    format_utc(ns)
}

/// Why an input is not a time. Turned into the user's message by [`Bad::message`].
#[derive(Debug, PartialEq)]
enum Bad {
    /// Not in any accepted form.
    Syntax,
    /// In an accepted form, but a field is out of its range (the text says which).
    Field(String),
    /// A valid time, but outside what an `i64` of nanoseconds holds.
    OutOfRange,
}

impl Bad {
    fn message(&self, input: &str) -> String {
        match self {
            Bad::Syntax => format!("{input:?} is not a time: {FORMS}"),
            Bad::Field(why) => format!("{input:?} is not a time: {why}"),
            Bad::OutOfRange => format!(
                "{input:?} is not a time fybrk can represent: it must lie between \
                 1677-09-22 and 2262-04-11"
            ),
        }
    }
}

/// `10m`, `3d`, `2w ago`: `None` if the input does not look like that at all, else the duration
/// in nanoseconds or why it cannot be one.
fn parse_relative(t: &str) -> Option<Result<i64, Bad>> {
    let t = match t.strip_suffix("ago") {
        Some(rest) if rest.ends_with(char::is_whitespace) => rest.trim_end(),
        _ => t,
    };
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    // `digits` counts ASCII bytes from the start, so it is a char boundary.
    let (num, unit) = t.split_at(digits);
    let unit_secs = match unit.trim_start() {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => SECS_PER_DAY,
        "w" => 7 * SECS_PER_DAY,
        _ => return None,
    };
    // Parsing fails only on overflow here: the string is non-empty ASCII digits.
    let n: i64 = match num.parse() {
        Ok(n) => n,
        Err(_) => return Some(Err(Bad::OutOfRange)),
    };
    Some(
        n.checked_mul(unit_secs)
            .and_then(|s| s.checked_mul(NS_PER_SEC))
            .ok_or(Bad::OutOfRange),
    )
}

/// A civil date and time as typed, before it is placed on the time line.
struct Civil {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    /// Nanoseconds within the second, from the fraction.
    nanos: i64,
}

/// The time zone given with a time.
enum Zone {
    /// None: the user's local time.
    Local,
    /// `Z` or an offset east of UTC, in seconds (`-05:30` is -19800).
    Offset(i64),
}

fn parse_absolute(t: &str) -> Result<i64, Bad> {
    let mut p = Cursor { b: t.as_bytes() };
    let year = p.digits(4)?;
    p.expect(b'-')?;
    let month = p.digits(2)?;
    p.expect(b'-')?;
    let day = p.digits(2)?;
    let mut c = Civil {
        year,
        month,
        day,
        hour: 0,
        minute: 0,
        second: 0,
        nanos: 0,
    };
    let mut zone = Zone::Local;
    if !p.done() {
        match p.next() {
            Some(b'T' | b't' | b' ') => {}
            _ => return Err(Bad::Syntax),
        }
        c.hour = p.digits(2)?;
        p.expect(b':')?;
        c.minute = p.digits(2)?;
        if p.peek() == Some(b':') {
            p.next();
            c.second = p.digits(2)?;
            if p.peek() == Some(b'.') {
                p.next();
                c.nanos = p.fraction()?;
            }
        }
        zone = match p.next() {
            None => Zone::Local,
            Some(b'Z' | b'z') => Zone::Offset(0),
            Some(sign @ (b'+' | b'-')) => {
                let h = p.digits(2)?;
                p.expect(b':')?;
                let m = p.digits(2)?;
                if h > 23 || m > 59 {
                    return Err(Bad::Field(format!(
                        "the offset {h:02}:{m:02} is out of range"
                    )));
                }
                let off = h * 3_600 + m * 60;
                Zone::Offset(if sign == b'-' { -off } else { off })
            }
            Some(_) => return Err(Bad::Syntax),
        };
        if !p.done() {
            return Err(Bad::Syntax);
        }
    }
    c.validate()?;
    let secs = match zone {
        // Whole days and seconds of a 4-digit year are far from overflowing an i64.
        Zone::Offset(off) => {
            days_from_civil(c.year, c.month, c.day) * SECS_PER_DAY
                + c.hour * 3_600
                + c.minute * 60
                + c.second
                - off
        }
        Zone::Local => local_to_secs(&c)?,
    };
    to_ns(secs, c.nanos).ok_or(Bad::OutOfRange)
}

/// `secs` seconds and `nanos` (0..1e9) nanoseconds as one i64, or `None` if it does not fit.
/// Before the epoch the whole seconds alone can overflow while the sum fits (i64::MIN is
/// -9223372037 s + 145224192 ns), so those go from the next second down.
fn to_ns(secs: i64, nanos: i64) -> Option<i64> {
    if secs < 0 && nanos > 0 {
        secs.checked_add(1)?
            .checked_mul(NS_PER_SEC)?
            .checked_add(nanos - NS_PER_SEC)
    } else {
        secs.checked_mul(NS_PER_SEC)?.checked_add(nanos)
    }
}

impl Civil {
    fn validate(&self) -> Result<(), Bad> {
        if !(1..=12).contains(&self.month) {
            return Err(Bad::Field(format!("month {} is not 1 to 12", self.month)));
        }
        let days = days_in_month(self.year, self.month);
        if !(1..=days).contains(&self.day) {
            return Err(Bad::Field(format!(
                "{:04}-{:02} has no day {} (it has {days} days)",
                self.year, self.month, self.day
            )));
        }
        if self.hour > 23 {
            return Err(Bad::Field(format!("hour {} is not 0 to 23", self.hour)));
        }
        if self.minute > 59 {
            return Err(Bad::Field(format!("minute {} is not 0 to 59", self.minute)));
        }
        // 60 is a leap second (RFC 3339 allows it); it lands on the next minute's first second.
        if self.second > 60 {
            return Err(Bad::Field(format!("second {} is not 0 to 60", self.second)));
        }
        Ok(())
    }
}

/// A byte cursor over ASCII input. Works on bytes so that no slice can split a UTF-8 character.
struct Cursor<'a> {
    b: &'a [u8],
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.first().copied()
    }

    fn next(&mut self) -> Option<u8> {
        let (&first, rest) = self.b.split_first()?;
        self.b = rest;
        Some(first)
    }

    fn done(&self) -> bool {
        self.b.is_empty()
    }

    fn expect(&mut self, want: u8) -> Result<(), Bad> {
        match self.next() {
            Some(got) if got == want => Ok(()),
            _ => Err(Bad::Syntax),
        }
    }

    /// Exactly `n` decimal digits (n <= 4, so no overflow).
    fn digits(&mut self, n: usize) -> Result<i64, Bad> {
        let mut v = 0;
        for _ in 0..n {
            match self.next() {
                Some(d @ b'0'..=b'9') => v = v * 10 + i64::from(d - b'0'),
                _ => return Err(Bad::Syntax),
            }
        }
        Ok(v)
    }

    /// One or more digits after the decimal point, as nanoseconds; digits past the ninth are
    /// checked but dropped (truncation, like the formatters).
    fn fraction(&mut self) -> Result<i64, Bad> {
        let mut nanos = 0;
        let mut count = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            self.next();
            if count < 9 {
                nanos = nanos * 10 + i64::from(d - b'0');
            }
            count += 1;
        }
        if count == 0 {
            return Err(Bad::Syntax);
        }
        for _ in count..9 {
            nanos *= 10;
        }
        Ok(nanos)
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant, "chrono-Compatible
/// Low-Level Date Algorithms"). Exact for any year whose day count fits comfortably in an i64;
/// callers pass 4-digit years or years derived from an i64 of nanoseconds.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let mp = (m + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + d - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day, hour, minute, second) in UTC of whole seconds since the epoch. The
/// seconds come from an i64 of nanoseconds (about ±9.2e9), so nothing here can overflow.
fn utc_civil(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let (y, mo, d) = civil_from_days(secs.div_euclid(SECS_PER_DAY));
    let sod = secs.rem_euclid(SECS_PER_DAY);
    (y, mo, d, sod / 3_600, sod / 60 % 60, sod % 60)
}

extern "C" {
    /// POSIX `tzset` from `<time.h>`, which the `libc` crate does not bind: it (re)reads `TZ`
    /// so that the conversions below use the zone of the environment, as POSIX asks before
    /// `localtime_r`.
    fn tzset();
}

/// Seconds since the epoch of a civil time in the local zone, via `mktime`.
fn local_to_secs(c: &Civil) -> Result<i64, Bad> {
    // Fields are validated (year has 4 digits), so they fit a C int.
    let field = |v: i64| libc::c_int::try_from(v).map_err(|_| Bad::OutOfRange);
    // SAFETY: `libc::tm` is plain integers plus (glibc/musl) a `tm_zone` pointer that may be
    // null, so all-zero bytes are a valid value of it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = field(c.year - 1900)?;
    tm.tm_mon = field(c.month - 1)?;
    tm.tm_mday = field(c.day)?;
    tm.tm_hour = field(c.hour)?;
    tm.tm_min = field(c.minute)?;
    tm.tm_sec = field(c.second)?;
    // Let the zone rules decide whether daylight saving applies on that date.
    tm.tm_isdst = -1;
    // mktime sets tm_wday on success, so a -1 left there tells an error from the valid
    // result -1 (one second before the epoch in UTC).
    tm.tm_wday = -1;
    // SAFETY: `tzset` takes no arguments and only (re)reads TZ into libc's own state. `mktime`
    // only reads and normalises the `tm` we own, passed by exclusive reference for the call
    // (it never reads `tm_zone`), and returns a plain integer.
    let t = unsafe {
        tzset();
        libc::mktime(&mut tm)
    };
    if t == -1 && tm.tm_wday == -1 {
        return Err(Bad::OutOfRange);
    }
    // `time_t` is an i64 here but an i32 on some 32-bit targets; the conversion is for those.
    #[allow(clippy::useless_conversion)]
    let secs = i64::from(t);
    Ok(secs)
}

/// (year, month, day, hour, minute, second) in the local zone, via `localtime_r`; `None` if
/// libc cannot compute it.
fn local_civil(secs: i64) -> Option<(i64, i64, i64, i64, i64, i64)> {
    let t = libc::time_t::try_from(secs).ok()?;
    // SAFETY: `libc::tm` is plain integers plus (glibc/musl) a `tm_zone` pointer that may be
    // null, so all-zero bytes are a valid value of it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: `tzset` only (re)reads TZ into libc's own state. `localtime_r` reads the `time_t`
    // we pass by shared reference and writes only into the `tm` we own, passed by exclusive
    // reference; it is the thread-safe variant (no shared static result). We read only the
    // integer fields afterwards, never `tm_zone`.
    let ok = unsafe {
        tzset();
        !libc::localtime_r(&t, &mut tm).is_null()
    };
    ok.then(|| {
        (
            i64::from(tm.tm_year) + 1900,
            i64::from(tm.tm_mon) + 1,
            i64::from(tm.tm_mday),
            i64::from(tm.tm_hour),
            i64::from(tm.tm_min),
            i64::from(tm.tm_sec),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_205_600 * NS_PER_SEC; // 2026-12-02T10:00:00Z
    const S: i64 = NS_PER_SEC;

    fn p(s: &str) -> i64 {
        parse_time(s, NOW).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn err(s: &str) -> String {
        match parse_time(s, NOW) {
            Ok(v) => panic!("{s:?} parsed as {v}"),
            Err(e) => e,
        }
    }

    /// The local zone's offset east of UTC at `ns`, in seconds, as libc reports it.
    fn local_offset(ns: i64) -> i64 {
        let t = libc::time_t::try_from(ns.div_euclid(S)).unwrap();
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        // SAFETY: as in `local_civil`.
        assert!(!unsafe { libc::localtime_r(&t, &mut tm) }.is_null());
        // `c_long` is an i32 on 32-bit targets.
        #[allow(clippy::useless_conversion)]
        let off = i64::from(tm.tm_gmtoff);
        off
    }

    #[test]
    fn rfc3339_utc_forms() {
        assert_eq!(format_utc(NOW), "2026-12-02T10:00:00Z");
        for s in [
            "2026-12-02T10:00:00Z",
            "2026-12-02t10:00:00z",
            "2026-12-02 10:00:00Z",
            "2026-12-02T10:00Z",
            "2026-12-02 10:00z",
            "2026-12-02T10:00:00+00:00",
            "2026-12-02T10:00:00-00:00",
            "2026-12-02T11:00:00+01:00",
            "2026-12-02T04:30:00-05:30",
            "2026-12-02T04:30-05:30",
            "2026-12-03T09:59:00+23:59",
            "  2026-12-02T10:00:00Z \n",
        ] {
            assert_eq!(p(s), NOW, "{s}");
        }
    }

    #[test]
    fn fractions() {
        assert_eq!(p("2026-12-02T10:00:00.5Z"), NOW + S / 2);
        assert_eq!(p("2026-12-02T10:00:00.000000001Z"), NOW + 1);
        assert_eq!(p("2026-12-02T10:00:00.123456789999Z"), NOW + 123_456_789);
        assert_eq!(p("2026-12-02T11:00:00.25+01:00"), NOW + S / 4);
        assert!(err("2026-12-02T10:00:00.Z").contains("is not a time"));
        assert!(err("2026-12-02T10:00.5Z").contains("is not a time"));
    }

    #[test]
    fn known_epochs() {
        assert_eq!(p("1970-01-01T00:00:00Z"), 0);
        assert_eq!(p("1969-12-31T23:59:59Z"), -S);
        assert_eq!(p("2000-03-01T00:00:00Z"), 951_868_800 * S);
        assert_eq!(p("1900-03-01T00:00:00Z"), -2_203_891_200 * S);
        assert_eq!(p("2262-04-11T23:47:16.854775807Z"), i64::MAX);
        assert_eq!(p("1677-09-21T00:12:43.145224192Z"), i64::MIN);
        assert!(err("2262-04-11T23:47:17Z").contains("between"));
        assert!(err("1677-09-21T00:12:43Z").contains("between"));
        assert!(err("9999-12-31T23:59:59Z").contains("between"));
        assert!(err("0000-01-01T00:00:00Z").contains("between"));
    }

    #[test]
    fn days_round_trip() {
        // Every day between 1600 and 2400 maps back to itself and dates increase by one.
        let start = days_from_civil(1600, 1, 1);
        let end = days_from_civil(2400, 12, 31);
        let mut prev = civil_from_days(start - 1);
        for z in start..=end {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
            assert!((1..=days_in_month(y, m)).contains(&d));
            assert!((y, m, d) > prev);
            prev = (y, m, d);
        }
    }

    #[test]
    fn leap_years() {
        assert_eq!(
            p("2024-02-29T00:00:00Z"),
            p("2024-02-28T00:00:00Z") + 86_400 * S
        );
        assert_eq!(
            p("2024-03-01T00:00:00Z"),
            p("2024-02-29T00:00:00Z") + 86_400 * S
        );
        assert_eq!(p("2000-02-29T12:00:00Z"), 951_825_600 * S);
        let e = err("2026-02-29T00:00:00Z");
        assert!(
            e.contains("\"2026-02-29T00:00:00Z\"") && e.contains("28 days"),
            "{e}"
        );
        assert!(err("1900-02-29T00:00:00Z").contains("28 days"));
        assert!(err("2026-02-29").contains("no day 29"));
        assert!(err("2026-04-31T00:00Z").contains("30 days"));
        assert_eq!(
            p("2026-12-31T00:00:00Z"),
            p("2026-12-30T00:00:00Z") + 86_400 * S
        );
    }

    #[test]
    fn field_ranges() {
        assert!(err("2026-13-01T00:00:00Z").contains("month 13"));
        assert!(err("2026-00-01T00:00:00Z").contains("month 0"));
        assert!(err("2026-12-00T00:00:00Z").contains("no day 0"));
        assert!(err("2026-12-32T00:00:00Z").contains("no day 32"));
        assert!(err("2026-12-02T24:00:00Z").contains("hour 24"));
        assert!(err("2026-12-02T10:60:00Z").contains("minute 60"));
        assert!(err("2026-12-02T10:00:61Z").contains("second 61"));
        assert!(err("2026-12-02T10:00:00+24:00").contains("offset"));
        assert!(err("2026-12-02T10:00:00+01:60").contains("offset"));
        // A leap second is accepted and lands on the next minute.
        assert_eq!(p("2026-12-02T09:59:60Z"), NOW);
    }

    #[test]
    fn round_trips() {
        for ns in [
            0,
            NOW,
            -S,
            951_825_600 * S,
            4_102_444_799 * S,
            -5_000_000_000 * S,
            i64::MAX / S * S,
            (i64::MIN / S) * S, // the first whole second within range
        ] {
            assert_eq!(p(&format_utc(ns)), ns, "{}", format_utc(ns));
            assert_eq!(dir_name(ns), format_utc(ns));
        }
        // Sub-second parts are truncated, also before 1970.
        assert_eq!(format_utc(NOW + S - 1), "2026-12-02T10:00:00Z");
        assert_eq!(format_utc(-1), "1969-12-31T23:59:59Z");
        let mut ns = -3_000_000_000 * S;
        while ns < 7_000_000_000 * S {
            assert_eq!(p(&format_utc(ns)), ns);
            ns += 86_399 * S + 12_345; // walks through every time of day and month
            ns -= ns.rem_euclid(S);
        }
    }

    #[test]
    fn local_forms() {
        for (local, z) in [
            ("2026-12-02T10:00:00", "2026-12-02T10:00:00Z"),
            ("2026-12-02T10:00", "2026-12-02T10:00:00Z"),
            ("2026-12-02 10:00", "2026-12-02T10:00:00Z"),
            ("2026-12-02 10:00:30", "2026-12-02T10:00:30Z"),
            ("2026-07-01t15:45", "2026-07-01T15:45:00Z"),
            ("2026-12-02", "2026-12-02T00:00:00Z"),
            ("2024-02-29", "2024-02-29T00:00:00Z"),
            ("1960-06-15 12:00", "1960-06-15T12:00:00Z"),
        ] {
            let ns = p(local);
            // Whatever the machine's zone: the same wall-clock time, shifted by libc's offset...
            assert_eq!(ns, p(z) - local_offset(ns) * S, "{local}");
            // ...and shown again as typed.
            let shown = format_local(ns);
            let want = match local.len() {
                10 => format!("{local} 00:00:00"),
                16 => format!("{}:00", &local[..16]),
                _ => local.to_string(),
            };
            assert_eq!(shown, want.replace(['T', 't'], " "), "{local}");
        }
        assert_eq!(p("2026-12-02 10:00:00.5"), p("2026-12-02 10:00") + S / 2);
        assert!(err("2026-02-29").contains("28 days"));
        assert!(err("2026-12-02 25:00").contains("hour 25"));
    }

    #[test]
    fn relative_forms() {
        assert_eq!(p("now"), NOW);
        assert_eq!(p(" NOW "), NOW);
        assert_eq!(p("0s"), NOW);
        assert_eq!(p("10s"), NOW - 10 * S);
        assert_eq!(p("10m"), NOW - 600 * S);
        assert_eq!(p("2h"), NOW - 7_200 * S);
        assert_eq!(p("3d"), NOW - 3 * 86_400 * S);
        assert_eq!(p("2w"), NOW - 14 * 86_400 * S);
        assert_eq!(p("10 m"), NOW - 600 * S);
        assert_eq!(p("10m ago"), NOW - 600 * S);
        assert_eq!(p("3d ago"), p("3d"));
        assert_eq!(parse_time("1s", i64::MIN + S), Ok(i64::MIN));
    }

    #[test]
    fn huge_values_are_errors() {
        for s in [
            "99999999999d",
            "99999999999999999999999999s",
            "9223372037s",
            "300y",
            "15251w",
        ] {
            let e = err(s);
            assert!(e.starts_with(&format!("{s:?} is not a time")), "{e}");
        }
        // The largest whole-second count that fits is still fine.
        assert!(parse_time("9223372036s", NOW).is_ok());
        assert!(parse_time("1s", i64::MIN).is_err());
        assert!(parse_time("0s", i64::MIN).is_ok());
    }

    #[test]
    fn garbage_is_an_error_with_the_forms() {
        let e = err("yesterday");
        assert_eq!(
            e,
            "\"yesterday\" is not a time: use 2026-12-02T10:00:00Z, \
             2026-12-02 10:00 (local time), or 10m / 2h / 3d ago"
        );
        for s in [
            "",
            "   ",
            "10",
            "m",
            "-10m",
            "+10m",
            "10x",
            "90min",
            "1.5h",
            "10m10s",
            "ago",
            "10mago",
            "10m ago ago",
            "2026",
            "2026-12",
            "2026-12-2",
            "26-12-02",
            "20261202",
            "2026/12/02",
            "2026-12-02T",
            "2026-12-02T10",
            "2026-12-02T10:0",
            "2026-12-02T10:00:0Z",
            "2026-12-02T10:00:00ZZ",
            "2026-12-02T10:00:00+0100",
            "2026-12-02T10:00:00+01",
            "2026-12-02T10:00:00 +01:00",
            "2026-12-02X10:00",
            "2026-12-02  10:00",
            "2026-12-02T10:00:00Z garbage",
            "２０２６-12-02",
            "2026-12-02T10:00:00é",
            "é",
        ] {
            assert!(err(s).ends_with(FORMS), "{s:?}: {}", err(s));
        }
    }

    #[test]
    fn formatters_do_not_panic_at_the_extremes() {
        assert_eq!(format_utc(i64::MIN), "1677-09-21T00:12:43Z");
        assert_eq!(format_utc(i64::MAX), "2262-04-11T23:47:16Z");
        assert_eq!(dir_name(i64::MIN), "1677-09-21T00:12:43Z");
        for ns in [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX] {
            let s = format_local(ns);
            assert!(s.len() >= 19, "{s}");
            let _ = format_utc(ns);
        }
        assert_eq!(format_utc(-2_203_891_200 * S), "1900-03-01T00:00:00Z");
        assert_eq!(format_local(NOW).len(), 19);
    }
}
