//! Schema: type conformance per column, and fields that appear or vanish.
//!
//! The host infers each column's type per window and marks values of another
//! type. This detector learns the usual type and presence of every field over
//! the first windows, then flags a changed type, a rise in wrong-typed values,
//! a field that stopped arriving, and a field never seen before (once).

use std::collections::BTreeMap;

use clean_host_sdk::stats::RateBaseline;
use clean_host_sdk::{
    decode_state, encode_state, export_detector, metric_info, parse_config, Analysis, Batch, BatchParts, Column, Detector, Finding, PluginInfo, Reads,
    Severity, MISSING, PRESENT, WRONG_TYPE,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Windows used to learn the schema.
    warmup_windows: u32,
    /// Smallest rise in the wrong-type rate that counts as a departure.
    min_wrong_type_increase: f64,
    /// Fields present in at least this share of rows while learning are required.
    required_presence: f64,
    /// Types to expect per column ("number", "text", "boolean", "timestamp"), instead of learning them.
    types: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Config { warmup_windows: 5, min_wrong_type_increase: 0.01, required_presence: 0.5, types: BTreeMap::new() }
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct FieldBaseline {
    /// Windows in which each type class was inferred.
    types: BTreeMap<String, u32>,
    present: u64,
    rows: u64,
    wrong_type: RateBaseline,
    /// Appeared after learning: never required, so never reported as vanished.
    #[serde(default)]
    optional: bool,
}

impl FieldBaseline {
    fn expected_type(&self) -> Option<&str> {
        self.types.iter().max_by_key(|(_, n)| **n).map(|(t, _)| t.as_str())
    }
}

#[derive(Default, Serialize, Deserialize)]
struct State {
    windows: u32,
    fields: BTreeMap<String, FieldBaseline>,
}

#[derive(Default)]
pub struct Schema {
    config: Config,
    state: State,
}

/// Integers and floats are one class: a window of whole numbers in a float
/// column is not a schema change.
fn type_class(column: &Column) -> &'static str {
    match column.type_name() {
        "float64" | "int64" => "number",
        other => other,
    }
}

impl Schema {
    fn learn(&mut self, batch: &Batch) {
        let rows = batch.row_count as usize;
        for column in &batch.columns {
            let f = self.state.fields.entry(column.name.clone()).or_default();
            let missing = column.count(MISSING);
            f.present += (rows - missing) as u64;
            f.rows += rows as u64;
            if column.count(PRESENT) > 0 {
                *f.types.entry(type_class(column).to_string()).or_default() += 1;
            }
            f.wrong_type.observe(column.count(WRONG_TYPE), rows);
        }
        for (name, f) in self.state.fields.iter_mut() {
            if batch.column(name).is_none() {
                f.rows += rows as u64;
            }
        }
    }

