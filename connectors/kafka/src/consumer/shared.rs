//! The state the poll thread, the source and its transaction session share:
//! the interner, the channel to the source, the hand-over of revoked
//! partitions (a revocation waits until the engine releases them, the source
//! shuts down, or the hand-over limit passes), the seeks the poll thread is
//! to do, the partitions' offsets from librdkafka's statistics, and the
//! batch of events the poll thread is filling (sent before any other item,
//! so items keep the order they happened in).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use spate_connector::{Event, PartitionId};
use tokio::sync::mpsc;

use super::{lock, Interner, Item};

/// A partition's offsets from librdkafka's statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// The partition's end: its last stable offset when reading committed
    /// data, else its high watermark.
    pub end: u64,
    /// The group's committed offset, if any (where reading starts before
    /// anything was handed out).
    pub position: Option<u64>,
}

/// State shared by the poll thread (through the consumer context), the
/// source and its transaction session.
pub struct Shared {
    /// Partition ids.
    pub interner: Mutex<Interner>,
    /// Where the poll thread sends what it receives.
    pub tx: mpsc::Sender<Item>,
    /// Set once the source closes or is dropped: callbacks stop blocking
    /// and sending, the poll thread ends.
    shutdown: AtomicBool,
    /// Revoked partitions the engine has not released yet.
    pub(super) unreleased: Mutex<BTreeSet<PartitionId>>,
    released: Condvar,
    /// Longest a revocation waits for its release.
    handover_limit: Duration,
    /// Per partition id, from librdkafka's statistics.
    pub(super) offsets: Mutex<HashMap<PartitionId, PartitionOffsets>>,
    /// Seeks the poll thread is to do before its next poll.
    pub(super) seeks: Mutex<Vec<(PartitionId, u64)>>,
    /// Whether the end of a partition is its last stable offset.
    pub(super) read_committed: bool,
    /// For log lines.
    pub(super) name: String,
    /// Events polled and not sent yet (only the poll thread touches it).
    staged: Mutex<Vec<Event>>,
}

impl Shared {
    /// Shared state; `handover_limit` bounds a revocation's wait;
    /// `read_committed` says where a partition ends for [`Shared::offsets`].
    pub fn new(
        name: String,
        interner: Interner,
        tx: mpsc::Sender<Item>,
        handover_limit: Duration,
        read_committed: bool,
    ) -> Self {
        Self {
            interner: Mutex::new(interner),
            tx,
            shutdown: AtomicBool::new(false),
            unreleased: Mutex::new(BTreeSet::new()),
            released: Condvar::new(),
            handover_limit,
            offsets: Mutex::new(HashMap::new()),
            seeks: Mutex::new(Vec::new()),
            read_committed,
            name,
            staged: Mutex::new(Vec::new()),
        }
    }

    /// The interner, locked.
    pub fn interner(&self) -> MutexGuard<'_, Interner> {
        lock(&self.interner)
    }

    /// Lets a waiting revocation go on for these partitions.
    pub fn release(&self, ids: &[PartitionId]) {
        let mut unreleased = lock(&self.unreleased);
        for id in ids {
            unreleased.remove(id);
        }
        drop(unreleased);
        self.released.notify_all();
    }

    /// Stops the poll thread and unblocks a waiting revocation; idempotent.
    pub fn shut_down(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        // Taking the lock orders the flag before a waiter's check.
        drop(lock(&self.unreleased));
        self.released.notify_all();
    }

    /// True once [`Shared::shut_down`] was called.
    pub fn is_shut_down(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// Asks the poll thread to move partition `id` to `offset` before its
    /// next poll; it answers with [`Item::Seeked`]. Seeking on the poll
    /// thread orders the seek among the items it sends, and librdkafka
    /// drops what it had fetched from the old position.
    pub fn seek(&self, id: PartitionId, offset: u64) {
        lock(&self.seeks).push((id, offset));
    }

    /// A partition's offsets as of librdkafka's last statistics.
    pub fn offsets(&self, id: PartitionId) -> Option<PartitionOffsets> {
        lock(&self.offsets).get(&id).copied()
    }

    /// Sends from the poll thread, after the events staged before it;
    /// false when the source is gone.
    pub(super) fn send(&self, item: Item) -> bool {
        self.flush() && self.send_now(item)
    }

    /// Adds a polled event to the batch [`Shared::flush`] sends.
    pub(super) fn stage(&self, event: Event) {
        lock(&self.staged).push(event);
    }

    /// Sends the staged events as one batch (nothing if none); false when
    /// the source is gone.
    pub(super) fn flush(&self) -> bool {
        let batch = std::mem::take(&mut *lock(&self.staged));
        batch.is_empty() || self.send_now(Item::Events(batch))
    }

    fn send_now(&self, item: Item) -> bool {
        if self.is_shut_down() {
            return false;
        }
        self.tx.blocking_send(item).is_ok()
    }

    /// Blocks until every id is released, shutdown, or the limit passed.
    pub(super) fn wait_for_release(&self, ids: &[PartitionId]) {
        let deadline = Instant::now() + self.handover_limit;
        let mut unreleased = lock(&self.unreleased);
        loop {
            if self.is_shut_down() || !ids.iter().any(|id| unreleased.contains(id)) {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(
                    source = %self.name,
                    partitions = ?ids,
                    waited = ?self.handover_limit,
                    "revoked partitions were not released in time; letting them go (the group has moved on)"
                );
                break;
            }
            unreleased = self
                .released
                .wait_timeout(unreleased, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        for id in ids {
            unreleased.remove(id);
        }
    }
}
