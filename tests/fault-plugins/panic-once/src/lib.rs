use clean_host_sdk::{export_detector, Analysis, Batch, Detector, PluginInfo};

#[derive(Default)]
pub struct Faulty {
    windows: u64,
}

impl Detector for Faulty {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "panic-once".into(),
            version: "0.0.1".into(),
            description: "Panics on window 2 only, then recovers".into(),
            metrics: Vec::new(),
            config_schema: "{}".into(),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.windows.to_le_bytes().to_vec()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.windows = u64::from_le_bytes(state.try_into().map_err(|_| "bad state".to_string())?);
        Ok(())
    }

    fn analyze(&mut self, batch: &Batch) -> Result<Analysis, String> {
        self.windows += 1;
        if batch.info.seq == 2 {
            panic!("one bad window");
        }
        let mut out = Analysis::new();
        out.metric("windows_seen", None, self.windows as f64);
        Ok(out)
    }
}

export_detector!(Faulty);
