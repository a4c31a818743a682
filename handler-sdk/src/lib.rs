//! The Rust SDK for clean-host alert handlers.
//!
//! A handler is a type that implements [`AlertHandler`] plus one
//! `clean_host_handler_sdk::export_alert_handler!(MyHandler);` line. It gets
//! each alert the router sends and answers by asking the host to [`post`] a
//! body to a destination its tenant declared: the handler never sees the
//! URL or any secret, and never opens a socket.
//!
//! This is its own crate (not a feature of the detector SDK) because a
//! component's embedded WIT world decides what it must export: one crate per
//! world keeps a detector from being asked for handler exports.

pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "alert-handler-plugin",
        pub_export_macro: true,
        export_macro_name: "export_raw",
        default_bindings_module: "clean_host_handler_sdk::bindings",
    });
}

pub use bindings::clean_host::plugin::host::LogLevel;
pub use bindings::clean_host::plugin::types::{Alert, MetricInfo, PluginInfo, Severity, WindowInfo};

/// An alert handler: receives the alerts its tenant routes to it.
pub trait AlertHandler: Default {
    fn describe() -> PluginInfo
    where
        Self: Sized;
    /// Apply the JSON config of its `[[tenants.handlers]]` entry.
    fn configure(&mut self, config: &str) -> Result<(), String>;
    /// Deal with one alert, usually by [`post`]ing it somewhere.
    fn handle(&mut self, alert: &Alert) -> Result<(), String>;
}

/// A `PluginInfo` for a handler (handlers emit no metrics).
pub fn info(name: &str, version: &str, description: &str, config_schema: &str) -> PluginInfo {
    PluginInfo { name: name.into(), version: version.into(), description: description.into(), metrics: Vec::new(), config_schema: config_schema.into() }
}

/// Decode a JSON config, naming the problem when it is not what `T` expects.
pub fn parse_config<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, String> {
    serde_json::from_str(if config.trim().is_empty() { "{}" } else { config }).map_err(|e| format!("invalid config: {e}"))
}

/// Check the `destination` a handler's config names (a name from its
/// tenant's `egress.destinations`; the host checks that it exists).
pub fn require_destination(destination: &str) -> Result<(), String> {
    if destination.trim().is_empty() {
        return Err("config needs a destination: a name from the tenant's egress.destinations".into());
    }
    Ok(())
}

/// How config and messages spell a severity.
pub fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

/// Ask the host to POST `body` to `destination`; `{{secret:NAME}}` in the
/// body is filled in by the host from the destination's secrets. Off wasm
/// (unit tests) the request is kept for [`testing::take_posts`].
pub fn post(destination: &str, content_type: &str, body: &[u8]) -> Result<(), String> {
    #[cfg(target_arch = "wasm32")]
    return bindings::clean_host::plugin::egress::post(destination, content_type, body);
    #[cfg(not(target_arch = "wasm32"))]
    {
        testing::POSTS.with(|p| p.borrow_mut().push((destination.to_string(), content_type.to_string(), body.to_vec())));
        Ok(())
    }
}

/// Send a line to the host's log (stderr when compiled natively).
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    bindings::clean_host::plugin::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Helpers for handler unit tests run natively.
pub mod testing {
    use super::*;

    thread_local! {
        pub(crate) static POSTS: std::cell::RefCell<Vec<(String, String, Vec<u8>)>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// The (destination, content type, body) of every [`post`] so far on this thread.
    pub fn take_posts() -> Vec<(String, String, Vec<u8>)> {
        POSTS.with(|p| std::mem::take(&mut *p.borrow_mut()))
    }

    /// An alert to hand to a handler under test.
    pub fn alert(severity: Severity) -> Alert {
        Alert {
            pipeline: "orders".into(),
            detector: "completeness".into(),
            metric: "null_rate".into(),
            column: Some("amount".into()),
            value: 0.25,
            threshold: 0.05,
            severity,
            message: "25% of amount is null".into(),
            window: WindowInfo {
                pipeline: "orders".into(),
                source: "kafka://127.0.0.1:9092/orders".into(),
                partition: 2,
                kind: bindings::clean_host::plugin::types::WindowKind::Count,
                start_ms: 1_700_000_000_000,
                end_ms: 1_700_000_060_000,
                time_basis: bindings::clean_host::plugin::types::TimeBasis::Processing,
                closed_at_ms: 1_700_000_060_500,
                first_offset: 8000,
                last_offset: 8999,
                seq: 8,
            },
            records: 1000,
        }
    }
}

/// Export `$ty` (an [`AlertHandler`]) as this component's alert handler.
/// Expands to nothing off wasm, so handler crates also test natively.
#[macro_export]
macro_rules! export_alert_handler {
    ($ty:ident) => {
        #[cfg(target_arch = "wasm32")]
        mod __clean_host_export {
            use $crate::bindings::exports::clean_host::plugin::alert_handler::Guest;
            use $crate::AlertHandler as _;

            struct Export;

            thread_local! {
                static INSTANCE: ::std::cell::RefCell<super::$ty> =
                    ::std::cell::RefCell::new(<super::$ty as ::std::default::Default>::default());
            }

            impl Guest for Export {
                fn describe() -> $crate::PluginInfo {
                    <super::$ty as $crate::AlertHandler>::describe()
                }
                fn configure(config: String) -> Result<(), String> {
                    ::std::panic::set_hook(Box::new(|info| $crate::log($crate::LogLevel::Error, &info.to_string())));
                    INSTANCE.with(|h| h.borrow_mut().configure(&config))
                }
                fn handle(alert: $crate::Alert) -> Result<(), String> {
                    INSTANCE.with(|h| h.borrow_mut().handle(&alert))
                }
            }

            $crate::bindings::export_raw!(Export with_types_in $crate::bindings);
        }
    };
}
