//! The broker sources against real brokers: Kafka (KRaft), Pulsar
//! standalone and Redis, started by `scripts/brokers start` (which
//! `scripts/test` runs). A missing broker fails these tests; none is skipped.
//!
//! Records are produced with `clean-host generate --sink` (a real dataset's
//! through the stream crate's sinks), and what the host analysed is counted
//! from its window log (`--windows-file`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clean_host_stream::source::kafka::KafkaTable;
use clean_host_stream::source::pulsar::PulsarTable;
use clean_host_stream::source::{BrokerOptions, StateTable};
use clean_host_tests::brokers::*;
use clean_host_tests::{wait_until, waited_every, Sandbox};
use serde_json::Value;

/// One broker end to end: a bounded run analyses every record once and
/// alerts on the injected fault in its window; the commit holds (a second
/// run reads nothing); the bad lines are dead letters on the broker.
fn bounded_run_commits_and_dead_letters(source: &str, dead_letters: &str) {
    let s = Sandbox::with_bundled();
    produce(&s, source, 20_000, &["nulls@15000+1000", "bad-lines@17000+1000"], 1);
    let run = until_end(&s, source, "w1.jsonl");
    let summary = run.summary();
    let (analysed, dead) = (summary["records"].as_u64().unwrap(), summary["dead_letters"].as_u64().unwrap());
    assert!(dead > 0, "{summary}");
    assert_eq!(analysed + dead, 20_000, "{summary}");
    assert_eq!(records(&windows(&s.path("w1.jsonl"))), analysed);
    let alerts = run.alerts();
    let nulls: Vec<&Value> = alerts.iter().filter(|a| a["detector"] == "completeness").collect();
    assert!(!nulls.is_empty(), "no completeness alert: {alerts:?}");
    assert!(nulls.iter().all(|a| a["window"]["seq"] == 15), "completeness alert outside the faulty window: {nulls:?}");
    let again = until_end(&s, source, "w2.jsonl");
    assert_eq!(again.summary()["records"], 0, "committed records were read again:\n{}", again.stderr);
    // The dead letters are on the broker: read them back as a source.
    let dl = until_end(&s, dead_letters, "dl.jsonl").summary();
    assert_eq!(dl["records"], dead, "{dl}");
}

#[test]
fn kafka_bounded_run_commits_and_dead_letters() {
    let topic = fresh("orders");
    let source = format!("{}/{topic}?group=g", kafka());
    bounded_run_commits_and_dead_letters(&source, &format!("{}/{topic}-dead-letters?group=dl", kafka()));
}

#[test]
fn redis_bounded_run_commits_and_dead_letters() {
    let stream = fresh("orders");
    let source = format!("{}/{stream}?group=g&consumer=c1", redis());
    bounded_run_commits_and_dead_letters(&source, &format!("{}/{stream}-dead-letters?group=dl&consumer=c1", redis()));
}

#[test]
fn pulsar_bounded_run_commits_and_dead_letters() {
    let topic = fresh("orders");
    let source = format!("{}/{topic}?subscription=s", pulsar());
    bounded_run_commits_and_dead_letters(&source, &format!("{}/{topic}-dead-letters?subscription=dl", pulsar()));
}

/// A record's place in its partition, in order: Kafka offsets as they are;
/// Pulsar `ledger:entry:partition[:batch index]` as (ledger, entry, index);
/// Redis `ms-seq` as (ms, seq, 0).
type Place = (u64, u64, u64);

fn order(position: &Value) -> Place {
    match position {
        Value::Number(n) => (0, n.as_u64().unwrap(), 0),
        Value::String(s) if s.contains(':') => {
            // The partition (third) may be -1.
            let parts: Vec<&str> = s.split(':').collect();
            (parts[0].parse().unwrap(), parts[1].parse().unwrap(), parts.get(3).map_or(0, |b| b.parse().unwrap()))
        }
        Value::String(s) => {
            let (ms, seq) = s.split_once('-').expect("a Redis id");
            (ms.parse().unwrap(), seq.parse().unwrap(), 0)
        }
        other => panic!("position {other}"),
    }
}

/// How a broker takes a commit: at once (a Kafka offset, a Redis XACK of a
/// window's ids), or message by message (Pulsar's individual acks, which a
/// crash can cut off inside a window, so its replay starts mid-window).
#[derive(PartialEq)]
enum Commit {
    Atomic,
    PerMessage,
}

/// `kill -9` mid-stream, then a restart: every record analysed at least once.
fn crash_and_restart(source: &str, commit: Commit, all_positions: impl Fn() -> Vec<Place>) {
    let s = Sandbox::with_bundled();
    s.run(&["check"]).assert_ok(); // compile the plugins once, outside the timed part
    produce(&s, source, 30_000, &[], 1);
    let first = spawn(&s, source, "w1.jsonl", "data");
    // Looked at every few milliseconds, so the kill comes a few windows in
    // (a host reads 30,000 records in well under a second).
    let logged = s.path("w1.jsonl");
    assert!(waited_every(Duration::from_millis(2), Duration::from_secs(60), || windows(&logged).len() >= 3), "no windows within 60 s");
    first.kill();
    let run1 = windows(&s.path("w1.jsonl"));
    // The same windows as the first run's, so a replayed one is the same window.
    let log2 = s.path("w2.jsonl");
    let run = s.run(&["--source", source, "--until-end", "--format", "json", "--window", "500", "--windows-file", log2.to_str().unwrap()]);
    run.assert_ok();
    let run2 = windows(&log2);
    let produced = all_positions();
    assert_eq!(produced.len(), 30_000);
    let index: BTreeMap<Place, usize> = produced.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    let mut seen = BTreeSet::new();
    for w in run1.iter().chain(&run2) {
        let (a, b) = (index[&order(&w["first_offset"])], index[&order(&w["last_offset"])]);
        assert_eq!(b - a + 1, w["records"].as_u64().unwrap() as usize, "window is not contiguous: {w}");
        seen.extend(a..=b);
    }
    assert_eq!(seen.len(), 30_000, "records lost: run 1 had {} windows, run 2 {}:\n{}", run1.len(), run2.len(), run.stderr);
    assert!(records(&run1) + records(&run2) >= 30_000);
    // The history holds every record: a source position is committed only
    // after its windows are written. With an atomic commit a replay starts at
    // a window boundary, so a replayed window is the same one, kept once.
    let db = rusqlite::Connection::open(s.path("data/history.db")).expect("history.db");
    let mut stmt = db.prepare("SELECT first_offset, last_offset FROM windows").unwrap();
    let position = |text: String| match text.parse::<u64>() {
        Ok(offset) => Value::from(offset),
        Err(_) => Value::String(text),
    };
    let mut in_history = BTreeSet::new();
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).unwrap() {
        let (first, last) = row.unwrap();
        for i in index[&order(&position(first))]..=index[&order(&position(last))] {
            let first_time = in_history.insert(i);
            assert!(first_time || commit == Commit::PerMessage, "record {i} is in two windows of the history");
        }
    }
    assert_eq!(in_history.len(), 30_000, "windows missing from the history");
}

#[test]
fn kafka_crash_and_restart_loses_nothing() {
    let topic = fresh("crash");
    crash_and_restart(&format!("{}/{topic}?group=g", kafka()), Commit::Atomic, || (0..30_000).map(|o| (0, o, 0)).collect());
}

/// The entry ids of a Redis stream, in order.
fn redis_ids(url: &str, stream: &str) -> Vec<Place> {
    let out = Command::new("redis-cli").args(["-u", url, "XRANGE", stream, "-", "+"]).output().expect("redis-cli");
    let is_id = |l: &str| l.len() > 3 && l.contains('-') && l.split('-').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| is_id(l)).map(|l| order(&Value::String(l.into()))).collect()
}

