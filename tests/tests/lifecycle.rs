//! Plugin lifecycle against the real binary: hot reload with state handoff,
//! automatic rollback, shadow runs and promotion, tenants and their budgets,
//! and alert handlers that reach the network only through the host.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use clean_host_tests::brokers::windows;
use clean_host_tests::http::Recorder;
use clean_host_tests::{bundled, fault_plugin, host_command, plugin, wait_until, Sandbox, BUNDLED};
use serde_json::Value;

/// The generator at `rate` records/s for `records` records, in the background.
fn spawn_generator(s: &Sandbox, records: u64, rate: u64, extra: &[&str]) -> Child {
    host_command()
        .args(["--records", &records.to_string(), "--rate", &rate.to_string(), "--quiet", "--format", "json"])
        .args(["--windows-file", s.path("windows.jsonl").to_str().unwrap()])
        .args(["--alerts-file", s.path("alerts.jsonl").to_str().unwrap()])
        .arg("--plugins")
        .arg(s.plugins())
        .arg("--data-dir")
        .arg(s.path("data"))
        .args(extra)
        .current_dir(s.dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(s.path("stderr.log")).unwrap())
        .spawn()
        .expect("start clean-host")
}

/// Replace a file in one step, as a deploy should.
fn put(path: &Path, contents: impl AsRef<[u8]>) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn windows_so_far(s: &Sandbox) -> usize {
    std::fs::read_to_string(s.path("windows.jsonl")).map_or(0, |t| t.lines().count())
}

/// Wait until `more` windows past now were written.
fn wait_windows(s: &Sandbox, more: usize) {
    let target = windows_so_far(s) + more;
    wait_until(&format!("{target} windows"), Duration::from_secs(60), || windows_so_far(s) >= target);
}

/// The counter plugin's count in each window, in window order.
fn counts(ws: &[Value]) -> Vec<u64> {
    ws.iter().filter_map(|w| w["findings"].as_array()?.iter().find(|f| f["metric"] == "seen").map(|f| f["value"].as_f64().unwrap() as u64)).collect()
}

fn finish(mut child: Child, s: &Sandbox) -> (String, Value) {
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(s.path("stderr.log")).unwrap();
    assert!(status.success(), "clean-host failed:\n{stderr}");
    let summary = serde_json::from_str(stderr.lines().last().unwrap()).unwrap();
    (stderr, summary)
}

