use super::*;
use crate::runtime::bindings::{Finding, TimeBasis, WindowKind};

const POS: (&Position, &Position) = (&Position::Offset(0), &Position::Offset(9));

/// Window `seq` of ten records (offsets `seq * 10 ..= seq * 10 + 9`); also
/// the window the detector tests analyse.
pub(crate) fn info(seq: u64) -> WindowInfo {
    WindowInfo {
        pipeline: "p".into(),
        source: "s".into(),
        partition: 0,
        kind: WindowKind::Count,
        start_ms: 0,
        end_ms: 0,
        time_basis: TimeBasis::Processing,
        closed_at_ms: 0,
        first_offset: seq * 10,
        last_offset: seq * 10 + 9,
        seq,
    }
}

fn finding(metric: &str, severity: Severity, value: f64, origin: FindingOrigin) -> HostFinding {
    HostFinding {
        detector: "d".into(),
        origin,
        finding: Finding {
            metric: metric.into(),
            column: Some("c".into()),
            value,
            threshold: 0.1,
            severity,
            message: "m".into(),
            sample_rows: vec![1],
        },
    }
}

#[test]
fn severity_floor_and_cooldown() {
    let mut r = Router::new("p", AlertConfig { cooldown_windows: 3, ..Default::default() });
    let f = [finding("null_rate", Severity::Warning, 0.5, FindingOrigin::Data), finding("x", Severity::Info, 1.0, FindingOrigin::Data)];
    let alerts: Vec<Vec<Alert>> =
        (0..8).map(|seq| r.route(&info(seq), (&Position::Offset(seq * 10), &Position::Offset(seq * 10 + 9)), 10, &f, 0.9)).collect();
    let counts: Vec<usize> = alerts.iter().map(Vec::len).collect();
    assert_eq!(counts, [1, 0, 0, 1, 0, 0, 1, 0]);
    assert_eq!(r.suppressed, 5);
    let a = &alerts[3][0];
    assert_eq!((a.window.seq, a.window.first_offset.clone(), a.window.last_offset.clone(), a.window.records), (3, Position::Offset(30), Position::Offset(39), 10));
}

#[test]
fn cooldown_is_kept_per_partition() {
    let mut r = Router::new("p", AlertConfig { cooldown_windows: 3, ..Default::default() });
    let f = [finding("null_rate", Severity::Warning, 0.5, FindingOrigin::Data)];
    let on = |partition| WindowInfo { partition, ..info(0) };
    assert_eq!(r.route(&on(0), POS, 10, &f, 0.9).len(), 1);
    assert_eq!(r.route(&on(1), POS, 10, &f, 0.9).len(), 1, "another partition's alert is not cooled down");
    assert_eq!(r.route(&on(0), POS, 10, &f, 0.9).len(), 0);
}

#[test]
fn metric_rules_filter_and_override() {
    let mut metrics = BTreeMap::new();
    metrics.insert("null_rate".to_string(), MetricRule { above: Some(0.3), severity: Some(Level::Critical), ..Default::default() });
    metrics.insert("noisy".to_string(), MetricRule { mute: true, ..Default::default() });
    let mut r = Router::new("p", AlertConfig { metrics, cooldown_windows: 0, ..Default::default() });
    let low = [finding("null_rate", Severity::Warning, 0.2, FindingOrigin::Data), finding("noisy", Severity::Critical, 1.0, FindingOrigin::Data)];
    assert!(r.route(&info(0), POS, 10, &low, 0.9).is_empty());
    let high = [finding("null_rate", Severity::Warning, 0.4, FindingOrigin::Data)];
    let a = r.route(&info(1), POS, 10, &high, 0.9);
    assert_eq!((a[0].severity, a[0].threshold), (Level::Critical, 0.3));
}

#[test]
fn low_quality_windows_raise_their_own_alert() {
    let mut r = Router::new("p", AlertConfig { min_severity: Level::Critical, ..Default::default() });
    let f = [finding("a", Severity::Warning, 1.0, FindingOrigin::Data)];
    let alerts = r.route(&info(0), POS, 10, &f, 0.3);
    assert_eq!(alerts.len(), 1);
    assert_eq!((alerts[0].metric.as_str(), alerts[0].severity), ("quality_score", Level::Critical));
    assert!(alerts[0].message.contains("d/a"));
}

#[test]
fn quarantine_always_alerts() {
    let mut r = Router::new("p", AlertConfig { min_severity: Level::Critical, ..Default::default() });
    let f = [finding("plugin_quarantined", Severity::Info, 3.0, FindingOrigin::Quarantine)];
    assert_eq!(r.route(&info(0), POS, 10, &f, 1.0).len(), 1);
}
