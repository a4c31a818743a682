//! The HTTP side of a running host (`--listen ADDR`, loopback by default):
//! `/metrics` in Prometheus text format, a JSON API over the live counters
//! and the history, and the dashboard page at `/`.
//!
//! Every data endpoint wants `Authorization: Bearer TOKEN`, and a token
//! belongs to one tenant: it sees that tenant's pipelines, plugins, windows,
//! findings, alerts and metrics, and nothing else. Without a valid token the
//! answer is 401. The dashboard page itself holds no data; it asks for the
//! token and sends it with each request.
//!
//! The server runs on its own small tokio runtime thread, so a slow client
//! never touches the pipelines; history reads go through connections of
//! their own (SQLite WAL: readers never block the writer).
//!
//! No client can hold the server: at most [`MAX_IN_FLIGHT`] requests run at
//! once (more get 503 at once), each has [`REQUEST_TIMEOUT`], and a tenant's
//! history queries run one at a time on that tenant's own connection, each
//! interrupted after the history's query time limit, so one tenant's heavy
//! queries queue behind each other and never in front of another tenant's.
//! Tokens are at least [`MIN_TOKEN_LEN`] characters and differ per tenant.
//!
//! `/healthz` and `/readyz` are for orchestrators' probes: no token, no
//! tenant's data (counts only), and outside the limit on requests in
//! flight, so a flood of API calls never fails a liveness probe.

mod metrics;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::history::{timed_out, Filter, HistoryReader, QUERY_TIME_LIMIT};
use crate::pipeline::{PipelineCounters, Reading};
use crate::tenant::TenantStatus;
use clean_host_runtime::PluginStats;

/// `[http]` in the config file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Serve the API, `/metrics` and the dashboard here, e.g. `127.0.0.1:8080` (off when unset).
    pub listen: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("--listen {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("API token file {path}: {source}")]
    TokenFile { path: String, source: std::io::Error },
    #[error("{0}")]
    Token(String),
}

/// What the host refreshes every second for the API and `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct LiveStatus {
    pub plugins: Vec<PluginStats>,
    /// Per tenant: instances, memory, rejected reloads, alert delivery.
    pub tenants: Vec<crate::tenant::TenantStatus>,
    /// Per pipeline: records per second over the last second.
    pub rates: BTreeMap<String, f64>,
}

/// Requests served at once; more are answered 503 at once.
pub const MAX_IN_FLIGHT: usize = 64;
/// Longest a request may take, waiting for its tenant's turn included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Shortest API token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// Everything the handlers read.
pub struct ApiState {
    /// (token, tenant)
    tokens: Vec<(String, String)>,
    pipelines: Vec<Arc<PipelineCounters>>,
    status: Arc<RwLock<LiveStatus>>,
    history: Option<HistoryReader>,
    /// Set once the host is stopping (Ctrl-C, SIGTERM): it drains what it read.
    draining: Arc<AtomicBool>,
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Per tenant: its turn at the history.
    history_turns: BTreeMap<String, Arc<tokio::sync::Semaphore>>,
}

