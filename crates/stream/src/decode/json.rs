//! A strict JSON object parser that writes fields straight into a
//! [`ValueSink`]: a [`Record`](super::Record), or a window's columns.
//!
//! Building a DOM per line and then walking it costs more than the whole
//! rest of the pipeline, so this parser does both in one pass: keys become
//! interned field ids, scalars land in the sink, nested objects flatten to
//! dotted names, arrays are validated and kept as their JSON text. Anything
//! that is not RFC 8259 JSON is an error with the byte where it went wrong.
//!
//! A member's steps (its key, its value and field, a string, a number) are
//! inlined into the object's loop (`inline(always)`: the compiler would
//! not): as calls, they had the parser's state stored and loaded around
//! each one, 20-23% more instructions a line.

use super::{DecodeError, FieldNames, Kind, ValueSink, MAX_DEPTH};
use clean_host_core::short_bytes;

/// Arrays and objects nested deeper than this are rejected.
const MAX_NESTING: usize = 128;

/// Exact powers of ten, for the fast decimal path.
const POW10: [f64; 23] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22];

pub struct Parser<'a, S> {
    b: &'a [u8],
    i: usize,
    fields: &'a mut FieldNames,
    sink: &'a mut S,
    name: &'a mut Vec<u8>,
    position: usize,
}

/// A member's key as [`Parser::read_key`] found it: a value handed from
/// step to step (in registers), not kept in the parser, where each member
/// stored and loaded it.
#[derive(Clone, Copy)]
struct Key {
    /// A top-level key without escapes, where it is in the line: its name
    /// is read there, not copied into `name` first (else it is in `name`).
    at: Option<(usize, usize)>,
    /// Its field, when it is the previous record's key at its place.
    known: Option<u32>,
}

/// The first byte no JSON text can hold (a control character other than
/// whitespace, or DEL): the line is binary data.
fn control_byte(b: &[u8]) -> Option<(usize, u8)> {
    b.iter().position(|&c| (c < 0x20 && !matches!(c, b'\t' | b'\n' | b'\r')) || c == 0x7f).map(|at| (at, b[at]))
}

/// Where the run of plain ASCII string bytes from `i` ends: at the first
/// quote, backslash, control character or byte above 0x7f (or the end).
/// Eight bytes at a time: each test below flags exactly the lowest byte
/// that matches (higher flags may be borrows), so the lowest flag of all is
/// the first byte that ends the run.
#[inline]
fn plain_ascii_end(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let ends = zero_byte(w ^ (ONES * u64::from(b'"'))) | zero_byte(w ^ (ONES * u64::from(b'\\'))) | (w.wrapping_sub(ONES * 0x20) & !w & HIGH) | (w & HIGH);
        if ends != 0 {
            return i + (ends.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || !(0x20..0x80).contains(&c) {
            break;
        }
        i += 1;
    }
    i
}

/// Where a string's unescaped run from `i` ends (at a quote, backslash,
/// control character or the end), passing over bytes above 0x7f, and
/// whether the run was all ASCII (else its UTF-8 is for the caller to check).
#[inline(always)]
fn string_run_end(b: &[u8], mut i: usize) -> (usize, bool) {
    let mut ascii = true;
    loop {
        i = plain_ascii_end(b, i);
        match b.get(i) {
            Some(&c) if c >= 0x80 => {
                ascii = false;
                i += 1;
            }
            _ => return (i, ascii),
        }
    }
}

/// 10^0 to 10^8: what a mantissa is multiplied by for a run of that many digits.
const POW10_U64: [u64; 9] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000];

