//! `clean-host check`: validate the config and load every plugin and
//! handler, then exit without reading anything.

use std::collections::BTreeMap;

use anyhow::Result;

use super::assembly::{build_pipelines, load_tenants, max_failures, settings, HANDLER_GRACE};
use crate::cli::GlobalArgs;

pub fn check(g: &GlobalArgs, show_config: bool) -> Result<()> {
    let config = settings(g, "generator", |_| Ok(()))?;
    let (runtime, tenants) = load_tenants(&g.plugins, &config, false, None)?;
    let pipelines = build_pipelines(&config, &tenants, &BTreeMap::new())?;
    for t in &tenants {
        t.start_handlers(&runtime, max_failures(&config))?.inspect(|h| h.finish(HANDLER_GRACE));
    }
    let plugins: usize = tenants.iter().map(|t| t.plugins.len()).sum();
    println!("config ok: {} pipeline(s), {} tenant(s), {plugins} plugin(s)", pipelines.len(), tenants.len());
    for p in &pipelines {
        println!("  {} ({}) <- {}: {} detector(s)", p.name, p.tenant, p.source.name(), p.detectors.stats().len());
    }
    if show_config {
        println!("\n# the config as it runs (defaults filled in, secrets masked)\n{}", config.shown().map_err(anyhow::Error::msg)?);
    }
    Ok(())
}
