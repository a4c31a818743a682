//! Hostile plugins and hostile input against the real binary: calls that
//! wait inside WASI, files that point elsewhere, answers too large to keep,
//! clocks gone wrong, field names without end, a tampered compile cache,
//! a second plugin of the same name, and the signals that end a run.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clean_host_tests::{binary, bundled, fault_plugin, host_command, plugin, wait_until, Run, Sandbox, BUNDLED};
use serde_json::Value;

/// Long enough for any run here; a run still going then has hung.
const HANG: Duration = Duration::from_secs(180);

/// An endless generated stream through the sandbox's plugins in windows of
/// `window` records, stderr to `stderr.log`.
fn spawn_endless(s: &Sandbox, window: u32) -> Child {
    host_command()
        .args(["--rate", "20000", "--quiet", "--format", "json", "--window", &window.to_string(), "--plugins"])
        .arg(s.plugins())
        .arg("--data-dir")
        .arg(s.path("data"))
        .current_dir(s.dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(s.path("stderr.log")).unwrap())
        .spawn()
        .unwrap()
}

fn stderr_log(s: &Sandbox) -> String {
    std::fs::read_to_string(s.path("stderr.log")).unwrap_or_default()
}

/// Send `signal` (`INT`, `TERM`) and wait for the run to end with its summary.
fn stop(mut child: Child, s: &Sandbox, signal: &str) -> Value {
    let killed = Command::new("kill").args(["-s", signal, &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("SIG{signal} did not end the run:\n{}", stderr_log(s));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = stderr_log(s);
    assert!(status.success(), "SIG{signal}: {status}\n{stderr}");
    serde_json::from_str(stderr.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("no summary after SIG{signal} ({e}):\n{stderr}"))
}

fn quarantine_message(run: &Run, name: &str) -> String {
    let alert = run.alerts().into_iter().find(|a| a["detector"] == name && a["metric"] == "plugin_quarantined");
    alert.unwrap_or_else(|| panic!("no quarantine alert for {name}: {}", run.stdout))["message"].as_str().unwrap().to_string()
}

/// Sleeping, polling timers and reading a stream block inside WASI host
/// calls, where the epoch cannot reach; each call still ends at its
/// deadline, and the plugin is quarantined like one that spins.
#[test]
fn plugins_that_wait_in_wasi_calls_end_at_their_deadline() {
    for how in ["sleep", "poll", "stdin"] {
        let s = Sandbox::with_bundled();
        s.add_plugin(&fault_plugin("sleeper"));
        s.write("plugins/sleeper.toml", format!("timeout_ms = 300\n[config]\nhow = '{how}'\n"));
        let data = s.generate("clean.jsonl", 8_000, &[]);
        let run = s.run_within(&["--source", data.to_str().unwrap(), "--window", "1000", "--format", "json"], HANG);
        run.assert_ok();
        let summary = run.summary();
        assert_eq!(summary["windows"], 8, "{how}");
        let sleeper = plugin(&summary, "sleeper");
        assert_eq!(
            (sleeper["status"].as_str(), sleeper["calls"].as_u64(), sleeper["errors"].as_u64()),
            (Some("quarantined"), Some(5), Some(3)),
            "{how}: {sleeper}"
        );
        // The slowest call ended at the deadline (300 ms), not an hour later.
        assert!(sleeper["call_p99_us"].as_u64().unwrap() < 2_000_000, "{how}: {sleeper}");
        assert!(quarantine_message(&run, "sleeper").contains("timed out after 300 ms"), "{how}");
        for name in BUNDLED {
            assert_eq!(plugin(&summary, name)["errors"], 0, "{how}: {name}");
            assert_eq!(plugin(&summary, name)["calls"], 8, "{how}: {name}");
        }
    }
}

/// Each tenant's detector calls have threads of their own: while tenant a's
/// plugin waits out three deadlines of a second, tenant b finishes.
#[test]
fn a_waiting_plugin_holds_up_only_its_own_tenant() {
    let s = Sandbox::empty();
    for tenant in ["a", "b"] {
        std::fs::create_dir(s.plugins().join(tenant)).unwrap();
        for name in BUNDLED {
            std::fs::copy(bundled(name), s.plugins().join(tenant).join(format!("{name}.wasm"))).unwrap();
        }
    }
    std::fs::copy(fault_plugin("sleeper"), s.plugins().join("a/sleeper.wasm")).unwrap();
    s.write("plugins/a/sleeper.toml", "timeout_ms = 1000\n[config]\nhow = 'sleep'\n");
    s.generate("clean.jsonl", 8_000, &[]);
    let config = s.write(
        "tenants.toml",
        "[[tenants]]\nname = 'a'\n[[tenants]]\nname = 'b'\n\
         [[pipelines]]\nname = 'pa'\ntenant = 'a'\nsource = 'clean.jsonl'\n\
         [[pipelines]]\nname = 'pb'\ntenant = 'b'\nsource = 'clean.jsonl'\n",
    );
    let run = s.run_within(&["--config", config.to_str().unwrap(), "--format", "json"], HANG);
    run.assert_ok();
    let history = rusqlite::Connection::open(s.path("data/history.db")).unwrap();
    let last = |pipeline: &str| -> (i64, i64) {
        history.query_row("SELECT count(*), max(analysed_ms) FROM windows WHERE pipeline = ?1", [pipeline], |r| Ok((r.get(0)?, r.get(1)?))).unwrap()
    };
    let ((a_windows, a_done), (b_windows, b_done)) = (last("pa"), last("pb"));
    assert_eq!((a_windows, b_windows), (8, 8));
    assert!(b_done + 1500 < a_done, "tenant b's last window ({b_done}) waited for tenant a's deadlines (a done at {a_done})");
}

/// Ctrl-C and SIGTERM (what container platforms send) drain the same way
/// while a plugin waits in a host call: final windows, last commit, summary.
#[test]
fn sigint_and_sigterm_end_the_run_with_its_summary_while_a_plugin_waits() {
    for signal in ["INT", "TERM"] {
        let s = Sandbox::with_bundled();
        s.add_plugin(&fault_plugin("sleeper"));
        s.write("plugins/sleeper.toml", "[config]\nhow = 'sleep'\n");
        let child = spawn_endless(&s, 1000);
        wait_until("the sleeper's first timeout", HANG, || stderr_log(&s).contains("timed out after 2000 ms"));
        let summary = stop(child, &s, signal);
        assert!(summary["windows"].as_u64().unwrap() >= 3, "SIG{signal}: {summary}");
        assert!(plugin(&summary, "sleeper")["errors"].as_u64().unwrap() >= 1, "SIG{signal}: {summary}");
    }
}

/// A tenant's folder cannot make the host read other files: links and
/// special files are refused by name, and no error quotes a file.
#[test]
fn links_and_special_files_in_plugin_folders_are_refused_without_quoting_them() {
    const SECRET: &str = "TOP-SECRET-TOKEN-7f3a";
    let s = Sandbox::empty();
    let secret = s.write("secret.env", format!("API_TOKEN={SECRET}\n"));
    for name in ["volume", "schema", "completeness", "outliers"] {
        s.add_plugin(&bundled(name));
    }
    std::os::unix::fs::symlink(&secret, s.plugins().join("volume.toml")).unwrap();
    std::os::unix::fs::symlink(bundled("drift"), s.plugins().join("linked.wasm")).unwrap();
    s.write("plugins/schema.toml", format!("memory_mib = \"{SECRET}\"\n"));
    s.write("plugins/completeness.toml", format!("{SECRET} = 1\n"));
    assert!(Command::new("mkfifo").arg(s.plugins().join("outliers.toml")).status().unwrap().success());
    std::fs::create_dir(s.plugins().join("folder.wasm")).unwrap();

    let listed = s.run_within(&["plugin", "list", "--json"], HANG);
    listed.assert_ok();
    let lines: Vec<Value> = listed.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let error = |file: &str| -> String {
        let line = lines.iter().find(|l| l["status"] == "rejected" && l["error"].as_str().unwrap().contains(file));
        line.unwrap_or_else(|| panic!("{file} not rejected: {}", listed.stdout))["error"].as_str().unwrap().to_string()
    };
    assert!(error("volume.toml").contains("is a symbolic link"));
    assert!(error("linked.wasm").contains("is a symbolic link"));
    assert!(error("outliers.toml").contains("is a FIFO"));
    assert!(error("folder.wasm").contains("is a directory"));
    assert!(error("schema.toml").contains("line 1: invalid type"));
    assert!(error("completeness.toml").contains("line 1"));
    assert!(!listed.stdout.contains(SECRET) && !listed.stderr.contains(SECRET), "{}\n{}", listed.stdout, listed.stderr);

    // The same file turning into a link under a running host: the reload is
    // rejected, and neither the log nor the history quotes what it points at.
    for f in ["volume.toml", "linked.wasm", "schema.toml", "completeness.toml", "outliers.toml"] {
        std::fs::remove_file(s.plugins().join(f)).unwrap();
    }
    std::fs::remove_dir(s.plugins().join("folder.wasm")).unwrap();
    let child = spawn_endless(&s, 1000);
    wait_until("the first windows", HANG, || stderr_log(&s).contains("control rules") || s.path("data/history.db").exists());
    std::thread::sleep(Duration::from_secs(1));
    std::os::unix::fs::symlink(&secret, s.plugins().join("volume.toml")).unwrap();
    wait_until("the rejected reload", HANG, || stderr_log(&s).contains("reload rejected"));
    let summary = stop(child, &s, "INT");
    assert!(summary["tenants"][0]["rejected_reloads"].as_u64().unwrap() >= 1, "{summary}");
    let stderr = stderr_log(&s);
    assert!(stderr.contains("volume.toml is a symbolic link"), "{stderr}");
    assert!(!stderr.contains(SECRET), "{stderr}");
    for file in ["history.db", "history.db-wal"] {
        let bytes = std::fs::read(s.path("data").join(file)).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&bytes).contains(SECRET), "{file} holds the secret");
    }
}