#[test]
fn redis_crash_and_restart_loses_nothing() {
    let stream = fresh("crash");
    let url = redis();
    let source = format!("{url}/{stream}?group=g&consumer=c1");
    crash_and_restart(&source, Commit::Atomic, || redis_ids(&url, &stream));
}

/// A group moved back (XGROUP SETID, an older snapshot restored) delivers
/// what its last checkpoint covers again: acked, not analysed twice.
#[test]
fn redis_a_group_moved_back_behind_its_checkpoint_analyses_nothing_twice() {
    let s = Sandbox::with_bundled();
    let (url, stream) = (redis(), fresh("moved"));
    let source = format!("{url}/{stream}?group=g&consumer=c1");
    produce(&s, &source, 5_000, &[], 1);
    spawn_with(&s, &source, "first.jsonl", "data", 500, &["--until-end"]).finish();
    assert_eq!(records(&windows(&s.path("first.jsonl"))), 5_000);
    let moved = Command::new("redis-cli").args(["-u", &url, "XGROUP", "SETID", &stream, "g", "0"]).output().expect("redis-cli");
    assert!(String::from_utf8_lossy(&moved.stdout).contains("OK"), "{moved:?}");
    produce(&s, &source, 1_000, &[], 2);
    spawn_with(&s, &source, "second.jsonl", "data", 500, &["--until-end"]).finish();
    let said = std::fs::read_to_string(s.path("second.jsonl.stderr")).unwrap();
    assert!(said.contains("resumed from its checkpoint"), "{said}");
    assert_eq!(records(&windows(&s.path("second.jsonl"))), 1_000, "only the new entries are analysed:\n{said}");
}

/// A Redis server of this test's own, restarted on the same port mid-run.
struct PrivateRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: Child,
}

impl PrivateRedis {
    fn start(dir: std::path::PathBuf, port: u16) -> Self {
        Self::start_with(dir, port, &[])
    }

    fn start_with(dir: std::path::PathBuf, port: u16, args: &[&str]) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .args(args)
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/brokers installs it)");
        wait_until("redis to take clients", Duration::from_secs(20), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        PrivateRedis { port, dir, child }
    }

    fn restart(mut self) -> Self {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        self.child.wait().unwrap();
        std::thread::sleep(Duration::from_secs(1));
        let (dir, port) = (self.dir.clone(), self.port);
        std::mem::forget(self);
        PrivateRedis::start(dir, port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The broker goes away mid-run and comes back on the same address: the
/// host logs it, reconnects and loses nothing.
#[test]
fn redis_restart_mid_run_reconnects_and_loses_nothing() {
    let s = Sandbox::with_bundled();
    s.run(&["check"]).assert_ok();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let redis = PrivateRedis::start(s.path("redis"), port);
    let url = format!("redis://127.0.0.1:{port}");
    let source = format!("{url}/events?group=g&consumer=c1");
    produce(&s, &source, 10_000, &[], 1);
    let host = spawn(&s, &source, "w.jsonl", "data");
    host.wait_until("a few analysed windows", Duration::from_secs(60), || windows(&s.path("w.jsonl")).len() >= 4);
    let redis = redis.restart();
    produce(&s, &source, 10_000, &[], 1);
    host.wait_until("every record", Duration::from_secs(90), || records(&windows(&s.path("w.jsonl"))) >= 19_500);
    std::thread::sleep(Duration::from_secs(1));
    host.interrupt();
    let log = std::fs::read_to_string(s.path("w.jsonl.stderr")).unwrap();
    assert!(log.contains("reconnecting") && log.contains("reconnected"), "the reconnect is not in the log:\n{log}");
    let summary: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert!(summary["broker_errors"].as_u64().unwrap() > 0, "{summary}");
    let ids = redis_ids(&url, "events");
    assert_eq!(ids.len(), 20_000);
    let index: BTreeMap<Place, usize> = ids.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    let mut seen = BTreeSet::new();
    for w in windows(&s.path("w.jsonl")) {
        seen.extend(index[&order(&w["first_offset"])]..=index[&order(&w["last_offset"])]);
    }
    assert_eq!(seen.len(), 20_000, "records lost across the restart");
    drop(redis);
}

/// A Redis behind a password: the host reads it with the login in its URL,
/// and the password shows nowhere: not in its output, its log, its summary,
/// or anything it keeps in its data dir. A login where it is not used is an error.
#[test]
fn redis_with_a_password_is_read_and_the_password_shown_nowhere() {
    let s = Sandbox::with_bundled();
    s.run(&["check"]).assert_ok();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let password = "pw-7f3a@9c";
    let _redis = PrivateRedis::start_with(s.path("redis"), port, &["--requirepass", password]);
    let source = format!("redis://:pw-7f3a%409c@127.0.0.1:{port}/events?group=g&consumer=c1");
    produce(&s, &source, 5_000, &[], 1);
    let run = s.run(&["--source", &source, "--until-end", "--format", "json", "--window", "500"]);
    run.assert_ok();
    assert_eq!((run.summary()["records"].as_u64(), run.summary()["windows"].as_u64()), (Some(5_000), Some(10)), "{}", run.stderr);
    let mut shown = format!("{}{}", run.stdout, run.stderr);
    for file in walk(&s.path("data")) {
        shown.push_str(&String::from_utf8_lossy(&std::fs::read(&file).unwrap()));
    }
    for secret in [password, "pw-7f3a%409c", "pw-7f3a"] {
        assert!(!shown.contains(secret), "the password ({secret}) shows in the output or the data dir");
    }
    let wrong = s.run(&["--source", &format!("redis://:wrong@127.0.0.1:{port}/events"), "--until-end"]);
    assert!(wrong.code == Some(1) && !wrong.stderr.contains("wrong@"), "{}", wrong.stderr);
    let kafka = s.run(&["--source", "kafka://me:secret@127.0.0.1:1/t", "--until-end"]);
    assert!(kafka.stderr.contains("sasl.username") && !kafka.stderr.contains("secret"), "{}", kafka.stderr);
}

/// A Kafka behind SASL/SCRAM over TLS (the listener `scripts/brokers`
/// starts with a CA of its own), configured the way a Kubernetes pod is:
/// every run flag and every secret from the environment, the config file
/// naming variables only. The password shows nowhere; a wrong one stops the
/// run saying the broker refused the login.
#[test]
fn kafka_over_sasl_scram_and_tls_from_the_environment_alone() {
    let s = Sandbox::with_bundled();
    let topic = fresh("secured");
    produce(&s, &format!("{}/{topic}", kafka()), 5_000, &[], 1);
    let config = s.write(
        "secured.toml",
        format!(
            "[[pipelines]]\nname = \"orders\"\nsource = \"kafka://${{KAFKA_SECURE}}/{topic}?group=g\"\n\
             [pipelines.broker.kafka]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-256\"\n\
             \"sasl.username\" = \"env:KAFKA_USER\"\n\"sasl.password\" = \"env:KAFKA_PASSWORD\"\n\"ssl.ca.location\" = \"${{KAFKA_CA}}\"\n"
        ),
    );
    let password = broker("KAFKA_PASSWORD");
    let env = |password: &str| {
        [
            ("CLEAN_HOST_CONFIG", config.to_str().unwrap().to_string()),
            ("CLEAN_HOST_UNTIL_END", "true".into()),
            ("CLEAN_HOST_FORMAT", "json".into()),
            ("CLEAN_HOST_WINDOW", "500".into()),
            ("KAFKA_SECURE", broker("KAFKA_SECURE")),
            ("KAFKA_CA", broker("KAFKA_CA")),
            ("KAFKA_USER", broker("KAFKA_USER")),
            ("KAFKA_PASSWORD", password.to_string()),
        ]
    };
    let vars = env(&password);
    let run = s.run_with_env(&[], &vars.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>());
    run.assert_ok();
    assert_eq!((run.summary()["records"].as_u64(), run.summary()["windows"].as_u64()), (Some(5_000), Some(10)), "{}", run.stderr);
    let mut shown = format!("{}{}", run.stdout, run.stderr);
    for file in walk(&s.path("data")) {
        shown.push_str(&String::from_utf8_lossy(&std::fs::read(&file).unwrap()));
    }
    assert!(!shown.contains(&password), "the SASL password shows in the output or the data dir");
    let wrong = "not-the-password-4f1";
    let vars = env(wrong);
    let refused = s.run_with_env(&[], &vars.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>());
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    let error = refused.stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(error.contains("SASL authentication error") && !refused.stderr.contains(wrong), "{}", refused.stderr);
}

/// A Redis over TLS with a login (`rediss://`, the TLS port
/// `scripts/brokers` opens with a CA of its own), the login, CA and address
/// from the environment: every entry is read (the reader's own TLS
/// connection and the `redis` crate's, checkpoints and acks included), the
/// password shows nowhere, and without the CA the server's certificate is
/// refused with the reason.
#[test]
fn redis_over_tls_with_a_login_from_the_environment() {
    let s = Sandbox::with_bundled();
    let stream = fresh("secured");
    produce(&s, &format!("{}/{stream}", redis()), 5_000, &[], 1);
    let source = format!("rediss://${{REDIS_USER}}:${{REDIS_PASSWORD}}@${{REDIS_SECURE}}/{stream}?group=g&consumer=c1");
    let with_ca = s.write("tls.toml", format!("[[pipelines]]\nname = \"orders\"\nsource = \"{source}\"\n[pipelines.broker]\ntls_ca = \"${{REDIS_CA}}\"\n"));
    let without_ca = s.write("no-ca.toml", format!("[[pipelines]]\nname = \"orders\"\nsource = \"{source}\"\n"));
    let password = broker("REDIS_PASSWORD");
    let env: Vec<(&str, String)> = ["REDIS_USER", "REDIS_PASSWORD", "REDIS_SECURE", "REDIS_CA"].into_iter().map(|v| (v, broker(v))).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = s.run_with_env(&["--config", with_ca.to_str().unwrap(), "--until-end", "--format", "json", "--window", "500"], &env);
    run.assert_ok();
    assert_eq!((run.summary()["records"].as_u64(), run.summary()["windows"].as_u64()), (Some(5_000), Some(10)), "{}", run.stderr);
    let again = s.run_with_env(&["--config", with_ca.to_str().unwrap(), "--until-end", "--format", "json", "--window", "500"], &env);
    assert_eq!(again.summary()["records"].as_u64(), Some(0), "acked entries were read again:\n{}", again.stderr);
    let mut shown = format!("{}{}{}{}", run.stdout, run.stderr, again.stdout, again.stderr);
    for file in walk(&s.path("data")) {
        shown.push_str(&String::from_utf8_lossy(&std::fs::read(&file).unwrap()));
    }
    assert!(!shown.contains(&password), "the Redis password shows in the output or the data dir");
    let refused = s.run_with_env(&["--config", without_ca.to_str().unwrap(), "--until-end"], &env);
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    assert!(refused.stderr.contains("certificate") && !refused.stderr.contains(&password), "{}", refused.stderr);
    // The login is sent: a wrong password is refused (the server's default user needs none).
    let wrong: Vec<(&str, &str)> = env.iter().map(|&(k, v)| if k == "REDIS_PASSWORD" { (k, "not-the-password") } else { (k, v) }).collect();
    let refused = s.run_with_env(&["--config", with_ca.to_str().unwrap(), "--until-end"], &wrong);
    assert!(refused.code == Some(1) && refused.stderr.contains("AuthenticationFailed"), "{}", refused.stderr);
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        match path.is_dir() {
            true => files.extend(walk(&path)),
            false => files.push(path),
        }
    }
    files
}

/// The alerts of runs, as a sorted list of what makes each one (its
/// window's partition and offsets, detector, metric, column, value, severity): runs
/// together that alerted twice for one thing list it twice.
fn alerts_of(s: &Sandbox, files: &[String]) -> Vec<String> {
    let mut all: Vec<String> = files.iter().flat_map(|f| lines_of(s, f)).map(|line| alert_of(&line)).collect();
    all.sort();
    all
}

fn lines_of(s: &Sandbox, file: &str) -> Vec<String> {
    std::fs::read_to_string(s.path(file)).unwrap_or_default().lines().map(str::to_string).collect()
}

fn alert_of(line: &str) -> String {
    let a: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("a torn alert line ({e}): {line}"));
    let w = &a["window"];
    let (detector, metric, column, value, severity) = (&a["detector"], &a["metric"], &a["column"], &a["value"], &a["severity"]);
    format!("{} {}..{} {detector} {metric} {column} {value} {severity}", w["partition"], w["first_offset"], w["last_offset"])
}