/// The run of ASCII digits at `b[i..]` while eight bytes are left: how
/// many (0 to 8) and their value, from eight bytes at once instead of one
/// compare, multiply and add a digit.
#[inline]
fn digit_run(b: &[u8], i: usize) -> Option<(usize, u64)> {
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    let w = u64::from_le_bytes(*b.get(i..)?.first_chunk::<8>()?);
    // Per byte, its value less '0': a digit is below 10. Adding 0x76 sets
    // the top bit of every byte from 10 up; bytes from 0x80 have it
    // already. Only a byte after the first non-digit can take a carry.
    let x = w ^ ZEROS;
    let non_digits = (x | x.wrapping_add(0x7676_7676_7676_7676)) & 0x8080_8080_8080_8080;
    let run = (non_digits.trailing_zeros() / 8) as usize;
    if run == 0 {
        return Some((0, 0));
    }
    // The run's digits at the top, '0's below them: the same value.
    let digits = if run == 8 { w } else { (w << (8 * (8 - run))) | (ZEROS >> (8 * run)) };
    // Pairs, then fours, then all eight (the usual multiply-and-shift).
    // The products' high terms fall off the top: wrapping, as intended.
    let v = digits - ZEROS;
    let v = v * 10 + (v >> 8);
    let (pairs, next_pairs) = (v & 0x0000_00FF_0000_00FF, (v >> 16) & 0x0000_00FF_0000_00FF);
    let v = pairs.wrapping_mul(0x000F_4240_0000_0064).wrapping_add(next_pairs.wrapping_mul(0x0000_2710_0000_0001)) >> 32;
    Some((run, v))
}

fn syntax(at: usize, what: &str) -> DecodeError {
    DecodeError::Syntax(format!("{what} at byte {at}"))
}

impl<'a, S: ValueSink> Parser<'a, S> {
    pub fn new(b: &'a [u8], fields: &'a mut FieldNames, sink: &'a mut S, name: &'a mut Vec<u8>) -> Self {
        Parser { b, i: 0, fields, sink, name, position: 0 }
    }

    /// Parse the line as one object. Errors say what a person needs to
    /// know: binary data, a line cut short, or where the syntax broke.
    pub fn parse_line(mut self) -> Result<(), DecodeError> {
        self.object_line().map_err(|e| match control_byte(self.b) {
            Some((at, byte)) => DecodeError::Binary { at, byte },
            None if self.i >= self.b.len() && matches!(e, DecodeError::Syntax(_)) => DecodeError::Truncated { bytes: self.b.len() },
            None => e,
        })
    }

