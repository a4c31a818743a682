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
