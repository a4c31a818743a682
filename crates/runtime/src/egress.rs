//! Outbound HTTP for alert handlers, performed by the host on their behalf.
//!
//! A handler plugin has no sockets. It names a destination its tenant
//! declared; the host checks the name, queues the request (bounded in
//! requests and in bytes, each body at most `max_body_bytes`: what does not
//! fit is refused to the plugin and counted) and a delivery thread of the tenant
//! sends it with a timeout, retrying network errors, 429 and 5xx answers with
//! backoff. Analysis never waits on a destination.
//!
//! Deny by default: a destination's URL must be on the tenant's `allow` list
//! (`host` or `host:port`), checked when the config is read. Secrets (the URL
//! itself, header values, `{{secret:NAME}}` values filled into the body at
//! send time) may come from the environment (`env:VAR`), are never shown to
//! the plugin, and never appear in a log line: deliveries are logged by
//! destination name only.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clean_host_core::http_error::described;
use clean_host_core::secret::resolve;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use serde::{Deserialize, Serialize};

/// A tenant's outbound settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EgressConfig {
    /// Hosts (`host` or `host:port`) destinations may point at; nothing else is reachable.
    pub allow: Vec<String>,
    /// Named destinations handlers may send to.
    pub destinations: BTreeMap<String, DestinationConfig>,
    /// Requests waiting for delivery, at most; more are dropped and counted.
    pub queue: usize,
    /// Bytes of request bodies waiting for delivery, at most; more are dropped and counted.
    pub queue_bytes: usize,
    /// Largest request body a handler may send, in bytes (also after secrets are filled in).
    pub max_body_bytes: usize,
    /// Time one attempt may take, in milliseconds.
    pub timeout_ms: u64,
    /// Attempts after the first one for network errors, 429 and 5xx answers.
    pub retries: u32,
    /// Wait before the first retry, in milliseconds; doubles each time (up to 10 s).
    pub backoff_ms: u64,
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig {
            allow: Vec::new(),
            destinations: BTreeMap::new(),
            queue: 1000,
            queue_bytes: 16 << 20,
            max_body_bytes: 1 << 20,
            timeout_ms: 5000,
            retries: 3,
            backoff_ms: 200,
        }
    }
}

/// Where a destination name leads. Every value may be `env:VAR`.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// The `http://` or `https://` URL to POST to (a secret: never logged).
    pub url: String,
    /// Extra request headers, e.g. `Authorization` (values are secrets).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Values for `{{secret:NAME}}` placeholders in request bodies.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
}

impl std::fmt::Debug for DestinationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<&String> = self.headers.keys().collect();
        let secrets: Vec<&String> = self.secrets.keys().collect();
        f.debug_struct("DestinationConfig").field("url", &"<secret>").field("headers", &headers).field("secrets", &secrets).finish()
    }
}

/// A destination with its secrets read.
struct Destination {
    url: String,
    headers: Vec<(String, String)>,
    secrets: BTreeMap<String, String>,
}

/// Whether `url`'s host (and port) is on `allow`.
fn allowed(url: &str, allow: &[String]) -> Result<(), String> {
    let uri: ureq::http::Uri = url.parse().map_err(|_| "its URL is not a valid URL".to_string())?;
    let scheme = uri.scheme_str().unwrap_or("");
    if scheme != "http" && scheme != "https" {
        return Err(format!("its URL must be http:// or https://, not {scheme}://"));
    }
    let host = uri.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
    let listed = allow.iter().any(|a| a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(&format!("{host}:{port}")));
    if listed {
        Ok(())
    } else {
        // The host is not a secret; the rest of the URL may be.
        Err(format!("its host {host}:{port} is not on the tenant's egress allow list"))
    }
}

/// Delivery counters of one tenant: counted live, cloned as they are now for
/// the summary and the status file.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct EgressStats {
    /// Requests the plugins asked for and the host queued.
    pub queued: AtomicU64,
    /// Delivered (a 2xx answer).
    pub delivered: AtomicU64,
    /// Attempts repeated after a failure.
    pub retried: AtomicU64,
    /// Given up: a 4xx answer, or still failing after every retry.
    pub failed: AtomicU64,
    /// Not sent at all: the queue was full, or the host stopped first.
    pub dropped: AtomicU64,
    /// Refused at once: an unknown destination, or a body over the size limit.
    pub refused: AtomicU64,
    /// Bytes of bodies waiting for delivery now.
    pub queued_bytes: AtomicU64,
}