/// The alerts of a killed host (`killed`) and of the host that carried on
/// (`rest`) are those of one uninterrupted run: none lost, and none twice
/// but those of the window the killed host was writing out when it died
/// (written, but not yet recorded as sent where its checkpoints are: at
/// least once). Those come again identical, so a receiver can drop them.
fn assert_alerted_as_one_run(s: &Sandbox, killed: &str, rest: &[&str], expected: &[String], context: &str) {
    let files: Vec<String> = std::iter::once(killed).chain(rest.iter().copied()).map(str::to_string).collect();
    let mut extra = alerts_of(s, &files);
    for alert in expected {
        let at = extra.iter().position(|a| a == alert).unwrap_or_else(|| panic!("{context}: lost {alert}\n{extra:#?}"));
        extra.remove(at);
    }
    let window = |alert: &str| alert.split(' ').take(2).collect::<Vec<_>>().join(" ");
    let last_written = lines_of(s, killed).last().map(|line| window(&alert_of(line)));
    for (i, alert) in extra.iter().enumerate() {
        assert!(expected.contains(alert), "{context}: {alert} is none of the uninterrupted run's");
        assert!(!extra[..i].contains(alert), "{context}: {alert} three times");
        assert_eq!(Some(window(alert)), last_written, "{context}: {alert} twice, not of the window written out at the kill");
    }
}

/// A `kill -9` at a random point and a restart change no alert: the
/// restarted host carries on from its last checkpoint (each detector's
/// state, the control rules and cooldowns, the window numbers, the
/// positions), so the two runs together alert as one uninterrupted run
/// did, none lost and none twice (but the window being written out at the
/// kill: at least once). The checkpoints are in Kafka: the
/// restart has a data dir of its own (another machine, a new pod).
#[test]
fn kafka_a_crash_changes_no_alert() {
    let topic = format!("{}/{}", kafka(), fresh("checkpoint"));
    a_crash_changes_no_alert(&topic, |group| format!("{topic}?group={group}"), Kept::InBroker, &ORDERS);
}

/// The same proof on data we did not make, on each broker: the wireless
/// sensor network (18,914 readings, fetched from npm by
/// bench/accuracy/datasets.py, with the accuracy harness's faults written
/// in), read as a user would (100-reading windows on its own clock).
#[test]
fn kafka_a_crash_changes_no_alert_on_real_data() {
    let topic = format!("{}/{}", kafka(), fresh("checkpoint-real"));
    a_crash_changes_no_alert(&topic, |group| format!("{topic}?group={group}"), Kept::InBroker, &SENSORS);
}

#[test]
fn redis_a_crash_changes_no_alert_on_real_data() {
    let stream = format!("{}/{}", redis(), fresh("checkpoint-real"));
    a_crash_changes_no_alert(&stream, |group| format!("{stream}?group={group}&consumer=c1"), Kept::InBroker, &SENSORS);
}

