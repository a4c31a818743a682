use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::*;
use clean_host_stream::source::{SourceError, STATE_VALUE_MAX};
use rusqlite::Connection;

/// Tables in memory, as a broker keeps them: every handle sees one set.
#[derive(Clone, Default)]
struct MemoryTables(Arc<Mutex<Tables>>);

/// Fields by table.
type Tables = HashMap<String, HashMap<String, Vec<u8>>>;

impl StateTable for MemoryTables {
    fn name(&self) -> String {
        "memory".into()
    }
    fn put(&mut self, table: &str, fields: &[(String, Vec<u8>)]) -> Result<(), SourceError> {
        self.0.lock().unwrap().entry(table.into()).or_default().extend(fields.iter().cloned());
        Ok(())
    }
    fn get_all(&mut self, table: &str) -> Result<Vec<(String, Vec<u8>)>, SourceError> {
        Ok(self.0.lock().unwrap().get(table).map(|t| t.clone().into_iter().collect()).unwrap_or_default())
    }
    fn get(&mut self, table: &str, field: &str) -> Result<Option<Vec<u8>>, SourceError> {
        Ok(self.0.lock().unwrap().get(table).and_then(|t| t.get(field)).cloned())
    }
}

/// Both places a checkpoint is kept, each as a way to open it (again, as
/// another process would): a file, and a broker's tables.
fn each_place(test: impl Fn(&dyn Fn() -> CheckpointStore)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("checkpoints.db");
    test(&|| CheckpointStore::open(&path).unwrap());
    let tables = MemoryTables::default();
    let before = dir.path().join("before.db");
    test(&|| CheckpointStore::in_broker(Box::new(tables.clone()), &before).unwrap());
}
use clean_host_quality::alert::{AlertConfig, Router};

fn key(source: &str) -> StreamKey {
    StreamKey { tenant: "a".into(), pipeline: "orders".into(), source: source.into() }
}

fn at(next_offset: u64) -> ResumePosition {
    ResumePosition { next_offset, after_id: Some(format!("{}-0", next_offset - 1)) }
}

fn detector_states(states: &[(&str, &[u8])]) -> Vec<DetectorState> {
    states.iter().map(|(name, state)| DetectorState { name: name.to_string(), version: "1.0.0".into(), state: state.to_vec() }).collect()
}

/// Partitions 0 and 3 at `offset` and twice that; partition 3 has no state
/// for the detectors (none of its windows was analysed).
fn checkpoint(offset: u64, states: &[(&str, &[u8])]) -> Checkpoint {
    let router = Router::new("orders", AlertConfig::default());
    let partition = |offset, next_seq, detectors| PartitionCheckpoint { position: at(offset), next_seq, detectors, router: router.state(0) };
    Checkpoint {
        partitions: BTreeMap::from([(0, partition(offset, 7, detector_states(states))), (3, partition(offset * 2, 9, Vec::new()))]),
        taken_at_ms: 1_764_000_000_000,
    }
}

#[test]
fn a_checkpoint_comes_back_as_stored_and_replaces_the_one_before() {
    each_place(|open| {
        let store = open();
        let k = key("kafka://127.0.0.1:9092/orders");
        assert!(store.load(&k).unwrap().is_none());
        store.save(&k, &checkpoint(100, &[("drift", b"\x00\xffstate"), ("volume", b"")])).unwrap();
        let before = store.load(&k).unwrap().unwrap();
        assert_eq!(before.partitions[&0].detectors, detector_states(&[("drift", b"\x00\xffstate"), ("volume", b"")]));
        store.save(&k, &checkpoint(200, &[("drift", b"newer")])).unwrap();
        // Another process (a restart) reads it.
        let loaded = open().load(&k).unwrap().unwrap();
        assert_eq!(loaded.positions(), BTreeMap::from([(0, at(200)), (3, at(400))]));
        assert_eq!(loaded.partitions.values().map(|c| c.next_seq).collect::<Vec<_>>(), [7, 9]);
        assert_eq!(loaded.partitions[&0].detectors, detector_states(&[("drift", b"newer")]), "the detectors of the checkpoint before are gone");
        let router = |c: &Checkpoint| serde_json::to_string(&c.partitions[&0].router).unwrap();
        assert_eq!(router(&loaded), router(&before));
        assert_eq!(loaded.state_bytes(), 5);
    });
}