    fn check(&mut self, batch: &Batch, out: &mut Analysis) {
        let rows = batch.row_count as usize;
        let mut new_fields = Vec::new();
        for column in &batch.columns {
            let missing = column.count(MISSING);
            let wrong = column.count(WRONG_TYPE);
            let wrong_rate = wrong as f64 / rows as f64;
            out.metric("wrong_type_rate", Some(&column.name), wrong_rate);
            let baseline = self.state.fields.get(&column.name);
            let configured = self.config.types.get(&column.name).map(String::as_str);
            if baseline.is_none() && configured.is_none() {
                if missing < rows {
                    new_fields.push((column.name.clone(), type_class(column), rows - missing));
                }
                continue;
            }
            let expected = configured.or_else(|| baseline.and_then(FieldBaseline::expected_type));
            let actual = type_class(column);
            if let Some(expected) = expected {
                if column.count(PRESENT) > 0 && actual != expected {
                    out.findings.push(Finding::new(
                        "type_change",
                        Some(&column.name),
                        1.0,
                        0.0,
                        Severity::Critical,
                        format!("'{}' arrives as {actual}, expected {expected}", column.name),
                    ));
                    continue;
                }
            }
            let limit = match self.state.fields.get_mut(&column.name) {
                Some(b) => {
                    let limit = b.wrong_type.upper_limit(rows, self.config.min_wrong_type_increase);
                    b.wrong_type.push(wrong_rate, wrong_rate > limit);
                    limit
                }
                None => self.config.min_wrong_type_increase,
            };
            if wrong_rate > limit {
                let severity = if wrong_rate > 0.1 { Severity::Critical } else { Severity::Warning };
                out.findings.push(
                    Finding::new(
                        "wrong_type_rate",
                        Some(&column.name),
                        wrong_rate,
                        limit,
                        severity,
                        format!("{wrong} of {rows} values of '{}' are not {actual} ({:.1}%)", column.name, wrong_rate * 100.0),
                    )
                    .with_rows((0..rows).filter(|&r| column.state(r) == WRONG_TYPE).map(|r| r as u32)),
                );
            }
        }
        for (name, f) in &self.state.fields {
            let presence = f.present as f64 / f.rows.max(1) as f64;
            let absent = batch.column(name).is_none_or(|c| c.count(MISSING) == rows);
            if !f.optional && presence >= self.config.required_presence && absent {
                out.findings.push(Finding::new(
                    "vanished_field",
                    Some(name),
                    0.0,
                    presence,
                    Severity::Critical,
                    format!("'{name}' is missing from every record (it was in {:.0}% of them)", presence * 100.0),
                ));
            }
        }
        for (name, class, present) in new_fields {
            out.findings.push(Finding::new(
                "new_field",
                Some(&name),
                present as f64 / rows as f64,
                0.0,
                Severity::Warning,
                format!("new field '{name}' ({class}) in {present} of {rows} records"),
            ));
            // Reported once; from now on it is part of the schema.
            let mut f = FieldBaseline { present: present as u64, rows: rows as u64, optional: true, ..Default::default() };
            f.types.insert(class.to_string(), 1);
            self.state.fields.insert(name, f);
        }
    }
}

