use clean_host_sdk::{export_detector, Analysis, Batch, Detector, PluginInfo};

#[derive(Default)]
pub struct Faulty;

impl Detector for Faulty {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "memory-bomb".into(),
            version: "0.0.1".into(),
            description: "Allocates until it is stopped".into(),
            metrics: Vec::new(),
            config_schema: "{}".into(),
        }
    }

    fn analyze(&mut self, batch: &Batch) -> Result<Analysis, String> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![batch.row_count as u8; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

export_detector!(Faulty);
