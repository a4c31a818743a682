//! Recurses without end: the guest's stack overflows and traps.

use clean_host_sdk::{export_detector, Analysis, Batch, Detector, PluginInfo};

#[derive(Default)]
pub struct Recurse;

#[inline(never)]
#[allow(unconditional_recursion)] // the point of this plugin
fn deeper(n: u64, trail: &mut Vec<u64>) -> u64 {
    let local = [n; 64];
    trail.push(std::hint::black_box(local[(n % 64) as usize]));
    deeper(n + 1, trail) + local[0]
}

impl Detector for Recurse {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "recurse".into(),
            version: "0.0.1".into(),
            description: "Recurses without end".into(),
            metrics: Vec::new(),
            config_schema: "{}".into(),
        }
    }

    fn analyze(&mut self, batch: &Batch) -> Result<Analysis, String> {
        let mut trail = Vec::new();
        deeper(batch.row_count as u64, &mut trail);
        Ok(Analysis::new())
    }
}

export_detector!(Recurse);
