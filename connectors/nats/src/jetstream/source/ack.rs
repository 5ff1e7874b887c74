//! Acknowledging what the engine committed: every held sequence below a
//! committed position is acked (terminated if it was dead-lettered), then
//! the acks are flushed. Inside an exactly-once session all of a
//! partition's acks go at once and each waits for the server's
//! confirmation, so a committed position is stored before the engine goes
//! on; acked messages are forgotten even if others fail.

use spate_connector::{CommitPosition, PartitionId, SourceError};

use super::JetStreamSource;

impl JetStreamSource {
    /// Acks every held message below each position.
    pub(super) async fn ack_committed(
        &mut self,
        positions: &[CommitPosition],
    ) -> Result<(), SourceError> {
        for position in positions {
            let Some(reader) = self.readers.get_mut(&position.partition) else {
                continue;
            };
            let sequences: Vec<u64> = reader
                .held
                .range(..position.next_offset)
                .map(|(s, _)| *s)
                .collect();
            if self.exactly_once {
                self.double_ack(position.partition, &sequences).await?;
                continue;
            }
            for sequence in sequences {
                let acked = match reader.held.get(&sequence) {
                    Some(entry) => entry.acker.ack_with(reader.ack_kind(sequence)).await,
                    None => continue,
                };
                if let Err(e) = acked {
                    return Err(SourceError::Unavailable {
                        source_name: self.name.clone(),
                        message: format!(
                            "ack of partition {} sequence {sequence} failed: {e}",
                            position.partition
                        ),
                    });
                }
                reader.acked(sequence);
            }
        }
        if self.exactly_once {
            return Ok(());
        }
        self.client
            .flush()
            .await
            .map_err(|e| SourceError::Unavailable {
                source_name: self.name.clone(),
                message: format!("flushing acks failed: {e}"),
            })
    }

    /// Exactly-once acks: all at once, each waiting for the server's
    /// confirmation, so a committed position is really stored before the
    /// engine goes on. Acked messages are forgotten even if others fail.
    async fn double_ack(
        &mut self,
        partition: PartitionId,
        sequences: &[u64],
    ) -> Result<(), SourceError> {
        let Some(reader) = self.readers.get_mut(&partition) else {
            return Ok(());
        };
        let acks = futures_util::future::join_all(sequences.iter().filter_map(|s| {
            reader
                .held
                .get(s)
                .map(|entry| entry.acker.double_ack_with(reader.ack_kind(*s)))
        }))
        .await;
        let mut first_error = None;
        for (sequence, result) in sequences.iter().zip(acks) {
            match result {
                Ok(()) => reader.acked(*sequence),
                Err(e) => {
                    first_error.get_or_insert(format!(
                        "ack of partition {partition} sequence {sequence} failed: {e}"
                    ));
                }
            }
        }
        match first_error {
            None => Ok(()),
            Some(message) => Err(SourceError::Unavailable {
                source_name: self.name.clone(),
                message,
            }),
        }
    }
}
