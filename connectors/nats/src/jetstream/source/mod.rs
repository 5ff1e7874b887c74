//! The JetStream source: durable pull consumers read as partitions,
//! acknowledged only behind finished events (see the module above for the
//! rules it keeps). One consumer is one partition: the stream's single
//! durable (shared by every process, a work queue), or with `partitions: N`
//! one durable per subject partition, each leased to one process at a time
//! (see [`leases`](super::leases)).
//!
//! [`bind`] opens the source (stream, consumers, lease coordinator),
//! [`partition`] reads one partition and runs its fetch task,
//! [`handover`] claims, revokes and releases partitions, [`takeover`]
//! resets a claimed partition's durable to its ack floor, [`ack`]
//! acknowledges what the engine committed, [`checks`] are the checks of
//! `validate --connect`.

mod ack;
mod bind;
mod checks;
mod handover;
mod partition;
mod takeover;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use spate_connector::{
    CommitPosition, Event, PartitionId, Source, SourceBuilder, SourceError, SourceMessage,
    TransactionSession, TransactionalTarget,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::ack_ledger::AckLedger;
use super::leases::{LeaseCommand, LeaseEvent};
use super::JetStreamTransaction;
use crate::connection::ConnectSettings;
use partition::{Feed, FeedTag, KeyRule, PartitionReader, Phase};
use takeover::PartitionBinder;

/// How the stream is split into partitions.
#[derive(Debug, Clone)]
pub(super) enum Partitioning {
    /// One durable consumer (`durable`, optionally filtered), partition 0,
    /// shared by every process as a work queue.
    Single { filter_subject: Option<String> },
    /// `count` durables `<durable>-<p>`, each filtered on `subject` with
    /// `{partition}` replaced by `p`, leased to one process at a time.
    Subjects {
        count: u32,
        subject: String,
        lease_ttl: Duration,
    },
}

pub(super) struct JetStreamSourceBuilder {
    pub(super) stream: String,
    pub(super) subjects: Vec<String>,
    pub(super) durable: String,
    pub(super) partitioning: Partitioning,
    pub(super) key_token: Option<usize>,
    pub(super) max_ack_pending: i64,
    pub(super) ack_wait: Duration,
    pub(super) fetch_wait: Duration,
    pub(super) connect: ConnectSettings,
}

#[async_trait]
impl SourceBuilder for JetStreamSourceBuilder {
    /// Connects as `build` does and checks that the stream exists (or,
    /// with `subjects`, can be created by `build`); creates nothing, binds
    /// no consumer.
    async fn check(&self) -> Result<(), SourceError> {
        self.check_stream().await
    }

    fn accepts(&self, target: &TransactionalTarget) -> Result<(), String> {
        crate::jetstream::exactly_once::accepts(&self.connect.display_url(), target)
    }

    /// Reads the duplicate window of the stream capturing each JetStream
    /// target's subject, as the exactly-once session does before its
    /// first publish, and refuses one too short for this input's
    /// redelivery time.
    async fn check_exactly_once(&self, targets: &[TransactionalTarget]) -> Result<(), SourceError> {
        self.check_windows(targets).await
    }

