//! Rebalance handling on the source's side (rule 4): an assignment starts
//! every partition afresh (unpaused, nothing held, no offsets remembered),
//! and a revocation forgets everything held for its partitions — events
//! never handed out, which the next owner reads from the committed offset.
//! The engine then releases the partitions ([`Shared::release`]), which
//! lets the rebalance callback waiting on the poll thread go on.
//!
//! [`Shared::release`]: crate::consumer::Shared::release

use spate_connector::{PartitionId, SourceMessage};

use super::KafkaSource;

impl KafkaSource {
    /// Partitions now assigned: fresh state, reported to the engine.
    pub(super) fn assigned(&mut self, ids: Vec<PartitionId>) {
        for id in &ids {
            self.forget(*id);
            self.fresh.insert(*id);
            self.assigned.insert(*id);
        }
        self.control.push_back(Ok(SourceMessage::Assigned(ids)));
    }

    /// Partitions being revoked: their state dropped, reported to the
    /// engine (which releases them once their events are finished).
    pub(super) fn revoked(&mut self, ids: Vec<PartitionId>) {
        for id in &ids {
            self.forget(*id);
            self.fresh.remove(id);
            self.assigned.remove(id);
        }
        self.control.push_back(Ok(SourceMessage::Revoked(ids)));
    }

    /// Drops everything the source keeps about one partition's reading.
    fn forget(&mut self, id: PartitionId) {
        self.seeking.remove(&id);
        self.floor.remove(&id);
        self.paused.remove(&id);
        self.fetch_paused.remove(&id);
        self.held_bytes.remove(&id);
        self.last_offset.remove(&id);
        self.handed.remove(&id);
        self.queues.remove(&id);
    }
}