/// Every text a plugin hands over is cut before the host keeps or prints
/// it, and a snapshot too large to keep is refused.
#[test]
fn oversized_plugin_output_is_cut_or_refused() {
    let s = Sandbox::empty();
    s.add_plugin(&fault_plugin("bloat"));
    s.add_plugin(&bundled("volume"));
    let listed = s.run_within(&["plugin", "list", "--json"], HANG);
    listed.assert_ok();
    let bloat: Value = listed.stdout.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|l| l["name"] == "bloat").unwrap();
    assert!(bloat["version"].as_str().unwrap().len() <= 64 && bloat["description"].as_str().unwrap().len() <= 1024, "{}", listed.stdout.len());
    assert!(bloat["metrics"].as_array().unwrap().len() <= 256 && bloat["metrics"][0].as_str().unwrap().len() <= 128);

    let data = s.generate("clean.jsonl", 3_000, &[]);
    let windows = s.path("windows.jsonl");
    for what in ["error", "names", "logs"] {
        s.write("plugins/bloat.toml", format!("[config]\nwhat = '{what}'\n"));
        let _ = std::fs::remove_file(&windows);
        let run = s.run_within(&["--source", data.to_str().unwrap(), "--format", "json", "--windows-file", windows.to_str().unwrap()], HANG);
        run.assert_ok();
        assert!(run.stdout.len() + run.stderr.len() < 1 << 20, "{what}: {} bytes of output", run.stdout.len() + run.stderr.len());
        let summary = run.summary();
        match what {
            "error" => assert!(quarantine_message(&run, "bloat").len() < 2048, "{what}"),
            "names" => {
                let text = std::fs::read_to_string(&windows).unwrap();
                let w: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
                let finding = w["findings"].as_array().unwrap().iter().find(|f| f["detector"] == "bloat").unwrap();
                assert!(finding["metric"].as_str().unwrap().len() <= 128 && finding["column"].as_str().unwrap().len() <= 128, "{finding}");
                assert_eq!(plugin(&summary, "bloat")["errors"], 0);
            }
            _ => {
                let lines: Vec<&str> = run.stderr.lines().filter(|l| l.contains("plugin bloat: ") && !l.contains("more log lines")).collect();
                assert_eq!(lines.len(), 300, "100 lines per call are printed");
                assert!(lines.iter().all(|l| l.len() < 2048));
                assert!(run.stderr.contains("more log lines in one call were dropped"));
            }
        }
    }

    // Detectors snapshot their state every 50 windows (and a second): 96 MiB is refused.
    s.write("plugins/bloat.toml", "[config]\nwhat = 'snapshot'\n");
    let child = spawn_endless(&s, 100);
    wait_until("the refused snapshot", HANG, || stderr_log(&s).contains("a snapshot of 100663296 bytes (at most 64 MiB)"));
    stop(child, &s, "INT");
}

