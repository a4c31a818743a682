//! A window's metric values as one blob in its `windows` row.
//!
//! A window has tens of metric values (drift alone gives a few a column),
//! and a row each, with its index entry, cost the writer thread most of its
//! time: about a tenth of the host's CPU at full speed. One blob a window
//! costs one column. Files written before keep their rows in
//! `metric_values`, which is still read for windows without a blob.
//!
//! Layout (version 2): a version byte; the names the values use, each once
//! (a count, then each as its length and UTF-8 bytes); the number of
//! values; then per value its detector's, metric's and column's place among
//! the names (the column's plus one, 0: no column) and the value (f64 LE
//! bits, so infinities and every bit stay as the plugin gave them). Counts,
//! lengths and places are LEB128 varints. Names repeat from value to value
//! (one detector gives many, a column has several): written once, a
//! window's blob is about a third of version 1's, which spelled every name
//! out at every value with u32 lengths, and which is still read.

use std::collections::HashMap;

use super::MetricRow;

const VERSION: u8 = 2;
/// Bytes of names a version 2 blob may decode to, per byte of the blob.
/// Each value copies its names out of the table, so a blob could name one
/// long name from every value; the host's names are at most a few hundred
/// bytes and a value takes at least 11 bytes, so its own blobs stay far below.
const MOST_NAME_BYTES_PER_BYTE: usize = 128;
/// Each name at every value, behind a u32 LE of its length plus one (0: no column).
const VERSION_SPELLED_OUT: u8 = 1;

/// (detector, metric, column, value) of each metric value.
pub type Values = Vec<(String, String, Option<String>, f64)>;

/// The names a blob's values use, each once, in the order first used.
#[derive(Default)]
struct Names<'a> {
    list: Vec<&'a str>,
    places: HashMap<&'a str, u64>,
}

impl<'a> Names<'a> {
    fn place(&mut self, name: &'a str) -> u64 {
        *self.places.entry(name).or_insert_with(|| {
            self.list.push(name);
            self.list.len() as u64 - 1
        })
    }
}

pub fn encode(metrics: &[MetricRow]) -> Vec<u8> {
    let mut names = Names::default();
    let refs: Vec<(u64, u64, u64)> =
        metrics.iter().map(|m| (names.place(&m.detector), names.place(&m.metric), m.column.as_deref().map_or(0, |c| names.place(c) + 1))).collect();
    let names = names.list;
    let mut out = Vec::with_capacity(16 + names.iter().map(|n| n.len() + 2).sum::<usize>() + 12 * metrics.len());
    out.push(VERSION);
    put_varint(&mut out, names.len() as u64);
    for name in &names {
        put_varint(&mut out, name.len() as u64);
        out.extend_from_slice(name.as_bytes());
    }
    put_varint(&mut out, metrics.len() as u64);
    for (m, (detector, metric, column)) in metrics.iter().zip(refs) {
        for at in [detector, metric, column] {
            put_varint(&mut out, at);
        }
        out.extend_from_slice(&m.value.to_bits().to_le_bytes());
    }
    out
}

pub fn decode(blob: &[u8]) -> Result<Values, String> {
    let (&version, mut rest) = blob.split_first().ok_or("an empty metric values blob")?;
    let values = match version {
        VERSION => decode_names_once(&mut rest)?,
        VERSION_SPELLED_OUT => decode_spelled_out(&mut rest)?,
        _ => return Err(format!("a metric values blob of version {version} (this host reads {VERSION_SPELLED_OUT} and {VERSION})")),
    };
    if !rest.is_empty() {
        return Err(format!("a metric values blob with {} bytes after its {} values", rest.len(), values.len()));
    }
    Ok(values)
}

