//! Equality and copies of the short byte strings the host handles per row
//! or per field (field names, category values, text values): `==` on slices
//! calls `memcmp` and `extend_from_slice` calls `memcpy`, and for strings of
//! a few bytes that call costs more than the bytes.

/// `a == b`, inline up to 16 bytes: two overlapping words of each cover
/// every byte.
#[inline]
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let u32_at = |s: &[u8], at: usize| u32::from_le_bytes([s[at], s[at + 1], s[at + 2], s[at + 3]]);
    let u64_at = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => u32_at(a, 0) == u32_at(b, 0) && u32_at(a, n - 4) == u32_at(b, n - 4),
        8..=16 => u64_at(a, 0) == u64_at(b, 0) && u64_at(a, n - 8) == u64_at(b, n - 8),
        _ => a == b,
    }
}

/// `out.extend_from_slice(&from[..n])`, as one copy of 16 bytes (the rest
/// cut off again) when `n` is at most 16, `from` holds 16 and `out` has
/// room for them (never growing `out` for bytes it cuts off).
#[inline]
pub fn extend(out: &mut Vec<u8>, from: &[u8], n: usize) {
    if n == 0 {
        return;
    }
    match from.first_chunk::<16>() {
        Some(chunk) if n <= 16 && out.capacity() - out.len() >= 16 => {
            let len = out.len();
            out.extend_from_slice(chunk);
            out.truncate(len + n);
        }
        _ => out.extend_from_slice(&from[..n]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_byte_strings_compare_like_slices() {
        // Every length up to 20, equal and differing in each one byte.
        for n in 0..=20usize {
            let a: Vec<u8> = (0..n as u8).map(|i| b'a' + i).collect();
            assert!(equal(&a, &a.clone()), "{n}");
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 0x20;
                assert!(!equal(&a, &b), "length {n}, byte {at}");
            }
            assert!(!equal(&a, &a[..n.saturating_sub(1)]) || n == 0);
        }
    }

    #[test]
    fn short_copies_append_exactly_the_bytes_asked_for() {
        let source: Vec<u8> = (0..40u8).collect();
        for from in [0, 10, 24, 25, 30, 40] {
            for n in 0..=(40 - from).min(20) {
                // With room for 16 more bytes, and with less.
                for room in [64, 3] {
                    let mut out = Vec::with_capacity(room);
                    out.extend_from_slice(b"ab");
                    extend(&mut out, &source[from..], n);
                    assert_eq!(out[..2], *b"ab");
                    assert_eq!(out[2..], source[from..from + n], "from {from}, {n} bytes");
                    assert!(out.capacity() == room || 2 + n > room, "grown for bytes cut off: {} -> {}", room, out.capacity());
                }
            }
        }
    }
}
