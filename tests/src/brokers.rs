//! Helpers for the tests against real brokers (`scripts/brokers start`):
//! their addresses, producing with `clean-host generate --sink`, running the
//! host in the background and reading its window log.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{binary, root, Run, Sandbox};

/// `KAFKA`, `PULSAR`, `REDIS` (and `PULSAR_ADMIN`) from the environment or `target/brokers/env`.
pub fn broker(name: &str) -> String {
    if let Ok(v) = std::env::var(name) {
        return v;
    }
    let env = std::fs::read_to_string(root().join("target/brokers/env")).unwrap_or_default();
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("{name} is not running: start the brokers with scripts/brokers start"))
}

pub fn kafka() -> String {
    format!("kafka://{}", broker("KAFKA"))
}
pub fn pulsar() -> String {
    format!("{}/public/default", broker("PULSAR"))
}
pub fn redis() -> String {
    broker("REDIS")
}

/// A topic or stream name no other test (or earlier run) uses.
pub fn fresh(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

/// Produce `records` generated records (with `faults`) to `url`.
pub fn produce(s: &Sandbox, url: &str, records: u64, faults: &[&str], partitions: u32) {
    let mut args = vec!["generate".to_string(), "--records".into(), records.to_string(), "--sink".into(), url.into()];
    args.extend(["--partitions".to_string(), partitions.to_string()]);
    if !faults.is_empty() {
        args.extend(["--inject".to_string(), faults.join(",")]);
    }
    let out = Command::new(binary()).args(&args).current_dir(s.dir.path()).output().expect("run generate");
    assert!(out.status.success(), "generate --sink {url} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The window log's entries.
pub fn windows(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).expect("window log line is JSON")).collect()
}

pub fn records(ws: &[Value]) -> u64 {
    ws.iter().map(|w| w["records"].as_u64().unwrap()).sum()
}

/// Start the host in the background, writing its window log to `log` and
/// keeping its data in `data`.
pub fn spawn(s: &Sandbox, source: &str, log: &str, data: &str) -> Child {
    Command::new(binary())
        .args(["--source", source, "--quiet", "--format", "json", "--window", "500", "--windows-file"])
        .arg(s.path(log))
        .arg("--plugins")
        .arg(s.plugins())
        .arg("--data-dir")
        .arg(s.path(data))
        .current_dir(s.dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(s.path(&format!("{log}.stderr"))).expect("stderr file"))
        .spawn()
        .expect("start clean-host")
}

pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A bounded run of `source` with every bundled detector.
pub fn until_end(s: &Sandbox, source: &str, log: &str) -> Run {
    let log = s.path(log);
    let run = s.run(&["--source", source, "--until-end", "--format", "json", "--windows-file", log.to_str().unwrap()]);
    run.assert_ok();
    run
}
