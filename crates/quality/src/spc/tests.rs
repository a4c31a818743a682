use super::scenarios::{Scenario, Shape};
use super::*;

/// Parameters as the defaults give them, with only `rules` applied.
fn params(rules: &[Rule]) -> Params {
    let mut config = SpcConfig::default();
    config.defaults.rules = Some(rules.to_vec());
    config.params("null_rate").unwrap()
}

/// Window (from 0) and rule of each signal over `values`.
fn signals(params: Params, values: &[f64]) -> Vec<(usize, Rule)> {
    let mut series = Series::new(params);
    values.iter().enumerate().flat_map(|(i, &v)| series.observe(v).into_iter().map(move |s| (i, s.rule))).collect()
}

/// A 2% null rate over 1000-row windows, like a column with some nulls.
fn null_rate(after: u32, shape: Shape) -> Scenario {
    Scenario { rate: 0.02, rows: 1000, warmup: 100, after, shape }
}

/// The defaults' false-alarm rate is about 0.03 per 1,000 windows per series
/// (BENCHMARKS.md), so 20 series of 1,000 windows expect 0.6 alarms.
#[test]
fn stationary_rates_raise_no_alert_over_1000_windows() {
    let defaults = params(&[Rule::Ewma, Rule::Cusum]);
    let alarms: Vec<(u64, Vec<(usize, Rule)>)> =
        (1..=20).map(|seed| (seed, signals(defaults.clone(), &null_rate(1000, Shape::Stationary).draw(seed)))).filter(|(_, s)| !s.is_empty()).collect();
    assert!(alarms.iter().map(|a| a.1.len()).sum::<usize>() <= 1, "{alarms:?}");
}

#[test]
fn slow_drift_over_50_windows_is_caught_by_cusum_and_by_no_per_window_check() {
    // From 2% to 2% + 2 sigma (2.9%) over 50 windows.
    let scenario = null_rate(50, Shape::Ramp { sigmas: 2.0, windows: 50 });
    // completeness flags a window above its baseline plus max(0.05, 4 binomial sigmas).
    let per_window_limit = 0.02 + f64::max(0.05, 4.0 * scenario.sigma());
    for seed in 1..=10 {
        let values = scenario.draw(seed);
        assert!(values.iter().all(|&v| v <= per_window_limit), "seed {seed}: a single window crossed {per_window_limit}");
        let cusum = signals(params(&[Rule::Cusum]), &values);
        assert!(cusum.first().is_some_and(|&(w, _)| w >= 100), "seed {seed}: CUSUM missed the drift or fired early: {cusum:?}");
    }
}

#[test]
fn step_change_is_caught_by_ewma_within_a_few_windows() {
    for seed in 1..=10 {
        let values = null_rate(50, Shape::Step { sigmas: 3.0 }).draw(seed);
        let ewma = signals(params(&[Rule::Ewma]), &values);
        let delay = ewma.first().map(|&(w, _)| w as i64 - 100);
        assert!(delay.is_some_and(|d| (0..=5).contains(&d)), "seed {seed}: {ewma:?}");
    }
}

/// A series with mean 0 and sigma 1 configured, fed standardised values.
fn standard(rules: &[Rule]) -> Series {
    let mut p = params(rules);
    (p.mean, p.sigma) = (Some(0.0), Some(1.0));
    Series::new(p)
}

