//! Detectors written in other languages than Rust, built by
//! `scripts/build-polyglot` and loaded like any other plugin: each finds the
//! fault it is made for, in its window only, and nothing in clean data. A C
//! detector that writes out of bounds is contained like any other.

use std::process::Command;
use std::time::Duration;

use clean_host_tests::{c_fault_plugin, extra, host_command, plugin, root, wait_until, Sandbox, BUNDLED};

/// (window, detector, metric, column) of every alert of a run over 30 windows with `inject`.
fn alerts_with(detector: &str, inject: Option<&str>) -> (Vec<(u64, String, String, String)>, serde_json::Value) {
    alerts_configured(detector, inject, "")
}

/// The same, with `config` (TOML) as the detector's config.
fn alerts_configured(detector: &str, inject: Option<&str>, config: &str) -> (Vec<(u64, String, String, String)>, serde_json::Value) {
    let s = Sandbox::empty();
    s.add_plugin(&extra(detector));
    s.write(
        "c.toml",
        format!("[[pipelines]]\nname = 'default'\nsource = 'generator'\nevent_time_field = 'ts'\n[pipelines.detector_config.{detector}]\n{config}\n"),
    );
    let mut args = vec!["--config", "c.toml", "--records", "30000", "--window", "1000", "--format", "json", "--quiet"];
    if let Some(fault) = inject {
        args.extend(["--inject", fault]);
    }
    let run = s.run(&args);
    run.assert_ok();
    let alerts = run
        .alerts()
        .iter()
        .map(|a| {
            let text = |k: &str| a[k].as_str().unwrap_or_default().to_string();
            (a["window"]["seq"].as_u64().unwrap(), text("detector"), text("metric"), text("column"))
        })
        .collect();
    (alerts, run.summary())
}

#[test]
fn python_drift_detector_finds_a_moved_distribution() {
    let (alerts, summary) = alerts_with("drift", Some("drift@20000+5000"));
    // The first drifted window alerts; the cooldown keeps the next four quiet.
    assert_eq!(alerts, [(20, "drift".into(), "psi".into(), "amount".into())], "{summary}");
    let drift = plugin(&summary, "drift");
    assert_eq!((drift["status"].as_str(), drift["calls"].as_u64(), drift["errors"].as_u64()), (Some("active"), Some(30), Some(0)));
    let (clean, _) = alerts_with("drift", None);
    assert!(clean.is_empty(), "{clean:?}");
    // A fault of another kind is not drift.
    let (nulls, _) = alerts_with("drift", Some("nulls@20000+1000"));
    assert!(nulls.is_empty(), "{nulls:?}");
    // Its config holds for every call (state kept at module level, not per call object).
    let (lenient, _) = alerts_configured("drift", Some("drift@20000+5000"), "psi_threshold = 5.0");
    assert!(lenient.is_empty(), "{lenient:?}");
}

#[test]
fn javascript_formats_detector_finds_broken_emails() {
    let (alerts, summary) = alerts_with("formats", Some("bad-formats@20000+1000"));
    assert_eq!(alerts, [(20, "formats".into(), "format_violation_rate".into(), "email".into())], "{summary}");
    let formats = plugin(&summary, "formats");
    assert_eq!((formats["status"].as_str(), formats["calls"].as_u64(), formats["errors"].as_u64()), (Some("active"), Some(30), Some(0)));
    let (clean, _) = alerts_with("formats", None);
    assert!(clean.is_empty(), "{clean:?}");
}

#[test]
fn c_cardinality_detector_finds_a_stuck_key() {
    // A default id in most rows: the user id and the email made from it
    // (two findings, which also sink the window's quality score).
    let (alerts, summary) = alerts_with("cardinality", Some("stuck-key@20000+1000"));
    let mut found: Vec<_> = alerts.iter().filter(|a| a.1 == "cardinality").cloned().collect();
    found.sort();
    let expected = ["email", "user_id"].map(|c| (20, "cardinality".to_string(), "distinct_share".to_string(), c.to_string()));
    assert_eq!(found, expected, "{summary}");
    assert!(alerts.iter().all(|a| a.0 == 20), "{alerts:?}");
    let cardinality = plugin(&summary, "cardinality");
    assert_eq!((cardinality["status"].as_str(), cardinality["calls"].as_u64(), cardinality["errors"].as_u64()), (Some("active"), Some(30), Some(0)));
    let (clean, _) = alerts_with("cardinality", None);
    assert!(clean.is_empty(), "{clean:?}");
    // Faults of other kinds are not this detector's.
    for fault in ["nulls@20000+1000", "categories@20000+1000", "duplicates@20000+1000"] {
        let (other, _) = alerts_with("cardinality", Some(fault));
        assert!(other.is_empty(), "{fault}: {other:?}");
    }
    // Config reaches it: only the columns named are judged.
    let (only_email, _) = alerts_configured("cardinality", Some("stuck-key@20000+1000"), "columns = ['email']");
    let only_email: Vec<_> = only_email.into_iter().filter(|a| a.1 == "cardinality").collect();
    assert_eq!(only_email, [(20, "cardinality".into(), "distinct_share".into(), "email".into())]);
}

