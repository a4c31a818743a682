//! Broker source settings: the URL shortcut of `--source` and the
//! `[pipelines.broker]` table of the config file. A URL query parameter
//! overrides the same setting in the table.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::SourceError;

/// `scheme://[user[:password]@]host:port[,host:port]/path?key=value&...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// The URL as given, its password masked: what errors and logs show.
    pub spec: String,
    pub scheme: String,
    /// Comma-separated `host:port` list, as given (without the login).
    pub hosts: String,
    /// `user:password` before the hosts, if any.
    pub login: Option<Login>,
    /// Topic, `tenant/namespace/topic` or stream, without the leading `/`.
    pub path: String,
    pub query: BTreeMap<String, String>,
}

impl BrokerUrl {
    pub fn parse(spec: &str) -> Result<Self, SourceError> {
        let shown = masked(spec);
        let bad = |message: &str| SourceError::Config { spec: shown.clone(), message: message.into() };
        let (scheme, rest) = spec.split_once("://").ok_or_else(|| bad("expected scheme://host:port/name"))?;
        let (login, rest) = split_login(rest);
        if login.is_some_and(|l| !l.contains(':')) {
            return Err(bad("a login needs its password: [user]:password@ (percent-encoded)"));
        }
        let (rest, query_text) = rest.split_once('?').unwrap_or((rest, ""));
        let (hosts, path) = rest.split_once('/').ok_or_else(|| bad("no topic or stream after the address"))?;
        if !is_address(hosts) {
            return Err(bad("the address must be host:port (comma-separated for several)"));
        }
        let login = login.map(|l| Login(l.to_string()));
        if path.is_empty() {
            return Err(bad("no topic or stream after the address"));
        }
        let mut query = BTreeMap::new();
        for pair in query_text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| bad(&format!("query parameter '{pair}' has no value")))?;
            query.insert(k.to_string(), v.to_string());
        }
        Ok(BrokerUrl { spec: shown.clone(), scheme: scheme.into(), hosts: hosts.into(), login, path: path.into(), query })
    }

    /// Fails on a query parameter the source does not know, naming those it does.
    pub fn check_query(&self, known: &[&str]) -> Result<(), SourceError> {
        match self.query.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(SourceError::Config { spec: self.spec.clone(), message: format!("unknown parameter '{k}' (known: {})", known.join(", ")) }),
            None => Ok(()),
        }
    }

    pub fn error(&self, message: impl Into<String>) -> SourceError {
        SourceError::Config { spec: self.spec.clone(), message: message.into() }
    }

    /// The hosts with the login, to connect with (never to show). What
    /// would end a URL's login early (`/`, `?`, `#`) is percent-encoded.
    pub fn address(&self) -> String {
        match &self.login {
            Some(Login(login)) => format!("{}@{}", login.replace('/', "%2F").replace('?', "%3F").replace('#', "%23"), self.hosts),
            None => self.hosts.clone(),
        }
    }
}

/// The `user:password` of a broker URL, percent-encoded as given. It is
/// shown as `user:***`, and kept out of names, keys and logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Login(String);

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login({})", masked_login(&self.0))
    }
}

impl Login {
    /// The user (may be empty) and the password, percent-decoded.
    pub fn user_and_password(&self) -> (String, String) {
        let (user, password) = self.0.split_once(':').unwrap_or((&self.0, ""));
        let decoded = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        (decoded(user), decoded(password))
    }
}

fn masked_login(login: &str) -> String {
    match login.split_once(':') {
        Some((user, _)) if !user.contains(['/', '?', '#']) => format!("{user}:***"),
        _ => "***".into(),
    }
}

/// A source or sink spec with the password of its URL's login masked.
pub fn masked(spec: &str) -> String {
    let Some((scheme, rest)) = spec.split_once("://") else {
        // A broker URL missing its `//` (`redis:/:pw@host`): nothing after the scheme is shown.
        return match spec.split_once(':') {
            Some((scheme, _)) if ["kafka", "pulsar", "redis", "rediss"].iter().any(|k| k.eq_ignore_ascii_case(scheme)) => format!("{scheme}:***"),
            _ => spec.to_string(),
        };
    };
    match (split_login(rest), rest.rfind('@')) {
        ((Some(login), rest), _) => format!("{scheme}://{}@{rest}", masked_login(login)),
        // No address after any @ (a URL that will not parse): hide all before the last.
        ((None, _), Some(at)) => format!("{scheme}://***@{}", &rest[at + 1..]),
        ((None, _), None) => spec.to_string(),
    }
}