#[test]
fn western_electric_rules_fire_on_their_patterns_only() {
    let cases: [(Rule, &[f64], usize); 4] = [
        (Rule::Beyond3Sigma, &[0.5, -1.0, 3.2], 2),
        (Rule::TwoOfThreeBeyond2Sigma, &[2.5, 0.0, 2.2], 2),
        (Rule::FourOfFiveBeyond1Sigma, &[1.5, 1.2, 0.0, 1.1, 1.9], 4),
        (Rule::EightOnOneSide, &[-0.1, -0.5, -0.2, -0.9, -0.3, -0.4, -0.2, -0.1], 7),
    ];
    for (rule, values, at) in cases {
        let mut s = standard(&[rule]);
        let fired: Vec<usize> = values.iter().enumerate().filter(|(_, &v)| !s.observe(v).is_empty()).map(|(i, _)| i).collect();
        assert_eq!(fired, [at], "{rule:?}");
    }
    // Near misses: opposite sides, or one short.
    let misses: [(Rule, &[f64]); 4] = [
        (Rule::Beyond3Sigma, &[2.9, -2.9]),
        (Rule::TwoOfThreeBeyond2Sigma, &[2.5, 0.0, -2.5, 0.0]),
        (Rule::FourOfFiveBeyond1Sigma, &[1.5, 1.2, 0.0, 0.9, 1.9]),
        (Rule::EightOnOneSide, &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, -0.1]),
    ];
    for (rule, values) in misses {
        let mut s = standard(&[rule]);
        assert!(values.iter().all(|&v| s.observe(v).is_empty()), "{rule:?} fired on {values:?}");
    }
}

#[test]
fn signals_name_the_rule_and_the_limit() {
    let mut s = standard(&[Rule::Ewma, Rule::Beyond3Sigma]);
    let fired = s.observe(5.0);
    let rules: Vec<Rule> = fired.iter().map(|f| f.rule).collect();
    assert_eq!(rules, [Rule::Ewma, Rule::Beyond3Sigma]);
    assert_eq!(fired[1].limit, 3.0);
    assert!(fired[0].detail.contains("EWMA 1.0000 crossed"), "{}", fired[0].detail);
    // The EWMA starts over after a signal.
    assert!(s.observe(0.0).is_empty());
}

#[test]
fn a_lasting_departure_alerts_once_and_a_new_one_again() {
    let mut s = standard(&[Rule::Ewma, Rule::Cusum, Rule::Beyond3Sigma]);
    let shifted = |s: &mut Series| (0..100).map(|_| s.observe(3.5).len()).sum::<usize>();
    assert_eq!(shifted(&mut s), 1, "one alert for 100 windows 3.5 sigma out");
    // Back to normal: calm for CALM_WINDOWS windows ends the departure.
    assert!((0..CALM_WINDOWS).all(|_| s.observe(0.0).is_empty()));
    assert_eq!(shifted(&mut s), 1);
}

#[test]
fn a_series_constant_in_warm_up_is_not_watched_unless_given_a_sigma() {
    let mut p = params(&[Rule::Beyond3Sigma]);
    p.warmup_windows = 5;
    let mut constant = Series::new(p.clone());
    assert!((0..5).all(|_| constant.observe(0.0).is_empty()));
    assert!(!constant.watching() && constant.observe(1.0).is_empty());

    p.sigma = Some(0.01);
    let mut given = Series::new(p);
    assert!((0..5).all(|_| given.observe(0.0).is_empty()));
    assert!(given.watching());
    assert_eq!(given.observe(0.05)[0].rule, Rule::Beyond3Sigma);
}

#[test]
fn config_sets_rules_per_metric_and_rejects_nonsense() {
    let config: SpcConfig = toml::from_str(
        r#"
        warmup_windows = 20
        [defaults]
        rules = ["cusum"]
        cusum_h = 6
        [metrics.quality_score]
        rules = ["ewma", "beyond_3_sigma"]
        ewma_lambda = 0.1
        severity = "critical"
        [metrics.records_per_second]
        enabled = false
        "#,
    )
    .unwrap();
    config.validate().unwrap();
    let score = config.params("quality_score").unwrap();
    assert_eq!((score.rules, score.ewma_lambda, score.cusum_h, score.severity), (vec![Rule::Ewma, Rule::Beyond3Sigma], 0.1, 6.0, Severity::Critical));
    let nulls = config.params("null_rate").unwrap();
    assert_eq!((nulls.rules, nulls.ewma_lambda, nulls.warmup_windows), (vec![Rule::Cusum], 0.2, 20));
    assert!(config.params("records_per_second").is_none());
    assert!(config.params("lag_p95_ms").is_none(), "not watched by default");
    let all: SpcConfig = toml::from_str("watch = [\"*\"]").unwrap();
    assert!(all.params("lag_p95_ms").is_some());

    let bad: SpcConfig = toml::from_str("[metrics.x]\newma_lambda = 1.5").unwrap();
    assert!(bad.validate().unwrap_err().contains("ewma_lambda"));
    assert!(toml::from_str::<SpcConfig>("[defaults]\nrules = [\"bogus\"]").unwrap_err().to_string().contains("bogus"));
}

