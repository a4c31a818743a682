//! Operating a running host: the history store across restarts, the HTTP
//! API and `/metrics` per tenant, the dashboard in headless Chromium, JSON
//! logs without secrets, and a clear dead-letter reason for every kind of
//! bad input.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clean_host_tests::http::get;
use clean_host_tests::{host_command, wait_until, Sandbox};
use serde_json::Value;

const TOKEN_A: &str = "token-of-team-a-0123456789";
const TOKEN_B: &str = "token-of-team-b-9876543210";

/// Two tenants, each with an endless generator pipeline; team a's data has
/// a burst of nulls at record 10,000 (window 10).
fn two_tenant_config(s: &Sandbox) -> std::path::PathBuf {
    for tenant in ["team-a", "team-b"] {
        std::fs::create_dir_all(s.plugins().join(tenant)).unwrap();
        for name in ["completeness", "volume"] {
            std::fs::copy(clean_host_tests::bundled(name), s.plugins().join(tenant).join(format!("{name}.wasm"))).unwrap();
        }
    }
    s.write(
        "ops.toml",
        format!(
            r#"
[[tenants]]
name = "team-a"
api_token = "env:TEAM_A_TOKEN"

[[tenants]]
name = "team-b"
api_token = "{TOKEN_B}"

[[pipelines]]
name = "orders"
tenant = "team-a"
source = "generator"
window = {{ size = 1000 }}
generator = {{ rate = 10000, inject = ["nulls@15000+1000"] }}

[[pipelines]]
name = "payments"
tenant = "team-b"
source = "generator"
window = {{ size = 1000 }}
generator = {{ rate = 5000 }}
"#
        ),
    )
}

/// The host in the background; its stderr lines arrive on a channel.
struct Host {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Host {
    fn start(s: &Sandbox, args: &[&str]) -> Host {
        let mut child = host_command()
            .args(args)
            .arg("--plugins")
            .arg(s.plugins())
            .arg("--data-dir")
            .arg(s.path("data"))
            .env("TEAM_A_TOKEN", TOKEN_A)
            .current_dir(s.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start clean-host");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Host { child, lines, seen: Vec::new() }
    }

    /// The first stderr line containing `needle`.
    fn wait_for(&mut self, needle: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break, // the host exited
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
        panic!("no '{needle}' on stderr:\n{}", self.seen.join("\n"));
    }

    /// The address the API listens on.
    fn address(&mut self) -> String {
        let line = self.wait_for("/metrics on http://");
        let start = line.find("http://").unwrap() + 7;
        line[start..].split('/').next().unwrap().to_string()
    }

    /// Ctrl-C, then the summary.
    fn stop(mut self) -> (Value, Vec<String>) {
        Command::new("kill").args(["-INT", &self.child.id().to_string()]).status().unwrap();
        let status = self.child.wait().unwrap();
        self.seen.extend(self.lines.try_iter());
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(line);
        }
        assert!(status.success(), "host failed:\n{}", self.seen.join("\n"));
        let summary = serde_json::from_str(self.seen.last().expect("a summary")).expect("summary JSON");
        (summary, self.seen)
    }
}

/// Linux's batch scheduling policy, as `/proc/<pid>/task/<tid>/stat` numbers it.
const SCHED_BATCH: u32 = 3;

/// The scheduling policy in the text of a `/proc/<pid>[/task/<tid>]/stat`:
/// after the name (which may hold spaces), fields from the third on; the
/// policy is the 41st.
fn policy(stat: &str) -> u32 {
    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(41 - 3)).and_then(|p| p.parse().ok()).expect("a policy")
}

/// Each thread of process `pid`: its name and scheduling policy.
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the host's threads");
    let mut threads = Vec::new();
    for task in tasks.map_while(Result::ok) {
        let (Ok(name), Ok(stat)) = (std::fs::read_to_string(task.path().join("comm")), std::fs::read_to_string(task.path().join("stat"))) else {
            continue; // ended meanwhile
        };
        threads.push((name.trim_end().to_string(), policy(&stat)));
    }
    threads
}