/// The login before a URL's hosts, if any, and the rest. A password may
/// hold `@`, `/` or `?` unencoded: the login ends at the last `@` that a
/// `host:port` list follows (then `/`, `?` or the end).
fn split_login(rest: &str) -> (Option<&str>, &str) {
    let ends_login = |at: usize| {
        let after = &rest[at + 1..];
        is_address(&after[..after.find(['/', '?']).unwrap_or(after.len())])
    };
    match rest.match_indices('@').map(|(at, _)| at).rev().find(|&at| ends_login(at)) {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    }
}

/// `host:port[,host:port]`, each port a number.
fn is_address(hosts: &str) -> bool {
    !hosts.is_empty() && hosts.split(',').all(|h| h.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()))
}

/// Where a consumer starts when it has nothing committed, or (for an offset
/// or a time) where a replay starts even when it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    #[default]
    Earliest,
    Latest,
    Offset(u64),
    /// Epoch milliseconds.
    Time(i64),
}

impl std::str::FromStr for StartAt {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "earliest" => Ok(StartAt::Earliest),
            "latest" => Ok(StartAt::Latest),
            _ => {
                if let Some(ms) = s.strip_prefix('@') {
                    return ms.parse().map(StartAt::Time).map_err(|_| format!("'{s}': expected @<unix-ms>"));
                }
                s.parse().map(StartAt::Offset).map_err(|_| format!("offset '{s}': expected earliest, latest, a number or @<unix-ms>"))
            }
        }
    }
}

/// How message payloads become records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageFormat {
    /// One JSON object per message.
    #[default]
    Json,
    /// The payload as one text column, `value`.
    String,
    /// Avro datums written with `avro_schema`.
    Avro,
    /// The schema registry's framing (a zero byte and a 4-byte schema id)
    /// before an Avro datum, a Protobuf message or a JSON object, as the
    /// schema's type in the `registry` says.
    Registry,
}

/// A schema registry with the Confluent REST API (`[pipelines.broker.registry]`),
/// for `format = "registry"`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryOptions {
    /// Base URL, e.g. `http://schema-registry:8081` (no login in it: use the fields below).
    pub url: String,
    /// HTTP basic auth user, or `env:VAR`.
    pub username: Option<String>,
    /// HTTP basic auth password, or `env:VAR`.
    pub password: Option<String>,
    /// How long one request may take, ms (default 5000).
    pub timeout_ms: Option<u64>,
}

/// Where a Redis entry keeps its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryLayout {
    /// The record is the payload of one field (`entry_field`).
    #[default]
    Field,
    /// The entry's own field/value pairs are the record's fields.
    Pairs,
}

/// Message metadata that can be added to records as columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetadataColumn {
    /// `_key`: the message key as text.
    Key,
    /// `_partition`.
    Partition,
    /// `_offset`: the broker's position.
    Offset,
    /// `_timestamp`: the broker's timestamp, epoch ms.
    Timestamp,
    /// `_header.NAME` for each header.
    Headers,
}

