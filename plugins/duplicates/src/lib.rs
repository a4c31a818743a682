//! Duplicates: the same record (or the same key) arriving more than once.
//!
//! Records are identified by the host's hash of their raw bytes, or by a hash
//! of the configured key fields. A bounded memory of recent identities spans
//! windows, so a copy that arrives a few windows later is still caught: two
//! generations of `memory / 2` identities each, the older dropped whole when
//! the newer fills (no per-record eviction on the hot path). Each
//! identity remembers the (partition, offset) it was first seen at: the same
//! record seen again at the same position (an overlapping window, a replay
//! after a restart) is not a duplicate.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use xxhash_rust::xxh3::Xxh3;

use clean_host_sdk::stats::RateBaseline;
use clean_host_sdk::{
    decode_state, encode_state, export_detector, metric_info, parse_config, Analysis, Batch, BatchParts, Cell, Detector, Finding, PluginInfo, Reads, Severity,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Identify records by these fields instead of their whole content.
    key_fields: Vec<String>,
    /// How many recent identities to remember across windows.
    memory: usize,
    /// Windows used to learn the usual duplicate rate.
    warmup_windows: u32,
    /// Smallest rise in the duplicate rate that counts as a departure.
    min_increase: f64,
    /// Fewest duplicates that can make a finding.
    min_count: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { key_fields: Vec::new(), memory: 100_000, warmup_windows: 5, min_increase: 0.01, min_count: 5 }
    }
}

/// Identities are already well-mixed 64-bit hashes: use them as they are.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Seen = HashMap<u64, (u32, u64), BuildHasherDefault<PassThrough>>;

#[derive(Default, Serialize, Deserialize)]
struct State {
    windows: u32,
    baseline: RateBaseline,
    /// Identity -> (partition, offset) of its first sighting: the filling generation...
    #[serde(with = "seen_as_list")]
    seen: Seen,
    /// ...and the one before it.
    #[serde(with = "seen_as_list")]
    previous: Seen,
}

/// JSON keys must be strings; store the map as a list of triples instead.
mod seen_as_list {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Seen;

    pub fn serialize<S: Serializer>(map: &Seen, s: S) -> Result<S::Ok, S::Error> {
        map.iter().map(|(k, (p, o))| (*k, *p, *o)).collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Seen, D::Error> {
        Ok(Vec::<(u64, u32, u64)>::deserialize(d)?.into_iter().map(|(k, p, o)| (k, (p, o))).collect())
    }
}

#[derive(Default)]
pub struct Duplicates {
    config: Config,
    state: State,
}

impl Duplicates {
    fn identities(&self, batch: &Batch) -> Result<Vec<u64>, String> {
        if self.config.key_fields.is_empty() {
            if batch.record_hashes.len() != batch.row_count as usize {
                return Err("the batch carries no record hashes".into());
            }
            return Ok(batch.record_hashes.clone());
        }
        let columns = self.config.key_fields.iter().map(|k| batch.column(k)).collect::<Vec<_>>();
        Ok((0..batch.row_count as usize)
            .map(|row| {
                // XXH3 of a tagged, length-prefixed encoding: the same in every
                // build, so identities kept in a snapshot survive an upgrade.
                let mut h = Xxh3::new();
                for column in &columns {
                    let (tag, bytes): (u8, [u8; 8]) = match column.map(|c| c.cell(row)) {
                        Some(Cell::Float(v)) => (b'f', v.to_bits().to_le_bytes()),
                        Some(Cell::Int(v)) | Some(Cell::Time(v)) => (b'i', v.to_le_bytes()),
                        Some(Cell::Bool(v)) => (b'b', u64::from(v).to_le_bytes()),
                        Some(Cell::Text(v)) => (b's', (v.len() as u64).to_le_bytes()),
                        _ => (b'-', [0; 8]),
                    };
                    h.update(&[tag]);
                    h.update(&bytes);
                    if let Some(Cell::Text(v)) = column.map(|c| c.cell(row)) {
                        h.update(v.as_bytes());
                    }
                }
                h.digest()
            })
            .collect())
    }

    fn first_seen(&self, identity: u64) -> Option<(u32, u64)> {
        self.state.seen.get(&identity).or_else(|| self.state.previous.get(&identity)).copied()
    }

    /// Identities a generation holds.
    fn generation(&self) -> usize {
        self.config.memory.div_ceil(2)
    }