impl ApiState {
    /// `tokens`: (token, tenant); each at least [`MIN_TOKEN_LEN`] long and unique.
    pub fn new(
        tokens: Vec<(String, String)>,
        pipelines: Vec<Arc<PipelineCounters>>,
        status: Arc<RwLock<LiveStatus>>,
        history: Option<HistoryReader>,
        draining: Arc<AtomicBool>,
    ) -> Result<Self, HttpError> {
        for (i, (token, tenant)) in tokens.iter().enumerate() {
            if token.chars().count() < MIN_TOKEN_LEN {
                return Err(HttpError::Token(format!("tenant {tenant}: api_token must be at least {MIN_TOKEN_LEN} characters")));
            }
            if let Some((_, other)) = tokens[..i].iter().find(|(t, _)| t == token) {
                return Err(HttpError::Token(format!("tenants {other} and {tenant} have the same api_token; each tenant needs its own")));
            }
        }
        let history_turns = tokens.iter().map(|(_, tenant)| (tenant.clone(), Arc::new(tokio::sync::Semaphore::new(1)))).collect();
        Ok(ApiState { tokens, pipelines, status, history, draining, in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)), history_turns })
    }

    /// Why the host should get no work yet (or any more), if so. The server
    /// runs once every plugin is loaded and every source opened; then each
    /// pipeline must be reading (past its resume) or done, none failed, and
    /// the host not stopping.
    pub fn unready(&self) -> Option<String> {
        if self.draining.load(Ordering::Relaxed) {
            return Some("stopping: analysing what was read".into());
        }
        let count = |state: Reading| self.pipelines.iter().filter(|p| p.reading() == state).count();
        let (n, failed, waiting) = (self.pipelines.len(), count(Reading::Failed), count(Reading::NotYet));
        match (failed, waiting) {
            (0, 0) => None,
            (0, _) => Some(format!("{waiting} of {n} pipelines not reading yet")),
            _ => Some(format!("{failed} of {n} pipelines stopped on an error")),
        }
    }

    /// The tenant whose token this request carries.
    fn tenant(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized("an Authorization: Bearer token is required"))?;
        // Compare with every token, in time independent of where they differ.
        let mut found = None;
        for (token, tenant) in &self.tokens {
            if same_secret(token.as_bytes(), given.trim().as_bytes()) {
                found = Some(tenant.clone());
            }
        }
        found.ok_or(ApiError::Unauthorized("the token is not valid"))
    }

    fn status(&self) -> LiveStatus {
        self.status.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A tenant's API token: from the config (`api_token`, may be `env:VAR`), or
/// else the one in `DATA_DIR/api-tokens/TENANT`, made (random, mode 0600)
/// on first use so it stays the same across restarts.
pub fn tenant_token(configured: Option<&str>, dir: &Path, tenant: &str) -> Result<String, HttpError> {
    if let Some(value) = configured {
        return clean_host_core::secret::resolve(value, &format!("tenant {tenant}: api_token")).map_err(HttpError::Token);
    }
    let path = dir.join(tenant);
    let io = |source| HttpError::TokenFile { path: path.display().to_string(), source };
    if let Ok(text) = std::fs::read_to_string(&path) {
        if !text.trim().is_empty() {
            return Ok(text.trim().to_string());
        }
    }
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).map_err(io)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(dir).map_err(io)?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path).map_err(io)?;
        f.write_all(token.as_bytes()).map_err(io)?;
    }
    Ok(token)
}

#[derive(Debug)]
enum ApiError {
    Unauthorized(&'static str),
    NoHistory,
    Query(String),
    /// The query ran past the history's time limit.
    QueryTooLong,
}

/// Every error the API answers with: `{"error": "..."}`.
#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

fn error(status: StatusCode, error: String) -> Response {
    (status, Json(ErrorBody { error })).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m.to_string()),
            ApiError::NoHistory => (StatusCode::SERVICE_UNAVAILABLE, "this host keeps no history ([history] enabled = false)".into()),
            ApiError::Query(m) => (StatusCode::INTERNAL_SERVER_ERROR, format!("reading the history: {m}")),
            ApiError::QueryTooLong => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the query ran longer than {} s; narrow it with from, to or a smaller limit", QUERY_TIME_LIMIT.as_secs()),
            ),
        };
        let mut response = error(status, message);
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// `?pipeline=&from=&to=&limit=&cursor=` of the history endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    pipeline: Option<String>,
    /// Unix milliseconds, inclusive.
    from: Option<i64>,
    /// Unix milliseconds, exclusive.
    to: Option<i64>,
    /// Rows per page, 1..=1000 (default 100).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<i64>,
}

const MAX_PAGE: u32 = 1000;

impl PageQuery {
    fn filter(self, tenant: String) -> Filter {
        Filter { tenant, pipeline: self.pipeline, from_ms: self.from, to_ms: self.to, limit: self.limit.unwrap_or(100).clamp(1, MAX_PAGE), cursor: self.cursor }
    }
}

type Shared = Arc<ApiState>;

async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

async fn metrics_text(State(state): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    let tenant = state.tenant(&headers)?;
    let body = metrics::render(&tenant, &state.pipelines, &state.status());
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response())
}

#[derive(Serialize)]
struct PipelineView {
    name: String,
    records: u64,
    records_per_second: f64,
    windows: u64,
    alerts: u64,
    alerts_by_severity: BTreeMap<&'static str, u64>,
    dead_letters: u64,
    late_records: u64,
    consumer_lag: u64,
    quality_score: Option<f64>,
    /// Windows scoring below this alert.
    quality_threshold: f64,
    history_dropped: u64,
}

