//! Partition leases: how the spate processes sharing a partitioned JetStream
//! source split its partitions so that each partition is read by one process
//! at a time, and a partition moves only after its old owner drained it.
//!
//! NATS has no consumer groups, so the processes coordinate through a
//! JetStream key-value bucket, `spate-leases-<durable>`, whose `max_age` is
//! the lease time to live (`lease_ttl`):
//!
//! * `m.<instance>` is a member's heartbeat, written every quarter of the
//!   TTL. A member that stops writing disappears from the bucket after the
//!   TTL.
//! * `p.<partition>` holds the owner's instance id. It is taken with
//!   `create` (which fails while another owner holds it) and kept alive with
//!   `update` against the revision the owner last wrote, so two processes can
//!   never both believe they hold it: a failed update means the lease is
//!   lost.
//!
//! Every tick each member lists the live members, sorted, and takes its
//! fair share: `partitions / members`, plus one for the first
//! `partitions % members` members. A member over its share gives partitions
//! back, and one under it claims free ones. Giving back goes through the
//! engine: the coordinator asks the source to revoke the partition, the
//! engine drains and commits it, and only after [`Source::release`] is the
//! lease deleted, so the next owner starts after the last commit.
//!
//! A lease whose refresh fails for longer than half its TTL (the server away)
//! is treated as lost and revoked: it may expire on the server and be taken
//! by another member, and acks of this process would not reach the server
//! anyway. A member that dies without releasing loses its leases after the
//! TTL. Whoever claims a partition binds its durable reset to the ack floor
//! (see the source's `takeover` module), so the dead member's unfinished
//! messages come first, in order, instead of after `ack_wait` behind newer
//! ones.
//!
//! [`Source::release`]: spate_connector::Source::release

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, Consumer};
use async_nats::jetstream::kv::{self, Store};
use async_nats::jetstream::{self as js};
use bytes::Bytes;
use futures_util::StreamExt;
use spate_connector::PartitionId;
use tokio::sync::mpsc;

/// Until when this process may read a partition it holds: the start of
/// the last successful write of its lease plus the TTL. The server removes
/// the lease no earlier than that, so no other process can claim the
/// partition (and reset its durable) before it. The fetch task bounds every
/// pull request by it and the source hands nothing out past it, so a holder
/// whose coordinator stalls (the process starved of CPU, the server slow)
/// stops reading before anyone else can start: its pull requests cannot
/// take messages from the successor's consumer.
#[derive(Debug, Clone)]
pub(crate) struct LeaseValidity {
    origin: Instant,
    /// Milliseconds after `origin`.
    until_ms: Arc<AtomicU64>,
}

impl LeaseValidity {
    /// A validity ending `ttl` after `written`, a moment at or before the
    /// lease write the server acknowledged.
    fn new(written: Instant, ttl: Duration) -> LeaseValidity {
        let validity = LeaseValidity {
            origin: written,
            until_ms: Arc::new(AtomicU64::new(0)),
        };
        validity.extend(written, ttl);
        validity
    }

    /// Moves the end to `ttl` after `written` (never backwards).
    fn extend(&self, written: Instant, ttl: Duration) {
        let until = written.saturating_duration_since(self.origin) + ttl;
        let ms = u64::try_from(until.as_millis()).unwrap_or(u64::MAX);
        self.until_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Ends it now: the lease is lost or given back.
    fn end(&self) {
        self.until_ms.store(0, Ordering::Relaxed);
    }

    /// How long the lease surely lasts from now (zero once over).
    pub(crate) fn remaining(&self) -> Duration {
        let until = Duration::from_millis(self.until_ms.load(Ordering::Relaxed));
        until.saturating_sub(self.origin.elapsed())
    }
}

/// What the coordinator tells the source.
pub(crate) enum LeaseEvent {
    /// This process now holds the partition; its consumer is bound.
    Claimed(PartitionId, Box<Consumer<pull::Config>>, LeaseValidity),
    /// Stop reading the partition and hand it over (lost, or given back).
    Revoke(PartitionId),
}

/// What the source tells the coordinator.
pub(crate) enum LeaseCommand {
    /// The engine released the partition: give the lease up if still ours.
    Released(PartitionId),
    /// The source is closing: give up everything now.
    Close,
}

/// Binds (creating it if missing) partition `partition`'s durable consumer.
pub(crate) type BindConsumer = Box<
    dyn Fn(
            PartitionId,
        )
            -> futures_util::future::BoxFuture<'static, Result<Consumer<pull::Config>, String>>
        + Send
        + Sync,
>;

/// The lease coordinator of one source.
pub(crate) struct Coordinator {
    store: Store,
    instance: String,
    partitions: u32,
    ttl: Duration,
    bind: BindConsumer,
    events: mpsc::UnboundedSender<LeaseEvent>,
    /// Held leases: partition → (revision, last successful refresh, what
    /// the source reads it by).
    held: BTreeMap<PartitionId, (u64, Instant, LeaseValidity)>,
    /// Held leases the source was asked to revoke (given back after release).
    giving_back: BTreeSet<PartitionId>,
}

/// The lease bucket's name for a durable (see [`safe_bucket_name`]).
pub(crate) fn bucket_name(durable: &str) -> String {
    safe_bucket_name("spate-leases", durable)
}

/// `<prefix>-<durable>`, with every character a bucket name does not allow
/// (only letters, digits, `-` and `_` are) replaced by `_`.
pub(crate) fn safe_bucket_name(prefix: &str, durable: &str) -> String {
    let safe: String = durable
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{prefix}-{safe}")
}

/// A process-unique member id: pid and start time, as hex.
fn instance_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{:x}", std::process::id(), nanos % (1 << 48))
}