/// On data we did not make (fetched by bench/accuracy/datasets.py, as the
/// accuracy harness reads it): the sensor network's four motes each number
/// their readings, so a reading number's share of distinct values doubles
/// when two motes fall silent (its real incident, windows 176-188: caught)
/// and nowhere else; daily births have no key, and calendar parts that repeat.
#[test]
fn c_cardinality_detector_is_quiet_on_real_data_but_for_its_incident() {
    for (dataset, incident) in [("sensors", Some(176..=188)), ("births", None)] {
        let s = Sandbox::empty();
        s.add_plugin(&extra("cardinality"));
        let path = s.path(&format!("{dataset}.jsonl"));
        let script = "import sys\nsys.path.insert(0, sys.argv[1])\nimport datasets\nds = datasets.ALL[sys.argv[2]]()\n\
                      datasets.write_jsonl(ds.rows, sys.argv[3])\nprint(ds.window, ds.event_time)\n";
        let out = Command::new("python3").args(["-c", script]).arg(root().join("bench/accuracy")).arg(dataset).arg(&path).output().unwrap();
        assert!(out.status.success(), "writing {dataset}: {}", String::from_utf8_lossy(&out.stderr));
        let shape = String::from_utf8_lossy(&out.stdout);
        let (window, event_time) = shape.trim().split_once(' ').unwrap();
        let run = s.run(&["--source", path.to_str().unwrap(), "--window", window, "--event-time", event_time, "--format", "json", "--quiet"]);
        run.assert_ok();
        assert_eq!(plugin(&run.summary(), "cardinality")["errors"], 0);
        let in_incident = |a: &serde_json::Value| incident.as_ref().is_some_and(|w| w.contains(&a["window"]["seq"].as_u64().unwrap()));
        let outside: Vec<_> = run.alerts().into_iter().filter(|a| !in_incident(a)).collect();
        assert!(outside.is_empty(), "{dataset}: {outside:?}");
        let caught = run.alerts().iter().any(|a| a["detector"] == "cardinality" && in_incident(a));
        assert_eq!(caught, incident.is_some(), "{dataset}: {}", run.stdout);
    }
}

