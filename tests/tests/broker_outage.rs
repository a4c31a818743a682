//! A real broker goes down mid-run and comes back on the same address
//! (`scripts/brokers restart`). Its own test binary: cargo runs test
//! binaries one after another, so no other broker test runs meanwhile.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use clean_host_tests::brokers::*;
use clean_host_tests::{root, Sandbox};
use serde_json::Value;

#[test]
fn kafka_restart_mid_run_reconnects_and_loses_nothing() {
    let s = Sandbox::with_bundled();
    s.run(&["check"]).assert_ok();
    let topic = fresh("outage");
    let source = format!("{}/{topic}?group=outage", kafka());
    produce(&s, &source, 20_000, &[], 1);
    let host = spawn(&s, &source, "w.jsonl", "data");
    host.wait_until("a few analysed windows", Duration::from_secs(60), || windows(&s.path("w.jsonl")).len() >= 4);
    let restart = Command::new(root().join("scripts/brokers")).args(["restart", "kafka"]).output().expect("scripts/brokers");
    assert!(restart.status.success(), "{}", String::from_utf8_lossy(&restart.stderr));
    produce(&s, &source, 20_000, &[], 1);
    let covered = || {
        let mut offsets = BTreeSet::new();
        for w in windows(&s.path("w.jsonl")) {
            offsets.extend(w["first_offset"].as_u64().unwrap()..=w["last_offset"].as_u64().unwrap());
        }
        offsets
    };
    host.wait_until("every record", Duration::from_secs(120), || covered().len() >= 39_500);
    std::thread::sleep(Duration::from_secs(1));
    host.interrupt();
    let offsets = covered();
    assert_eq!(offsets.len(), 40_000, "records lost across the restart");
    assert_eq!(offsets.last(), Some(&39_999));
    let log = std::fs::read_to_string(s.path("w.jsonl.stderr")).unwrap();
    let summary: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert!(summary["broker_errors"].as_u64().unwrap() > 0, "the outage is not counted:\n{log}");
}
