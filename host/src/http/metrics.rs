//! `/metrics`: one tenant's counters in the Prometheus text format (0.0.4).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::LiveStatus;
use crate::pipeline::PipelineCounters;
use clean_host_runtime::PluginStats;

/// Index order of `PipelineCounters::alerts_by_severity`.
pub const SEVERITIES: [&str; 3] = ["info", "warning", "critical"];

/// A label value with `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample<V: AsRef<str>>(&mut self, name: &str, labels: &[(&str, V)], value: f64) {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", label(v.as_ref()))).collect();
        let value = if value.is_finite() { value.to_string() } else { "NaN".into() };
        let _ = writeln!(self.out, "{name}{{{}}} {value}", labels.join(","));
    }
}

/// A counter family: its name, its help, and how to read it.
type PipelineCounter = (&'static str, &'static str, fn(&PipelineCounters) -> &AtomicU64);
type PluginCounter = (&'static str, &'static str, fn(&PluginStats) -> u64);

pub fn render(tenant: &str, pipelines: &[Arc<PipelineCounters>], status: &LiveStatus) -> String {
    let mine: Vec<&PipelineCounters> = pipelines.iter().map(|p| &**p).filter(|p| p.tenant == tenant).collect();
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
    let counters: [PipelineCounter; 8] = [
        ("clean_host_records_total", "Records read and placed in a window.", |p| &p.records),
        ("clean_host_windows_total", "Windows analysed.", |p| &p.windows),
        ("clean_host_dead_letters_total", "Records that could not be decoded (each with its reason in the dead-letter store).", |p| &p.dead_letters),
        ("clean_host_late_records_total", "Records whose event-time window had already closed.", |p| &p.late),
        ("clean_host_incidents_total", "Incidents: a window's alerts about one column, or about no column, count once.", |p| &p.incidents),
        ("clean_host_history_dropped_total", "Windows the history store could not take (its queue was full).", |p| &p.history_dropped),
        ("clean_host_checkpoints_total", "Checkpoints of detector and alert state stored with the committed positions.", |p| &p.checkpoints),
        ("clean_host_broker_errors_total", "Errors from the source's broker (the source reconnects and reads on).", |p| &p.progress.broker_errors),
    ];
    for (name, help, counter) in counters {
        f.header(name, "counter", help);
        for p in &mine {
            f.sample(name, &[("tenant", tenant), ("pipeline", &p.pipeline)], load(counter(p)));
        }
    }
    f.header("clean_host_records_per_second", "gauge", "Records read per second over the last second.");
    for p in &mine {
        f.sample("clean_host_records_per_second", &[("tenant", tenant), ("pipeline", &p.pipeline)], status.rates.get(&p.pipeline).copied().unwrap_or(0.0));
    }
    f.header(
        "clean_host_consumer_lag_records",
        "gauge",
        "Records on the broker not read yet, measured by the source every 2 s (0 for files and the generator).",
    );
    for p in &mine {
        f.sample("clean_host_consumer_lag_records", &[("tenant", tenant), ("pipeline", &p.pipeline)], p.lag() as f64);
    }
    f.header("clean_host_checkpoint_state_bytes", "gauge", "Detector state the last checkpoint carried.");
    for p in &mine {
        f.sample("clean_host_checkpoint_state_bytes", &[("tenant", tenant), ("pipeline", &p.pipeline)], load(&p.checkpoint_bytes));
    }
    f.header("clean_host_checkpoint_timestamp_seconds", "gauge", "When the last checkpoint was taken or resumed from, Unix time in seconds.");
    for p in mine.iter().filter(|p| load(&p.checkpoint_taken_ms) > 0.0) {
        f.sample("clean_host_checkpoint_timestamp_seconds", &[("tenant", tenant), ("pipeline", &p.pipeline)], load(&p.checkpoint_taken_ms) / 1000.0);
    }
    f.header("clean_host_quality_score", "gauge", "Quality score of the last analysed window (1 = no findings).");
    for p in &mine {
        if let Some(score) = p.last_score() {
            f.sample("clean_host_quality_score", &[("tenant", tenant), ("pipeline", &p.pipeline)], score);
        }
    }
    f.header("clean_host_alerts_total", "counter", "Alerts raised, by severity.");
    for p in &mine {
        for (i, severity) in SEVERITIES.iter().enumerate() {
            f.sample("clean_host_alerts_total", &[("tenant", tenant), ("pipeline", &p.pipeline), ("severity", severity)], load(&p.alerts_by_severity[i]));
        }
    }
    if let Some(not_handled) = status.tenants.iter().find(|t| t.name == tenant).and_then(|t| t.alerts_not_handled) {
        let name = "clean_host_alerts_not_handled_total";
        f.header(name, "counter", "Alerts the tenant's handlers did not handle (still in the outputs and the history), by why.");
        for (reason, n) in [("queue_full", not_handled.queue_full), ("quarantined", not_handled.quarantined), ("at_exit", not_handled.at_exit)] {
            f.sample(name, &[("tenant", tenant), ("reason", reason)], n as f64);
        }
    }
    let plugins: Vec<_> = status.plugins.iter().filter(|p| p.tenant == tenant).collect();
    // A plugin runs as more than one version at once (a shadow, one rolled
    // back): the version and its status tell their series apart.
    let plugin_labels = |p: &PluginStats| -> Vec<(&'static str, String)> {
        vec![
            ("tenant", tenant.to_string()),
            ("pipeline", p.pipeline.clone()),
            ("plugin", p.name.clone()),
            ("kind", p.kind.clone()),
            ("version", p.version.clone()),
            ("status", p.status.as_str().to_string()),
        ]
    };
    f.header("clean_host_plugin_info", "gauge", "A plugin instance's version and status (always 1).");
    for p in &plugins {
        f.sample("clean_host_plugin_info", &plugin_labels(p), 1.0);
    }
    let plugin_counters: [PluginCounter; 2] = [
        ("clean_host_plugin_calls_total", "Calls into the plugin.", |p| p.calls),
        ("clean_host_plugin_errors_total", "Calls that failed (trap, time or memory budget, bad output).", |p| p.errors),
    ];
    for (name, help, counter) in plugin_counters {
        f.header(name, "counter", help);
        for p in &plugins {
            f.sample(name, &plugin_labels(p), counter(p) as f64);
        }
    }
    let name = "clean_host_plugin_call_seconds";
    f.header(name, "summary", "Call time of the plugin: quantiles over its last 1024 calls, sum and count over all.");
    for p in &plugins {
        for (quantile, micros) in [("0.5", p.call_p50_us), ("0.99", p.call_p99_us)] {
            let mut labels = plugin_labels(p);
            labels.push(("quantile", quantile.to_string()));
            f.sample(name, &labels, micros as f64 / 1e6);
        }
        f.sample(&format!("{name}_sum"), &plugin_labels(p), p.call_seconds);
        f.sample(&format!("{name}_count"), &plugin_labels(p), p.calls as f64);
    }
    out
}
