//! Resuming from positions stored in a database (exactly-once into a
//! database): each partition assigned since the last call moves to its
//! stored offset by a seek on the poll thread; its events are dropped from
//! the moment the seek is asked for until the poll thread reports it done,
//! and below the stored offset after that, so nothing the database already
//! holds is handed out again.

use std::collections::HashMap;

use spate_connector::{PartitionId, Source, SourceError, StoredPosition};

use super::KafkaSource;

impl KafkaSource {
    /// Asks for a seek of every fresh partition that has a stored position.
    pub(super) fn seek_to_stored(
        &mut self,
        positions: &[StoredPosition],
    ) -> Result<(), SourceError> {
        let fresh = std::mem::take(&mut self.fresh);
        if fresh.is_empty() {
            return Ok(());
        }
        let stored: HashMap<&str, u64> = positions
            .iter()
            .map(|p| (p.partition.as_str(), p.next_offset))
            .collect();
        for id in fresh {
            let name = self.partition_name(id);
            let Some(&offset) = stored.get(name.as_str()) else {
                continue;
            };
            if let Some(queue) = self.queues.remove(&id) {
                tracing::debug!(source = %self.name, partition = %name, dropped = queue.len(), "events fetched before the seek dropped");
            }
            self.held_bytes.remove(&id);
            self.last_offset.remove(&id);
            self.floor.insert(id, offset);
            self.seeking.insert(id, offset);
            self.shared.seek(id, offset);
        }
        Ok(())
    }

    /// Takes in the poll thread's answer to a seek: from here on the
    /// partition's events come from the stored position (or, when the seek
    /// failed, the source stops with a fatal error).
    pub(super) fn seeked(&mut self, id: PartitionId, offset: u64, failed: Option<String>) {
        if self.seeking.get(&id) != Some(&offset) {
            return; // a seek of an earlier assignment
        }
        self.seeking.remove(&id);
        match failed {
            None => {
                tracing::info!(source = %self.name, partition = id, offset, "resumed from the stored position");
                self.last_offset.remove(&id);
            }
            Some(why) => self.control.push_back(Err(SourceError::Fatal {
                source_name: self.name.clone(),
                message: format!(
                    "cannot move partition {} to offset {offset}, where the database's positions resume: {why}",
                    self.partition_name(id)
                ),
            })),
        }
    }
}
