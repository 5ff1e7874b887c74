//! Acknowledging what the engine committed: every held sequence below a
//! committed position is acked (terminated if it was dead-lettered), then
//! the acks are flushed. Inside an exactly-once session the session's
//! commit already double-acked them (off the engine's scheduler, see
//! [`AckLedger`](crate::jetstream::ack_ledger::AckLedger)), each confirmed
//! by the server; here they are only forgotten, after double-acking any the
//! session did not (normally none), so a committed position is stored
//! before the engine goes on; acked messages are forgotten even if others
//! fail.

use spate_connector::{CommitPosition, SourceError};

use super::JetStreamSource;

impl JetStreamSource {
    /// Acks every held message below each position.
    pub(super) async fn ack_committed(
        &mut self,
        positions: &[CommitPosition],
    ) -> Result<(), SourceError> {
        if self.exactly_once {
            return self.double_ack(positions).await;
        }
        for position in positions {
            let Some(reader) = self.readers.get_mut(&position.partition) else {
                continue;
            };
            let mut below = reader.take_held_below(position.next_offset).into_iter();
            while let Some((sequence, entry)) = below.next() {
                if let Err(e) = entry.acker.ack_with(reader.ack_kind(sequence)).await {
                    // Not acked: this one and the rest stay held.
                    reader.held.insert(sequence, entry);
                    reader.held.extend(below);
                    return Err(SourceError::Unavailable {
                        source_name: self.name.clone(),
                        message: format!(
                            "ack of partition {} sequence {sequence} failed: {e}",
                            position.partition
                        ),
                    });
                }
                reader.terminated.remove(&sequence);
            }
        }
        self.client
            .flush()
            .await
            .map_err(|e| SourceError::Unavailable {
                source_name: self.name.clone(),
                message: format!("flushing acks failed: {e}"),
            })
    }

    /// Exactly-once: double-acks, all at once and each confirmed, what the
    /// session's commit left in the ledger below the positions (normally
    /// nothing), then forgets every held message below them. Nothing is
    /// forgotten if an ack failed.
    async fn double_ack(&mut self, positions: &[CommitPosition]) -> Result<(), SourceError> {
        if let Some(ledger) = &self.ledger {
            ledger
                .double_ack(&self.client, positions)
                .await
                .map_err(|message| SourceError::Unavailable {
                    source_name: self.name.clone(),
                    message,
                })?;
        }
        for position in positions {
            if let Some(reader) = self.readers.get_mut(&position.partition) {
                for sequence in reader.take_held_below(position.next_offset).keys() {
                    reader.terminated.remove(sequence);
                }
            }
        }
        Ok(())
    }
}
