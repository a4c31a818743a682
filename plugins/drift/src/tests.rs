use clean_host_sdk::testing::{BatchBuilder, Rng};

use super::*;
use clean_host_sdk::stats::NEW_NORMAL_AFTER;

/// Windows in a default reference.
const REFERENCE: u64 = 10;

const COUNTRIES: [&str; 5] = ["DE", "FR", "US", "GB", "NL"];

/// A window of `rows` orders: log-normal `amount` (times `scale`), `items`
/// 1..=6, a `country` (with `xx` of them "XX") and a unique `id`.
fn window(rng: &mut Rng, seq: u64, rows: usize, scale: f64, xx: f64) -> Batch {
    let amount: Vec<Option<f64>> = (0..rows).map(|_| Some((3.2 + 0.9 * rng.normal()).exp() * scale)).collect();
    let items: Vec<Option<i64>> = (0..rows).map(|_| Some(1 + (rng.uniform() * 6.0) as i64)).collect();
    let country: Vec<&str> = (0..rows).map(|_| if rng.uniform() < xx { "XX" } else { COUNTRIES[(rng.uniform() * rng.uniform() * 5.0) as usize] }).collect();
    let ids: Vec<String> = (0..rows).map(|i| format!("e-{seq}-{i}")).collect();
    BatchBuilder::new(seq)
        .float("amount", &amount)
        .int("items", &items)
        .text("country", &country.iter().map(|c| Some(*c)).collect::<Vec<_>>())
        .text("id", &ids.iter().map(|s| Some(s.as_str())).collect::<Vec<_>>())
        .build()
}

fn drift(config: &str) -> Drift {
    let mut d = Drift::default();
    d.configure(config).unwrap();
    d
}

fn findings(d: &mut Drift, batch: &Batch) -> Vec<(String, String, Severity)> {
    let out = d.analyze(batch).unwrap();
    out.findings.into_iter().map(|f| (f.metric, f.column.unwrap_or_default(), f.severity)).collect()
}

#[test]
fn stationary_noisy_data_is_quiet() {
    let mut rng = Rng(1);
    let mut d = drift("");
    for seq in 0..500 {
        let f = findings(&mut d, &window(&mut rng, seq, 1000, 1.0, 0.0));
        assert!(f.is_empty(), "window {seq}: {f:?}");
    }
    // Small windows too: 60 rows is above min_rows, and noisier.
    for seq in 500..800 {
        let f = findings(&mut d, &window(&mut rng, seq, 60, 1.0, 0.0));
        assert!(f.is_empty(), "window {seq}: {f:?}");
    }
    let out = d.analyze(&window(&mut rng, 900, 1000, 1.0, 0.0)).unwrap();
    let metrics: Vec<(&str, &str)> = out.metrics.iter().map(|m| (m.metric.as_str(), m.column.as_deref().unwrap_or(""))).collect();
    for expected in [("mean", "amount"), ("psi", "amount"), ("ks_distance", "amount"), ("psi", "items"), ("psi", "country"), ("chi_square", "country")] {
        assert!(metrics.contains(&expected), "{expected:?} missing from {metrics:?}");
    }
    assert!(!metrics.iter().any(|m| m.1 == "id"), "an id column is not a category: {metrics:?}");
}

#[test]
fn a_moved_distribution_and_a_new_category_are_caught() {
    let mut rng = Rng(2);
    let mut d = drift("");
    // The reference, then how much the statistics move by themselves.
    let quiet = REFERENCE + JUDGE_AFTER as u64;
    for seq in 0..quiet {
        assert!(findings(&mut d, &window(&mut rng, seq, 1000, 1.0, 0.0)).is_empty());
    }
    // Moved against the reference, and its median stepped further than ever.
    let f = findings(&mut d, &window(&mut rng, quiet, 1000, 1.8, 0.0));
    assert_eq!(f, [("psi".into(), "amount".into(), Severity::Warning), ("median_step".into(), "amount".into(), Severity::Critical)]);
    let out = d.analyze(&window(&mut rng, quiet + 1, 1000, 1.0, 0.2)).unwrap();
    assert_eq!(out.findings.len(), 1, "{:?}", out.findings);
    assert_eq!(out.findings[0].column.as_deref(), Some("country"));
    assert!(out.findings[0].message.contains("(other values) 2"), "{}", out.findings[0].message);
    // A subtle shift (5% larger) stays under the thresholds.
    assert!(findings(&mut d, &window(&mut rng, quiet + 2, 1000, 1.05, 0.0)).is_empty());
}

