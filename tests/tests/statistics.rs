//! Statistics over time through the real binary: distribution drift, control
//! rules on window metrics, and the confidence of small windows. The series
//! with known answers for each rule are in `crates/quality/src/spc/tests.rs`.

use clean_host_tests::{Sandbox, BUNDLED};
use serde_json::Value;

/// The alerts of a run of the embedded generator through every bundled detector.
fn generate(records: u64, window: u64, inject: Option<&str>) -> Vec<Value> {
    run(records, window, inject).0
}

/// Its alerts and summary.
fn run(records: u64, window: u64, inject: Option<&str>) -> (Vec<Value>, Value) {
    let s = Sandbox::with_bundled();
    let (records, window) = (records.to_string(), window.to_string());
    let mut args = vec!["--records", &records, "--window", &window, "--format", "json", "--quiet"];
    if let Some(fault) = inject {
        args.extend(["--inject", fault]);
    }
    let run = s.run(&args);
    run.assert_ok();
    assert_eq!(run.summary()["plugins"].as_array().unwrap().len(), BUNDLED.len());
    (run.alerts(), run.summary())
}

fn key(a: &Value) -> (u64, &str, &str, &str, Option<&str>) {
    let text = |k: &str| a[k].as_str().unwrap_or_default();
    (a["window"]["seq"].as_u64().unwrap(), text("detector"), text("metric"), text("column"), a["rule"].as_str())
}

#[test]
fn stationary_data_raises_no_alert_over_1000_windows() {
    let (alerts, summary) = run(1_000_000, 1000, None);
    assert_eq!(alerts, Vec::<Value>::new(), "drift, control rules and all detectors stay quiet on clean data");
    // The rules did watch: email's null rate, the one default series that
    // varies on clean data (the duplicate rate and the quality score stay
    // constant through warm-up, so they are not watched).
    let watched = summary["pipelines"][0]["watched_series"].as_u64().unwrap();
    assert_eq!(watched, 1, "{summary}");
}

#[test]
fn a_slow_creep_is_caught_by_a_control_rule_and_by_no_per_window_check() {
    // The email null rate climbs from 1% to 3% over windows 150..200.
    let alerts = generate(230_000, 1000, Some("creep@150000+50000"));
    let keys: Vec<_> = alerts.iter().map(key).collect();
    assert!(!keys.is_empty(), "the creep went unnoticed");
    for (seq, detector, metric, column, rule) in &keys {
        assert_eq!((*detector, *metric, *column), ("completeness", "null_rate", "email"), "{keys:?}");
        assert!(rule.is_some_and(|r| r == "ewma" || r == "cusum"), "a per-window check fired: {keys:?}");
        assert!((150..210).contains(seq), "{keys:?}");
    }
    let first = &alerts[0];
    let message = first["message"].as_str().unwrap();
    assert!(message.contains(&format!("[{}]", first["rule"].as_str().unwrap())) && message.contains("usual 0.01"), "{message}");
}

#[test]
fn a_moved_distribution_is_caught_in_its_window() {
    // Drift judges once its reference (10 windows) and how much its statistics
    // move by themselves (20 more) are known.
    let alerts = generate(60_000, 1000, Some("drift@40000+1000"));
    let keys: Vec<_> = alerts.iter().map(key).collect();
    // The outlier detector may see the larger amounts too; nothing alerts outside the window.
    assert!(keys.iter().all(|k| k.0 == 40), "{keys:?}");
    let drift = alerts.iter().find(|a| key(a) == (40, "drift", "psi", "amount", None)).expect("no drift alert on amount");
    let message = drift["message"].as_str().unwrap();
    assert!(message.contains("KS distance") && message.contains("over 1000 values against"), "{message}");
    assert_eq!(drift["low_confidence"], false);
}

/// A finding on a window under `alerts.min_rows` rows is not sure: it lowers
/// the score and stays in the window log, and pages no one unless
/// `alert_low_confidence` asks; then it says it is low-confidence.
#[test]
fn unsure_findings_on_small_windows_page_only_when_asked() {
    for (window, asked, alerted, low_confidence) in [(10, false, false, true), (10, true, true, true), (1000, false, true, false)] {
        let s = Sandbox::with_bundled();
        let config = s.write("c.toml", format!("[alerts]\nalert_low_confidence = {asked}\n"));
        let (records, at) = ((100 * window).to_string(), 50 * window);
        let fault = format!("schema@{at}+{window}");
        let windows = s.path("windows.jsonl");
        let args = ["--records", &records, "--window", &window.to_string(), "--format", "json", "--quiet", "--inject", &fault];
        let run = s.run(&[&args[..], &["--config", config.to_str().unwrap(), "--windows-file", windows.to_str().unwrap()]].concat());
        run.assert_ok();
        let vanished = run.alerts().into_iter().find(|a| a["metric"] == "vanished_field");
        assert_eq!(vanished.is_some(), alerted, "window {window}, asked {asked}: {}", run.stdout);
        let logged = std::fs::read_to_string(&windows).unwrap();
        assert!(logged.contains("vanished_field"), "the finding is kept either way");
        if let Some(vanished) = vanished {
            assert_eq!(vanished["low_confidence"], low_confidence, "{vanished}");
            let message = vanished["message"].as_str().unwrap();
            assert_eq!(message.contains(&format!("low confidence: {window} rows")), low_confidence, "{message}");
        }
        let unsure = run.summary()["pipelines"][0]["unsure_findings"].as_u64().unwrap();
        assert_eq!(unsure > 0, !alerted, "window {window}, asked {asked}");
    }
}

#[test]
fn control_rules_keep_their_baselines_across_a_restart() {
    let s = Sandbox::with_bundled();
    let args = |records: &'static str| vec!["--records", records, "--window", "1000", "--format", "json", "--quiet"];
    // The first run learns the baselines; the history keeps its windows.
    s.run(&args("150000")).assert_ok();
    // The second starts with a creep, well inside what would be a new warm-up of 100 windows.
    let mut second = args("80000");
    second.extend(["--inject", "creep@10000+50000"]);
    let run = s.run(&second);
    run.assert_ok();
    assert!(run.stderr.contains("control rules picked up 150 windows from the history"), "{}", run.stderr);
    let alerts = run.alerts();
    let keys: Vec<_> = alerts.iter().map(key).collect();
    assert!(
        keys.iter().any(|k| (k.1, k.2, k.3) == ("completeness", "null_rate", "email") && k.4.is_some() && k.0 < 70),
        "the creep went unnoticed after the restart: {keys:?}"
    );
}
