//! Which numeric columns are clocks rather than measurements.
//!
//! Epoch times, sequence numbers and counters, and calendar parts (year,
//! month, day, hour, minute, weekday) move with time by construction: judged
//! as distributions against a reference from the past, they always look
//! shifted. This tracker recognises them by their values, whatever they are
//! called, so detectors of distributions (drift, outliers) can leave them out:
//!
//! - **in step with the stream**: in row order, carried across windows, the
//!   values hardly ever go down (at most 2% of a window's values, and over
//!   the stream at most one step down for four up: a weekday wraps once in
//!   seven days, a sparse count falls back after every rise). A column constant within
//!   windows counts only once it has moved, by at least three steps up, or by
//!   steps of exactly +1 (a year turning) or a calendar's wrap back to 0 or 1
//!   (minute 59 to 0, month 12 to 1), so a constant field that jumps to
//!   another value (a status code) is still judged; once it has stepped +1,
//!   its wraps are no steps down;
//! - **an epoch time**: nearly all values are seconds, milliseconds,
//!   microseconds or nanoseconds since 1970 within a year of the window's time;
//! - **a time of day as a number**: whole numbers from 0 to 2400 whose last
//!   two digits are under 60 (`HHMM`), spanning at least six hours. Where a
//!   count window starts in the day decides their distribution, not the data.
//!
//! A column is time-like when most of the windows seen so far say so (the
//! answer follows the evidence as it grows); config can force either answer
//! per column. A column that has plainly gone up and down at random for a
//! while, up to its last window read (a measurement), is read in one window
//! of [`SETTLED_EVERY`] only: a window passed over counts as the last one
//! read did, and the first window read that says otherwise (a counter, a
//! clock) has the column read in every window again, the windows passed
//! over since counting for nothing: a column that turns is called time-like
//! at most 3 windows later than reading every window would, or 12 earlier.
//! Reading it every window took a fifth of the outliers detector's time and
//! a sixteenth of drift's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Batch, Column, ColumnValues, PRESENT};

/// Share of a window's values that may step down in a column that moves with time.
const MAX_DOWN_SHARE: f64 = 0.02;
/// Steps up a column in step with the stream takes for each step down, at least.
const UPS_PER_DOWN: u64 = 4;
/// Share of windows that must agree before a column is time-like.
const MIN_AGREEING: f64 = 0.8;
/// Share of values that must be epoch times for a window to call a column one.
const EPOCH_SHARE: f64 = 0.95;
/// A year, in milliseconds: how far from the window's time an epoch value may be.
const YEAR_MS: f64 = 366.0 * 86_400_000.0;
/// Fewest values in a window for it to say anything about a column.
const MIN_VALUES: usize = 3;
/// Share of values that must read as `HHMM` for a window to call a column a time of day.
const HHMM_SHARE: f64 = 0.99;
/// Hours a time-of-day column's values must span in a window (as `HHMM`).
const HHMM_SPAN: f64 = 600.0;
/// Windows of evidence after which a measurement is settled (see [`Evidence::settled`]).
const SETTLED_AFTER: u32 = 20;
/// A settled column is read in the windows whose sequence number is a multiple of this.
pub const SETTLED_EVERY: u64 = 4;

/// What the windows so far said about one column.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Evidence {
    windows: u32,
    /// Windows in which it moved with the stream or held epoch times.
    agreeing: u32,
    /// Windows in which it held epoch times or times of day: clocks whatever their order.
    #[serde(default)]
    clocks: u32,
    /// Steps up and down so far, and whether every step up was exactly +1.
    ups: u64,
    #[serde(default)]
    downs: u64,
    unit_ups: bool,
    /// Whole-number steps down from 6 or more to 0 or 1: a calendar part wrapping.
    #[serde(default)]
    wraps: u64,
    /// The last value of the last window, to carry the order across windows.
    last: Option<f64>,
    /// Steps up, down and wrapping in the last window read, when it said
    /// neither "in step" nor "clock" (a measurement's): counted again for
    /// each window a settled column is passed over in.
    #[serde(default)]
    measured: Option<Steps>,
    /// Windows passed over since the last one read, counted as `measured`.
    #[serde(default)]
    passed: u32,
}

