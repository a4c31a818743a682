//! Helpers for the tests against real brokers (`scripts/brokers start`):
//! their addresses, producing with `clean-host generate --sink`, running the
//! host in the background and reading its window log.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{host_command, root, waited, Run, Sandbox};

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
    let out = host_command().args(&args).current_dir(s.dir.path()).output().expect("run generate");
    assert!(out.status.success(), "generate --sink {url} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Each line of `path` as a record produced to `url` (one partition).
pub fn produce_file(url: &str, path: &Path) {
    let mut sink = clean_host_stream::source::open_sink(url, &Default::default(), 1).unwrap_or_else(|e| panic!("a sink to {url}: {e}"));
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for line in text.lines() {
        sink.send("", line.as_bytes()).unwrap_or_else(|e| panic!("producing to {url}: {e}"));
    }
    sink.flush().unwrap_or_else(|e| panic!("producing to {url}: {e}"));
}

/// The window log's entries (a line still being written is left out).
pub fn windows(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_inclusive('\n').filter(|l| l.ends_with('\n')).map(|l| serde_json::from_str(l).expect("window log line is JSON")).collect()
}

pub fn records(ws: &[Value]) -> u64 {
    ws.iter().map(|w| w["records"].as_u64().unwrap()).sum()
}

/// A host running in the background (see [`spawn`]). Dropped, it is killed,
/// so a failed test leaves no process behind.
pub struct Host {
    child: Child,
    stderr: PathBuf,
}

impl Host {
    /// Waits for `done`; on time-out the panic shows the end of the host's log.
    pub fn wait_until(&self, what: &str, timeout: Duration, done: impl FnMut() -> bool) {
        wait_for_hosts(&[self], what, timeout, done);
    }

    /// SIGINT, as an operator's Ctrl-C: the host drains and must exit cleanly.
    pub fn interrupt(self) {
        interrupt_all(vec![self]);
    }

    /// Waits for it to end by itself (a bounded run); panics, with its log, unless it succeeded.
    pub fn finish(mut self) {
        let status = self.child.wait().expect("reap the host");
        assert!(status.success(), "the host exited with {status}:\n{}", self.log());
    }

    /// SIGKILL: a crash.
    pub fn kill(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap the host");
    }

    /// The host's stderr so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// Waits for `done`; on time-out the panic shows the end of each host's log.
pub fn wait_for_hosts(hosts: &[&Host], what: &str, timeout: Duration, done: impl FnMut() -> bool) {
    if !waited(timeout, done) {
        let tails: Vec<String> = hosts
            .iter()
            .map(|h| {
                let log = h.log();
                let lines: Vec<&str> = log.lines().collect();
                format!("{}:\n{}", h.stderr.display(), lines[lines.len().saturating_sub(40)..].join("\n"))
            })
            .collect();
        panic!("timed out waiting for {what}; the hosts' logs end with:\n{}", tails.join("\n"));
    }
}

/// SIGINT to every host at once (one leaving first would hand its partitions
/// to the others mid-shutdown), then each must exit cleanly.
pub fn interrupt_all(mut hosts: Vec<Host>) {
    for host in &hosts {
        Command::new("kill").args(["-INT", &host.child.id().to_string()]).status().expect("kill -INT");
    }
    for host in &mut hosts {
        let status = host.child.wait().expect("reap the host");
        assert!(status.success(), "the host exited with {status}:\n{}", host.log());
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the host in the background with 500-record windows, writing its
/// window log to `log` (its stderr to `log.stderr`) and keeping its data in
/// `data`.
pub fn spawn(s: &Sandbox, source: &str, log: &str, data: &str) -> Host {
    spawn_windows(s, source, log, data, 500)
}

/// [`spawn`] with windows of `window` records.
pub fn spawn_windows(s: &Sandbox, source: &str, log: &str, data: &str, window: u64) -> Host {
    spawn_with(s, source, log, data, window, &[])
}

/// [`spawn_windows`] with more arguments.
pub fn spawn_with(s: &Sandbox, source: &str, log: &str, data: &str, window: u64, more: &[&str]) -> Host {
    let stderr = s.path(&format!("{log}.stderr"));
    let child = host_command()
        .args(["--source", source, "--quiet", "--format", "json", "--window", &window.to_string(), "--windows-file"])
        .arg(s.path(log))
        .args(more)
        .arg("--plugins")
        .arg(s.plugins())
        .arg("--data-dir")
        .arg(s.path(data))
        .current_dir(s.dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("start clean-host");
    Host { child, stderr }
}

/// A bounded run of `source` with every bundled detector.
pub fn until_end(s: &Sandbox, source: &str, log: &str) -> Run {
    let log = s.path(log);
    let run = s.run(&["--source", source, "--until-end", "--format", "json", "--windows-file", log.to_str().unwrap()]);
    run.assert_ok();
    run
}
