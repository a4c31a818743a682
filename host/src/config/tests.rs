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

/// Every key the config types accept, found by asking them: a deserializer
/// that answers nothing, but records the fields of the struct at the end of
/// a path and descends along the path (through options, lists and maps, whose
/// keys it calls `NAME`).
mod config_keys {
    use std::cell::RefCell;
    use std::fmt;

    use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

    #[derive(Debug)]
    pub struct Stop(String);

    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for Stop {}

    impl de::Error for Stop {
        fn custom<T: fmt::Display>(msg: T) -> Self {
            Stop(msg.to_string())
        }
    }

    /// Found structs: (its name, its path of keys, its fields).
    type Found = RefCell<Vec<(&'static str, Vec<String>, &'static [&'static str])>>;

    struct Probe<'a> {
        path: &'a [String],
        at: Vec<String>,
        found: &'a Found,
    }

    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = Stop;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop("a value".into()))
        }

        fn deserialize_struct<V: Visitor<'de>>(self, name: &'static str, fields: &'static [&'static str], visitor: V) -> Result<V::Value, Stop> {
            match self.path.split_first() {
                None => {
                    self.found.borrow_mut().push((name, self.at, fields));
                    Err(Stop("recorded".into()))
                }
                Some((key, rest)) if fields.contains(&key.as_str()) => {
                    let mut at = self.at;
                    at.push(key.clone());
                    visitor.visit_map(One { key: Some(key.clone()), value: Some(Probe { path: rest, at, found: self.found }) })
                }
                Some(_) => Err(Stop("no such key".into())),
            }
        }

        fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
            visitor.visit_some(self)
        }

        fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, Stop> {
            visitor.visit_newtype_struct(self)
        }

        fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
            visitor.visit_seq(One { key: None, value: Some(self) })
        }

        fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
            let mut at = self.at;
            at.push("NAME".into());
            visitor.visit_map(One { key: Some("NAME".into()), value: Some(Probe { at, ..self }) })
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf unit unit_struct tuple tuple_struct enum identifier ignored_any
        }
    }

    /// One map entry (or one list element) whose value is a probe.
    struct One<'a> {
        key: Option<String>,
        value: Option<Probe<'a>>,
    }

    impl<'de> MapAccess<'de> for One<'_> {
        type Error = Stop;

        fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Stop> {
            self.key.take().map(|k| seed.deserialize(k.into_deserializer())).transpose()
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
            seed.deserialize(self.value.take().expect("a key first"))
        }
    }

    impl<'de> SeqAccess<'de> for One<'_> {
        type Error = Stop;

        fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Stop> {
            self.value.take().map(|v| seed.deserialize(v)).transpose()
        }
    }

    /// (struct, path, key) of every key `T` accepts.
    pub fn of<T: for<'de> serde::Deserialize<'de>>() -> Vec<(&'static str, Vec<String>, &'static str)> {
        let (found, mut keys, mut paths) = (Found::default(), Vec::new(), vec![Vec::<String>::new()]);
        while let Some(path) = paths.pop() {
            let before = found.borrow().len();
            let _ = T::deserialize(Probe { path: &path, at: Vec::new(), found: &found });
            let new: Vec<_> = found.borrow()[before..].to_vec();
            for (name, at, fields) in new {
                for field in fields {
                    keys.push((name, at.clone(), *field));
                    let mut next = path.clone();
                    next.push(field.to_string());
                    paths.push(next);
                }
            }
        }
        keys
    }
}

/// The dotted path of every key set in `value` (arrays of tables add no step).
fn key_paths(value: &toml::Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table {
                at.push(key.clone());
                out.push(at.clone());
                key_paths(value, at, out);
                at.pop();
            }
        }
        toml::Value::Array(items) => items.iter().for_each(|item| key_paths(item, at, out)),
        _ => {}
    }
}

