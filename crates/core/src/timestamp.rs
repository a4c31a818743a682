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
    if !looks_like(s) {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        part.iter().try_fold(0i64, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0')))
    };
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 || s[16] != b':' {
        return None;
    }
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
            let off = num(i + 1, 2)? * 60 + num(i + 4, 2)?;
            if sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    Some((((days * 24 + h) * 60 + mi - offset_min) * 60 + sec) * 1000 + millis)
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

    #[test]
    fn rejects_non_times() {
        for s in [&b"2026-13-01T00:00:00Z"[..], b"2026-01-01T00:00:00", b"hello world, not a time", b"2026-01-01T00:00:00Zjunk"] {
            assert_eq!(parse_ms(s), None, "{}", String::from_utf8_lossy(s));
        }
    }
}
