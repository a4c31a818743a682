use super::*;
use crate::analysis::tests::info;
use crate::analysis::{quality_score, FindingOrigin, HostFinding, Score, WindowAnalysis};
use clean_host_core::bindings::{Finding, MetricValue};

const POS: (&Position, &Position) = (&Position::Offset(0), &Position::Offset(9));

fn finding(metric: &str, severity: Severity, value: f64, origin: FindingOrigin) -> HostFinding {
    HostFinding {
        detector: "d".into(),
        origin,
        finding: Finding { metric: metric.into(), column: Some("c".into()), value, threshold: 0.1, severity, message: "m".into(), sample_rows: vec![1] },
    }
}

/// Route `findings` on a 1000-row window scoring `score` (a sure score, and
/// sure findings).
fn route(r: &mut Router, info: &WindowInfo, pos: (&Position, &Position), findings: &[HostFinding], score: f64) -> Vec<Alert> {
    let analysis = WindowAnalysis { findings: findings.to_vec(), ..Default::default() };
    r.route(info, pos, &analysis, &Score { value: score, low: score, high: score, rows: 1000 })
}

#[test]
fn severity_floor_and_cooldown() {
    let mut r = Router::new("p", AlertConfig { cooldown_windows: 3, ..Default::default() });
    let f = [finding("null_rate", Severity::Warning, 0.5, FindingOrigin::Data), finding("x", Severity::Info, 1.0, FindingOrigin::Data)];
    let alerts: Vec<Vec<Alert>> =
        (0..8).map(|seq| route(&mut r, &info(seq), (&Position::Offset(seq * 10), &Position::Offset(seq * 10 + 9)), &f, 0.9)).collect();
    let counts: Vec<usize> = alerts.iter().map(Vec::len).collect();
    assert_eq!(counts, [1, 0, 0, 1, 0, 0, 1, 0]);
    assert_eq!(r.suppressed, 5);
    let a = &alerts[3][0];
    assert_eq!(
        (a.window.seq, a.window.first_offset.clone(), a.window.last_offset.clone(), a.window.records),
        (3, Position::Offset(30), Position::Offset(39), 1000)
    );
}

#[test]
fn cooldown_is_kept_per_partition() {
    let mut r = Router::new("p", AlertConfig { cooldown_windows: 3, ..Default::default() });
    let f = [finding("null_rate", Severity::Warning, 0.5, FindingOrigin::Data)];
    let on = |partition| WindowInfo { partition, ..info(0) };
    assert_eq!(route(&mut r, &on(0), POS, &f, 0.9).len(), 1);
    assert_eq!(route(&mut r, &on(1), POS, &f, 0.9).len(), 1, "another partition's alert is not cooled down");
    assert_eq!(route(&mut r, &on(0), POS, &f, 0.9).len(), 0);
}

#[test]
fn metric_rules_filter_and_override() {
    let mut metrics = BTreeMap::new();
    metrics.insert("null_rate".to_string(), MetricRule { above: Some(0.3), severity: Some(Severity::Critical), ..Default::default() });
    metrics.insert("noisy".to_string(), MetricRule { mute: true, ..Default::default() });
    let mut r = Router::new("p", AlertConfig { metrics, cooldown_windows: 0, ..Default::default() });
    let low = [finding("null_rate", Severity::Warning, 0.2, FindingOrigin::Data), finding("noisy", Severity::Critical, 1.0, FindingOrigin::Data)];
    assert!(route(&mut r, &info(0), POS, &low, 0.9).is_empty());
    let high = [finding("null_rate", Severity::Warning, 0.4, FindingOrigin::Data)];
    let a = route(&mut r, &info(1), POS, &high, 0.9);
    assert_eq!((a[0].severity, a[0].threshold), (Severity::Critical, 0.3));
}

#[test]
fn low_quality_windows_raise_their_own_alert() {
    let mut r = Router::new("p", AlertConfig { min_severity: Severity::Critical, ..Default::default() });
    let f = [finding("a", Severity::Warning, 1.0, FindingOrigin::Data)];
    let alerts = route(&mut r, &info(0), POS, &f, 0.3);
    assert_eq!(alerts.len(), 1);
    assert_eq!((alerts[0].metric.as_str(), alerts[0].severity), ("quality_score", Severity::Critical));
    assert!(alerts[0].message.contains("d/a"));
}