fn decode_names_once(rest: &mut &[u8]) -> Result<Values, String> {
    let mut budget = MOST_NAME_BYTES_PER_BYTE * (rest.len() + 1);
    // Counts come from the blob: nothing is sized by them up front.
    let mut names = Vec::new();
    for _ in 0..varint(rest)? {
        let length = usize::try_from(varint(rest)?).map_err(|_| "a metric values blob with a name too long")?;
        names.push(utf8(take(rest, length)?)?);
    }
    let mut name = |at: u64| {
        let name: &String = usize::try_from(at)
            .ok()
            .and_then(|at| names.get(at))
            .ok_or_else(|| format!("a metric values blob naming name {at}, past its {} names", names.len()))?;
        budget = budget.checked_sub(name.len()).ok_or("a metric values blob naming more bytes of names than it could hold")?;
        Ok::<_, String>(name.clone())
    };
    let mut values = Vec::new();
    for _ in 0..varint(rest)? {
        let (detector, metric, column) = (name(varint(rest)?)?, name(varint(rest)?)?, varint(rest)?);
        let column = column.checked_sub(1).map(&mut name).transpose()?;
        values.push((detector, metric, column, value(rest)?));
    }
    Ok(values)
}

fn decode_spelled_out(rest: &mut &[u8]) -> Result<Values, String> {
    let count = u32::from_le_bytes(take(rest, 4)?.try_into().expect("4 bytes"));
    let mut values = Vec::new();
    for _ in 0..count {
        let detector = spelled_out(rest)?.ok_or("a metric value without its detector")?;
        let metric = spelled_out(rest)?.ok_or("a metric value without its name")?;
        let column = spelled_out(rest)?;
        values.push((detector, metric, column, value(rest)?));
    }
    Ok(values)
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn varint(rest: &mut &[u8]) -> Result<u64, String> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = take(rest, 1)?[0];
        // The tenth byte holds the 64th bit only.
        if shift == 63 && byte > 1 {
            break;
        }
        n |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(n);
        }
    }
    Err("a metric values blob with a number past 64 bits".into())
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if rest.len() < n {
        return Err("a metric values blob cut short".into());
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

fn utf8(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "a metric values blob with a name that is not UTF-8".into())
}

fn value(rest: &mut &[u8]) -> Result<f64, String> {
    Ok(f64::from_bits(u64::from_le_bytes(take(rest, 8)?.try_into().expect("8 bytes"))))
}

