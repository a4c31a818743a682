//! How much memory the drift detector's references take per column as
//! they span more rows: bounded, whatever the row count.
//!
//! `cargo run --release --example reference-memory --target x86_64-unknown-linux-gnu`
//! (from plugins/) prints a Markdown table.

use clean_host_sdk::testing::{BatchBuilder, Rng};
use clean_host_sdk::Detector;
use drift::Drift;

const COUNTRIES: [&str; 12] = ["US", "DE", "GB", "FR", "IN", "BR", "JP", "CA", "NL", "SE", "NZ", "IS"];

fn main() {
    println!(
        "| reference rows | column | kind | sample or sketch while learning (bytes) | frozen reference (bytes) | state snapshot, whole detector (bytes) |"
    );
    println!("|---:|---|---|---:|---:|---:|");
    for windows in [10u32, 100, 1000] {
        let mut d = Drift::default();
        d.configure(&format!(r#"{{"reference_windows": {windows}}}"#)).expect("valid config");
        let mut rng = Rng(u64::from(windows));
        let mut learning = Vec::new();
        for seq in 0..windows {
            let amount: Vec<Option<f64>> = (0..1000).map(|_| Some((3.2 + 0.9 * rng.normal()).exp())).collect();
            let items: Vec<Option<i64>> = (0..1000).map(|_| Some(1 + (rng.uniform() * 6.0) as i64)).collect();
            let country: Vec<Option<&str>> = (0..1000).map(|_| Some(COUNTRIES[(rng.uniform() * rng.uniform() * 12.0) as usize])).collect();
            let batch = BatchBuilder::new(u64::from(seq)).float("amount", &amount).int("items", &items).text("country", &country).build();
            if seq + 1 == windows {
                // Just before the last window freezes the reference.
                learning = d.memory();
            }
            d.analyze(&batch).expect("analysis");
        }
        let frozen = d.memory();
        let snapshot = d.snapshot().len();
        for (column, kind) in [("amount", "float, continuous"), ("items", "integer, 6 values"), ("country", "text, 12 values")] {
            let bytes = |m: &[drift::ColumnMemory]| m.iter().find(|c| c.column == column).map_or(0, |c| c.bytes);
            println!("| {} | {column} | {kind} | {} | {} | {snapshot} |", u64::from(windows) * 1000, bytes(&learning), bytes(&frozen));
        }
    }
}
