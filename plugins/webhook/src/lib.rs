//! Generic webhook: every alert as one JSON object POSTed to a destination.

use clean_host_handler_sdk::{export_alert_handler, info, parse_config, post, require_destination, severity_name, Alert, AlertHandler, PluginInfo};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The tenant's destination name to POST to.
    destination: String,
}

#[derive(Default)]
pub struct Webhook {
    config: Config,
}

/// The alert as the JSON body this handler sends.
pub fn body(alert: &Alert) -> serde_json::Value {
    let w = &alert.window;
    json!({
        "type": "alert",
        "pipeline": alert.pipeline,
        "detector": alert.detector,
        "metric": alert.metric,
        "column": alert.column,
        "value": alert.value,
        "threshold": alert.threshold,
        "severity": severity_name(alert.severity),
        "message": alert.message,
        "records": alert.records,
        "window": {
            "source": w.source, "partition": w.partition, "seq": w.seq,
            "first_offset": w.first_offset, "last_offset": w.last_offset,
            "start_ms": w.start_ms, "end_ms": w.end_ms, "closed_at_ms": w.closed_at_ms,
        },
    })
}

impl AlertHandler for Webhook {
    fn describe() -> PluginInfo {
        info(
            "webhook",
            "0.1.0",
            "POSTs each alert as a JSON object",
            r#"{"type":"object","required":["destination"],"properties":{"destination":{"type":"string"}}}"#,
        )
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        self.config = parse_config(config)?;
        require_destination(&self.config.destination)
    }

    fn handle(&mut self, alert: &Alert) -> Result<(), String> {
        post(&self.config.destination, "application/json", body(alert).to_string().as_bytes())
    }
}

export_alert_handler!(Webhook);

#[cfg(test)]
mod tests {
    use super::*;
    use clean_host_handler_sdk::testing::{alert, take_posts};
    use clean_host_handler_sdk::Severity;

    #[test]
    fn posts_the_alert_as_json() {
        let mut h = Webhook::default();
        assert!(h.configure("{}").unwrap_err().contains("destination"));
        h.configure(r#"{"destination":"hook"}"#).unwrap();
        h.handle(&alert(Severity::Critical)).unwrap();
        let posts = take_posts();
        assert_eq!((posts[0].0.as_str(), posts[0].1.as_str()), ("hook", "application/json"));
        let v: serde_json::Value = serde_json::from_slice(&posts[0].2).unwrap();
        assert_eq!((v["severity"].as_str(), v["window"]["first_offset"].as_u64()), (Some("critical"), Some(8000)));
    }
}