    async fn build(&self) -> Result<Box<dyn Source>, SourceError> {
        self.open().await
    }
}

/// The source's end of its lease coordinator.
struct LeaseLink {
    events: mpsc::UnboundedReceiver<LeaseEvent>,
    commands: mpsc::UnboundedSender<LeaseCommand>,
    task: JoinHandle<()>,
}

/// What one wait in `next` produced.
enum Woken {
    Feed(FeedTag, Feed),
    Lease(LeaseEvent),
    Tick,
    FeedClosed,
}

/// JetStream durable pull consumers as a partitioned source.
pub struct JetStreamSource {
    name: String,
    stream: Arc<str>,
    client: async_nats::Client,
    feed_tx: mpsc::UnboundedSender<(FeedTag, Feed)>,
    feed: mpsc::UnboundedReceiver<(FeedTag, Feed)>,
    readers: BTreeMap<PartitionId, PartitionReader>,
    /// Present with `partitions:`; absent for the single shared durable.
    leases: Option<LeaseLink>,
    /// With `partitions:`: binds a partition's durable reset to its ack
    /// floor, on a claim and on a restart (see [`takeover`]).
    binder: Option<Arc<PartitionBinder>>,
    keys: KeyRule,
    progress_every: Duration,
    progress_tick: tokio::time::Interval,
    fetch_wait: Duration,
    /// For the exactly-once session: the server URL as configured and the
    /// longest time before an unfinished message is delivered again
    /// (`ack_wait`, or `lease_ttl` if larger with partitions).
    cluster: String,
    redelivery_after: Duration,
    /// An exactly-once session is open: acks wait for the server's reply,
    /// and the session's commit sends them (see [`AckLedger`]).
    exactly_once: bool,
    /// Under `exactly_once`: the handed-out messages, shared with the
    /// session.
    ledger: Option<Arc<AckLedger>>,
}

impl JetStreamSource {
    fn handle_feed(&mut self, tag: FeedTag, item: Feed) -> Result<(), SourceError> {
        let (partition, serial) = tag;
        let Some(reader) = self
            .readers
            .get_mut(&partition)
            .filter(|r| r.serial == serial)
        else {
            // A late message of a partition already given up, or of a
            // reader replaced by a reset: the next owner (or the reset
            // consumer) delivers it again.
            return Ok(());
        };
        match item {
            Feed::Message(message) => {
                reader.receive(&self.name, &self.stream, self.keys, *message);
                Ok(())
            }
            Feed::Done => {
                reader.fetch_in_flight = false;
                Ok(())
            }
            Feed::Error(message) => Err(SourceError::Unavailable {
                source_name: self.name.clone(),
                message: format!(
                    "partition {partition}: {message}; async-nats reconnects by itself, retrying"
                ),
            }),
        }
    }

    /// Waits for a message, a lease decision or the progress tick. Every
    /// branch is cancel safe (channel receives, an interval tick).
    async fn wait(&mut self) -> Woken {
        let leases = self.leases.as_mut().map(|l| &mut l.events);
        tokio::select! {
            item = self.feed.recv() => match item {
                Some((partition, item)) => Woken::Feed(partition, item),
                None => Woken::FeedClosed,
            },
            Some(event) = async {
                match leases {
                    Some(events) => events.recv().await,
                    None => std::future::pending().await,
                }
            } => Woken::Lease(event),
            _ = self.progress_tick.tick() => Woken::Tick,
        }
    }
}

#[async_trait]
impl Source for JetStreamSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn next(&mut self, max_events: usize) -> Result<SourceMessage, SourceError> {
        let max_events = max_events.max(1);
        loop {
            // Take in whatever already arrived (never blocks).
            while let Ok((partition, item)) = self.feed.try_recv() {
                self.handle_feed(partition, item)?;
            }
            while let Some(event) = self.leases.as_mut().and_then(|l| l.events.try_recv().ok()) {
                self.handle_lease(event).await;
            }
            let assigned: Vec<PartitionId> = self
                .readers
                .values_mut()
                .filter(|r| r.phase == Phase::Unassigned)
                .map(|r| {
                    r.phase = Phase::Assigned;
                    r.id
                })
                .collect();
            if !assigned.is_empty() {
                return Ok(SourceMessage::Assigned(assigned));
            }
            let revoked: Vec<PartitionId> = self
                .readers
                .values_mut()
                .filter(|r| {
                    r.phase == Phase::Assigned && (r.revoke_wanted || !r.out_of_order.is_empty())
                })
                .map(|r| {
                    if !r.revoke_wanted {
                        tracing::info!(
                            source = %self.name,
                            partition = r.id,
                            redelivered = r.out_of_order.len(),
                            "redeliveries below the last handed-out sequence; handing the partition over to restart it in order"
                        );
                    }
                    r.phase = Phase::Revoked;
                    r.id
                })
                .collect();
            if !revoked.is_empty() {
                return Ok(SourceMessage::Revoked(revoked));
            }
            let active = self
                .readers
                .values()
                .filter(|r| r.phase == Phase::Assigned && !r.paused)
                .count();
            if active > 0 {
                let share = max_events.div_ceil(active);
                let mut events: Vec<Event> = Vec::new();
                for reader in self.readers.values_mut() {
                    if reader.phase == Phase::Assigned && !reader.paused && !reader.lease_lapsed() {
                        let room = share.min(max_events - events.len());
                        reader.hand_out(room, &mut events);
                    }
                }
                if !events.is_empty() {
                    return Ok(SourceMessage::Events(events));
                }
                for reader in self.readers.values_mut() {
                    if reader.phase == Phase::Assigned
                        && !reader.paused
                        && reader.staged.is_empty()
                        && !reader.fetch_in_flight
                        && !reader.request(share)
                    {
                        return Err(SourceError::Fatal {
                            source_name: self.name.clone(),
                            message: format!(
                                "the JetStream fetch task of partition {} stopped",
                                reader.id
                            ),
                        });
                    }
                }
            }
            match self.wait().await {
                Woken::Feed(partition, item) => self.handle_feed(partition, item)?,
                Woken::Lease(event) => self.handle_lease(event).await,
                Woken::Tick => {
                    let every = self.progress_every;
                    for reader in self.readers.values_mut() {
                        reader.send_progress(every).await;
                    }
                }
                Woken::FeedClosed => {
                    return Err(SourceError::Fatal {
                        source_name: self.name.clone(),
                        message: "the JetStream fetch tasks stopped".to_owned(),
                    })
                }
            }
        }
    }

