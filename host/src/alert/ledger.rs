//! Alerts already sent for broker windows. A replay (a restart after a
//! crash, or a start at an earlier offset) analyses windows again; an alert
//! for the same pipeline, partition, detector, metric, column and offset
//! range is not sent a second time. Kept as one hash per line in
//! `DATA_DIR/alerts-sent`, appended as alerts go out.

use std::collections::HashSet;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{self, BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::Alert;

/// Hashes kept; older ones are dropped when the file is loaded.
const KEEP: usize = 1 << 20;

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

    fn key(alert: &Alert) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let w = &alert.window;
        (&alert.pipeline, w.partition, &alert.detector, &alert.metric, &alert.column).hash(&mut h);
        (w.first_offset.to_string(), w.last_offset.to_string()).hash(&mut h);
        h.finish()
    }

    /// True, and remembered, if this alert was not sent before.
    pub fn first_time(&mut self, alert: &Alert) -> bool {
        let key = Self::key(alert);
        if !self.sent.insert(key) {
            return false;
        }
        if self.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                let _ = std::fs::create_dir_all(dir);
            }
            match std::fs::OpenOptions::new().create(true).append(true).open(&self.path) {
                Ok(f) => self.file = Some(BufWriter::new(f)),
                Err(e) => tracing::warn!("cannot write alert ledger {}: {e}", self.path.display()),
            }
        }
        if let Some(f) = &mut self.file {
            let _ = writeln!(f, "{key:016x}");
        }
        true
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
    use crate::alert::{Level, WindowRef};
    use crate::source::Position;

    fn alert(first: u64) -> Alert {
        Alert {
            pipeline: "p".into(),
            detector: "d".into(),
            metric: "m".into(),
            column: None,
            value: 1.0,
            threshold: 0.5,
            severity: Level::Warning,
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
        }
    }

    #[test]
    fn remembers_sent_alerts_across_restarts() {
        let dir = std::env::temp_dir().join(format!("ledger-{}", std::process::id()));
        let path = dir.join("alerts-sent");
        let _ = std::fs::remove_dir_all(&dir);
        let mut ledger = AlertLedger::open(&path).unwrap();
        assert!(ledger.first_time(&alert(1)));
        assert!(!ledger.first_time(&alert(1)));
        ledger.flush().unwrap();
        drop(ledger);
        let mut again = AlertLedger::open(&path).unwrap();
        assert!(!again.first_time(&alert(1)), "a replayed window's alert is not sent again");
        assert!(again.first_time(&alert(2)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