    fn remember(&mut self, identity: u64, position: (u32, u64)) {
        if self.state.seen.len() >= self.generation() {
            // The older generation's table, sized for a full one, is the
            // next to fill: from the third generation on, no growing,
            // rehashing or fresh pages (a quiet stream never pays for it).
            std::mem::swap(&mut self.state.seen, &mut self.state.previous);
            self.state.seen.clear();
        }
        self.state.seen.insert(identity, position);
    }
}

impl Detector for Duplicates {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "duplicates".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Exact duplicate records (whole record or key fields) within and across windows".into(),
            metrics: vec![metric_info("duplicate_rate", "Share of a window's records already seen at another position")],
            config_schema: r#"{"type":"object","properties":{"key_fields":{"type":"array","items":{"type":"string"}},"memory":{"type":"integer"},"warmup_windows":{"type":"integer"},"min_increase":{"type":"number"},"min_count":{"type":"integer"}}}"#.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        let config: Config = parse_config(config)?;
        if config.memory == 0 {
            return Err("memory must be at least 1".into());
        }
        self.config = config;
        Ok(())
    }

    fn reads(&self) -> Reads {
        // A record's identity is its hash, or the hash of its key fields.
        let identity = if self.config.key_fields.is_empty() { BatchParts::RECORD_HASHES } else { BatchParts::empty() };
        Reads::only(identity | BatchParts::OFFSETS).and_columns(self.config.key_fields.iter().cloned())
    }

    fn analyze(&mut self, batch: &Batch) -> Result<Analysis, String> {
        let mut out = Analysis::new();
        let rows = batch.row_count as usize;
        if rows == 0 {
            return Ok(out);
        }
        let identities = self.identities(batch)?;
        let partition = batch.info.partition;
        let mut duplicate_rows = Vec::new();
        let generation = self.generation();
        for (row, &identity) in identities.iter().enumerate() {
            let position = (partition, batch.offsets.get(row).copied().unwrap_or(batch.info.first_offset + row as u64));
            let first = if self.state.seen.len() < generation {
                // One probe of the filling generation for a new identity, not a lookup and an insert.
                match self.state.seen.entry(identity) {
                    Entry::Occupied(seen) => Some(*seen.get()),
                    Entry::Vacant(vacant) => match self.state.previous.get(&identity) {
                        Some(&first) => Some(first),
                        None => {
                            vacant.insert(position);
                            None
                        }
                    },
                }
            } else {
                self.first_seen(identity).or_else(|| {
                    self.remember(identity, position);
                    None
                })
            };
            if first.is_some_and(|first| first != position) {
                duplicate_rows.push(row as u32);
            }
        }
        let rate = duplicate_rows.len() as f64 / rows as f64;
        out.metric("duplicate_rate", None, rate);
        if self.state.windows < self.config.warmup_windows {
            self.state.baseline.observe(duplicate_rows.len(), rows);
        } else {
            let limit = self.state.baseline.upper_limit(rows, self.config.min_increase);
            let departed = rate > limit && duplicate_rows.len() >= self.config.min_count;
            self.state.baseline.push(rate, departed);
            if departed {
                let what = if self.config.key_fields.is_empty() { "records".to_string() } else { format!("keys ({})", self.config.key_fields.join(", ")) };
                let severity = if rate > 0.2 { Severity::Critical } else { Severity::Warning };
                out.findings.push(
                    Finding::new(
                        "duplicate_rate",
                        None,
                        rate,
                        limit,
                        severity,
                        format!("{} of {rows} {what} were seen before ({:.1}%)", duplicate_rows.len(), rate * 100.0),
                    )
                    .with_rows(duplicate_rows),
                );
            }
        }
        self.state.windows += 1;
        Ok(out)
    }

    fn snapshot(&self) -> Vec<u8> {
        snapshot::encode(&self.state)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.state = snapshot::decode(state)?;
        Ok(())
    }
}

/// The snapshot: `MAGIC`, the state's JSON without the identities (its
/// length first, u32 LE), then each generation as its count (u32 LE) and
/// its entries in position order, each the identity (u64 LE), the partition
/// and the offset after the entry before's in the same partition (both
/// LEB128): about 10 bytes an identity, a quarter of JSON's, which matters
/// as checkpoints carry it to the broker every few seconds. Snapshots of
/// the JSON layout before are still restored.
mod snapshot {
    use super::{decode_state, encode_state, Seen, State};

    const MAGIC: &[u8; 4] = b"DUP\x02";

