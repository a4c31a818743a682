use super::*;
use clean_host_core::bindings::{TimeBasis, WindowInfo, WindowKind};

/// Window `seq` of ten records (offsets `seq * 10 ..= seq * 10 + 9`), as the
/// detector and alert tests analyse it.
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

fn finding(rows: Vec<u32>) -> Finding {
    Finding { metric: "m".into(), column: None, value: 1.0, threshold: 0.5, severity: Severity::Warning, message: "x".repeat(5000), sample_rows: rows }
}

fn analysis(findings: Vec<Finding>) -> Analysis {
    let nan = MetricValue { metric: "m".into(), column: None, value: f64::NAN };
    Analysis { findings, metrics: vec![nan] }
}

#[test]
fn good_output_is_trimmed_not_rejected() {
    let mut a = analysis(vec![finding(vec![0, 9])]);
    validate(&mut a, 10).unwrap();
    assert_eq!(a.findings[0].message.len(), 4096);
    assert!(a.findings[0].message.ends_with('…'));
    assert!(a.metrics.is_empty());
}

/// Names a plugin makes up are cut before the host keeps or prints them.
#[test]
fn huge_names_are_cut() {
    let huge = "é".repeat(1 << 20);
    let mut a = analysis(vec![Finding { metric: huge.clone(), column: Some(huge.clone()), ..finding(vec![]) }]);
    a.metrics.push(MetricValue { metric: huge.clone(), column: Some(huge), value: 1.0 });
    validate(&mut a, 10).unwrap();
    let f = &a.findings[0];
    let m = &a.metrics[0];
    for name in [&f.metric, f.column.as_ref().unwrap(), &m.metric, m.column.as_ref().unwrap()] {
        assert!(name.len() <= MAX_NAME && name.ends_with('…'), "{} bytes", name.len());
    }
}

#[test]
fn bad_output_is_named() {
    let cases: Vec<(Analysis, &str)> = vec![
        (analysis(vec![finding(vec![10])]), "row 10 of a 10-row window"),
        (analysis(vec![finding((0..21).collect())]), "21 sample rows"),
        (analysis(vec![Finding { value: f64::NAN, ..finding(vec![]) }]), "NaN"),
        (analysis(vec![Finding { metric: String::new(), ..finding(vec![]) }]), "metric name"),
        (analysis((0..1001).map(|_| finding(vec![])).collect()), "1001 findings"),
    ];
    for (mut a, needle) in cases {
        let err = validate(&mut a, 10).unwrap_err();
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn score_counts_data_findings_only() {
    let data = |s| HostFinding { detector: "d".into(), origin: FindingOrigin::Data, finding: Finding { severity: s, ..finding(vec![]) } };
    let fault = HostFinding { origin: FindingOrigin::PluginError, ..data(Severity::Critical) };
    let score = |f: &[HostFinding]| quality_score(f, 1000, 100).value;
    assert_eq!(score(&[]), 1.0);
    assert!((score(&[data(Severity::Warning)]) - 0.9).abs() < 1e-12);
    assert!((score(&[data(Severity::Critical), data(Severity::Info), fault]) - 0.7).abs() < 1e-12);
}

#[test]
fn wilson_intervals_match_known_values() {
    // 10 of 100: the textbook interval is (0.0552, 0.1744).
    let (low, high) = wilson(0.1, 100, 1.959964);
    assert!((low - 0.0552).abs() < 1e-4 && (high - 0.1744).abs() < 1e-4, "{low} {high}");
    // None of 20 still allows up to 16%.
    let (low, high) = wilson(0.0, 20, 1.959964);
    assert!(low == 0.0 && (high - 0.1611).abs() < 1e-4, "{high}");
    assert_eq!(wilson(0.5, 0, 1.96), (0.0, 1.0));
}

#[test]
fn small_windows_give_a_wide_score_and_large_ones_a_sure_score() {
    let rate = |value, threshold| HostFinding {
        detector: "completeness".into(),
        origin: FindingOrigin::Data,
        finding: Finding { metric: "null_rate".into(), value, threshold, severity: Severity::Critical, ..finding(vec![]) },
    };
    // 10% nulls against a 5% limit: sure on 1000 rows, not on 40 (Wilson 0.04..0.23).
    let large = quality_score(&[rate(0.10, 0.05)], 1000, 100);
    assert_eq!((large.value, large.high), (0.7, 0.7), "sure: nothing between the two");
    let small = quality_score(&[rate(0.10, 0.05)], 40, 100);
    assert_eq!((small.value, small.high), (0.7, 1.0), "unsure: the finding may not be real");
    assert!(small.caveat().contains("40 rows"), "{}", small.caveat());
    // A rate just past its limit is not sure even on many rows.
    assert!(!is_sure(&rate(0.051, 0.05).finding, 1000, 100));
    // A finding that is not a rate is sure from `min_rows` rows on.
    let vanished = Finding { metric: "vanished_field".into(), ..rate(1.0, 0.0).finding };
    assert!(is_sure(&vanished, 100, 100) && !is_sure(&vanished, 99, 100));
}

#[test]
fn dead_letters_above_the_limit_are_a_finding() {
    assert!(dead_letter_finding(0, 1000, 0.01).is_none());
    assert!(dead_letter_finding(5, 995, 0.01).is_none());
    let f = dead_letter_finding(20, 980, 0.01).unwrap();
    assert_eq!((f.finding.metric.as_str(), f.finding.value, f.finding.severity), ("dead_letter_rate", 0.02, Severity::Warning));
    assert_eq!(dead_letter_finding(10, 0, 0.01).unwrap().finding.severity, Severity::Critical);
}