#[test]
fn every_config_key_is_in_the_config_reference() {
    let mut documented = Vec::new();
    for doc in ["config.md", "operating.md"] {
        let text = std::fs::read_to_string(format!("{}/../docs/{doc}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        for block in text.split("```toml\n").skip(1).map(|b| b.split("```").next().unwrap()) {
            key_paths(&toml::from_str(block).unwrap(), &mut Vec::new(), &mut documented);
        }
    }
    let keys = config_keys::of::<ConfigFile>();
    let claim = keys.iter().find(|(_, path, key)| path.join(".") == "pipelines.broker" && *key == "claim_idle_ms");
    assert!(keys.len() > 50 && claim.is_some(), "{keys:?}");
    // A key is documented where one of the paths its struct is used at shows it.
    let shown = |path: &[String], key: &str| {
        documented.iter().any(|d| d.len() == path.len() + 1 && d[path.len()] == key && path.iter().zip(d).all(|(p, d)| p == "NAME" || p == d))
    };
    let mut missing = std::collections::BTreeSet::new();
    for (name, _, key) in &keys {
        if !keys.iter().filter(|(n, _, k)| n == name && k == key).any(|(_, path, _)| shown(path, key)) {
            let paths: Vec<String> = keys.iter().filter(|(n, _, k)| n == name && k == key).map(|(_, p, _)| p.join(".")).collect();
            missing.insert(format!("{name}.{key} (at {})", paths.join(" or ")));
        }
    }
    assert!(missing.is_empty(), "config keys no TOML example in docs/config.md or docs/operating.md sets: {missing:#?}");
}

/// `${VAR}` with a fixed environment.
fn with_env(text: &str, env: &[(&str, &str)]) -> Result<String, String> {
    interpolate::interpolate(text, |name| Ok(env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())))
}

#[test]
fn references_take_the_environment_defaults_and_nothing_else() {
    let env = [("GROUP", "quality"), ("SIZE", "500"), ("EMPTY", "")];
    let text = "# ${NOT_SET} in a comment stays\n[[pipelines]]\nname = \"orders\"\nsource = \"kafka://k:9092/orders?group=${GROUP}\"\n[pipelines.window]\nsize = ${SIZE}\nslide = ${SLIDE:-250}\n[pipelines.broker]\ngroup = '${EMPTY:-fallback}'\ndead_letter_topic = \"$${kept}\"\n";
    let c = ConfigFile::parse(&with_env(text, &env).unwrap()).unwrap();
    let p = &c.pipelines[0];
    assert_eq!(p.source, "kafka://k:9092/orders?group=quality");
    assert_eq!((p.window.size, p.window.slide), (500, Some(250)));
    assert_eq!(p.broker.group.as_deref(), Some("fallback"), "an empty variable takes the default");
    assert_eq!(p.broker.dead_letter_topic.as_deref(), Some("${kept}"));
    let missing = with_env("[http]\nlisten = \"${LISTEN}\"\n", &env).unwrap_err();
    assert_eq!(missing, "line 2: ${LISTEN} is not set, or empty (or give a default: ${LISTEN:-...})");
}

/// No value can change the file's structure, wherever it lands.
#[test]
fn a_value_cannot_rewrite_the_file() {
    let hostile = "x\"\n[limits]\nmemory_mib = 1\n# \\ \t\u{7}";
    let env = [("V", hostile)];
    for text in ["data_dir = \"${V}\"\n", "data_dir = \"\"\"${V}\"\"\"\n"] {
        let c = ConfigFile::parse(&with_env(text, &env).unwrap()).unwrap();
        assert_eq!(c.data_dir.as_deref(), Some(std::path::Path::new(hostile)), "{text}");
        assert_eq!(c.limits, Limits::default());
    }
    let literal = with_env("data_dir = '${V}'\n", &env).unwrap_err();
    assert!(literal.starts_with("line 1: ${V} holds a ' or a line break"), "{literal}");
    let bare = with_env("max_consecutive_failures = ${V}\n", &env).unwrap_err();
    assert!(bare.starts_with("line 1: ${V} outside quotes must read alone as a number"), "{bare}");
    for (text, value) in [
        ("max_consecutive_failures = ${N}\n", "3\n[limits]"),
        ("[tenants.${T}]\n", "a.b"),
        ("${K} = 1\n", "data_dir"),
        ("x = [${N}]\n", "1, 2"),
        ("x = { a = ${N} }\n", "1, b = 2"),
        ("x = ${N}\n", "1 # c"),
        ("x = '''it'${V}'''\n", "''\n[limits]\nmemory_mib = 1\n#"),
    ] {
        assert!(with_env(text, &[("N", value), ("T", value), ("K", value), ("V", value)]).is_err(), "{text} with {value:?}");
    }
    for (text, value) in [("max_consecutive_failures = ${N}\n", "3"), ("[alerts]\nquality_threshold = ${N}\n", "0.75")] {
        assert!(ConfigFile::parse(&with_env(text, &[("N", value)]).unwrap()).is_ok(), "{text}");
    }
    // Quotes just before a multi-line string's closing three are its own: what follows is outside it.
    assert!(with_env("x = \"\"\"a\"\"\"\"\ny = ${N}\n", &[("N", "1, c = 2")]).is_err());
    // An escaped quote does not end a string: the reference after it is still inside.
    let c = ConfigFile::parse(&with_env("data_dir = \"a\\\"${V}\"\n", &env).unwrap()).unwrap();
    assert_eq!(c.data_dir.unwrap().to_str().unwrap(), format!("a\"{hostile}"));
}

