use clean_host_sdk::{export_detector, Analysis, Batch, Detector, PluginInfo};

#[derive(Default)]
pub struct Faulty {
    windows: u64,
}

impl Detector for Faulty {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "panic".into(),
            version: "0.0.1".into(),
            description: "Panics on every window".into(),
            metrics: Vec::new(),
            config_schema: "{}".into(),
        }
    }

    fn configure(&mut self, _config: &str) -> Result<(), String> {
        Ok(())
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
        panic!("window {} is too much for me", batch.info.seq);
    }
}

export_detector!(Faulty);
