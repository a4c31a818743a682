use super::*;

#[test]
fn empty_file_is_the_default() {
    let c = ConfigFile::parse("").unwrap();
    assert!(c.pipelines.is_empty());
    assert_eq!(c.limits, Limits::default());
}

#[test]
fn full_example_parses() {
    let c = ConfigFile::parse(
        r#"
        data_dir = "d"
        max_consecutive_failures = 5
        [limits]
        memory_mib = 64
        timeout_ms = 100
        [alerts]
        quality_threshold = 0.7
        min_severity = "critical"
        cooldown_windows = 3
        [alerts.metrics.null_rate]
        above = 0.2
        [output]
        format = "json"
        file = "alerts.jsonl"
        [[pipelines]]
        name = "orders"
        source = "orders.jsonl"
        event_time_field = "ts"
        detectors = ["outliers"]
        [pipelines.window]
        kind = "event-time"
        duration_ms = 60000
        lateness_ms = 5000
        [pipelines.detector_config.outliers]
        z_threshold = 4.0
        "#,
    )
    .unwrap();
    let p = &c.pipelines[0];
    assert_eq!(
        p.window_spec().unwrap(),
        WindowSpec::EventTime(EventTimeSpec { size_ms: 60_000, lateness_ms: 5000, max_future_ms: 3_600_000, earliest_ms: 946_684_800_000 })
    );
    assert_eq!(p.detector_config["outliers"]["z_threshold"].as_float(), Some(4.0));
    assert_eq!(p.tenant_name(), "default");
}

#[test]
fn errors_name_the_line_without_quoting_it() {
    let e = ConfigFile::parse("[[tenants]]\nname = 't'\negress.destinations.x = { url = 'https://hooks.example/SECRET', typo = 1 }\n").unwrap_err();
    assert!(e.starts_with("line 3: unknown field `typo`"), "{e}");
    assert!(!e.contains("SECRET"), "{e}");
}

#[test]
fn tenants_are_declared_and_checked() {
    let c = ConfigFile::parse(
        r#"
        [[tenants]]
        name = "payments"
        limits = { memory_mib = 64, max_instances = 10, total_memory_mib = 512 }
        egress.allow = ["127.0.0.1:9000"]
        egress.destinations.hook = { url = "http://127.0.0.1:9000/hook" }
        [[tenants.handlers]]
        plugin = "webhook"
        config = { destination = "hook" }
        [[pipelines]]
        name = "orders"
        tenant = "payments"
        source = "generator"
        "#,
    )
    .unwrap();
    let all = c.all_tenants();
    assert_eq!(all.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["default", "payments"]);
    assert_eq!(all[1].limits.max_instances, 10);
    assert_eq!(all[1].handlers[0].min_severity, clean_host_core::bindings::Severity::Warning);
    for (text, needle) in [
        ("[[pipelines]]\nname='p'\nsource='generator'\ntenant='nobody'", "tenant 'nobody' is not declared"),
        ("[[tenants]]\nname='a/b'", "tenant name 'a/b'"),
        ("[[tenants]]\nname='a'\n[[tenants]]\nname='a'", "two tenants"),
        ("[[tenants]]\nname='a'\nlimits = { max_instances = 0 }", "limits must be above 0"),
    ] {
        let e = ConfigFile::parse(text).unwrap_err();
        assert!(e.contains(needle), "{e}");
    }
}

#[test]
fn mistakes_are_named() {
    let cases = [
        ("[[pipelines]]\nname = \"a\"\nsource = \"x\"\nwindoww = 1", "windoww"),
        ("[[pipelines]]\nname = \"a\"\nsource = \"x\"\n[pipelines.window]\nsize = 0", "window.size"),
        ("[[pipelines]]\nname = \"a\"\nsource = \"x\"\n[pipelines.window]\nkind = \"event-time\"\nduration_ms = 10", "event_time_field"),
        ("[[pipelines]]\nname = \"a\"\nsource = \"x\"\n[[pipelines]]\nname = \"a\"\nsource = \"y\"", "two pipelines"),
        ("[alerts]\nquality_threshold = 2.0", "quality_threshold"),
        ("[limits]\nmemory_mib = 0", "memory_mib"),
    ];
    for (text, needle) in cases {
        let err = ConfigFile::parse(text).unwrap_err();
        assert!(err.contains(needle), "{text:?}: {err}");
    }
}

#[test]
fn broker_example_parses() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/brokers.toml")).unwrap();
    let c = ConfigFile::parse(&text).unwrap();
    assert_eq!(c.pipelines.len(), 3);
    let kafka = &c.pipelines[0].broker;
    assert_eq!((kafka.group(), kafka.kafka["fetch.min.bytes"].as_str()), ("quality", "1"));
    assert_eq!(c.pipelines[2].broker.entry_layout, clean_host_stream::source::config::EntryLayout::Pairs);
    assert!(ConfigFile::parse("[[pipelines]]\nname = \"p\"\nsource = \"s\"\n[pipelines.broker]\ngrup = \"x\"").is_err());
}

#[test]
fn orders_example_parses() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/orders.toml")).unwrap();
    let config = ConfigFile::parse(&text).unwrap();
    assert!(config.alerts.spc.params("lag_p95_ms").is_some());
    assert_eq!(config.alerts.spc.params("null_rate").unwrap().rules.len(), 3);
}

/// The config reference and the operator's guide show real configs: every
/// key in their TOML blocks is one the config types take, of the right type
/// (`deny_unknown_fields` throughout), so the docs cannot drift from the code.
#[test]
fn the_documented_configs_parse() {
    for doc in ["config.md", "operating.md"] {
        let path = format!("{}/../docs/{doc}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let blocks: Vec<&str> = text.split("```toml\n").skip(1).map(|b| b.split("```").next().unwrap()).collect();
        assert!(!blocks.is_empty(), "{doc} has no TOML block");
        for block in blocks {
            if let Err(e) = toml::from_str::<ConfigFile>(block) {
                panic!("a config in docs/{doc} does not parse: {e}\n{block}");
            }
        }
    }
}