    fn pause(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError> {
        for partition in partitions {
            if let Some(reader) = self.readers.get_mut(partition) {
                reader.paused = true;
            }
        }
        Ok(())
    }

    fn resume(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError> {
        for partition in partitions {
            if let Some(reader) = self.readers.get_mut(partition) {
                reader.paused = false;
            }
        }
        Ok(())
    }

    async fn commit(&mut self, positions: &[CommitPosition]) -> Result<(), SourceError> {
        let timer = spate_connector::internal_events::CommitTimer::start("jetstream");
        let outcome = self.ack_committed(positions).await;
        timer.finish(
            &self.name,
            &outcome,
            "acknowledging committed messages failed",
        );
        outcome
    }

    fn dead_lettered(&mut self, partition: PartitionId, offset: u64) {
        if let Some(reader) = self.readers.get_mut(&partition) {
            if reader.held.contains_key(&offset) {
                reader.terminated.insert(offset);
                if let Some(ledger) = &reader.ledger {
                    ledger.terminate(partition, offset);
                }
            }
        }
    }

    async fn begin_exactly_once(&mut self) -> Result<Box<dyn TransactionSession>, SourceError> {
        self.exactly_once = true;
        let ledger = Arc::new(AckLedger::default());
        for reader in self.readers.values_mut() {
            reader.ledger = Some(ledger.clone());
        }
        self.ledger = Some(ledger.clone());
        Ok(Box::new(JetStreamTransaction::new(
            format!("{}:exactly-once", self.name),
            self.cluster.clone(),
            self.client.clone(),
            self.redelivery_after,
            ledger,
        )))
    }

    async fn release(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError> {
        self.release_partitions(partitions).await
    }

    fn lag(&self, partition: PartitionId) -> Option<u64> {
        self.readers.get(&partition).and_then(|r| r.lag)
    }

    async fn close(&mut self) -> Result<(), SourceError> {
        // Hand unfinished messages back instead of leaving them to
        // `ack_wait`, so another process takes them over soon. The
        // redelivery is delayed by `fetch_wait`: this session's last pull
        // requests may still be open on the server, and a message
        // redelivered to one would be lost until `ack_wait` again.
        let delay = self.fetch_wait + Duration::from_millis(100);
        for reader in self.readers.values_mut() {
            reader.stop_fetching();
            reader.nak_all(&self.name, Some(delay)).await;
        }
        self.readers.clear();
        let _ = self.client.flush().await;
        if let Some(leases) = self.leases.take() {
            let _ = leases.commands.send(LeaseCommand::Close);
            let _ = tokio::time::timeout(Duration::from_secs(5), leases.task).await;
        }
        Ok(())
    }
}

impl Drop for JetStreamSource {
    fn drop(&mut self) {
        if let Some(leases) = &self.leases {
            leases.task.abort();
        }
    }
}
