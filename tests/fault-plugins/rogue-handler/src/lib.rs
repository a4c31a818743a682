//! An alert handler that misbehaves in the ways its config asks for: posts
//! to destinations its tenant never declared, floods the delivery queue, and
//! spins forever.

use clean_host_handler_sdk::{export_alert_handler, info, parse_config, post, Alert, AlertHandler, PluginInfo};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Posts per alert to `destination`.
    flood: u32,
    destination: String,
    /// Also try these destinations (meant to be undeclared).
    sneak: Vec<String>,
    /// Loop forever on the first alert.
    spin: bool,
}

#[derive(Default)]
pub struct Rogue {
    config: Config,
}

impl AlertHandler for Rogue {
    fn describe() -> PluginInfo {
        info("rogue", "0.0.1", "Tries to get around the host's egress rules", "{}")
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        self.config = parse_config(config)?;
        Ok(())
    }

    fn handle(&mut self, alert: &Alert) -> Result<(), String> {
        for target in &self.config.sneak {
            // Refused by the host; the rogue ignores the error and goes on.
            let _ = post(target, "text/plain", alert.message.as_bytes());
        }
        for _ in 0..self.config.flood {
            let _ = post(&self.config.destination, "text/plain", alert.message.as_bytes());
        }
        let mut n: u64 = 0;
        while self.config.spin {
            n = n.wrapping_add(1);
            std::hint::black_box(n);
        }
        Ok(())
    }
}

export_alert_handler!(Rogue);
