//! Volume: records per second against an EWMA baseline.
//!
//! Time windows: records over the window's length (an empty window is a rate
//! of zero). Count windows: half the records over the span between the first
//! and third quartile of their event times, so a minority of late or early
//! records does not pass for a drop. A window spanning less than `min_span_ms`
//! says more about the host's speed than about the source, so it is not
//! judged. After warm-up, a rate below `drop_ratio` or above `spike_ratio`
//! times the baseline is flagged, once it is also outside the rates of the
//! windows before (Tukey's inner fences of their logarithms, see `History`:
//! a source whose volume swings with the seasons swings without alerting). Flagged windows do not move the baseline, unless the new
//! volume lasts `NEW_NORMAL_AFTER` windows: then it is the baseline.

use clean_host_sdk::stats::{quantiles, Departures, Ewma, History};
use clean_host_sdk::{
    decode_state, encode_state, export_detector, metric_info, parse_config, Analysis, Batch, BatchParts, Column, ColumnValues, Detector, Finding, PluginInfo,
    Reads, Severity, WindowKind,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Windows used to learn the usual rate.
    warmup_windows: u64,
    /// EWMA weight of each new window.
    alpha: f64,
    /// A rate below this share of the baseline is a drop.
    drop_ratio: f64,
    /// A rate above this multiple of the baseline is a spike.
    spike_ratio: f64,
    /// Windows spanning less time than this are not judged.
    min_span_ms: i64,
    /// Windows with fewer expected records than this are not judged (Poisson noise).
    min_expected: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config { warmup_windows: 5, alpha: 0.1, drop_ratio: 0.8, spike_ratio: 1.5, min_span_ms: 1000, min_expected: 20.0 }
    }
}

#[derive(Default, Serialize, Deserialize)]
struct State {
    rate: Ewma,
    /// Logarithms of the rates of the windows before.
    #[serde(default)]
    log_rates: History,
    /// Windows in a row flagged.
    #[serde(default)]
    departures: Departures,
}

#[derive(Default)]
pub struct Volume {
    config: Config,
    state: State,
}

impl Detector for Volume {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "volume".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Records per second against an EWMA baseline".into(),
            metrics: vec![metric_info("records_per_second", "Records in the window over its time span")],
            config_schema: r#"{"type":"object","properties":{"warmup_windows":{"type":"integer"},"alpha":{"type":"number"},"drop_ratio":{"type":"number"},"spike_ratio":{"type":"number"},"min_span_ms":{"type":"integer"},"min_expected":{"type":"number"}}}"#.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        let config: Config = parse_config(config)?;
        if !(0.0..1.0).contains(&config.drop_ratio) || config.spike_ratio <= 1.0 || !(0.0..=1.0).contains(&config.alpha) {
            return Err("need 0 <= drop_ratio < 1 < spike_ratio and 0 <= alpha <= 1".into());
        }
        self.config = config;
        Ok(())
    }

    fn reads(&self) -> Reads {
        Reads::only(BatchParts::EVENT_TIMES | BatchParts::TIMESTAMP_VALUES)
    }

    fn analyze(&mut self, batch: &Batch) -> Result<Analysis, String> {
        let mut out = Analysis::new();
        let Some((rate, span_ms)) = rate(batch) else {
            return Ok(out);
        };
        if span_ms < self.config.min_span_ms as f64 {
            return Ok(out);
        }
        out.metric("records_per_second", None, rate);
        let usual = self.state.rate.mean;
        let learned = self.state.rate.count >= self.config.warmup_windows;
        let expected = usual * span_ms / 1000.0;
        let log_rate = rate.max(f64::MIN_POSITIVE).ln();
        // The ratio to the baseline says how big a change is; the inner fences
        // of past log-rates say whether the source moves that much by itself.
        // Nothing is judged before the history says how much the source moves.
        let (low_fence, high_fence) = self.state.log_rates.fences(1.5).unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
        let mut departed = false;
        if learned && expected >= self.config.min_expected {
            let (low, high) = (usual * self.config.drop_ratio, usual * self.config.spike_ratio);
            let finding = if rate < low && log_rate < low_fence {
                let severity = if rate < usual * 0.1 { Severity::Critical } else { Severity::Warning };
                Some((low, severity, format!("{} records/s, usually {}: a drop of {:.0}%", per_second(rate), per_second(usual), (1.0 - rate / usual) * 100.0)))
            } else if rate > high && log_rate > high_fence {
                Some((high, Severity::Warning, format!("{} records/s, usually {}: {:.1}x the usual volume", per_second(rate), per_second(usual), rate / usual)))
            } else {
                None
            };
            if let Some((threshold, severity, message)) = finding {
                out.findings.push(Finding::new("records_per_second", None, rate, threshold, severity, message));
                departed = true;
            }
        }
        self.state.log_rates.push(log_rate, departed);
        if self.state.departures.observe(departed) {
            // The new volume lasted: it is the baseline from now on.
            self.state.rate = Ewma::default();
        } else if departed {
            return Ok(out);
        }
        self.state.rate.update(rate, self.config.alpha);
        Ok(out)
    }

    fn snapshot(&self) -> Vec<u8> {
        encode_state(&self.state)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.state = decode_state(state)?;
        Ok(())
    }
}