/// A detector is handed what it says it reads and the row states, nothing
/// else, however much of a window that is; one that names too many columns
/// is refused, as a bad config is, with the limit; one built for the 0.1.0
/// contract loads as it is and gets whole windows.
#[test]
fn detectors_are_handed_what_they_read() {
    let s = Sandbox::empty();
    s.add_plugin(&fault_plugin("reader"));
    s.add_plugin(&fault_plugin("contract_0_1_0"));
    s.write("plugins/reader.toml", "[config]\nparts = ['timestamp-values', 'record-hashes']\ncolumns = ['status']\n");
    let data = s.generate("clean.jsonl", 3_000, &[]);
    let windows = s.path("windows.jsonl");
    let run = s.run_within(&["--source", data.to_str().unwrap(), "--format", "json", "--windows-file", windows.to_str().unwrap()], HANG);
    run.assert_ok();
    let ws = clean_host_tests::brokers::windows(&windows);
    assert_eq!(ws.len(), 3);
    for w in &ws {
        let findings = |detector: &str| -> Vec<(String, Option<String>, f64)> {
            let all = w["findings"].as_array().unwrap().iter().filter(|f| f["detector"] == detector);
            all.map(|f| (f["metric"].as_str().unwrap().into(), f["column"].as_str().map(Into::into), f["value"].as_f64().unwrap())).collect()
        };
        let reader = findings("reader");
        assert!(reader.len() > 20, "{w}");
        for (metric, column, got) in &reader {
            let expected = match (metric.as_str(), column.as_deref()) {
                ("values", Some("ts" | "status")) | ("rows" | "record_hashes", _) => 1000.0,
                _ => 0.0,
            };
            assert_eq!(*got, expected, "{metric} {column:?}");
        }
        let whole = findings("contract-0-1-0");
        assert_eq!(whole.len(), reader.iter().filter(|(m, _, _)| m == "values").count() + 1, "{w}");
        assert!(whole.iter().all(|(_, _, got)| *got == 1000.0), "{whole:?}");
    }

    // Reading most of a window, it is still handed only that: no times.
    let most = "['float64-values', 'int64-values', 'boolean-values', 'text-values', 'offsets', 'record-hashes']";
    s.write("plugins/reader.toml", format!("[config]\nparts = {most}\n"));
    let windows = s.path("most.jsonl");
    let run = s.run_within(&["--source", data.to_str().unwrap(), "--format", "json", "--windows-file", windows.to_str().unwrap()], HANG);
    run.assert_ok();
    let ws = clean_host_tests::brokers::windows(&windows);
    assert_eq!(ws.len(), 3);
    for w in ws {
        let reader: Vec<_> = w["findings"].as_array().unwrap().iter().filter(|f| f["detector"] == "reader").collect();
        assert!(reader.len() > 20, "{w}");
        for f in reader {
            let expected = match (f["metric"].as_str().unwrap(), f["column"].as_str()) {
                ("values", Some("ts")) | ("event_times", _) => 0.0,
                _ => 1000.0,
            };
            assert_eq!(f["value"].as_f64().unwrap(), expected, "{f}");
        }
    }

    s.write("plugins/reader.toml", "[config]\npadding = 5000\n");
    let run = s.run_within(&["--source", data.to_str().unwrap(), "--format", "json"], HANG);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("plugin reader: returned invalid output: reads names 5000 columns of "), "{}", run.stderr);
}

