//! The smallest alert handler, to copy when writing your own: it fills a
//! text template with the alert's fields and POSTs the result.
//!
//! Placeholders: `{pipeline}` `{detector}` `{metric}` `{column}` `{value}`
//! `{threshold}` `{severity}` `{message}` `{partition}` `{window}`
//! `{first_offset}` `{last_offset}` `{records}`.

use clean_host_handler_sdk::{export_alert_handler, info, parse_config, post, require_destination, severity_name, Alert, AlertHandler, PluginInfo};
use serde::Deserialize;

const FIELDS: [&str; 13] =
    ["pipeline", "detector", "metric", "column", "value", "threshold", "severity", "message", "partition", "window", "first_offset", "last_offset", "records"];

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// The tenant's destination name to POST to.
    destination: String,
    /// The body, with `{field}` placeholders.
    template: String,
    /// Sent as the `Content-Type` header.
    content_type: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            destination: String::new(),
            template: "[{severity}] {pipeline}: {detector}/{metric} {message}".into(),
            content_type: "text/plain; charset=utf-8".into(),
        }
    }
}

#[derive(Default)]
pub struct Template {
    config: Config,
}

fn field(alert: &Alert, name: &str) -> String {
    let w = &alert.window;
    match name {
        "pipeline" => alert.pipeline.clone(),
        "detector" => alert.detector.clone(),
        "metric" => alert.metric.clone(),
        "column" => alert.column.clone().unwrap_or_default(),
        "value" => alert.value.to_string(),
        "threshold" => alert.threshold.to_string(),
        "severity" => severity_name(alert.severity).into(),
        "message" => alert.message.clone(),
        "partition" => w.partition.to_string(),
        "window" => w.seq.to_string(),
        "first_offset" => w.first_offset.to_string(),
        "last_offset" => w.last_offset.to_string(),
        _ => alert.records.to_string(),
    }
}

/// The template filled in; an unknown placeholder is an error.
fn render(template: &str, alert: Option<&Alert>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').ok_or("an unclosed { in the template")? + open;
        let name = &rest[open + 1..close];
        if !FIELDS.contains(&name) {
            return Err(format!("unknown placeholder {{{name}}} (known: {})", FIELDS.join(", ")));
        }
        if let Some(alert) = alert {
            out.push_str(&field(alert, name));
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl AlertHandler for Template {
    fn describe() -> PluginInfo {
        info(
            "template",
            "0.1.0",
            "POSTs a text template filled with the alert",
            r#"{"type":"object","required":["destination"],"properties":{"destination":{"type":"string"},"template":{"type":"string"},"content_type":{"type":"string"}}}"#,
        )
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        self.config = parse_config(config)?;
        require_destination(&self.config.destination)?;
        render(&self.config.template, None).map(|_| ())
    }

    fn handle(&mut self, alert: &Alert) -> Result<(), String> {
        let body = render(&self.config.template, Some(alert))?;
        post(&self.config.destination, &self.config.content_type, body.as_bytes())
    }
}

export_alert_handler!(Template);

#[cfg(test)]
mod tests {
    use super::*;
    use clean_host_handler_sdk::testing::{alert, take_posts};
    use clean_host_handler_sdk::Severity;

    #[test]
    fn fills_the_template_and_rejects_unknown_fields() {
        let mut h = Template::default();
        assert!(h.configure(r#"{"destination":"d","template":"{nope}"}"#).unwrap_err().contains("unknown placeholder {nope}"));
        h.configure(r#"{"destination":"d","template":"{severity} {pipeline}#{partition}@{first_offset} {column}"}"#).unwrap();
        h.handle(&alert(Severity::Warning)).unwrap();
        let posts = take_posts();
        assert_eq!(String::from_utf8(posts[0].2.clone()).unwrap(), "warning orders#2@8000 amount");
        assert_eq!(posts[0].1, "text/plain; charset=utf-8");
    }
}
