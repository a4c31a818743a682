//! Waits inside WASI host calls, where epoch interruption cannot reach it:
//! from its third window on, `how` picks the wait. `sleep`: an hour of
//! `std::thread::sleep`; `poll`: `wasi:io/poll` on an hour's timer and on a
//! timer that never fires; `stdin`: blocking reads of an input stream for
//! ever. Every call must still end at the host's deadline.

use clean_host_sdk::{export_detector, parse_config, Analysis, Batch, Detector, PluginInfo};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    how: String,
}

#[derive(Default)]
pub struct Sleeper {
    config: Config,
}

impl Detector for Sleeper {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "sleeper".into(),
            version: "0.0.1".into(),
            description: "Blocks in WASI calls from its third window on".into(),
            metrics: Vec::new(),
            config_schema: "{}".into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        self.config = parse_config(config)?;
        Ok(())
    }

    fn analyze(&mut self, batch: &Batch) -> Result<Analysis, String> {
        // The window's number, not a count of its own: a rebuilt instance waits too.
        if batch.info.seq < 2 {
            return Ok(Analysis::new());
        }
        match self.config.how.as_str() {
            "sleep" => std::thread::sleep(std::time::Duration::from_secs(3600)),
            "poll" => {
                let hour = wasip2::clocks::monotonic_clock::subscribe_duration(3_600_000_000_000);
                let never = wasip2::clocks::monotonic_clock::subscribe_instant(u64::MAX);
                wasip2::io::poll::poll(&[&hour, &never]);
            }
            "stdin" => {
                let stdin = wasip2::cli::stdin::get_stdin();
                loop {
                    let _ = std::hint::black_box(stdin.blocking_read(1 << 16));
                }
            }
            other => return Err(format!("unknown how '{other}'")),
        }
        Ok(Analysis::new())
    }
}

export_detector!(Sleeper);