#[test]
fn broken_references_are_named_by_line() {
    for (text, said) in [
        ("a = 1\nb = \"${X\"\n", "line 2: a ${ without its closing }"),
        ("a = \"${1X}\"\n", "line 1: '1X' is not an environment variable's name (letters, digits and _)"),
        ("a = \"${}\"\n", "line 1: '' is not an environment variable's name (letters, digits and _)"),
        ("a = \"${X-Y}\"\n", "line 1: 'X-Y' is not an environment variable's name (letters, digits and _)"),
    ] {
        assert_eq!(with_env(text, &[]).unwrap_err(), said, "{text}");
    }
}

/// Every setting a config can hold, secrets in the places they go.
const FULL_CONFIG: &str = r#"
data_dir = "/var/lib/clean-host"
max_consecutive_failures = 3
[alerts]
quality_threshold = 0.75
[checkpoints]
interval_ms = 2000
in_broker = false
path = "/shared/checkpoints.db"
[http]
listen = "127.0.0.1:8080"
[[tenants]]
name = "payments"
api_token = "tenant-token-0123456789abcdef"
egress.allow = ["hooks.example.com"]
egress.destinations.hook = { url = "https://hooks.example.com/T0/secret-path", headers = { Authorization = "Bearer header-secret" }, secrets = { routing_key = "routing-secret" } }
egress.destinations.slack = { url = "env:SLACK_WEBHOOK_URL" }
[[pipelines]]
name = "orders"
tenant = "payments"
source = "redis://monitor:url-secret@127.0.0.1:6379/orders?group=q&consumer=c1"
[pipelines.window]
size = 500
[pipelines.broker]
format = "registry"
[pipelines.broker.registry]
url = "https://registry.example.com"
username = "monitor"
password = "registry-secret"
[pipelines.broker.kafka]
"sasl.username" = "monitor"
"sasl.password" = "kafka-secret"
"ssl.key.password" = "env:KEY_PASSWORD"
"sasl.jaas.config" = "jaas-secret"
"#;

/// `check --show-config` prints a config that reads back as the same
/// config (with no secrets in it), and shows what is not in the file.
#[test]
fn the_shown_config_reads_back_as_the_same_config() {
    let login_free = FULL_CONFIG.replace("monitor:url-secret@", "");
    let plain = login_free.lines().filter(|l| !l.contains("secret") && !l.contains("token")).collect::<Vec<_>>().join("\n");
    let shown = ConfigFile::parse(&plain).unwrap().shown().unwrap();
    let again = ConfigFile::parse(&shown).unwrap_or_else(|e| panic!("{e}\n{shown}"));
    assert_eq!(again.shown().unwrap(), shown);
    assert!(shown.contains("retention_hours = 168"), "defaults are shown:\n{shown}");
    assert!(shown.contains("interval_ms = 2000") && shown.contains("size = 500"), "{shown}");
}

/// No secret of the file shows, wherever it is; `env:VAR` does (it names one).
#[test]
fn the_shown_config_masks_every_secret() {
    let shown = ConfigFile::parse(FULL_CONFIG).unwrap().shown().unwrap();
    for secret in ["url-secret", "kafka-secret", "registry-secret", "jaas-secret", "tenant-token", "header-secret", "routing-secret", "secret-path"] {
        assert!(!shown.contains(secret), "{secret} shows:\n{shown}");
    }
    for kept in [
        "env:SLACK_WEBHOOK_URL",
        "env:KEY_PASSWORD",
        "redis://monitor:***@127.0.0.1:6379/orders",
        "\"sasl.username\" = \"monitor\"",
        "url = \"https://registry.example.com\"",
    ] {
        assert!(shown.contains(kept), "{kept} is not shown:\n{shown}");
    }
}
