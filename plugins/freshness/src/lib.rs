//! Freshness: how old records are when the host closes their window.
//!
//! Lag is the window's close time (given by the host: plugins have no clock)
//! minus each record's event time. The detector learns the usual 95th
//! percentile lag over the first windows and flags a window whose p95 is both
//! `factor` times and `min_increase_ms` above it, or above a fixed
//! `max_lag_ms`. Records stamped well in the future are flagged too.

use clean_host_sdk::stats::{quantile, quantiles};
use clean_host_sdk::{
    decode_state, encode_state, export_detector, metric_info, parse_config, Analysis, Batch, BatchParts, ColumnValues, Detector, Finding, PluginInfo, Reads,
    Severity,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Windows used to learn the usual lag.
    warmup_windows: u32,
    /// How many times the usual p95 lag a window's p95 must reach to be flagged.
    factor: f64,
    /// And by how many milliseconds at least.
    min_increase_ms: f64,
    /// A fixed limit on the p95 lag, instead of learning one.
    max_lag_ms: Option<f64>,
    /// Records more than this far in the future are counted as future-stamped.
    future_tolerance_ms: i64,
    /// Event-time column when the pipeline declares none (default: the first timestamp column).
    column: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config { warmup_windows: 5, factor: 3.0, min_increase_ms: 60_000.0, max_lag_ms: None, future_tolerance_ms: 300_000, column: None }
    }
}

#[derive(Default, Serialize, Deserialize)]
struct State {
    warmup_p95: Vec<f64>,
    usual_p95: Option<f64>,
}

#[derive(Default)]
pub struct Freshness {
    config: Config,
    state: State,
}

/// The rows that have an event time, and their times, in the same order.
#[derive(Default)]
struct EventTimes {
    rows: Vec<u32>,
    times: Vec<i64>,
}

impl EventTimes {
    /// The rows whose time `holds` is true of.
    fn rows_where<'a>(&'a self, holds: impl Fn(i64) -> bool + 'a) -> impl Iterator<Item = u32> + 'a {
        self.rows.iter().zip(&self.times).filter(move |&(_, &t)| holds(t)).map(|(&r, _)| r)
    }
}

impl Freshness {
    /// Every row that has an event time, taken a run of present rows at once.
    fn event_times(&self, batch: &Batch) -> EventTimes {
        if !batch.event_times.is_empty() && self.config.column.is_none() {
            return EventTimes { rows: (0..batch.event_times.len() as u32).collect(), times: batch.event_times.clone() };
        }
        let column = match &self.config.column {
            Some(name) => batch.column(name),
            None => batch.columns.iter().find(|c| matches!(c.values, ColumnValues::Timestamp(_))),
        };
        let mut found = EventTimes::default();
        if let Some((c, ColumnValues::Timestamp(v) | ColumnValues::Int64(v))) = column.map(|c| (c, &c.values)) {
            for run in c.present_runs(v.len()) {
                found.rows.extend(run.start as u32..run.end as u32);
                found.times.extend_from_slice(&v[run]);
            }
        }
        found
    }
}

