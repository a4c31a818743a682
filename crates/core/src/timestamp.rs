//! RFC 3339 timestamps to and from milliseconds since the Unix epoch, and
//! the host's clock in the same unit.
//!
//! Written out because both directions sit on the hot path (the generator
//! writes one per record, the decoder tests every string column that looks
//! like a time) and need no time-zone database: only `Z` and `±hh:mm` offsets.

/// The host's clock, in milliseconds since the Unix epoch (0 before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `2026-11-27T13:45:01.123Z`: always 24 bytes, for years 0..=9999.
pub fn format_ms(ms: i64, out: &mut Vec<u8>) {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let fields =
        [(y, 4, b'-'), (m, 2, b'-'), (d, 2, b'T'), (rem / 3_600_000, 2, b':'), (rem / 60_000 % 60, 2, b':'), (rem / 1000 % 60, 2, b'.'), (rem % 1000, 3, b'Z')];
    for (value, width, sep) in fields {
        let mut digits = [b'0'; 4];
        let mut v = value.clamp(0, 9999);
        for i in (0..width).rev() {
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend_from_slice(&digits[..width]);
        out.push(sep);
    }
}

/// Cheap test of whether `s` could be an RFC 3339 date-time.
pub fn looks_like(s: &[u8]) -> bool {
    s.len() >= 19 && s[4] == b'-' && s[7] == b'-' && (s[10] == b'T' || s[10] == b' ') && s[13] == b':'
}

/// Parse `YYYY-MM-DD[T ]hh:mm:ss[.fff...](Z|±hh:mm)`; `None` if it is not one.
pub fn parse_ms(s: &[u8]) -> Option<i64> {
    TimeParser::default().parse_ms(s)
}

/// Parses a column's times one after another as [`parse_ms`] does, taking
/// the date and time of day from the time before when they repeat it to
/// the second (a window's times mostly do): then only the fraction and the
/// offset are read, and no date turned into days.
#[derive(Debug, Default)]
pub struct TimeParser {
    /// The last time's first 19 bytes (up to its seconds) and their seconds
    /// since the epoch, offset not applied.
    last: Option<([u8; 19], i64)>,
}

impl TimeParser {
    /// What [`parse_ms`] reads `s` as.
    pub fn parse_ms(&mut self, s: &[u8]) -> Option<i64> {
        let head: [u8; 19] = s.get(..19)?.try_into().ok()?;
        let seconds = match self.last {
            Some((last, seconds)) if last == head => seconds,
            _ => {
                let seconds = seconds_of(&head)?;
                self.last = Some((head, seconds));
                seconds
            }
        };
        let (millis, offset_min) = fraction_and_offset(s)?;
        Some((seconds - offset_min * 60) * 1000 + millis)
    }
}

/// Seconds since the epoch of `YYYY-MM-DD[T ]hh:mm:ss`, in no time zone.
fn seconds_of(head: &[u8; 19]) -> Option<i64> {
    if !looks_like(head) || head[16] != b':' {
        return None;
    }
    let num = |from: usize, len: usize| digits(&head[from..from + len]);
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60 + sec)
}

/// The number `bytes` spell in decimal, if they are all digits.
fn digits(bytes: &[u8]) -> Option<i64> {
    bytes.iter().try_fold(0i64, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0')))
}

/// The milliseconds of a time's fraction (`.fff...`, if any) and its offset
/// in minutes (`Z` or `±hh:mm`, ending the time), from byte 19 of `s`.
fn fraction_and_offset(s: &[u8]) -> Option<(i64, i64)> {
    let mut i = 19;
    let mut millis = 0;
    if s.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while s.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                millis = millis * 10 + i64::from(s[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..3 {
            millis *= 10;
        }
    }
    let offset_min = match s.get(i) {
        Some(b'Z') | Some(b'z') if i + 1 == s.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == s.len() && s[i + 3] == b':' => {
            let off = digits(&s[i + 1..i + 3])? * 60 + digits(&s[i + 4..i + 6])?;
            if sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    Some((millis, offset_min))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for ms in [0, 1_764_250_000_123, 951_782_400_000, -86_400_001, 4_102_444_800_000] {
            let mut out = Vec::new();
            format_ms(ms, &mut out);
            assert_eq!(out.len(), 24);
            assert_eq!(parse_ms(&out), Some(ms), "{}", String::from_utf8_lossy(&out));
        }
    }

    #[test]
    fn parses_offsets_and_fractions() {
        assert_eq!(parse_ms(b"1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_ms(b"1970-01-01T00:00:00.5Z"), Some(500));
        assert_eq!(parse_ms(b"1970-01-01 00:00:01.123456Z"), Some(1123));
    }

    /// The date and time of day kept from the time before never change what a time reads as.
    #[test]
    fn a_parser_that_read_times_before_reads_each_as_a_fresh_one_does() {
        let times: [&[u8]; 17] = [
            b"2026-12-06T11:22:30.178Z",
            b"2026-12-06T11:22:30.999Z",
            b"2026-12-06T11:22:30+01:00",
            b"2026-12-06T11:22:30.5-02:30",
            b"2026-12-06T11:22:30.Z",
            b"2026-12-06T11:22:30",
            b"2026-12-06T11:22:30Zjunk",
            b"2026-12-06 11:22:30.1Z",
            b"2026-12-06T11:22:31.000Z",
            b"2026-13-06T11:22:31.000Z",
            b"2026-13-06T11:22:31.001Z",
            b"2026-12-06T11:22:3",
            b"",
            b"2026-12-06T11:22:31.000z",
            b"2026-12-06T11:22:31.000+00:0x",
            b"2026-12-06T11:22:32.000Z",
            b"2026-12-06T11:23:32.000Z",
        ];
        let mut parser = TimeParser::default();
        let read: Vec<Option<i64>> = times.iter().map(|s| parser.parse_ms(s)).collect();
        let fresh: Vec<Option<i64>> = times.iter().map(|s| TimeParser::default().parse_ms(s)).collect();
        assert_eq!(read, fresh);
        let at = |i: usize| read[i].unwrap();
        assert_eq!((at(1) - at(0), at(0) - at(2), at(3) - at(2)), (821, 3_600_000 + 178, 9_000_000 + 500 + 3_600_000));
        assert_eq!((at(7), at(8), at(13)), (at(0) - 78, at(0) + 822, at(8)));
        // Times that differ from the one before only in the last digit of the seconds, or only in the minute.
        assert_eq!((at(15) - at(8), at(16) - at(15)), (1000, 60_000));
        assert_eq!(read.iter().filter(|t| t.is_none()).count(), 8, "{read:?}");
    }

    #[test]
    fn rejects_non_times() {
        for s in [&b"2026-13-01T00:00:00Z"[..], b"2026-01-01T00:00:00", b"hello world, not a time", b"2026-01-01T00:00:00Zjunk"] {
            assert_eq!(parse_ms(s), None, "{}", String::from_utf8_lossy(s));
        }
    }
}
