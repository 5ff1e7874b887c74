//! The exactly-once ack ledger: the ack subjects of the input messages a
//! JetStream source handed out under `delivery: exactly_once`, shared by the
//! source (which files them as it hands messages out, and marks the ones the
//! engine dead-lettered) and its exactly-once session (whose commit, running
//! off the engine's scheduler, double-acks the ones the committed positions
//! cover).
//!
//! Guarantees: a message is double-acked only by a commit whose positions
//! cover it, and only after every publish of that commit was acknowledged
//! (the session double-acks last); the commit succeeds
//! only once the server confirmed every one of those acks, and a message
//! whose ack failed stays in the ledger for the next commit. The acks of one
//! commit go out together, each a request on the client's shared reply
//! subscription (no subscription per ack). Entries of a partition the source
//! restarts, hands back or drops are forgotten with it, so a message handed
//! back is never acked from here.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::jetstream::message::AckKind;
use async_nats::{Request, Subject};
use bytes::Bytes;
use spate_connector::{CommitPosition, PartitionId};

/// How long the server may take to confirm one double ack.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// One partition's handed-out, unacked messages, filed by one reader.
struct Part {
    /// The reader that filed them (see `PartitionReader::serial`).
    serial: u64,
    entries: BTreeMap<u64, Entry>,
}

/// A message's ack subject, and whether it is to be terminated.
struct Entry {
    reply: Subject,
    term: bool,
}

/// A message a commit is about to double-ack.
struct Taken {
    partition: PartitionId,
    serial: u64,
    sequence: u64,
    entry: Entry,
}

/// See the module docs.
#[derive(Default)]
pub struct AckLedger {
    parts: Mutex<HashMap<PartitionId, Part>>,
}

impl AckLedger {
    fn parts(&self) -> MutexGuard<'_, HashMap<PartitionId, Part>> {
        // Every critical section leaves the map consistent.
        self.parts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Files messages `serial`'s reader of `partition` handed out, by
    /// sequence with their ack subjects (a newer subject replaces an older
    /// one of the same sequence). Entries a previous reader filed are
    /// dropped: its messages went back to the server.
    pub(crate) fn file(
        &self,
        partition: PartitionId,
        serial: u64,
        messages: impl IntoIterator<Item = (u64, Subject)>,
    ) {
        let mut parts = self.parts();
        let part = parts.entry(partition).or_insert_with(|| Part {
            serial,
            entries: BTreeMap::new(),
        });
        if part.serial != serial {
            *part = Part {
                serial,
                entries: BTreeMap::new(),
            };
        }
        for (sequence, reply) in messages {
            let term = part.entries.get(&sequence).is_some_and(|e| e.term);
            part.entries.insert(sequence, Entry { reply, term });
        }
    }

    /// A filed message was delivered again: its newest ack subject is
    /// kept. One no longer filed (acked by a commit already) stays out.
    pub(crate) fn renew(&self, partition: PartitionId, serial: u64, sequence: u64, reply: Subject) {
        if let Some(entry) = self
            .parts()
            .get_mut(&partition)
            .filter(|p| p.serial == serial)
            .and_then(|part| part.entries.get_mut(&sequence))
        {
            entry.reply = reply;
        }
    }

    /// The engine dead-lettered this message: it is terminated, not acked.
    pub(crate) fn terminate(&self, partition: PartitionId, sequence: u64) {
        if let Some(entry) = self
            .parts()
            .get_mut(&partition)
            .and_then(|part| part.entries.get_mut(&sequence))
        {
            entry.term = true;
        }
    }

    /// Forgets what `serial`'s reader of `partition` filed (its messages
    /// were handed back, or the reader is gone).
    pub(crate) fn forget(&self, partition: PartitionId, serial: u64) {
        let mut parts = self.parts();
        if parts.get(&partition).is_some_and(|p| p.serial == serial) {
            parts.remove(&partition);
        }
    }