    pub fn encode(state: &State) -> Vec<u8> {
        let rest = State { windows: state.windows, baseline: state.baseline.clone(), ..State::default() };
        let json = encode_state(&rest);
        let entries = state.seen.len() + state.previous.len();
        let mut out = Vec::with_capacity(MAGIC.len() + 4 + json.len() + 8 + entries * 11);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&json);
        for generation in [&state.seen, &state.previous] {
            encode_generation(generation, &mut out);
        }
        out
    }

    fn encode_generation(seen: &Seen, out: &mut Vec<u8>) {
        let mut entries: Vec<(u32, u64, u64)> = seen.iter().map(|(&identity, &(p, o))| (p, o, identity)).collect();
        entries.sort_unstable();
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        let mut before = None;
        for (partition, offset, identity) in entries {
            out.extend_from_slice(&identity.to_le_bytes());
            write_varint(out, u64::from(partition));
            let base = match before {
                Some((p, o)) if p == partition => o,
                _ => 0,
            };
            write_varint(out, offset - base);
            before = Some((partition, offset));
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<State, String> {
        let Some(mut rest) = bytes.strip_prefix(MAGIC) else {
            return decode_state(bytes);
        };
        let len = u32::from_le_bytes(take::<4>(&mut rest)?) as usize;
        let json = rest.get(..len).ok_or("invalid state: shorter than its JSON")?;
        let mut state: State = decode_state(json)?;
        rest = &rest[len..];
        state.seen = decode_generation(&mut rest)?;
        state.previous = decode_generation(&mut rest)?;
        if !rest.is_empty() {
            return Err(format!("invalid state: {} bytes after its end", rest.len()));
        }
        Ok(state)
    }

    fn decode_generation(rest: &mut &[u8]) -> Result<Seen, String> {
        let count = u32::from_le_bytes(take::<4>(rest)?) as usize;
        // Each entry takes at least 10 bytes: a count past that is a lie.
        let mut seen = Seen::with_capacity_and_hasher(count.min(rest.len() / 10), Default::default());
        let mut before = None;
        for _ in 0..count {
            let identity = u64::from_le_bytes(take::<8>(rest)?);
            let partition = u32::try_from(read_varint(rest)?).map_err(|_| "invalid state: a partition past u32")?;
            let base = match before {
                Some((p, o)) if p == partition => o,
                _ => 0,
            };
            let offset = read_varint(rest)?.checked_add(base).ok_or("invalid state: an offset past u64")?;
            seen.insert(identity, (partition, offset));
            before = Some((partition, offset));
        }
        Ok(seen)
    }

    fn take<const N: usize>(rest: &mut &[u8]) -> Result<[u8; N], String> {
        let (head, tail) = rest.split_first_chunk::<N>().ok_or("invalid state: cut short")?;
        *rest = tail;
        Ok(*head)
    }

    fn write_varint(out: &mut Vec<u8>, mut n: u64) {
        while n >= 0x80 {
            out.push(n as u8 | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    fn read_varint(rest: &mut &[u8]) -> Result<u64, String> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let [byte] = take::<1>(rest)?;
            if shift == 63 && byte > 1 {
                break; // bits past u64
            }
            n |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(n);
            }
        }
        Err("invalid state: a number past u64".into())
    }
}

export_detector!(Duplicates);

#[cfg(test)]
mod tests {
    use super::*;
    use clean_host_sdk::testing::BatchBuilder;

    #[test]
    fn resumes_from_its_snapshot_exactly() {
        let windows = clean_host_sdk::testing::realistic_windows(7, 60, 500);
        clean_host_sdk::testing::assert_restore_equivalent::<Duplicates>("{}", &windows, (3..60).step_by(7));
    }

    #[test]
    fn reads_all_it_analyses() {
        let windows = clean_host_sdk::testing::realistic_windows(7, 60, 500);
        clean_host_sdk::testing::assert_reads_suffice::<Duplicates>("{}", &windows);
        clean_host_sdk::testing::assert_reads_suffice::<Duplicates>(r#"{"key_fields": ["email", "country", "paid"]}"#, &windows);
    }

    fn window(seq: u64, hashes: &[u64]) -> Batch {
        let offsets: Vec<u64> = (0..hashes.len() as u64).map(|i| seq * 1000 + i).collect();
        BatchBuilder::new(seq).records(hashes, &offsets).build()
    }

    fn unique(seq: u64) -> Vec<u64> {
        (0..1000).map(|i| seq * 1000 + i + 1).collect()
    }

    #[test]
    fn unique_records_are_quiet_and_copies_across_windows_are_found() {
        let mut d = Duplicates::default();
        d.configure("{}").unwrap();
        for seq in 0..20 {
            assert!(d.analyze(&window(seq, &unique(seq))).unwrap().findings.is_empty());
        }
        // 50 records of window 18 arrive again in window 20.
        let mut hashes = unique(20);
        hashes[..50].copy_from_slice(&unique(18)[..50]);
        let a = d.analyze(&window(20, &hashes)).unwrap();
        assert_eq!(a.findings.len(), 1);
        assert!((a.findings[0].value - 0.05).abs() < 1e-9);
        assert_eq!(a.findings[0].sample_rows[0], 0);
    }

    #[test]
    fn the_same_record_at_the_same_offset_is_not_a_duplicate() {
        let mut d = Duplicates::default();
        for _ in 0..10 {
            // A replay of window 0.
            assert!(d.analyze(&window(0, &unique(0))).unwrap().findings.is_empty());
        }
    }

    #[test]
    fn key_fields_identify_records() {
        let mut d = Duplicates::default();
        d.configure(r#"{"key_fields": ["id"]}"#).unwrap();
        let batch = |seq: u64, ids: Vec<Option<i64>>| {
            let offsets: Vec<u64> = (seq * 100..seq * 100 + 100).collect();
            BatchBuilder::new(seq).int("id", &ids).records(&unique(seq)[..100], &offsets).build()
        };
        for seq in 0..20 {
            let fresh: Vec<Option<i64>> = (0..100).map(|i| Some((seq * 100 + i) as i64)).collect();
            assert!(d.analyze(&batch(seq, fresh)).unwrap().findings.is_empty());
        }
        let ids: Vec<Option<i64>> = (0..100).map(|i| Some(2000 + i % 80)).collect();
        let a = d.analyze(&batch(20, ids)).unwrap();
        assert_eq!(a.findings.len(), 1);
        assert_eq!(a.findings[0].sample_rows.len(), 20);
    }

    /// Snapshots of the JSON layout before (in checkpoints stored by the
    /// version before) restore to the same state.
    #[test]
    fn a_snapshot_of_the_layout_before_restores() {
        let mut d = Duplicates::default();
        for seq in 0..5 {
            d.analyze(&window(seq, &unique(seq))).unwrap();
        }
        let mut e = Duplicates::default();
        e.restore(&encode_state(&d.state)).unwrap();
        assert_eq!(e.snapshot(), d.snapshot());
        assert_eq!(e.state.seen.len(), 5000);
    }

    /// About 10 bytes an identity; anything cut, padded or bent is an
    /// error, never a panic or an allocation the bytes do not pay for.
    #[test]
    fn the_snapshot_is_compact_and_refuses_what_is_not_one() {
        let mut d = Duplicates::default();
        for seq in 0..100 {
            // Identities as records have them: 64-bit hashes.
            let hashes: Vec<u64> = unique(seq).iter().map(|i| xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes())).collect();
            d.analyze(&window(seq, &hashes)).unwrap();
        }
        let remembered = d.state.seen.len() + d.state.previous.len();
        let bytes = d.snapshot();
        assert!(bytes.len() < remembered * 11, "{} bytes for {remembered}", bytes.len());
        assert!(bytes.len() * 3 < encode_state(&d.state).len(), "not smaller than JSON");
        for cut in [0, 3, 4, 7, 30, bytes.len() / 2, bytes.len() - 1] {
            assert!(Duplicates::default().restore(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(Duplicates::default().restore(&padded).is_err());
        // A header claiming 4 billion entries, and no bytes for them.
        let mut lying = bytes[..8 + u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize].to_vec();
        lying.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Duplicates::default().restore(&lying).is_err());
        let mut e = Duplicates::default();
        e.restore(&bytes).unwrap();
        assert_eq!(e.state.seen, d.state.seen);
        assert_eq!(e.state.previous, d.state.previous);
    }

    /// The one-probe path finds and keeps what a lookup then an insert would,
    /// across generation switches (a small memory, identities from a small pool).
    #[test]
    fn one_probe_finds_what_a_lookup_and_an_insert_find() {
        let config = r#"{"memory": 101, "warmup_windows": 1000000}"#;
        let (mut d, mut model) = (Duplicates::default(), Duplicates::default());
        d.configure(config).unwrap();
        model.configure(config).unwrap();
        let mut x = 7u64;
        for seq in 0..60 {
            let hashes: Vec<u64> = (0..50)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (x >> 33) % 300
                })
                .collect();
            // Offsets come round every 7 windows: some records recur at the same position.
            let batch = window(seq % 7, &hashes);
            let expected = hashes
                .iter()
                .zip(&batch.offsets)
                .filter(|&(&identity, &offset)| match model.first_seen(identity) {
                    Some(first) => first != (0, offset),
                    None => {
                        model.remember(identity, (0, offset));
                        false
                    }
                })
                .count();
            let rate = d.analyze(&batch).unwrap().metrics[0].value;
            assert_eq!(rate, expected as f64 / 50.0, "window {seq}");
            assert_eq!((&d.state.seen, &d.state.previous), (&model.state.seen, &model.state.previous), "window {seq}");
        }
    }

    #[test]
    fn memory_is_bounded() {
        let mut d = Duplicates::default();
        d.configure(r#"{"memory": 1500}"#).unwrap();
        for seq in 0..5 {
            d.analyze(&window(seq, &unique(seq))).unwrap();
        }
        let remembered = d.state.seen.len() + d.state.previous.len();
        assert!((750..=1500).contains(&remembered), "{remembered}");
        let mut e = Duplicates::default();
        e.restore(&d.snapshot()).unwrap();
        assert_eq!(e.state.seen.len() + e.state.previous.len(), remembered);
    }
}
