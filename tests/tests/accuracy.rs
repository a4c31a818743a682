//! The accuracy harness's regression run (issue 15): on a real dataset (the
//! wireless sensor network, fetched from npm by bench/accuracy/datasets.py),
//! a fixed set of injected faults (placed by seed 7) must be caught, 95% of
//! them and every kind within two windows of its start; the labelled real
//! incidents must alert; its clean windows must stay within the budget of 2%
//! alerting; and the generator's clean data must raise no alert whatever its
//! field names and time representation.

use std::process::Command;

use clean_host_tests::{binary, root};

#[test]
fn a_real_dataset_keeps_its_budgets() {
    binary();
    let out = Command::new("python3")
        .arg(root().join("bench/accuracy/run.py"))
        .args(["--datasets", "sensors", "--placements", "0", "--check", "--out", "/dev/null"])
        .current_dir(root())
        .output()
        .expect("run python3 bench/accuracy/run.py");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the accuracy run failed (a MISS line is a budget missed):\n{stderr}");
    let verdicts: Vec<&str> = stderr.lines().filter(|l| l.starts_with("ok ") || l.starts_with("MISS")).collect();
    assert!(verdicts.iter().any(|l| l.contains("injected faults")) && verdicts.iter().any(|l| l.contains("generator")), "{stderr}");
}
