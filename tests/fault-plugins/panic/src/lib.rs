use clean_host_sdk::{export_detector, Analysis, Batch, Detector, PluginInfo};

#[derive(Default)]
pub struct Faulty;

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

    fn analyze(&mut self, batch: &Batch) -> Result<Analysis, String> {
        panic!("window {} is too much for me", batch.info.seq);
    }
}

export_detector!(Faulty);
