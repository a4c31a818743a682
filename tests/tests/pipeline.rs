//! The real binary on JSON-lines fixtures: which windows alert, and that
//! clean windows don't.

use std::collections::BTreeSet;

use clean_host_tests::{plugin, Sandbox, BUNDLED};

#[test]
fn clean_data_raises_no_alert() {
    let s = Sandbox::with_bundled();
    let data = s.generate("clean.jsonl", 60_000, &[]);
    let run = s.run(&["--source", data.to_str().unwrap(), "--window", "1000", "--format", "json"]);
    run.assert_ok();
    assert_eq!(run.alerts(), Vec::<serde_json::Value>::new(), "clean data alerted");
    let summary = run.summary();
    assert_eq!(summary["records"], 60_000);
    assert_eq!(summary["windows"], 60);
    assert_eq!(summary["dead_letters"], 0);
    // Decoding and 8 detectors over 60,000 records take some CPU, and no more than the run's cores could give.
    let (cpu, wall) = (summary["cpu_seconds"].as_f64().expect("cpu_seconds"), summary["seconds"].as_f64().unwrap());
    let cores = std::thread::available_parallelism().unwrap().get() as f64;
    assert!(cpu > 0.0 && cpu <= wall * cores + 0.5, "cpu {cpu} s in {wall} s on {cores} cores");
    for name in BUNDLED {
        let p = plugin(&summary, name);
        assert_eq!((p["status"].as_str(), p["calls"].as_u64(), p["errors"].as_u64()), (Some("active"), Some(60), Some(0)), "{p}");
        assert_eq!(p["version"], "0.1.0");
    }
}

/// Each fault sits in its own window, at least five windows apart.
const FAULTS: [(&str, u64, &str, &str); 9] = [
    ("nulls@20000+1000", 20, "completeness", "null_rate"),
    ("outliers@30000+1000", 30, "outliers", "outlier_rate"),
    ("duplicates@40000+1000", 40, "duplicates", "duplicate_rate"),
    ("wrong-types@50000+1000", 50, "schema", "wrong_type_rate"),
    ("schema@60000+1000", 60, "schema", "vanished_field"),
    ("categories@70000+1000", 70, "validity", "unexpected_value_rate"),
    ("late@80000+1000", 80, "freshness", "lag_p95_ms"),
    ("volume@90000+1000", 90, "volume", "records_per_second"),
    // Bad lines are dead letters; the host reports their rate in the window they fall in.
    ("bad-lines@95000+1000", 95, "host", "dead_letter_rate"),
];

#[test]
fn each_injected_fault_alerts_in_its_window_and_nowhere_else() {
    let s = Sandbox::with_bundled();
    let specs: Vec<&str> = FAULTS.iter().map(|f| f.0).collect();
    let data = s.generate("faults.jsonl", 100_000, &specs);
    let run = s.run(&["--source", data.to_str().unwrap(), "--window", "1000", "--format", "json"]);
    run.assert_ok();
    let keys = run.alert_keys();
    for (spec, window, detector, metric) in FAULTS {
        assert!(
            keys.iter().any(|(w, d, m)| *w == window && d == detector && m == metric),
            "{spec}: no {detector}/{metric} alert in window {window}; alerts: {keys:?}"
        );
    }
    let fault_windows: BTreeSet<u64> = FAULTS.iter().map(|f| f.1).collect();
    let stray: Vec<_> = keys.iter().filter(|(w, _, _)| !fault_windows.contains(w)).collect();
    assert!(stray.is_empty(), "alerts outside the fault windows: {stray:?}");

    // The contract fields of every alert.
    for a in run.alerts() {
        for field in ["pipeline", "detector", "metric", "column", "value", "threshold", "severity", "message", "window"] {
            assert!(a.get(field).is_some(), "alert without {field}: {a}");
        }
        let w = &a["window"];
        let seq = w["seq"].as_u64().unwrap();
        assert_eq!(w["first_offset"].as_u64(), Some(seq * 1000), "{a}");
        if seq < 95 {
            // Before the bad lines, every line is a record.
            assert_eq!(w["last_offset"].as_u64(), Some(seq * 1000 + 999), "{a}");
        }
        assert_eq!(w["records"], 1000);
        assert!(["info", "warning", "critical"].contains(&a["severity"].as_str().unwrap()));
    }
}

