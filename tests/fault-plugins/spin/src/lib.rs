use clean_host_sdk::{export_detector, Analysis, Batch, Detector, PluginInfo};

#[derive(Default)]
pub struct Faulty;

impl Detector for Faulty {
    fn describe() -> PluginInfo {
        PluginInfo { name: "spin".into(), version: "0.0.1".into(), description: "Loops forever".into(), metrics: Vec::new(), config_schema: "{}".into() }
    }

    fn analyze(&mut self, batch: &Batch) -> Result<Analysis, String> {
        let mut n = batch.row_count as u64;
        loop {
            n = std::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

export_detector!(Faulty);