/// What the host works out of a window for every detector that asks (the
/// WIT's `window` import) is what a plugin works out itself, on values made
/// to trip it: nulls, missing fields and values of the wrong type, empty and
/// multi-byte strings, long ones that differ only in the middle, -0 and 0,
/// integers past 2^53, the extremes of f64. Asking for a column the window
/// does not have gives none, and so does asking outside `analyze`. The
/// SDK's helpers take the host's answers for the batch handed over only: a
/// changed copy of it is summed up as it is.
#[test]
fn window_summaries_are_what_a_plugin_works_out_itself() {
    let s = Sandbox::empty();
    s.add_plugin(&fault_plugin("summaries"));
    let texts = ["a", "b", "", "é", "日本語", "user-000123-of-the-same-domain.example.com", "user-000124-of-the-same-domain.example.com", "0123456789abcdef"];
    let numbers = ["-0.0", "0.0", "0", "1e308", "-1e308", "5e-324", "-2.5", "3.25", "\"3.25\"", "null"];
    let integers = ["9007199254740993", "9007199254740992", "-9223372036854775808", "9223372036854775807", "0", "-1", "7"];
    let mut lines = String::new();
    let mut state = 7u64;
    let mut next = |n: usize| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize % n
    };
    for row in 0..400 {
        let text = match next(12) {
            0 => "null".to_string(),
            1 => "42".to_string(),
            k => format!("{:?}", texts[k % texts.len()]),
        };
        let mut line =
            format!("{{\"row\": {row}, \"x\": {}, \"n\": {}, \"flag\": {}", numbers[next(numbers.len())], integers[next(integers.len())], next(2) == 0);
        if next(10) != 0 {
            line += &format!(", \"cat\": {text}");
        }
        lines += &line;
        lines += "}\n";
    }
    let data = s.write("tricky.jsonl", lines);
    let windows = s.path("windows.jsonl");
    let run = s.run_within(&["--source", data.to_str().unwrap(), "--window", "100", "--format", "json", "--windows-file", windows.to_str().unwrap()], HANG);
    run.assert_ok();
    let ws = clean_host_tests::brokers::windows(&windows);
    assert_eq!(ws.len(), 4);
    for w in &ws {
        let findings: Vec<&Value> = w["findings"].as_array().unwrap().iter().filter(|f| f["detector"] == "summaries").collect();
        for metric in ["agrees", "sdk_agrees"] {
            let agrees: Vec<_> = findings.iter().filter(|f| f["metric"] == metric).collect();
            assert_eq!(agrees.len(), 5, "a finding per column: {w}");
            for f in agrees {
                assert_eq!(f["value"], 1.0, "{f}");
            }
        }
        assert!(findings.iter().any(|f| f["metric"] == "beyond_is_none" && f["value"] == 1.0), "{w}");
        assert!(findings.iter().any(|f| f["metric"] == "handed" && f["value"] == 1.0), "{w}");
    }
}