#[test]
fn quarantine_always_alerts() {
    let mut r = Router::new("p", AlertConfig { min_severity: Severity::Critical, ..Default::default() });
    let f = [finding("plugin_quarantined", Severity::Info, 3.0, FindingOrigin::Quarantine)];
    assert_eq!(route(&mut r, &info(0), POS, &f, 1.0).len(), 1);
}

/// A finding whose interval crosses its threshold lowers the score and stays
/// in the history, but pages no one unless `alert_low_confidence` asks.
#[test]
fn unsure_findings_do_not_page_unless_asked() {
    let rate = |value| HostFinding {
        finding: Finding { value, threshold: 0.05, ..finding("null_rate", Severity::Critical, 0.0, FindingOrigin::Data).finding },
        ..finding("null_rate", Severity::Critical, 0.0, FindingOrigin::Data)
    };
    // 10% against 5%: sure on 1000 rows, not on 40.
    for (rows, ask, alerted) in [(1000, false, true), (40, false, false), (40, true, true)] {
        let mut r = Router::new("p", AlertConfig { alert_low_confidence: ask, ..AlertConfig::default() });
        let analysis = WindowAnalysis { findings: vec![rate(0.10)], ..Default::default() };
        let score = quality_score(&analysis.findings, rows, 100);
        let alerts = r.route(&info(rows as u64 * 100), POS, &analysis, &score);
        let null_rate: Vec<&Alert> = alerts.iter().filter(|a| a.metric == "null_rate").collect();
        assert_eq!(null_rate.len(), usize::from(alerted), "{rows} rows, asked {ask}");
        if let Some(a) = null_rate.first() {
            assert_eq!(a.low_confidence, rows < 100);
            assert_eq!(a.message.contains(&format!("low confidence: {rows} rows")), rows < 100, "{}", a.message);
        }
        assert_eq!(r.unsure > 0, !alerted, "{rows} rows, asked {ask}");
    }
}

#[test]
fn the_quality_alert_needs_the_whole_interval_below_the_threshold() {
    let score = Score { value: 0.7, low: 0.7, high: 1.0, rows: 40 };
    // A finding under the alerts' severity floor: news about the window, not an alert.
    let analysis = WindowAnalysis { findings: vec![finding("x", Severity::Info, 1.0, FindingOrigin::Data)], ..Default::default() };
    let mut interval = Router::new("p", AlertConfig::default());
    assert!(interval.route(&info(0), POS, &analysis, &score).is_empty());
    // On the point estimate it is below, but unsure: it pages only when asked.
    let mut point = Router::new("p", AlertConfig { score_basis: ScoreBasis::Point, ..Default::default() });
    assert!(point.route(&info(0), POS, &analysis, &score).is_empty());
    let mut asked = Router::new("p", AlertConfig { score_basis: ScoreBasis::Point, alert_low_confidence: true, ..Default::default() });
    let alerts = asked.route(&info(0), POS, &analysis, &score);
    assert_eq!((alerts[0].metric.as_str(), alerts[0].low_confidence, alerts[0].score_interval), ("quality_score", true, [0.7, 1.0]));
    assert!(alerts[0].message.contains("low confidence: 40 rows"), "{}", alerts[0].message);
}

/// A finding that leaves and comes back within the cooldown is the same
/// departure flapping, unless it stayed away for [`REARM_WINDOWS`] windows.
#[test]
fn a_flapping_departure_alerts_once_and_a_new_one_again() {
    let mut r = Router::new("p", AlertConfig { cooldown_windows: 20, ..Default::default() });
    let f = [finding("null_rate", Severity::Warning, 0.5, FindingOrigin::Data)];
    let present = [0, 1, 4, 5, 7, 11];
    let sent: Vec<u64> = (0..12u64)
        .filter(|&seq| {
            let findings = if present.contains(&seq) { &f[..] } else { &[] };
            !route(&mut r, &info(seq), POS, findings, 0.9).is_empty()
        })
        .collect();
    // Back after 2 and 1 windows away: the same departure; after 3 away (8..10): a new one.
    assert_eq!(sent, [0, 11]);
}

