//! Deliberately broken plugins: each is contained, reported, quarantined,
//! and the other detectors keep analysing every window.

use clean_host_tests::{fault_plugin, plugin, Sandbox, BUNDLED};

#[test]
fn broken_plugins_are_quarantined_and_the_rest_keep_going() {
    let s = Sandbox::with_bundled();
    for name in ["spin", "memory_bomb", "panic", "bad_row", "panic_once"] {
        s.add_plugin(&fault_plugin(name));
    }
    // Manifests beside the plugins tighten their limits (and keep the test fast).
    std::fs::write(s.plugins().join("spin.toml"), "timeout_ms = 100\n").unwrap();
    std::fs::write(s.plugins().join("memory_bomb.toml"), "memory_mib = 32\n").unwrap();
    let data = s.generate("clean.jsonl", 12_000, &[]);
    let run = s.run(&["--source", data.to_str().unwrap(), "--window", "1000", "--format", "json"]);
    run.assert_ok();
    let summary = run.summary();
    assert_eq!(summary["windows"], 12);

    for (name, fault) in [
        ("spin", "timed out after 100 ms"),
        ("memory-bomb", "exceeded its memory limit of 32 MiB"),
        ("panic", "trapped"),
        ("bad-row", "names row 1005 of a 1000-row window"),
    ] {
        let p = plugin(&summary, name);
        assert_eq!((p["status"].as_str(), p["calls"].as_u64(), p["errors"].as_u64()), (Some("quarantined"), Some(3), Some(3)), "{p}");
        let quarantine = run
            .alerts()
            .into_iter()
            .find(|a| a["detector"] == name && a["metric"] == "plugin_quarantined")
            .unwrap_or_else(|| panic!("no quarantine alert for {name}: {}", run.stdout));
        assert_eq!(quarantine["severity"], "critical");
        assert!(quarantine["message"].as_str().unwrap().contains(fault), "{quarantine}");
    }
    // Trapped instances are rebuilt; a plugin that failed once recovers.
    let once = plugin(&summary, "panic-once");
    assert_eq!(
        (once["status"].as_str(), once["calls"].as_u64(), once["errors"].as_u64(), once["rebuilds"].as_u64()),
        (Some("active"), Some(12), Some(1), Some(1))
    );
    // The panic message reached the host's log.
    assert!(run.stderr.contains("window 0 is too much for me"), "{}", run.stderr);
    for name in BUNDLED {
        let p = plugin(&summary, name);
        assert_eq!((p["calls"].as_u64(), p["errors"].as_u64()), (Some(12), Some(0)), "{p}");
    }
    // No data alert: the faults are the plugins', not the data's.
    let data_alerts: Vec<_> = run.alerts().into_iter().filter(|a| !a["metric"].as_str().unwrap().starts_with("plugin_")).collect();
    assert!(data_alerts.is_empty(), "{data_alerts:?}");
}

#[test]
fn faults_do_not_hide_data_problems_found_by_the_others() {
    let s = Sandbox::with_bundled();
    s.add_plugin(&fault_plugin("panic"));
    let data = s.generate("nulls.jsonl", 20_000, &["nulls@15000+1000"]);
    let run = s.run(&["--source", data.to_str().unwrap(), "--format", "json"]);
    run.assert_ok();
    assert!(run.alert_keys().iter().any(|(w, d, m)| *w == 15 && d == "completeness" && m == "null_rate"), "{}", run.stdout);
}

/// Plugins that try to get out or to swamp the host: files, environment,
/// sockets and the clock are denied; endless recursion traps; a gigantic
/// answer is rejected. The bundled detectors analyse every window meanwhile.
#[test]
fn hostile_plugins_get_nothing_and_are_contained() {
    let s = Sandbox::with_bundled();
    for name in ["snoop", "recurse", "flood"] {
        s.add_plugin(&fault_plugin(name));
    }
    let data = s.generate("clean.jsonl", 5_000, &[]);
    let run = s.run(&["--source", data.to_str().unwrap(), "--format", "json"]);
    run.assert_ok();
    let summary = run.summary();
    let snoop_lines: Vec<&str> = run.stderr.lines().filter(|l| l.contains("snoop: ")).collect();
    assert_eq!(snoop_lines.len(), 5, "{}", run.stderr);
    for line in &snoop_lines {
        assert!(!line.contains("ESCAPED"), "the sandbox leaked: {line}");
        assert!(line.contains("env vars 0; args 0") && line.contains("clock 0"), "{line}");
    }
    let snoop = plugin(&summary, "snoop");
    assert_eq!((snoop["status"].as_str(), snoop["errors"].as_u64()), (Some("active"), Some(0)), "{snoop}");
    for (name, fault) in [("recurse", "trapped"), ("flood", "findings")] {
        let p = plugin(&summary, name);
        assert_eq!(p["status"], "quarantined", "{p}");
        let alert = run.alerts().into_iter().find(|a| a["detector"] == name && a["metric"] == "plugin_quarantined");
        let alert = alert.unwrap_or_else(|| panic!("no quarantine alert for {name}: {}", run.stdout));
        assert!(alert["message"].as_str().unwrap().contains(fault), "{alert}");
    }
    for name in BUNDLED {
        assert_eq!(plugin(&summary, name)["calls"], 5);
    }
}