/// A plugin that asks for the window's summaries over and over, never
/// returning, is ended at its deadline like one that spins (the host's work
/// for each ask is short, and the epoch reaches the plugin between asks),
/// while drift and validity ask for the same summaries beside it.
#[test]
fn a_plugin_that_hammers_the_window_summaries_ends_at_its_deadline() {
    let s = Sandbox::with_bundled();
    s.add_plugin(&fault_plugin("summaries"));
    s.write("plugins/summaries.toml", "timeout_ms = 300\n[config]\nhammer = true\n");
    // Compiled first, so the peak below is the run's, not the compiler's.
    s.run(&["check"]).assert_ok();
    let data = s.generate("clean.jsonl", 8_000, &[]);
    let run = s.run_within(&["--source", data.to_str().unwrap(), "--window", "1000", "--format", "json"], HANG);
    run.assert_ok();
    let summary = run.summary();
    assert_eq!(summary["windows"], 8);
    let hammer = plugin(&summary, "summaries");
    assert_eq!((hammer["status"].as_str(), hammer["errors"].as_u64()), (Some("quarantined"), Some(3)), "{hammer}");
    assert!(hammer["call_p99_us"].as_u64().unwrap() < 2_000_000, "{hammer}");
    assert!(quarantine_message(&run, "summaries").contains("timed out after 300 ms"));
    for name in BUNDLED {
        assert_eq!((plugin(&summary, name)["calls"].as_u64(), plugin(&summary, name)["errors"].as_u64()), (Some(8), Some(0)), "{name}");
    }
    // What it was handed over and over was freed as it went.
    assert!(summary["peak_rss_mib"].as_f64().unwrap() < 200.0, "{summary}");
}

/// A detector whose `projection` export is not the contract's, and a
/// component that exports nothing of it, are refused by name with what is
/// wrong, not loaded and handed whole windows or taken for something else.
#[test]
fn exports_not_the_contracts_are_refused() {
    let s = Sandbox::empty();
    let refused = |plugin: &str, why: &str| {
        let run = s.run(&["check"]);
        assert_eq!(run.code, Some(1), "{}", run.stderr);
        assert!(run.stderr.contains(&format!("{plugin} is not a usable component: {why}")), "expected {why:?} in {}", run.stderr);
        std::fs::remove_file(s.plugins().join(plugin)).unwrap();
    };
    s.add_plugin(&fault_plugin("bad_projection"));
    refused(
        "bad_projection.wasm",
        "its projection export is not the contract's: instance export `clean-host:plugin/projection@0.1.2` does not have export `what-it-reads`",
    );
    // An empty component: the binary header and nothing else.
    s.write("plugins/empty.wasm", b"\0asm\x0d\0\x01\0");
    refused("empty.wasm", "exports neither a detector (clean-host:plugin/detector) nor an alert handler (clean-host:plugin/alert-handler)");
}