/// Cooldown quiets repeats, never escalation: a rise in severity, or a
/// value twice as far past the threshold, alerts again and says from what.
#[test]
fn cooldown_never_hides_an_escalation() {
    let mut r = Router::new("p", AlertConfig { cooldown_windows: 10, ..Default::default() });
    let at = |seq: u64, severity, value| {
        let f = HostFinding {
            finding: Finding { threshold: 0.05, ..finding("null_rate", severity, value, FindingOrigin::Data).finding },
            ..finding("null_rate", severity, value, FindingOrigin::Data)
        };
        (seq, f)
    };
    let mut sent = Vec::new();
    // 9% alerts; 8% and 12% (excess under twice 4 points) are repeats; 46% escalates; 50% is its repeat.
    for (seq, f) in [
        at(25, Severity::Warning, 0.09),
        at(26, Severity::Warning, 0.08),
        at(27, Severity::Warning, 0.12),
        at(28, Severity::Warning, 0.46),
        at(29, Severity::Warning, 0.5),
    ] {
        let alerts = route(&mut r, &info(seq), POS, &[f], 0.9);
        sent.extend(alerts.into_iter().map(|a| (seq, a)));
    }
    let seqs: Vec<u64> = sent.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, [25, 28]);
    let (_, escalated) = &sent[1];
    let from = escalated.escalated_from.expect("escalated");
    assert_eq!((from.window, from.severity, from.value), (25, Severity::Warning, 0.09));
    assert!(escalated.message.contains("escalated from warning 0.0900 in window 25"), "{}", escalated.message);
    // A higher severity escalates whatever the value.
    let alerts = route(&mut r, &info(30), POS, &[at(30, Severity::Critical, 0.5).1], 0.9);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].escalated_from.map(|f| f.window), Some(28));
}

/// The alerts of one window about one column are one incident for the
/// handlers, carrying the others in its message; the quality alert joins.
#[test]
fn one_fault_one_incident() {
    let mut r = Router::new("p", AlertConfig::default());
    let on = |detector: &str, metric: &str, column: Option<&str>, severity| HostFinding {
        detector: detector.into(),
        finding: Finding { column: column.map(String::from), ..finding(metric, severity, 0.5, FindingOrigin::Data).finding },
        origin: FindingOrigin::Data,
    };
    let findings = [
        on("outliers", "outlier_rate", Some("amount"), Severity::Warning),
        on("drift", "psi", Some("amount"), Severity::Critical),
        on("completeness", "null_rate", Some("email"), Severity::Warning),
        on("volume", "rate_drop", None, Severity::Warning),
    ];
    let alerts = route(&mut r, &info(0), POS, &findings, 0.4);
    assert_eq!(alerts.len(), 5, "every finding and the quality score alert: {alerts:?}");
    let groups = incidents(&alerts);
    assert_eq!(groups.len(), 3, "{groups:?}");
    let first = Alert::incident(&alerts, &groups[0], &info(0));
    assert_eq!((first.detector.as_str(), first.metric.as_str()), ("drift", "psi"), "the most severe leads");
    assert!(first.message.contains("outliers/outlier_rate") && first.message.contains("host/quality_score"), "{}", first.message);
    let email = Alert::incident(&alerts, &groups[1], &info(0));
    assert_eq!(email.column.as_deref(), Some("email"));
    assert!(!email.message.contains("with it"), "{}", email.message);
}

#[test]
fn a_metric_creeping_away_raises_an_alert_naming_the_rule() {
    let mut config = AlertConfig::default();
    config.spc.warmup_windows = 20;
    let mut r = Router::new("p", config);
    let window = |value: f64| {
        let metric = MetricValue { metric: "null_rate".into(), column: Some("email".into()), value };
        WindowAnalysis { metrics: vec![("completeness".into(), metric)], ..Default::default() }
    };
    let sure = Score { value: 1.0, low: 1.0, high: 1.0, rows: 1000 };
    // Warm-up alternates around 1%, then the rate creeps up by 0.1 points a window.
    let mut fired = None;
    for seq in 0..80u64 {
        let value = if seq < 20 { 0.01 + if seq % 2 == 0 { 0.001 } else { -0.001 } } else { 0.01 + 0.001 * (seq - 19) as f64 };
        let alerts = r.route(&info(seq), POS, &window(value), &sure);
        if let Some(a) = alerts.into_iter().next() {
            fired = Some((seq, a));
            break;
        }
    }
    let (seq, a) = fired.expect("no SPC alert");
    assert!(seq > 20 && seq < 30, "fired at window {seq}");
    assert_eq!((a.detector.as_str(), a.metric.as_str(), a.column.as_deref()), ("completeness", "null_rate", Some("email")));
    assert!(a.rule.is_some() && a.message.contains(&format!("[{}]", a.rule.unwrap())), "{}", a.message);
    assert!(a.message.starts_with("null_rate of email is 0.0"), "{}", a.message);
    // value and threshold are the rule's statistic and the limit it crossed.
    assert!(a.value > a.threshold, "{a:?}");
    // A value its own detector flagged does not feed the series.
    let flagged = WindowAnalysis { findings: vec![finding("null_rate", Severity::Info, 0.5, FindingOrigin::Data)], ..window(0.5) };
    let mut quiet = Router::new("p", AlertConfig::default());
    assert!((0..200).all(|seq| quiet.route(&info(seq), POS, &flagged, &sure).is_empty()));
}

