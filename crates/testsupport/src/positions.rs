//! Commit positions as the connectors' tests write them: from
//! `(partition, next_offset)` pairs, or just past a batch of events.
//!
//! Guarantees: the positions come out in the order given ([`at`]) or by
//! partition ([`after`]), one per partition.

use std::collections::BTreeMap;

use spate_connector::{CommitPosition, Event};

/// One position per `(partition, next_offset)` pair, in order.
pub fn at(pairs: &[(u32, u64)]) -> Vec<CommitPosition> {
    pairs
        .iter()
        .map(|&(partition, next_offset)| CommitPosition {
            partition,
            next_offset,
        })
        .collect()
}

/// For each partition of `events`, the position just past its highest
/// offset: everything read is finished.
pub fn after(events: &[Event]) -> Vec<CommitPosition> {
    let mut next: BTreeMap<u32, u64> = BTreeMap::new();
    for e in events {
        let slot = next.entry(e.position.partition).or_default();
        *slot = (*slot).max(e.position.offset + 1);
    }
    next.into_iter()
        .map(|(partition, next_offset)| CommitPosition {
            partition,
            next_offset,
        })
        .collect()
}