fn alerts(s: &Sandbox) -> Vec<Value> {
    std::fs::read_to_string(s.path("alerts.jsonl")).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn reloads_hand_state_over_roll_back_and_promote() {
    let s = Sandbox::empty();
    s.add_plugin(&fault_plugin("counter"));
    let manifest = s.plugins().join("counter.toml");
    put(&manifest, "[config]\nlabel = 'v1'\n");
    let child = spawn_generator(&s, 150_000, 15_000, &["--window", "1000"]);
    wait_windows(&s, 5);
    // A new version (here: new config) takes over with the old state.
    put(&manifest, "[config]\nlabel = 'v2'\n");
    wait_windows(&s, 10);
    // A file that is not a component is rejected; v2 keeps running.
    put(&s.plugins().join("counter.wasm.broken"), b"not wasm");
    std::fs::rename(s.plugins().join("counter.wasm.broken"), s.plugins().join("broken.wasm")).unwrap();
    wait_windows(&s, 5);
    std::fs::remove_file(s.plugins().join("broken.wasm")).unwrap();
    // A version that fails on its first windows is rolled back by the host.
    put(&manifest, "[config]\nlabel = 'v3'\nfail = true\n");
    wait_windows(&s, 10);
    // A shadow version sees the same windows without alerting; then it is promoted.
    std::fs::create_dir(s.plugins().join("shadow")).unwrap();
    std::fs::copy(fault_plugin("counter"), s.plugins().join("shadow/counter.wasm.tmp")).unwrap();
    put(&s.plugins().join("shadow/counter.toml"), "[config]\nlabel = 'v4'\n");
    std::fs::rename(s.plugins().join("shadow/counter.wasm.tmp"), s.plugins().join("shadow/counter.wasm")).unwrap();
    wait_windows(&s, 10);
    // The running host rewrites its status file every second.
    wait_until("the shadow in the status file", Duration::from_secs(10), || {
        std::fs::read_to_string(s.path("data/plugins-status.json")).is_ok_and(|t| t.contains(r#""status":"shadow""#))
    });
    let listed = host_command().args(["plugin", "list", "--json", "--plugins"]).arg(s.plugins()).arg("--data-dir").arg(s.path("data")).output().unwrap();
    let promote = host_command().args(["plugin", "promote", "counter", "--plugins"]).arg(s.plugins()).output().unwrap();
    assert!(promote.status.success(), "{}", String::from_utf8_lossy(&promote.stderr));
    wait_windows(&s, 10);
    // A new plugin dropped in joins the pipeline; a removed one leaves it.
    s.add_plugin(&bundled("volume"));
    wait_windows(&s, 10);
    std::fs::remove_file(s.plugins().join("volume.wasm")).unwrap();
    let (stderr, summary) = finish(child, &s);

    // Every window once, every record once.
    let ws = windows(&s.path("windows.jsonl"));
    assert_eq!(ws.len(), 150);
    let seqs: Vec<u64> = ws.iter().map(|w| w["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..150).collect::<Vec<_>>());
    // The count runs 1..=150 through every swap: state handed over, no window seen twice or skipped.
    assert_eq!(counts(&ws), (1..=150).collect::<Vec<_>>(), "{stderr}");
    assert!(stderr.contains("reload rejected, the running version stays") && stderr.contains("broken.wasm"), "{stderr}");
    assert!(stderr.contains("8 bytes of state handed over"), "{stderr}");
    assert!(stderr.contains("shadow version 0.0.1") && stderr.contains("promoted"), "{stderr}");
    assert!(stderr.contains("plugin volume 0.1.0") && stderr.contains("added"), "{stderr}");
    assert!(stderr.contains("plugin volume was removed"), "{stderr}");
    // The shadow's findings were recorded apart, never alerted.
    let shadowed = ws.iter().filter(|w| w["shadow_findings"].as_array().is_some_and(|f| !f.is_empty())).count();
    assert!(shadowed >= 5, "{shadowed} windows with shadow findings");
    let listed: Vec<Value> = String::from_utf8_lossy(&listed.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let shadow = listed.iter().find(|p| p["status"] == "shadow").unwrap_or_else(|| panic!("no shadow in {listed:?}"));
    assert!(shadow["running"].as_bool().unwrap() && shadow["calls"].as_u64().unwrap() >= 5, "{shadow}");
    // The rollback raised one critical alert, and the rolled-back version is visible.
    let rolled: Vec<Value> = alerts(&s).into_iter().filter(|a| a["metric"] == "plugin_rolled_back").collect();
    assert_eq!(rolled.len(), 1, "{rolled:?}");
    assert_eq!(rolled[0]["severity"], "critical");
    assert!(alerts(&s).iter().all(|a| a["metric"] != "seen"));
    let statuses: Vec<&str> = summary["plugins"].as_array().unwrap().iter().filter(|p| p["name"] == "counter").map(|p| p["status"].as_str().unwrap()).collect();
    assert!(statuses.contains(&"active") && statuses.contains(&"rolled-back"), "{statuses:?}");
    let active = summary["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "counter" && p["status"] == "active").unwrap();
    assert!(active["reloads"].as_u64().unwrap() >= 3, "{active}");
    assert_eq!(summary["tenants"][0]["rejected_reloads"], 1);
}

#[test]
fn tenants_are_contained_by_their_own_budgets() {
    let s = Sandbox::empty();
    for tenant in ["calm", "wild"] {
        std::fs::create_dir(s.plugins().join(tenant)).unwrap();
    }
    for name in BUNDLED {
        std::fs::copy(bundled(name), s.plugins().join("calm").join(format!("{name}.wasm"))).unwrap();
    }
    for name in ["spin", "memory_bomb"] {
        std::fs::copy(fault_plugin(name), s.plugins().join("wild").join(format!("{name}.wasm"))).unwrap();
    }
    s.write(
        "tenants.toml",
        r#"
        [[tenants]]
        name = "calm"
        alerts = { min_severity = "critical" }
        [[tenants]]
        name = "wild"
        limits = { timeout_ms = 100, memory_mib = 64, total_memory_mib = 40 }
        [[pipelines]]
        name = "calm-orders"
        tenant = "calm"
        source = "generator"
        generator = { records = 20000, inject = ["nulls@15000+1000"] }
        [[pipelines]]
        name = "wild-orders"
        tenant = "wild"
        source = "generator"
        generator = { records = 20000 }
        "#,
    );
    let run = s.run(&["--config", "tenants.toml", "--format", "json", "--window", "1000"]);
    run.assert_ok();
    let summary = run.summary();
    let plugins = summary["plugins"].as_array().unwrap();
    for p in plugins.iter().filter(|p| p["tenant"] == "calm") {
        assert_eq!((p["status"].as_str(), p["errors"].as_u64(), p["calls"].as_u64()), (Some("active"), Some(0), Some(20)), "{p}");
        assert_eq!(p["pipeline"], "calm-orders");
    }
    assert_eq!(plugins.iter().filter(|p| p["tenant"] == "calm").count(), 8);
    let spin = plugin(&summary, "spin");
    assert_eq!((spin["tenant"].as_str(), spin["status"].as_str()), (Some("wild"), Some("quarantined")), "{spin}");
    // The bomb stays under its own 64 MiB cap; the tenant's 40 MiB stop it first.
    let quarantine = run.alerts().into_iter().find(|a| a["detector"] == "memory-bomb" && a["metric"] == "plugin_quarantined").expect("bomb quarantined");
    assert!(quarantine["message"].as_str().unwrap().contains("exceeded tenant wild's memory budget of 40 MiB"), "{quarantine}");
    // The calm tenant's alerts are its own, routed by its own rules (critical only:
    // its null-rate warnings stay quiet).
    let calm: Vec<Value> = run.alerts().into_iter().filter(|a| a["pipeline"] == "calm-orders").collect();
    assert!(calm.is_empty(), "{calm:?}");
    let calm_report = summary["pipelines"].as_array().unwrap().iter().find(|p| p["name"] == "calm-orders").unwrap();
    assert!(calm_report["min_score"].as_f64().unwrap() < 1.0, "the null-rate findings were there: {calm_report}");
    assert!(run.alerts().iter().all(|a| a["pipeline"] == "wild-orders"));
    let tenants = summary["tenants"].as_array().unwrap();
    assert!(tenants.iter().any(|t| t["name"] == "wild" && t["instances"] == 0), "{tenants:?}");

    // A tenant may not hold more instances than it is allowed.
    s.write("tight.toml", "[[tenants]]\nname = 'calm'\nlimits = { max_instances = 3 }\n[[pipelines]]\nname = 'p'\ntenant = 'calm'\nsource = 'generator'\n");
    let tight = s.run(&["check", "--config", "tight.toml"]);
    assert_eq!(tight.code, Some(1));
    assert!(tight.stderr.contains("tenant calm already has 3 instances (max_instances = 3)"), "{}", tight.stderr);

    // Its plugins load side by side but describe themselves one at a time:
    // a tenant whose memory holds one instance (a describe takes a little
    // over 1 MiB) still loads every one of them.
    s.write("one.toml", "[[tenants]]\nname = 'calm'\nlimits = { total_memory_mib = 2 }\n");
    for _ in 0..3 {
        let listed = s.run(&["plugin", "list", "--json", "--config", "one.toml"]);
        listed.assert_ok();
        let rows: Vec<Value> = listed.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let calm: Vec<&Value> = rows.iter().filter(|r| r["tenant"] == "calm").collect();
        assert!(calm.len() == BUNDLED.len() && calm.iter().all(|r| r["status"] == "active"), "{}", listed.stdout);
    }
}

#[test]
fn alert_handlers_deliver_through_the_host_only() {
    let server = Recorder::start();
    let port = server.port;
    let s = Sandbox::with_bundled();
    for name in ["webhook", "slack", "pagerduty", "template"] {
        s.add_plugin(&bundled(name));
    }
    s.write(
        "handlers.toml",
        format!(
            r#"
            [[tenants]]
            name = "default"
            egress.allow = ["127.0.0.1:{port}"]
            egress.retries = 2
            egress.backoff_ms = 50
            egress.destinations.hook = {{ url = "http://127.0.0.1:{port}/hook/HOOK-SECRET-1", headers = {{ Authorization = "Bearer HEADER-SECRET-2" }} }}
            egress.destinations.ops-slack = {{ url = "env:TEST_SLACK_URL" }}
            egress.destinations.pd = {{ url = "http://127.0.0.1:{port}/pd", secrets = {{ routing_key = "ROUTING-SECRET-3" }} }}
            egress.destinations.down = {{ url = "http://127.0.0.1:{port}/fail/DOWN-SECRET-4" }}
            [[tenants.handlers]]
            plugin = "webhook"
            config = {{ destination = "hook" }}
            [[tenants.handlers]]
            plugin = "slack"
            min_severity = "critical"
            config = {{ destination = "ops-slack" }}
            [[tenants.handlers]]
            plugin = "pagerduty"
            config = {{ destination = "pd" }}
            [[tenants.handlers]]
            plugin = "template"
            config = {{ destination = "down", template = "{{severity}} {{pipeline}}" }}
            [[tenants.handlers]]
            plugin = "webhook"
            config = {{ destination = "nowhere" }}
            [[pipelines]]
            name = "orders"
            source = "generator"
            generator = {{ records = 20000, inject = ["nulls@15000+1000"] }}
            "#
        ),
    );
    let mut cmd = host_command();
    cmd.args(["--config", "handlers.toml", "--format", "json", "--window", "1000", "--plugins"])
        .arg(s.plugins())
        .arg("--data-dir")
        .arg(s.path("data"))
        .env("TEST_SLACK_URL", format!("http://127.0.0.1:{port}/slack/SLACK-SECRET-5"))
        .current_dir(s.dir.path());
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let alerts: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!alerts.is_empty());
    let received = server.received();
    let to = |prefix: &str| received.iter().filter(|r| r.path.starts_with(prefix)).cloned().collect::<Vec<_>>();
    // Handlers get one alert per incident (a window's alerts about one column).
    let summary: Value = serde_json::from_str(stderr.lines().last().unwrap()).unwrap();
    let incidents = summary["incidents"].as_u64().unwrap() as usize;
    assert!(incidents > 0 && incidents <= alerts.len(), "{summary}");
    // The webhook got every incident, as JSON, with the header secret the host added.
    let hook = to("/hook/HOOK-SECRET-1");
    assert_eq!(hook.len(), incidents, "{received:?}");
    assert_eq!(hook[0].header("authorization"), Some("Bearer HEADER-SECRET-2"));
    let body: Value = serde_json::from_str(&hook[0].body).unwrap();
    assert_eq!((body["pipeline"].as_str(), body["window"]["seq"].as_u64()), (Some("orders"), Some(15)));
    // Slack got only critical ones; PagerDuty got the routing key filled in by the host.
    let slack = to("/slack/SLACK-SECRET-5").len();
    assert_eq!(slack > 0, alerts.iter().any(|a| a["severity"] == "critical"));
    assert!(slack <= incidents);
    let pd = to("/pd");
    assert_eq!(pd.len(), incidents);
    let event: Value = serde_json::from_str(&pd[0].body).unwrap();
    assert_eq!((event["routing_key"].as_str(), event["event_action"].as_str()), (Some("ROUTING-SECRET-3"), Some("trigger")));
    // The failing destination was retried, then given up on; analysis went on.
    assert_eq!(to("/fail").len(), incidents * 3);
    let egress = &summary["tenants"][0]["egress"];
    assert_eq!(egress["failed"].as_u64(), Some(incidents as u64), "{egress}");
    assert_eq!(egress["retried"].as_u64(), Some(incidents as u64 * 2), "{egress}");
    // The handler whose destination does not exist is refused each time (and quarantined after 3).
    assert_eq!(egress["refused"].as_u64(), Some(incidents.min(3) as u64), "{egress}");
    assert_eq!(egress["delivered"].as_u64(), Some((incidents * 2 + slack) as u64), "{egress}");
    assert_eq!(summary["windows"], 20);
    // Handlers are listed with their counters.
    let handlers: Vec<&Value> = summary["plugins"].as_array().unwrap().iter().filter(|p| p["kind"] == "alert-handler").collect();
    assert_eq!(handlers.len(), 5);
    // No secret ever reaches the log.
    for secret in ["HOOK-SECRET-1", "HEADER-SECRET-2", "ROUTING-SECRET-3", "DOWN-SECRET-4", "SLACK-SECRET-5"] {
        assert!(!stderr.contains(secret), "{secret} in the log:\n{stderr}");
    }
    assert!(stderr.contains("destination 'down' failed after 3 attempt(s): answered 500"), "{stderr}");

    // Deny by default: a destination off the allow list is refused at start, by host only.
    s.write(
        "off-list.toml",
        "[[tenants]]\nname = 'default'\negress.destinations.x = { url = 'http://127.0.0.2:9/path/OFF-SECRET' }\n[[tenants.handlers]]\nplugin = 'webhook'\nconfig = { destination = 'x' }\n",
    );
    let refused = s.run(&["check", "--config", "off-list.toml"]);
    assert_eq!(refused.code, Some(1));
    assert!(refused.stderr.contains("127.0.0.2:9 is not on the tenant's egress allow list") && !refused.stderr.contains("OFF-SECRET"), "{}", refused.stderr);
}

#[test]
fn hostile_alert_handlers_are_contained() {
    let server = Recorder::start();
    let port = server.port;
    let s = Sandbox::with_bundled();
    s.add_plugin(&fault_plugin("rogue_handler"));
    s.write(
        "rogue.toml",
        format!(
            r#"
            [[tenants]]
            name = "default"
            limits = {{ timeout_ms = 200 }}
            egress.allow = ["127.0.0.1:{port}"]
            egress.queue = 20
            egress.destinations.hook = {{ url = "http://127.0.0.1:{port}/hook" }}
            [[tenants.handlers]]
            plugin = "rogue"
            config = {{ flood = 300, destination = "hook", sneak = ["exfil", "http://evil.example/steal"] }}
            [[tenants.handlers]]
            plugin = "rogue"
            config = {{ spin = true }}
            [[pipelines]]
            name = "orders"
            source = "generator"
            generator = {{ records = 20000, inject = ["nulls@15000+1000"] }}
            "#
        ),
    );
    let run = s.run(&["--config", "rogue.toml", "--format", "json", "--window", "1000"]);
    run.assert_ok();
    let summary = run.summary();
    assert!(!run.alerts().is_empty());
    // Handlers get one alert per incident.
    let incidents = summary["incidents"].as_u64().unwrap();
    // Analysis was not held up: every window, every detector active.
    assert_eq!(summary["windows"], 20);
    for p in summary["plugins"].as_array().unwrap().iter().filter(|p| p["kind"] == "detector") {
        assert_eq!((p["status"].as_str(), p["errors"].as_u64()), (Some("active"), Some(0)), "{p}");
    }
    // The spinning handler was stopped by its time budget on every incident.
    let handlers: Vec<&Value> = summary["plugins"].as_array().unwrap().iter().filter(|p| p["kind"] == "alert-handler").collect();
    assert!(handlers.iter().any(|h| h["errors"].as_u64() == Some(incidents)), "{handlers:?}");
    assert!(run.stderr.contains("alert handler rogue timed out after 200 ms"), "{}", run.stderr);
    // Undeclared destinations were refused; the flood filled the bounded queue and the rest was dropped.
    let egress = &summary["tenants"][0]["egress"];
    assert_eq!(egress["refused"].as_u64(), Some(2 * incidents), "{egress}");
    let (queued, dropped, delivered) = (egress["queued"].as_u64().unwrap(), egress["dropped"].as_u64().unwrap(), egress["delivered"].as_u64().unwrap());
    assert_eq!(queued + dropped, 300 * incidents, "{egress}");
    assert!(dropped > 0 && delivered == queued, "{egress}");
    // Only the declared destination was ever reached.
    let received = server.received();
    assert_eq!(received.len() as u64, delivered);
    assert!(received.iter().all(|r| r.path == "/hook"));
}

#[test]
fn alert_handlers_follow_new_builds() {
    let server = Recorder::start();
    let port = server.port;
    let s = Sandbox::with_bundled();
    s.add_plugin(&bundled("webhook"));
    s.write(
        "hook.toml",
        format!(
            r#"
            [[tenants]]
            name = "default"
            egress.allow = ["127.0.0.1:{port}"]
            egress.destinations.hook = {{ url = "http://127.0.0.1:{port}/hook" }}
            [[tenants.handlers]]
            plugin = "webhook"
            config = {{ destination = "hook" }}
            [[pipelines]]
            name = "orders"
            source = "generator"
            "#
        ),
    );
    let child = spawn_generator(&s, 40_000, 8_000, &["--config", "hook.toml", "--window", "1000", "--inject", "nulls@15000+1000,nulls@30000+1000"]);
    wait_until("the first alert delivered", Duration::from_secs(30), || !server.received().is_empty());
    let first = server.received().len();
    // A new build (here: a manifest with other limits) of the handler, mid-run.
    put(&s.plugins().join("webhook.toml"), "timeout_ms = 1500\n");
    let (stderr, summary) = finish(child, &s);
    assert!(stderr.contains("alert handler webhook 0.1.0 loaded") && stderr.contains("alert handler webhook 0.1.0 ("), "{stderr}");
    assert!(stderr.contains(") -> 0.1.0 (") && stderr.contains("no state to hand over"), "{stderr}");
    let hook = summary["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "webhook").unwrap();
    assert_eq!((hook["reloads"].as_u64(), hook["errors"].as_u64()), (Some(1), Some(0)), "{hook}");
    let history = rusqlite::Connection::open(s.path("data/history.db")).unwrap();
    let events = "SELECT count(*) FROM plugin_events WHERE plugin = 'webhook' AND event = 'swapped' AND pipeline IS NULL";
    let swapped: i64 = history.query_row(events, [], |r| r.get(0)).unwrap();
    assert_eq!(swapped, 1, "a handler's new build is a plugin event in the history, as a detector's is");
    // Every incident of the run reached the destination, before and after the new build.
    assert!(server.received().len() > first);
    assert_eq!(server.received().len() as u64, summary["incidents"].as_u64().unwrap());
}
