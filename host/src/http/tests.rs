use std::sync::atomic::Ordering;

use super::*;

fn counters(pipeline: &str, tenant: &str, records: u64) -> Arc<PipelineCounters> {
    let c = PipelineCounters::new(pipeline, tenant, 0.8);
    c.records.store(records, Ordering::Relaxed);
    c.alerts_by_severity[2].store(3, Ordering::Relaxed);
    Arc::new(c)
}

#[test]
fn metrics_show_only_the_tenants_own_pipelines() {
    let pipelines = vec![counters("orders", "a", 10), counters("pay\"ments", "b", 20)];
    let text = metrics::render("a", &pipelines, &LiveStatus::default());
    assert!(text.contains("clean_host_records_total{tenant=\"a\",pipeline=\"orders\"} 10"), "{text}");
    assert!(text.contains("clean_host_alerts_total{tenant=\"a\",pipeline=\"orders\",severity=\"critical\"} 3"), "{text}");
    assert!(text.contains("clean_host_broker_errors_total{tenant=\"a\",pipeline=\"orders\"} 0"), "{text}");
    assert!(!text.contains("pay"), "{text}");
    let b = metrics::render("b", &pipelines, &LiveStatus::default());
    assert!(b.contains("pipeline=\"pay\\\"ments\""), "label values are escaped: {b}");
    assert!(!metrics::render("c", &pipelines, &LiveStatus::default()).contains("orders"));
}

/// A pipeline that stored a checkpoint says when; one that did not, nothing.
#[test]
fn metrics_say_when_the_last_checkpoint_was_taken() {
    let pipelines = vec![counters("orders", "a", 10), counters("payments", "a", 20)];
    pipelines[0].checkpoint_taken_ms.store(1_764_000_000_500, Ordering::Relaxed);
    let text = metrics::render("a", &pipelines, &LiveStatus::default());
    assert!(text.contains("clean_host_checkpoint_timestamp_seconds{tenant=\"a\",pipeline=\"orders\"} 1764000000.5"), "{text}");
    assert!(!text.contains("clean_host_checkpoint_timestamp_seconds{tenant=\"a\",pipeline=\"payments\"}"), "{text}");
}

#[test]
fn tokens_are_made_once_and_kept() {
    let dir = std::env::temp_dir().join(format!("api-tokens-{}", std::process::id()));
    let first = tenant_token(None, &dir, "team-a").unwrap();
    assert_eq!(first.len(), 48);
    assert_eq!(tenant_token(None, &dir, "team-a").unwrap(), first, "the same token after a restart");
    assert_ne!(tenant_token(None, &dir, "team-b").unwrap(), first);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(dir.join("team-a")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(tenant_token(Some("s3cret"), &dir, "team-c").unwrap(), "s3cret");
    let missing = tenant_token(Some("env:CLEAN_HOST_TEST_NO_SUCH_VAR"), &dir, "team-d").unwrap_err().to_string();
    assert!(missing.contains("CLEAN_HOST_TEST_NO_SUCH_VAR"), "{missing}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_token_opens_its_tenant_only() {
    let tokens = vec![("token-of-team-a-1".into(), "a".into()), ("token-of-team-b-1".into(), "b".into())];
    let state = ApiState::new(tokens, Vec::new(), Arc::default(), None, Arc::default()).unwrap();
    let headers = |value: &str| {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    };
    assert_eq!(state.tenant(&headers("Bearer token-of-team-b-1")).unwrap(), "b");
    assert!(state.tenant(&headers("Bearer token-of-team-c-1")).is_err());
    assert!(state.tenant(&headers("Basic token-of-team-a-1")).is_err());
    assert!(state.tenant(&HeaderMap::new()).is_err());
    assert!(same_secret(b"abc", b"abc") && !same_secret(b"abc", b"abd") && !same_secret(b"abc", b"ab"));
}

#[test]
fn tokens_must_be_long_and_unique() {
    let state = |tokens: &[(&str, &str)]| {
        let tokens = tokens.iter().map(|(t, n)| (t.to_string(), n.to_string())).collect();
        ApiState::new(tokens, Vec::new(), Arc::default(), None, Arc::default()).err().map(|e| e.to_string())
    };
    let short = state(&[("s3cret", "a")]).unwrap();
    assert!(short.contains("tenant a") && short.contains("at least 16") && !short.contains("s3cret"), "{short}");
    let shared = state(&[("the-same-token-for-both", "a"), ("the-same-token-for-both", "b")]).unwrap();
    assert!(shared.contains("tenants a and b") && !shared.contains("the-same"), "{shared}");
    assert!(state(&[("token-of-team-a-1", "a"), ("token-of-team-b-1", "b")]).is_none());
}

/// The status line of a GET, or `None` if no answer came within `wait`.
fn get_status(addr: SocketAddr, path: &str, token: &str, wait: Duration) -> Option<String> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) if answer.is_empty() => return None,
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&answer).lines().next().map(str::to_string)
}

/// While tenant a's history query holds its turn, tenant b is answered at
/// once and a's next query waits; it runs when the turn comes back.
#[test]
fn one_tenants_history_queries_never_hold_another_tenants() {
    let dir = tempfile_dir("http-turns");
    let reader = HistoryReader::open(&dir.join("history.db")).unwrap();
    let tokens = vec![("token-of-team-a-1".into(), "a".into()), ("token-of-team-b-1".into(), "b".into())];
    let state = ApiState::new(tokens, Vec::new(), Arc::default(), Some(reader), Arc::default()).unwrap();
    let a_turn = state.history_turns["a"].clone();
    let server = serve("127.0.0.1:0", state).unwrap();
    let held = a_turn.try_acquire_owned().unwrap();
    let b = get_status(server.addr, "/api/windows", "token-of-team-b-1", Duration::from_secs(10));
    assert!(b.as_deref().is_some_and(|s| s.contains("200")), "{b:?}");
    let waiting = std::thread::spawn(move || get_status(server.addr, "/api/windows", "token-of-team-a-1", Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!waiting.is_finished(), "a's second query ran while a's turn was held");
    drop(held);
    let a = waiting.join().unwrap();
    assert!(a.as_deref().is_some_and(|s| s.contains("200")), "{a:?}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn ready_once_every_pipeline_reads_and_until_the_host_stops() {
    let pipelines = vec![counters("orders", "a", 0), counters("payments", "b", 0)];
    let draining = Arc::new(AtomicBool::new(false));
    let state = ApiState::new(vec![("token-of-team-a-1".into(), "a".into())], pipelines.clone(), Arc::default(), None, draining.clone()).unwrap();
    assert_eq!(state.unready().as_deref(), Some("2 of 2 pipelines not reading yet"));
    pipelines[0].set_reading(Reading::Yes);
    assert_eq!(state.unready().as_deref(), Some("1 of 2 pipelines not reading yet"));
    pipelines[1].set_reading(Reading::Done);
    assert_eq!(state.unready(), None, "a pipeline read to its end is no reason to wait");
    pipelines[1].set_reading(Reading::Failed);
    assert_eq!(state.unready().as_deref(), Some("1 of 2 pipelines stopped on an error"));
    pipelines[1].set_reading(Reading::Yes);
    draining.store(true, Ordering::Relaxed);
    assert_eq!(state.unready().as_deref(), Some("stopping: analysing what was read"));
}
