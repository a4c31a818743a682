//! One partition's messages handed on in order, none left out, when one
//! reader has the partition (exclusive and failover subscriptions).
//!
//! The broker sends a partition in order, but when it moves to this
//! consumer (its reader stopped) or this consumer reconnects, it may first
//! send on from where it had read, and only then go back to the first
//! message not acked. Handing on the first of those would number records
//! past messages still to come, and skipping those as sent again would lose
//! them. So a message is handed on only when it is known to follow the last
//! one (the next in its entry, or the first of the next entry of its
//! ledger); past a gap, it is dropped unacked and the broker is asked to
//! send the partition again from its first unacked message, until it does
//! (a 4.0 broker ignores the request for a second after a partition moves,
//! and may lose its own going back). Once it has gone back, the first
//! message past the last one is next: the broker holds nothing between.
//! Where that is not known (a partition without a checkpoint, a new
//! ledger, whose predecessor's end is not known) the broker goes back too.

use std::time::{Duration, Instant};

use super::Place;

/// How long a request to send a partition again may take to show before it
/// is made again; twice as long each time after, up to [`ASK_AT_MOST_EVERY`].
pub(super) const ASK_AGAIN_AFTER: Duration = Duration::from_secs(2);
const ASK_AT_MOST_EVERY: Duration = Duration::from_secs(32);

/// What to do with a message of the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// It follows the last one: hand it on.
    Next,
    /// At or before the last one handed on (or analysed before the
    /// checkpoint it carries on from): sent again.
    Again,
    /// Past a gap: dropped, unacked. `ask`: ask the broker to send the
    /// partition again from its first unacked message (and again whenever
    /// [`PartitionOrder::ask_due`] says so).
    Early { ask: bool },
}

/// Where a partition's messages are: the last handed on, the last received,
/// and the gap waited on.
#[derive(Default)]
pub(super) struct PartitionOrder {
    /// The last message handed on, or analysed before the checkpoint.
    last: Option<Place>,
    /// Whether `last` is known to end its entry.
    last_ends_entry: bool,
    /// The last message received.
    seen: Option<Place>,
    /// The gap waited on, while there is one.
    gap: Option<Gap>,
}

struct Gap {
    /// The first message dropped: unacked, so the broker, gone back, sends it again.
    first_dropped: Place,
    /// When the broker was last asked to go back, and how long until it is asked again.
    asked: Instant,
    ask_every: Duration,
    /// The broker went back since: the first message past the last, at or
    /// before `first_dropped`, is next.
    gone_back: bool,
}

impl PartitionOrder {
    /// Carry on after `after`, the last message analysed before a checkpoint.
    pub(super) fn resume_after(&mut self, after: Place) {
        self.last = Some(after);
        // Not in a batch, it is its entry; in one, its size is not known.
        self.last_ends_entry = after.2 < 0;
    }

    /// Judge `place`, which ends its entry or not, received `now`.
    pub(super) fn judge(&mut self, place: Place, ends_entry: bool, now: Instant) -> Verdict {
        // The broker sends a partition in order: one at or before the last received goes back.
        let went_back = self.seen.replace(place).is_some_and(|seen| place <= seen);
        if let Some(gap) = &mut self.gap {
            gap.gone_back |= went_back;
            if !gap.gone_back {
                return Verdict::Early { ask: self.ask_due(now) };
            }
        }
        if self.last.is_some_and(|last| place <= last) {
            return Verdict::Again;
        }
        let follows = match &self.gap {
            Some(gap) => place <= gap.first_dropped,
            None => self.last.is_some_and(|last| follows(last, self.last_ends_entry, place)),
        };
        if follows {
            (self.last, self.last_ends_entry, self.gap) = (Some(place), ends_entry, None);
            return Verdict::Next;
        }
        match &mut self.gap {
            // Gone back, yet past the first dropped: sent on from elsewhere again.
            Some(gap) => {
                (gap.asked, gap.ask_every, gap.gone_back) = (now, ASK_AGAIN_AFTER, false);
            }
            None => self.gap = Some(Gap { first_dropped: place, asked: now, ask_every: ASK_AGAIN_AFTER, gone_back: false }),
        }
        Verdict::Early { ask: true }
    }

    /// Whether the broker, asked to go back, has not for its while and is
    /// to be asked again `now`.
    pub(super) fn ask_due(&mut self, now: Instant) -> bool {
        let Some(gap) = self.gap.as_mut().filter(|g| !g.gone_back && now.saturating_duration_since(g.asked) >= g.ask_every) else { return false };
        (gap.asked, gap.ask_every) = (now, (gap.ask_every * 2).min(ASK_AT_MOST_EVERY));
        true
    }

    /// The first message dropped past the gap waited on, if there is one.
    pub(super) fn waiting_from(&self) -> Option<Place> {
        self.gap.as_ref().map(|g| g.first_dropped)
    }
}

/// Whether `next` is the message right after `last` in its ledger.
fn follows((ledger, entry, index): Place, last_ends_entry: bool, (next_ledger, next_entry, next_index): Place) -> bool {
    match last_ends_entry {
        true => next_ledger == ledger && next_entry == entry + 1 && next_index <= 0,
        false => next_ledger == ledger && next_entry == entry && next_index == index + 1,
    }
}
