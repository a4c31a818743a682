use super::*;
use clean_host_stream::source::Position;
use tempfile::TempDir;

fn window(tenant: &str, pipeline: &str, seq: u64, analysed_ms: i64) -> WindowRecord {
    WindowRecord {
        tenant: tenant.into(),
        pipeline: pipeline.into(),
        source: "orders.jsonl".into(),
        window: WindowRef {
            partition: 0,
            seq,
            first_offset: Position::Offset(seq * 100),
            last_offset: Position::Offset(seq * 100 + 99),
            records: 100,
            start_ms: analysed_ms - 1000,
            end_ms: analysed_ms,
        },
        analysed_ms,
        score: 0.9,
        score_interval: [0.9, 1.0],
        findings: vec![FindingRow {
            detector: "completeness".into(),
            metric: "null_rate".into(),
            column: Some("email".into()),
            value: 0.4,
            threshold: 0.05,
            severity: Severity::Warning,
            message: "40% null".into(),
            shadow: false,
        }],
        metrics: vec![MetricRow { detector: "volume".into(), metric: "records".into(), column: None, value: 100.0 }],
        alerts: vec![AlertRow {
            detector: "completeness".into(),
            metric: "null_rate".into(),
            column: Some("email".into()),
            value: 0.4,
            threshold: 0.05,
            severity: Severity::Warning,
            message: "40% null".into(),
            rule: Some("cusum".into()),
            low_confidence: true,
        }],
    }
}

fn all(tenant: &str) -> Filter {
    Filter { tenant: tenant.into(), pipeline: None, from_ms: None, to_ms: None, limit: 100, cursor: None }
}

fn store(records: Vec<WindowRecord>) -> (TempDir, HistoryReader, Arc<HistoryStats>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let (history, writer) = History::start(&path, &HistoryConfig::default()).unwrap();
    for r in records {
        assert!(history.window(r));
    }
    let stats = history.stats.clone();
    drop(history);
    writer.finish();
    (dir, HistoryReader::open(&path).unwrap(), stats)
}

#[test]
fn windows_findings_and_alerts_are_read_back_per_tenant() {
    let now = clean_host_core::timestamp::now_ms();
    let (_dir, reader, _) = store(vec![window("a", "orders", 1, now), window("b", "payments", 1, now), window("a", "orders", 2, now + 1)]);
    let windows = reader.windows(&all("a")).unwrap();
    assert_eq!(windows.items.iter().map(|w| w.window.seq).collect::<Vec<_>>(), [2, 1], "newest first, only tenant a");
    assert!(windows.items.iter().all(|w| w.pipeline == "orders"));
    let alerts = reader.alerts(&all("b")).unwrap();
    assert_eq!(alerts.items.len(), 1);
    assert_eq!(alerts.items[0].pipeline, "payments");
    assert_eq!(alerts.items[0].findings.len(), 1, "an alert comes with its window's findings");
    let written = window("b", "payments", 1, now);
    assert_eq!((&alerts.items[0].alert, &alerts.items[0].findings[0].finding), (&written.alerts[0], &written.findings[0]), "read back as written");
    assert_eq!((windows.items[0].score_low, windows.items[0].score_high), (Some(0.9), Some(1.0)));
    assert_eq!(reader.findings(&all("a")).unwrap().items.len(), 2);
    assert!(reader.windows(&all("c")).unwrap().items.is_empty());
}

#[test]
fn windows_are_served_with_the_identity_they_were_stored_with() {
    let now = clean_host_core::timestamp::now_ms();
    let mut redis = window("a", "events", 1, now);
    redis.window.first_offset = Position::Id("1700000000000-0".into());
    redis.window.last_offset = Position::Id("1700000000999-3".into());
    let (_dir, reader, _) = store(vec![redis.clone(), window("a", "orders", 7, now + 1)]);
    let served: Vec<WindowRef> = reader.windows(&all("a")).unwrap().items.into_iter().map(|w| w.window).collect();
    assert_eq!(served, [window("a", "orders", 7, now + 1).window, redis.window]);
    let json = serde_json::to_value(&reader.windows(&all("a")).unwrap().items[0]).unwrap();
    assert_eq!((json["seq"].as_u64(), json["first_offset"].as_u64(), json["records"].as_u64()), (Some(7), Some(700), Some(100)), "{json}");
}