#[test]
fn watch_keeps_one_series_per_partition_detector_metric_and_column() {
    let mut watch = Watch::new(SpcConfig { warmup_windows: 2, ..SpcConfig::default() });
    let key = |partition: u32, c| SeriesName { partition, detector: "completeness", metric: "null_rate", column: Some(c) };
    for v in [0.01, 0.02] {
        watch.observe(key(0, "a"), v);
        watch.observe(key(1, "a"), v);
        watch.observe(key(0, "b"), v);
        // Not watched by default: no series, however far it moves.
        let psi = SeriesName { partition: 0, detector: "drift", metric: "psi", column: Some("a") };
        assert!(watch.observe(psi, v * 1e6).is_empty());
    }
    assert_eq!(watch.watching(), 3);
}

/// A step that stays is a new normal once it settles: one alert for it, then
/// quiet at the new level, and a step from there alerts again.
#[test]
fn a_settled_departure_is_the_new_normal() {
    let mut state = 0x2545_f491_u64;
    let mut noise = move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let mut s = Series::new(params(&[Rule::Ewma, Rule::Cusum]));
    let mut fired = |s: &mut Series, level: f64, windows: usize| (0..windows).filter(|_| !s.observe(level + noise()).is_empty()).count();
    assert_eq!(fired(&mut s, 10.0, 100), 0, "warm-up");
    assert_eq!(fired(&mut s, 14.0, 150), 1, "a lasting step alerts once");
    assert_eq!(fired(&mut s, 18.0, 40), 1, "a step from the new normal alerts again");
}

/// A rate from a one-row window (a slow time window, the last partial one)
/// is 0 or 1: it is judged without a binomial floor, and never panics.
#[test]
fn a_rate_from_one_row_is_judged_without_a_floor() {
    let mut series = Series::new(params(&[Rule::Beyond3Sigma]));
    for i in 0..120 {
        series.observe_in(0.02 + 0.001 * f64::from(i % 3), Some(1000));
    }
    assert!(!series.observe_in(1.0, Some(1)).is_empty(), "one null in one row is far past a 2% rate");
    series.observe_in(0.0, Some(1));
}

/// A watch resumed from a checkpoint carries its learned series on, but a
/// metric whose mean and sigma were configured since is judged by them.
#[test]
fn a_resumed_watch_takes_a_newly_configured_baseline() {
    let key = SeriesName { partition: 0, detector: "completeness", metric: "null_rate", column: Some("a") };
    let learned = SpcConfig { warmup_windows: 5, ..SpcConfig::default() };
    let mut before = Watch::new(learned.clone());
    for i in 0..20 {
        before.observe_in(key, 0.5 + 0.01 * f64::from(i % 3), Some(1000));
    }
    let mut same = Watch::new(learned.clone());
    same.resume(0, before.state(0));
    assert!(same.observe_in(key, 0.51, Some(1000)).is_empty(), "the learned baseline carries on");

    let mut configured = learned;
    configured.metrics.insert("null_rate".into(), SpcMetricConfig { mean: Some(0.02), sigma: Some(0.005), ..SpcMetricConfig::default() });
    let mut after = Watch::new(configured);
    after.resume(0, before.state(0));
    assert!(!after.observe_in(key, 0.51, Some(1000)).is_empty(), "0.51 is far past a configured 0.02 +- 0.005");
}