/// Settings of a broker source (`[pipelines.broker]`); URL parameters override them.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerOptions {
    /// Kafka consumer group or Redis consumer group (default `clean-host`).
    pub group: Option<String>,
    /// Redis consumer name within the group (default `clean-host-<pid>`).
    pub consumer: Option<String>,
    /// Pulsar subscription (default `clean-host`).
    pub subscription: Option<String>,
    /// Pulsar subscription type: exclusive, shared, failover (default) or key_shared.
    #[serde(rename = "type")]
    pub subscription_type: Option<String>,
    /// `earliest` (default), `latest`, an offset, or `@<unix-ms>`; an offset or
    /// a time replays from there even over committed positions.
    pub offset: Option<String>,
    /// Payload format: json (default), string, avro or registry.
    pub format: MessageFormat,
    /// Avro schema file (format = "avro").
    pub avro_schema: Option<PathBuf>,
    /// The schema registry (format = "registry").
    pub registry: Option<RegistryOptions>,
    /// Metadata added as columns: key, partition, offset, timestamp, headers.
    pub metadata: Vec<MetadataColumn>,
    /// Redis: the record is one field's value (`field`, default) or the entry's pairs (`pairs`).
    pub entry_layout: EntryLayout,
    /// Redis: the field holding the record when `entry_layout = "field"` (default `data`).
    pub entry_field: Option<String>,
    /// Redis: claim entries another consumer left pending this long (default 30000 ms).
    pub claim_idle_ms: Option<u64>,
    /// Topic or stream on the same broker for undecodable messages
    /// (default: the source's name + `-dead-letters`).
    pub dead_letter_topic: Option<String>,
    /// Topic or stream on the same broker that every alert is also produced to.
    pub findings_topic: Option<String>,
    /// `rediss://` (Redis over TLS): a CA certificate file (PEM) to trust
    /// instead of the system's roots.
    pub tls_ca: Option<PathBuf>,
    /// Kafka topic (compacted), Redis key prefix or Pulsar topic (in the
    /// source's namespace, or `tenant/namespace/topic`) where the broker
    /// keeps the pipeline's checkpoints (default `clean-host-state`).
    pub state_table: Option<String>,
    /// librdkafka properties passed through as they are (security.protocol,
    /// sasl.mechanism, sasl.username, sasl.password, ssl.ca.location, ...);
    /// a value may be `env:VAR`, read from the environment.
    pub kafka: BTreeMap<String, String>,
    /// Read to the end positions seen at start, then stop (`--until-end`).
    #[serde(skip)]
    pub until_end: bool,
}

impl BrokerOptions {
    /// The table's settings with `url`'s parameters over them.
    pub fn merged(&self, url: &BrokerUrl) -> Result<BrokerOptions, SourceError> {
        let mut o = self.clone();
        let q = &url.query;
        let set = |slot: &mut Option<String>, key: &str| {
            if let Some(v) = q.get(key) {
                *slot = Some(v.clone());
            }
        };
        set(&mut o.group, "group");
        set(&mut o.consumer, "consumer");
        set(&mut o.subscription, "subscription");
        set(&mut o.subscription_type, "type");
        set(&mut o.offset, "offset");
        set(&mut o.dead_letter_topic, "dead_letters");
        set(&mut o.findings_topic, "findings");
        set(&mut o.entry_field, "field");
        if let Some(f) = q.get("format") {
            o.format = match f.as_str() {
                "json" => MessageFormat::Json,
                "string" => MessageFormat::String,
                "avro" => MessageFormat::Avro,
                "registry" => MessageFormat::Registry,
                other => return Err(url.error(format!("format '{other}': expected json, string, avro or registry"))),
            };
        }
        if o.format == MessageFormat::Avro && o.avro_schema.is_none() {
            return Err(url.error("format avro needs avro_schema (a schema file) in the pipeline's broker table"));
        }
        if o.format == MessageFormat::Registry && o.registry.is_none() {
            return Err(url.error("format registry needs the registry's url under [pipelines.broker.registry]"));
        }
        Ok(o)
    }

    pub fn start_at(&self, url: &BrokerUrl) -> Result<StartAt, SourceError> {
        self.offset.as_deref().map_or(Ok(StartAt::Earliest), |s| s.parse().map_err(|e: String| url.error(e)))
    }

    /// Where the broker keeps checkpoints ([`BrokerOptions::state_table`]).
    pub fn state_table(&self) -> &str {
        self.state_table.as_deref().unwrap_or("clean-host-state")
    }

    pub fn group(&self) -> &str {
        self.group.as_deref().unwrap_or("clean-host")
    }
}

