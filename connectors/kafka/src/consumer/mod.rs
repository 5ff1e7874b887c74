//! The consumer side's machinery: the librdkafka consumer, the thread that
//! polls it, the partition-id interner and the rebalance hand-over.
//!
//! # Threads
//!
//! One dedicated thread per source calls `BaseConsumer::poll` every 100 ms.
//! librdkafka runs rebalance callbacks, statistics and error events on that
//! thread. Everything it receives goes, converted to owned values (the
//! messages one poll round finds ready as one batch), into a bounded
//! channel the source reads in `next` (cancel safe: a channel receive). The
//! source calls `commit`, `pause` and `resume` on the same consumer from the
//! engine's task (librdkafka's API is thread safe).
//!
//! # Hand-over
//!
//! When librdkafka revokes partitions, [`SpateContext::pre_rebalance`] (on
//! the poll thread) sends [`Item::Revoked`] and then blocks the callback
//! until the source calls [`Shared::release`] for every one of them, the
//! source shuts down, or the group's rebalance deadline
//! (`max.poll.interval.ms`) passed (the broker has moved on by then anyway).
//! While the callback blocks, librdkafka keeps the partitions assigned and
//! commits of them from the engine's task go through. Only then does the
//! default rebalance of rdkafka run (`incremental_unassign` for cooperative
//! assignment, `unassign` for eager).
//!
//! # Partition ids
//!
//! With exactly one topic in `topics`, a partition's id is its Kafka
//! partition number. With several topics or a `topic_pattern`, ids are
//! handed out from 0 in the order partitions are first seen and stay the
//! same for the life of the source (not across restarts; Kafka keeps the
//! committed offsets per topic and partition, so nothing depends on that).
//!
//! # Modules
//!
//! `commit_queue` carries the source's group commits and their outcomes,
//! `interner` hands out the partition ids, `shared` holds what the poll
//! thread, the source and its transaction session share (the hand-over
//! among it), `rebalance` is the consumer context librdkafka calls back,
//! and `poll` is the poll thread.

use std::sync::{Mutex, MutexGuard};

use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use spate_connector::{Event, PartitionId};

mod commit_queue;
mod interner;
mod poll;
mod rebalance;
mod shared;
#[cfg(test)]
mod tests;

pub use commit_queue::CommitQueue;
pub use interner::Interner;
pub use poll::{poll_loop, BATCH_BYTES, BATCH_EVENTS};
pub use rebalance::SpateContext;
pub use shared::{PartitionOffsets, Shared};

/// The consumer type every Kafka source uses.
pub type KafkaConsumer = BaseConsumer<SpateContext>;

/// What the poll thread hands the source.
#[derive(Debug)]
pub enum Item {
    /// Messages, converted, in the order librdkafka handed them.
    Events(Vec<Event>),
    /// Partitions now assigned (their events follow).
    Assigned(Vec<PartitionId>),
    /// Partitions being revoked; the callback waits for their release.
    Revoked(Vec<PartitionId>),
    /// An error librdkafka reported.
    Error(KafkaError),
    /// The poll thread stopped on its own (it panicked); nothing more comes.
    Stopped(String),
    /// A seek the source asked for ([`Shared::seek`]) was done (or failed):
    /// every event of the partition after this item comes from the new
    /// position, every one before it from the old.
    Seeked {
        /// The partition.
        id: PartitionId,
        /// Where it now reads from.
        offset: u64,
        /// Why the seek failed, if it did.
        failed: Option<String>,
    },
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
