//! A detector whose `projection` export is not the contract's (its function
//! is named `what-it-needs`, not `what-it-reads`): the host must refuse it by
//! name and say why, not load it and hand it whole windows.

wit_bindgen::generate!({ path: "wit", world: "projected-detector-plugin" });

use clean_host::plugin::types::{Analysis, Batch, PluginInfo};
use exports::clean_host::plugin::detector::Guest as Detector;
use exports::clean_host::plugin::projection::{BatchParts, Guest as Projection, Reads};

struct BadProjection;

impl Detector for BadProjection {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "bad-projection".into(),
            version: "0.0.1".into(),
            description: "Exports a projection the contract does not know".into(),
            metrics: Vec::new(),
            config_schema: "{}".into(),
        }
    }

    fn configure(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn analyze(_batch: Batch) -> Result<Analysis, String> {
        Ok(Analysis { findings: Vec::new(), metrics: Vec::new() })
    }

    fn snapshot() -> Vec<u8> {
        Vec::new()
    }

    fn restore(_state: Vec<u8>) -> Result<(), String> {
        Ok(())
    }
}

impl Projection for BadProjection {
    fn what_it_needs() -> Reads {
        Reads { parts: BatchParts::empty(), columns: Vec::new() }
    }
}

export!(BadProjection);