impl Detector for Freshness {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "freshness".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Event-time lag at window close against a learned or fixed limit".into(),
            metrics: vec![
                metric_info("lag_p95_ms", "95th percentile of close time minus event time"),
                metric_info("lag_max_ms", "Largest close time minus event time"),
                metric_info("future_rate", "Share of records stamped in the future"),
            ],
            config_schema: r#"{"type":"object","properties":{"warmup_windows":{"type":"integer"},"factor":{"type":"number"},"min_increase_ms":{"type":"number"},"max_lag_ms":{"type":"number"},"future_tolerance_ms":{"type":"integer"},"column":{"type":"string"}}}"#.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        self.config = parse_config(config)?;
        Ok(())
    }

    fn reads(&self) -> Reads {
        match &self.config.column {
            // That column's times alone, whatever else the window has.
            Some(column) => Reads::only(BatchParts::empty()).and_columns([column.clone()]),
            None => Reads::only(BatchParts::EVENT_TIMES | BatchParts::TIMESTAMP_VALUES),
        }
    }

    fn analyze(&mut self, batch: &Batch) -> Result<Analysis, String> {
        let mut out = Analysis::new();
        let stamped = self.event_times(batch);
        if stamped.times.is_empty() {
            return Ok(out);
        }
        let now = batch.info.closed_at_ms;
        let lags: Vec<f64> = stamped.times.iter().map(|&t| (now - t) as f64).collect();
        let p95_max = quantiles(&lags, &[0.95, 1.0]);
        let (p95, max) = (p95_max[0], p95_max[1]);
        out.metric("lag_p95_ms", None, p95);
        out.metric("lag_max_ms", None, max);

        let future: Vec<u32> = stamped.rows_where(|t| t > now + self.config.future_tolerance_ms).collect();
        let future_rate = future.len() as f64 / stamped.times.len() as f64;
        out.metric("future_rate", None, future_rate);
        if future_rate > 0.01 {
            out.findings.push(
                Finding::new(
                    "future_rate",
                    None,
                    future_rate,
                    0.01,
                    Severity::Warning,
                    format!(
                        "{} of {} records are stamped more than {} s in the future",
                        future.len(),
                        stamped.times.len(),
                        self.config.future_tolerance_ms / 1000
                    ),
                )
                .with_rows(future),
            );
        }

        let limit = match (self.config.max_lag_ms, self.state.usual_p95) {
            (Some(fixed), _) => fixed,
            (None, Some(usual)) => (usual * self.config.factor).max(usual + self.config.min_increase_ms),
            (None, None) => {
                self.state.warmup_p95.push(p95);
                if self.state.warmup_p95.len() as u32 >= self.config.warmup_windows {
                    self.state.usual_p95 = Some(quantile(&self.state.warmup_p95, 0.5));
                }
                return Ok(out);
            }
        };
        if p95 > limit {
            let severity = if p95 > 10.0 * limit { Severity::Critical } else { Severity::Warning };
            let stale = stamped.rows_where(|t| (now - t) as f64 > limit);
            out.findings.push(
                Finding::new(
                    "lag_p95_ms",
                    None,
                    p95,
                    limit,
                    severity,
                    format!("records are {:.1} s old at the 95th percentile, limit {:.1} s", p95 / 1000.0, limit / 1000.0),
                )
                .with_rows(stale),
            );
        }
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

export_detector!(Freshness);

#[cfg(test)]
mod tests {
    use super::*;
    use clean_host_sdk::testing::{BatchBuilder, Rng};

    #[test]
    fn resumes_from_its_snapshot_exactly() {
        let windows = clean_host_sdk::testing::realistic_windows(7, 60, 500);
        clean_host_sdk::testing::assert_restore_equivalent::<Freshness>("{}", &windows, (3..60).step_by(7));
    }

    #[test]
    fn reads_all_it_analyses() {
        let windows = clean_host_sdk::testing::realistic_windows(7, 60, 500);
        clean_host_sdk::testing::assert_reads_suffice::<Freshness>("{}", &windows);
        clean_host_sdk::testing::assert_reads_suffice::<Freshness>(r#"{"column": "shipped_at"}"#, &windows);
        // A column of integers named as the time: read by name, not by type.
        clean_host_sdk::testing::assert_reads_suffice::<Freshness>(r#"{"column": "items"}"#, &windows);
    }

    const NOW: i64 = 1_800_000_000_000;

    fn window(seq: u64, rng: &mut Rng, late_share: f64) -> Batch {
        let times: Vec<i64> = (0..1000)
            .map(|_| {
                let lag = if rng.uniform() < late_share { 600_000.0 } else { -200.0 * rng.uniform().max(1e-9).ln() };
                NOW - lag as i64
            })
            .collect();
        BatchBuilder::new(seq).event_times(&times, NOW).build()
    }

    #[test]
    fn steady_lag_is_quiet_and_late_records_are_flagged() {
        let mut d = Freshness::default();
        d.configure("{}").unwrap();
        let mut rng = Rng(2);
        for seq in 0..200 {
            assert!(d.analyze(&window(seq, &mut rng, 0.0)).unwrap().findings.is_empty());
        }
        let a = d.analyze(&window(200, &mut rng, 0.2)).unwrap();
        assert_eq!(a.findings.len(), 1);
        assert_eq!(a.findings[0].metric, "lag_p95_ms");
        assert!(a.findings[0].value >= 590_000.0);
    }

    #[test]
    fn timestamp_column_is_used_without_event_times() {
        let mut d = Freshness::default();
        d.configure(r#"{"max_lag_ms": 1000}"#).unwrap();
        let ts: Vec<Option<i64>> = (0..100).map(|i| Some(NOW - 5000 - i)).collect();
        let mut b = BatchBuilder::new(0).timestamp("ts", &ts).build();
        b.info.closed_at_ms = NOW;
        assert_eq!(d.analyze(&b).unwrap().findings.len(), 1);
    }

    /// Rows without a time (nulls, here 3 and 10 to 12) are left out, and
    /// each flagged row is still named by its own row number.
    #[test]
    fn flagged_rows_are_named_by_their_row_past_absent_ones() {
        let mut d = Freshness::default();
        d.configure(r#"{"max_lag_ms": 1000}"#).unwrap();
        let ts: Vec<Option<i64>> = (0..100)
            .map(|i| match i {
                3 | 10..=12 => None,
                20..=39 => Some(NOW + 3_600_000),
                _ => Some(NOW - 5000),
            })
            .collect();
        let mut b = BatchBuilder::new(0).timestamp("ts", &ts).build();
        b.info.closed_at_ms = NOW;
        let a = d.analyze(&b).unwrap();
        let rows = |metric: &str| a.findings.iter().find(|f| f.metric == metric).map(|f| f.sample_rows.clone()).unwrap_or_default();
        assert_eq!(rows("future_rate"), (20..=39).collect::<Vec<u32>>());
        let stale: Vec<u32> = (0..100).filter(|i| !matches!(i, 3 | 10..=12 | 20..=39)).take(20).collect();
        assert_eq!(rows("lag_p95_ms"), stale);
        assert_eq!(a.metrics.iter().find(|m| m.metric == "future_rate").map(|m| m.value), Some(20.0 / 96.0));
    }

    #[test]
    fn future_stamps_are_flagged() {
        let mut d = Freshness::default();
        let times: Vec<i64> = (0..100).map(|i| if i < 10 { NOW + 3_600_000 } else { NOW - 100 }).collect();
        let a = d.analyze(&BatchBuilder::new(0).event_times(&times, NOW).build()).unwrap();
        assert_eq!(a.findings[0].metric, "future_rate");
        assert_eq!(a.findings[0].sample_rows.len(), 10);
    }
}
