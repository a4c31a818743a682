//! PagerDuty Events API v2: each alert as a `trigger` event. The routing key
//! is a secret of the destination, filled in by the host
//! (`{{secret:routing_key}}`); the plugin never sees it. Alerts about the
//! same pipeline, partition, detector, metric and column share a dedup key,
//! so PagerDuty groups them into one incident.

use clean_host_handler_sdk::{export_alert_handler, info, parse_config, post, require_destination, Alert, AlertHandler, PluginInfo, Severity};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// The tenant's destination (`https://events.pagerduty.com/v2/enqueue`).
    destination: String,
    /// Which of the destination's secrets is the integration's routing key.
    routing_key_secret: String,
}

impl Default for Config {
    fn default() -> Self {
        Config { destination: String::new(), routing_key_secret: "routing_key".into() }
    }
}

#[derive(Default)]
pub struct PagerDuty {
    config: Config,
}

impl AlertHandler for PagerDuty {
    fn describe() -> PluginInfo {
        info(
            "pagerduty",
            "0.1.0",
            "Triggers PagerDuty Events v2 incidents",
            r#"{"type":"object","required":["destination"],"properties":{"destination":{"type":"string"},"routing_key_secret":{"type":"string"}}}"#,
        )
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        self.config = parse_config(config)?;
        require_destination(&self.config.destination)
    }

    fn handle(&mut self, alert: &Alert) -> Result<(), String> {
        let w = &alert.window;
        let column = alert.column.as_deref().unwrap_or("-");
        let body = json!({
            "routing_key": format!("{{{{secret:{}}}}}", self.config.routing_key_secret),
            "event_action": "trigger",
            "dedup_key": format!("clean-host/{}/{}/{}/{}/{column}", alert.pipeline, w.partition, alert.detector, alert.metric),
            "payload": {
                "summary": format!("{}: {}/{} {}", alert.pipeline, alert.detector, alert.metric, alert.message),
                "source": alert.pipeline,
                "severity": match alert.severity { Severity::Critical => "critical", Severity::Warning => "warning", Severity::Info => "info" },
                "component": alert.pipeline,
                "group": alert.detector,
                "class": alert.metric,
                "custom_details": {
                    "column": alert.column, "value": alert.value, "threshold": alert.threshold,
                    "partition": w.partition, "window": w.seq, "first_offset": w.first_offset,
                    "last_offset": w.last_offset, "records": alert.records,
                },
            },
        });
        post(&self.config.destination, "application/json", body.to_string().as_bytes())
    }
}

export_alert_handler!(PagerDuty);

#[cfg(test)]
mod tests {
    use super::*;
    use clean_host_handler_sdk::testing::{alert, take_posts};

    #[test]
    fn an_events_v2_trigger_with_the_key_left_to_the_host() {
        let mut h = PagerDuty::default();
        h.configure(r#"{"destination":"pd"}"#).unwrap();
        h.handle(&alert(Severity::Critical)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&take_posts()[0].2).unwrap();
        assert_eq!(v["routing_key"], "{{secret:routing_key}}");
        assert_eq!(v["event_action"], "trigger");
        assert_eq!(v["dedup_key"], "clean-host/orders/2/completeness/null_rate/amount");
        assert_eq!(v["payload"]["severity"], "critical");
    }
}