/// The header's snapshot and restore, in wasm: a new config makes the host
/// hand the running instance's state to a new one between two windows; the
/// new one judges at once (no second warm-up), so the stuck key after the
/// swap is found in its window.
#[test]
fn a_c_detector_hands_its_state_over_on_reload() {
    let s = Sandbox::empty();
    s.add_plugin(&extra("cardinality"));
    let manifest = s.plugins().join("cardinality.toml");
    std::fs::write(&manifest, "[config]\nmin_change = 0.2\n").unwrap();
    let mut host = host_command()
        .args(["--records", "40000", "--rate", "3000", "--window", "1000", "--inject", "stuck-key@30000+1000", "--quiet", "--format", "json"])
        .arg("--windows-file")
        .arg(s.path("windows.jsonl"))
        .arg("--plugins")
        .arg(s.plugins())
        .arg("--data-dir")
        .arg(s.path("data"))
        .stdout(std::fs::File::create(s.path("alerts.jsonl")).unwrap())
        .stderr(std::fs::File::create(s.path("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let windows = || std::fs::read_to_string(s.path("windows.jsonl")).map_or(0, |t| t.lines().count());
    let log = || std::fs::read_to_string(s.path("stderr.log")).unwrap_or_default();
    wait_until("12 windows", Duration::from_secs(60), || windows() >= 12);
    std::fs::write(manifest.with_extension("tmp"), "[config]\nmin_change = 0.25\n").unwrap();
    std::fs::rename(manifest.with_extension("tmp"), &manifest).unwrap();
    wait_until("the new version to take over", Duration::from_secs(30), || log().contains("state handed over"));
    let swapped_at = windows();
    assert!(host.wait().unwrap().success(), "{}", log());
    assert!(swapped_at < 30, "swapped after {swapped_at} windows, past the fault");
    let handed = log().lines().find(|l| l.contains("state handed over")).unwrap().to_string();
    assert!(!handed.contains(" 0 bytes"), "{handed}");
    let mut alerts: Vec<(u64, String)> = std::fs::read_to_string(s.path("alerts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|a| a["detector"] == "cardinality")
        .map(|a| (a["window"]["seq"].as_u64().unwrap(), a["column"].as_str().unwrap().to_string()))
        .collect();
    alerts.sort();
    assert_eq!(alerts, [(30, "email".to_string()), (30, "user_id".to_string())], "{}", log());
}

#[test]
fn a_c_detector_that_writes_out_of_bounds_traps_and_is_contained() {
    let s = Sandbox::with_bundled();
    s.add_plugin(&c_fault_plugin("wild-pointer"));
    let data = s.generate("clean.jsonl", 12_000, &[]);
    let run = s.run(&["--source", data.to_str().unwrap(), "--window", "1000", "--format", "json"]);
    run.assert_ok();
    let summary = run.summary();
    assert_eq!(summary["windows"], 12);
    let wild = plugin(&summary, "wild-pointer");
    assert_eq!((wild["status"].as_str(), wild["calls"].as_u64(), wild["errors"].as_u64()), (Some("quarantined"), Some(3), Some(3)), "{wild}");
    let quarantine = run.alerts().into_iter().find(|a| a["detector"] == "wild-pointer" && a["metric"] == "plugin_quarantined");
    let message = quarantine.unwrap_or_else(|| panic!("no quarantine alert: {}", run.stdout))["message"].as_str().unwrap().to_string();
    assert!(message.contains("trapped") && message.contains("out of bounds"), "{message}");
    // Its log line came through the helper before the write.
    assert!(run.stderr.contains("wild-pointer: writing to"), "{}", run.stderr);
    for name in BUNDLED {
        let p = plugin(&summary, name);
        assert_eq!((p["calls"].as_u64(), p["errors"].as_u64()), (Some(12), Some(0)), "{p}");
    }
}

#[test]
fn bad_config_is_rejected_in_every_language() {
    for (detector, config, needle) in [
        ("drift", "psi_treshold = 0.3", "unknown config key(s): psi_treshold"),
        ("formats", "formats = { email = 'mail' }", "unknown format 'mail'"),
        ("cardinality", "min_chnage = 0.3", "unknown config key(s): min_chnage"),
    ] {
        let s = Sandbox::empty();
        s.add_plugin(&extra(detector));
        s.write("c.toml", format!("[[pipelines]]\nname = 'p'\nsource = 'generator'\n[pipelines.detector_config.{detector}]\n{config}\n"));
        let run = s.run(&["check", "--config", "c.toml"]);
        assert_eq!(run.code, Some(1), "{}", run.stderr);
        assert!(run.stderr.contains(needle), "{}", run.stderr);
    }
}

#[test]
fn scaffolded_plugins_build_load_and_analyse() {
    let s = Sandbox::empty();
    let host = |args: &[&str]| {
        let out = clean_host_tests::host_command()
            .args(args)
            .arg("--plugins")
            .arg(s.plugins())
            .current_dir(s.dir.path())
            // Rust: reuse the bundled plugins' compiled dependencies.
            .env("CARGO_TARGET_DIR", root().join("plugins/target"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut config = String::from("[[pipelines]]\nname = 'p'\nsource = 'generator'\ngenerator = { records = 12000, inject = ['nulls@8000+1000'] }\n");
    for lang in ["rust", "python", "js", "c", "cpp"] {
        let name = format!("absent-{lang}");
        let created = host(&["plugin", "new", &name, "--lang", lang]);
        assert!(created.contains(&format!("clean-host plugin build {name}")), "{created}");
        let built = host(&["plugin", "build", &name]);
        assert!(built.contains(&format!("{name}.wasm")), "{built}");
        config += &format!("[pipelines.detector_config.{name}]\nmax_absent_share = 0.3\n");
    }
    s.write("c.toml", config);
    let run = s.run(&["--config", "c.toml", "--window", "1000", "--format", "json", "--quiet"]);
    run.assert_ok();
    let summary = run.summary();
    for lang in ["rust", "python", "js", "c", "cpp"] {
        let name = format!("absent-{lang}");
        let p = plugin(&summary, &name);
        assert_eq!((p["calls"].as_u64(), p["errors"].as_u64()), (Some(12), Some(0)), "{p}");
        // The injected nulls (40% of amount and email in window 8) pass the configured 30%.
        let mut hits: Vec<(u64, String)> = run
            .alerts()
            .iter()
            .filter(|a| a["detector"] == name.as_str())
            .map(|a| (a["window"]["seq"].as_u64().unwrap(), a["column"].as_str().unwrap().to_string()))
            .collect();
        hits.sort();
        assert_eq!(hits, [(8, "amount".to_string()), (8, "email".to_string())], "{name}");
    }
}
