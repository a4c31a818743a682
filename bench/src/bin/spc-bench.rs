//! How well each control rule separates real departures from noise, on
//! generated rate series with known answers (clean_host_quality::spc::scenarios):
//! false alarms per 1,000 clean windows, and detection delay (windows from
//! the onset of a change to the rule's first signal).
//!
//! `spc-bench [SEEDS]` prints Markdown tables.

use clean_host_quality::spc::scenarios::{Scenario, Shape};
use clean_host_quality::spc::{Rule, Series, SpcConfig};

/// A 2% rate over 1000-row windows, 100 warm-up windows (the default).
fn scenario(after: u32, shape: Shape) -> Scenario {
    Scenario { rate: 0.02, rows: 1000, warmup: 100, after, shape }
}

/// Windows after warm-up at which `rule` alone signals on one drawn series.
fn signals(rule: Rule, s: &Scenario, seed: u64) -> Vec<u32> {
    let mut config = SpcConfig::default();
    config.defaults.rules = Some(vec![rule]);
    let mut series = Series::new(config.params("null_rate").expect("enabled"));
    let values = s.draw(seed);
    values.iter().enumerate().filter(|(_, &v)| !series.observe(v).is_empty()).map(|(i, _)| i as u32 - s.warmup).collect()
}

fn median(mut v: Vec<u32>) -> Option<u32> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

fn main() {
    let seeds: u64 = std::env::args().nth(1).map(|s| s.parse().expect("SEEDS is a number")).unwrap_or(200);
    let defaults = SpcConfig::default().params("null_rate").expect("watched by default");
    println!(
        "Rate series: 2% over 1000-row windows (binomial sigma 0.0044), {} warm-up windows; {seeds} seeds per cell. \
         Defaults: EWMA lambda {}, limit {}; CUSUM k {}, h {}.\n",
        defaults.warmup_windows, defaults.ewma_lambda, defaults.ewma_limit, defaults.cusum_k, defaults.cusum_h
    );
    println!("| rule | false alarms per 1,000 clean windows | delay: step +1 sigma | step +2 sigma | step +3 sigma | ramp to +2 sigma over 50 windows | missed (ramp) |");
    println!("|---|---|---|---|---|---|---|");
    let shapes = [Shape::Step { sigmas: 1.0 }, Shape::Step { sigmas: 2.0 }, Shape::Step { sigmas: 3.0 }, Shape::Ramp { sigmas: 2.0, windows: 50 }];
    for rule in Rule::ALL {
        let clean = scenario(1000, Shape::Stationary);
        let alarms: usize = (0..seeds).map(|seed| signals(rule, &clean, seed).len()).sum();
        let mut row = format!("| `{}` | {:.2} |", rule.as_str(), alarms as f64 / seeds as f64);
        let mut missed = 0;
        for shape in shapes {
            let s = scenario(200, shape);
            let delays: Vec<u32> = (0..seeds).filter_map(|seed| signals(rule, &s, 1_000_000 + seed).first().copied()).collect();
            missed = seeds as usize - delays.len();
            row += &match median(delays) {
                Some(d) => format!(" {d} |"),
                None => " never |".into(),
            };
        }
        println!("{row} {missed} of {seeds} |");
    }
}