/// Opens (creating if missing) the lease bucket of `durable`, whose
/// entries live `ttl`.
pub(crate) async fn open_bucket(
    context: &js::Context,
    durable: &str,
    ttl: Duration,
) -> Result<Store, String> {
    let description = format!("spate partition leases of durable `{durable}`");
    open_kv(context, &bucket_name(durable), description, ttl).await
}

/// Opens (creating if missing) the key-value bucket `bucket`; entries older
/// than `max_age` are dropped (zero: kept).
///
/// The bucket's stream is created here, with the key-value conventions
/// (`KV_<bucket>` capturing `$KV.<bucket>.>`, one message per key, rollups
/// allowed, deletes denied, new messages discarded when full), rather than
/// with `create_key_value`: that first queries the account, whose reply
/// async-nats 0.51 cannot read from a 2.9 server.
pub(crate) async fn open_kv(
    context: &js::Context,
    bucket: &str,
    description: String,
    max_age: Duration,
) -> Result<Store, String> {
    if let Ok(store) = context.get_key_value(bucket).await {
        return Ok(store);
    }
    context
        .get_or_create_stream(js::stream::Config {
            name: format!("KV_{bucket}"),
            description: Some(description),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: js::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot create the bucket `{bucket}`: {e}"))?;
    context
        .get_key_value(bucket)
        .await
        .map_err(|e| format!("cannot open the bucket `{bucket}`: {e}"))
}

impl Coordinator {
    /// A coordinator for `partitions` partitions; `events` reach the source.
    pub(crate) fn new(
        store: Store,
        partitions: u32,
        ttl: Duration,
        bind: BindConsumer,
        events: mpsc::UnboundedSender<LeaseEvent>,
    ) -> Coordinator {
        Coordinator {
            store,
            instance: instance_id(),
            partitions,
            ttl,
            bind,
            events,
            held: BTreeMap::new(),
            giving_back: BTreeSet::new(),
        }
    }

    /// Runs until the source closes (or is dropped).
    pub(crate) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<LeaseCommand>) {
        let mut tick = tokio::time::interval(self.ttl / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if self.round().await.is_err() {
                        return; // the source is gone
                    }
                }
                command = commands.recv() => match command {
                    Some(LeaseCommand::Released(partition)) => self.give_back(partition).await,
                    Some(LeaseCommand::Close) | None => {
                        self.leave().await;
                        return;
                    }
                },
            }
        }
    }

    fn member_key(&self) -> String {
        format!("m.{}", self.instance)
    }

    /// One round: heartbeat, refresh held leases, then give back or claim
    /// towards the fair share. Errs only when the source is gone.
    async fn round(&mut self) -> Result<(), ()> {
        if let Err(e) = self
            .store
            .put(self.member_key(), Bytes::from(self.instance.clone()))
            .await
        {
            tracing::warn!(error = %e, "lease heartbeat failed; retrying");
        }
        self.refresh().await?;
        let Some(share) = self.fair_share().await else {
            return Ok(());
        };
        let keeping = self.held.len() - self.giving_back.len();
        if keeping > share {
            // Give back the highest-numbered partitions beyond the share.
            let surplus: Vec<PartitionId> = self
                .held
                .keys()
                .rev()
                .filter(|p| !self.giving_back.contains(p))
                .take(keeping - share)
                .copied()
                .collect();
            for partition in surplus {
                tracing::info!(partition, share, "giving a partition back for balance");
                self.giving_back.insert(partition);
                self.events
                    .send(LeaseEvent::Revoke(partition))
                    .map_err(|_| ())?;
            }
        } else if self.held.len() < share {
            self.claim(share - self.held.len()).await?;
        }
        Ok(())
    }

    /// Keeps held leases alive; revokes the ones lost.
    async fn refresh(&mut self) -> Result<(), ()> {
        let now = Instant::now();
        let mut lost = Vec::new();
        for (partition, (revision, refreshed, validity)) in self.held.iter_mut() {
            let written = Instant::now();
            match self
                .store
                .update(
                    format!("p.{partition}"),
                    Bytes::from(self.instance.clone()),
                    *revision,
                )
                .await
            {
                Ok(next) => {
                    *revision = next;
                    *refreshed = now;
                    validity.extend(written, self.ttl);
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    tracing::warn!(
                        partition = *partition,
                        "partition lease taken over; revoking"
                    );
                    lost.push(*partition);
                }
                Err(e) if now.duration_since(*refreshed) > self.ttl / 2 => {
                    tracing::warn!(partition = *partition, error = %e, "partition lease not refreshed for half its ttl; revoking");
                    lost.push(*partition);
                }
                Err(e) => {
                    tracing::warn!(partition = *partition, error = %e, "partition lease refresh failed; retrying");
                }
            }
        }
        for partition in lost {
            if let Some((_, _, validity)) = self.held.remove(&partition) {
                validity.end();
            }
            // Already being given back: the revoke is on its way.
            if !self.giving_back.remove(&partition) {
                self.events
                    .send(LeaseEvent::Revoke(partition))
                    .map_err(|_| ())?;
            }
        }
        Ok(())
    }

    /// This member's share, from the live members (sorted by id); `None`
    /// when the bucket cannot be listed now.
    async fn fair_share(&self) -> Option<usize> {
        let mut members = BTreeSet::new();
        let mut keys = match self.store.keys().await {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list lease members; retrying");
                return None;
            }
        };
        while let Some(key) = keys.next().await {
            match key {
                Ok(key) => {
                    if let Some(member) = key.strip_prefix("m.") {
                        members.insert(member.to_owned());
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list lease members; retrying");
                    return None;
                }
            }
        }
        members.insert(self.instance.clone());
        let count = members.len();
        let rank = members.iter().position(|m| *m == self.instance)?;
        let partitions = self.partitions as usize;
        Some(partitions / count + usize::from(rank < partitions % count))
    }

    /// Claims up to `wanted` free partitions, starting at a member-specific
    /// point so that members joining together rarely race for one lease.
    async fn claim(&mut self, wanted: usize) -> Result<(), ()> {
        let start = self
            .instance
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
            % self.partitions.max(1);
        let mut claimed = 0;
        for step in 0..self.partitions {
            if claimed == wanted {
                break;
            }
            let partition = (start + step) % self.partitions;
            if self.held.contains_key(&partition) {
                continue;
            }
            let key = format!("p.{partition}");
            let written = Instant::now();
            let revision = match self
                .store
                .create(&key, Bytes::from(self.instance.clone()))
                .await
            {
                Ok(revision) => revision,
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                Err(e) => {
                    tracing::warn!(partition, error = %e, "cannot claim partition lease; retrying");
                    continue;
                }
            };
            match (self.bind)(partition).await {
                Ok(consumer) => {
                    tracing::info!(partition, "partition lease claimed");
                    let validity = LeaseValidity::new(written, self.ttl);
                    self.held
                        .insert(partition, (revision, Instant::now(), validity.clone()));
                    self.events
                        .send(LeaseEvent::Claimed(partition, Box::new(consumer), validity))
                        .map_err(|_| ())?;
                    claimed += 1;
                }
                Err(e) => {
                    tracing::warn!(partition, error = %e, "cannot bind the partition's consumer; lease given back");
                    let _ = self
                        .store
                        .delete_expect_revision(&key, Some(revision))
                        .await;
                }
            }
        }
        Ok(())
    }

    /// Deletes a released partition's lease if this member still holds it.
    async fn give_back(&mut self, partition: PartitionId) {
        self.giving_back.remove(&partition);
        if let Some((revision, _, validity)) = self.held.remove(&partition) {
            validity.end();
            if let Err(e) = self
                .store
                .delete_expect_revision(format!("p.{partition}"), Some(revision))
                .await
            {
                tracing::warn!(partition, error = %e, "cannot delete partition lease; it expires after lease_ttl");
            }
        }
    }

    /// Gives every lease and the membership up (source closing).
    async fn leave(&mut self) {
        let partitions: Vec<PartitionId> = self.held.keys().copied().collect();
        for partition in partitions {
            self.give_back(partition).await;
        }
        let _ = self.store.delete(self.member_key()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_read_only_until_ttl_after_its_last_write_and_never_after_it_ends() {
        let ttl = Duration::from_secs(10);
        let written = Instant::now();
        let validity = LeaseValidity::new(written, ttl);
        let remaining = validity.remaining();
        assert!(remaining <= ttl && remaining > ttl - Duration::from_secs(1));
        // A refresh written later moves the end; an older write never
        // shortens it.
        validity.extend(written + Duration::from_secs(5), ttl);
        assert!(validity.remaining() > ttl);
        validity.extend(written, ttl);
        assert!(validity.remaining() > ttl);
        // The source's copy sees what the coordinator does.
        let seen_by_source = validity.clone();
        validity.end();
        assert_eq!(seen_by_source.remaining(), Duration::ZERO);
    }
}