#[test]
fn pulsar_a_crash_changes_no_alert_on_real_data() {
    let topic = format!("{}/{}", pulsar(), fresh("checkpoint-real"));
    a_crash_changes_no_alert(&topic, |subscription| format!("{topic}?subscription={subscription}"), Kept::InBroker, &SENSORS);
}

/// As on Kafka, the checkpoints in a Redis hash; a named consumer's own
/// pending entries up to the checkpoint (analysed, not acked when it was
/// killed) are acked, not read again.
#[test]
fn redis_a_crash_changes_no_alert() {
    let stream = format!("{}/{}", redis(), fresh("checkpoint"));
    a_crash_changes_no_alert(&stream, |group| format!("{stream}?group={group}&consumer=c1"), Kept::InBroker, &ORDERS);
}

/// As on Kafka, the checkpoints in a Pulsar topic; messages sent again up
/// to the checkpoint (analysed, not acked when it was killed) are acked,
/// not read again, and a producer's batch the checkpoint cut through is
/// acked once its rest is analysed.
#[test]
fn pulsar_a_crash_changes_no_alert() {
    let topic = format!("{}/{}", pulsar(), fresh("checkpoint"));
    a_crash_changes_no_alert(&topic, |subscription| format!("{topic}?subscription={subscription}"), Kept::InBroker, &ORDERS);
}

/// As on Pulsar, with checkpoints in the data dir (`in_broker = false`).
#[test]
fn pulsar_a_crash_changes_no_alert_with_checkpoints_in_the_data_dir() {
    let topic = format!("{}/{}", pulsar(), fresh("checkpoint"));
    a_crash_changes_no_alert(&topic, |subscription| format!("{topic}?subscription={subscription}"), Kept::InDataDir, &ORDERS);
}

/// Where a broker pipeline's checkpoints are kept.
#[derive(PartialEq)]
enum Kept {
    InBroker,
    InDataDir,
}

/// What a crash test reads, and how a user would run it.
struct Stream {
    /// Writes the records to the topic.
    fill: fn(&Sandbox, &str),
    window: u64,
    /// More arguments of each run (the event-time field).
    args: &'static [&'static str],
    /// Killed once this many windows were logged: early, mid-fault, late.
    kill_after: [usize; 3],
}

/// The generator's orders with four faults.
const ORDERS: Stream = Stream { fill: produce_orders, window: 500, args: &[], kill_after: [7, 23, 57] };

fn produce_orders(s: &Sandbox, topic: &str) {
    produce(s, topic, 40_000, &["nulls@9000+1000", "duplicates@16000+1000", "drift@24000+4000", "creep@30000+8000"], 1);
}

/// The wireless sensor network with the accuracy harness's faults.
const SENSORS: Stream = Stream { fill: produce_sensors, window: 100, args: &["--event-time", "ts"], kill_after: [30, 90, 150] };

fn produce_sensors(_: &Sandbox, topic: &str) {
    produce_file(topic, sensors_with_faults());
}

/// The readings as JSON lines, made once for every test of the process.
fn sensors_with_faults() -> &'static Path {
    static MADE: std::sync::OnceLock<(tempfile::TempDir, std::path::PathBuf)> = std::sync::OnceLock::new();
    let (_, path) = MADE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sensors.jsonl");
        let script = "import random, sys\nsys.path.insert(0, sys.argv[1])\nimport datasets, faults\nds = datasets.sensors()\n\
                      rng = random.Random(7)\nrows = faults.inject(ds, faults.plan(ds, 40, 8, rng), rng)\ndatasets.write_jsonl(rows, sys.argv[2])\n";
        let out = Command::new("python3").args(["-c", script]).arg(clean_host_tests::root().join("bench/accuracy")).arg(&path).output().expect("run python3");
        assert!(out.status.success(), "writing the sensor readings: {}", String::from_utf8_lossy(&out.stderr));
        (dir, path)
    });
    path
}

/// `stream` produced to `topic`; one uninterrupted run, then runs killed
/// and restarted (each a new consumer group: `source(group)`).
fn a_crash_changes_no_alert(topic: &str, source: impl Fn(&str) -> String, kept: Kept, stream: &Stream) {
    let s = Sandbox::with_bundled();
    s.run(&["check"]).assert_ok();
    let config = checkpointed_config(&s, if kept == Kept::InDataDir { "in_broker = false" } else { "" });
    let config = config.as_str();
    (stream.fill)(&s, topic);
    let host = |group: &str, run: &str, more: &[&str]| {
        let alerts = s.path(&format!("{run}.alerts"));
        let args = [&["--config", config, "--alerts-file", alerts.to_str().unwrap()], stream.args, more].concat();
        let data = match kept {
            Kept::InBroker => format!("data-{run}"),
            Kept::InDataDir => format!("data-{group}"),
        };
        spawn_with(&s, &source(group), &format!("{run}.windows"), &data, stream.window, &args)
    };
    host("whole", "whole", &["--until-end"]).finish();
    let expected = alerts_of(&s, &["whole.alerts".into()]);
    assert!(expected.len() >= 4, "{expected:#?}");
    for kill_after in stream.kill_after {
        let group = format!("crash{kill_after}");
        // Its debug log says when each checkpoint is stored.
        let first = host(&group, &format!("{group}-1"), &["--log-level", "clean_host=debug,info"]);
        let logged = s.path(&format!("{group}-1.windows"));
        let stored = |log: &Path| std::fs::read_to_string(log).is_ok_and(|t| t.contains("checkpoint of"));
        let log = s.path(&format!("{group}-1.windows.stderr"));
        // Looked at every few milliseconds: the host reads either stream in about a second.
        let killable = || windows(&logged).len() >= kill_after && stored(&log);
        assert!(waited_every(Duration::from_millis(2), Duration::from_secs(60), killable), "{kill_after} windows and a checkpoint");
        first.kill();
        let second = host(&group, &format!("{group}-2"), &["--until-end"]);
        let log = s.path(&format!("{group}-2.windows.stderr"));
        second.finish();
        let said = std::fs::read_to_string(&log).unwrap();
        assert!(said.contains("resumed from its checkpoint"), "the restart did not resume:\n{said}");
        let context = format!("killed after {kill_after} windows; the restart said:\n{said}");
        assert_alerted_as_one_run(&s, &format!("{group}-1.alerts"), &[&format!("{group}-2.alerts")], &expected, &context);
    }
    // Another group on the same data dir reads the topic anew: the checkpoints are its own.
    let last = stream.kill_after[2];
    let data = if kept == Kept::InBroker { format!("data-crash{last}-2") } else { format!("data-crash{last}") };
    spawn_with(&s, &source("other"), "other.windows", &data, stream.window, &[&["--config", config, "--until-end"], stream.args].concat()).finish();
    assert_eq!(records(&windows(&s.path("other.windows"))), records(&windows(&s.path("whole.windows"))));
    let group = format!("crash{last}");
    if kept == Kept::InBroker {
        // `plugin list` reads the checkpoints of the group the config names
        // from the broker (no host runs), with each detector's state.
        let named = std::fs::read_to_string(config).unwrap().replace("source = \"generator\"", &format!("source = \"{}\"", source(&group)));
        let named = s.write("listed.toml", named);
        let named = named.to_str().unwrap();
        let checkpoints = listed_checkpoints(&s.run(&["plugin", "list", "--json", "--config", named]));
        assert_eq!(checkpoints.len(), 1, "{checkpoints:#?}");
        assert!(checkpoints[0]["source"].as_str().unwrap().contains(&group), "{checkpoints:#?}");
        let table = s.run(&["plugin", "list", "--config", named]);
        assert!(table.stdout.contains("CHECKPOINT OF") && table.stdout.contains(&group), "{}", table.stdout);
        return;
    }
    // `plugin list` shows both groups' checkpoints in that data dir (made
    // the sandbox's own, which `run` names), with each detector's state.
    let _ = std::fs::remove_dir_all(s.path("data"));
    std::fs::rename(s.path(&data), s.path("data")).unwrap();
    let checkpoints = listed_checkpoints(&s.run(&["plugin", "list", "--json"]));
    let sources: BTreeSet<String> = checkpoints.iter().map(|c| c["source"].as_str().unwrap().to_string()).collect();
    assert_eq!(sources.len(), 2, "{checkpoints:#?}");
    let table = s.run(&["plugin", "list"]);
    assert!(table.stdout.contains("CHECKPOINT OF") && table.stdout.contains(&group), "{}", table.stdout);
}

