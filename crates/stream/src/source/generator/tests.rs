use super::*;
use crate::decode::JsonDecoder;

fn generate(config: GeneratorConfig) -> Vec<String> {
    let (tx, rx) = crossbeam_channel::unbounded();
    Box::new(Generator::new(config)).run(crate::source::SourceContext::detached(tx)).unwrap();
    rx.iter()
        .flat_map(|e| match e {
            SourceEvent::Lines { data, .. } => String::from_utf8(data).unwrap().lines().map(String::from).collect::<Vec<_>>(),
            other => panic!("the generator sends short lines, not {other:?}"),
        })
        .collect()
}

fn bounded(records: u64, inject: &[&str]) -> GeneratorConfig {
    GeneratorConfig { records: Some(records), inject: inject.iter().map(|s| s.to_string()).collect(), ..Default::default() }
}

#[test]
fn clean_records_decode_and_repeat_with_the_seed() {
    let lines = generate(bounded(3000, &[]));
    assert_eq!(lines.len(), 3000);
    let mut d = JsonDecoder::default();
    for l in &lines {
        d.decode(l.as_bytes()).unwrap_or_else(|e| panic!("{e}: {l}"));
    }
    let again = generate(bounded(3000, &[]));
    // Same records but for the simulated clock's anchor (now).
    let strip = |l: &String| l.split("\"user_id\"").nth(1).unwrap().to_string();
    assert_eq!(lines.iter().map(strip).collect::<Vec<_>>(), again.iter().map(strip).collect::<Vec<_>>());
}

#[test]
fn faults_apply_only_to_their_range() {
    let lines = generate(bounded(2000, &["bad-lines@1000+1000", "schema@0+10"]));
    let mut d = JsonDecoder::default();
    let bad: Vec<usize> = (0..2000).filter(|&i| d.decode(lines[i].as_bytes()).is_err()).collect();
    assert!(!bad.is_empty() && bad.iter().all(|&i| i >= 1000), "{bad:?}");
    assert!(lines[5].contains("coupon") && !lines[5].contains("country"));
    assert!(!lines[10].contains("coupon") && lines[10].contains("country"));
}

#[test]
fn creep_raises_the_email_null_rate_gradually() {
    let lines = generate(bounded(200_000, &["creep@100000+100000"]));
    let nulls = |range: std::ops::Range<usize>| lines[range.clone()].iter().filter(|l| l.contains(r#""email":null"#)).count() as f64 / range.len() as f64;
    let (before, early, late) = (nulls(0..100_000), nulls(100_000..120_000), nulls(180_000..200_000));
    assert!((before - 0.01).abs() < 0.002 && (early - 0.012).abs() < 0.003 && (late - 0.029).abs() < 0.004, "{before} {early} {late}");
}

#[test]
fn simulated_time_is_steady_and_ends_near_now() {
    let lines = generate(bounded(2000, &[]));
    let ts = |l: &str| timestamp::parse_ms(&l.split("\"ts\":\"").nth(1).unwrap().as_bytes()[..24]).unwrap();
    let (first, last) = (ts(&lines[0]), ts(&lines[1999]));
    let span = last - first;
    assert!((1500..2500).contains(&span), "{span}");
    assert!((now_ms() - last).abs() < 60_000);
}

#[test]
fn bad_specs_are_explained() {
    let err = "nope@1+2".parse::<Fault>().unwrap_err();
    assert!(err.contains("nulls") && err.contains("nope"));
    assert!("nulls@x+2".parse::<Fault>().is_err());
    assert_eq!("late@5+10".parse::<Fault>().unwrap(), Fault { kind: FaultKind::Late, start: 5, len: 10 });
}

#[test]
fn a_live_feed_lags_the_clock_by_its_delivery_lag() {
    let ts = |l: &str| timestamp::parse_ms(&l.split("\"ts\":\"").nth(1).unwrap().as_bytes()[..24]).unwrap();
    let live = |lag: f64| GeneratorConfig { records: Some(2000), rate: Some(1_000_000), delivery_lag_ms: lag, ..Default::default() };
    // Each record's lag behind the clock as it was generated (a clock read after the block).
    let lags = |lag: f64| {
        let lines = generate(live(lag));
        let after = now_ms();
        let mut lags: Vec<i64> = lines.iter().map(|l| after - ts(l)).collect();
        lags.sort_unstable();
        lags
    };
    let stamped = lags(0.0);
    assert!(stamped[stamped.len() - 1] < 1000, "stamped with the wall clock: {:?}", &stamped[stamped.len() - 5..]);
    let lagging = lags(100.0);
    assert!((50..200).contains(&lagging[lagging.len() / 2]), "median lag {}", lagging[lagging.len() / 2]);
    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        assert!(live(bad).validate().unwrap_err().contains("delivery_lag_ms"));
    }
}