/// One window's steps.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Steps {
    ups: u64,
    downs: u64,
    wraps: u64,
}

impl Evidence {
    /// Whether the column has plainly gone up and down at random (at least
    /// one step down for two up, many of them, never an epoch time or a
    /// time of day) over [`SETTLED_AFTER`] windows and in the last one read:
    /// a measurement, not time-like by this evidence. A clock, counter or
    /// calendar part steps down at most once for four steps up, and a column
    /// that never moved (a year, before it turns) has no steps at all.
    fn settled(&self) -> bool {
        self.measured.is_some() && self.windows >= SETTLED_AFTER && self.clocks == 0 && self.downs >= 100 && self.downs.saturating_mul(2) >= self.ups
    }

    /// A window of a settled column passed over, `present` rows (NaN and
    /// infinite floats too: not read, they are not told apart), `last` its
    /// last value: counted as the last window read was.
    fn pass_over(&mut self, present: usize, last: Option<f64>) {
        self.last = last.or(self.last);
        if let (true, Some(steps)) = (present >= MIN_VALUES, self.measured) {
            self.windows += 1;
            self.add(steps, 1);
            self.passed += 1;
        }
    }

    /// Take `times` windows of `steps` into the sums.
    fn add(&mut self, steps: Steps, times: u64) {
        self.ups = self.ups.saturating_add(steps.ups.saturating_mul(times));
        self.downs = self.downs.saturating_add(steps.downs.saturating_mul(times));
        self.wraps = self.wraps.saturating_add(steps.wraps.saturating_mul(times));
    }

    /// Take back `times` windows of `steps` from the sums.
    fn remove(&mut self, steps: Steps, times: u64) {
        self.ups = self.ups.saturating_sub(steps.ups.saturating_mul(times));
        self.downs = self.downs.saturating_sub(steps.downs.saturating_mul(times));
        self.wraps = self.wraps.saturating_sub(steps.wraps.saturating_mul(times));
    }

    /// One window's present values of the column, in row order; `integers`: an integer column.
    fn observe(&mut self, values: impl Iterator<Item = f64> + Clone, integers: bool, epoch_ranges: &EpochRanges) {
        let Some(first) = values.clone().next() else {
            return;
        };
        // Counted without branches on the values: a column of noise goes up
        // and down at random, which a branch would mispredict every other row.
        let (mut downs, mut ups, mut wraps, mut unit_ups) = (0u32, 0u32, 0u32, true);
        // Whole numbers from 0 to 2400 (times of day as `HHMM`, perhaps): a
        // column's digits are read only when nearly all its values are such.
        let mut in_day = 0usize;
        let mut n = 0usize;
        let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
        let mut previous = self.last.unwrap_or(first);
        for v in values.clone() {
            let p = previous;
            n += 1;
            // `&` and `|`, not `&&` and `||`: as branches on every value,
            // this loop cost a sixth more in wasm.
            let (down, up) = (v < p, v > p);
            downs += u32::from(down);
            ups += u32::from(up);
            wraps += u32::from(integers & down & (p >= 6.0) & ((v == 0.0) | (v == 1.0)));
            unit_ups &= !up | (integers & (v - p == 1.0));
            in_day += usize::from(integers & (0.0..=2400.0).contains(&v));
            // Comparisons, not f64::min/max: those are libm calls in wasm.
            if v < low {
                low = v;
            }
            if v > high {
                high = v;
            }
            previous = v;
        }
        // Values are read again only where they may be epoch times or times
        // of day: most columns are neither.
        let epochs = if epoch_ranges.meets(low, high) { values.clone().filter(|&v| epoch_ranges.holds(v)).count() } else { 0 };
        let hhmm = if in_day as f64 >= HHMM_SHARE * n as f64 && high - low >= HHMM_SPAN {
            values.filter(|&v| (0.0..=2400.0).contains(&v) && (v as i64) % 100 < 60).count()
        } else {
            0
        };
        self.last = Some(previous);
        let steps = Steps { ups: u64::from(ups), downs: u64::from(downs), wraps: u64::from(wraps) };
        self.add(steps, 1);
        self.unit_ups &= unit_ups;
        // A window that says nothing neither confirms a settled column nor unsettles it.
        if n < MIN_VALUES {
            return;
        }
        let (assumed, passed) = (self.measured.take(), std::mem::take(&mut self.passed));
        self.windows += 1;
        let in_step = downs as f64 <= (MAX_DOWN_SHARE * n as f64).max(1.0);
        let epoch = epochs as f64 >= EPOCH_SHARE * n as f64;
        let time_of_day = hhmm as f64 >= HHMM_SHARE * n as f64 && high - low >= HHMM_SPAN;
        self.agreeing += u32::from(in_step || epoch || time_of_day);
        self.clocks += u32::from(epoch || time_of_day);
        if !in_step && !epoch && !time_of_day {
            self.measured = Some(steps);
        } else if let Some(assumed) = assumed {
            // It turned, perhaps in a window passed over: those count for nothing.
            self.windows = self.windows.saturating_sub(passed);
            self.remove(assumed, u64::from(passed));
        }
    }
}