/// A drift that lasts is a new normal: after `NEW_NORMAL_AFTER` windows the
/// reference is the drifted data, and the column is quiet again; a slow
/// change is followed by the trailing reference and never alerts.
#[test]
fn references_follow_legitimate_change() {
    let mut rng = Rng(6);
    let mut d = drift("");
    let quiet = REFERENCE + JUDGE_AFTER as u64;
    for seq in 0..quiet {
        d.analyze(&window(&mut rng, seq, 1000, 1.0, 0.0)).unwrap();
    }
    let drifted: Vec<bool> = (quiet..quiet + 20).map(|seq| !findings(&mut d, &window(&mut rng, seq, 1000, 2.5, 0.0)).is_empty()).collect();
    let alerts = drifted.iter().filter(|&&x| x).count();
    assert!(drifted[0] && alerts <= NEW_NORMAL_AFTER as usize && !drifted[10..].iter().any(|&x| x), "{drifted:?}");
    // A second, larger drift is caught (its median steps further than ever;
    // PSI's usual level took in the first drift's windows).
    for seq in quiet + 20..quiet + 20 + JUDGE_AFTER as u64 {
        assert!(findings(&mut d, &window(&mut rng, seq, 1000, 2.5, 0.0)).is_empty(), "window {seq}");
    }
    let second = findings(&mut d, &window(&mut rng, quiet + 20 + JUDGE_AFTER as u64, 1000, 6.0, 0.0));
    assert!(second.iter().any(|(_, c, _)| c == "amount"), "{second:?}");
    // A slow creep: 1% larger every window, 100 windows.
    let mut d = drift("");
    let mut scale = 1.0;
    for seq in 0..quiet + 100 {
        scale *= if seq >= quiet { 1.01 } else { 1.0 };
        assert!(findings(&mut d, &window(&mut rng, seq, 1000, scale, 0.0)).is_empty(), "window {seq} at {scale:.2}");
    }
}