impl Detector for Schema {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "schema".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Type conformance per column; new and vanished fields".into(),
            metrics: vec![
                metric_info("wrong_type_rate", "Share of a column's values of another type than the column's"),
                metric_info("type_change", "The column's type differs from the learned or configured one"),
                metric_info("vanished_field", "A usually present field is missing from every record"),
                metric_info("new_field", "A field never seen before"),
            ],
            config_schema:
                r#"{"type":"object","properties":{"warmup_windows":{"type":"integer"},"min_wrong_type_increase":{"type":"number"},"required_presence":{"type":"number"},"types":{"type":"object"}}}"#
                    .into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        let config: Config = parse_config(config)?;
        for (column, t) in &config.types {
            if !["number", "text", "boolean", "timestamp"].contains(&t.as_str()) {
                return Err(format!("types.{column}: unknown type '{t}' (number, text, boolean, timestamp)"));
            }
        }
        self.config = config;
        Ok(())
    }

    fn reads(&self) -> Reads {
        // Names, types and row states: no values.
        Reads::only(BatchParts::empty())
    }

    fn analyze(&mut self, batch: &Batch) -> Result<Analysis, String> {
        let mut out = Analysis::new();
        if batch.row_count == 0 {
            return Ok(out);
        }
        out.metric("field_count", None, batch.columns.len() as f64);
        if self.state.windows < self.config.warmup_windows {
            self.learn(batch);
        } else {
            self.check(batch, &mut out);
        }
        self.state.windows += 1;
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

export_detector!(Schema);

#[cfg(test)]
mod tests {
    use super::*;
    use clean_host_sdk::testing::BatchBuilder;

    #[test]
    fn resumes_from_its_snapshot_exactly() {
        let windows = clean_host_sdk::testing::realistic_windows(7, 60, 500);
        clean_host_sdk::testing::assert_restore_equivalent::<Schema>("{}", &windows, (3..60).step_by(7));
    }

    #[test]
    fn reads_all_it_analyses() {
        let windows = clean_host_sdk::testing::realistic_windows(7, 60, 500);
        clean_host_sdk::testing::assert_reads_suffice::<Schema>("{}", &windows);
    }

    fn clean(seq: u64) -> Batch {
        let amounts: Vec<Option<f64>> = (0..100).map(|i| Some(i as f64 * 1.5)).collect();
        let names: Vec<Option<&str>> = (0..100).map(|i| Some(if i % 2 == 0 { "a" } else { "b" })).collect();
        BatchBuilder::new(seq).float("amount", &amounts).text("name", &names).build()
    }

    /// Past warm-up (5 windows) and with the wrong-type rates' spread known.
    fn learned() -> Schema {
        let mut d = Schema::default();
        d.configure("{}").unwrap();
        for seq in 0..clean_host_sdk::stats::MIN_HISTORY as u64 {
            assert!(d.analyze(&clean(seq)).unwrap().findings.is_empty());
        }
        d
    }

    #[test]
    fn clean_windows_are_quiet() {
        let mut d = learned();
        for seq in 5..100 {
            assert!(d.analyze(&clean(seq)).unwrap().findings.is_empty());
        }
    }

    #[test]
    fn wrong_types_are_flagged() {
        let mut d = learned();
        let mut b = BatchBuilder::new(5).float("amount", &vec![Some(1.0); 100]);
        for r in 0..10 {
            b = b.mark(r, WRONG_TYPE);
        }
        let a = d.analyze(&b.text("name", &vec![Some("a"); 100]).build()).unwrap();
        assert_eq!(a.findings.len(), 1);
        assert_eq!(a.findings[0].metric, "wrong_type_rate");
        assert_eq!(a.findings[0].sample_rows.len(), 10);
    }

    #[test]
    fn type_change_vanished_and_new_fields() {
        let mut d = learned();
        let b = BatchBuilder::new(5).text("amount", &vec![Some("12.5"); 100]).int("extra", &vec![Some(1); 100]).build();
        let a = d.analyze(&b).unwrap();
        let metrics: Vec<&str> = a.findings.iter().map(|f| f.metric.as_str()).collect();
        assert_eq!(metrics, ["type_change", "vanished_field", "new_field"], "{:?}", a.findings);
        // The new field is reported once.
        let b = BatchBuilder::new(6).float("amount", &vec![Some(1.0); 100]).text("name", &vec![Some("a"); 100]).int("extra", &vec![Some(1); 100]).build();
        assert!(d.analyze(&b).unwrap().findings.is_empty());
        // ...and may go away again without a finding.
        assert!(d.analyze(&clean(7)).unwrap().findings.is_empty());
    }

    #[test]
    fn an_all_null_window_is_not_a_type_change() {
        let mut d = learned();
        let b = BatchBuilder::new(5).text("amount", &vec![None; 100]).text("name", &vec![Some("a"); 100]).build();
        assert!(d.analyze(&b).unwrap().findings.is_empty());
    }

    #[test]
    fn integers_in_a_float_column_are_not_a_change() {
        let mut d = learned();
        let b = BatchBuilder::new(5).int("amount", &vec![Some(3); 100]).text("name", &vec![Some("a"); 100]).build();
        assert!(d.analyze(&b).unwrap().findings.is_empty());
    }

    #[test]
    fn configured_types_are_checked() {
        let mut d = Schema::default();
        assert!(d.configure(r#"{"types": {"amount": "float"}}"#).is_err());
        d.configure(r#"{"types": {"amount": "text", "name": "text"}, "warmup_windows": 0}"#).unwrap();
        let a = d.analyze(&clean(0)).unwrap();
        assert_eq!(a.findings.len(), 1, "{:?}", a.findings);
        assert_eq!((a.findings[0].metric.as_str(), a.findings[0].column.as_deref()), ("type_change", Some("amount")));
    }
}