#[test]
fn another_source_under_the_same_pipeline_has_windows_and_baselines_of_its_own() {
    let now = clean_host_core::timestamp::now_ms();
    let other = WindowRecord { source: "other.jsonl".into(), ..window("a", "orders", 1, now + 1) };
    let (_dir, reader, stats) = store(vec![window("a", "orders", 1, now), other]);
    assert_eq!((reader.windows(&all("a")).unwrap().items.len(), stats.duplicate_windows.load(Ordering::Relaxed)), (2, 0));
    assert_eq!(reader.past_windows("a", "orders", "other.jsonl", 10).unwrap().len(), 1);
    assert!(reader.past_windows("a", "orders", "third.jsonl", 10).unwrap().is_empty());
}

#[test]
fn a_replayed_window_is_kept_once() {
    let now = clean_host_core::timestamp::now_ms();
    let (_dir, reader, stats) = store(vec![window("a", "orders", 1, now), window("a", "orders", 1, now + 5)]);
    assert_eq!(reader.windows(&all("a")).unwrap().items.len(), 1);
    assert_eq!(reader.findings(&all("a")).unwrap().items.len(), 1);
    assert_eq!(stats.duplicate_windows.load(Ordering::Relaxed), 1);
}

#[test]
fn pages_and_time_ranges() {
    let now = clean_host_core::timestamp::now_ms();
    let (_dir, reader, _) = store((1..=25).map(|i| window("a", "orders", i, now + i as i64)).collect());
    let mut filter = Filter { limit: 10, ..all("a") };
    let mut seqs = Vec::new();
    loop {
        let page = reader.windows(&filter).unwrap();
        seqs.extend(page.items.iter().map(|w| w.window.seq));
        match page.next_cursor {
            Some(c) => filter.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seqs, (1..=25).rev().collect::<Vec<_>>());
    let range = Filter { from_ms: Some(now + 5), to_ms: Some(now + 8), ..all("a") };
    assert_eq!(reader.windows(&range).unwrap().items.iter().map(|w| w.window.seq).collect::<Vec<_>>(), [7, 6, 5]);
}

#[test]
fn retention_deletes_old_windows_with_their_findings() {
    let now = clean_host_core::timestamp::now_ms();
    let old = now - 10 * 3_600_000;
    let (dir, _, _) = store(vec![window("a", "orders", 1, old), window("a", "orders", 2, now)]);
    let path = dir.path().join("history.db");
    let config = HistoryConfig { retention_hours: 1, ..HistoryConfig::default() };
    let (history, writer) = History::start(&path, &config).unwrap();
    drop(history);
    writer.finish();
    let reader = HistoryReader::open(&path).unwrap();
    assert_eq!(reader.windows(&all("a")).unwrap().items.iter().map(|w| w.window.seq).collect::<Vec<_>>(), [2]);
    assert_eq!(reader.findings(&all("a")).unwrap().items.len(), 1);
    assert_eq!(reader.alerts(&all("a")).unwrap().items.len(), 1);
}

#[test]
fn a_file_from_before_score_intervals_gains_the_new_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let old = Connection::open(&path).unwrap();
    old.execute_batch(
        "CREATE TABLE windows (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, pipeline TEXT NOT NULL, partition INTEGER NOT NULL, seq INTEGER NOT NULL,
            first_offset TEXT NOT NULL, last_offset TEXT NOT NULL, records INTEGER NOT NULL, start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL,
            analysed_ms INTEGER NOT NULL, score REAL NOT NULL, alerts INTEGER NOT NULL, UNIQUE (pipeline, partition, first_offset, last_offset));
         INSERT INTO windows VALUES (1, 'a', 'orders', 0, 7, '0', '99', 100, 0, 1, CAST(strftime('%s', 'now') AS INTEGER) * 1000, 1.0, 0);
         CREATE TABLE alerts (id INTEGER PRIMARY KEY, window_id INTEGER NOT NULL, tenant TEXT NOT NULL, pipeline TEXT NOT NULL, at_ms INTEGER NOT NULL,
            detector TEXT NOT NULL, metric TEXT NOT NULL, column_name TEXT, value REAL NOT NULL, threshold REAL NOT NULL, severity TEXT NOT NULL, message TEXT NOT NULL);",
    )
    .unwrap();
    drop(old);
    let reader = HistoryReader::open(&path).unwrap();
    let windows = reader.windows(&all("a")).unwrap();
    assert_eq!((windows.items[0].window.seq, windows.items[0].score_high), (7, None));
    assert!(reader.alerts(&all("a")).unwrap().items.is_empty());
    // The old key over (pipeline, partition, offsets) is gone: a window of
    // another source at the same offsets is kept, with its findings.
    let (history, writer) = History::start(&path, &HistoryConfig::default()).unwrap();
    let now = clean_host_core::timestamp::now_ms();
    let same_offsets = WindowRef { first_offset: Position::Offset(0), last_offset: Position::Offset(99), ..window("a", "orders", 8, now).window };
    assert!(history.window(WindowRecord { window: same_offsets, ..window("a", "orders", 8, now) }));
    let stats = history.stats.clone();
    drop(history);
    writer.finish();
    let seqs: Vec<u64> = reader.windows(&all("a")).unwrap().items.iter().map(|w| w.window.seq).collect();
    assert_eq!((seqs, stats.duplicate_windows.load(Ordering::Relaxed)), (vec![8, 7], 0));
    assert_eq!(reader.findings(&all("a")).unwrap().items.len(), 1);
}

