//! Alerts already sent for broker windows. A replay (a restart after a
//! crash, or a start at an earlier offset) analyses windows again; an alert
//! for the same tenant, source, pipeline, partition, detector, metric,
//! column and offset range is not sent a second time. Kept as one hash per
//! line in `DATA_DIR/alerts-sent`, appended once the alert was written to
//! the outputs and taken by the alert handlers' queue, never before: an
//! alert that did not get out is sent again by the replay. The hash is
//! XXH3-64 over the fields, so it stays the same across builds and Rust
//! versions. Where checkpoints are kept, the keys are kept with them too
//! (the pipeline's analyst asks there), so a window one host alerted on and
//! another analyses again after a takeover is not alerted twice.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use clean_host_quality::alert::Alert;

/// Hashes kept; older ones are dropped when the file is loaded.
const KEEP: usize = 1 << 20;

/// What identifies a sent alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AlertKey(pub(crate) u64);

impl AlertKey {
    /// The key of `alert`, raised by a pipeline of `tenant` reading `source`.
    pub fn new(tenant: &str, source: &str, alert: &Alert) -> Self {
        let w = &alert.window;
        let column = alert.column.as_deref();
        let (first, last) = (w.first_offset.to_string(), w.last_offset.to_string());
        let parts: [&[u8]; 9] = [
            tenant.as_bytes(),
            source.as_bytes(),
            alert.pipeline.as_bytes(),
            &w.partition.to_le_bytes(),
            alert.detector.as_bytes(),
            alert.metric.as_bytes(),
            column.map_or(&[0xff][..], str::as_bytes),
            first.as_bytes(),
            last.as_bytes(),
        ];
        // Each part with its length first, so no two field lists run together alike.
        let mut bytes = Vec::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
        for part in parts {
            bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
            bytes.extend_from_slice(part);
        }
        AlertKey(xxhash_rust::xxh3::xxh3_64(&bytes))
    }
}

pub struct AlertLedger {
    path: PathBuf,
    sent: HashSet<u64>,
    file: Option<BufWriter<File>>,
}

impl AlertLedger {
    /// The ledger at `path`, loaded if it exists (created on the first alert).
    pub fn open(path: &Path) -> io::Result<Self> {
        let mut hashes = Vec::new();
        match File::open(path) {
            Ok(f) => {
                for line in io::BufReader::new(f).lines() {
                    if let Ok(h) = u64::from_str_radix(line?.trim(), 16) {
                        hashes.push(h);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("cannot read alert ledger {}: {e}", path.display()))),
        }
        let start = hashes.len().saturating_sub(KEEP);
        if start > 0 {
            // Rewrite with only the newest hashes.
            let mut f = BufWriter::new(File::create(path)?);
            for h in &hashes[start..] {
                writeln!(f, "{h:016x}")?;
            }
            f.flush()?;
        }
        Ok(AlertLedger { path: path.to_path_buf(), sent: hashes[start..].iter().copied().collect(), file: None })
    }

    /// Whether an alert with this key went out before from this host.
    pub fn was_sent(&self, key: AlertKey) -> bool {
        self.sent.contains(&key.0)
    }

    /// Remember that the alert with this key went out.
    pub fn record(&mut self, key: AlertKey) -> io::Result<()> {
        if !self.sent.insert(key.0) {
            return Ok(());
        }
        if self.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path);
            let file = file.map_err(|e| io::Error::new(e.kind(), format!("cannot write alert ledger {}: {e}", self.path.display())))?;
            self.file = Some(BufWriter::new(file));
        }
        let f = self.file.as_mut().expect("opened above");
        writeln!(f, "{:016x}", key.0)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clean_host_core::bindings::Severity;
    use clean_host_quality::alert::WindowRef;
    use clean_host_stream::source::Position;

    fn alert(first: u64) -> Alert {
        Alert {
            pipeline: "p".into(),
            detector: "d".into(),
            metric: "m".into(),
            column: None,
            value: 1.0,
            threshold: 0.5,
            severity: Severity::Warning,
            message: String::new(),
            window: WindowRef {
                seq: 0,
                partition: 0,
                first_offset: Position::Offset(first),
                last_offset: Position::Id("x".into()),
                records: 1,
                start_ms: 0,
                end_ms: 0,
            },
            sample_rows: vec![],
            score: 1.0,
            score_interval: [1.0, 1.0],
            low_confidence: false,
            rule: None,
            escalated_from: None,
        }
    }

    #[test]
    fn remembers_sent_alerts_across_restarts() {
        let dir = std::env::temp_dir().join(format!("ledger-{}", std::process::id()));
        let path = dir.join("alerts-sent");
        let _ = std::fs::remove_dir_all(&dir);
        let key = |first| AlertKey::new("t", "kafka://h/topic", &alert(first));
        let mut ledger = AlertLedger::open(&path).unwrap();
        assert!(!ledger.was_sent(key(1)));
        ledger.record(key(1)).unwrap();
        assert!(ledger.was_sent(key(1)));
        ledger.flush().unwrap();
        drop(ledger);
        let again = AlertLedger::open(&path).unwrap();
        assert!(again.was_sent(key(1)), "a replayed window's alert is not sent again");
        assert!(!again.was_sent(key(2)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The key is the same in every build (XXH3 of the fields), and tenant
    /// and source tell alerts of otherwise equal pipelines apart.
    #[test]
    fn keys_are_stable_and_name_tenant_and_source() {
        let a = alert(1);
        assert_eq!(AlertKey::new("t", "s", &a), AlertKey(0x9ce3_55b7_8405_2dcf), "{:x}", AlertKey::new("t", "s", &a).0);
        assert_ne!(AlertKey::new("t", "s", &a), AlertKey::new("u", "s", &a));
        assert_ne!(AlertKey::new("t", "s", &a), AlertKey::new("t", "s2", &a));
        assert_ne!(AlertKey::new("ts", "", &a), AlertKey::new("t", "s", &a));
    }
}