    /// Takes out every entry below the positions.
    fn take_below(&self, positions: &[CommitPosition]) -> Vec<Taken> {
        let mut parts = self.parts();
        let mut taken = Vec::new();
        for position in positions {
            let Some(part) = parts.get_mut(&position.partition) else {
                continue;
            };
            let above = part.entries.split_off(&position.next_offset);
            let below = std::mem::replace(&mut part.entries, above);
            taken.extend(below.into_iter().map(|(sequence, entry)| Taken {
                partition: position.partition,
                serial: part.serial,
                sequence,
                entry,
            }));
        }
        taken
    }

    /// Files again entries whose ack failed, unless their reader is gone.
    fn put_back(&self, failed: Vec<Taken>) {
        let mut parts = self.parts();
        for taken in failed {
            if let Some(part) = parts
                .get_mut(&taken.partition)
                .filter(|p| p.serial == taken.serial)
            {
                part.entries.entry(taken.sequence).or_insert(taken.entry);
            }
        }
    }

    /// Double-acks (or terminates) every filed message below the
    /// positions, all at once, and returns once the server confirmed each;
    /// the first failure, in words, otherwise (the failed ones stay filed).
    pub(crate) async fn double_ack(
        &self,
        client: &async_nats::Client,
        positions: &[CommitPosition],
    ) -> Result<(), String> {
        let taken = self.take_below(positions);
        if taken.is_empty() {
            return Ok(());
        }
        let results = futures_util::future::join_all(taken.iter().map(|t| {
            let kind = if t.entry.term {
                AckKind::Term
            } else {
                AckKind::Ack
            };
            let request = Request::new()
                .payload(Bytes::from(kind))
                .timeout(Some(CONFIRM_TIMEOUT));
            client.send_request(t.entry.reply.clone(), request)
        }))
        .await;
        let mut first_error = None;
        let mut failed = Vec::new();
        for (taken, result) in taken.into_iter().zip(results) {
            if let Err(e) = result {
                first_error.get_or_insert_with(|| {
                    format!(
                        "ack of partition {} sequence {} failed: {e}",
                        taken.partition, taken.sequence
                    )
                });
                failed.push(taken);
            }
        }
        self.put_back(failed);
        first_error.map_or(Ok(()), Err)
    }

    /// How many messages are filed (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.parts().values().map(|p| p.entries.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(sequence: u64) -> Subject {
        Subject::from(format!("$JS.ACK.s.d.1.{sequence}.{sequence}.0.0"))
    }

    fn position(partition: PartitionId, next_offset: u64) -> CommitPosition {
        CommitPosition {
            partition,
            next_offset,
        }
    }

    #[test]
    fn a_commit_takes_only_what_its_positions_cover() {
        let ledger = AckLedger::default();
        ledger.file(0, 1, (1..=5).map(|s| (s, subject(s))));
        ledger.file(1, 2, (1..=3).map(|s| (s, subject(s))));
        ledger.terminate(0, 2);
        let taken = ledger.take_below(&[position(0, 3)]);
        let sequences: Vec<(u64, bool)> =
            taken.iter().map(|t| (t.sequence, t.entry.term)).collect();
        assert_eq!(sequences, vec![(1, false), (2, true)]);
        assert_eq!(ledger.len(), 3 + 3);
        // A failed ack is filed again, for the next commit.
        ledger.put_back(taken);
        assert_eq!(ledger.len(), 2 + 3 + 3);
    }

    #[test]
    fn a_new_reader_or_a_forgotten_one_drops_the_old_entries() {
        let ledger = AckLedger::default();
        ledger.file(0, 1, (1..=3).map(|s| (s, subject(s))));
        let taken = ledger.take_below(&[position(0, 2)]);
        // A restarted partition: a new reader files its own messages.
        ledger.file(0, 7, [(9, subject(9))]);
        assert_eq!(ledger.len(), 1);
        // The old reader's failed ack is not filed again.
        ledger.put_back(taken);
        assert_eq!(ledger.len(), 1);
        // Forgetting needs the filing reader's serial.
        ledger.forget(0, 1);
        assert_eq!(ledger.len(), 1);
        ledger.forget(0, 7);
        assert_eq!(ledger.len(), 0);
    }
}