async fn pipelines(State(state): State<Shared>, headers: HeaderMap) -> Result<Json<Vec<PipelineView>>, ApiError> {
    let tenant = state.tenant(&headers)?;
    let status = state.status();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let views = state
        .pipelines
        .iter()
        .filter(|p| p.tenant == tenant)
        .map(|p| PipelineView {
            name: p.pipeline.clone(),
            records: load(&p.records),
            records_per_second: status.rates.get(&p.pipeline).copied().unwrap_or(0.0),
            windows: load(&p.windows),
            alerts: load(&p.alerts),
            alerts_by_severity: metrics::SEVERITIES.iter().enumerate().map(|(i, s)| (*s, load(&p.alerts_by_severity[i]))).collect(),
            dead_letters: load(&p.dead_letters),
            late_records: load(&p.late),
            consumer_lag: p.lag(),
            quality_score: p.last_score(),
            quality_threshold: p.quality_threshold,
            history_dropped: load(&p.history_dropped),
        })
        .collect();
    Ok(Json(views))
}

/// `/api/plugins`: the tenant's plugins and its budget.
#[derive(Serialize)]
struct PluginsView {
    plugins: Vec<PluginStats>,
    tenant: Option<TenantStatus>,
}

async fn plugins(State(state): State<Shared>, headers: HeaderMap) -> Result<Json<PluginsView>, ApiError> {
    let tenant = state.tenant(&headers)?;
    let status = state.status();
    let plugins = status.plugins.iter().filter(|p| p.tenant == tenant).cloned().collect();
    let limits = status.tenants.iter().find(|t| t.name == tenant).cloned();
    Ok(Json(PluginsView { plugins, tenant: limits }))
}

macro_rules! history_endpoint {
    ($name:ident, $method:ident) => {
        async fn $name(State(state): State<Shared>, headers: HeaderMap, Query(query): Query<PageQuery>) -> Result<Response, ApiError> {
            let tenant = state.tenant(&headers)?;
            let turn = state.history_turns.get(&tenant).cloned().ok_or(ApiError::Unauthorized("the token is not valid"))?;
            // Wait for this tenant's turn without holding a thread.
            let _turn = turn.acquire_owned().await.map_err(|e| ApiError::Query(e.to_string()))?;
            let state = state.clone();
            tokio::task::spawn_blocking(move || {
                let history = state.history.as_ref().ok_or(ApiError::NoHistory)?;
                let page =
                    history.$method(&query.filter(tenant)).map_err(|e| if timed_out(&e) { ApiError::QueryTooLong } else { ApiError::Query(e.to_string()) })?;
                Ok(Json(page).into_response())
            })
            .await
            .map_err(|e| ApiError::Query(e.to_string()))?
        }
    };
}

/// At most [`MAX_IN_FLIGHT`] requests at once, each within [`REQUEST_TIMEOUT`].
async fn bounded(State(state): State<Shared>, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let Ok(_slot) = state.in_flight.clone().try_acquire_owned() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "too many requests at once; try again".into());
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())),
    }
}

history_endpoint!(windows, windows);
history_endpoint!(findings, findings);
history_endpoint!(alerts, alerts);
history_endpoint!(plugin_events, plugin_events);

/// Answers while the process serves at all: for liveness probes.
async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 once the host reads and analyses every pipeline, 503 (with why) before and while it stops.
async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    match state.unready() {
        None => "ready\n".into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response(),
    }
}

fn router(state: ApiState) -> Router {
    let state = Arc::new(state);
    Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics_text))
        .route("/api/pipelines", get(pipelines))
        .route("/api/plugins", get(plugins))
        .route("/api/windows", get(windows))
        .route("/api/findings", get(findings))
        .route("/api/alerts", get(alerts))
        .route("/api/plugin-events", get(plugin_events))
        .layer(axum::middleware::from_fn_with_state(state.clone(), bounded))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// A running server; dropping it shuts it down.
pub struct Server {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Bind `addr` and serve on a thread of its own.
pub fn serve(addr: &str, state: ApiState) -> Result<Server, HttpError> {
    let fail = |reason: String| HttpError::Listen { addr: addr.to_string(), reason };
    // A blocking thread per tenant: each runs one history query at a time.
    let blocking = state.history_turns.len().max(2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(blocking)
        .thread_name("http")
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind(addr)).map_err(|e| fail(e.to_string()))?;
    let bound = listener.local_addr().map_err(|e| fail(e.to_string()))?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = router(state);
    let thread = std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            let served = runtime.block_on(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = rx.await;
                    })
                    .await
            });
            if let Err(e) = served {
                tracing::error!("http server stopped: {e}");
            }
        })
        .map_err(|e| fail(e.to_string()))?;
    Ok(Server { addr: bound, shutdown: Some(tx), thread: Some(thread) })
}