/// Hosts sharing a group each store the partitions they read; one's
/// checkpoint leaves the other's partitions as they were.
#[test]
fn a_partitions_checkpoint_leaves_the_other_partitions_as_they_were() {
    each_place(|open| {
        let store = open();
        let k = key("kafka://h:1/orders");
        store.save(&k, &checkpoint(100, &[("drift", b"zero")])).unwrap();
        let mut only_three = checkpoint(500, &[]);
        only_three.partitions.remove(&0);
        only_three.partitions.get_mut(&3).unwrap().detectors = detector_states(&[("drift", b"three")]);
        only_three.taken_at_ms += 5_000;
        store.save(&k, &only_three).unwrap();
        let loaded = store.load(&k).unwrap().unwrap();
        assert_eq!(loaded.positions(), BTreeMap::from([(0, at(100)), (3, at(1000))]));
        assert_eq!(loaded.partitions[&0].detectors, detector_states(&[("drift", b"zero")]));
        assert_eq!(loaded.partitions[&3].detectors, detector_states(&[("drift", b"three")]));
        assert_eq!(loaded.taken_at_ms, 1_764_000_000_000, "a checkpoint is as old as its oldest partition");
        assert_eq!(store.positions(&k).unwrap(), Some((loaded.positions(), loaded.taken_at_ms)), "the positions alone");
        assert_eq!(store.positions(&key("kafka://h:1/other")).unwrap(), None);
    });
}

/// A data dir written before detectors ran per partition: its checkpoints
/// are dropped (those pipelines start cold once), not misread.
#[test]
fn checkpoints_of_the_layout_before_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoints.db");
    let old = Connection::open(&path).unwrap();
    old.execute_batch(
        "CREATE TABLE checkpoints (tenant TEXT, pipeline TEXT, source TEXT, taken_at_ms INTEGER, positions TEXT, next_seqs TEXT, router TEXT);
         INSERT INTO checkpoints VALUES ('a', 'orders', 'kafka://h:1/orders', 1, '{}', '{}', '{}');",
    )
    .unwrap();
    drop(old);
    assert!(CheckpointStore::read_only(&path).unwrap().list().unwrap().is_empty(), "plugin list shows none");
    let store = CheckpointStore::open(&path).unwrap();
    assert!(store.load(&key("kafka://h:1/orders")).unwrap().is_none());
    assert!(store.list().unwrap().is_empty());
    store.save(&key("kafka://h:1/orders"), &checkpoint(100, &[])).unwrap();
    assert!(CheckpointStore::open(&path).unwrap().load(&key("kafka://h:1/orders")).unwrap().is_some(), "a store of this layout is kept");
}

#[test]
fn another_stream_or_tenant_never_sees_the_checkpoint() {
    each_place(|open| {
        let store = open();
        store.save(&key("kafka://h:1/orders"), &checkpoint(100, &[("drift", b"x")])).unwrap();
        assert!(store.load(&key("kafka://h:1/payments")).unwrap().is_none());
        let other_tenant = StreamKey { tenant: "b".into(), ..key("kafka://h:1/orders") };
        assert!(store.load(&other_tenant).unwrap().is_none());
        // Names that would run together if joined plainly.
        let joined = StreamKey { tenant: "a:orders".into(), pipeline: "".into(), ..key("kafka://h:1/orders") };
        assert!(store.load(&joined).unwrap().is_none());
    });
}

