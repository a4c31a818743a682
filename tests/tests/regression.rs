//! Bugs found once, kept found.

use clean_host_tests::Sandbox;

/// A field that appeared after warm-up (and was reported as new) was later
/// reported as vanished in every window once it stopped arriving.
#[test]
fn a_field_that_came_and_went_is_reported_once() {
    let s = Sandbox::with_bundled();
    let data = s.generate("schema.jsonl", 30_000, &["schema@10000+1000"]);
    let run = s.run(&["--source", data.to_str().unwrap(), "--format", "json"]);
    run.assert_ok();
    let schema: Vec<(u64, String, String)> = run.alert_keys().into_iter().filter(|k| k.1 == "schema").collect();
    assert!(schema.iter().all(|k| k.0 == 10), "{schema:?}");
    assert!(schema.iter().any(|k| k.2 == "new_field") && schema.iter().any(|k| k.2 == "vanished_field"), "{schema:?}");
}

/// 20% of records arriving 15 minutes late made the volume detector see a
/// drop in event-time rate: only freshness should speak.
#[test]
fn late_records_are_not_a_volume_drop() {
    let s = Sandbox::with_bundled();
    let data = s.generate("late.jsonl", 20_000, &["late@10000+1000"]);
    let run = s.run(&["--source", data.to_str().unwrap(), "--format", "json"]);
    run.assert_ok();
    let detectors: Vec<String> = run.alert_keys().into_iter().map(|k| k.1).collect();
    assert!(detectors.contains(&"freshness".to_string()) && !detectors.contains(&"volume".to_string()), "{detectors:?}");
}