/// The time-like numeric columns of one detector's stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TimeLikeColumns {
    columns: BTreeMap<String, Evidence>,
    /// Answers given in config, by column.
    #[serde(skip)]
    forced: BTreeMap<String, bool>,
}

impl TimeLikeColumns {
    /// A tracker whose answer for the columns in `forced` is fixed.
    pub fn new(forced: BTreeMap<String, bool>) -> Self {
        TimeLikeColumns { columns: BTreeMap::new(), forced }
    }

    /// Keep the evidence (restored from state) but take new forced answers.
    pub fn force(&mut self, forced: BTreeMap<String, bool>) {
        self.forced = forced;
    }

    /// Take in the numeric columns of `batch` that are `watched`: only
    /// those, so the evidence is the same whether the host handed the
    /// others' values or left them out. Settled columns are read when the
    /// window's `seq` is a multiple of [`SETTLED_EVERY`] (the host numbers a
    /// partition's windows from 0).
    pub fn observe(&mut self, batch: &Batch, watched: impl Fn(&str) -> bool) {
        let epoch_ranges = EpochRanges::around(&[batch.info.start_ms, batch.info.end_ms, batch.info.closed_at_ms]);
        let read_settled = batch.info.seq.is_multiple_of(SETTLED_EVERY);
        for column in batch.columns.iter().filter(|c| watched(&c.name)) {
            if !matches!(column.values, ColumnValues::Float64(_) | ColumnValues::Int64(_)) {
                continue;
            }
            let evidence = match self.columns.get_mut(&column.name) {
                Some(e) => e,
                None => self.columns.entry(column.name.clone()).or_insert(Evidence { unit_ups: true, ..Evidence::default() }),
            };
            if evidence.settled() && !read_settled {
                evidence.pass_over(column.count(PRESENT), last_value(column));
                continue;
            }
            let validity = &column.validity;
            // Every row present (no validity) is the usual case: read straight
            // through, not row by row through the validity check.
            match (&column.values, validity.is_empty()) {
                (ColumnValues::Float64(v), true) => evidence.observe(v.iter().copied().filter(|x| x.is_finite()), false, &epoch_ranges),
                (ColumnValues::Float64(v), false) => {
                    let values = v.iter().zip(validity).filter(|&(_, &s)| s == PRESENT).map(|(&x, _)| x).filter(|x| x.is_finite());
                    evidence.observe(values, false, &epoch_ranges);
                }
                (ColumnValues::Int64(v), true) => evidence.observe(v.iter().map(|&x| x as f64), true, &epoch_ranges),
                (ColumnValues::Int64(v), false) => {
                    let values = v.iter().zip(validity).filter(|&(_, &s)| s == PRESENT).map(|(&x, _)| x as f64);
                    evidence.observe(values, true, &epoch_ranges);
                }
                _ => {}
            }
        }
    }