/// A broker's table that holds something else than a checkpoint under a
/// checkpoint's name: an error naming the pipeline, not a wrong state.
#[test]
fn a_mangled_checkpoint_in_a_broker_is_an_error_naming_the_pipeline() {
    let (tables, dir) = (MemoryTables::default(), tempfile::tempdir().unwrap());
    let store = CheckpointStore::in_broker(Box::new(tables.clone()), &dir.path().join("before.db")).unwrap();
    let k = key("redis://h:1/orders?group=g&consumer=c");
    store.save(&k, &checkpoint(100, &[("drift", b"state")])).unwrap();
    for mangle in [|v: &mut Vec<u8>| v.truncate(v.len() - 1), |v: &mut Vec<u8>| v.push(0), |v: &mut Vec<u8>| v[0] = 0xff, |v: &mut Vec<u8>| v.truncate(2)] {
        let mut mangled = tables.clone();
        let table = tables.0.lock().unwrap().keys().next().unwrap().clone();
        let mut value = mangled.get(&table, "0").unwrap().unwrap();
        let good = value.clone();
        mangle(&mut value);
        mangled.put(&table, &[("0".into(), value)]).unwrap();
        let e = store.load(&k).unwrap_err();
        assert!(format!("{e:#}").contains("checkpoint of pipeline orders partition 0"), "{e:#}");
        mangled.put(&table, &[("0".into(), good)]).unwrap();
    }
    assert!(store.load(&k).is_ok());
}

#[test]
fn an_unreadable_checkpoint_is_an_error_naming_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoints.db");
    let store = CheckpointStore::open(&path).unwrap();
    let k = key("kafka://h:1/orders");
    store.save(&k, &checkpoint(100, &[])).unwrap();
    Connection::open(&path).unwrap().execute("UPDATE partition_checkpoints SET router = '{not json'", []).unwrap();
    let e = store.load(&k).unwrap_err();
    assert!(format!("{e:#}").contains("checkpoint of pipeline orders partition 0"), "{e:#}");
}

#[test]
fn bad_settings_are_refused_by_name() {
    assert!(CheckpointConfig { interval_ms: 0, ..Default::default() }.validate().unwrap_err().contains("interval_ms"));
    assert!(CheckpointConfig::default().validate().is_ok());
}

#[test]
fn the_list_names_every_checkpoint_and_its_state_sizes_without_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(&dir.path().join(CHECKPOINTS_FILE)).unwrap();
    store.save(&key("kafka://h:1/payments"), &checkpoint(100, &[("drift", b"12345"), ("volume", b"12")])).unwrap();
    store.save(&StreamKey { tenant: "b".into(), ..key("kafka://h:1/orders") }, &checkpoint(7, &[])).unwrap();
    let listed = store.list().unwrap();
    let named: Vec<(&str, &str)> = listed.iter().map(|c| (c.tenant.as_str(), c.source.as_str())).collect();
    assert_eq!(named, [("a", "kafka://h:1/payments"), ("b", "kafka://h:1/orders")]);
    let sizes: Vec<(&str, u64)> = listed[0].detectors.iter().map(|d| (d.name.as_str(), d.bytes)).collect();
    assert_eq!(sizes, [("drift", 5), ("volume", 2)]);
    assert_eq!(listed[0].positions, BTreeMap::from([(0, at(100)), (3, at(200))]));
    assert!(listed[1].detectors.is_empty());
}

/// Where partitions move, a host that lost a partition may store its last
/// checkpoint after the new owner stored a newer one: that one stays.
#[test]
fn advancing_never_moves_a_partition_back() {
    each_place(|open| {
        let store = open();
        let k = key("kafka://h:1/orders");
        store.advance(&k, &checkpoint(100, &[("drift", b"new owner")])).unwrap();
        store.advance(&k, &checkpoint(50, &[("drift", b"old owner")])).unwrap();
        let loaded = store.load(&k).unwrap().unwrap();
        assert_eq!(loaded.positions(), BTreeMap::from([(0, at(100)), (3, at(200))]));
        assert_eq!(loaded.partitions[&0].detectors, detector_states(&[("drift", b"new owner")]));
        store.advance(&k, &checkpoint(150, &[("drift", b"later")])).unwrap();
        assert_eq!(store.load_partition(&k, 0).unwrap().unwrap().0.detectors, detector_states(&[("drift", b"later")]));
        store.save(&k, &checkpoint(10, &[])).unwrap();
        assert_eq!(store.load_partition(&k, 3).unwrap().unwrap().0.position, at(20), "a plain save replaces");
    });
}