fn json(addr: &str, path: &str, token: &str) -> Value {
    let (status, body) = get(addr, path, Some(token));
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// Every window in the history for `token`'s tenant, following the cursor.
fn all_windows(addr: &str, token: &str, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut path = format!("/api/windows?limit=100{query}");
    loop {
        let page = json(addr, &path, token);
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_i64() {
            Some(c) => path = format!("/api/windows?limit=100{query}&cursor={c}"),
            None => return out,
        }
    }
}

/// Headless Chromium's DOM of `url` after its scripts ran.
fn chromium_dom(s: &Sandbox, url: &str) -> String {
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"])
        .args(["--disable-component-update", "--disable-sync", "--virtual-time-budget=10000", "--dump-dom"])
        .arg(format!("--user-data-dir={}", s.path("chromium").display()))
        .arg(url)
        .output()
        .expect("chromium (scripts/test installs Debian's chromium)");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What `promtool check metrics` (Debian's `prometheus` package; scripts/test
/// installs it) says of an exposition: empty when it finds nothing.
fn promtool_check_metrics(exposition: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus; scripts/test installs it)");
    child.stdin.take().expect("stdin").write_all(exposition.as_bytes()).expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    match out.status.success() {
        true => said.trim().to_string(),
        false => format!("exit {}: {said}", out.status),
    }
}

#[test]
fn history_api_metrics_and_dashboard_per_tenant() {
    let s = Sandbox::empty();
    let config = two_tenant_config(&s);
    let mut host = Host::start(&s, &["--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0", "--quiet", "--format", "json"]);
    let addr = host.address();

    // The burst of nulls in window 15 becomes an alert with its findings, in the history.
    wait_until("team a's null alert in the history", Duration::from_secs(90), || {
        json(&addr, "/api/alerts", TOKEN_A)["items"].as_array().unwrap().iter().any(|a| a["metric"] == "null_rate")
    });
    let alerts = json(&addr, "/api/alerts", TOKEN_A);
    let nulls: Vec<&Value> = alerts["items"].as_array().unwrap().iter().filter(|a| a["metric"] == "null_rate").collect();
    assert!(nulls.iter().all(|a| a["pipeline"] == "orders" && a["seq"] == 15), "{alerts}");
    assert!(nulls[0]["findings"].as_array().unwrap().iter().any(|f| f["column"] == nulls[0]["column"]), "{alerts}");

    // The bulk work runs as batch work; what must answer at once stays in
    // the class the host was started in (this test's, normally SCHED_OTHER).
    let policies = thread_policies(host.child.id());
    let started_in = policy(&std::fs::read_to_string("/proc/self/stat").expect("this test's own stat"));
    let policy = |name: &str| policies.iter().filter(|(n, _)| n.starts_with(name)).map(|&(_, p)| p).collect::<Vec<_>>();
    // (Names are cut to 15 bytes: team-a-detectors-0 is team-a-detector.)
    for (thread, expected) in [
        ("orders-pipeline", SCHED_BATCH),
        ("orders-source", SCHED_BATCH),
        ("team-a-detector", SCHED_BATCH),
        ("history", SCHED_BATCH),
        ("epoch", started_in),
        ("http", started_in),
        ("plugin-watcher", started_in),
    ] {
        let found = policy(thread);
        assert!(!found.is_empty() && found.iter().all(|&p| p == expected), "{thread}: {found:?} in {policies:?}");
    }

    // Probes answer without a token, and say nothing of any tenant.
    assert_eq!(get(&addr, "/healthz", None), (200, "ok\n".to_string()));
    assert_eq!(get(&addr, "/readyz", None), (200, "ready\n".to_string()));

    // Without a token, or with a wrong one: nothing.
    for path in ["/api/pipelines", "/api/windows", "/api/alerts", "/api/findings", "/api/plugins", "/api/plugin-events", "/metrics"] {
        assert_eq!(get(&addr, path, None).0, 401, "{path} without a token");
        assert_eq!(get(&addr, path, Some("not-a-token")).0, 401, "{path} with a wrong token");
    }
    // Each tenant sees its own pipeline only.
    let pipelines_a = json(&addr, "/api/pipelines", TOKEN_A);
    assert_eq!(pipelines_a.as_array().unwrap().iter().map(|p| p["name"].clone()).collect::<Vec<_>>(), ["orders"]);
    let b_windows = all_windows(&addr, TOKEN_B, "");
    assert!(!b_windows.is_empty() && b_windows.iter().all(|w| w["pipeline"] == "payments"));
    assert!(json(&addr, "/api/alerts?pipeline=orders", TOKEN_B)["items"].as_array().unwrap().is_empty(), "team b sees team a's alerts");
    assert!(json(&addr, "/api/plugins", TOKEN_B)["plugins"].as_array().unwrap().iter().all(|p| p["pipeline"] == "payments"));
    // Pages: newest first, the cursor leads to older ones, a time range narrows.
    let page = json(&addr, "/api/windows?limit=3", TOKEN_A);
    let ids: Vec<i64> = page["items"].as_array().unwrap().iter().map(|w| w["id"].as_i64().unwrap()).collect();
    assert!(ids.len() == 3 && ids.windows(2).all(|w| w[0] > w[1]), "{page}");
    let next = json(&addr, &format!("/api/windows?limit=3&cursor={}", page["next_cursor"]), TOKEN_A);
    assert!(next["items"][0]["id"].as_i64().unwrap() < ids[2], "{next}");
    let at = nulls[0]["at_ms"].as_i64().unwrap();
    let around = json(&addr, &format!("/api/windows?from={at}&to={}", at + 1), TOKEN_A);
    assert!(around["items"].as_array().unwrap().iter().any(|w| w["seq"] == 15), "{around}");
    assert_eq!(get(&addr, "/api/windows?limit=ten", Some(TOKEN_A)).0, 400);
    assert_eq!(get(&addr, "/api/windows?colour=blue", Some(TOKEN_A)).0, 400);

    // /metrics: team a's series only.
    let (status, metrics) = get(&addr, "/metrics", Some(TOKEN_A));
    assert_eq!(status, 200);
    for series in [
        "clean_host_records_total{tenant=\"team-a\",pipeline=\"orders\"}",
        "clean_host_records_per_second{",
        "clean_host_consumer_lag_records{",
        "clean_host_quality_score{tenant=\"team-a\",pipeline=\"orders\"}",
        "clean_host_alerts_total{tenant=\"team-a\",pipeline=\"orders\",severity=\"warning\"}",
        "clean_host_dead_letters_total{",
        "clean_host_plugin_calls_total{tenant=\"team-a\",pipeline=\"orders\",plugin=\"completeness\",kind=\"detector\",version=\"0.1.0\",status=\"active\"}",
        "clean_host_plugin_errors_total{",
        "clean_host_plugin_call_seconds{",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    assert!(!metrics.contains("payments") && !metrics.contains("team-b"), "{metrics}");
    let lint = promtool_check_metrics(&metrics);
    assert!(lint.is_empty(), "promtool check metrics:\n{lint}\n{metrics}");

    // The dashboard, in a real browser: the chart shows window 15's drop, the alert is listed.
    let dom = chromium_dom(&s, &format!("http://{addr}/#token={TOKEN_A}"));
    assert!(dom.contains(r#"data-loaded="true""#), "the page did not load its data:\n{dom}");
    assert!(dom.contains(r#"class="score-chart" data-pipeline="orders""#) || dom.contains(r#"data-pipeline="orders""#), "{dom}");
    assert!(dom.contains(r#"class="alert-point""#) && dom.contains(r#"data-seq="15""#), "no marked fault window in the chart:\n{dom}");
    let min_score: f64 = dom.split(r#"data-min-score=""#).nth(1).and_then(|r| r.split('"').next()).and_then(|v| v.parse().ok()).expect("data-min-score");
    assert!(min_score < 1.0, "{min_score}");
    assert!(dom.contains(r#"class="alert" data-metric="null_rate""#), "the alert is not listed:\n{dom}");
    assert!(!dom.contains("payments"), "team b's pipeline on team a's dashboard");

    let (summary, log) = host.stop();
    let written = summary["history"]["windows"].as_u64().unwrap();
    assert!(written > 10, "{summary}");
    assert_eq!(summary["history"]["dropped"], 0, "{summary}");
    let tokens_in_log = log.iter().filter(|l| l.contains(TOKEN_A) || l.contains(TOKEN_B)).count();
    assert_eq!(tokens_in_log, 0, "an API token reached the log");

    // A restart on the same data dir serves every window of the first run.
    let restarted = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let mut host = Host::start(&s, &["--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0", "--quiet"]);
    let addr = host.address();
    let before = format!("&to={restarted}");
    assert_eq!((all_windows(&addr, TOKEN_A, &before).len() + all_windows(&addr, TOKEN_B, &before).len()) as u64, written);
    host.stop();
}

#[test]
fn json_logs_are_one_object_a_line_without_secrets() {
    let s = Sandbox::with_bundled();
    std::fs::copy(clean_host_tests::fault_plugin("panic"), s.plugins().join("panic.wasm")).unwrap();
    let config = s.write("c.toml", "[[tenants]]\nname = \"default\"\napi_token = \"env:TEAM_A_TOKEN\"\n");
    let run = host_command()
        .args(["--config", config.to_str().unwrap(), "--records", "5000", "--log-format", "json", "--listen", "127.0.0.1:0", "--quiet"])
        .arg("--plugins")
        .arg(s.plugins())
        .arg("--data-dir")
        .arg(s.path("data"))
        .env("TEAM_A_TOKEN", TOKEN_A)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let lines: Vec<Value> = stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let (summary, logs) = lines.split_last().unwrap();
    assert!(summary["records"] == 5000, "{summary}");
    assert!(logs.iter().all(|l| l["level"].is_string() && l["timestamp"].is_string() && l["message"].is_string()), "{stderr}");
    let quarantined = logs.iter().find(|l| l["event"] == "quarantined").unwrap_or_else(|| panic!("no quarantine event:\n{stderr}"));
    assert_eq!((quarantined["plugin"].as_str(), quarantined["tenant"].as_str()), (Some("panic"), Some("default")), "{quarantined}");
    assert!(!stderr.contains(TOKEN_A));
    assert_eq!(summary["history"]["windows"], 5, "{summary}");
}

#[test]
fn bad_input_of_every_kind_gets_a_clear_dead_letter_reason() {
    let s = Sandbox::with_bundled();
    let mut data = Vec::new();
    for i in 0..20 {
        data.extend_from_slice(format!("{{\"id\": {i}, \"name\": \"n{i}\"}}\n").as_bytes());
    }
    data.extend_from_slice(b"{\"id\": 20, \"name\" 7}\n"); // malformed
    data.extend_from_slice(b"{\"id\": 21, \"name\": \"n2\n"); // truncated
    data.extend_from_slice(b"\x00\x01\xffPK\x03\x04 binary\n"); // binary
    data.push(b'{');
    data.extend(std::iter::repeat_n(b'x', 17 << 20)); // enormous: 17 MiB
    data.extend_from_slice(b"\n{\"id\": 24, \"name\": \"n24\"}\n");
    let file = s.write("bad.jsonl", data);
    let run = s.run(&["--source", file.to_str().unwrap(), "--window", "10"]);
    run.assert_ok();
    let summary = run.summary();
    assert_eq!((summary["records"].as_u64(), summary["dead_letters"].as_u64()), (Some(21), Some(4)), "{summary}");
    let dead: Vec<Value> = std::fs::read_to_string(s.path("data/dead-letters.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let reasons: Vec<&str> = dead.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert!(reasons[0].starts_with("invalid JSON: ") && reasons[0].contains("at byte 18"), "{reasons:?}");
    assert!(reasons[1].starts_with("truncated: the line ends after 22 bytes"), "{reasons:?}");
    assert_eq!(reasons[2], "binary data, not a JSON line: byte 0x00 at byte 0");
    assert!(reasons[3].contains("bytes is over the 16 MiB limit"), "{reasons:?}");
    // The binary line is kept byte for byte, in base64.
    assert_eq!(dead[2]["raw_base64"], "AAH/UEsDBCBiaW5hcnk=", "{}", dead[2]);
    assert_eq!(dead[3]["bytes"], (17u64 << 20) + 1);
    assert_eq!(dead.iter().map(|d| d["line"].as_u64().unwrap()).collect::<Vec<_>>(), [21, 22, 23, 24]);
}
