//! The Rust SDK for clean-host detectors.
//!
//! A detector is a type that implements [`Detector`] plus one
//! `clean_host_sdk::export_detector!(MyDetector);` line. The SDK owns the WIT
//! bindings (generated once, here), so plugin crates never see the ABI; the same
//! crate also compiles natively, which is how the host benchmarks wasm against
//! native code and how detectors are unit-tested with plain `cargo test`.

pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "projected-detector-plugin",
        pub_export_macro: true,
        export_macro_name: "export_raw",
        default_bindings_module: "clean_host_sdk::bindings",
    });
}

mod column;
pub mod distinct;
#[cfg(any(test, all(target_arch = "wasm32", not(target_feature = "atomics"), feature = "size-classes")))]
mod size_classes;
pub mod stats;
pub mod testing;
pub mod time_like;

pub use bindings::clean_host::plugin::types::{
    Analysis, Batch, Column, ColumnValues, Finding, MetricInfo, MetricValue, PluginInfo, Severity, StringColumn, TimeBasis, WindowInfo, WindowKind,
};
pub use bindings::exports::clean_host::plugin::projection::{BatchParts, Reads};
pub use column::{Cell, NumericView, MISSING, NULL, PRESENT, WRONG_TYPE};

/// Most row indices a finding carries; the host rejects more.
pub const MAX_SAMPLE_ROWS: usize = 20;

/// Most columns a detector may name in what it reads; the host refuses more.
pub const MAX_NAMED_COLUMNS: usize = 1024;
/// Most bytes those names may take together.
pub const MAX_NAMED_BYTES: usize = 64 << 10;

/// A quality check over windows of records.
///
/// One value of the type serves one pipeline; the host calls it one window at a
/// time, in order, so `&mut self` state (baselines, seen keys) is safe to keep.
/// Only `describe` and `analyze` are required: a detector without config or
/// state needs nothing else.
pub trait Detector: Default {
    /// Name, version and the metrics this detector emits.
    fn describe() -> PluginInfo
    where
        Self: Sized;
    /// Apply the JSON config given to the plugin ("{}" when there is none).
    /// By default a detector takes no config, and says so if given one.
    fn configure(&mut self, config: &str) -> Result<(), String> {
        let empty = config.trim().is_empty() || serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(config).is_ok_and(|m| m.is_empty());
        if empty {
            Ok(())
        } else {
            Err("this detector takes no config".into())
        }
    }
    /// What of each window this detector reads, asked once after
    /// `configure`: the host leaves the rest out of its batches (a column's
    /// values left out arrive empty, its row states always; see
    /// [`Column::len`]). By default everything.
    fn reads(&self) -> Reads {
        Reads::everything()
    }
    /// Look at one closed window.
    fn analyze(&mut self, batch: &Batch) -> Result<Analysis, String>;
    /// State to carry over a reload or restart (see [`encode_state`]).
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    /// Take back what `snapshot` returned (see [`decode_state`]).
    fn restore(&mut self, _state: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// Decode a JSON config, naming the problem when it is not what `T` expects.
pub fn parse_config<T: serde::de::DeserializeOwned + Default>(config: &str) -> Result<T, String> {
    if config.trim().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str(config).map_err(|e| format!("invalid config: {e}"))
}

/// Serialize detector state for [`Detector::snapshot`].
pub fn encode_state<T: serde::Serialize>(state: &T) -> Vec<u8> {
    serde_json::to_vec(state).unwrap_or_default()
}

/// Read state written by [`encode_state`].
pub fn decode_state<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("invalid state: {e}"))
}

/// Route panic messages to the host's log, so a trapped plugin says why.
/// Called by [`export_detector!`] before the first `configure`.
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| log(bindings::clean_host::plugin::host::LogLevel::Error, &info.to_string())));
    });
}