impl Clone for EgressStats {
    fn clone(&self) -> Self {
        let now = |c: &AtomicU64| AtomicU64::new(c.load(Ordering::Relaxed));
        EgressStats {
            queued: now(&self.queued),
            delivered: now(&self.delivered),
            retried: now(&self.retried),
            failed: now(&self.failed),
            dropped: now(&self.dropped),
            refused: now(&self.refused),
            queued_bytes: now(&self.queued_bytes),
        }
    }
}

/// Longest content type a plugin may give.
const MAX_CONTENT_TYPE: usize = 256;

struct Request {
    plugin: String,
    destination: String,
    content_type: String,
    body: Vec<u8>,
}

/// One tenant's outbound queue and its delivery thread.
pub struct Egress {
    tenant: String,
    destinations: Arc<BTreeMap<String, Destination>>,
    queue: Mutex<Option<Sender<Request>>>,
    /// The queue's other end, to count what is left at exit.
    pending: Receiver<Request>,
    pub stats: Arc<EgressStats>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    queue_bytes: u64,
    max_body_bytes: usize,
}

impl Egress {
    /// Check the tenant's destinations against its allow list, read their
    /// secrets and start the delivery thread.
    pub fn start(tenant: &str, config: &EgressConfig) -> Result<Arc<Egress>, String> {
        let mut destinations = BTreeMap::new();
        for (name, d) in &config.destinations {
            let what = format!("tenant {tenant}: destination '{name}'");
            let url = resolve(&d.url, &what)?;
            allowed(&url, &config.allow).map_err(|e| format!("{what}: {e}"))?;
            let headers = d.headers.iter().map(|(k, v)| Ok((k.clone(), resolve(v, &what)?))).collect::<Result<_, String>>()?;
            let secrets = d.secrets.iter().map(|(k, v)| Ok((k.clone(), resolve(v, &what)?))).collect::<Result<_, String>>()?;
            destinations.insert(name.clone(), Destination { url, headers, secrets });
        }
        let destinations = Arc::new(destinations);
        let stats = Arc::new(EgressStats::default());
        let (tx, rx) = bounded(config.queue.max(1));
        let delivery = Delivery {
            tenant: tenant.to_string(),
            destinations: destinations.clone(),
            stats: stats.clone(),
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_millis(config.timeout_ms.max(1))))
                .http_status_as_error(false)
                .max_redirects(0)
                .build()
                .into(),
            retries: config.retries,
            backoff: Duration::from_millis(config.backoff_ms),
            max_body_bytes: config.max_body_bytes,
        };
        let pending = rx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{tenant}-egress"))
            .spawn(move || delivery.run(rx))
            .map_err(|e| format!("tenant {tenant}: starting the delivery thread: {e}"))?;
        Ok(Arc::new(Egress {
            tenant: tenant.to_string(),
            destinations,
            queue: Mutex::new(Some(tx)),
            pending,
            stats,
            thread: Mutex::new(Some(thread)),
            queue_bytes: config.queue_bytes as u64,
            max_body_bytes: config.max_body_bytes,
        }))
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// A plugin's request: queue it, or say why not.
    pub fn post(&self, plugin: &str, destination: &str, content_type: &str, body: Vec<u8>) -> Result<(), String> {
        let refuse = |reason: String| {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("egress {}: plugin {plugin}: {reason}: refused", self.tenant);
            Err(reason)
        };
        if !self.destinations.contains_key(destination) {
            let mut shown = destination.to_string();
            crate::limits::cut(&mut shown, 128);
            return refuse(format!("tenant {} has no destination named '{}'", self.tenant, shown.escape_debug()));
        }
        if content_type.len() > MAX_CONTENT_TYPE || !content_type.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
            return refuse(format!("a content type must be printable ASCII of at most {MAX_CONTENT_TYPE} bytes"));
        }
        if body.len() > self.max_body_bytes {
            return refuse(format!("a body of {} bytes is over the {} byte limit (egress.max_body_bytes)", body.len(), self.max_body_bytes));
        }
        let bytes = body.len() as u64;
        let reserved = self
            .stats
            .queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| queued.checked_add(bytes).filter(|&next| next <= self.queue_bytes));
        if reserved.is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(format!("the delivery queue of tenant {} is full ({} bytes waiting; egress.queue_bytes)", self.tenant, self.queue_bytes));
        }
        let request = Request { plugin: plugin.into(), destination: destination.into(), content_type: content_type.into(), body };
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let sent = match queue.as_ref() {
            Some(tx) => tx.try_send(request).map_err(|e| match e {
                TrySendError::Full(_) => format!("the delivery queue of tenant {} is full", self.tenant),
                TrySendError::Disconnected(_) => "the host is stopping".to_string(),
            }),
            None => Err("the host is stopping".to_string()),
        };
        match sent {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(reason) => {
                self.stats.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                Err(reason)
            }
        }
    }

    /// Stop taking requests and deliver what is queued, for at most `grace`;
    /// what is left then is dropped and counted.
    pub fn finish(&self, grace: Duration) {
        drop(self.queue.lock().unwrap_or_else(|p| p.into_inner()).take());
        let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        if !join_within(thread, grace) {
            // What is still queued, and the one being sent.
            let left = self.pending.len() as u64 + 1;
            tracing::warn!("egress {}: stopped with {left} deliveries unfinished; they are counted as dropped", self.tenant);
            self.stats.dropped.fetch_add(left, Ordering::Relaxed);
        }
    }
}