/// The checkpoints `plugin list --json` listed, each of the crash tests'
/// pipeline and with the duplicates detector's state.
fn listed_checkpoints(listed: &clean_host_tests::Run) -> Vec<Value> {
    listed.assert_ok();
    let checkpoints: Vec<Value> = listed.stdout.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|v| v["kind"] == "checkpoint").collect();
    for c in &checkpoints {
        assert_eq!(c["pipeline"], "orders");
        assert!(!c["positions"].as_object().unwrap().is_empty(), "{c}");
        let duplicates = c["detectors"].as_array().unwrap().iter().find(|d| d["name"] == "duplicates").expect("duplicates' state");
        assert!(duplicates["bytes"].as_u64().unwrap() > 0 && c["state_bytes"].as_u64() >= duplicates["bytes"].as_u64(), "{c}");
    }
    checkpoints
}

/// The pipeline config of the crash tests: checkpoints after every cut, the
/// bundled detectors but freshness (it judges records against the wall
/// clock, so no two runs agree on it, crash or not), and `more` settings.
/// Each test keeps its checkpoints in a table of its own (a host reads its
/// broker's table from the start: the other tests' would slow it down).
fn checkpointed_config(s: &Sandbox, more: &str) -> String {
    let table = fresh("state");
    let config = s.write(
        "checkpointed.toml",
        format!(
            "[checkpoints]\ninterval_ms = 1\n{more}\n[[pipelines]]\nname = \"orders\"\nsource = \"generator\"\n\
             detectors = [\"completeness\", \"drift\", \"duplicates\", \"outliers\", \"schema\", \"validity\", \"volume\"]\n\
             [pipelines.broker]\nstate_table = \"{table}\"\n"
        ),
    );
    config.to_str().unwrap().to_string()
}

/// Per partition and window number, what the window log says of the window:
/// its offsets, records and findings (detector, metric, column, value).
fn windows_by_number(logs: &[Vec<Value>]) -> BTreeMap<(u64, u64), String> {
    let mut by_number = BTreeMap::new();
    for w in logs.iter().flatten() {
        let key = (w["partition"].as_u64().unwrap(), w["seq"].as_u64().unwrap());
        let said = format!("{}..{} {} {}", w["first_offset"], w["last_offset"], w["records"], w["findings"]);
        if let Some(before) = by_number.insert(key, said.clone()) {
            assert_eq!(before, said, "window {key:?} was analysed twice, differently");
        }
    }
    by_number
}

/// Two hosts of one group, each with a data dir of its own, find each
/// other's checkpoints in Kafka; one is killed mid-stream and the other
/// takes its partitions over, each
/// with its state (detectors, control rules, cooldowns, window numbers), so
/// every window is analysed as one uninterrupted host analysed it: the
/// same findings, and the same alerts, none twice (as above). A window the killed host
/// analysed after its last checkpoint is analysed again, alike, by the new
/// owner, which knows from the shared ledger that its alerts went out.
#[test]
fn kafka_a_host_takes_over_a_killed_hosts_partitions_with_their_state() {
    let topic = format!("{}/{}", kafka(), fresh("takeover"));
    let s = Sandbox::with_bundled();
    // Creates the topic with 2 partitions.
    produce(&s, &topic, 1, &[], 2);
    // Each host says when the group gave it its partitions.
    let assigned =
        |s: &Sandbox| ["a", "b"].iter().all(|h| std::fs::read_to_string(s.path(&format!("{h}.windows.stderr"))).is_ok_and(|t| t.contains("assigned")));
    a_host_takes_over(&s, &topic, |group| format!("{topic}?group={group}"), assigned);
}

/// As on Kafka, on a Pulsar topic of 2 partitions read by a failover
/// subscription, the checkpoints in a Pulsar topic: the partition of the
/// killed host comes to the other once its connection is gone, and carries
/// on, numbered on from its checkpoint. The broker often sends it on first
/// from past what the killed host had read (not acked), and goes back to
/// those only later: none is left out.
#[test]
fn pulsar_a_host_takes_over_a_killed_hosts_partitions_with_their_state() {
    let name = fresh("takeover");
    let admin = format!("{}/admin/v2/persistent/public/default/{name}", broker("PULSAR_ADMIN"));
    let made = Command::new("curl").args(["-sf", "-X", "PUT", "-H", "Content-Type: application/json", "-d", "2", &format!("{admin}/partitions")]).status();
    assert!(made.expect("curl").success(), "making {name} with 2 partitions");
    let topic = format!("{}/{name}", pulsar());
    let s = Sandbox::with_bundled();
    // Both hosts are consumers of the subscription (Pulsar tells a consumer nothing when it becomes active).
    let subscribed = |_: &Sandbox| {
        let stats = Command::new("curl").args(["-sf", &format!("{admin}/partitioned-stats")]).output().expect("curl");
        let stats: Value = serde_json::from_slice(&stats.stdout).unwrap_or_default();
        stats["subscriptions"]["pair"]["consumers"].as_array().is_some_and(|c| c.len() >= 2)
    };
    a_host_takes_over(&s, &topic, |subscription| format!("{topic}?subscription={subscription}"), subscribed);
}

/// Two hosts of one group on `topic` (2 partitions), `source(group)`;
/// `ready`: both read their partitions.
fn a_host_takes_over(s: &Sandbox, topic: &str, source: impl Fn(&str) -> String, ready: impl Fn(&Sandbox) -> bool) {
    s.run(&["check"]).assert_ok();
    let config = checkpointed_config(s, "");
    let host = |name: &str, source: &str, more: &[&str]| {
        let alerts = s.path(&format!("{name}.alerts"));
        let args = [&["--config", config.as_str(), "--alerts-file", alerts.to_str().unwrap()], more].concat();
        spawn_with(s, source, &format!("{name}.windows"), &format!("data-{name}"), 500, &args)
    };
    let a = host("a", &source("pair"), &["--log-level", "clean_host=debug,info"]);
    let b = host("b", &source("pair"), &["--log-level", "clean_host=debug,info"]);
    let log = |name: &str| std::fs::read_to_string(s.path(&format!("{name}.windows.stderr"))).unwrap_or_default();
    wait_for_hosts(&[&a, &b], "both hosts to get partitions", Duration::from_secs(90), || ready(s));
    std::thread::sleep(Duration::from_secs(5));
    // 60,000 records over 8 s (60 windows a partition; detectors learn each
    // partition apart), faults in the second half, so the kill lands mid-stream.
    let faults = "nulls@30000+2000,duplicates@38000+2000,drift@44000+6000,creep@50000+8000";
    let mut producer = clean_host_tests::host_command()
        .args(["generate", "--records", "60000", "--rate", "7500", "--partitions", "2", "--inject", faults, "--sink", topic])
        .current_dir(s.dir.path())
        .stderr(Stdio::null())
        .spawn()
        .expect("start generate");
    // Killed once it has analysed 30 windows and stored a checkpoint.
    a.wait_until("a's first windows", Duration::from_secs(60), || windows(&s.path("a.windows")).len() >= 30 && log("a").contains("checkpoint of"));
    a.kill();
    assert!(producer.wait().expect("generate").success());
    // One host alone, uninterrupted, on the same records.
    host("whole", &source("whole"), &["--until-end"]).finish();
    let whole = windows_by_number(&[windows(&s.path("whole.windows"))]);
    let full: Vec<(u64, u64)> = windows(&s.path("whole.windows"))
        .iter()
        .filter(|w| w["records"] == 500)
        .map(|w| (w["partition"].as_u64().unwrap(), w["seq"].as_u64().unwrap()))
        .collect();
    // b takes a's partitions once a's session ends (Kafka: 10 s), then reads to the end.
    b.wait_until("b to analyse every full window", Duration::from_secs(120), || {
        let pair = windows_by_number(&[windows(&s.path("a.windows")), windows(&s.path("b.windows"))]);
        full.iter().all(|k| pair.contains_key(k))
    });
    std::thread::sleep(Duration::from_secs(2));
    b.interrupt();
    let took_over = log("b");
    assert!(took_over.contains("resumed from its checkpoint"), "b took nothing over from a checkpoint:\n{took_over}");
    let pair = windows_by_number(&[windows(&s.path("a.windows")), windows(&s.path("b.windows"))]);
    assert_eq!(pair, whole, "the pair analysed some window otherwise than one host");
    let expected = alerts_of(s, &["whole.alerts".into()]);
    assert!(expected.len() >= 4, "{expected:#?}");
    // The hosts share which alerts went out.
    assert_alerted_as_one_run(s, "a.alerts", &["b.alerts"], &expected, "a killed, b took over");
}

