//! The JetStream source: durable pull consumers read as partitions,
//! acknowledged only behind finished events (see the module above for the
//! rules it keeps). One consumer is one partition: the stream's single
//! durable (shared by every process, a work queue), or with `partitions: N`
//! one durable per subject partition, each leased to one process at a time
//! (see [`leases`](super::leases)).

mod checks;
mod partition;
mod takeover;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, Consumer};
use async_nats::jetstream::{self as js, stream};
use async_trait::async_trait;
use spate_connector::{
    CommitPosition, Event, PartitionId, Source, SourceBuilder, SourceError, SourceMessage,
    TransactionSession, TransactionalTarget,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::leases::{self, BindConsumer, Coordinator, LeaseCommand, LeaseEvent};
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

impl JetStreamSourceBuilder {
    /// How long an unfinished message may stay away before it is handed
    /// out again: `ack_wait`, or `lease_ttl` if larger with partitions.
    fn redelivery_after(&self) -> Duration {
        match &self.partitioning {
            Partitioning::Subjects { lease_ttl, .. } => self.ack_wait.max(*lease_ttl),
            Partitioning::Single { .. } => self.ack_wait,
        }
    }

    async fn bind_stream(
        &self,
        context: &js::Context,
        unavailable: &impl Fn(String) -> SourceError,
        fatal: &impl Fn(String) -> SourceError,
    ) -> Result<stream::Stream, SourceError> {
        let url = self.connect.display_url();
        if self.subjects.is_empty() {
            return context.get_stream(&self.stream).await.map_err(|e| {
                let message = format!("cannot bind stream `{}` at `{url}`: {e}", self.stream);
                match e.kind() {
                    js::context::GetStreamErrorKind::JetStream(inner) if inner.code() == 404 => {
                        fatal(format!(
                            "{message}; create it, or set `subjects` so spate creates it"
                        ))
                    }
                    _ => unavailable(message),
                }
            });
        }
        context
            .get_or_create_stream(stream::Config {
                name: self.stream.clone(),
                subjects: self.subjects.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| {
                let message = format!(
                    "cannot create or bind stream `{}` at `{url}`: {e}",
                    self.stream
                );
                match e.kind() {
                    js::context::CreateStreamErrorKind::TimedOut
                    | js::context::CreateStreamErrorKind::JetStreamUnavailable => unavailable(
                        format!("{message}; is the server running with JetStream (`-js`)?"),
                    ),
                    _ => fatal(message),
                }
            })
    }

    /// The consumer configuration of partition `partition`.
    fn consumer_config(&self, partition: PartitionId) -> pull::Config {
        let (durable, filter) = match &self.partitioning {
            Partitioning::Single { filter_subject } => (
                self.durable.clone(),
                filter_subject.clone().unwrap_or_default(),
            ),
            Partitioning::Subjects { subject, .. } => (
                format!("{}-{partition}", self.durable),
                subject.replace("{partition}", &partition.to_string()),
            ),
        };
        pull::Config {
            durable_name: Some(durable),
            filter_subject: filter,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_ack_pending: self.max_ack_pending,
            ..Default::default()
        }
    }
}

/// Creates or binds a durable consumer, with the error a user can act on.
async fn bind_consumer(
    stream: &stream::Stream,
    stream_name: &str,
    config: pull::Config,
) -> Result<Consumer<pull::Config>, (bool, String)> {
    let durable = config.durable_name.clone().unwrap_or_default();
    stream.create_consumer(config).await.map_err(|e| {
        let message =
            format!("cannot create or bind durable consumer `{durable}` on stream `{stream_name}`: {e}");
        match e.kind() {
            js::stream::ConsumerErrorKind::JetStream(_) => (
                true,
                format!("{message}; an existing consumer of that name must be a pull consumer whose settings can be updated"),
            ),
            _ => (false, message),
        }
    })
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
        let name = format!("jetstream:{}", self.stream);
        let unavailable = |message: String| SourceError::Unavailable {
            source_name: name.clone(),
            message,
        };
        let fatal = |message: String| SourceError::Fatal {
            source_name: name.clone(),
            message,
        };
        let client = self.connect.connect(&name).await.map_err(unavailable)?;
        let context = js::new(client.clone());
        let stream = self.bind_stream(&context, &unavailable, &fatal).await?;
        let (feed_tx, feed) = mpsc::unbounded_channel();
        let mut readers = BTreeMap::new();
        let mut leases = None;
        let mut binder = None;
        match &self.partitioning {
            Partitioning::Single { .. } => {
                let consumer = bind_consumer(&stream, &self.stream, self.consumer_config(0))
                    .await
                    .map_err(|(is_fatal, message)| {
                        if is_fatal {
                            fatal(message)
                        } else {
                            unavailable(message)
                        }
                    })?;
                readers.insert(
                    0,
                    PartitionReader::start(0, consumer, self.fetch_wait, feed_tx.clone(), None),
                );
            }
            Partitioning::Subjects {
                count, lease_ttl, ..
            } => {
                let store = leases::open_bucket(&context, &self.durable, *lease_ttl)
                    .await
                    .map_err(unavailable)?;
                let floors = leases::open_kv(
                    &context,
                    &takeover::floors_bucket(&self.durable),
                    format!(
                        "spate: the ack floors of durable `{}`'s partitions",
                        self.durable
                    ),
                    Duration::ZERO,
                )
                .await
                .map_err(unavailable)?;
                let partition_binder = Arc::new(PartitionBinder {
                    stream: stream.clone(),
                    stream_name: self.stream.clone(),
                    configs: (0..*count).map(|p| self.consumer_config(p)).collect(),
                    floors,
                });
                let shared = partition_binder.clone();
                let bind: BindConsumer = Box::new(move |partition| {
                    let binder = shared.clone();
                    Box::pin(async move { binder.bind_from_ack_floor(partition).await })
                });
                binder = Some(partition_binder);
                let (events_tx, events) = mpsc::unbounded_channel();
                let (commands, commands_rx) = mpsc::unbounded_channel();
                let coordinator = Coordinator::new(store, *count, *lease_ttl, bind, events_tx);
                let task = tokio::spawn(coordinator.run(commands_rx));
                leases = Some(LeaseLink {
                    events,
                    commands,
                    task,
                });
            }
        }
        let progress_every = self.ack_wait / 2;
        let mut progress_tick = tokio::time::interval(progress_every / 2);
        progress_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Box::new(JetStreamSource {
            name,
            stream: Arc::from(self.stream.as_str()),
            client,
            feed_tx,
            feed,
            readers,
            leases,
            binder,
            keys: KeyRule {
                key_token: self.key_token,
            },
            progress_every,
            progress_tick,
            fetch_wait: self.fetch_wait,
            cluster: self.connect.display_url(),
            redelivery_after: self.redelivery_after(),
            exactly_once: false,
        }))
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
    /// An exactly-once session is open: acks wait for the server's reply.
    exactly_once: bool,
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

    fn tell_coordinator(&self, command: LeaseCommand) {
        if let Some(leases) = &self.leases {
            let _ = leases.commands.send(command);
        }
    }

    async fn handle_lease(&mut self, event: LeaseEvent) {
        match event {
            LeaseEvent::Claimed(partition, consumer, validity) => {
                if !self.readers.contains_key(&partition) {
                    let reader = PartitionReader::start(
                        partition,
                        *consumer,
                        self.fetch_wait,
                        self.feed_tx.clone(),
                        Some(validity),
                    );
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
                let reader = PartitionReader::start(
                    partition,
                    consumer,
                    self.fetch_wait,
                    self.feed_tx.clone(),
                    validity,
                );
                self.readers.insert(partition, reader);
            }
            Err(e) => {
                tracing::warn!(source = %self.name, partition, error = %e, "cannot restart the partition from its ack floor; giving its lease up");
                self.tell_coordinator(LeaseCommand::Released(partition));
            }
        }
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

    fn dead_lettered(&mut self, partition: PartitionId, offset: u64) {
        if let Some(reader) = self.readers.get_mut(&partition) {
            if reader.held.contains_key(&offset) {
                reader.terminated.insert(offset);
            }
        }
    }

    async fn begin_exactly_once(&mut self) -> Result<Box<dyn TransactionSession>, SourceError> {
        self.exactly_once = true;
        Ok(Box::new(JetStreamTransaction::new(
            format!("{}:exactly-once", self.name),
            self.cluster.clone(),
            self.client.clone(),
            self.redelivery_after,
        )))
    }

    async fn release(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError> {
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
