//! Asks the host for every column's summaries (the WIT's `window` import)
//! and checks them against its own: per column one info finding `agrees`,
//! 1 when the host's answer is the one it works out itself (none for the
//! wrong type of column), else 0 with what differs. Asking for a column
//! the batch does not have must give none, and so must asking outside
//! `analyze` (its `configure` fails if not). Per column also `sdk_agrees`:
//! the SDK's helpers (`DistinctValues::of`, `stats::sorted_column`) give
//! the same for the batch handed over, and for a changed copy of it (rows
//! reversed, numbers negated) what the copy holds, not the window's; and
//! `handed`: the SDK knows the batch handed over (whose summaries it takes
//! from the host) and not the copy. With `hammer = true` it asks for them
//! over and over and never returns: the call must still end at its
//! deadline.

use std::collections::HashMap;

use clean_host_sdk::bindings::clean_host::plugin::window;
use clean_host_sdk::distinct::DistinctValues;
use clean_host_sdk::stats::sorted_column;
use clean_host_sdk::{export_detector, parse_config, Analysis, Batch, Column, ColumnValues, Detector, Finding, PluginInfo, Severity, StringColumn, PRESENT};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Ask for every column's summaries in a loop that never ends.
    hammer: bool,
}

#[derive(Default)]
pub struct Summaries {
    config: Config,
}

/// (values in order of first appearance, their counts, each row's value or u32::MAX).
type Grouped = (Vec<Vec<u8>>, Vec<u32>, Vec<u32>);

fn grouped(column: &Column) -> Option<Grouped> {
    let ColumnValues::Text(_) = &column.values else { return None };
    let (mut values, mut counts, mut rows) = (Vec::new(), Vec::new(), Vec::new());
    let mut index: HashMap<Vec<u8>, u32> = HashMap::new();
    for row in 0..column.len() {
        if column.state(row) != PRESENT {
            rows.push(u32::MAX);
            continue;
        }
        let value = column.bytes(row).to_vec();
        let at = *index.entry(value.clone()).or_insert_with(|| {
            values.push(value);
            counts.push(0);
            values.len() as u32 - 1
        });
        counts[at as usize] += 1;
        rows.push(at);
    }
    Some((values, counts, rows))
}

fn sorted(column: &Column) -> Option<Vec<f64>> {
    let view = column.numeric()?;
    let mut values: Vec<f64> = view.present().map(|(_, v)| v).collect();
    values.sort_by(f64::total_cmp);
    Some(values)
}

fn host_grouped(column: u32) -> Option<Grouped> {
    let d = window::distinct(column)?;
    let values = (0..d.counts.len()).map(|i| d.values.bytes[d.values.offsets[i] as usize..d.values.offsets[i + 1] as usize].to_vec()).collect();
    Some((values, d.counts, d.rows))
}

/// What differs between `whose` summaries of `column` (grouped, sorted) and ours.
fn differences(whose: &str, column: &Column, (their_groups, their_sorted): (Option<Grouped>, Option<Vec<f64>>)) -> Option<String> {
    let ours = grouped(column);
    if ours != their_groups {
        return Some(format!("distinct: ours {ours:?}, {whose} {their_groups:?}"));
    }
    let ours = sorted(column);
    // Bit for bit: -0 before 0, as total_cmp orders them.
    let bits = |v: &Option<Vec<f64>>| v.as_ref().map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<u64>>());
    (bits(&ours) != bits(&their_sorted)).then(|| format!("sorted: ours {ours:?}, {whose} {their_sorted:?}"))
}

/// The SDK's summaries of column `index` of `batch`.
fn sdk_summaries(batch: &Batch, index: usize) -> (Option<Grouped>, Option<Vec<f64>>) {
    let groups = DistinctValues::of(batch, index).map(|d| (d.iter().map(|(v, _)| v.to_vec()).collect(), d.counts.clone(), d.row_values.clone()));
    (groups, sorted_column(batch, index))
}

/// The column with its rows in reverse order and its numbers negated.
fn changed(column: &Column) -> Column {
    let values = match &column.values {
        ColumnValues::Float64(v) => ColumnValues::Float64(v.iter().rev().map(|x| -x).collect()),
        ColumnValues::Int64(v) => ColumnValues::Int64(v.iter().rev().map(|x| x.wrapping_neg()).collect()),
        ColumnValues::Text(_) => {
            let mut text = StringColumn { bytes: Vec::new(), offsets: vec![0] };
            for row in (0..column.len()).rev() {
                text.bytes.extend_from_slice(column.bytes(row));
                text.offsets.push(text.bytes.len() as u32);
            }
            ColumnValues::Text(text)
        }
        other => other.clone(),
    };
    Column { name: column.name.clone(), values, validity: column.validity.iter().rev().copied().collect() }
}

/// An info finding `metric`: 1 when nothing `differs`, else 0 and what differs.
fn verdict(metric: &str, column: Option<&str>, differs: Option<String>) -> Finding {
    let agrees = f64::from(u8::from(differs.is_none()));
    Finding::new(metric, column, agrees, 1.0, Severity::Info, differs.unwrap_or_default())
}

impl Detector for Summaries {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "summaries".into(),
            version: "0.0.1".into(),
            description: "Checks the host's window summaries against its own".into(),
            metrics: Vec::new(),
            config_schema: "{}".into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        self.config = parse_config(config)?;
        match (window::distinct(0), window::sorted(0)) {
            (None, None) => Ok(()),
            _ => Err("the host answered outside analyze".into()),
        }
    }

    fn analyze(&mut self, batch: &Batch) -> Result<Analysis, String> {
        if self.config.hammer {
            // Asking must be answered at all, or the loop below proves nothing.
            let indices = 0..batch.columns.len() as u32;
            if indices.clone().all(|i| window::distinct(i).is_none() && window::sorted(i).is_none()) {
                return Err("no summaries".into());
            }
            let mut kept = 0usize;
            loop {
                for index in 0..batch.columns.len() as u32 {
                    kept = kept.wrapping_add(window::distinct(index).map_or(0, |d| d.rows.len()));
                    kept = kept.wrapping_add(window::sorted(index).map_or(0, |s| s.len()));
                }
                std::hint::black_box(kept);
            }
        }
        let mut out = Analysis::new();
        let mut copy = batch.clone();
        copy.columns = batch.columns.iter().map(changed).collect();
        for (index, column) in batch.columns.iter().enumerate() {
            let host = (host_grouped(index as u32), window::sorted(index as u32));
            out.findings.push(verdict("agrees", Some(&column.name), differences("the host's", column, host)));
            let sdk_differs = differences("the SDK's", column, sdk_summaries(batch, index))
                .or_else(|| differences("the SDK's, for the copy,", &copy.columns[index], sdk_summaries(&copy, index)));
            out.findings.push(verdict("sdk_agrees", Some(&column.name), sdk_differs));
        }
        let handed = clean_host_sdk::is_handed(batch) && !clean_host_sdk::is_handed(&copy);
        out.findings.push(verdict("handed", None, (!handed).then(|| "the SDK took a copy for the batch handed over, or not that batch".into())));
        let beyond = batch.columns.len() as u32;
        let none = [beyond, u32::MAX].iter().all(|&i| window::distinct(i).is_none() && window::sorted(i).is_none());
        out.findings.push(verdict("beyond_is_none", None, (!none).then(|| "the host answered for a column past the last".into())));
        Ok(out)
    }
}

export_detector!(Summaries);
