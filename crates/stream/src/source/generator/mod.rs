//! The built-in generator: realistic order events, with faults on request.
//!
//! Clean output has the noise real data has (log-normal prices, a rare null
//! email, rare countries and statuses), so detectors that stay quiet on it
//! are quiet for the right reason. Faults are switched on for ranges of
//! records: `KIND@START+LEN` (records `START..START+LEN`).
//!
//! Time: a bounded run (`records` set, no `rate`) simulates a history of
//! `events_per_second` that ends now, so event-time detectors see a steady
//! rate; an unbounded or throttled run stamps records with the wall clock
//! minus a random delivery lag (exponential, of mean `delivery_lag_ms`),
//! like a live feed.

mod faults;
#[cfg(test)]
mod tests;

use std::io::Write;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use faults::{Fault, FaultKind};

use super::{Source, SourceContext, SourceError, SourceEvent};
use clean_host_core::timestamp::{self, now_ms};

/// Records per block sent to the decoder.
const BLOCK_RECORDS: u64 = 1024;

const COUNTRIES: [(&str, f64); 12] = [
    ("US", 0.30),
    ("DE", 0.15),
    ("GB", 0.12),
    ("FR", 0.10),
    ("IN", 0.08),
    ("BR", 0.07),
    ("JP", 0.06),
    ("CA", 0.05),
    ("NL", 0.03),
    ("SE", 0.02),
    ("NZ", 0.012),
    ("IS", 0.008),
];
const DEVICES: [(&str, f64); 4] = [("web", 0.5), ("ios", 0.25), ("android", 0.23), ("api", 0.02)];
const STATUSES: [(&str, f64); 4] = [("paid", 0.7), ("shipped", 0.2), ("refunded", 0.08), ("cancelled", 0.02)];
const CURRENCIES: [(&str, f64); 3] = [("USD", 0.55), ("EUR", 0.35), ("GBP", 0.10)];

/// Settings of the generator.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Records to produce (unbounded when absent).
    pub records: Option<u64>,
    /// Records per second of wall time (unthrottled when absent).
    pub rate: Option<u64>,
    /// Simulated events per second of event time in a bounded, unthrottled run.
    pub events_per_second: f64,
    /// Mean delay in ms between a live record's event time and its being
    /// produced (0: stamped with the wall clock as it is produced).
    pub delivery_lag_ms: f64,
    /// Seed of the random source: the same seed gives the same records.
    pub seed: u64,
    /// Faults to inject, as `KIND@START+LEN`.
    pub inject: Vec<String>,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig { records: None, rate: None, events_per_second: 1000.0, delivery_lag_ms: 100.0, seed: 1, inject: Vec::new() }
    }
}

impl GeneratorConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.faults().map(|_| ())?;
        if self.events_per_second.is_nan() || self.events_per_second <= 0.0 || self.rate == Some(0) {
            return Err("events_per_second and rate must be above 0".into());
        }
        if !(self.delivery_lag_ms.is_finite() && self.delivery_lag_ms >= 0.0) {
            return Err(format!("delivery_lag_ms must be a number of ms, 0 or more (got {})", self.delivery_lag_ms));
        }
        Ok(())
    }

    pub fn faults(&self) -> Result<Vec<Fault>, String> {
        self.inject.iter().map(|s| s.parse()).collect()
    }
}

pub struct Generator {
    config: GeneratorConfig,
    faults: Vec<Fault>,
}

impl Generator {
    pub fn new(config: GeneratorConfig) -> Self {
        let faults = config.faults().unwrap_or_default();
        Generator { config, faults }
    }

