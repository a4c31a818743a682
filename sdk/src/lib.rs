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
        world: "detector-plugin",
        pub_export_macro: true,
        export_macro_name: "export_raw",
        default_bindings_module: "clean_host_sdk::bindings",
    });
}

mod column;
pub mod distinct;
pub mod stats;
pub mod testing;
pub mod time_like;

pub use bindings::clean_host::plugin::types::{
    Analysis, Batch, Column, ColumnValues, Finding, MetricInfo, MetricValue, PluginInfo, Severity, StringColumn, TimeBasis, WindowInfo, WindowKind,
};
pub use column::{Cell, NumericView, MISSING, NULL, PRESENT, WRONG_TYPE};

/// Most row indices a finding carries; the host rejects more.
pub const MAX_SAMPLE_ROWS: usize = 20;

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

/// Export `$ty` (a [`Detector`]) as this component's detector.
///
/// Expands to nothing off wasm, so detector crates also link natively.
#[macro_export]
macro_rules! export_detector {
    ($ty:ident) => {
        #[cfg(target_arch = "wasm32")]
        mod __clean_host_export {
            use $crate::bindings::exports::clean_host::plugin::detector::Guest;
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
                    INSTANCE.with(|d| d.borrow_mut().analyze(&batch))
                }
                fn snapshot() -> Vec<u8> {
                    INSTANCE.with(|d| d.borrow().snapshot())
                }
                fn restore(state: Vec<u8>) -> Result<(), String> {
                    INSTANCE.with(|d| d.borrow_mut().restore(&state))
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