    /// Whether `name` is a clock, calendar part or counter, by the evidence
    /// so far (or by config).
    pub fn is_time_like(&self, name: &str) -> bool {
        if let Some(&forced) = self.forced.get(name) {
            return forced;
        }
        let Some(e) = self.columns.get(name) else {
            return false;
        };
        let most = |windows: u32| e.windows > 0 && f64::from(windows) >= MIN_AGREEING * f64::from(e.windows);
        if most(e.clocks) {
            return true;
        }
        let moved = e.ups >= 3 || ((e.ups > 0 || e.wraps > 0) && e.unit_ups);
        // A column that counts up by one (seen at least once) and wraps is a
        // calendar part: its wraps are no steps down (minute 57, 58, 59, 0).
        let wraps = if e.unit_ups && e.ups > 0 { e.wraps } else { 0 };
        moved && e.downs.saturating_sub(wraps).saturating_mul(UPS_PER_DOWN) <= e.ups && most(e.agreeing)
    }
}

/// The last present, finite value of a numeric column, if any.
fn last_value(column: &Column) -> Option<f64> {
    match &column.values {
        ColumnValues::Float64(v) => (0..v.len()).rev().filter(|&r| column.is_present(r)).map(|r| v[r]).find(|x| x.is_finite()),
        ColumnValues::Int64(v) => (0..v.len()).rev().find(|&r| column.is_present(r)).map(|r| v[r] as f64),
        _ => None,
    }
}

/// The values that read as an epoch time (s, ms, µs or ns) within a year of
/// one of a window's times: one range per unit and time, worked out once a
/// window rather than once a value.
struct EpochRanges {
    ranges: Vec<(f64, f64)>,
    /// Below the lowest range or above the highest, nothing is an epoch time.
    low: f64,
    high: f64,
}

impl EpochRanges {
    fn around(times: &[i64]) -> Self {
        let ranges: Vec<(f64, f64)> = [1e3, 1.0, 1e-3, 1e-6]
            .iter()
            .flat_map(|&scale| times.iter().filter(|&&t| t > 0).map(move |&t| ((t as f64 - YEAR_MS) / scale, (t as f64 + YEAR_MS) / scale)))
            .collect();
        let low = ranges.iter().map(|r| r.0).fold(f64::INFINITY, f64::min).max(0.0);
        let high = ranges.iter().map(|r| r.1).fold(f64::NEG_INFINITY, f64::max);
        EpochRanges { ranges, low, high }
    }

    /// Whether any value from `low` to `high` may be an epoch time.
    fn meets(&self, low: f64, high: f64) -> bool {
        high > self.low && low <= self.high
    }