    /// Write records `from..to` as JSON lines into `out`.
    fn write_block(&self, state: &mut GenState, from: u64, to: u64, out: &mut Vec<u8>) {
        for i in from..to {
            let active = |k: FaultKind| self.faults.iter().any(|f| f.kind == k && f.covers(i));
            let rng = &mut state.rng;
            if active(FaultKind::Duplicates) && rng.f64() < 0.15 && !state.recent.is_empty() {
                let copy = &state.recent[rng.usize(..state.recent.len())];
                out.extend_from_slice(copy);
                continue;
            }
            let start = out.len();
            // Event time.
            let mut gap_ms = -rng.f64().max(1e-12).ln() * 1000.0 / self.config.events_per_second;
            if active(FaultKind::Volume) {
                gap_ms *= 10.0;
            }
            state.sim_ms += gap_ms;
            let mut ts = match state.sim_origin {
                Some(origin) => origin + state.sim_ms as i64,
                None => now_ms() - (-rng.f64().max(1e-12).ln() * self.config.delivery_lag_ms) as i64,
            };
            if active(FaultKind::Late) && rng.f64() < 0.2 {
                ts -= 15 * 60 * 1000;
            }
            let user = if active(FaultKind::StuckKey) && rng.f64() < 0.6 { 0 } else { rng.u64(1..200_000) };
            let _ = write!(out, r#"{{"event_id":"e-{i:010}","ts":""#);
            timestamp::format_ms(ts, out);
            let _ = write!(out, r#"","user_id":{user}"#);
            if !active(FaultKind::Schema) {
                let country = if active(FaultKind::Categories) && rng.f64() < 0.2 { "XX" } else { pick(rng, &COUNTRIES) };
                let _ = write!(out, r#","country":"{country}""#);
            }
            let _ = write!(out, r#","device":"{}""#, pick(rng, &DEVICES));
            let mut amount = (3.2 + 0.9 * normal(rng)).exp();
            if active(FaultKind::Drift) {
                amount *= 1.8;
            }
            if active(FaultKind::Nulls) && rng.f64() < 0.4 {
                out.extend_from_slice(br#","amount":null"#);
            } else if active(FaultKind::WrongTypes) && rng.f64() < 0.2 {
                let _ = write!(out, r#","amount":"{amount:.2}""#);
            } else if active(FaultKind::Outliers) && rng.f64() < 0.05 {
                let _ = write!(out, r#","amount":{:.2}"#, amount * 1000.0);
            } else {
                let _ = write!(out, r#","amount":{amount:.2}"#);
            }
            let _ = write!(out, r#","currency":"{}","items":{}"#, pick(rng, &CURRENCIES), 1 + rng.u64(0..4) + rng.u64(0..2));
            let _ = write!(out, r#","status":"{}""#, pick(rng, &STATUSES));
            let creep = self.faults.iter().find(|f| f.kind == FaultKind::Creep && f.covers(i)).map_or(0.0, |f| 0.02 * f.progress(i));
            let null_email = rng.f64() < 0.01 + creep || (active(FaultKind::Nulls) && rng.f64() < 0.4);
            if null_email {
                out.extend_from_slice(br#","email":null"#);
            } else if active(FaultKind::BadFormats) && rng.f64() < 0.2 {
                let _ = write!(out, r#","email":"u{user} at example dot com""#);
            } else {
                let _ = write!(out, r#","email":"u{user}@example.com""#);
            }
            if active(FaultKind::Schema) {
                let _ = write!(out, r#","coupon":"SAVE{}""#, rng.u64(5..50));
            }
            let (lat, lon) = (rng.f64() * 120.0 - 60.0, rng.f64() * 360.0 - 180.0);
            let _ = write!(out, r#","geo":{{"lat":{lat:.4},"lon":{lon:.4}}}}}"#);
            if active(FaultKind::BadLines) && rng.f64() < 0.05 {
                out.truncate(start + (out.len() - start) / 2);
            }
            out.push(b'\n');
            if state.recent.len() < 256 {
                state.recent.push(out[start..].to_vec());
            } else {
                let slot = (i % 256) as usize;
                state.recent[slot].clear();
                state.recent[slot].extend_from_slice(&out[start..]);
            }
        }
    }
}

struct GenState {
    rng: fastrand::Rng,
    /// Event time of record 0 in a simulated history; `None` for live time.
    sim_origin: Option<i64>,
    sim_ms: f64,
    /// Recent lines, copied by the duplicates fault.
    recent: Vec<Vec<u8>>,
}

fn normal(rng: &mut fastrand::Rng) -> f64 {
    let (u1, u2) = (rng.f64().max(1e-300), rng.f64());
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn pick<'a>(rng: &mut fastrand::Rng, weighted: &[(&'a str, f64)]) -> &'a str {
    let mut u = rng.f64();
    for &(v, w) in weighted {
        if u < w {
            return v;
        }
        u -= w;
    }
    weighted[0].0
}

impl Source for Generator {
    fn name(&self) -> String {
        "generator".into()
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let tx = &ctx.events;
        let simulated = self.config.records.filter(|_| self.config.rate.is_none());
        let sim_origin = simulated.map(|n| now_ms() - (n as f64 * 1000.0 / self.config.events_per_second) as i64);
        let mut state = GenState { rng: fastrand::Rng::with_seed(self.config.seed), sim_origin, sim_ms: 0.0, recent: Vec::new() };
        let started = Instant::now();
        let mut next = 0u64;
        loop {
            let end = self.config.records.map_or(next + BLOCK_RECORDS, |n| n.min(next + BLOCK_RECORDS));
            if end <= next {
                return Ok(());
            }
            let mut data = Vec::with_capacity(256 * (end - next) as usize);
            self.write_block(&mut state, next, end, &mut data);
            if tx.send(SourceEvent::Lines { partition: 0, first_offset: next, data }).is_err() {
                return Ok(());
            }
            next = end;
            if let Some(rate) = self.config.rate {
                let due = Duration::from_secs_f64(next as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
    }
}
