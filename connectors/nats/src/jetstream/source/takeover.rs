//! Taking a subject partition over in order: every time a process starts
//! reading a leased partition (a claim, or a restart of a partition it
//! keeps), the partition's durable is deleted and created again, starting
//! at its **ack floor** (`ack_floor.stream_sequence + 1`).
//!
//! # What it guarantees
//!
//! No event of the partition newer than one a previous holder had received
//! but not finished is handed out before that older event: the new holder
//! hands out the partition's unfinished suffix again, in stream order,
//! before anything newer.
//!
//! # Why it holds
//!
//! * **The acked set is a prefix.** The source acks only at a commit, and
//!   a commit acks exactly the held messages below the partition's
//!   watermark, in sequence order, on one connection (the server applies
//!   them in that order). So every message at or below the server's ack
//!   floor is finished, and everything above it that matters is
//!   unfinished. (A message above the floor that was acked anyway is
//!   delivered again: a copy, never a reordering.)
//! * **A fresh consumer has no redeliveries.** A consumer keeps its
//!   delivered-but-unacked messages and re-sends them only after
//!   `ack_wait` (or a nak), while handing out newer messages to any pull
//!   request meanwhile: that is the reordering of issue 19. Deleting the
//!   consumer drops its pending set, its redelivery queue and any pull
//!   request a dead holder left open; the new consumer, created with
//!   `DeliverPolicy::ByStartSequence { floor + 1 }`, delivers the stream
//!   from there in sequence order, one pass, each message once. Order can
//!   break again only by a redelivery, which needs `ack_wait` to pass
//!   without an ack or in-progress ack (see below).
//! * **One reader at a time.** The partition's lease is held before the
//!   reset (a claim first creates the lease, then binds), so no other
//!   process is reading the durable when it is deleted; a holder that lost
//!   its lease has revoked the partition after half the TTL without a
//!   refresh, before the lease could expire and be claimed.
//!
//! Inside one holder, order is kept as follows: handler retries happen in
//! the engine (nothing is nak'd), every received message gets in-progress
//! acks every half `ack_wait`, and a redelivery of a message still held is
//! dropped as a copy. A redelivery below the last handed-out sequence that
//! is not held (the holder stalled past `ack_wait`, a server restart) makes
//! the source hand the partition over to itself: the engine drains and
//! commits, and the restart resets the durable to its ack floor here, so
//! the older message comes first again.
//!
//! # The costs
//!
//! A takeover re-delivers the unfinished suffix (at most the previous
//! holder's in-flight bound plus one fetch batch, capped by
//! `max_ack_pending`) at once, instead of after `ack_wait`. Under
//! at-least-once these are copies of work the old holder may have done;
//! under exactly-once the republished outputs carry the same `Nats-Msg-Id`
//! and the output stream drops them, as long as its duplicate window
//! exceeds the time from the first publish to the republish: the lease TTL
//! plus a takeover, checked by [`exactly_once`](crate::jetstream::exactly_once)
//! against twice the larger of `ack_wait` and `lease_ttl`.
//!
//! Before each delete the floor is recorded in the bucket
//! `spate-floors-<durable>` (key `p.<partition>`, kept without age limit):
//! a holder killed between the delete and the create leaves no consumer,
//! and its successor starts from the recorded floor instead of the
//! stream's start. A durable missing for another reason (deleted by hand)
//! also restarts from the last recorded floor, or from the start if none.
//!
//! The shared durable (no `partitions`) is never reset: every process reads
//! it at once, so order across processes, or across a process's death, is
//! not promised there.

use async_nats::jetstream::consumer::{pull, Consumer, DeliverPolicy};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::kv::Store;
use async_nats::jetstream::stream;
use bytes::Bytes;

/// The name of the bucket keeping each partition's last ack floor.
pub(crate) fn floors_bucket(durable: &str) -> String {
    crate::jetstream::leases::safe_bucket_name("spate-floors", durable)
}

/// Binds the durables of a subject-partitioned source, each reset to its
/// ack floor (see the module docs).
pub(crate) struct PartitionBinder {
    pub(crate) stream: stream::Stream,
    pub(crate) stream_name: String,
    /// Each partition's consumer configuration, by partition number.
    pub(crate) configs: Vec<pull::Config>,
    /// `p.<partition>`: the ack floor recorded before the partition's
    /// durable was last deleted (see [`floors_bucket`]).
    pub(crate) floors: Store,
}

impl PartitionBinder {
    /// Deletes partition `partition`'s durable (if it exists) and creates it
    /// again from its ack floor, so that delivery restarts at the oldest
    /// unfinished message. The caller must hold the partition's lease.
    pub(crate) async fn bind_from_ack_floor(
        &self,
        partition: u32,
    ) -> Result<Consumer<pull::Config>, String> {
        let mut config = self
            .configs
            .get(partition as usize)
            .cloned()
            .ok_or_else(|| format!("no partition {partition}"))?;
        let durable = config.durable_name.clone().unwrap_or_default();
        let place = format!("durable `{durable}` on stream `{}`", self.stream_name);
        let key = format!("p.{partition}");
        let floor = match self.stream.consumer_info(&durable).await {
            Ok(info) => {
                let floor = info.ack_floor.stream_sequence;
                // Recorded first: a holder dying between the delete and the
                // create below leaves the floor to its successor.
                self.floors
                    .put(&key, Bytes::from(floor.to_string()))
                    .await
                    .map_err(|e| format!("cannot record the ack floor of {place}: {e}"))?;
                self.stream
                    .delete_consumer(&durable)
                    .await
                    .map_err(|e| format!("cannot reset {place} to its ack floor: {e}"))?;
                tracing::info!(
                    durable,
                    ack_floor = floor,
                    unacked = info.num_ack_pending,
                    "partition durable reset to its ack floor"
                );
                floor
            }
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
                let recorded =
                    self.floors.get(&key).await.map_err(|e| {
                        format!("cannot read the recorded ack floor of {place}: {e}")
                    })?;
                recorded
                    .and_then(|value| std::str::from_utf8(&value).ok()?.parse().ok())
                    .unwrap_or(0)
            }
            Err(e) => return Err(format!("cannot read {place}: {e}")),
        };
        config.deliver_policy = if floor == 0 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: floor + 1,
            }
        };
        self.stream
            .create_consumer(config)
            .await
            .map_err(|e| format!("cannot create {place}: {e}"))
    }
}