    fn holds(&self, v: f64) -> bool {
        v > self.low && v <= self.high && self.ranges.iter().any(|&(lo, hi)| v >= lo && v <= hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{BatchBuilder, Rng};
    use crate::WindowKind;

    const NOW: i64 = 1_764_250_000_000;

    fn window(seq: u64, columns: &[(&str, Vec<f64>)]) -> Batch {
        let mut b = BatchBuilder::new(seq).time_window(WindowKind::Count, NOW + seq as i64 * 60_000, NOW + seq as i64 * 60_000 + 59_000);
        for (name, values) in columns {
            let values: Vec<Option<f64>> = values.iter().map(|&v| Some(v)).collect();
            b = b.float(name, &values);
        }
        b.build()
    }

    fn int_window(seq: u64, name: &str, values: &[i64]) -> Batch {
        let values: Vec<Option<i64>> = values.iter().map(|&v| Some(v)).collect();
        BatchBuilder::new(seq).time_window(WindowKind::Count, NOW, NOW + 59_000).int(name, &values).build()
    }

    #[test]
    fn clocks_counters_and_epochs_are_time_like_measurements_are_not() {
        let mut t = TimeLikeColumns::default();
        let mut rng = Rng(5);
        for seq in 0..20u64 {
            let base = seq as f64 * 100.0;
            let ts_ms: Vec<f64> = (0..100).map(|i| (NOW + seq as i64 * 60_000 + i * 600) as f64).collect();
            let shuffled_s: Vec<f64> = (0..100).map(|_| (NOW / 1000) as f64 + rng.uniform() * 50_000.0).collect();
            let hhmm: Vec<f64> = (0..100).map(|i| ((seq * 100 + i) % 2400) as f64).collect();
            let departures: Vec<i64> = (0..100).map(|_| (5.0 + rng.uniform() * 18.0) as i64 * 100 + (rng.uniform() * 60.0) as i64).collect();
            let amount: Vec<f64> = (0..100).map(|_| 20.0 + rng.normal() * 5.0).collect();
            let counter: Vec<f64> = (0..100).map(|i| base + i as f64).collect();
            t.observe(&window(seq, &[("ts_ms", ts_ms), ("created_s", shuffled_s), ("hhmm", hhmm), ("amount", amount), ("n", counter)]), |_| true);
            t.observe(&int_window(seq, "dep_time", &departures), |_| true);
            let prices: Vec<i64> = (0..100).map(|_| 100 + (rng.uniform() * 2000.0) as i64).collect();
            t.observe(&int_window(seq, "price_cents", &prices), |_| true);
        }
        assert!(t.is_time_like("dep_time"), "times of day as HHMM, in any order");
        assert!(!t.is_time_like("price_cents"), "whole numbers in range are not HHMM unless their last digits say so");
        for name in ["ts_ms", "created_s", "hhmm", "n"] {
            assert!(t.is_time_like(name), "{name}");
        }
        assert!(!t.is_time_like("amount"));
        assert!(!t.is_time_like("never seen"));
    }

    #[test]
    fn a_measurement_settles_clocks_counters_and_constants_do_not() {
        let mut t = TimeLikeColumns::default();
        let mut rng = Rng(11);
        for seq in 0..100 {
            let amount: Vec<f64> = (0..100).map(|_| 20.0 + rng.normal() * 5.0).collect();
            let counter: Vec<f64> = (0..100).map(|i| (seq * 100 + i) as f64).collect();
            t.observe(&window(seq, &[("amount", amount), ("n", counter)]), |_| true);
            // A year: constant within windows, turning once, late.
            t.observe(&int_window(seq, "year", &[if seq < 90 { 2025 } else { 2026 }; 100]), |_| true);
        }
        assert!(t.columns["amount"].settled() && !t.columns["n"].settled() && !t.columns["year"].settled());
        assert!(!t.is_time_like("amount") && t.is_time_like("n") && t.is_time_like("year"));
    }

    /// Noise up to window 36, then a counter: passed over in 37 to 39 (and,
    /// the second time, in 41 to 43 after a read window 40 of two values,
    /// which says nothing), read in the next multiple of four, from which
    /// every window is read and the windows passed over count for nothing.
    #[test]
    fn a_settled_column_is_read_one_window_in_four_and_every_window_once_it_turns() {
        let counter = |seq: u64| -> Vec<f64> { (0..100).map(|i| (seq * 100 + i) as f64).collect() };
        for sparse_40 in [false, true] {
            let mut t = TimeLikeColumns::default();
            let mut rng = Rng(3);
            // Noise, the last window read 36.
            for seq in 0..37 {
                t.observe(&window(seq, &[("x", (0..100).map(|_| rng.normal()).collect())]), |_| true);
            }
            let before = t.columns["x"].clone();
            assert!(before.settled());
            let pass_over = |t: &mut TimeLikeColumns, seqs: std::ops::Range<u64>| {
                for seq in seqs {
                    t.observe(&window(seq, &[("x", counter(seq))]), |_| true);
                    assert!(t.columns["x"].settled(), "window {seq} is passed over");
                }
            };
            pass_over(&mut t, 37..40);
            let read = if sparse_40 {
                t.observe(&window(40, &[("x", vec![4000.0, 4001.0])]), |_| true);
                assert!(t.columns["x"].settled(), "two values say nothing");
                pass_over(&mut t, 41..44);
                44
            } else {
                40
            };
            t.observe(&window(read, &[("x", counter(read))]), |_| true);
            let after = &t.columns["x"];
            assert!(!after.settled());
            assert_eq!((after.windows, after.agreeing), (before.windows + 1, before.agreeing + 1), "only window {read} counts");
            t.observe(&window(read + 1, &[("x", counter(read + 1))]), |_| true);
            assert_eq!(t.columns["x"].windows, before.windows + 2, "window {} is read", read + 1);
        }
    }

    /// A column of noise that turns into a counter turns time-like when it
    /// does for a tracker that reads every window (its windows' `seq` all
    /// multiples of four), after a short or a long while of noise and
    /// whichever window of four it turns in: at most 3 windows later (the
    /// windows passed over before the turn is read) and 12 earlier (the
    /// windows passed over before a turn read at once count for nothing, and
    /// each such window of noise less is four fewer of the counter to wait
    /// for at 80%).
    #[test]
    fn passing_over_settled_windows_keeps_the_answers_and_when_they_turn() {
        for noise_windows in (28..=35u64).chain(300..=303) {
            let (mut every, mut sampled) = (TimeLikeColumns::default(), TimeLikeColumns::default());
            let mut rng = Rng(noise_windows);
            let (mut every_at, mut sampled_at) = (None, None);
            for i in 0..noise_windows * 6 {
                let values: Vec<f64> =
                    if i < noise_windows { (0..100).map(|_| 20.0 + rng.normal() * 5.0).collect() } else { (0..100).map(|k| (i * 100 + k) as f64).collect() };
                sampled.observe(&window(i, &[("x", values.clone())]), |_| true);
                every.observe(&window(i * SETTLED_EVERY, &[("x", values)]), |_| true);
                every_at = every_at.or(every.is_time_like("x").then_some(i));
                sampled_at = sampled_at.or(sampled.is_time_like("x").then_some(i));
            }
            let (every_at, sampled_at) = (every_at.expect("turns"), sampled_at.expect("turns"));
            let early = every_at.saturating_sub(sampled_at);
            let late = sampled_at.saturating_sub(every_at);
            assert!(
                every_at >= noise_windows && early <= 4 * (SETTLED_EVERY - 1) && late < SETTLED_EVERY,
                "{noise_windows} windows of noise: {every_at} against {sampled_at}"
            );
        }
    }

    #[test]
    fn a_calendar_part_counts_once_it_turns_a_constant_that_jumps_does_not() {
        let mut t = TimeLikeColumns::default();
        for seq in 0..10 {
            t.observe(&int_window(seq, "month", &[1; 50]), |_| true);
            t.observe(&int_window(seq, "status", &[200; 50]), |_| true);
        }
        assert!(!t.is_time_like("month") && !t.is_time_like("status"), "constant so far: nothing to go by");
        t.observe(&int_window(10, "month", &[1, 1, 2, 2, 2]), |_| true);
        t.observe(&int_window(10, "status", &[200, 200, 500, 500, 500]), |_| true);
        assert!(t.is_time_like("month"), "a month that turns by one moves with time");
        assert!(!t.is_time_like("status"), "a jump of 300 is not a clock");
        // A minute that first wraps (59 to 0), then steps up; a level that
        // drops to 0 and sticks there (a broken sensor) is no clock.
        let mut t = TimeLikeColumns::default();
        for seq in 0..10 {
            t.observe(&int_window(seq, "minute", &[59; 50]), |_| true);
            t.observe(&int_window(seq, "level", &[7; 50]), |_| true);
        }
        t.observe(&int_window(10, "minute", &[0; 50]), |_| true);
        t.observe(&int_window(10, "level", &[0; 50]), |_| true);
        assert!(!t.is_time_like("level"));
        for seq in 11..15 {
            t.observe(&int_window(seq, "minute", &[seq as i64 - 10; 50]), |_| true);
            t.observe(&int_window(seq, "level", &[0; 50]), |_| true);
        }
        assert!(t.is_time_like("minute") && !t.is_time_like("level"));
        // A minute that counted up before it wraps is a clock at the wrap
        // already (a stream that starts three minutes before the hour).
        let mut t = TimeLikeColumns::default();
        for (seq, minute) in [57, 57, 58, 58, 59, 59, 0].into_iter().enumerate() {
            t.observe(&int_window(seq as u64, "minute", &[minute; 50]), |_| true);
        }
        assert!(t.is_time_like("minute"), "57, 58, 59, 0 is a minute turning the hour");
    }

    /// A sparse count (mostly 0, now and then a few) rises and falls back:
    /// in step within most windows, never a clock.
    #[test]
    fn a_sparse_count_is_not_a_clock() {
        let mut t = TimeLikeColumns::default();
        let mut rng = Rng(8);
        for seq in 0..50 {
            let errors: Vec<i64> = (0..1000).map(|_| if rng.uniform() < 0.002 { 1 + (rng.uniform() * 4.0) as i64 } else { 0 }).collect();
            t.observe(&int_window(seq, "errors", &errors), |_| true);
        }
        assert!(!t.is_time_like("errors"));
    }

    /// Rows without a value, and values that are not finite, say nothing:
    /// a column with gaps (read row by row) builds the same evidence as its
    /// present values alone (read straight through), floats and integers.
    #[test]
    fn gaps_are_skipped() {
        let (mut gappy, mut dense) = (TimeLikeColumns::default(), TimeLikeColumns::default());
        let mut rng = Rng(11);
        for seq in 0..30u64 {
            let mut float = |i: u64| match i % 13 {
                5 => f64::NAN,
                7 => f64::INFINITY,
                _ => seq as f64 * 200.0 + i as f64 + rng.uniform(),
            };
            let floats: Vec<Option<f64>> = (0..200).map(|i| (i % 7 != 3).then(|| float(i))).collect();
            let ints: Vec<Option<i64>> = (0..200).map(|i| (i % 5 != 2).then_some(seq as i64 * 200 + i)).collect();
            let at = NOW + seq as i64 * 60_000;
            let window = || BatchBuilder::new(seq).time_window(WindowKind::Count, at, at + 59_000);
            gappy.observe(&window().float("n", &floats).int("k", &ints).build(), |_| true);
            let (floats, ints): (Vec<_>, Vec<_>) = (floats.into_iter().filter(Option::is_some).collect(), ints.into_iter().filter(Option::is_some).collect());
            dense.observe(&window().float("n", &floats).build(), |_| true);
            dense.observe(&window().int("k", &ints).build(), |_| true);
        }
        assert_eq!(format!("{:?}", gappy.columns), format!("{:?}", dense.columns));
        assert!(gappy.is_time_like("n") && gappy.is_time_like("k"));
    }

    #[test]
    fn config_forces_either_way() {
        let mut t = TimeLikeColumns::new(BTreeMap::from([("amount".to_string(), true), ("n".to_string(), false)]));
        let counter: Vec<f64> = (0..100).map(f64::from).collect();
        t.observe(&window(0, &[("n", counter.clone()), ("amount", counter)]), |_| true);
        assert!(t.is_time_like("amount") && !t.is_time_like("n"));
    }
}