#[test]
fn a_pinned_reference_judges_from_the_first_window() {
    // Quantiles of U(0, 100) and a fixed country mix.
    let grid: Vec<String> = (0..=10).map(|i| (i * 10).to_string()).collect();
    let config = format!(r#"{{"reference": {{"score": {{"quantiles": [{}]}}, "country": {{"frequencies": {{"DE": 0.5, "FR": 0.5}}}}}}}}"#, grid.join(","));
    let mut d = drift(&config);
    let mut rng = Rng(3);
    let uniform: Vec<Option<f64>> = (0..500).map(|_| Some(rng.uniform() * 100.0)).collect();
    let low: Vec<Option<f64>> = (0..500).map(|_| Some(rng.uniform() * 50.0)).collect();
    let mix: Vec<Option<&str>> = (0..500).map(|i| Some(if i % 2 == 0 { "DE" } else { "FR" })).collect();
    let only_de: Vec<Option<&str>> = (0..500).map(|_| Some("DE")).collect();
    let ok = BatchBuilder::new(0).float("score", &uniform).text("country", &mix).build();
    assert!(findings(&mut d, &ok).is_empty());
    let moved = BatchBuilder::new(1).float("score", &low).text("country", &only_de).build();
    let f = findings(&mut d, &moved);
    assert_eq!(f.iter().map(|f| f.1.as_str()).collect::<Vec<_>>(), ["score", "country"], "{f:?}");
}

#[test]
fn state_carries_the_reference_and_a_half_learned_sketch() {
    let mut rng = Rng(4);
    let mut d = drift(r#"{"reference_windows": 4}"#);
    for seq in 0..2 {
        d.analyze(&window(&mut rng, seq, 1000, 1.0, 0.0)).unwrap();
    }
    let mut restored = drift(r#"{"reference_windows": 4}"#);
    restored.restore(&d.snapshot()).unwrap();
    let quiet = 4 + JUDGE_AFTER as u64;
    for seq in 2..quiet {
        let b = window(&mut rng, seq, 1000, 1.0, 0.0);
        d.analyze(&b).unwrap();
        restored.analyze(&b).unwrap();
    }
    let saved = restored.snapshot();
    let shifted = window(&mut rng, quiet, 1000, 1.8, 0.0);
    let found = findings(&mut restored, &shifted);
    assert_eq!(findings(&mut d, &shifted), found);
    assert_eq!(found[0].1, "amount");
    let mut again = drift(r#"{"reference_windows": 4}"#);
    again.restore(&saved).unwrap();
    assert_eq!(findings(&mut again, &shifted), found);
    // State it cannot read (another version's) is said and dropped: it learns anew.
    let mut cold = drift(r#"{"reference_windows": 4}"#);
    assert!(cold.restore(b"{not json").is_ok());
    assert!(findings(&mut cold, &shifted).is_empty());
}

#[test]
fn resumes_from_its_snapshot_exactly() {
    let windows = clean_host_sdk::testing::realistic_windows(11, 60, 1000);
    clean_host_sdk::testing::assert_restore_equivalent::<Drift>("{}", &windows, [1, 5, 9, 10, 17, 29, 31, 44, 58]);
    // A reference that fills its sample and thins it on the way.
    clean_host_sdk::testing::assert_restore_equivalent::<Drift>(r#"{"reference_values": 300, "reference_windows": 3}"#, &windows, [2, 3, 7, 40]);
}

#[test]
fn reads_all_it_analyses() {
    let windows = clean_host_sdk::testing::realistic_windows(11, 60, 1000);
    clean_host_sdk::testing::assert_reads_suffice::<Drift>("{}", &windows);
    clean_host_sdk::testing::assert_reads_suffice::<Drift>(r#"{"columns": ["amount", "country", "paid", "shipped_at"]}"#, &windows);
}

#[test]
fn memory_stays_bounded_however_many_rows_the_reference_spans() {
    let mut rng = Rng(5);
    let mut d = drift(r#"{"reference_windows": 200}"#);
    let mut learning = Vec::new();
    for seq in 0..200 {
        d.analyze(&window(&mut rng, seq, 1000, 1.0, 0.0)).unwrap();
        if seq == 198 {
            learning = d.memory();
        }
    }
    let amount = learning.iter().find(|m| m.column == "amount").unwrap();
    // 199,000 rows, 49,750 of them offered, in at most 4096 values kept.
    assert!(amount.bytes <= 4096 * 8, "{amount:?}");
    // Frozen: a grid per column, and the next reference's sketch, as bounded.
    let frozen = d.memory();
    assert!(frozen.iter().any(|m| m.phase == "reference"));
    assert!(frozen.iter().all(|m| m.bytes <= (if m.phase == "reference" { GRID_POINTS * 8 } else { 64 * 1024 })), "{frozen:?}");
}

#[test]
fn bad_config_is_refused_with_the_reason() {
    let mut d = Drift::default();
    assert!(d.configure(r#"{"bins": 1}"#).unwrap_err().contains("bins"));
    assert!(d.configure(r#"{"reference_values": 10}"#).unwrap_err().contains("reference_values >= 202"));
    assert!(d.configure(r#"{"alpha": 2}"#).unwrap_err().contains("alpha"));
    assert!(d.configure(r#"{"reference": {"x": {"quantiles": [3, 1]}}}"#).unwrap_err().contains("ascending"));
    assert!(d.configure(r#"{"reference": {"x": {}}}"#).unwrap_err().contains("exactly one"));
    assert!(d.configure(r#"{"reference": {"x": {"frequencies": {"a": 0.9, "b": 0.3}}}}"#).unwrap_err().contains("at most 1"));
    assert!(d.configure(r#"{"bogus": 1}"#).unwrap_err().contains("unknown field"));
}

/// The reference takes a window's values at evenly spaced ranks, so it holds
/// the pooled windows' distribution closer than as many random rows would.
#[test]
fn a_learned_reference_holds_the_windows_quantiles() {
    let mut rng = Rng(6);
    let mut d = drift("");
    let mut all = Vec::new();
    for seq in 0..REFERENCE {
        let amounts: Vec<f64> = (0..1000).map(|_| (3.2 + 0.9 * rng.normal()).exp()).collect();
        all.extend_from_slice(&amounts);
        let values: Vec<Option<f64>> = amounts.into_iter().map(Some).collect();
        d.analyze(&BatchBuilder::new(seq).float("amount", &values).build()).unwrap();
    }
    let Some(Reference::Numeric { grid, rows }) = d.reference.get("amount") else {
        panic!("no numeric reference after {REFERENCE} windows");
    };
    assert_eq!(*rows, 2500, "250 values a window");
    let n = all.len() as f64;
    for (i, &x) in grid.grid.iter().enumerate().skip(1).take(99) {
        // The pooled share at or below each grid point, against its rank
        // (a random 2500 of the rows would miss by 0.01 at the median).
        let share = all.iter().filter(|&&v| v <= x).count() as f64 / n;
        assert!((share - i as f64 / 100.0).abs() <= 0.003, "grid point {i}: {share}");
    }
}

#[test]
fn booleans_are_tallied_in_the_order_they_first_appear() {
    let mut rng = Rng(17);
    for rows in [0usize, 1, 2, 7, 999, 1000, 1001, 2600] {
        for true_share in [0.0, 0.1, 0.5, 1.0] {
            // Random values after a true, a false and a true: either value first.
            let start = [true, false, true].into_iter().skip(usize::from(true_share < 0.5));
            let values: Vec<bool> = start.chain((0..rows).map(|_| rng.uniform() < true_share)).take(rows).collect();
            let step = rows.div_ceil(CATEGORIES_PER_WINDOW).max(1);
            // By definition: each value where it first appears, its rows, and
            // its rows among every step-th.
            let mut want: Vec<(&[u8], u64, u64)> = Vec::new();
            for (i, &v) in values.iter().enumerate() {
                let text: &[u8] = if v { b"true" } else { b"false" };
                if !want.iter().any(|c| c.0 == text) {
                    want.push((text, 0, 0));
                }
                let c = want.iter_mut().find(|c| c.0 == text).expect("pushed");
                c.1 += 1;
                c.2 += u64::from(i % step == 0);
            }
            let tally = Tally::of_booleans(&values);
            assert_eq!(tally.counts, want, "{rows} rows, {true_share} true");
            // The same values with nulls among them (at the start too): the present ones tallied.
            let with_nulls: Vec<Option<bool>> = values.iter().flat_map(|&v| [None, Some(v)]).collect();
            let batch = BatchBuilder::new(0).boolean("b", &with_nulls).build();
            let Some(Values::Categories(tally)) = super::values(&batch, 0, None) else { panic!("a boolean column is categories") };
            assert_eq!((tally.counts, tally.rows), (want, rows), "{rows} rows among nulls, {true_share} true");
        }
    }
}