/// A rate for a message: slow sources have rates far below one per second.
fn per_second(rate: f64) -> String {
    if rate >= 10.0 {
        format!("{rate:.1}")
    } else {
        format!("{rate:.3e}")
    }
}

/// Event times of a count window: the pipeline's, else the first timestamp column's.
fn event_times(batch: &Batch) -> Vec<f64> {
    if !batch.event_times.is_empty() {
        return batch.event_times.iter().map(|&t| t as f64).collect();
    }
    match batch.columns.iter().find(|c| matches!(c.values, ColumnValues::Timestamp(_))) {
        Some(c @ Column { values: ColumnValues::Timestamp(v), .. }) => {
            let mut times = Vec::with_capacity(v.len());
            for run in c.present_runs(v.len()) {
                times.extend(v[run].iter().map(|&t| t as f64));
            }
            times
        }
        _ => Vec::new(),
    }
}

/// Records per second and the span (ms) it was measured over.
fn rate(batch: &Batch) -> Option<(f64, f64)> {
    let info = &batch.info;
    if info.kind != WindowKind::Count {
        let span = (info.end_ms - info.start_ms) as f64;
        return (span > 0.0).then(|| (batch.row_count as f64 * 1000.0 / span, span));
    }
    let times = event_times(batch);
    if times.len() < 20 {
        let span = (info.end_ms - info.start_ms) as f64;
        return (span > 0.0 && batch.row_count > 0).then(|| (batch.row_count as f64 * 1000.0 / span, span));
    }
    let quartiles = quantiles(&times, &[0.25, 0.75]);
    let half_span = quartiles[1] - quartiles[0];
    (half_span > 0.0).then(|| (times.len() as f64 * 500.0 / half_span, 2.0 * half_span))
}

export_detector!(Volume);

#[cfg(test)]
mod tests {
    use super::*;
    use clean_host_sdk::testing::{BatchBuilder, Rng};

    #[test]
    fn resumes_from_its_snapshot_exactly() {
        let windows = clean_host_sdk::testing::realistic_windows(7, 60, 500);
        clean_host_sdk::testing::assert_restore_equivalent::<Volume>("{}", &windows, (3..60).step_by(7));
    }

    #[test]
    fn reads_all_it_analyses() {
        let windows = clean_host_sdk::testing::realistic_windows(7, 60, 500);
        clean_host_sdk::testing::assert_reads_suffice::<Volume>("{}", &windows);
    }

    /// 1000 records at `rate` per second with exponential gaps.
    fn window(seq: u64, rng: &mut Rng, rate: f64, start: &mut f64) -> Batch {
        let times: Vec<i64> = (0..1000)
            .map(|_| {
                *start += -rng.uniform().max(1e-12).ln() / rate * 1000.0;
                *start as i64
            })
            .collect();
        BatchBuilder::new(seq).event_times(&times, *start as i64).build()
    }

    #[test]
    fn steady_rate_is_quiet_and_a_drop_is_flagged() {
        let mut d = Volume::default();
        d.configure("{}").unwrap();
        let (mut rng, mut t) = (Rng(4), 0.0);
        for seq in 0..300 {
            assert!(d.analyze(&window(seq, &mut rng, 100.0, &mut t)).unwrap().findings.is_empty(), "{seq}");
        }
        let a = d.analyze(&window(300, &mut rng, 20.0, &mut t)).unwrap();
        assert_eq!(a.findings.len(), 1);
        assert!(a.findings[0].message.contains("drop"));
        // The drop did not move the baseline.
        assert!(d.analyze(&window(301, &mut rng, 20.0, &mut t)).unwrap().findings.len() == 1);
    }

    #[test]
    fn a_late_minority_is_not_a_drop() {
        let mut d = Volume::default();
        let (mut rng, mut t) = (Rng(6), 0.0);
        for seq in 0..20 {
            d.analyze(&window(seq, &mut rng, 100.0, &mut t)).unwrap();
        }
        let mut b = window(20, &mut rng, 100.0, &mut t);
        for time in b.event_times.iter_mut().take(200) {
            *time -= 15 * 60 * 1000;
        }
        assert!(d.analyze(&b).unwrap().findings.is_empty());
    }

    #[test]
    fn empty_time_windows_are_a_drop() {
        let mut d = Volume::default();
        for seq in 0..20 {
            let b = BatchBuilder::new(seq).event_times(&vec![0; 100], 0).time_window(WindowKind::EventTime, 0, 1000).build();
            assert!(d.analyze(&b).unwrap().findings.is_empty());
        }
        let empty = BatchBuilder::new(20).time_window(WindowKind::EventTime, 0, 1000).build();
        let a = d.analyze(&empty).unwrap();
        assert_eq!(a.findings[0].severity, Severity::Critical);
    }

    #[test]
    fn short_windows_are_not_judged() {
        let mut d = Volume::default();
        let (mut rng, mut t) = (Rng(4), 0.0);
        for seq in 0..20 {
            let a = d.analyze(&window(seq, &mut rng, 1_000_000.0 / (seq as f64 + 1.0), &mut t)).unwrap();
            assert!(a.findings.is_empty() && a.metrics.is_empty());
        }
    }

    #[test]
    fn bad_ratios_are_rejected() {
        assert!(Volume::default().configure(r#"{"spike_ratio": 0.5}"#).is_err());
    }
}