#[test]
fn findings_keep_their_window_when_the_windows_table_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let (history, writer) = History::start(&path, &HistoryConfig::default()).unwrap();
    assert!(history.window(window("a", "orders", 3, 5)));
    drop(history);
    writer.finish();
    // Make the file look like one from before windows had a source.
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "PRAGMA foreign_keys = OFF;
         CREATE TABLE w (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, pipeline TEXT NOT NULL, partition INTEGER NOT NULL, seq INTEGER NOT NULL,
            first_offset TEXT NOT NULL, last_offset TEXT NOT NULL, records INTEGER NOT NULL, start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL,
            analysed_ms INTEGER NOT NULL, score REAL NOT NULL, alerts INTEGER NOT NULL, score_low REAL, score_high REAL,
            UNIQUE (pipeline, partition, first_offset, last_offset));
         INSERT INTO w SELECT id, tenant, pipeline, partition, seq, first_offset, last_offset, records, start_ms, end_ms, analysed_ms, score, alerts, score_low, score_high FROM windows;
         DROP TABLE windows; ALTER TABLE w RENAME TO windows;",
    )
    .unwrap();
    drop(conn);
    let reader = HistoryReader::open(&path).unwrap();
    let alerts = reader.alerts(&all("a")).unwrap();
    assert_eq!((alerts.items.len(), alerts.items[0].seq, alerts.items[0].findings.len()), (1, 3, 1), "the alert and its findings still name window 3");
}

#[test]
fn past_windows_come_oldest_first_with_their_metrics_and_flags() {
    let now = clean_host_core::timestamp::now_ms();
    let mut shadowed = window("a", "orders", 3, now + 2);
    shadowed.findings[0].shadow = true;
    let (_dir, reader, _) = store(vec![window("a", "orders", 1, now), window("a", "orders", 2, now + 1), shadowed, window("a", "other", 4, now + 3)]);
    let past = reader.past_windows("a", "orders", "orders.jsonl", 2).unwrap();
    assert_eq!(past.len(), 2, "the last two of this pipeline");
    assert_eq!((past[0].score, past[0].score_high), (0.9, 1.0));
    assert_eq!(past[0].metrics, [("volume".into(), "records".into(), None, 100.0)]);
    assert_eq!(past[0].flagged, [("completeness".into(), "null_rate".into(), Some("email".into()))]);
    assert!(past[1].flagged.is_empty(), "shadow findings flag nothing");
    assert!(reader.past_windows("b", "orders", "orders.jsonl", 10).unwrap().is_empty());
}

