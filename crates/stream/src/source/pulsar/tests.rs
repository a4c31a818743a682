use super::*;

fn id(partition: Option<i32>, ledger_id: u64, entry_id: u64) -> MessageIdData {
    MessageIdData { ledger_id, entry_id, partition, ..Default::default() }
}

/// Every message written before the question is at or before its
/// partition's place, every one written after is past it; a new empty
/// ledger (entry -1) leaves its predecessors' messages before the place.
#[test]
fn the_last_place_is_after_every_message_written_and_before_any_later() {
    let ends = last_places(&[id(Some(0), 23, 41), id(Some(1), 23, u64::MAX), id(Some(2), u64::MAX, u64::MAX), id(Some(3), 0, u64::MAX)]);
    assert_eq!(ends.get(&0), Some(&(23, 41)));
    let new_ledger = ends[&1];
    assert!((22, u64::MAX - 1) < new_ledger, "messages of earlier ledgers are before it");
    assert!((23, 0) > new_ledger, "the new ledger's first is after it");
    assert_eq!((ends.get(&2), ends.get(&3)), (None, None), "no ledger: no message");
    assert_eq!(last_places(&[id(None, 5, 3)]), HashMap::from([(0, (5, 3))]), "an unpartitioned topic is partition 0");
}

mod order {
    use std::time::{Duration, Instant};

    use super::super::order::{PartitionOrder, Verdict, ASK_AGAIN_AFTER};

    /// Judges each of `places` (ledger 82, entry, index in a batch of `size`; -1: none) received at `now`.
    fn judge(order: &mut PartitionOrder, places: &[(u64, i32)], size: i32, now: Instant) -> Vec<Verdict> {
        places.iter().map(|&(entry, index)| order.judge((82, entry, index), index < 0 || index + 1 == size, now)).collect()
    }

    fn early(ask: bool) -> Verdict {
        Verdict::Early { ask }
    }

    /// As a 4.0 broker did when a killed consumer's partition moved here:
    /// entries past those the killed one had read come first, then the
    /// broker goes back to the first unacked one.
    #[test]
    fn a_partition_that_moves_here_past_a_gap_is_handed_on_from_the_checkpoint_none_left_out() {
        let now = Instant::now();
        let mut order = PartitionOrder::default();
        order.resume_after((82, 455, 0));
        assert_eq!(judge(&mut order, &[(464, 0), (464, 1), (465, 0)], 2, now), [early(true), early(false), early(false)]);
        // The broker goes back: the checkpoint's own message is sent again, the rest of its entry is next.
        assert_eq!(judge(&mut order, &[(455, 0), (455, 1), (456, 0), (456, 1)], 2, now), [Verdict::Again, Verdict::Next, Verdict::Next, Verdict::Next]);
        let rest: Vec<(u64, i32)> = (457..=465).flat_map(|e| [(e, 0), (e, 1)]).collect();
        assert!(judge(&mut order, &rest, 2, now).iter().all(|v| *v == Verdict::Next));
        // Going back again (the broker's own, a second after the move) sends only what was handed on.
        assert!(judge(&mut order, &[(455, 1), (456, 0), (465, 1)], 2, now).iter().all(|v| *v == Verdict::Again));
        assert_eq!(judge(&mut order, &[(466, 0)], 2, now), [Verdict::Next]);
    }

    #[test]
    fn only_the_next_message_of_a_ledger_follows_without_the_broker_going_back() {
        let now = Instant::now();
        // Unbatched: the next entry follows, one further does not.
        let mut order = PartitionOrder::default();
        order.resume_after((82, 5, -1));
        assert_eq!(judge(&mut order, &[(6, -1), (8, -1)], 1, now), [Verdict::Next, early(true)]);
        // In a batch of 3 whose size the checkpoint does not say: only the next in it follows,
        // until the broker, gone back, says nothing is between.
        let mut order = PartitionOrder::default();
        order.resume_after((82, 5, 2));
        assert_eq!(judge(&mut order, &[(6, 0)], 3, now), [early(true)]);
        assert_eq!(
            judge(&mut order, &[(6, 0), (6, 1), (6, 2), (7, 0), (7, 2)], 3, now),
            [Verdict::Next, Verdict::Next, Verdict::Next, Verdict::Next, early(true)]
        );
        // A new ledger's first message: the end of the last ledger is not known.
        let mut order = PartitionOrder::default();
        order.resume_after((82, 9, -1));
        assert_eq!(order.judge((83, 0, -1), true, now), early(true));
        assert_eq!(order.judge((83, 0, -1), true, now), Verdict::Next, "gone back to it: nothing between");
    }

    /// With no checkpoint, the first message could be past a gap as well:
    /// what the broker sends once gone back is the partition's start.
    #[test]
    fn a_partition_without_a_checkpoint_starts_where_the_broker_goes_back_to() {
        let now = Instant::now();
        let mut order = PartitionOrder::default();
        assert_eq!(judge(&mut order, &[(40, -1), (41, -1)], 1, now), [early(true), early(false)]);
        let from_start: Vec<(u64, i32)> = (30..=41).map(|e| (e, -1)).collect();
        assert!(judge(&mut order, &from_start, 1, now).iter().all(|v| *v == Verdict::Next));
    }

    /// The broker ignores the request for a second after a partition moves
    /// and may lose its own going back: it is asked again, less often each
    /// time, until it goes back.
    #[test]
    fn the_broker_is_asked_again_until_it_goes_back() {
        let now = Instant::now();
        let mut order = PartitionOrder::default();
        order.resume_after((82, 1, -1));
        assert!(!order.ask_due(now), "nothing asked yet");
        assert_eq!(order.judge((82, 5, -1), true, now), early(true));
        assert_eq!(order.waiting_from(), Some((82, 5, -1)));
        let later = now + ASK_AGAIN_AFTER;
        assert!(!order.ask_due(later - Duration::from_millis(1)));
        assert!(order.ask_due(later));
        assert!(!order.ask_due(later), "asked just now");
        assert_eq!(order.judge((82, 6, -1), true, later + ASK_AGAIN_AFTER), early(false), "twice as long this time");
        assert_eq!(order.judge((82, 7, -1), true, later + ASK_AGAIN_AFTER * 2), early(true));
        assert_eq!(order.judge((82, 2, -1), true, later + ASK_AGAIN_AFTER * 2), Verdict::Next);
        assert!(!order.ask_due(later + ASK_AGAIN_AFTER * 10) && order.waiting_from().is_none(), "gone back: nothing to ask");
    }

    /// Gone back, the broker must send the first message dropped again (it
    /// is unacked): one further on was sent from elsewhere (a read in
    /// flight, another move), so it is past a gap too.
    #[test]
    fn gone_back_only_what_comes_up_to_the_first_dropped_is_next() {
        let now = Instant::now();
        let mut order = PartitionOrder::default();
        order.resume_after((82, 1, -1));
        assert_eq!(judge(&mut order, &[(5, -1), (6, -1)], 1, now), [early(true), early(false)]);
        assert_eq!(judge(&mut order, &[(1, -1), (9, -1)], 1, now), [Verdict::Again, early(true)]);
        assert_eq!(order.waiting_from(), Some((82, 5, -1)), "the first dropped is still the one to come");
        assert_eq!(judge(&mut order, &[(1, -1), (2, -1), (3, -1)], 1, now), [Verdict::Again, Verdict::Next, Verdict::Next]);
    }
}
