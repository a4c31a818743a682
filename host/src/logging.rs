//! Logs through `tracing`, on stderr: human lines (the default) or one JSON
//! object per line for log shippers (`--log-format json`). The level comes
//! from `--log-level` or `RUST_LOG` (default `info`).
//!
//! Plugin events (loaded, swapped, rejected, rolled back, quarantined, ...:
//! see [`clean_host_runtime::events`]) are logged with the target [`PLUGIN_EVENT`] (by
//! [`clean_host_runtime::events::plugin_event`]) and the
//! fields `tenant`, `pipeline`, `plugin` and `event`; a layer copies each one
//! into the history as well, so there is one place that reports them.
//!
//! Secrets never reach a log line: destinations are named, not their URLs,
//! API tokens are never formatted, and config errors give line numbers
//! instead of quoting lines.

use std::io::IsTerminal;
use std::sync::{Arc, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::history::{History, PluginEvent};
use clean_host_runtime::events::PLUGIN_EVENT;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Where plugin events go once the history is open.
#[derive(Clone, Default)]
pub struct PluginEventSink(Arc<OnceLock<History>>);

impl PluginEventSink {
    pub fn connect(&self, history: History) {
        let _ = self.0.set(history);
    }
}

/// Install the global subscriber. `level` is a filter like `info` or
/// `clean_host=debug`; without it, `RUST_LOG`, else `info`.
pub fn init(format: LogFormat, level: Option<&str>) -> Result<PluginEventSink, String> {
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).map_err(|e| format!("--log-level {l}: {e}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let sink = PluginEventSink::default();
    let events = PluginEventLayer(sink.clone());
    let registry = tracing_subscriber::registry().with(filter).with(events);
    let result = match format {
        LogFormat::Human => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false).with_ansi(std::io::stderr().is_terminal()))
            .try_init(),
        LogFormat::Json => registry.with(tracing_subscriber::fmt::layer().json().flatten_event(true).with_writer(std::io::stderr)).try_init(),
    };
    result.map_err(|e| format!("installing the logger: {e}"))?;
    Ok(sink)
}

struct PluginEventLayer(PluginEventSink);

#[derive(Default)]
struct EventFields {
    tenant: String,
    pipeline: Option<String>,
    plugin: String,
    event: String,
    message: String,
}

impl Visit for EventFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "tenant" => self.tenant = value.into(),
            "pipeline" => self.pipeline = Some(value.into()),
            "plugin" => self.plugin = value.into(),
            "event" => self.event = value.into(),
            "message" => self.message = value.into(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for PluginEventLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != PLUGIN_EVENT {
            return;
        }
        let Some(history) = self.0 .0.get() else { return };
        let mut fields = EventFields::default();
        event.record(&mut fields);
        let EventFields { tenant, pipeline, plugin, event, message } = fields;
        history.plugin_event(PluginEvent { tenant, pipeline, plugin, event, message, at_ms: clean_host_core::timestamp::now_ms() });
    }
}
