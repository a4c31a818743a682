use super::Unacked;

#[test]
fn a_burst_of_entries_is_kept_as_one_run() {
    let mut unacked = Unacked::default();
    (0..10_000).for_each(|i| unacked.push(i, (1_700_000_000_000, i)));
    assert_eq!(unacked.0.len(), 1);
    let listed = unacked.first(5_000, 1000);
    let ids = listed.ids();
    assert_eq!((ids.len(), ids[0], ids[999]), (1000, "1700000000000-0", "1700000000000-999"));
    unacked.forget(1000);
    assert_eq!(unacked.first(5_000, 1000).ids()[0], "1700000000000-1000");
}

#[test]
fn ids_that_do_not_follow_on_start_a_run_and_acks_stop_below_the_cut() {
    let mut unacked = Unacked::default();
    // Another consumer of the group took seq 2; the next millisecond starts at 0.
    for (offset, id) in [(0, (5, 0)), (1, (5, 1)), (2, (5, 3)), (3, (6, 0)), (4, (6, 1))] {
        unacked.push(offset, id);
    }
    assert_eq!(unacked.0.len(), 3);
    assert_eq!(unacked.first(4, 10).ids(), ["5-0", "5-1", "5-3", "6-0"], "below offset 4 only");
    assert_eq!(unacked.first(4, 2).ids(), ["5-0", "5-1"]);
    unacked.forget(3);
    assert_eq!(unacked.first(u64::MAX, 10).ids(), ["6-0", "6-1"]);
    unacked.forget(2);
    assert!(unacked.first(u64::MAX, 10).ids().is_empty() && unacked.0.is_empty());
}

#[test]
fn a_run_may_end_at_the_last_seq() {
    let mut unacked = Unacked::default();
    unacked.push(0, (5, u64::MAX - 1));
    unacked.push(1, (5, u64::MAX));
    unacked.push(2, (6, 0));
    assert_eq!(unacked.first(u64::MAX, 10).ids(), [format!("5-{}", u64::MAX - 1), format!("5-{}", u64::MAX), "6-0".to_string()]);
    unacked.forget(2);
    assert_eq!(unacked.first(u64::MAX, 10).ids(), ["6-0"]);
}