    fn object_line(&mut self) -> Result<(), DecodeError> {
        self.ws();
        match self.peek() {
            Some(b'{') => {
                self.i += 1;
                self.object_body(0)?;
            }
            Some(_) => {
                let kind = match self.peek() {
                    Some(b'[') => "an array",
                    Some(b'"') => "a string",
                    Some(b't' | b'f') => "a boolean",
                    Some(b'n') => "null",
                    _ => "a number",
                };
                self.skip_value(0)?;
                self.ws();
                if self.i == self.b.len() {
                    return Err(DecodeError::NotAnObject(kind));
                }
                return Err(syntax(self.i, "unexpected text after the value"));
            }
            None => return Err(DecodeError::Empty),
        }
        self.ws();
        if self.i != self.b.len() {
            return Err(syntax(self.i, "unexpected text after the object"));
        }
        Ok(())
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8, what: &str) -> Result<(), DecodeError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(syntax(self.i, what))
        }
    }

    /// After `{`: members, then `}`; each value is added under `name`.
    fn object_body(&mut self, depth: usize) -> Result<(), DecodeError> {
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            if !self.next_is(b'"') {
                return Err(syntax(self.i, "expected a key"));
            }
            let prefix = self.name.len();
            if depth > 0 {
                self.name.push(b'.');
            }
            let key = self.read_key(depth == 0)?;
            if !self.next_is(b':') {
                return Err(syntax(self.i, "expected ':'"));
            }
            self.i += 1;
            self.ws();
            self.member_value(depth, key)?;
            self.name.truncate(prefix);
            if self.next_is(b',') {
                self.i += 1;
            } else if self.peek() == Some(b'}') {
                self.i += 1;
                return Ok(());
            } else {
                return Err(syntax(self.i, "expected ',' or '}'"));
            }
        }
    }

    /// Whether the next byte is `c`, stepping over whitespace (whether or
    /// not `c` follows it) unless `c` is there at once, as it usually is
    /// right after the last token (lines are mostly compact JSON).
    #[inline(always)]
    fn next_is(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            return true;
        }
        self.ws();
        self.peek() == Some(c)
    }

    /// The key at `self.i`: onto `name`, or where it is when `top_level`
    /// and it has no escapes; its field too when the previous record had
    /// that key at this place.
    #[inline(always)]
    fn read_key(&mut self, top_level: bool) -> Result<Key, DecodeError> {
        self.i += 1;
        let start = self.i;
        // Fastest path: the key the previous record had here, then `:`.
        if top_level {
            if let Some((id, bytes)) = self.fields.key_at(self.position, &self.b[start..]) {
                // On the colon, which the caller steps over as after any key.
                self.i += bytes - 1;
                return Ok(Key { at: Some((start, start + bytes - 2)), known: Some(id) });
            }
        }
        // Fast path: no escapes. A key need not become a field (`"k": {}`),
        // so its UTF-8 is checked here, when it has bytes above 0x7f.
        let ascii;
        (self.i, ascii) = string_run_end(self.b, self.i);
        if self.peek() == Some(b'"') {
            let key = &self.b[start..self.i];
            if !ascii && std::str::from_utf8(key).is_err() {
                return Err(syntax(start, "a key is not valid UTF-8"));
            }
            let at = if top_level {
                Some((start, self.i))
            } else {
                self.name.extend_from_slice(key);
                None
            };
            self.i += 1;
            return Ok(Key { at, known: None });
        }
        // An escape, a control character or the end: the slow path says which.
        self.i = start - 1;
        let mut name = std::mem::take(self.name);
        let r = self.string_into(&mut name);
        *self.name = name;
        r.map(|()| Key { at: None, known: None })
    }

    #[inline(always)]
    fn member_value(&mut self, depth: usize, key: Key) -> Result<(), DecodeError> {
        let at = self.i;
        match self.peek() {
            Some(b'{') if depth < MAX_DEPTH => {
                self.i += 1;
                // Nested names are built on this one.
                if let Some((start, end)) = key.at {
                    self.name.extend_from_slice(&self.b[start..end]);
                }
                self.object_body(depth + 1)
            }
            Some(b'{' | b'[') => {
                self.skip_value(depth)?;
                let raw = (at, self.i);
                self.push_text_slice(raw, key)
            }
            Some(b'"') => {
                let field = self.field(key)?;
                // Plain ASCII up to the closing quote, the usual value, is
                // copied as it stands; the rest is unescaped.
                let end = plain_ascii_end(self.b, self.i + 1);
                if self.b.get(end) == Some(&b'"') {
                    let (b, from) = (self.b, self.i + 1);
                    self.sink.text(field, |out| short_bytes::extend(out, &b[from..], end - from));
                    self.i = end + 1;
                } else {
                    let mut text = std::mem::take(self.sink.text_buffer(field));
                    let start = text.len();
                    let r = self.string_into(&mut text);
                    *self.sink.text_buffer(field) = text;
                    r?;
                    self.sink.value(field, Kind::Text, 0, start);
                }
                Ok(())
            }
            Some(b't') => self.literal(b"true", Kind::Bool, 1, key),
            Some(b'f') => self.literal(b"false", Kind::Bool, 0, key),
            Some(b'n') => self.literal(b"null", Kind::Null, 0, key),
            Some(b'-' | b'0'..=b'9') => {
                let (kind, bits) = self.number()?;
                let field = self.field(key)?;
                self.sink.push_scalar(field, kind, bits);
                Ok(())
            }
            _ => Err(syntax(at, "expected a value")),
        }
    }

    #[inline(always)]
    fn field(&mut self, key: Key) -> Result<u32, DecodeError> {
        if let Some(id) = key.known {
            self.position += 1;
            return Ok(id);
        }
        let name = match key.at {
            Some((start, end)) => &self.b[start..end],
            None => &self.name[..],
        };
        let id = self.fields.id_at(self.position, name).map_err(|e| match e {
            DecodeError::Syntax(_) => syntax(self.i, "a key is not valid UTF-8"),
            other => other,
        })?;
        self.position += 1;
        Ok(id)
    }

    fn push_text_slice(&mut self, (from, to): (usize, usize), key: Key) -> Result<(), DecodeError> {
        let field = self.field(key)?;
        self.sink.push_text(field, &self.b[from..to]);
        Ok(())
    }

    /// `true`, `false` or `null` at `self.i`. Inlined, as the member's
    /// other steps are: with its word a constant, the test compares a few
    /// bytes in place, not by a call to compare bytes.
    #[inline(always)]
    fn literal(&mut self, word: &[u8], kind: Kind, bits: u64, key: Key) -> Result<(), DecodeError> {
        if !self.b[self.i..].starts_with(word) {
            return Err(syntax(self.i, "expected true, false or null"));
        }
        self.i += word.len();
        let field = self.field(key)?;
        self.sink.push_scalar(field, kind, bits);
        Ok(())
    }

    /// A JSON string at `self.i` (on its `"`), unescaped onto `out`. Bytes
    /// above 0x7f can only be valid inside strings, so UTF-8 is checked here.
    #[inline(always)]
    fn string_into(&mut self, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        self.i += 1;
        loop {
            let start = self.i;
            let ascii;
            (self.i, ascii) = string_run_end(self.b, self.i);
            if !ascii && std::str::from_utf8(&self.b[start..self.i]).is_err() {
                return Err(syntax(start, "invalid UTF-8"));
            }
            short_bytes::extend(out, &self.b[start..], self.i - start);
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => self.escape(out)?,
                Some(_) => return Err(syntax(self.i, "control character in a string")),
                None => return Err(syntax(self.i, "unterminated string")),
            }
        }
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let at = self.i;
        let c = self.b.get(self.i + 1).copied();
        self.i += 2;
        let simple = match c {
            Some(b'"') => b'"',
            Some(b'\\') => b'\\',
            Some(b'/') => b'/',
            Some(b'b') => 8,
            Some(b'f') => 12,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'u') => {
                let hi = self.hex4()?;
                let code = if (0xD800..0xDC00).contains(&hi) {
                    if !self.b[self.i..].starts_with(b"\\u") {
                        return Err(syntax(at, "unpaired surrogate"));
                    }
                    self.i += 2;
                    let lo = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return Err(syntax(at, "unpaired surrogate"));
                    }
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else if (0xDC00..0xE000).contains(&hi) {
                    return Err(syntax(at, "unpaired surrogate"));
                } else {
                    hi
                };
                let ch = char::from_u32(code).ok_or_else(|| syntax(at, "invalid \\u escape"))?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                return Ok(());
            }
            _ => return Err(syntax(at, "invalid escape")),
        };
        out.push(simple);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, DecodeError> {
        let digits = self.b.get(self.i..self.i + 4).ok_or_else(|| syntax(self.i, "short \\u escape"))?;
        let mut v = 0u32;
        for &d in digits {
            let x = (d as char).to_digit(16).ok_or_else(|| syntax(self.i, "invalid \\u escape"))?;
            v = v * 16 + x;
        }
        self.i += 4;
        Ok(v)
    }

    /// A JSON number: an `i64` when it is a whole number that fits, else an `f64`.
    #[inline(always)]
    fn number(&mut self) -> Result<(Kind, u64), DecodeError> {
        let start = self.i;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        let int_start = self.i;
        let mut mantissa: u64 = 0;
        let mut digits = match self.peek() {
            Some(b'0') => {
                self.i += 1;
                1
            }
            Some(b'1'..=b'9') => self.take_digits(&mut mantissa),
            _ => return Err(syntax(self.i, "expected a digit")),
        };
        let int_digits = self.i - int_start;
        let mut frac_digits = 0usize;
        if self.peek() == Some(b'.') {
            self.i += 1;
            frac_digits = self.take_digits(&mut mantissa);
            digits += frac_digits;
            if frac_digits == 0 {
                return Err(syntax(self.i, "expected a digit after '.'"));
            }
        }
        let mut has_exponent = false;
        if let Some(b'e' | b'E') = self.peek() {
            has_exponent = true;
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            let exp_start = self.i;
            while let Some(b'0'..=b'9') = self.peek() {
                self.i += 1;
            }
            if self.i == exp_start {
                return Err(syntax(self.i, "expected a digit in the exponent"));
            }
        }
        if frac_digits == 0 && !has_exponent && int_digits <= 18 {
            let v = mantissa as i64;
            return Ok((Kind::Int, (if negative { -v } else { v }) as u64));
        }
        // Exact when the digits fit in 53 bits and the power of ten is exact.
        if !has_exponent && digits <= 15 && frac_digits < POW10.len() {
            let v = mantissa as f64 / POW10[frac_digits];
            return Ok((Kind::Float, (if negative { -v } else { v }).to_bits()));
        }
        let text = std::str::from_utf8(&self.b[start..self.i]).unwrap_or_default();
        if frac_digits == 0 && !has_exponent {
            if let Ok(v) = text.parse::<i64>() {
                return Ok((Kind::Int, v as u64));
            }
        }
        let v: f64 = text.parse().map_err(|_| syntax(start, "invalid number"))?;
        Ok((Kind::Float, v.to_bits()))
    }

    /// Step over the digits at `self.i`, each taken into `mantissa` (as
    /// `mantissa * 10 + digit`, wrapping); how many.
    #[inline]
    fn take_digits(&mut self, mantissa: &mut u64) -> usize {
        let start = self.i;
        while let Some((run, value)) = digit_run(self.b, self.i) {
            *mantissa = mantissa.wrapping_mul(POW10_U64[run]).wrapping_add(value);
            self.i += run;
            if run < 8 {
                return self.i - start;
            }
        }
        while let Some(d @ b'0'..=b'9') = self.peek() {
            *mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            self.i += 1;
        }
        self.i - start
    }

    /// Check one value of any kind and step over it.
    fn skip_value(&mut self, depth: usize) -> Result<(), DecodeError> {
        if depth > MAX_NESTING {
            return Err(syntax(self.i, "nested too deeply"));
        }
        match self.peek() {
            Some(b'"') => {
                let mut unused = Vec::new();
                self.string_into(&mut unused)
            }
            Some(b'-' | b'0'..=b'9') => self.number().map(|_| ()),
            Some(b't') | Some(b'f') | Some(b'n') => {
                let word: &[u8] = match self.peek() {
                    Some(b't') => b"true",
                    Some(b'f') => b"false",
                    _ => b"null",
                };
                if !self.b[self.i..].starts_with(word) {
                    return Err(syntax(self.i, "expected true, false or null"));
                }
                self.i += word.len();
                Ok(())
            }
            Some(open @ (b'[' | b'{')) => {
                let close = if open == b'[' { b']' } else { b'}' };
                self.i += 1;
                self.ws();
                if self.peek() == Some(close) {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    if open == b'{' {
                        if self.peek() != Some(b'"') {
                            return Err(syntax(self.i, "expected a key"));
                        }
                        self.skip_value(depth + 1)?;
                        self.ws();
                        self.expect(b':', "expected ':'")?;
                        self.ws();
                    }
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(c) if c == close => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(syntax(self.i, "expected ',' or a closing bracket")),
                    }
                }
            }
            _ => Err(syntax(self.i, "expected a value")),
        }
    }
}
