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
    assert!(!text.contains("pay"), "{text}");
    let b = metrics::render("b", &pipelines, &LiveStatus::default());
    assert!(b.contains("pipeline=\"pay\\\"ments\""), "label values are escaped: {b}");
    assert!(!metrics::render("c", &pipelines, &LiveStatus::default()).contains("orders"));
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
    let state = ApiState::new(vec![("tok-a".into(), "a".into()), ("tok-b".into(), "b".into())], Vec::new(), Arc::default(), None);
    let headers = |value: &str| {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    };
    assert_eq!(state.tenant(&headers("Bearer tok-b")).unwrap(), "b");
    assert!(state.tenant(&headers("Bearer tok-c")).is_err());
    assert!(state.tenant(&headers("Basic tok-a")).is_err());
    assert!(state.tenant(&HeaderMap::new()).is_err());
    assert!(same_secret(b"abc", b"abc") && !same_secret(b"abc", b"abd") && !same_secret(b"abc", b"ab"));
}
