use clean_host_sdk::{export_detector, Analysis, Batch, Detector, PluginInfo};

#[derive(Default)]
pub struct Faulty;

impl Detector for Faulty {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "bad-row".into(),
            version: "0.0.1".into(),
            description: "Names a row the window does not have".into(),
            metrics: Vec::new(),
            config_schema: "{}".into(),
        }
    }

    fn analyze(&mut self, batch: &Batch) -> Result<Analysis, String> {
        let mut out = Analysis::new();
        let finding = clean_host_sdk::Finding::new("bad_row", None, 1.0, 0.0, clean_host_sdk::Severity::Warning, "look here".into());
        out.findings.push(finding.with_rows([batch.row_count + 5]));
        Ok(out)
    }
}

export_detector!(Faulty);
