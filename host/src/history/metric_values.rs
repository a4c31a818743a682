//! A window's metric values as one blob in its `windows` row.
//!
//! A window has tens of metric values (drift alone gives a few a column),
//! and a row each, with its index entry, cost the writer thread most of its
//! time: about a tenth of the host's CPU at full speed. One blob a window
//! costs one column. Files written before keep their rows in
//! `metric_values`, which is still read for windows without a blob.
//!
//! Layout: a version byte, the number of values (u32 LE), then per value
//! its detector, metric and column, each a u32 LE of its length plus one
//! (0: no column) and its UTF-8 bytes, then the value (f64 LE bits, so
//! infinities and every bit stay as the plugin gave them).

use super::MetricRow;

const VERSION: u8 = 1;

/// (detector, metric, column, value) of each metric value.
pub type Values = Vec<(String, String, Option<String>, f64)>;

pub fn encode(metrics: &[MetricRow]) -> Vec<u8> {
    let size: usize = metrics.iter().map(|m| 20 + m.detector.len() + m.metric.len() + m.column.as_ref().map_or(0, String::len)).sum();
    let mut out = Vec::with_capacity(5 + size);
    out.push(VERSION);
    // A window has at most MAX_METRICS values a detector, names at most MAX_NAME bytes.
    let count = u32::try_from(metrics.len()).expect("metric values a window fit a u32");
    out.extend_from_slice(&count.to_le_bytes());
    for m in metrics {
        for text in [Some(&m.detector), Some(&m.metric), m.column.as_ref()] {
            let length = text.map_or(0, |t| u32::try_from(t.len() + 1).expect("names are cut short"));
            out.extend_from_slice(&length.to_le_bytes());
            out.extend_from_slice(text.map_or(&[][..], |t| t.as_bytes()));
        }
        out.extend_from_slice(&m.value.to_bits().to_le_bytes());
    }
    out
}

pub fn decode(blob: &[u8]) -> Result<Values, String> {
    let (&version, mut rest) = blob.split_first().ok_or("an empty metric values blob")?;
    if version != VERSION {
        return Err(format!("a metric values blob of version {version} (this host reads {VERSION})"));
    }
    let count = u32::from_le_bytes(take(&mut rest, 4)?.try_into().expect("4 bytes"));
    let mut values = Vec::new();
    for _ in 0..count {
        let detector = text(&mut rest)?.ok_or("a metric value without its detector")?;
        let metric = text(&mut rest)?.ok_or("a metric value without its name")?;
        let column = text(&mut rest)?;
        let value = f64::from_bits(u64::from_le_bytes(take(&mut rest, 8)?.try_into().expect("8 bytes")));
        values.push((detector, metric, column, value));
    }
    if !rest.is_empty() {
        return Err(format!("a metric values blob with {} bytes after its {count} values", rest.len()));
    }
    Ok(values)
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if rest.len() < n {
        return Err("a metric values blob cut short".into());
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

fn text(rest: &mut &[u8]) -> Result<Option<String>, String> {
    let length = u32::from_le_bytes(take(rest, 4)?.try_into().expect("4 bytes")) as usize;
    let Some(bytes) = length.checked_sub(1) else {
        return Ok(None);
    };
    let bytes = take(rest, bytes)?;
    String::from_utf8(bytes.to_vec()).map(Some).map_err(|_| "a metric values blob with a name that is not UTF-8".into())
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
        assert!(decode(&[2]).unwrap_err().contains("version 2"));
    }
}
