//! Validity: values that break a rule.
//!
//! Rules come from config: a range, a set of allowed values, a regular
//! expression, not-null. With no rules it still learns the value set of every
//! low-cardinality text column (a status, a country, a currency) over the
//! first windows and flags windows where values outside that set become more
//! than rare. The set follows legitimate change: a new value seen in
//! [`ADMIT_AFTER`] windows that were not flagged (a new airline's first
//! flights) joins it.

use std::collections::{BTreeMap, BTreeSet};

use clean_host_sdk::distinct::{DistinctValues, ABSENT};
use clean_host_sdk::stats::RateBaseline;
use clean_host_sdk::{
    decode_state, encode_state, export_detector, metric_info, parse_config, Analysis, Batch, BatchParts, Cell, Column, ColumnValues, Detector, Finding,
    PluginInfo, Reads, Severity,
};
use regex::Regex;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Rule {
    /// The column the rule applies to.
    column: String,
    /// Smallest allowed number.
    min: Option<f64>,
    /// Largest allowed number.
    max: Option<f64>,
    /// The only allowed values (strings or numbers).
    allowed: Option<Vec<serde_json::Value>>,
    /// A regular expression every text value must match.
    pattern: Option<String>,
    /// Nulls and missing values break the rule.
    not_null: bool,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    rules: Vec<Rule>,
    /// Share of rows that may break a configured rule before it is a finding.
    max_violation_rate: f64,
    /// Learn the value sets of low-cardinality text columns.
    learn_categories: bool,
    /// A text column with at most this many distinct values is categorical.
    max_categories: usize,
    /// Windows used to learn value sets.
    warmup_windows: u32,
    /// Smallest rise in the share of unseen values that counts as a departure.
    min_increase: f64,
    /// Fewest unseen values that can make a finding.
    min_count: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { rules: Vec::new(), max_violation_rate: 0.0, learn_categories: true, max_categories: 200, warmup_windows: 20, min_increase: 0.01, min_count: 5 }
    }
}

/// A configured rule, ready to apply.
struct CompiledRule {
    rule: Rule,
    pattern: Option<Regex>,
    allowed_text: BTreeSet<String>,
    allowed_numbers: Vec<f64>,
}

impl CompiledRule {
    fn new(rule: Rule) -> Result<Self, String> {
        if rule.column.is_empty() {
            return Err("every rule needs a column".into());
        }
        let pattern = match &rule.pattern {
            Some(p) => Some(Regex::new(p).map_err(|e| format!("rule for '{}': bad pattern: {e}", rule.column))?),
            None => None,
        };
        let mut allowed_text = BTreeSet::new();
        let mut allowed_numbers = Vec::new();
        for v in rule.allowed.iter().flatten() {
            match v {
                serde_json::Value::String(s) => {
                    allowed_text.insert(s.clone());
                }
                serde_json::Value::Number(n) => allowed_numbers.push(n.as_f64().unwrap_or(f64::NAN)),
                serde_json::Value::Bool(b) => {
                    allowed_text.insert(b.to_string());
                }
                other => return Err(format!("rule for '{}': cannot allow {other}", rule.column)),
            }
        }
        Ok(CompiledRule { rule, pattern, allowed_text, allowed_numbers })
    }

    /// Why `cell` breaks the rule, if it does.
    fn violation(&self, cell: Cell) -> Option<&'static str> {
        let r = &self.rule;
        let number = match cell {
            Cell::Null | Cell::Missing => return r.not_null.then_some("null"),
            Cell::WrongType => return None,
            Cell::Float(v) => Some(v),
            Cell::Int(v) | Cell::Time(v) => Some(v as f64),
            Cell::Bool(_) | Cell::Text(_) => None,
        };
        if let Some(x) = number {
            if r.min.is_some_and(|m| x < m) {
                return Some("below min");
            }
            if r.max.is_some_and(|m| x > m) {
                return Some("above max");
            }
            if r.allowed.is_some() && !self.allowed_numbers.contains(&x) {
                return Some("not allowed");
            }
            return None;
        }
        let text = match cell {
            Cell::Text(s) => s,
            Cell::Bool(true) => "true",
            _ => "false",
        };
        if r.allowed.is_some() && !self.allowed_text.contains(text) {
            return Some("not allowed");
        }
        if self.pattern.as_ref().is_some_and(|p| !p.is_match(text)) {
            return Some("does not match the pattern");
        }
        None
    }
}