#[test]
fn metric_values_of_windows_written_before_the_blob_are_still_read() {
    let now = clean_host_core::timestamp::now_ms();
    let (dir, _, _) = store(vec![window("a", "orders", 1, now), window("a", "orders", 2, now + 1)]);
    let path = dir.path().join("history.db");
    // Window 1 as an older host wrote it: its values in rows of their own.
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "UPDATE windows SET metrics = NULL WHERE seq = 1;
         INSERT INTO metric_values SELECT id, 'drift', 'psi', 'amount', 0.25 FROM windows WHERE seq = 1;",
    )
    .unwrap();
    drop(conn);
    let past = HistoryReader::open(&path).unwrap().past_windows("a", "orders", "orders.jsonl", 2).unwrap();
    assert_eq!(past[0].metrics, [("drift".into(), "psi".into(), Some("amount".into()), 0.25)]);
    assert_eq!(past[1].metrics, [("volume".into(), "records".into(), None, 100.0)]);
    // A blob that does not decode costs that window's values, not the others' or the start.
    Connection::open(&path).unwrap().execute("UPDATE windows SET metrics = x'01ff' WHERE seq = 2", []).unwrap();
    let past = HistoryReader::open(&path).unwrap().past_windows("a", "orders", "orders.jsonl", 2).unwrap();
    assert_eq!((past[0].metrics.len(), past[1].metrics.len(), past[1].score), (1, 0, 0.9));
}

#[test]
fn a_flush_ends_the_gathering_and_what_follows_it_waits_for_the_next_batch() {
    let (tx, rx) = crossbeam_channel::unbounded();
    for entry in [Entry::Window(Box::new(window("t", "p", 2, 2_000))), Entry::Flush, Entry::Window(Box::new(window("t", "p", 3, 3_000)))] {
        tx.send(entry).unwrap();
    }
    // A linger longer than the test takes: only a flush (or a stop) ends a batch early.
    let linger = Duration::from_secs(10);
    let batch = gather(Entry::Window(Box::new(window("t", "p", 1, 1_000))), &rx, linger);
    assert!(matches!(batch.as_slice(), [Entry::Window(a), Entry::Window(b), Entry::Flush] if a.window.seq == 1 && b.window.seq == 2));
    tx.send(Entry::Stop).unwrap();
    let next = gather(rx.recv().unwrap(), &rx, linger);
    assert!(matches!(next.as_slice(), [Entry::Window(c), Entry::Stop] if c.window.seq == 3));
}

/// A writer lingering asleep is woken by a flush and by a queue half full
/// (or holding a whole batch), not by each window.
#[test]
fn a_lingering_writer_is_woken_by_a_flush_and_a_half_full_queue_only() {
    assert!(!wakes(false, 1, 4) && wakes(false, 2, 4) && wakes(true, 1, 4));
    assert!(wakes(false, 1, 1) && wakes(false, 1, 2), "a queue of one or two wakes it each time");
    assert!(!wakes(false, BATCH_MAX - 1, 1_000_000) && wakes(false, BATCH_MAX, 1_000_000));

    // Asleep in its gathering, it takes what queued up once a flush wakes it.
    let (tx, rx) = crossbeam_channel::bounded(100);
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let first = Entry::Window(Box::new(window("t", "p", 1, 1_000)));
    // A linger far longer than the test: only a wake-up ends it early.
    let gathering = std::thread::spawn(move || done_tx.send(gather(first, &rx, Duration::from_secs(600))));
    let history = History { tx, writer: gathering.thread().clone(), path: PathBuf::new(), stats: Arc::default() };
    std::thread::sleep(Duration::from_millis(100)); // asleep by now, most likely
    assert!(history.window(window("t", "p", 2, 2_000)));
    history.flush();
    let batch = done_rx.recv_timeout(Duration::from_secs(10)).expect("woken by the flush");
    assert!(matches!(batch.as_slice(), [Entry::Window(a), Entry::Window(b), Entry::Flush] if a.window.seq == 1 && b.window.seq == 2));
}