/// Hosts sharing where checkpoints are kept share which alerts went out.
#[test]
fn the_shared_ledger_remembers_sent_alerts_across_processes() {
    each_place(|open| {
        let k = key("kafka://h:1/orders");
        let one = open();
        assert_eq!(one.were_sent(&k, &[7]).unwrap(), [false]);
        one.record_sent(&k, &[7, 9]).unwrap();
        let other = open();
        assert_eq!(other.were_sent(&k, &[7, 8, 9]).unwrap(), [true, false, true]);
    });
}

/// On the upgrade that moves checkpoints to the broker, a stream the broker
/// has nothing of carries on from the file, and its sent alerts count; once
/// the broker has its checkpoint, that one.
#[test]
fn a_stream_carries_on_from_the_file_until_the_broker_has_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoints.db");
    let k = key("kafka://h:1/orders");
    let file = CheckpointStore::open(&path).unwrap();
    file.save(&k, &checkpoint(100, &[("drift", b"in the file")])).unwrap();
    file.record_sent(&k, &[42]).unwrap();
    let store = CheckpointStore::in_broker(Box::new(MemoryTables::default()), &path).unwrap();
    assert_eq!(store.load(&k).unwrap().unwrap().partitions[&0].detectors, detector_states(&[("drift", b"in the file")]));
    assert_eq!(store.were_sent(&k, &[42]).unwrap(), [true]);
    store.advance(&k, &checkpoint(200, &[("drift", b"in the broker")])).unwrap();
    assert_eq!(store.load_partition(&k, 0).unwrap().unwrap().0.detectors, detector_states(&[("drift", b"in the broker")]));
    assert!(file.load(&k).unwrap().is_none(), "the file's is read no more once the broker has one");
}

/// Where partitions move, one stored value that cannot be read (another
/// version's, a mangled one) is written over, not a stop to every checkpoint.
#[test]
fn an_unreadable_stored_partition_is_written_over() {
    let (tables, dir) = (MemoryTables::default(), tempfile::tempdir().unwrap());
    let store = CheckpointStore::in_broker(Box::new(tables.clone()), &dir.path().join("before.db")).unwrap();
    let k = key("kafka://h:1/orders");
    store.advance(&k, &checkpoint(100, &[])).unwrap();
    let table = tables.0.lock().unwrap().keys().next().unwrap().clone();
    tables.clone().put(&table, &[("0".into(), b"not a checkpoint".to_vec())]).unwrap();
    assert!(store.load(&k).is_err(), "a load says it cannot read it");
    store.advance(&k, &checkpoint(150, &[("drift", b"new")])).unwrap();
    assert_eq!(store.load(&k).unwrap().unwrap().positions(), BTreeMap::from([(0, at(150)), (3, at(300))]));
}