/// Windows a new value must turn up in, unflagged, to join a learned set.
const ADMIT_AFTER: u32 = 3;
/// New values followed at once, at most (more are forgotten until there is room).
const MAX_NEWCOMERS: usize = 100;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Categories {
    /// Values seen while learning, with their counts; `None` once there were too many.
    values: Option<BTreeMap<String, u64>>,
    /// Present values learned from and checked.
    present: u64,
    unseen: RateBaseline,
    /// Values outside the set, with the unflagged windows they turned up in.
    #[serde(default)]
    newcomers: BTreeMap<String, u32>,
    /// The learned values as bytes, most frequent first: most lookups end at the first compare.
    #[serde(skip)]
    lookup: Vec<Vec<u8>>,
}

impl Categories {
    /// Count a window's (unflagged) unseen values; those seen in enough
    /// windows join the set. A set grown past `max_categories` was no set
    /// of categories: the column is no longer checked.
    fn admit<'a>(&mut self, values: impl Iterator<Item = &'a str>, max_categories: usize) {
        let distinct: BTreeSet<&str> = values.collect();
        for value in distinct {
            if !self.newcomers.contains_key(value) && self.newcomers.len() >= MAX_NEWCOMERS {
                continue;
            }
            let windows = self.newcomers.entry(value.to_string()).or_default();
            *windows += 1;
            if *windows >= ADMIT_AFTER {
                self.newcomers.remove(value);
                if let Some(known) = &mut self.values {
                    known.insert(value.to_string(), 1);
                    if known.len() > max_categories {
                        (self.values, self.newcomers) = (None, BTreeMap::new());
                    }
                }
                self.lookup.clear();
            }
        }
    }

    fn contains(&mut self, value: &[u8]) -> bool {
        if self.lookup.is_empty() {
            let mut by_count: Vec<(&String, &u64)> = self.values.iter().flatten().collect();
            by_count.sort_by(|a, b| b.1.cmp(a.1));
            self.lookup = by_count.into_iter().map(|(v, _)| v.as_bytes().to_vec()).collect();
        }
        self.lookup.iter().any(|known| known.as_slice() == value)
    }
}

#[derive(Default, Serialize, Deserialize)]
struct State {
    windows: u32,
    categories: BTreeMap<String, Categories>,
}

#[derive(Default)]
pub struct Validity {
    config: Config,
    rules: Vec<CompiledRule>,
    state: State,
}

impl Validity {
    fn check_rule(rule: &CompiledRule, column: Option<&Column>, rows: usize, max_rate: f64, out: &mut Analysis) {
        let name = &rule.rule.column;
        let mut bad = Vec::new();
        let mut reasons = BTreeMap::<&str, usize>::new();
        for row in 0..rows {
            let cell = column.map_or(Cell::Missing, |c| c.cell(row));
            if let Some(reason) = rule.violation(cell) {
                bad.push(row as u32);
                *reasons.entry(reason).or_default() += 1;
            }
        }
        let rate = bad.len() as f64 / rows as f64;
        out.metric("rule_violation_rate", Some(name), rate);
        if rate > max_rate && !bad.is_empty() {
            let why: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
            let severity = if rate > 0.05 { Severity::Critical } else { Severity::Warning };
            out.findings.push(
                Finding::new(
                    "rule_violation_rate",
                    Some(name),
                    rate,
                    max_rate,
                    severity,
                    format!("{} of {rows} values of '{name}' break its rule: {}", bad.len(), why.join(", ")),
                )
                .with_rows(bad),
            );
        }
    }

