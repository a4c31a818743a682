use super::*;

fn finding(rows: Vec<u32>) -> Finding {
    Finding {
        metric: "m".into(),
        column: None,
        value: 1.0,
        threshold: 0.5,
        severity: Severity::Warning,
        message: "x".repeat(5000),
        sample_rows: rows,
    }
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
    assert!(a.metrics.is_empty());
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
    assert_eq!(quality_score(&[]), 1.0);
    assert!((quality_score(&[data(Severity::Warning)]) - 0.9).abs() < 1e-12);
    assert!((quality_score(&[data(Severity::Critical), data(Severity::Info), fault]) - 0.7).abs() < 1e-12);
}

#[test]
fn dead_letters_above_the_limit_are_a_finding() {
    assert!(dead_letter_finding(0, 1000, 0.01).is_none());
    assert!(dead_letter_finding(5, 995, 0.01).is_none());
    let f = dead_letter_finding(20, 980, 0.01).unwrap();
    assert_eq!((f.finding.metric.as_str(), f.finding.value, f.finding.severity), ("dead_letter_rate", 0.02, Severity::Warning));
    assert_eq!(dead_letter_finding(10, 0, 0.01).unwrap().finding.severity, Severity::Critical);
}
