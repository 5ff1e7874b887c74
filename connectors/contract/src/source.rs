//! The source half of the contract.
//!
//! # The delivery rules a source must keep
//!
//! 1. **Stage on read, apply on commit.** Reading an event never moves the
//!    source's durable position. Only [`Source::commit`] does, and only to the
//!    positions the engine passes, which the engine computes as the contiguous
//!    watermark of finished events. A source must never commit on its own
//!    (no auto-commit) unless the pipeline asked for `at_most_once`, in which
//!    case the engine itself commits on receipt.
//! 2. **Order within a partition.** Events of one partition are returned in
//!    increasing offset order, and a partition's events are never reordered
//!    across calls to [`Source::next`].
//! 3. **Pause means pause.** After [`Source::pause`] returns, `next` returns no
//!    more events of those partitions until [`Source::resume`]. This is how the
//!    engine bounds memory: a source that keeps delivering breaks backpressure.
//! 4. **Revocation is a hand-over.** When the broker takes partitions away the
//!    source returns [`SourceMessage::Revoked`] and must keep those partitions'
//!    ownership (e.g. hold the rebalance) until the engine has drained, committed
//!    and called [`Source::release`].
//! 5. **Cancel safety.** `next` is called inside `tokio::select!`; dropping its
//!    future before it completes must lose no event (keep partial state in
//!    `self`, not in the future).
//! 6. **Resuming from stored positions.** Under `exactly_once` into a
//!    database, the positions live in the database, committed with the rows
//!    ([`StoredPosition`]). A source whose factory claims `resumable` then
//!    hands out no event at or past-below a position it was given by
//!    [`Source::resume_from`]: such an event is already in the database.
//!    Its broker's own position (a Kafka group offset, an MQTT session's
//!    unacknowledged messages) trails the database's by at most the last
//!    transaction, because [`Source::commit`] runs after the database
//!    commit; what lies between is skipped, never handled twice.
//! 7. **Readiness is what the source says.** [`SourceMessage::Assigned`] is
//!    sent only once the source is connected and, where it applies, owns
//!    its partitions (a group assignment granted, a lease held, a
//!    subscription acknowledged): from then on the engine reports the source
//!    ready on `/health/ready`. A retryable error from [`Source::next`]
//!    means the broker is lost: the source is reported not ready until it
//!    delivers again, or until a while passed with no further error, so a
//!    source that stays cut off should keep reporting errors (as librdkafka
//!    does per reconnect attempt) rather than fall silent. A builder that
//!    cannot reach its target fails `build` with a retryable error at once
//!    when the connection is refused (not after a long timeout): the
//!    runtime reports it and retries.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::error::SourceError;
use crate::event::{Event, PartitionId};
use crate::transaction::TransactionSession;

/// What a source hands the engine from one call to [`Source::next`].
#[derive(Debug)]
pub enum SourceMessage {
    /// Events, in order within each partition. Never empty.
    Events(Vec<Event>),
    /// The source now owns these partitions (start of consumption or a
    /// rebalance). Events of a partition come only after its assignment.
    Assigned(Vec<PartitionId>),
    /// The source is losing these partitions; see rule 4.
    Revoked(Vec<PartitionId>),
    /// A finite source has nothing more to read, ever.
    End,
}

impl SourceMessage {
    /// The `Assigned` a source with a fixed partition set hands out once:
    /// on its first [`Source::next`], before any event. `None` once
    /// `assigned` says it was handed out; sets it otherwise.
    pub fn assign_once(
        assigned: &mut bool,
        partitions: impl FnOnce() -> Vec<PartitionId>,
    ) -> Option<SourceMessage> {
        if *assigned {
            return None;
        }
        *assigned = true;
        Some(SourceMessage::Assigned(partitions()))
    }
}

/// A durable position for one partition: every offset *below* `next_offset`
/// is finished. This is the Kafka convention ("the next offset to read").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitPosition {
    /// The partition.
    pub partition: PartitionId,
    /// The first offset not yet finished.
    pub next_offset: u64,
}

impl From<(PartitionId, u64)> for CommitPosition {
    /// A (partition, next offset) pair, as a map of them iterates.
    fn from((partition, next_offset): (PartitionId, u64)) -> Self {
        Self {
            partition,
            next_offset,
        }
    }
}

/// A position as an exactly-once session that stores positions itself (a
/// database sink) keeps it: under a partition name that means the same
/// thing in every process and after a restart (a Kafka `topic/partition`,
/// an MQTT topic), with the next offset (or sequence) not yet finished.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoredPosition {
    /// The stable partition name.
    pub partition: String,
    /// Everything below it is finished and stored.
    pub next_offset: u64,
}