    /// Column `index` of `batch`, a text column: its values join the known ones.
    fn learn_categories(&mut self, batch: &Batch, index: usize) {
        let column = &batch.columns[index];
        let max = self.config.max_categories;
        let c = self.state.categories.entry(column.name.clone()).or_insert_with(|| Categories {
            values: Some(BTreeMap::new()),
            // While learning every value is known: the share of unseen ones starts at 0.
            unseen: RateBaseline::with_prior(0.0),
            ..Default::default()
        });
        let Some(values) = c.values.as_mut() else {
            return;
        };
        let Some(distinct) = DistinctValues::of(batch, index) else {
            return;
        };
        c.present += distinct.present as u64;
        for (value, rows) in distinct.iter() {
            let value = std::str::from_utf8(value).unwrap_or("");
            match values.get_mut(value) {
                Some(n) => *n += u64::from(rows),
                None => {
                    values.insert(value.to_string(), u64::from(rows));
                }
            }
        }
        if values.len() > max {
            c.values = None;
        }
    }

    /// Column `index` of `batch`, a text column, against the values known.
    fn check_categories(&mut self, batch: &Batch, index: usize, out: &mut Analysis) {
        let column = &batch.columns[index];
        let Some(c) = self.state.categories.get_mut(&column.name) else {
            return;
        };
        let Some(values) = &c.values else { return };
        // Each value must have been seen often enough for its absence to mean something.
        if values.is_empty() || c.present < 20 * values.len() as u64 {
            return;
        }
        let Some(distinct) = DistinctValues::of(batch, index) else {
            return;
        };
        // Each distinct value is looked up once, then its rows follow it.
        let known: Vec<bool> = distinct.iter().map(|(v, _)| c.contains(v)).collect();
        let mut unseen_rows = Vec::new();
        let mut unseen = BTreeSet::new();
        // Rows looked for only when a value is unseen: with every value known, the usual case, none is.
        if known.contains(&false) {
            for (row, &at) in distinct.row_values.iter().enumerate() {
                if at != ABSENT && !known[at as usize] {
                    unseen_rows.push(row as u32);
                    if unseen.len() < 3 {
                        unseen.insert(String::from_utf8_lossy(distinct.value(at as usize)).into_owned());
                    }
                }
            }
        }
        let present = distinct.present;
        if present == 0 {
            return;
        }
        let rate = unseen_rows.len() as f64 / present as f64;
        out.metric("unexpected_value_rate", Some(&column.name), rate);
        let limit = c.unseen.upper_limit(present, self.config.min_increase);
        let departed = rate > limit && unseen_rows.len() >= self.config.min_count;
        c.unseen.push(rate, departed);
        // The rows checked count as evidence too, so values admitted later
        // do not starve the check above.
        c.present += present as u64;
        if !departed {
            let newcomers = distinct.iter().zip(&known).filter(|(_, &k)| !k).map(|((v, _), _)| std::str::from_utf8(v).unwrap_or(""));
            c.admit(newcomers, self.config.max_categories);
        }
        if departed {
            let examples: Vec<String> = unseen.iter().map(|v| format!("{v:?}")).collect();
            let severity = if rate > 0.2 { Severity::Critical } else { Severity::Warning };
            out.findings.push(
                Finding::new(
                    "unexpected_value_rate",
                    Some(&column.name),
                    rate,
                    limit,
                    severity,
                    format!("{} of {present} values of '{}' were never seen while learning (e.g. {})", unseen_rows.len(), column.name, examples.join(", ")),
                )
                .with_rows(unseen_rows),
            );
        }
    }
}