#[test]
fn baselines_warmed_from_past_windows_need_no_new_warm_up() {
    let past: Vec<PastWindow> = (0..100)
        .map(|i| PastWindow {
            partition: 0,
            score: 1.0,
            score_high: 1.0,
            metrics: vec![("completeness".into(), "null_rate".into(), Some("email".into()), if i % 2 == 0 { 0.011 } else { 0.009 })],
            flagged: Vec::new(),
        })
        .collect();
    let mut r = Router::new("p", AlertConfig::default());
    assert_eq!(r.warm_windows(), 200);
    r.warm(&past);
    assert_eq!(r.watched_series(), 1);
    let creeping = |value| WindowAnalysis {
        metrics: vec![("completeness".into(), MetricValue { metric: "null_rate".into(), column: Some("email".into()), value })],
        ..Default::default()
    };
    let sure = Score { value: 1.0, low: 1.0, high: 1.0, rows: 1000 };
    let fired = (0..30u64).find(|&seq| !r.route(&info(seq), POS, &creeping(0.01 + 0.001 * seq as f64), &sure).is_empty());
    assert!(fired.is_some_and(|seq| seq < 10), "{fired:?}");
}

/// A router resumed from a partition's state (through JSON, as a
/// checkpoint keeps it) routes every later window of that partition as the
/// one that never stopped, wherever the other partitions went: control
/// rules in and past warm-up, cooldowns in the middle of a departure.
#[test]
fn a_router_resumed_from_a_partitions_state_routes_it_as_if_it_never_stopped() {
    let window = |seq: u64| {
        let value = if seq < 25 { 0.01 + if seq.is_multiple_of(2) { 0.001 } else { -0.001 } } else { 0.01 + 0.0015 * (seq - 24) as f64 };
        let metric = MetricValue { metric: "null_rate".into(), column: Some("email".into()), value };
        let flaps = [30, 31, 33, 41, 45].contains(&seq);
        let findings = if flaps { vec![finding("duplicate_rate", Severity::Warning, 0.5, FindingOrigin::Data)] } else { Vec::new() };
        WindowAnalysis { metrics: vec![("completeness".into(), metric)], findings, ..Default::default() }
    };
    let sure = Score { value: 1.0, low: 1.0, high: 1.0, rows: 1000 };
    let mut config = AlertConfig { cooldown_windows: 20, ..Default::default() };
    config.spc.warmup_windows = 20;
    // Partition 1 runs 7 windows ahead of partition 0 on the same pattern.
    let route = |r: &mut Router, partition: u32, seq: u64| {
        let info = WindowInfo { partition, ..info(seq) };
        format!("{:?}", r.route(&info, POS, &window(seq + 7 * u64::from(partition)), &sure))
    };
    let both = |r: &mut Router, seqs: std::ops::Range<u64>| -> Vec<[String; 2]> { seqs.map(|seq| [route(r, 0, seq), route(r, 1, seq)]).collect() };
    let expected = both(&mut Router::new("p", config.clone()), 0..60);
    assert!(expected.iter().filter(|a| a[0] != "[]").count() >= 2, "{expected:?}");
    for cut in [5, 20, 26, 32, 40] {
        let mut before = Router::new("p", config.clone());
        both(&mut before, 0..cut);
        for partition in [0, 1] {
            let state: RouterState = serde_json::from_str(&serde_json::to_string(&before.state(partition)).unwrap()).unwrap();
            let mut after = Router::new("p", config.clone());
            after.resume(partition, state);
            let answers: Vec<String> = (cut..60).map(|seq| route(&mut after, partition, seq)).collect();
            let wanted: Vec<String> = expected[cut as usize..].iter().map(|a| a[partition as usize].clone()).collect();
            assert_eq!(answers, wanted, "partition {partition} resumed after window {cut}");
        }
    }
}