/// Join `thread` if it ends within `grace`; say whether it did.
pub fn join_within(thread: std::thread::JoinHandle<()>, grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    while !thread.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    thread.is_finished() && thread.join().is_ok()
}

/// The delivery thread of one tenant.
struct Delivery {
    tenant: String,
    destinations: Arc<BTreeMap<String, Destination>>,
    stats: Arc<EgressStats>,
    agent: ureq::Agent,
    retries: u32,
    backoff: Duration,
    max_body_bytes: usize,
}

/// How one attempt went.
enum Attempt {
    Delivered,
    /// Worth trying again (network error, 429, 5xx).
    Retry(String),
    /// Not worth trying again.
    Failed(String),
}

impl Delivery {
    fn run(self, rx: Receiver<Request>) {
        for request in rx {
            self.stats.queued_bytes.fetch_sub(request.body.len() as u64, Ordering::AcqRel);
            self.deliver(&request);
        }
    }

    fn deliver(&self, request: &Request) {
        let destination = &self.destinations[&request.destination];
        let body = match fill_secrets(&request.body, &destination.secrets, self.max_body_bytes) {
            Ok(body) => body,
            Err(e) => return self.failed(request, &e, 0),
        };
        let mut wait = self.backoff;
        for attempt in 0..=self.retries {
            if attempt > 0 {
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            match self.attempt(destination, &request.content_type, &body) {
                Attempt::Delivered => {
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Attempt::Failed(reason) => return self.failed(request, &reason, attempt + 1),
                Attempt::Retry(reason) if attempt == self.retries => return self.failed(request, &reason, attempt + 1),
                Attempt::Retry(_) => {}
            }
        }
    }

    fn attempt(&self, destination: &Destination, content_type: &str, body: &[u8]) -> Attempt {
        let mut post = self.agent.post(&destination.url).header("Content-Type", content_type);
        for (name, value) in &destination.headers {
            post = post.header(name, value);
        }
        match post.send(body) {
            Ok(response) => match response.status().as_u16() {
                200..=299 => Attempt::Delivered,
                status @ (429 | 500..=599) => Attempt::Retry(format!("answered {status}")),
                status => Attempt::Failed(format!("answered {status}")),
            },
            Err(e) => Attempt::Retry(described(&e)),
        }
    }

    fn failed(&self, request: &Request, reason: &str, attempts: u32) {
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            "egress {}: delivery from plugin {} to destination '{}' failed after {attempts} attempt(s): {reason}",
            self.tenant,
            request.plugin,
            request.destination
        );
    }
}

/// `body` with every `{{secret:NAME}}` replaced by that secret's value, at
/// most `max_len` bytes in all. Errors name no secret value.
pub fn fill_secrets(body: &[u8], secrets: &BTreeMap<String, String>, max_len: usize) -> Result<Vec<u8>, String> {
    const OPEN: &[u8] = b"{{secret:";
    if !body.windows(OPEN.len()).any(|w| w == OPEN) {
        return Ok(body.to_vec());
    }
    let text = std::str::from_utf8(body).map_err(|_| "a body with secret placeholders must be UTF-8".to_string())?;
    let mut out = String::with_capacity(text.len().min(max_len));
    let mut rest = text;
    while let Some(start) = rest.find("{{secret:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let end = after.find("}}").ok_or("an unclosed {{secret: placeholder")?;
        let name = &after[..end];
        let Some(value) = secrets.get(name) else {
            let mut shown = name.to_string();
            crate::limits::cut(&mut shown, 128);
            return Err(format!("the destination has no secret named '{}'", shown.escape_debug()));
        };
        out.push_str(value);
        if out.len() > max_len {
            return Err(format!("the body with its secrets filled in is over the {max_len} byte limit"));
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    if out.len() > max_len {
        return Err(format!("the body with its secrets filled in is over the {max_len} byte limit"));
    }
    Ok(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_hosts_and_ports() {
        let allow = vec!["127.0.0.1:8080".to_string(), "hooks.slack.com".to_string()];
        assert!(allowed("http://127.0.0.1:8080/x", &allow).is_ok());
        assert!(allowed("https://hooks.slack.com/services/T/B/secret", &allow).is_ok());
        let e = allowed("http://127.0.0.1:9090/token123", &allow).unwrap_err();
        assert!(e.contains("127.0.0.1:9090") && !e.contains("token123"), "{e}");
        assert!(allowed("ftp://hooks.slack.com/x", &allow).is_err());
        assert!(allowed("http://evil.example/x", &[]).is_err());
    }

    #[test]
    fn secrets_are_filled_in() {
        let secrets = BTreeMap::from([("key".to_string(), "s3cr3t".to_string())]);
        let fill = |body: &[u8]| fill_secrets(body, &secrets, 1 << 20);
        assert_eq!(fill(br#"{"k":"{{secret:key}}","n":1}"#).unwrap(), br#"{"k":"s3cr3t","n":1}"#);
        assert_eq!(fill(b"plain").unwrap(), b"plain");
        assert!(fill(b"{{secret:other}}").unwrap_err().contains("other"));
        assert!(fill(b"{{secret:key").is_err());
    }

    /// Many placeholders cannot blow a small body up past the limit.
    #[test]
    fn filled_bodies_are_capped() {
        let secrets = BTreeMap::from([("k".to_string(), "x".repeat(1000))]);
        let body = "{{secret:k}}".repeat(10_000);
        let e = fill_secrets(body.as_bytes(), &secrets, 1 << 20).unwrap_err();
        assert!(e.contains("over the 1048576 byte limit") && !e.contains("xxx"), "{e}");
        let huge_name = format!("{{{{secret:{}}}}}", "n".repeat(100_000));
        assert!(fill_secrets(huge_name.as_bytes(), &secrets, 1 << 20).unwrap_err().len() < 300);
    }

    #[test]
    fn bodies_and_the_queue_are_capped_in_bytes() {
        let config: EgressConfig =
            toml::from_str("allow = ['127.0.0.1:9']\nqueue_bytes = 3000\nmax_body_bytes = 2000\n[destinations.x]\nurl = 'http://127.0.0.1:9/'").unwrap();
        let egress = Egress::start("t", &config).unwrap();
        let e = egress.post("p", "x", "text/plain", vec![b'a'; 2001]).unwrap_err();
        assert!(e.contains("max_body_bytes"), "{e}");
        assert!(egress.post("p", "x", &"t".repeat(300), b"a".to_vec()).is_err());
        assert_eq!(egress.stats.refused.load(Ordering::Relaxed), 2);
        // The delivery thread may already have taken the first; fill past the byte cap.
        let refused = (0..4).filter(|_| egress.post("p", "x", "text/plain", vec![b'a'; 2000]).is_err()).count();
        assert!(refused >= 1, "the queue held more than 3000 bytes");
        assert!(egress.stats.queued_bytes.load(Ordering::Relaxed) <= 3000);
        egress.finish(Duration::from_millis(100));
    }

    #[test]
    fn secrets_never_in_debug_output() {
        let d: DestinationConfig = toml::from_str("url = 'https://hooks.example/T/SECRET'\nheaders = { Authorization = 'Bearer TOKEN' }").unwrap();
        let shown = format!("{d:?}");
        assert!(!shown.contains("SECRET") && !shown.contains("TOKEN"), "{shown}");
    }

    #[test]
    fn unknown_destination_is_refused_and_counted() {
        let egress = Egress::start("t", &EgressConfig::default()).unwrap();
        assert!(egress.post("p", "nowhere", "text/plain", b"x".to_vec()).is_err());
        assert_eq!(egress.stats.refused.load(Ordering::Relaxed), 1);
        egress.finish(Duration::from_secs(1));
    }

    #[test]
    fn a_destination_off_the_allow_list_is_a_config_error() {
        let config: EgressConfig = toml::from_str("allow = ['127.0.0.1:1']\n[destinations.x]\nurl = 'http://10.0.0.1/hook'").unwrap();
        let e = Egress::start("t", &config).err().unwrap();
        assert!(e.contains("destination 'x'") && e.contains("10.0.0.1:80"), "{e}");
    }
}