/// Send a line to the host's log (stderr when compiled natively).
pub fn log(level: bindings::clean_host::plugin::host::LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    bindings::clean_host::plugin::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

impl Finding {
    /// A finding about `column` (or the whole window when `None`).
    pub fn new(metric: &str, column: Option<&str>, value: f64, threshold: f64, severity: Severity, message: String) -> Self {
        Finding { metric: metric.to_string(), column: column.map(str::to_string), value, threshold, severity, message, sample_rows: Vec::new() }
    }

    /// Attach up to [`MAX_SAMPLE_ROWS`] example rows.
    pub fn with_rows(mut self, rows: impl IntoIterator<Item = u32>) -> Self {
        self.sample_rows = rows.into_iter().take(MAX_SAMPLE_ROWS).collect();
        self
    }
}

impl Analysis {
    pub fn new() -> Self {
        Analysis { findings: Vec::new(), metrics: Vec::new() }
    }

    /// Record a measured value.
    pub fn metric(&mut self, metric: &str, column: Option<&str>, value: f64) {
        self.metrics.push(MetricValue { metric: metric.to_string(), column: column.map(str::to_string), value });
    }
}

impl Default for Analysis {
    fn default() -> Self {
        Self::new()
    }
}

/// Metric description for [`Detector::describe`].
pub fn metric_info(name: &str, description: &str) -> MetricInfo {
    MetricInfo { name: name.to_string(), description: description.to_string() }
}

impl Reads {
    /// Every part of every window.
    pub fn everything() -> Self {
        Reads { parts: BatchParts::all(), columns: Vec::new() }
    }

    /// Only `parts`, and the names, row states and `info` every batch has.
    pub fn only(parts: BatchParts) -> Self {
        Reads { parts, columns: Vec::new() }
    }

    /// Also every text column as [`DistinctValues::of`](crate::distinct::DistinctValues::of)
    /// groups it, for a detector that reads text no other way. In wasm the
    /// host groups the window's values, so their bytes are not copied into
    /// the plugin; natively they are read, and grouped here.
    pub fn and_grouped_text(mut self) -> Self {
        if cfg!(not(target_arch = "wasm32")) {
            self.parts |= BatchParts::TEXT_VALUES;
        }
        self
    }

    /// Also the values of these columns, whatever their type. Past the
    /// contract's [`MAX_NAMED_COLUMNS`] distinct names or [`MAX_NAMED_BYTES`]
    /// of them, everything is read.
    pub fn and_columns(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let mut bytes: usize = self.columns.iter().map(String::len).sum();
        for name in names.into_iter().map(Into::into) {
            if !self.columns.contains(&name) {
                bytes += name.len();
                self.columns.push(name);
            }
            if self.columns.len() > MAX_NAMED_COLUMNS || bytes > MAX_NAMED_BYTES {
                return Reads::everything();
            }
        }
        self
    }
}

#[cfg(target_arch = "wasm32")]
thread_local! {
    static HANDED: std::cell::Cell<*const Batch> = const { std::cell::Cell::new(std::ptr::null()) };
}

/// Run `analyze` of the window the host handed over, `batch`: while it runs,
/// the host's summaries of that window (`window.sorted`, `window.distinct`)
/// are taken for this very batch and no other (see [`export_detector!`]).
#[doc(hidden)]
#[cfg(target_arch = "wasm32")]
pub fn analyzing<R>(batch: &Batch, analyze: impl FnOnce() -> R) -> R {
    /// Forgets the batch when the call ends, however it ends.
    struct Forget;
    impl Drop for Forget {
        fn drop(&mut self) {
            HANDED.with(|handed| handed.set(std::ptr::null()));
        }
    }
    HANDED.with(|handed| handed.set(batch));
    let _forget = Forget;
    analyze()
}

/// Whether `batch` is the very batch (by address) the host handed the
/// `analyze` that runs now: a batch of the plugin's own making, or a changed
/// copy, is not, and the host's summaries are not of it. (Public for the
/// tests' plugins.)
#[doc(hidden)]
#[cfg(target_arch = "wasm32")]
pub fn is_handed(batch: &Batch) -> bool {
    HANDED.with(|handed| std::ptr::eq(handed.get(), batch))
}

/// Export `$ty` (a [`Detector`]) as this component's detector.
///
/// Expands to nothing off wasm, so detector crates also link natively.
#[macro_export]
macro_rules! export_detector {
    ($ty:ident) => {
        #[cfg(target_arch = "wasm32")]
        mod __clean_host_export {
            use $crate::bindings::exports::clean_host::plugin::detector::Guest;
            use $crate::bindings::exports::clean_host::plugin::projection::Guest as Projection;
            use $crate::Detector as _;

            struct Export;

            thread_local! {
                static INSTANCE: ::std::cell::RefCell<super::$ty> =
                    ::std::cell::RefCell::new(<super::$ty as ::std::default::Default>::default());
            }

            impl Guest for Export {
                fn describe() -> $crate::PluginInfo {
                    <super::$ty as $crate::Detector>::describe()
                }
                fn configure(config: String) -> Result<(), String> {
                    $crate::install_panic_hook();
                    INSTANCE.with(|d| d.borrow_mut().configure(&config))
                }
                fn analyze(batch: $crate::Batch) -> Result<$crate::Analysis, String> {
                    $crate::analyzing(&batch, || INSTANCE.with(|d| d.borrow_mut().analyze(&batch)))
                }
                fn snapshot() -> Vec<u8> {
                    INSTANCE.with(|d| d.borrow().snapshot())
                }
                fn restore(state: Vec<u8>) -> Result<(), String> {
                    INSTANCE.with(|d| d.borrow_mut().restore(&state))
                }
            }

            impl Projection for Export {
                fn what_it_reads() -> $crate::Reads {
                    INSTANCE.with(|d| d.borrow().reads())
                }
            }

            $crate::bindings::export_raw!(Export with_types_in $crate::bindings);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Bare;

    impl Detector for Bare {
        fn describe() -> PluginInfo {
            PluginInfo { name: "bare".into(), version: "0".into(), description: String::new(), metrics: Vec::new(), config_schema: "{}".into() }
        }
        fn analyze(&mut self, _batch: &Batch) -> Result<Analysis, String> {
            Ok(Analysis::new())
        }
    }

    #[test]
    fn defaults_take_no_config_and_keep_no_state() {
        let mut d = Bare;
        assert!(d.configure("").is_ok() && d.configure(" {} ").is_ok());
        assert_eq!(d.configure(r#"{"x": 1}"#).unwrap_err(), "this detector takes no config");
        assert!(d.snapshot().is_empty() && d.restore(b"anything").is_ok());
    }

    #[test]
    fn a_detector_reads_everything_unless_it_says_less() {
        assert_eq!(Bare.reads().parts, BatchParts::all());
        let reads = Reads::only(BatchParts::EVENT_TIMES).and_columns(["id", "key"]).and_columns(Some(String::from("id")));
        assert_eq!((reads.parts, reads.columns), (BatchParts::EVENT_TIMES, vec!["id".to_string(), "key".to_string()]));
        // Many rules on one column name it once; past the limit, everything is read.
        let reads = Reads::only(BatchParts::empty()).and_columns((0..5000).map(|i| format!("c{}", i % MAX_NAMED_COLUMNS)));
        assert_eq!(reads.columns.len(), MAX_NAMED_COLUMNS);
        let reads = Reads::only(BatchParts::empty()).and_columns((0..=MAX_NAMED_COLUMNS).map(|i| format!("c{i}")));
        assert_eq!((reads.parts, reads.columns.len()), (BatchParts::all(), 0));
        let long = |i: usize| format!("{i:0>100}");
        let reads = Reads::only(BatchParts::empty()).and_columns((0..MAX_NAMED_BYTES / 100).map(long));
        assert_eq!(reads.columns.len(), MAX_NAMED_BYTES / 100);
        let reads = Reads::only(BatchParts::empty()).and_columns((0..=MAX_NAMED_BYTES / 100).map(long));
        assert_eq!((reads.parts, reads.columns.len()), (BatchParts::all(), 0));
    }

    #[test]
    fn columns_whose_values_are_left_out_keep_their_rows() {
        let left_out = Column { name: "amount".into(), values: ColumnValues::Float64(Vec::new()), validity: vec![PRESENT, NULL, PRESENT] };
        assert_eq!((left_out.len(), left_out.count(PRESENT), left_out.count(NULL)), (3, 2, 1));
        let text = Column { name: "s".into(), values: ColumnValues::Text(StringColumn { bytes: Vec::new(), offsets: Vec::new() }), validity: vec![PRESENT; 4] };
        assert_eq!(text.len(), 4);
    }

    #[test]
    fn row_states_are_counted_exactly() {
        // Every length around the 8- and 32-byte steps, every state, states
        // next to each other, and mostly present (whole blocks of 32 present,
        // others not) with another state every 37 rows.
        for rows in 0..100 {
            // Row states, and bytes around the high bit a malformed validity could hold.
            let bytes = [0u8, 1, 2, 3, 0x7f, 0x80, 0xff, 200];
            let mixed: Vec<u8> = (0..rows).map(|r| bytes[(r * 7 + r / 3) % bytes.len()]).collect();
            let mostly_present: Vec<u8> = (0..rows).map(|r| if r % 37 == 36 { bytes[r % bytes.len()] } else { PRESENT }).collect();
            for validity in [mixed, mostly_present] {
                let column = Column { name: "c".into(), values: ColumnValues::Int64(vec![0; rows]), validity: validity.clone() };
                for state in bytes {
                    assert_eq!(column.count(state), validity.iter().filter(|&&s| s == state).count(), "{rows} rows, state {state}, {validity:?}");
                }
            }
        }
    }

    #[test]
    fn present_into_gives_what_present_gives() {
        let states = [PRESENT, NULL, PRESENT, MISSING, PRESENT, WRONG_TYPE, PRESENT];
        let columns = [
            ColumnValues::Float64(vec![1.5, 2.0, f64::NAN, 4.0, f64::INFINITY, 6.0, -0.0]),
            // Every value finite: each run of present rows copied whole.
            ColumnValues::Float64(vec![1.5, 2.0, -3.0, 4.0, f64::MAX, 6.0, -0.0]),
            ColumnValues::Int64(vec![7, -1, i64::MAX, 0, 3, 9, -8]),
            // Values left out (not read): no rows, whatever the states.
            ColumnValues::Float64(Vec::new()),
            ColumnValues::Int64(Vec::new()),
        ];
        let (mut rows, mut values) = (vec![99], vec![99.0]);
        for values_of in columns {
            for validity in [Vec::new(), states.to_vec()] {
                let column = Column { name: "c".into(), values: values_of.clone(), validity };
                let view = column.numeric().expect("numeric");
                view.present_into(&mut rows, &mut values);
                let (want_rows, want_values): (Vec<u32>, Vec<f64>) = view.present().unzip();
                assert_eq!(rows, want_rows);
                assert_eq!(values.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want_values.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn present_rows_are_those_in_state_present() {
        let mut rng = crate::testing::Rng(11);
        let (mut rows, mut values) = (Vec::new(), Vec::new());
        for len in 0..80 {
            // No row absent, a few, half, all; runs of 8 present rows or more
            // next to absent ones; states ending early or running on.
            for absent_share in [0.0, 0.03, 0.5, 1.0] {
                for states_len in [len, len / 2, len + 9] {
                    let validity: Vec<u8> = (0..states_len)
                        .map(|_| if rng.uniform() < absent_share { [NULL, MISSING, WRONG_TYPE, 0x80][(rng.next_u64() % 4) as usize] } else { PRESENT })
                        .collect();
                    let floats: Vec<f64> = (0..len).map(|r| if r % 37 == 5 { f64::NAN } else { r as f64 - 9.5 }).collect();
                    for values_of in [
                        ColumnValues::Float64(floats.iter().map(|&x| if x.is_nan() { 1.0 } else { x }).collect()),
                        ColumnValues::Float64(floats),
                        ColumnValues::Int64((0..len as i64).map(|r| r * 3 - 7).collect()),
                    ] {
                        let column = Column { name: "c".into(), values: values_of, validity: validity.clone() };
                        let view = column.numeric().expect("numeric");
                        view.present_into(&mut rows, &mut values);
                        let want: Vec<(u32, u64)> =
                            (0..len).filter(|&r| column.state(r) == PRESENT && view.get(r).is_finite()).map(|r| (r as u32, view.get(r).to_bits())).collect();
                        let got: Vec<(u32, u64)> = rows.iter().zip(&values).map(|(&r, x)| (r, x.to_bits())).collect();
                        assert_eq!(got, want, "{len} rows, states {validity:?}");
                        assert_eq!(view.present().map(|(r, x)| (r, x.to_bits())).collect::<Vec<_>>(), want);
                    }
                    // The runs: every present row once, in order, none empty, no two touching.
                    let column = Column { name: "c".into(), values: ColumnValues::Int64(vec![0; len]), validity: validity.clone() };
                    let runs: Vec<_> = column.present_runs(len).collect();
                    let in_runs: Vec<usize> = runs.iter().flat_map(|run| run.clone()).collect();
                    assert_eq!(in_runs, (0..len).filter(|&r| column.is_present(r)).collect::<Vec<_>>(), "{len} rows, states {validity:?}");
                    assert!(runs.iter().all(|run| !run.is_empty()) && runs.windows(2).all(|w| w[0].end < w[1].start), "{runs:?}");
                }
            }
        }
    }

    #[test]
    fn findings_keep_at_most_twenty_rows() {
        let f = Finding::new("m", Some("c"), 1.0, 0.5, Severity::Warning, "x".into()).with_rows(0..100);
        assert_eq!(f.sample_rows.len(), MAX_SAMPLE_ROWS);
        assert_eq!(f.column.as_deref(), Some("c"));
    }

    #[test]
    fn config_errors_name_the_field() {
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct C {
            #[allow(dead_code)]
            size: u32,
        }
        assert!(parse_config::<C>("").is_ok());
        assert!(parse_config::<C>(r#"{"sise": 1}"#).unwrap_err().contains("unknown field `sise`"));
    }
}