/// In a shared subscription two hosts split a partition; what a killed one
/// had not acked comes to the other, in no order with what it has had:
/// each is analysed, at least once.
#[test]
fn pulsar_a_shared_subscription_analyses_what_a_killed_reader_left() {
    let s = Sandbox::with_bundled();
    s.run(&["check"]).assert_ok();
    let name = fresh("shared");
    let stats = format!("{}/admin/v2/persistent/public/default/{name}/stats", broker("PULSAR_ADMIN"));
    let topic = format!("{}/{name}", pulsar());
    let source = format!("{topic}?subscription=s&type=shared");
    let a = spawn_with(&s, &source, "a.windows", "data-a", 100, &[]);
    let b = spawn_with(&s, &source, "b.windows", "data-b", 100, &[]);
    wait_for_hosts(&[&a, &b], "both hosts to subscribe", Duration::from_secs(90), || {
        let stats = Command::new("curl").args(["-sf", &stats]).output().expect("curl");
        let stats: Value = serde_json::from_slice(&stats.stdout).unwrap_or_default();
        stats["subscriptions"]["s"]["consumers"].as_array().is_some_and(|c| c.len() >= 2)
    });
    let n = 20_000;
    let mut producer = clean_host_tests::host_command()
        .args(["generate", "--records", &n.to_string(), "--rate", "4000", "--sink", &topic])
        .current_dir(s.dir.path())
        .stderr(Stdio::null())
        .spawn()
        .expect("start generate");
    a.wait_until("a's first windows", Duration::from_secs(60), || records(&windows(&s.path("a.windows"))) >= 2_000);
    a.kill();
    assert!(producer.wait().expect("generate").success());
    let analysed = || records(&windows(&s.path("a.windows"))) + records(&windows(&s.path("b.windows")));
    // b has read all it will once it analysed no window for 3 s; its open window is analysed as it stops.
    let mut last = (0, Instant::now());
    b.wait_until("b to analyse what a left", Duration::from_secs(90), || {
        let now = analysed();
        if now != last.0 {
            last = (now, Instant::now());
        }
        now >= n - 100 && last.1.elapsed() >= Duration::from_secs(3)
    });
    b.interrupt();
    // Acked only once analysed: none is left unacked (a's went to b).
    let backlog = || {
        let stats = Command::new("curl").args(["-sf", &stats]).output().expect("curl");
        serde_json::from_slice::<Value>(&stats.stdout).unwrap_or_default()["subscriptions"]["s"]["msgBacklog"].as_u64()
    };
    wait_until("every message acked", Duration::from_secs(20), || backlog() == Some(0));
    assert!(analysed() >= n, "{} of {n} records analysed", analysed());
}

/// Pulsar keeps checkpoints in a topic whose own subscription holds them:
/// a value over a message's size goes in parts, another host reads each
/// field's latest value (also once the topic was unloaded), and each
/// message a newer value replaced is acked, so only the latest values stay.
#[test]
fn pulsar_state_table_keeps_the_latest_value_of_each_field() {
    let hosts = broker("PULSAR").trim_start_matches("pulsar://").to_string();
    let path = format!("public/default/{}", fresh("state"));
    let mut one = PulsarTable::new(&hosts, &path).unwrap();
    // Over the broker's 5 MB a message: 6 parts.
    let big: Vec<u8> = (0..(5 << 20) + 3).map(|i| (i % 251) as u8).collect();
    one.put("t", &[("0".into(), big.clone()), ("1".into(), b"small".to_vec())]).unwrap();
    one.put("t", &[("1".into(), b"newer".to_vec())]).unwrap();
    one.put("u", &[("0".into(), b"another table".to_vec())]).unwrap();
    let e = one.put("t", &[("0".into(), vec![0; (32 << 20) + 1])]).unwrap_err().to_string();
    assert!(e.contains("over the 32 MiB limit"), "{e}");
    let mut two = PulsarTable::new(&hosts, &path).unwrap();
    let mut fields = two.get_all("t").unwrap();
    fields.sort();
    assert!(fields == [("0".to_string(), big), ("1".to_string(), b"newer".to_vec())], "{} fields", fields.len());
    assert_eq!(two.get("u", "0").unwrap().as_deref(), Some(&b"another table"[..]));
    assert_eq!(two.get("t", "2").unwrap(), None);
    // "small" is acked: the 6 parts, "newer" and "another table" stay.
    let stats = format!("{}/admin/v2/persistent/{path}/stats", broker("PULSAR_ADMIN"));
    let backlog = || {
        let out = Command::new("curl").args(["-sf", &stats]).output().expect("curl");
        let stats: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        stats["subscriptions"]["clean-host-state-keeper"]["msgBacklog"].as_u64()
    };
    assert!(waited_every(Duration::from_millis(100), Duration::from_secs(10), || backlog() == Some(8)), "backlog {:?}", backlog());
    // Unloaded (as a broker restart or a bundle moving does), the topic comes
    // back on a new ledger, and a new reader still reads every latest value.
    let admin = format!("{}/admin/v2/persistent/{path}", broker("PULSAR_ADMIN"));
    let unloaded = Command::new("curl").args(["-sf", "-X", "PUT", &format!("{admin}/unload")]).status();
    assert!(unloaded.expect("curl").success(), "unloading {path}");
    let mut three = PulsarTable::new(&hosts, &path).unwrap();
    assert_eq!(three.get("t", "1").unwrap().as_deref(), Some(&b"newer"[..]));
    assert_eq!(three.get("u", "0").unwrap().as_deref(), Some(&b"another table"[..]));
    assert_eq!(three.get_all("t").unwrap().len(), 2);
}