impl StoredPosition {
    /// The positions of a map from partition name to next offset, in the
    /// map's order (by name): what a session that keeps its positions in
    /// such a map answers to [`TransactionSession::load_positions`].
    pub fn from_map(positions: BTreeMap<String, u64>) -> Vec<Self> {
        positions
            .into_iter()
            .map(|(partition, next_offset)| Self {
                partition,
                next_offset,
            })
            .collect()
    }
}

/// A stream of events with durable, engine-driven positions.
#[async_trait]
pub trait Source: Send {
    /// A short name for logs and dead-letter headers (`kind:stream`).
    fn name(&self) -> &str;

    /// Waits for the next happening. At most `max_events` events are returned
    /// at once, so the engine's in-flight bound is overshot by one batch at
    /// most. Must be cancel safe (rule 5).
    async fn next(&mut self, max_events: usize) -> Result<SourceMessage, SourceError>;

    /// Stops delivering events of these partitions (rule 3).
    fn pause(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError>;

    /// Delivers events of these partitions again.
    fn resume(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError>;

    /// Durably records that everything below each position is finished.
    async fn commit(&mut self, positions: &[CommitPosition]) -> Result<(), SourceError>;

    /// Gives back revoked partitions after the engine drained and committed
    /// them (rule 4). Sources without rebalancing can ignore it.
    async fn release(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError> {
        let _ = partitions;
        Ok(())
    }

    /// The event at `offset` of `partition` failed for good and its dead
    /// letter is acknowledged (under `exactly_once`: staged in the session,
    /// durable with the commit that covers the event). Called once per such
    /// event, before the [`Source::commit`] that covers it. A source whose
    /// broker tells giving up from success (JetStream's `term`, which also
    /// raises the server's "terminated" advisory) acknowledges the event that
    /// way in that commit; the default ignores it.
    fn dead_lettered(&mut self, partition: PartitionId, offset: u64) {
        let _ = (partition, offset);
    }

    /// The partition's name as stored outside the source (a database's
    /// offsets and state tables): stable across processes and restarts,
    /// unlike a partition id handed out in order of assignment. The default
    /// is the id's number.
    fn partition_name(&self, partition: PartitionId) -> String {
        partition.to_string()
    }

    /// What a session that stores positions itself must store so that a
    /// later [`Source::resume_from`] skips exactly the events below
    /// `positions`. Called right before the session commits them (so before
    /// [`Source::commit`] with the same positions). The default stores each
    /// position under [`Source::partition_name`]; a source whose offsets are
    /// not stable across sessions (MQTT's arrival counters) stores what is
    /// (each topic's last sequence).
    fn positions_to_store(&self, positions: &[CommitPosition]) -> Vec<StoredPosition> {
        positions
            .iter()
            .map(|p| StoredPosition {
                partition: self.partition_name(p.partition),
                next_offset: p.next_offset,
            })
            .collect()
    }

    /// Resumes from positions a database session stored (rule 6). Called
    /// once after the session opened, and again after every
    /// [`SourceMessage::Assigned`] with every position then stored for this
    /// source, before any event of the new partitions is admitted. Sources
    /// whose factory does not claim `resumable` keep the default, which
    /// refuses.
    fn resume_from(&mut self, positions: &[StoredPosition]) -> Result<(), SourceError> {
        let _ = positions;
        Err(SourceError::Fatal {
            source_name: self.name().to_owned(),
            message: "this source cannot resume from positions stored outside its broker"
                .to_owned(),
        })
    }

    /// Events in partition `partition` not yet read, if the source knows
    /// (exported as consumer lag).
    fn lag(&self, partition: PartitionId) -> Option<u64> {
        let _ = partition;
        None
    }

    /// Opens the exactly-once session that commits this source's positions
    /// together with output records (see [`crate::transaction`]). Called
    /// once, before the first `next`, for `delivery: exactly_once`. The
    /// engine then commits through the session, and after each successful
    /// session commit calls [`Source::commit`] with the same positions: a
    /// source whose session already stored them (a Kafka transaction) does
    /// nothing there; one whose session only made the records durable (a
    /// JetStream publish de-duplicated by id) acknowledges its input then.
    /// Sources whose factory does not claim `exactly_once` keep the
    /// default, which refuses.
    async fn begin_exactly_once(&mut self) -> Result<Box<dyn TransactionSession>, SourceError> {
        Err(SourceError::Fatal {
            source_name: self.name().to_owned(),
            message: "this source cannot take part in an exactly-once transaction".to_owned(),
        })
    }

    /// Ends the session with the broker; called once after the final commit.
    async fn close(&mut self) -> Result<(), SourceError> {
        Ok(())
    }
}