/// A version 1 name: a u32 LE of its length plus one (0: none), then its bytes.
fn spelled_out(rest: &mut &[u8]) -> Result<Option<String>, String> {
    let length = u32::from_le_bytes(take(rest, 4)?.try_into().expect("4 bytes")) as usize;
    let Some(bytes) = length.checked_sub(1) else {
        return Ok(None);
    };
    utf8(take(rest, bytes)?).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_back_as_given() {
        let row = |detector: &str, metric: &str, column: Option<&str>, value: f64| MetricRow {
            detector: detector.into(),
            metric: metric.into(),
            column: column.map(Into::into),
            value,
        };
        let rows = [
            row("drift", "psi", Some("amount"), 0.012_345_678_901_234_5),
            row("volume", "records", None, 1000.0),
            row("outliers", "max", Some(""), f64::INFINITY),
            row("schema", "fields", Some("naïve ✓ column"), -0.0),
            row("x", "", Some(&"c".repeat(128)), f64::NEG_INFINITY),
        ];
        let blob = encode(&rows);
        let back = decode(&blob).unwrap();
        assert_eq!(back.len(), rows.len());
        for (r, (detector, metric, column, value)) in rows.iter().zip(&back) {
            assert_eq!((&r.detector, &r.metric, &r.column), (detector, metric, column));
            assert_eq!(r.value.to_bits(), value.to_bits());
        }
        assert_eq!(decode(&encode(&[])).unwrap(), []);
        // A blob cut anywhere, or of another version, is an error, never a panic.
        for end in 0..blob.len() {
            assert!(decode(&blob[..end]).is_err(), "cut at {end}");
        }
        assert!(decode(&[blob.as_slice(), &[0]].concat()).unwrap_err().contains("1 bytes after its 5 values"));
        assert!(decode(&[3]).unwrap_err().contains("version 3"));
    }

    /// A window's values as drift, outliers and the rest give them: many
    /// values a detector, several a column.
    fn window_rows() -> Vec<MetricRow> {
        let columns = ["amount", "user_id", "items", "geo.lat", "geo.lon", "country", "device", "currency", "status"];
        let mut rows = Vec::new();
        for (detector, metrics) in
            [("drift", &["psi", "ks_distance", "mean"][..]), ("outliers", &["outlier_rate", "max_z"]), ("completeness", &["absent_rate"])]
        {
            for (i, column) in columns.iter().enumerate() {
                for metric in metrics {
                    rows.push(MetricRow { detector: detector.into(), metric: (*metric).into(), column: Some((*column).into()), value: i as f64 / 7.0 });
                }
            }
        }
        rows.push(MetricRow { detector: "volume".into(), metric: "records".into(), column: None, value: 1000.0 });
        rows
    }

    /// The blob as version 1 wrote it: every name spelled out at every value.
    fn spelled_out_blob(rows: &[MetricRow]) -> Vec<u8> {
        let mut out = vec![VERSION_SPELLED_OUT];
        out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
        for m in rows {
            for text in [Some(&m.detector), Some(&m.metric), m.column.as_ref()] {
                out.extend_from_slice(&text.map_or(0, |t| t.len() as u32 + 1).to_le_bytes());
                out.extend_from_slice(text.map_or(&[][..], |t| t.as_bytes()));
            }
            out.extend_from_slice(&m.value.to_bits().to_le_bytes());
        }
        out
    }

    #[test]
    fn names_are_written_once_and_old_blobs_still_read() {
        let rows = window_rows();
        let (blob, old) = (encode(&rows), spelled_out_blob(&rows));
        let want: Values = rows.iter().map(|m| (m.detector.clone(), m.metric.clone(), m.column.clone(), m.value)).collect();
        assert_eq!(decode(&blob).unwrap(), want);
        assert_eq!(decode(&old).unwrap(), want, "a version 1 blob, from a file written before");
        assert!(blob.len() * 5 < old.len() * 2, "{} bytes against {}", blob.len(), old.len());
        // One name ("d"), one value naming name 1 (there is none), then name 0.
        let mut past = vec![VERSION, 1, 1, b'd', 1, 0, 1, 0];
        past.extend_from_slice(&[0; 8]);
        assert_eq!(decode(&past).unwrap_err(), "a metric values blob naming name 1, past its 1 names");
        past[6] = 0;
        assert_eq!(decode(&past).unwrap(), [("d".to_string(), "d".to_string(), None, 0.0)]);
        // Numbers of ten bytes: past 64 bits is an error; 2^63 names, read
        // one by one from a blob that holds none, end at its end.
        assert!(decode(&[&[VERSION][..], &[0xff; 9], &[0x02]].concat()).unwrap_err().contains("past 64 bits"));
        assert!(decode(&[&[VERSION][..], &[0x80; 9], &[0x01]].concat()).unwrap_err().contains("cut short"));
    }

    #[test]
    fn the_bytes_on_disk_are_the_layout_described() {
        let long = "x".repeat(130);
        let rows = [
            MetricRow { detector: "d".into(), metric: "m".into(), column: Some("c".into()), value: 1.0 },
            MetricRow { detector: "d".into(), metric: long.clone(), column: None, value: -0.0 },
        ];
        // Four names (130 as the varint 0x82 0x01), two values: places 0, 1,
        // 2 + 1 and 0, 3, none; each value's f64 bits little-endian.
        let mut want = vec![VERSION, 4, 1, b'd', 1, b'm', 1, b'c', 0x82, 0x01];
        want.extend_from_slice(long.as_bytes());
        want.extend_from_slice(&[2, 0, 1, 3, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0x80]);
        assert_eq!(encode(&rows), want);
    }

    #[test]
    fn a_blob_naming_one_long_name_from_every_value_is_refused_not_copied() {
        // One name of 64 KiB (the varint 0x80 0x80 0x04), named three times
        // by each value: 10,000 values are 174 KB that would decode to 2 GB.
        let naming = |values: u64| {
            let mut blob = vec![VERSION, 1, 0x80, 0x80, 0x04];
            blob.extend(std::iter::repeat_n(b'n', 1 << 16));
            put_varint(&mut blob, values);
            for _ in 0..values {
                blob.extend_from_slice(&[0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
            }
            blob
        };
        // Not `unwrap_err`: were it read, printing it would take the 2 GB.
        let Err(refused) = decode(&naming(10_000)) else { panic!("a blob naming 2 GB of names was read") };
        assert!(refused.contains("more bytes of names than it could hold"), "{refused}");
        assert_eq!(decode(&naming(2)).unwrap().len(), 2);
    }
}