/// Kafka keeps checkpoints in a compacted topic: another host reads each
/// field's latest value, a table first asked for later is read from the
/// start, and each read assigns the partition for itself at its next offset.
#[test]
fn kafka_state_table_keeps_the_latest_value_of_each_field() {
    let (hosts, topic) = (broker("KAFKA"), fresh("state"));
    let options = BrokerOptions::default();
    let mut one = KafkaTable::new(&hosts, &topic, &options).unwrap();
    // Over the 1 MiB a partition's fetch takes by default.
    let big: Vec<u8> = (0..(3 << 20) + 3).map(|i| (i % 251) as u8).collect();
    one.put("t", &[("0".into(), big.clone()), ("1".into(), b"small".to_vec())]).unwrap();
    one.put("t", &[("1".into(), b"newer".to_vec())]).unwrap();
    assert_eq!(one.get("t", "1").unwrap().as_deref(), Some(&b"newer"[..]));
    one.put("u", &[("0".into(), b"another table".to_vec())]).unwrap();
    assert_eq!(one.get("u", "0").unwrap().as_deref(), Some(&b"another table"[..]));
    assert_eq!(one.get("t", "0").unwrap().as_deref(), Some(&big[..]), "read again from the start for u");
    let mut two = KafkaTable::new(&hosts, &topic, &options).unwrap();
    let mut fields = two.get_all("t").unwrap();
    fields.sort();
    assert!(fields == [("0".to_string(), big), ("1".to_string(), b"newer".to_vec())], "{} fields", fields.len());
    assert_eq!(two.get("t", "2").unwrap(), None);
    // Reads one after another, each from where the last ended.
    for i in 0..30 {
        one.put("t", &[("2".into(), i.to_string().into_bytes())]).unwrap();
        assert_eq!(two.get("t", "2").unwrap(), Some(i.to_string().into_bytes()));
    }
}

/// Producers batch (as Java's do by default, and `generate`), and a crash
/// can cut a window inside a batch: a batch is acked only once all of it
/// is analysed, else the broker would take the whole batch as acked.
#[test]
fn pulsar_crash_and_restart_loses_nothing() {
    let topic = fresh("crash");
    crash_and_restart(&format!("{}/{topic}?subscription=s", pulsar()), Commit::PerMessage, || pulsar_places(&topic));
}

/// A batch that the last full window ends inside of: the window's ack covers
/// the batch's analysed part, but the batch (one broker entry) is not acked,
/// since the broker would take that for the whole batch and the rest, still
/// in the open window when the host is killed, would never come again.
#[test]
fn pulsar_a_batch_is_acked_only_once_all_of_it_is_analysed() {
    let s = Sandbox::with_bundled();
    s.run(&["check"]).assert_ok();
    let topic = fresh("batch");
    let source = format!("{}/{topic}?subscription=s", pulsar());
    let n = 10_250;
    produce(&s, &source, n, &[], 1);
    let places = pulsar_places(&topic);
    assert_eq!(places.len(), n as usize);
    // A window size whose last full window ends inside a batch.
    let entry = |i: u64| (places[i as usize].0, places[i as usize].1);
    let same_entry = |i: u64| entry(i - 1) == entry(i);
    let window = (300..=700).find(|w| n % w != 0 && same_entry(n / w * w)).expect("a window ending inside a batch");
    let analysed = n / window * window;
    // Acks as soon as windows are analysed, not with checkpoints (every 5 s).
    let config = s.write("no-checkpoints.toml", "[checkpoints]\nenabled = false\n");
    let config = config.to_str().unwrap();
    let host = spawn_with(&s, &source, "w1.jsonl", "data", window, &["--config", config]);
    host.wait_until("every full window", Duration::from_secs(60), || records(&windows(&s.path("w1.jsonl"))) >= analysed);
    std::thread::sleep(Duration::from_secs(2)); // its acks reach the broker
    host.kill();
    let log2 = s.path("w2.jsonl");
    let args = ["--config", config, "--source", &source, "--until-end", "--format", "json", "--window", &window.to_string(), "--windows-file"];
    s.run(&[&args[..], &[log2.to_str().unwrap()]].concat()).assert_ok();
    let index: BTreeMap<Place, usize> = places.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    let mut seen = BTreeSet::new();
    for w in windows(&s.path("w1.jsonl")).iter().chain(&windows(&log2)) {
        seen.extend(index[&order(&w["first_offset"])]..=index[&order(&w["last_offset"])]);
    }
    assert_eq!(seen.len(), n as usize, "records lost: the rest of the batch the last full window ended in was not read again");
    // And the first run's acks counted: the second read only from the batch the last full window ended in.
    let largest_batch = places.iter().fold(BTreeMap::new(), |mut per, p| {
        *per.entry((p.0, p.1)).or_insert(0u64) += 1;
        per
    });
    let reread = records(&windows(&log2));
    assert!(reread <= n - analysed + largest_batch.values().max().unwrap(), "the second run read {reread} of {n}: the first run's acks were lost");
}