/// A partition's position is read from its header alone: states that
/// cannot be read leave it, a header that cannot be read is no checkpoint
/// (the partition starts cold, not stopped on every start).
#[test]
fn a_partitions_mark_needs_only_its_header() {
    let (tables, dir) = (MemoryTables::default(), tempfile::tempdir().unwrap());
    let k = key("pulsar://h:1/public/default/orders?subscription=s");
    // An older checkpoint in the file, from before checkpoints moved to the broker.
    CheckpointStore::open(&dir.path().join("before.db")).unwrap().save(&k, &checkpoint(50, &[])).unwrap();
    let store = CheckpointStore::in_broker(Box::new(tables.clone()), &dir.path().join("before.db")).unwrap();
    assert_eq!(store.mark_of(&k, 0).unwrap(), Some(CheckpointMark { position: at(50), next_seq: 7 }), "the file's, while the broker has none");
    store.advance(&k, &checkpoint(100, &[("drift", b"state")])).unwrap();
    assert_eq!(store.mark_of(&k, 3).unwrap(), Some(CheckpointMark { position: at(200), next_seq: 9 }));
    let table = tables.0.lock().unwrap().keys().next().unwrap().clone();
    let mut value = tables.clone().get(&table, "0").unwrap().unwrap();
    value.truncate(value.len() - 1);
    tables.clone().put(&table, &[("0".into(), value)]).unwrap();
    assert!(store.load_partition(&k, 0).is_err(), "its state cannot be read");
    assert_eq!(store.mark_of(&k, 0).unwrap(), Some(CheckpointMark { position: at(100), next_seq: 7 }), "its header can");
    tables.clone().put(&table, &[("0".into(), b"\x05\0\0\0{not json".to_vec())]).unwrap();
    assert_eq!(store.mark_of(&k, 0).unwrap(), None, "not the file's older one");

    let path = dir.path().join("checkpoints.db");
    let store = CheckpointStore::open(&path).unwrap();
    store.save(&k, &checkpoint(100, &[])).unwrap();
    assert_eq!(store.mark_of(&k, 0).unwrap(), Some(CheckpointMark { position: at(100), next_seq: 7 }));
    Connection::open(&path).unwrap().execute("UPDATE partition_checkpoints SET position = '{not json' WHERE partition = 0", []).unwrap();
    assert_eq!(store.mark_of(&k, 0).unwrap(), None);
    assert_eq!(store.mark_of(&k, 3).unwrap(), Some(CheckpointMark { position: at(200), next_seq: 9 }));
}

/// A partition's checkpoint over what a broker's table stores keeps all but
/// its largest detector states: one detector's state stops no commit, and
/// that detector starts cold from it (said as not in the checkpoint).
#[test]
fn a_checkpoint_too_big_for_the_broker_leaves_its_largest_states_out() {
    let (tables, dir) = (MemoryTables::default(), tempfile::tempdir().unwrap());
    let store = CheckpointStore::in_broker(Box::new(tables), &dir.path().join("before.db")).unwrap();
    let k = key("kafka://h:1/orders");
    let huge = vec![7; STATE_VALUE_MAX];
    store.advance(&k, &checkpoint(100, &[("duplicates", &huge), ("drift", b"small")])).unwrap();
    let loaded = store.load(&k).unwrap().unwrap();
    assert_eq!(loaded.partitions[&0].detectors, detector_states(&[("drift", b"small")]));
    assert_eq!(loaded.positions(), BTreeMap::from([(0, at(100)), (3, at(200))]));
}

/// `plugin list` reads a broker's checkpoint of a stream with nothing but
/// its table: each partition's position, each detector's state bytes over
/// the partitions, the oldest partition's time, the source's login masked.
#[test]
fn a_checkpoint_in_a_broker_is_listed_from_its_table_alone() {
    let (tables, dir) = (MemoryTables::default(), tempfile::tempdir().unwrap());
    let store = CheckpointStore::in_broker(Box::new(tables.clone()), &dir.path().join("before.db")).unwrap();
    let k = key("redis://:secret@h:1/orders?group=g&consumer=c");
    let saved = checkpoint(100, &[("drift", b"state"), ("volume", b"vv")]);
    store.save(&k, &saved).unwrap();
    let listed = StoredCheckpoint::in_broker(Box::new(tables.clone()), &k).unwrap().expect("listed");
    assert_eq!(listed.positions, saved.positions());
    assert_eq!(listed.taken_at_ms, saved.taken_at_ms);
    let states: Vec<(&str, u64)> = listed.detectors.iter().map(|d| (d.name.as_str(), d.bytes)).collect();
    assert_eq!(states, [("drift", 5), ("volume", 2)], "partition 3 has no state");
    assert!(!listed.source.contains("secret"), "{}", listed.source);
    assert!(StoredCheckpoint::in_broker(Box::new(tables), &key("redis://h:1/other")).unwrap().is_none());
}
