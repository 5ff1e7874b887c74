//! Per-partition offset tracking: which position may be committed.
//!
//! Guarantee: [`Watermark::committable`] never passes an unfinished event.
//! Events may finish in any order; the committable position only moves over
//! a contiguous run of finished events, in the order they were received.
//! Offsets need not be contiguous (Kafka leaves gaps), only increasing.
//!
//! The tracker holds one 16-byte entry per event from the first unfinished
//! one to the last received; the engine counts that span against the
//! partition's in-flight bound, so a stuck event at the front pauses the
//! partition instead of letting the tracker grow without limit.

use std::collections::VecDeque;

/// Offset tracker of one partition.
#[derive(Debug, Default)]
pub struct Watermark {
    /// Received events from the first unfinished one on.
    pending: VecDeque<Entry>,
    /// The last offset received, if any.
    last_received: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: u64,
    finished: bool,
    /// Event time, ms since the epoch (`i64::MIN` when unknown).
    timestamp_ms: i64,
}

/// Why an offset could not be tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WatermarkError {
    /// The source returned an offset not above the previous one.
    #[error("offset {offset} arrived after {previous}: sources must hand out increasing offsets per partition")]
    NotIncreasing {
        /// The offending offset.
        offset: u64,
        /// The last offset received before it.
        previous: u64,
    },
}

impl Watermark {
    /// A tracker with nothing received.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `offset` (with its event time, if known) was received
    /// and is not finished.
    pub fn receive(
        &mut self,
        offset: u64,
        timestamp_ms: Option<i64>,
    ) -> Result<(), WatermarkError> {
        if let Some(previous) = self.last_received {
            if offset <= previous {
                return Err(WatermarkError::NotIncreasing { offset, previous });
            }
        }
        self.last_received = Some(offset);
        self.pending.push_back(Entry {
            offset,
            finished: false,
            timestamp_ms: timestamp_ms.unwrap_or(i64::MIN),
        });
        Ok(())
    }

    /// Records that `offset` is finished. Returns false if it was not being
    /// tracked (already finished, or never received).
    pub fn finish(&mut self, offset: u64) -> bool {
        let Ok(index) = self.pending.binary_search_by_key(&offset, |e| e.offset) else {
            return false;
        };
        let entry = &mut self.pending[index];
        if entry.finished {
            return false;
        }
        entry.finished = true;
        while self.pending.front().is_some_and(|e| e.finished) {
            self.pending.pop_front();
        }
        true
    }

    /// The position that may be committed: every offset below it is
    /// finished. `None` before anything was received.
    pub fn committable(&self) -> Option<u64> {
        match self.pending.front() {
            Some(entry) => Some(entry.offset),
            None => self.last_received.map(|o| o + 1),
        }
    }

    /// The position just after the last received event (what `at_most_once`
    /// commits on receipt).
    pub fn received_position(&self) -> Option<u64> {
        self.last_received.map(|o| o + 1)
    }

    /// Event time of the oldest unfinished event, if it had one.
    pub fn oldest_unfinished_timestamp_ms(&self) -> Option<i64> {
        self.pending
            .front()
            .map(|e| e.timestamp_ms)
            .filter(|t| *t != i64::MIN)
    }

    /// Events from the first unfinished one to the last received.
    pub fn span(&self) -> usize {
        self.pending.len()
    }

    /// True when every received event is finished.
    pub fn is_settled(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commit_stops_at_the_first_unfinished_event() {
        let mut w = Watermark::new();
        assert_eq!(w.committable(), None);
        for o in [10, 11, 13, 20] {
            w.receive(o, None).unwrap();
        }
        assert_eq!(w.committable(), Some(10));
        assert!(w.finish(13));
        assert!(w.finish(20));
        assert_eq!(
            w.committable(),
            Some(10),
            "later events finished first must not move it"
        );
        assert!(w.finish(10));
        assert_eq!(w.committable(), Some(11));
        assert!(w.finish(11));
        assert_eq!(w.committable(), Some(21));
        assert!(w.is_settled());
        assert!(!w.finish(11), "finishing twice is refused");
    }

    #[test]
    fn offsets_must_increase() {
        let mut w = Watermark::new();
        w.receive(5, None).unwrap();
        assert_eq!(
            w.receive(5, None),
            Err(WatermarkError::NotIncreasing {
                offset: 5,
                previous: 5
            })
        );
    }

    proptest! {
        /// Whatever the completion order, the committable position is the
        /// first unfinished offset (or one past the last when all are done),
        /// and it never moves backwards.
        #[test]
        fn never_skips_an_unfinished_event(
            gaps in proptest::collection::vec(1u64..4, 1..200),
            order_seed in any::<u64>(),
        ) {
            let mut offsets = Vec::new();
            let mut next = 0;
            for g in gaps {
                next += g;
                offsets.push(next);
            }
            let mut w = Watermark::new();
            for o in &offsets {
                w.receive(*o, Some(*o as i64)).unwrap();
            }
            // A deterministic shuffle from the seed.
            let mut order: Vec<usize> = (0..offsets.len()).collect();
            let mut state = order_seed | 1;
            for i in (1..order.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                order.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let mut finished = vec![false; offsets.len()];
            let mut last = w.committable().unwrap();
            for i in order {
                prop_assert!(w.finish(offsets[i]));
                finished[i] = true;
                let position = w.committable().unwrap();
                let expected = finished
                    .iter()
                    .position(|f| !f)
                    .map_or(offsets[offsets.len() - 1] + 1, |j| offsets[j]);
                prop_assert_eq!(position, expected);
                prop_assert!(position >= last);
                last = position;
            }
            prop_assert!(w.is_settled());
        }
    }
}