impl Detector for Validity {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "validity".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Configured rules (range, allowed values, regex, not-null) and learned category sets".into(),
            metrics: vec![
                metric_info("rule_violation_rate", "Share of rows that break a configured rule"),
                metric_info("unexpected_value_rate", "Share of a categorical column's values never seen while learning"),
            ],
            config_schema: r#"{"type":"object","properties":{"rules":{"type":"array","items":{"type":"object","required":["column"],"properties":{"column":{"type":"string"},"min":{"type":"number"},"max":{"type":"number"},"allowed":{"type":"array"},"pattern":{"type":"string"},"not_null":{"type":"boolean"}}}},"max_violation_rate":{"type":"number"},"learn_categories":{"type":"boolean"},"max_categories":{"type":"integer"},"warmup_windows":{"type":"integer"},"min_increase":{"type":"number"},"min_count":{"type":"integer"}}}"#.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        let mut config: Config = parse_config(config)?;
        self.rules = std::mem::take(&mut config.rules).into_iter().map(CompiledRule::new).collect::<Result<_, _>>()?;
        self.config = config;
        Ok(())
    }

    fn reads(&self) -> Reads {
        let reads = Reads::only(BatchParts::empty());
        // Categories are learned and checked as the host groups the text.
        let reads = if self.config.learn_categories { reads.and_grouped_text() } else { reads };
        reads.and_columns(self.rules.iter().map(|r| r.rule.column.clone()))
    }

    fn analyze(&mut self, batch: &Batch) -> Result<Analysis, String> {
        let mut out = Analysis::new();
        let rows = batch.row_count as usize;
        if rows == 0 {
            return Ok(out);
        }
        for rule in &self.rules {
            Self::check_rule(rule, batch.column(&rule.rule.column), rows, self.config.max_violation_rate, &mut out);
        }
        if self.config.learn_categories {
            let learning = self.state.windows < self.config.warmup_windows;
            for (index, column) in batch.columns.iter().enumerate().filter(|(_, c)| matches!(c.values, ColumnValues::Text(_))) {
                if self.rules.iter().any(|r| r.rule.column == column.name) {
                    continue;
                }
                if learning {
                    self.learn_categories(batch, index);
                } else {
                    self.check_categories(batch, index, &mut out);
                }
            }
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

export_detector!(Validity);

#[cfg(test)]
mod tests {
    use super::*;
    use clean_host_sdk::testing::{BatchBuilder, Rng};

    #[test]
    fn resumes_from_its_snapshot_exactly() {
        let windows = clean_host_sdk::testing::realistic_windows(7, 60, 500);
        clean_host_sdk::testing::assert_restore_equivalent::<Validity>("{}", &windows, (3..60).step_by(7));
    }

    #[test]
    fn reads_all_it_analyses() {
        let windows = clean_host_sdk::testing::realistic_windows(7, 60, 500);
        clean_host_sdk::testing::assert_reads_suffice::<Validity>("{}", &windows);
        clean_host_sdk::testing::assert_reads_suffice::<Validity>(
            r#"{"learn_categories": false, "rules": [{"column": "amount", "min": 0, "max": 100}, {"column": "email", "pattern": "^u[0-9]+@", "not_null": true}, {"column": "items", "allowed": [1, 2, 3]}]}"#,
            &windows,
        );
    }

    const STATUS: [&str; 4] = ["paid", "shipped", "refunded", "cancelled"];

    fn window(seq: u64, rng: &mut Rng, odd: &[(usize, &str)]) -> Batch {
        let mut status: Vec<Option<&str>> = (0..1000)
            .map(|_| {
                // Skewed: "cancelled" is rare (0.5%).
                let u = rng.uniform();
                Some(if u < 0.7 {
                    STATUS[0]
                } else if u < 0.95 {
                    STATUS[1]
                } else if u < 0.995 {
                    STATUS[2]
                } else {
                    STATUS[3]
                })
            })
            .collect();
        for &(row, v) in odd {
            status[row] = Some(v);
        }
        let ids: Vec<Option<&str>> = (0..1000).map(|_| Some(if rng.uniform() < 0.5 { "x" } else { "y" })).collect();
        BatchBuilder::new(seq).text("status", &status).text("tag", &ids).build()
    }

    #[test]
    fn learned_categories_are_quiet_then_flag_new_values() {
        let mut d = Validity::default();
        d.configure("{}").unwrap();
        let mut rng = Rng(8);
        for seq in 0..300 {
            // One odd value now and then is rare, not a departure.
            let odd: &[(usize, &str)] = if seq > 10 && seq % 7 == 0 { &[(3, "PAID")] } else { &[] };
            assert!(d.analyze(&window(seq, &mut rng, odd)).unwrap().findings.is_empty(), "{seq}");
        }
        let odd: Vec<(usize, &str)> = (0..50).map(|r| (r * 10, "PAID ")).collect();
        let a = d.analyze(&window(300, &mut rng, &odd)).unwrap();
        assert_eq!(a.findings.len(), 1);
        assert!(a.findings[0].message.contains("PAID "));
    }

    /// Newcomers that turn up quietly join the set, and the check goes on;
    /// a set that grows past `max_categories` (ids after all) is dropped.
    #[test]
    fn admitted_values_keep_the_check_and_too_many_end_it() {
        let mut d = Validity::default();
        d.configure(r#"{"max_categories": 8}"#).unwrap();
        let mut rng = Rng(4);
        for seq in 0..40 {
            // Two new values a window, each in 3 windows in a row: admitted.
            let odd: Vec<(usize, &str)> = [(1, "N0"), (2, "N1"), (3, "N2")].into_iter().filter(|_| (20..26).contains(&seq)).collect();
            d.analyze(&window(seq, &mut rng, &odd)).unwrap();
        }
        let odd: Vec<(usize, &str)> = (0..50).map(|r| (r * 10, "PAID ")).collect();
        let a = d.analyze(&window(40, &mut rng, &odd)).unwrap();
        assert!(a.findings.iter().any(|f| f.message.contains("PAID ")), "still checked after admitting: {:?}", a.findings);
        let states = &d.state.categories["status"];
        assert!(states.values.as_ref().is_some_and(|v| v.contains_key("N0") && v.len() <= 8), "{:?}", states.values);
        // Past 8 values the column is not a set of categories.
        for seq in 41..60u64 {
            let odd: Vec<(usize, String)> = (0..4).map(|i| (i, format!("V{}", (seq as usize + i) % 12))).collect();
            let odd: Vec<(usize, &str)> = odd.iter().map(|(r, v)| (*r, v.as_str())).collect();
            d.analyze(&window(seq, &mut rng, &odd)).unwrap();
        }
        assert!(d.state.categories["status"].values.is_none());
    }

    #[test]
    fn configured_rules_are_enforced() {
        let mut d = Validity::default();
        d.configure(
            r#"{"rules": [
                {"column": "amount", "min": 0, "max": 100},
                {"column": "email", "pattern": "^[^@]+@[^@]+$", "not_null": true},
                {"column": "code", "allowed": [1, 2]}
            ]}"#,
        )
        .unwrap();
        let b = BatchBuilder::new(0)
            .float("amount", &[Some(5.0), Some(-1.0), Some(101.0), Some(50.0)])
            .text("email", &[Some("a@b.c"), Some("nope"), None, Some("x@y")])
            .int("code", &[Some(1), Some(2), Some(3), Some(1)])
            .build();
        let a = d.analyze(&b).unwrap();
        let by_column: Vec<(&str, f64)> = a.findings.iter().map(|f| (f.column.as_deref().unwrap(), f.value)).collect();
        assert_eq!(by_column, [("amount", 0.5), ("email", 0.5), ("code", 0.25)]);
        assert!(a.findings[1].message.contains("1 null"));
    }

    #[test]
    fn bad_rules_are_rejected() {
        let mut d = Validity::default();
        assert!(d.configure(r#"{"rules": [{"column": "x", "pattern": "("}]}"#).unwrap_err().contains("bad pattern"));
        assert!(d.configure(r#"{"rules": [{"min": 1}]}"#).is_err());
    }
}