#[test]
fn undecodable_lines_become_dead_letters_and_processing_goes_on() {
    let s = Sandbox::with_bundled();
    let mut lines: Vec<String> = (0..30).map(|i| format!(r#"{{"id": {i}, "name": "n{i}"}}"#)).collect();
    lines[3] = r#"{"id": 3, "name": "#.into();
    lines[7] = "[1, 2, 3]".into();
    lines[11] = String::new();
    lines[19] = r#"{"id": 19} trailing"#.into();
    let mut bytes = lines.join("\n").into_bytes();
    bytes.extend_from_slice(b"\n\xff\xfe{\"id\": 30}\n");
    let data = s.write("bad.jsonl", bytes);
    let run = s.run(&["--source", data.to_str().unwrap(), "--window", "10", "--format", "json"]);
    run.assert_ok();
    let summary = run.summary();
    assert_eq!((summary["records"].as_u64(), summary["dead_letters"].as_u64()), (Some(26), Some(5)));
    assert_eq!(summary["windows"], 3);
    let dead = std::fs::read_to_string(s.path("data/dead-letters.jsonl")).unwrap();
    let dead: Vec<serde_json::Value> = dead.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let got: Vec<(u64, &str)> = dead.iter().map(|d| (d["offset"].as_u64().unwrap(), d["reason"].as_str().unwrap())).collect();
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [3, 7, 11, 19, 30]);
    assert!(got[0].1.starts_with("truncated"), "{got:?}");
    assert_eq!(got[1].1, "not a JSON object but an array");
    assert_eq!(got[2].1, "empty line");
    assert!(got[3].1.contains("after the object"), "{got:?}");
    assert!(got[4].1.contains("UTF-8") || got[4].1.contains("expected"), "{got:?}");
    assert_eq!(dead[0]["line"], 4);
    assert_eq!(dead[1]["raw"], "[1, 2, 3]");
}

#[test]
fn stdin_is_a_source() {
    let s = Sandbox::with_bundled();
    let input: String = (0..2500).map(|i| format!("{{\"v\": {}}}\n", i % 17)).collect();
    let run = s.run_with_stdin(&["--source", "-", "--window", "1000", "--format", "json"], Some(input.as_bytes()));
    run.assert_ok();
    let summary = run.summary();
    assert_eq!((summary["records"].as_u64(), summary["windows"].as_u64()), (Some(2500), Some(3)));
    let keys: BTreeSet<&str> = summary.as_object().unwrap().keys().map(String::as_str).collect();
    for key in ["records", "dead_letters", "windows", "alerts", "seconds", "plugins"] {
        assert!(keys.contains(key), "summary without {key}: {summary}");
    }
}

#[test]
fn event_time_windows_report_late_records() {
    let s = Sandbox::with_bundled();
    let config = s.write(
        "late.toml",
        r#"
        [[pipelines]]
        name = "clicks"
        source = "clicks.jsonl"
        event_time_field = "ts"
        [pipelines.window]
        kind = "event-time"
        duration_ms = 10000
        lateness_ms = 2000
        "#,
    );
    // 100 records per 10 s window for 5 windows; then two records of the first window arrive late.
    let mut lines: Vec<String> = (0..500).map(|i| format!(r#"{{"ts": {}, "v": {}}}"#, 1_700_000_000_000i64 + i * 100, i % 10)).collect();
    lines.push(r#"{"ts": 1700000000500, "v": 1}"#.into());
    lines.push(r#"{"ts": 1700000001500, "v": 1}"#.into());
    lines.push(r#"{"v": 1}"#.into());
    s.write("clicks.jsonl", lines.join("\n"));
    let run = s.run(&["--config", config.to_str().unwrap(), "--format", "json"]);
    run.assert_ok();
    let summary = run.summary();
    assert_eq!((summary["records"].as_u64(), summary["late_records"].as_u64(), summary["dead_letters"].as_u64()), (Some(500), Some(2), Some(3)));
    assert_eq!(summary["windows"], 5);
    let dead = std::fs::read_to_string(s.path("data/dead-letters.jsonl")).unwrap();
    assert_eq!(dead.matches("late: ").count(), 2);
    assert!(dead.contains("no usable event time in field 'ts'"));
}

#[test]
fn the_human_format_names_window_detector_and_column() {
    let s = Sandbox::with_bundled();
    let data = s.generate("nulls.jsonl", 20_000, &["nulls@15000+1000"]);
    let run = s.run(&["--source", data.to_str().unwrap()]);
    run.assert_ok();
    let line = run.stdout.lines().find(|l| l.contains("null_rate")).unwrap_or_else(|| panic!("{}", run.stdout));
    assert!(line.contains("window 15") && line.contains("completeness/null_rate [amount]"), "{line}");
}

#[test]
fn sliding_windows_overlap_without_counting_overlap_as_duplicates() {
    let s = Sandbox::with_bundled();
    s.generate("orders.jsonl", 10_000, &[]);
    let config = s.write(
        "sliding.toml",
        r#"
        [[pipelines]]
        name = "sliding"
        source = "orders.jsonl"
        [pipelines.window]
        size = 1000
        slide = 250
        "#,
    );
    let run = s.run(&["--config", config.to_str().unwrap(), "--format", "json"]);
    run.assert_ok();
    let summary = run.summary();
    // Windows start every 250 records: 37 full ones; the last starts at 9000.
    assert_eq!(summary["windows"], 37);
    assert_eq!(summary["records"], 10_000);
    assert_eq!(run.alerts().len(), 0, "{}", run.stdout);
}

#[test]
fn processing_time_windows_close_while_the_source_is_idle() {
    let s = Sandbox::with_bundled();
    let config = s.write(
        "time.toml",
        r#"
        [[pipelines]]
        name = "ticks"
        source = "-"
        [pipelines.window]
        kind = "time"
        duration_ms = 500
        "#,
    );
    // Compile the plugins into the cache first, so start-up does not outlast the first burst.
    s.run(&["check", "--config", config.to_str().unwrap()]).assert_ok();
    // A burst, two idle seconds with stdin still open, another burst.
    let script = "for i in $(seq 1 50); do echo '{\"v\": 1}'; done; sleep 2; for i in $(seq 1 50); do echo '{\"v\": 2}'; done";
    let mut feeder = std::process::Command::new("sh").arg("-c").arg(script).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let out = clean_host_tests::host_command()
        .args(["--config", config.to_str().unwrap(), "--format", "json", "--plugins"])
        .arg(s.plugins())
        .arg("--data-dir")
        .arg(s.path("data"))
        .stdin(feeder.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(feeder.wait().unwrap().success());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: serde_json::Value = serde_json::from_str(stderr.lines().last().unwrap()).unwrap();
    assert_eq!(summary["records"], 100);
    // Two seconds idle make empty 500 ms windows between the two with records
    // (at least one, however late the host started reading).
    assert!(summary["windows"].as_u64().unwrap() >= 3, "{summary}");
}

/// Detectors repeat themselves: the same records through the same host
/// (the same data dir's key) give the same alerts, down to the last digit
/// of every value (the drift detector's references are thinned by rule,
/// never by chance).
#[test]
fn the_same_records_give_the_same_alerts() {
    let s = Sandbox::with_bundled();
    let data = s.generate("drift.jsonl", 40_000, &["drift@30000+3000", "outliers@36000+1000"]);
    let args = ["--source", data.to_str().unwrap(), "--window", "1000", "--format", "json"];
    let first = s.run(&args);
    first.assert_ok();
    // Everything the first run left but the host's key (history, ledger).
    for entry in std::fs::read_dir(s.path("data")).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name() != Some("cache.key".as_ref()) {
            if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) }.unwrap();
        }
    }
    let again = s.run(&args);
    again.assert_ok();
    let alerts = first.alerts();
    assert!(alerts.iter().any(|a| a["detector"] == "drift"), "{alerts:?}");
    assert_eq!(alerts, again.alerts());
}
