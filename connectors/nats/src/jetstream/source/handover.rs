//! Handing partitions over under leases: a claimed partition gets a reader;
//! a revocation is announced to the engine (or, for a partition never
//! announced, handed straight back); on release a partition is either
//! dropped — its open pull request let end, every unacked message handed
//! back, the lease given up — or, when this process keeps it, restarted
//! from its ack floor so everything unfinished comes again in order.

use std::time::Duration;

use spate_connector::{PartitionId, SourceError};

use super::partition::{PartitionReader, Phase};
use super::takeover::PartitionBinder;
use super::JetStreamSource;
use crate::jetstream::leases::{LeaseCommand, LeaseEvent};

impl JetStreamSource {
    fn tell_coordinator(&self, command: LeaseCommand) {
        if let Some(leases) = &self.leases {
            let _ = leases.commands.send(command);
        }
    }

    pub(super) async fn handle_lease(&mut self, event: LeaseEvent) {
        match event {
            LeaseEvent::Claimed(partition, consumer, validity) => {
                if !self.readers.contains_key(&partition) {
                    let mut reader = PartitionReader::start(
                        partition,
                        *consumer,
                        self.fetch_wait,
                        self.feed_tx.clone(),
                        Some(validity),
                    );
                    reader.ledger = self.ledger.clone();
                    self.readers.insert(partition, reader);
                }
            }
            LeaseEvent::Revoke(partition) => {
                let announced = match self.readers.get_mut(&partition) {
                    None => false,
                    Some(reader) if reader.phase == Phase::Unassigned => false,
                    Some(reader) => {
                        reader.revoke_wanted = true;
                        reader.keep_after_release = false;
                        true
                    }
                };
                if !announced {
                    // Never given to the engine: hand it straight back.
                    self.drop_reader(partition).await;
                }
            }
        }
    }

    /// Stops a partition for good: lets its open pull request end, hands
    /// every unacked message back, and gives the lease up.
    async fn drop_reader(&mut self, partition: PartitionId) {
        if let Some(reader) = self.readers.get_mut(&partition) {
            reader.stop_fetching();
            let deadline = tokio::time::Instant::now() + self.fetch_wait + Duration::from_secs(2);
            while self
                .readers
                .get(&partition)
                .is_some_and(|r| r.fetch_in_flight)
            {
                match tokio::time::timeout_at(deadline, self.feed.recv()).await {
                    Ok(Some((p, item))) => {
                        if let Err(e) = self.handle_feed(p, item) {
                            tracing::warn!(source = %self.name, error = %e, "while handing a partition back");
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        if let Some(mut reader) = self.readers.remove(&partition) {
            reader.nak_all(&self.name, None).await;
        }
        let _ = self.client.flush().await;
        self.tell_coordinator(LeaseCommand::Released(partition));
    }

    /// Restarts a leased partition this process keeps: its reader (fetch
    /// task, received and held messages) is dropped and its durable reset
    /// to the ack floor, so everything unfinished comes again, in order,
    /// before anything newer. If the reset fails the lease is given up
    /// instead; whoever claims it next resets it.
    async fn restart_from_ack_floor(&mut self, binder: &PartitionBinder, partition: PartitionId) {
        // Dropping the reader stops its fetch task; its messages belong
        // to the consumer about to be deleted.
        let validity = self
            .readers
            .remove(&partition)
            .and_then(|r| r.validity.clone());
        if validity.as_ref().is_none_or(|v| v.remaining().is_zero()) {
            // Not ours for sure any more: another process may own it.
            self.tell_coordinator(LeaseCommand::Released(partition));
            return;
        }
        match binder.bind_from_ack_floor(partition).await {
            Ok(consumer) => {
                let mut reader = PartitionReader::start(
                    partition,
                    consumer,
                    self.fetch_wait,
                    self.feed_tx.clone(),
                    validity,
                );
                reader.ledger = self.ledger.clone();
                self.readers.insert(partition, reader);
            }
            Err(e) => {
                tracing::warn!(source = %self.name, partition, error = %e, "cannot restart the partition from its ack floor; giving its lease up");
                self.tell_coordinator(LeaseCommand::Released(partition));
            }
        }
    }

    /// Lets partitions the engine finished with go: dropped, restarted from
    /// the ack floor (leased and kept), or restarted in place (the shared
    /// durable).
    pub(super) async fn release_partitions(
        &mut self,
        partitions: &[PartitionId],
    ) -> Result<(), SourceError> {
        for partition in partitions {
            let keep = match self.readers.get(partition) {
                Some(reader) if reader.phase == Phase::Revoked => reader.keep_after_release,
                _ => continue,
            };
            if !keep {
                self.drop_reader(*partition).await;
            } else if let Some(binder) = self.binder.clone() {
                self.restart_from_ack_floor(&binder, *partition).await;
            } else if let Some(reader) = self.readers.get_mut(partition) {
                // The shared durable cannot be reset (other processes read
                // it): whatever the engine did not finish is delivered
                // again; the waiting redeliveries go first.
                reader.restart(&self.name).await;
            }
        }
        Ok(())
    }
}