/// Every message of a topic, in order, from the broker's admin API: the
/// entries of each ledger and how many messages each batch holds.
fn pulsar_places(topic: &str) -> Vec<Place> {
    let admin = format!("{}/admin/v2/persistent/public/default/{topic}", broker("PULSAR_ADMIN"));
    let curl = |args: &[&str]| {
        let out = Command::new("curl").arg("-sf").args(args).output().expect("curl");
        assert!(out.status.success(), "curl {args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let stats: Value = serde_json::from_str(&curl(&[&format!("{admin}/internalStats")])).unwrap();
    let ledgers = stats["ledgers"].as_array().unwrap();
    let mut places = Vec::new();
    for (i, ledger) in ledgers.iter().enumerate() {
        let id = ledger["ledgerId"].as_u64().unwrap();
        // The open ledger's entries are counted apart.
        let entries = if i + 1 == ledgers.len() { stats["currentLedgerEntries"].as_u64().unwrap() } else { ledger["entries"].as_u64().unwrap() };
        for entry in 0..entries {
            let headers = curl(&["-D", "-", "-o", "/dev/null", &format!("{admin}/ledger/{id}/entry/{entry}")]);
            let batch = headers.lines().find_map(|l| l.strip_prefix("X-Pulsar-num-batch-message: ")).map_or(1, |n| n.trim().parse().unwrap());
            places.extend((0..batch).map(|index| (id, entry, index)));
        }
    }
    places
}

/// What a Kafka message carries besides its payload (key, time, headers)
/// reaches the pipeline as the producer wrote it, whichever of them it has.
#[test]
fn kafka_keys_times_and_headers_arrive_as_produced() {
    use clean_host_stream::source::config::MetadataColumn;
    use clean_host_stream::source::{SourceContext, SourceEvent};
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let topic = fresh("metadata");
    // Times within the topic's retention, so no segment is deleted meanwhile.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let (hour_ago, day_ago) = (now - 3_600_000, now - 86_400_000);
    let producer: BaseProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", broker("KAFKA")).create().expect("a Kafka producer");
    let headers = OwnedHeaders::new()
        .insert(Header { key: "trace", value: Some("abc") })
        .insert(Header { key: "none", value: None::<&[u8]> })
        .insert(Header { key: "bytes", value: Some(&[0u8, 255, 10][..]) });
    let sent = [
        BaseRecord::<[u8], [u8]>::to(&topic).payload(&b"{\"n\":1}"[..]).key(&b"k-1"[..]).timestamp(hour_ago).headers(headers),
        BaseRecord::<[u8], [u8]>::to(&topic).payload(&b"{\"n\":2}"[..]).timestamp(day_ago),
        BaseRecord::<[u8], [u8]>::to(&topic).payload(&b""[..]).key(&b""[..]).timestamp(now),
    ];
    for record in sent {
        producer.send(record).map_err(|(e, _)| e).expect("queued");
    }
    producer.flush(Duration::from_secs(30)).expect("every message delivered");

    let options = BrokerOptions { until_end: true, metadata: vec![MetadataColumn::Headers], ..BrokerOptions::default() };
    let url = format!("kafka://{}/{topic}?group={}", broker("KAFKA"), fresh("metadata-group"));
    let source = clean_host_stream::source::open(&url, &Default::default(), &options).expect("the source");
    let (events, received) = crossbeam_channel::unbounded();
    // No acks will come: the pipeline is done as far as the source knows.
    let (_, acks) = crossbeam_channel::bounded(0);
    let ctx = SourceContext { acks, ..SourceContext::detached(events) };
    source.run(ctx).expect("read to the end");
    let messages: Vec<_> = received
        .try_iter()
        .filter_map(|e| match e {
            SourceEvent::Messages { partition: 0, messages } => Some(messages),
            _ => None,
        })
        .flatten()
        .collect();
    let seen: Vec<_> = messages.iter().map(|m| (m.offset, m.payload.to_vec(), m.key.as_ref().map(|k| k.to_vec()), m.timestamp_ms, m.headers.clone())).collect();
    let headers = vec![("trace".to_string(), b"abc".to_vec()), ("none".to_string(), Vec::new()), ("bytes".to_string(), vec![0, 255, 10])];
    assert_eq!(
        seen,
        [
            (0, b"{\"n\":1}".to_vec(), Some(b"k-1".to_vec()), Some(hour_ago), headers),
            (1, b"{\"n\":2}".to_vec(), None, Some(day_ago), Vec::new()),
            (2, Vec::new(), Some(Vec::new()), Some(now), Vec::new()),
        ]
    );
}

/// Two processes in one consumer group split a 4-partition topic; with no
/// failures each record is analysed exactly once.
#[test]
fn kafka_two_processes_split_the_partitions() {
    let s = Sandbox::with_bundled();
    s.run(&["check"]).assert_ok();
    let topic = fresh("scale");
    let source = format!("{}/{topic}?group=scale", kafka());
    produce(&s, &source, 1, &[], 4); // creates the topic with 4 partitions
    let a = spawn(&s, &source, "a.jsonl", "data-a");
    let b = spawn(&s, &source, "b.jsonl", "data-b");
    // Both join (each says which partitions it got), then the group settles.
    let assigned = |log: &str| std::fs::read_to_string(s.path(&format!("{log}.stderr"))).is_ok_and(|t| t.contains("assigned"));
    wait_for_hosts(&[&a, &b], "both processes to get partitions", Duration::from_secs(90), || assigned("a.jsonl") && assigned("b.jsonl"));
    std::thread::sleep(Duration::from_secs(5));
    produce(&s, &source, 20_000, &[], 4);
    wait_for_hosts(&[&a, &b], "the records to be analysed", Duration::from_secs(90), || {
        records(&windows(&s.path("a.jsonl"))) + records(&windows(&s.path("b.jsonl"))) >= 20_001 - 4 * 500
    });
    std::thread::sleep(Duration::from_secs(2));
    interrupt_all(vec![a, b]);
    let (wa, wb) = (windows(&s.path("a.jsonl")), windows(&s.path("b.jsonl")));
    assert_eq!(records(&wa) + records(&wb), 20_001, "each record analysed exactly once");
    let parts = |ws: &[Value]| ws.iter().map(|w| w["partition"].as_u64().unwrap()).collect::<BTreeSet<_>>();
    let (pa, pb) = (parts(&wa), parts(&wb));
    assert!(!pa.is_empty() && !pb.is_empty(), "both processes got partitions: {pa:?} {pb:?}");
    assert!(pa.is_disjoint(&pb), "a partition analysed by both: {pa:?} {pb:?}");
}

/// A second process joins while the first holds open windows: the revoked
/// partitions' open windows are dropped uncommitted and read again by their
/// new owner, so every record is still analysed (at least once).
#[test]
fn kafka_rebalance_mid_stream_loses_nothing() {
    let s = Sandbox::with_bundled();
    s.run(&["check"]).assert_ok();
    let topic = fresh("rebalance");
    let source = format!("{}/{topic}?group=rb", kafka());
    produce(&s, &source, 20_200, &[], 4);
    let a = spawn(&s, &source, "a.jsonl", "data-a");
    a.wait_until("the first windows", Duration::from_secs(60), || !windows(&s.path("a.jsonl")).is_empty());
    let b = spawn(&s, &source, "b.jsonl", "data-b");
    // b joins, a gives up partitions with open windows.
    let joined = || std::fs::read_to_string(s.path("b.jsonl.stderr")).is_ok_and(|t| t.contains("assigned"));
    wait_for_hosts(&[&a, &b], "b to get partitions", Duration::from_secs(90), joined);
    std::thread::sleep(Duration::from_secs(2));
    produce(&s, &source, 20_000, &[], 4);
    // Per partition: offsets covered by the windows of both processes.
    let covered = || {
        let mut per: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
        for w in windows(&s.path("a.jsonl")).iter().chain(&windows(&s.path("b.jsonl"))) {
            let (first, last) = (w["first_offset"].as_u64().unwrap(), w["last_offset"].as_u64().unwrap());
            per.entry(w["partition"].as_u64().unwrap()).or_default().extend(first..=last);
        }
        per
    };
    wait_for_hosts(&[&a, &b], "every record", Duration::from_secs(120), || covered().values().map(BTreeSet::len).sum::<usize>() >= 40_200 - 4 * 500);
    std::thread::sleep(Duration::from_secs(2));
    interrupt_all(vec![a, b]);
    let per = covered();
    for (p, offsets) in &per {
        let last = *offsets.last().unwrap();
        assert_eq!(offsets.len() as u64, last + 1, "partition {p} has a gap");
    }
    assert_eq!(per.values().map(BTreeSet::len).sum::<usize>(), 40_200, "records lost in the rebalance");
    assert!(!windows(&s.path("b.jsonl")).is_empty(), "the second process got no partition");
}

/// A replay from offset 0 analyses the windows again but does not repeat
/// their alerts; findings and alerts also go to a topic.
#[test]
fn kafka_replay_does_not_repeat_alerts_and_findings_go_to_a_topic() {
    let s = Sandbox::with_bundled();
    let topic = fresh("replay");
    let base = format!("{}/{topic}", kafka());
    produce(&s, &base, 20_000, &["nulls@15000+1000"], 1);
    let first = until_end(&s, &format!("{base}?group=r&findings={topic}-findings"), "w1.jsonl");
    let sent = first.summary()["alerts"].as_u64().unwrap();
    assert!(sent > 0);
    let replay = until_end(&s, &format!("{base}?group=r&offset=0"), "w2.jsonl");
    let summary = replay.summary();
    assert_eq!(summary["records"], 20_000);
    assert_eq!(summary["alerts"], 0, "{summary}");
    assert_eq!(summary["replayed_alerts"], sent);
    let findings = until_end(&s, &format!("{}/{topic}-findings?group=f&format=string", kafka()), "f.jsonl").summary();
    assert!(findings["records"].as_u64().unwrap() >= sent, "{findings}");
}

#[test]
fn unreachable_brokers_fail_fast_naming_the_address() {
    let s = Sandbox::with_bundled();
    for source in ["kafka://127.0.0.1:1/t", "pulsar://127.0.0.1:1/public/default/t", "redis://127.0.0.1:1/s"] {
        let start = Instant::now();
        let run = s.run(&["--source", source, "--until-end"]);
        assert_ne!(run.code, Some(0), "{source}");
        assert!(run.stderr.contains("127.0.0.1:1"), "{source}: {}", run.stderr);
        assert!(start.elapsed() < Duration::from_secs(40), "{source} took {:?}", start.elapsed());
    }
}

#[test]
fn bad_broker_urls_are_clear_errors() {
    let s = Sandbox::with_bundled();
    for (source, needle) in [
        ("kafka://localhost/t", "host:port"),
        ("kafka://127.0.0.1:9/t?grop=x", "unknown parameter 'grop'"),
        ("pulsar://127.0.0.1:9/just-a-topic", "tenant/namespace/topic"),
        ("redis://127.0.0.1:9/s?offset=soon", "soon"),
    ] {
        let run = s.run(&["--source", source]);
        assert_eq!(run.code, Some(1), "{source}");
        assert!(run.stderr.contains(needle), "{source}: {}", run.stderr);
    }
}