/// One record stamped in the year 9999 (or at the ends of i64) cannot stop
/// an event-time partition: bad times are dead letters, the rest is analysed.
#[test]
fn bad_event_times_are_dead_letters_not_clocks() {
    let s = Sandbox::with_bundled();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let mut lines: Vec<String> = (0..30_000i64).map(|i| format!(r#"{{"ts": {}, "v": {}}}"#, now - 7_200_000 + i * 200, i % 10)).collect();
    lines[15_000] = r#"{"ts": "9999-12-31T23:59:59Z", "v": 1}"#.into();
    lines[15_001] = r#"{"ts": 9223372036854775807, "v": 1}"#.into();
    lines[15_002] = r#"{"ts": 1e300, "v": 1}"#.into();
    lines[15_003] = r#"{"ts": -5, "v": 1}"#.into();
    // Within the hour allowed ahead: they wait in their own window.
    lines[20_000] = format!(r#"{{"ts": {}, "v": 1}}"#, now + 50 * 60_000);
    s.write("events.jsonl", lines.join("\n"));
    let config = s.write(
        "events.toml",
        "[[pipelines]]\nname = 'events'\nsource = 'events.jsonl'\nevent_time_field = 'ts'\n[pipelines.window]\nkind = 'event-time'\nduration_ms = 60000\n",
    );
    let run = s.run_within(&["--config", config.to_str().unwrap(), "--format", "json"], HANG);
    run.assert_ok();
    let summary = run.summary();
    assert_eq!(
        (summary["records"].as_u64(), summary["late_records"].as_u64(), summary["dead_letters"].as_u64()),
        (Some(29_996), Some(0), Some(4)),
        "{summary}"
    );
    let dead = std::fs::read_to_string(s.path("data/dead-letters.jsonl")).unwrap();
    assert_eq!(dead.matches("ahead of the host clock").count(), 3, "{dead}");
    assert_eq!(dead.matches("before 2000-01-01T00:00:00.000Z").count(), 1, "{dead}");
}

/// Records that keep bringing new field names stop growing the pipeline at
/// `max_fields`: the rest are dead letters that say why.
#[test]
fn distinct_field_names_are_capped() {
    let s = Sandbox::with_bundled();
    let lines: Vec<String> = (0..5_000).map(|i| format!(r#"{{"v": 1, "field_{i}": {i}}}"#)).collect();
    s.write("fields.jsonl", lines.join("\n"));
    let config = s.write("fields.toml", "[[pipelines]]\nname = 'fields'\nsource = 'fields.jsonl'\nmax_fields = 2000\n");
    let run = s.run_within(&["--config", config.to_str().unwrap(), "--format", "json"], HANG);
    run.assert_ok();
    let summary = run.summary();
    assert_eq!((summary["records"].as_u64(), summary["dead_letters"].as_u64()), (Some(1_999), Some(3_001)), "{summary}");
    let dead = std::fs::read_to_string(s.path("data/dead-letters.jsonl")).unwrap();
    assert_eq!(dead.matches("already has 2000 distinct field names (max_fields)").count(), 3_001);
}

/// The compiled plugins in a cache folder (`DIR/cache`).
fn cached_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let files = std::fs::read_dir(dir.join("cache"));
    files.map(|d| d.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "cwasm")).collect()).unwrap_or_default()
}

/// A run of the sandbox's plugins over `data` with `data_dir`, under
/// [`HANG`], without the plugin cache the tests share: the data dir's own,
/// unless `more` names one.
fn run_own_cache(s: &Sandbox, data: &Path, data_dir: &str, more: &[&std::ffi::OsStr]) -> Run {
    let mut command = Command::new(binary());
    command.env_remove("CLEAN_HOST_PLUGIN_CACHE").arg("--source").arg(data).args(["--format", "json", "--plugins"]).arg(s.plugins());
    command.arg("--data-dir").arg(s.path(data_dir)).args(more);
    s.run_command_within(command, HANG)
}

/// Compiled plugins are native code: a cached file is used only with this
/// host's tag, made with a key only its user can read. A good file only
/// this user can write is mapped where it lies, any other is read.
/// (Files of other users, and other filesystems, need root to make.)
#[test]
fn a_tampered_compile_cache_is_compiled_again_not_loaded() {
    use std::os::unix::fs::PermissionsExt;
    let s = Sandbox::empty();
    s.add_plugin(&bundled("volume"));
    s.add_plugin(&bundled("schema"));
    let data = s.generate("clean.jsonl", 3_000, &[]);
    let start = || {
        let run = run_own_cache(&s, &data, "data", &["--log-level".as_ref(), "info,clean_host_runtime=debug".as_ref()]);
        run.assert_ok();
        assert_eq!(run.summary()["windows"], 3);
        run.stderr
    };
    start();
    let mut cached = cached_files(&s.path("data"));
    cached.sort();
    assert_eq!(cached.len(), 2);
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.path("data/cache.key")), 0o600);
    // Only its user may write it: it is mapped where it lies.
    assert!(cached.iter().all(|c| mode(c) == 0o600));
    let mapped = start();
    assert_eq!(mapped.matches(" mapped").count(), 2, "{mapped}");
    let good: Vec<Vec<u8>> = cached.iter().map(|c| std::fs::read(c).unwrap()).collect();
    let (file, good_bytes) = (&cached[0], &good[0]);
    let tampered = |change: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = good_bytes.clone();
        change(&mut bytes);
        bytes
    };
    let middle = good_bytes.len() / 2;
    let cases = [
        ("code flipped", tampered(&|b| b[middle..middle + 64].iter_mut().for_each(|b| *b ^= 0xff)), 0o600),
        ("tag flipped", tampered(&|b| *b.last_mut().unwrap() ^= 1), 0o600),
        ("cut short", tampered(&|b| b.truncate(middle)), 0o600),
        ("bytes added", tampered(&|b| b.extend_from_slice(b"more")), 0o600),
        // Nothing before a tag's 32 bytes: none to map, read and refused.
        ("only a tag", tampered(&|b| _ = b.drain(..b.len() - 32)), 0o600),
        ("code flipped, group-writable", tampered(&|b| b[middle..middle + 64].iter_mut().for_each(|b| *b ^= 0xff)), 0o664),
    ];
    for (what, bytes, file_mode) in cases {
        std::fs::write(file, &bytes).unwrap();
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(file_mode)).unwrap();
        let run = start();
        assert_eq!(run.matches("does not carry this host's tag; compiling the plugin again").count(), 1, "{what}: {run}");
        // The file was written anew, with a good tag: the next start maps it quietly.
        assert_eq!(std::fs::read(file).unwrap(), *good_bytes, "{what}");
        let run = start();
        assert!(!run.contains("does not carry") && run.matches(" mapped").count() == 2, "{what}: {run}");
    }
    // Shorter than a tag, a link to a good file, a FIFO: not read at all, compiled again.
    let elsewhere = s.path("good.cwasm");
    std::fs::write(&elsewhere, good_bytes).unwrap();
    let replacements: [(&str, &dyn Fn()); 3] = [
        ("shorter than a tag", &|| std::fs::write(file, &good_bytes[..20]).unwrap()),
        ("a link", &|| std::os::unix::fs::symlink(&elsewhere, file).unwrap()),
        ("a FIFO", &|| assert!(Command::new("mkfifo").arg(file).status().unwrap().success())),
    ];
    for (what, replace) in replacements {
        std::fs::remove_file(file).unwrap();
        replace();
        start();
        assert!(std::fs::symlink_metadata(file).unwrap().is_file(), "{what}");
        assert_eq!(std::fs::read(file).unwrap(), *good_bytes, "{what}");
    }
    // A tag is of its own file's name: two good files swapped do not verify.
    std::fs::write(&cached[0], &good[1]).unwrap();
    std::fs::write(&cached[1], &good[0]).unwrap();
    let run = start();
    assert_eq!(run.matches("does not carry this host's tag").count(), 2, "{run}");
    assert!(cached.iter().zip(&good).all(|(c, g)| std::fs::read(c).unwrap() == *g));
    // A good file its group may write is read and copied, not mapped: it still loads.
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o664)).unwrap();
    let run = start();
    assert!(!run.contains("does not carry") && run.contains(&format!("{} read", file.display())), "{run}");
    assert_eq!(mode(file), 0o664, "loaded, not compiled and written again");
    // A key others may read is no key: no cache at all.
    std::fs::set_permissions(s.path("data/cache.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = start();
    assert!(run.contains("compiled plugins are not cached") && run.contains("mode 0600"), "{run}");
}

/// Hosts that share a plugin cache (`--plugin-cache`) compile a plugin
/// once between them, each with its data dir's own key for its seeds; the
/// shared folder's key is held to the same rules as a data dir's.
#[test]
fn a_shared_plugin_cache_is_compiled_once_and_each_data_dir_keeps_its_key() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let s = Sandbox::empty();
    s.add_plugin(&bundled("volume"));
    let data = s.generate("clean.jsonl", 3_000, &[]);
    let shared = s.path("shared");
    let run = |data_dir: &str| {
        let run = run_own_cache(&s, &data, data_dir, &["--plugin-cache".as_ref(), shared.as_os_str()]);
        run.assert_ok();
        run.stderr
    };
    run("a");
    let compiled = cached_files(&shared);
    assert_eq!(compiled.len(), 1, "{compiled:?}");
    let inode = || std::fs::metadata(&compiled[0]).unwrap().ino();
    let first = inode();
    assert_eq!(std::fs::metadata(shared.join("cache.key")).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(cached_files(&s.path("a")).is_empty(), "compiled into the data dir too");
    let second = run("b");
    assert!(!second.contains("not cached") && !second.contains("hash seeds"), "{second}");
    // Loaded, not compiled and written again.
    assert_eq!(inode(), first);
    let key = |dir: &str| std::fs::read(s.path(dir).join("cache.key")).unwrap();
    assert_ne!(key("a"), key("b"), "each data dir seeds its plugins with its own key");
    assert_ne!(key("a"), std::fs::read(shared.join("cache.key")).unwrap());
    // A shared key others may read caches nothing, and costs the seeds nothing.
    std::fs::set_permissions(shared.join("cache.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = run("a");
    assert!(refused.contains("compiled plugins are not cached") && refused.contains("mode 0600"), "{refused}");
    assert!(!refused.contains("hash seeds"), "{refused}");
    // Nor is a link to a good key (a data dir's) followed: the link itself is refused.
    std::fs::remove_file(shared.join("cache.key")).unwrap();
    std::os::unix::fs::symlink(s.path("b/cache.key"), shared.join("cache.key")).unwrap();
    let linked = run("a");
    assert!(linked.contains("compiled plugins are not cached") && linked.contains("symbolic links"), "{linked}");
    assert!(!linked.contains("hash seeds"), "{linked}");
    assert_eq!(inode(), first, "nothing compiled into the shared folder");
}

/// A new file whose plugin has the name of a running one is rejected on
/// reload, as it is at start; the running one goes on.
#[test]
fn a_reload_cannot_add_a_second_plugin_of_the_same_name() {
    let s = Sandbox::empty();
    s.add_plugin(&bundled("volume"));
    let child = spawn_endless(&s, 1000);
    wait_until("the history", HANG, || s.path("data/history.db").exists());
    std::thread::sleep(Duration::from_secs(1));
    std::fs::copy(bundled("volume"), s.plugins().join("volume.wasm.tmp")).unwrap();
    std::fs::rename(s.plugins().join("volume.wasm.tmp"), s.plugins().join("volume-copy.wasm")).unwrap();
    wait_until("the rejected reload", HANG, || stderr_log(&s).contains("reload rejected"));
    let summary = stop(child, &s, "INT");
    let stderr = stderr_log(&s);
    assert!(stderr.contains("two plugins are named 'volume'"), "{stderr}");
    assert_eq!(summary["tenants"][0]["rejected_reloads"], 1, "{summary}");
    let volume: Vec<&Value> = summary["plugins"].as_array().unwrap().iter().filter(|p| p["name"] == "volume").collect();
    assert_eq!(volume.len(), 1, "{summary}");
    assert_eq!(volume[0]["errors"], 0);
    assert_eq!(volume[0]["calls"], summary["windows"]);
    assert!(Path::new(&s.plugins().join("volume-copy.wasm")).exists());
}