/// Query parameters every broker URL takes.
pub const COMMON_PARAMS: &[&str] = &["offset", "format", "dead_letters", "findings"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_broker_url() {
        let k = BrokerUrl::parse("kafka://h1:9092,h2:9092/orders?group=G&offset=@1700000000000").unwrap();
        assert_eq!((k.hosts.as_str(), k.path.as_str()), ("h1:9092,h2:9092", "orders"));
        let o = BrokerOptions::default().merged(&k).unwrap();
        assert_eq!(o.group(), "G");
        assert_eq!(o.start_at(&k).unwrap(), StartAt::Time(1_700_000_000_000));
        let p = BrokerUrl::parse("pulsar://127.0.0.1:6650/public/default/orders?subscription=S&type=shared").unwrap();
        assert_eq!(p.path, "public/default/orders");
        assert_eq!(p.query["type"], "shared");
        let r = BrokerUrl::parse("redis://127.0.0.1:6379/events?group=G&consumer=C").unwrap();
        assert_eq!((r.path.as_str(), r.query["consumer"].as_str()), ("events", "C"));
    }

    /// A password in a URL is used to connect and shown nowhere.
    #[test]
    fn a_login_is_kept_apart_and_masked() {
        let url = BrokerUrl::parse("redis://monitor:p%40ss@h:6379/events?group=G").unwrap();
        assert_eq!((url.hosts.as_str(), url.address().as_str()), ("h:6379", "monitor:p%40ss@h:6379"));
        assert_eq!(url.spec, "redis://monitor:***@h:6379/events?group=G");
        assert!(!format!("{url:?}").contains("p%40ss"), "{url:?}");
        assert!(!url.error("x").to_string().contains("p%40ss"));
        let bad = BrokerUrl::parse("redis://:secret@h/events").unwrap_err().to_string();
        assert!(bad.contains("redis://***@h/events") && !bad.contains("secret"), "{bad}");
        assert_eq!(masked("redis://:a:b@c@h:1/s"), "redis://:***@h:1/s");
        assert_eq!(masked("orders.jsonl"), "orders.jsonl");
        // Unencoded / ? # @ in a password: the login still ends at the @ before the address.
        for password in ["ab/cd", "p?ss", "p#ss", "a@b/c?d"] {
            let spec = format!("redis://me:{password}@h:6379/events?group=a@b");
            let url = BrokerUrl::parse(&spec).unwrap();
            assert_eq!((url.hosts.as_str(), url.path.as_str(), url.query["group"].as_str()), ("h:6379", "events", "a@b"), "{spec}");
            assert_eq!(url.spec, "redis://me:***@h:6379/events?group=a@b");
            assert!(!url.address().contains(['/', '?', '#']) && url.address().ends_with("@h:6379"), "{}", url.address());
            assert!(!masked(&format!("{spec}&x")).contains(password));
        }
        let odd = BrokerUrl::parse("redis://a%20b:%zz%4@h:1/s").unwrap().login.unwrap();
        assert_eq!(odd.user_and_password(), ("a b".to_string(), "%zz%4".to_string()), "a broken escape stays as it is");
        let no_password = BrokerUrl::parse("redis://s3cret@h:1/s").unwrap_err().to_string();
        assert!(no_password.contains("needs its password") && !no_password.contains("s3cret"), "{no_password}");
        assert!(BrokerUrl::parse("redis://h:1/str@eam").unwrap().login.is_none());
        assert!(BrokerUrl::parse("kafka://[::1]:9092/t").is_ok());
    }

    #[test]
    fn rejects_bad_urls_and_values() {
        for bad in ["kafka://h1/orders", "kafka://h1:9092", "kafka://h1:9092/", "kafka://:/x?a", "kafka://h:1/t?x"] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad}");
        }
        let url = BrokerUrl::parse("kafka://h:1/t?offset=soon").unwrap();
        let o = BrokerOptions::default().merged(&url).unwrap();
        assert!(o.start_at(&url).unwrap_err().to_string().contains("soon"));
        let url = BrokerUrl::parse("kafka://h:1/t?format=xml").unwrap();
        assert!(BrokerOptions::default().merged(&url).is_err());
        let url = BrokerUrl::parse("kafka://h:1/t?grop=x").unwrap();
        assert!(url.check_query(&["group"]).unwrap_err().to_string().contains("grop"));
    }

    #[test]
    fn url_overrides_the_table() {
        let table = BrokerOptions { group: Some("from-table".into()), offset: Some("latest".into()), ..Default::default() };
        let url = BrokerUrl::parse("redis://h:1/s?group=from-url").unwrap();
        let o = table.merged(&url).unwrap();
        assert_eq!(o.group(), "from-url");
        assert_eq!(o.start_at(&url).unwrap(), StartAt::Latest);
    }
}
