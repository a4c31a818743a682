//! Slack: each alert as an incoming-webhook message (`text` plus a block).
//! The webhook URL is the destination's secret; the plugin never sees it.

use clean_host_handler_sdk::{export_alert_handler, info, parse_config, post, require_destination, severity_name, Alert, AlertHandler, PluginInfo, Severity};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The tenant's destination whose URL is the Slack incoming webhook.
    destination: String,
    /// Put in front of critical alerts, e.g. `<!here>` or `<@U123>`.
    #[serde(default)]
    mention_on_critical: Option<String>,
}

#[derive(Default)]
pub struct Slack {
    config: Config,
}

fn text(alert: &Alert, mention: Option<&str>) -> String {
    let icon = match alert.severity {
        Severity::Critical => ":rotating_light:",
        Severity::Warning => ":warning:",
        Severity::Info => ":information_source:",
    };
    let column = alert.column.as_deref().map(|c| format!(" on `{c}`")).unwrap_or_default();
    let w = &alert.window;
    format!(
        "{}{icon} *{}* `{}`: {}/{}{column} = {:.4} (threshold {:.4})\n{}\npartition {}, window {}, offsets {}–{}, {} records",
        mention.map(|m| format!("{m} ")).unwrap_or_default(),
        severity_name(alert.severity),
        alert.pipeline,
        alert.detector,
        alert.metric,
        alert.value,
        alert.threshold,
        alert.message,
        w.partition,
        w.seq,
        w.first_offset,
        w.last_offset,
        alert.records
    )
}

impl AlertHandler for Slack {
    fn describe() -> PluginInfo {
        info(
            "slack",
            "0.1.0",
            "Sends each alert to a Slack incoming webhook",
            r#"{"type":"object","required":["destination"],"properties":{"destination":{"type":"string"},"mention_on_critical":{"type":"string"}}}"#,
        )
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        self.config = parse_config(config)?;
        require_destination(&self.config.destination)
    }

    fn handle(&mut self, alert: &Alert) -> Result<(), String> {
        let mention = if alert.severity == Severity::Critical { self.config.mention_on_critical.as_deref() } else { None };
        let text = text(alert, mention);
        let body = json!({
            "text": text,
            "blocks": [{ "type": "section", "text": { "type": "mrkdwn", "text": text } }],
        });
        post(&self.config.destination, "application/json", body.to_string().as_bytes())
    }
}

export_alert_handler!(Slack);

#[cfg(test)]
mod tests {
    use super::*;
    use clean_host_handler_sdk::testing::{alert, take_posts};

    #[test]
    fn a_slack_message_with_a_mention_for_critical() {
        let mut h = Slack::default();
        h.configure(r#"{"destination":"ops-slack","mention_on_critical":"<!here>"}"#).unwrap();
        h.handle(&alert(Severity::Critical)).unwrap();
        h.handle(&alert(Severity::Warning)).unwrap();
        let posts = take_posts();
        let v: serde_json::Value = serde_json::from_slice(&posts[0].2).unwrap();
        let t = v["text"].as_str().unwrap();
        assert!(t.starts_with("<!here> :rotating_light: *critical* `orders`: completeness/null_rate on `amount`"), "{t}");
        assert!(t.contains("offsets 8000–8999"));
        let w: serde_json::Value = serde_json::from_slice(&posts[1].2).unwrap();
        assert!(w["text"].as_str().unwrap().starts_with(":warning:"));
        assert_eq!(v["blocks"][0]["text"]["text"], v["text"]);
    }
}
