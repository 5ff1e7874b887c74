//! The Kafka source: a consumer-group member whose offsets move only when
//! the engine commits finished events.
//!
//! Capabilities `{exactly_once: true, durable_positions: true, resumable:
//! true}`: the group's committed offsets are the durable positions, and
//! [`Source::begin_exactly_once`] opens a [`KafkaTransaction`] that commits
//! them together with output records. Under `exactly_once` into a database
//! the database stores the positions (under `topic/partition`, see
//! [`Source::partition_name`]) and [`Source::resume_from`] moves each newly
//! assigned partition to its stored offset — a seek done on the poll thread,
//! so what was fetched from the group's offset before it is dropped —
//! wherever the group's own offset is (it trails the database's after a
//! crash between the two commits, and is missing for a new group).
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `topics` | — | topic names to read (a list, or one name); exactly one of `topics` and `topic_pattern` |
//! | `topic_pattern` | — | a regular expression; every matching topic is read (anchored: given to librdkafka as `^…`) |
//! | `group_id` | required | consumer group shared by every process of the pipeline |
//! | `assignment` | `cooperative` | `cooperative` (cooperative-sticky: a rebalance moves only the partitions that change owner) or `eager` (range, roundrobin: every rebalance revokes everything) |
//! | `group_instance_id` | none | static membership: a restart within `session_timeout` keeps the partitions without a rebalance; unique per process |
//! | `transactional_id` | `spate-{group_id}-{group_instance_id}` | transactional id for `delivery: exactly_once`; must stay the same across restarts of one process and differ between processes |
//! | `start` | `earliest` | where a partition with no committed offset starts: `earliest` or `latest` |
//! | `isolation` | `read_committed` | `read_committed` skips records of open and aborted transactions; `read_uncommitted` reads them |
//! | `session_timeout` | librdkafka's (45s) | how long the group waits for a silent member before reassigning its partitions |
//! | `commit_timeout` | `10s` | how long a commit waits for the group coordinator before it fails retryably (it may still complete later; the next commit waits for it first) |
//! | `bootstrap_servers`, `connect_timeout`, `tls*`, `sasl_*`, `security`, `properties` | | see [`config`](crate::config) |
//!
//! # Events
//!
//! Key, payload (empty for a tombstone), headers in order, the record's
//! timestamp, and [`Position`](spate_connector::Position) `{stream: topic,
//! partition, offset}`. Partition ids are Kafka's partition numbers when
//! `topics` names one topic, and ids handed out in order of first
//! assignment otherwise (see [`consumer`](crate::consumer)).
//!
//! # How the delivery rules are kept
//!
//! 1. **Stage on read, apply on commit.** `enable.auto.commit` and
//!    `enable.auto.offset.store` are off; [`Source::commit`] commits exactly
//!    the positions the engine gives (asynchronously, reporting success
//!    only once the group coordinator confirmed them; no thread waits for
//!    it). A committed offset is "the next offset to read", as in
//!    [`CommitPosition`]. Once an exactly-once session is open,
//!    [`Source::commit`] does nothing: the session's transactions carry the
//!    offsets.
//! 2. **Order.** One poll thread reads; events of a partition keep
//!    librdkafka's order, and an event whose offset is not above the last one
//!    taken in for its partition is dropped (librdkafka can hand one message
//!    twice when a pause races a poll).
//! 3. **Pause means pause.** After [`Source::pause`] no event of those
//!    partitions is handed out until [`Source::resume`]; events fetched
//!    meanwhile wait in the source, in order, and go out first on resume.
//!    Fetching itself is paused in librdkafka only once a partition holds
//!    [`HOLD_BYTES`] in the source, and resumed when it drained to half:
//!    pausing librdkafka drops what it had prefetched, so pausing it on every
//!    engine pause made each pause/resume cycle fetch the same records again
//!    (a 3.3× throughput loss at a 5,000-event bound in `benches/kafka_e2e`).
//!    Memory stays bounded by `HOLD_BYTES` per partition plus one channel
//!    of batches (8 batches of at most 1 MiB plus one message each).
//!    librdkafka resumes fetching after the last message it handed to the
//!    poll thread, so nothing is lost or repeated.
//! 4. **Revocation is a hand-over.** The rebalance callback returns
//!    [`SourceMessage::Revoked`] and holds the rebalance until
//!    [`Source::release`]; see [`consumer`](crate::consumer). Held events of
//!    a revoked partition are dropped (they were never handed out, and the
//!    next owner reads them from the committed offset).
//! 5. **Cancel safety.** Everything received lives in `self`; `next` only
//!    awaits a channel receive.
//!
//! [`Source::lag`] is the partition's end (last stable offset under
//! `read_committed`, else high watermark) from librdkafka's statistics
//! (every 5 s unless `properties` sets `statistics.interval.ms`), minus the
//! offset after the last event handed to the engine.
//!
//! # Modules
//!
//! `settings` reads the keys; `hold` files fetched events and hands them
//! out (rule 3); `rebalance` takes in assignments and revocations (rule
//! 4); `seek` resumes partitions from positions a database stored; `commit`
//! is the group commit outside exactly-once sessions (rule 1).
//!
//! [`KafkaTransaction`]: crate::transaction::KafkaTransaction

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::Consumer;
use spate_connector::{
    CommitPosition, Event, PartitionId, Source, SourceBuilder, SourceError, SourceMessage,
    StoredPosition, TransactionSession, TransactionalTarget,
};
use tokio::sync::mpsc;

use crate::consumer::{
    poll_loop, CommitQueue, Interner, Item, KafkaConsumer, Shared, SpateContext,
};
use crate::error::{consumer_failure, Failure};
use crate::probe;
use crate::transaction::KafkaTransaction;

mod commit;
mod hold;
mod rebalance;
mod seek;
mod settings;

pub use settings::{Assignment, SourceSettings, Subscription, DEFAULT_COMMIT_TIMEOUT};

/// Items (most of them batches of events, see
/// [`BATCH_EVENTS`](crate::consumer::BATCH_EVENTS)) the poll thread may
/// queue ahead of the source.
const CHANNEL_CAPACITY: usize = 8;

/// Bytes of fetched events a partition may hold in the source before
/// fetching it is paused in librdkafka (resumed at half).
pub const HOLD_BYTES: usize = 2 << 20;
/// Longest `close` waits for the consumer to leave the group.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds [`KafkaSource`]s.
pub struct KafkaSourceBuilder {
    settings: Arc<SourceSettings>,
}

impl KafkaSourceBuilder {
    /// A builder for these settings (no I/O until `build`).
    pub fn new(settings: SourceSettings) -> Self {
        Self {
            settings: Arc::new(settings),
        }
    }
}

#[async_trait]
impl SourceBuilder for KafkaSourceBuilder {
    async fn build(&self) -> Result<Box<dyn Source>, SourceError> {
        Ok(Box::new(KafkaSource::open(self.settings.clone()).await?))
    }

    /// Reaches the cluster as `build` does, and checks that every topic
    /// named in `topics` exists; joins no group.
    async fn check(&self) -> Result<(), SourceError> {
        let settings = self.settings.clone();
        let name = settings.name();
        crate::probe::off_runtime(move || {
            let topics: Vec<&str> = match &settings.subscription {
                Subscription::Topics(topics) => topics.iter().map(String::as_str).collect(),
                Subscription::Pattern(_) => Vec::new(),
            };
            probe::probe_consumer(
                &settings.consumer_config(),
                &settings.connection.bootstrap_servers,
                settings.connection.connect_timeout,
                &topics,
            )
        })
        .await
        .map_err(|f| f.into_source(&name))
    }

    fn accepts(&self, target: &TransactionalTarget) -> Result<(), String> {
        crate::transaction::accepts(&self.settings.connection.bootstrap_servers, target)
    }
}

/// A consumer-group member as a spate source.
pub struct KafkaSource {
    name: String,
    settings: Arc<SourceSettings>,
    shared: Arc<Shared>,
    consumer: Option<Arc<KafkaConsumer>>,
    thread: Option<JoinHandle<()>>,
    rx: mpsc::Receiver<Item>,
    /// Control messages and errors, returned before any event.
    control: VecDeque<Result<SourceMessage, SourceError>>,
    /// Received events per partition, not handed out yet.
    queues: BTreeMap<PartitionId, VecDeque<Event>>,
    assigned: BTreeSet<PartitionId>,
    paused: BTreeSet<PartitionId>,
    /// Partitions whose fetching is paused in librdkafka (see rule 3).
    fetch_paused: BTreeSet<PartitionId>,
    /// Bytes held in `queues`, per partition.
    held_bytes: HashMap<PartitionId, usize>,
    /// Highest offset taken in per partition since its assignment.
    last_offset: HashMap<PartitionId, u64>,
    /// Offset after the last event handed to the engine, per partition.
    handed: HashMap<PartitionId, u64>,
    /// Where the next batch starts its round over the partitions.
    cursor: PartitionId,
    /// Group commits and their outcomes (`None` once stopped: it must go
    /// before the consumer does).
    commits: Option<CommitQueue>,
    /// An exactly-once session is open: its transactions commit the
    /// offsets, and [`Source::commit`] does nothing.
    exactly_once: bool,
    /// Partitions assigned since the last [`Source::resume_from`].
    fresh: BTreeSet<PartitionId>,
    /// Partitions moving to a stored position: their events are dropped
    /// until the poll thread reports the seek done.
    seeking: HashMap<PartitionId, u64>,
    /// Per partition, the stored position it resumed from: events below it
    /// are dropped (what the database already holds).
    floor: HashMap<PartitionId, u64>,
}

impl KafkaSource {
    /// Creates the consumer, checks that the cluster answers within
    /// `connect_timeout`, subscribes and starts the poll thread.
    pub async fn open(settings: Arc<SourceSettings>) -> Result<Self, SourceError> {
        let name = settings.name();
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let single_topic = match &settings.subscription {
            Subscription::Topics(topics) if topics.len() == 1 => Some(topics[0].as_str()),
            _ => None,
        };
        let shared = Arc::new(Shared::new(
            name.clone(),
            Interner::new(single_topic),
            tx,
            settings.handover_limit(),
            settings.read_committed,
        ));
        let consumer = {
            let settings = settings.clone();
            let shared = shared.clone();
            // Creating, probing and (on failure) closing a consumer block.
            tokio::task::spawn_blocking(move || connect(&settings, shared))
                .await
                .map_err(|e| Failure::fatal(format!("starting the consumer failed: {e}")))
                .and_then(|r| r)
                .map_err(|f| f.into_source(&name))?
        };
        let thread = {
            let consumer = consumer.clone();
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("spate-kafka-poll".to_owned())
                .spawn(move || poll_loop(consumer, shared))
                .map_err(|e| SourceError::Fatal {
                    source_name: name.clone(),
                    message: format!("cannot start the poll thread: {e}"),
                })?
        };
        let commits = CommitQueue::new(consumer.clone());
        Ok(Self {
            name,
            settings,
            shared,
            consumer: Some(consumer),
            thread: Some(thread),
            rx,
            control: VecDeque::new(),
            queues: BTreeMap::new(),
            assigned: BTreeSet::new(),
            paused: BTreeSet::new(),
            fetch_paused: BTreeSet::new(),
            held_bytes: HashMap::new(),
            last_offset: HashMap::new(),
            handed: HashMap::new(),
            cursor: 0,
            commits: Some(commits),
            exactly_once: false,
            fresh: BTreeSet::new(),
            seeking: HashMap::new(),
            floor: HashMap::new(),
        })
    }

    fn consumer(&self) -> Result<&Arc<KafkaConsumer>, SourceError> {
        self.consumer.as_ref().ok_or_else(|| SourceError::Fatal {
            source_name: self.name.clone(),
            message: "the source is closed".to_owned(),
        })
    }

    fn servers(&self) -> &str {
        &self.settings.connection.bootstrap_servers
    }

    /// Files one item from the poll thread.
    fn accept(&mut self, item: Item) {
        match item {
            Item::Events(events) => {
                for event in events {
                    self.hold(event);
                }
            }
            Item::Assigned(ids) => self.assigned(ids),
            Item::Revoked(ids) => self.revoked(ids),
            Item::Error(error) => {
                // One error at a time is enough; librdkafka repeats itself
                // while a broker is away.
                if self.control.iter().any(Result::is_err) {
                    return;
                }
                let failure = consumer_failure(&error, self.servers());
                let failure = failure.into_source(&self.name);
                spate_connector::internal_events::FetchError {
                    connector: "kafka",
                    name: &self.name,
                    error: &failure,
                    context: "Kafka consumer error",
                }
                .emit();
                self.control.push_back(Err(failure));
            }
            Item::Seeked { id, offset, failed } => self.seeked(id, offset, failed),
            Item::Stopped(why) => self.control.push_back(Err(SourceError::Fatal {
                source_name: self.name.clone(),
                message: format!("the Kafka poll thread stopped: {why}"),
            })),
        }
    }

    /// Stops the poll thread and lets go of the consumer; the thread closes
    /// it (leaving the group).
    fn stop(&mut self) -> Option<(Arc<KafkaConsumer>, JoinHandle<()>)> {
        self.shared.shut_down();
        self.rx.close();
        self.commits = None;
        let consumer = self.consumer.take()?;
        let thread = self.thread.take()?;
        Some((consumer, thread))
    }
}

#[async_trait]
impl Source for KafkaSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn next(&mut self, max_events: usize) -> Result<SourceMessage, SourceError> {
        let max_events = max_events.max(1);
        loop {
            if let Some(message) = self.control.pop_front() {
                return message;
            }
            let events = self.take_events(max_events);
            if !events.is_empty() {
                return Ok(SourceMessage::Events(events));
            }
            if self.consumer.is_none() {
                return Err(SourceError::Fatal {
                    source_name: self.name.clone(),
                    message: "the source is closed".to_owned(),
                });
            }
            // Both branches are cancel safe: nothing is taken from the
            // channel unless the branch completes.
            tokio::select! {
                item = self.rx.recv() => match item {
                    Some(item) => self.accept(item),
                    None => self.accept(Item::Stopped("its channel closed".to_owned())),
                },
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
                        self.accept(Item::Stopped("it ended unexpectedly".to_owned()));
                    }
                }
            }
            // Take in whatever else is already there (bounded by the
            // channel), so one call returns a full batch when it can.
            while let Ok(item) = self.rx.try_recv() {
                self.accept(item);
            }
        }
    }

    fn pause(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError> {
        // Handing out stops here; fetching stops once the partition holds
        // `HOLD_BYTES` (rule 3).
        self.paused.extend(
            partitions
                .iter()
                .copied()
                .filter(|id| self.assigned.contains(id)),
        );
        Ok(())
    }

    fn resume(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError> {
        for id in partitions {
            self.paused.remove(id);
        }
        Ok(())
    }

    async fn commit(&mut self, positions: &[CommitPosition]) -> Result<(), SourceError> {
        self.commit_positions(positions).await
    }

    async fn release(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError> {
        self.shared.release(partitions);
        Ok(())
    }

    /// `topic/partition`: stable across processes and restarts, unlike
    /// the ids of a multi-topic source.
    fn partition_name(&self, partition: PartitionId) -> String {
        match self.shared.interner().lookup(partition) {
            Some((topic, number)) => format!("{topic}/{number}"),
            None => format!("#{partition}"),
        }
    }

    /// Moves each partition assigned since the last call to its stored
    /// position (a seek on the poll thread; events fetched before it are
    /// dropped), whether the group's offset trails it (the usual case: the
    /// group commit follows the database's) or not (a new group, or
    /// `start: latest`). Partitions without a stored position start from the
    /// group's offset as usual.
    fn resume_from(&mut self, positions: &[StoredPosition]) -> Result<(), SourceError> {
        self.seek_to_stored(positions)
    }

    fn lag(&self, partition: PartitionId) -> Option<u64> {
        let offsets = self.shared.offsets(partition)?;
        let position = self.handed.get(&partition).copied().or(offsets.position)?;
        Some(offsets.end.saturating_sub(position))
    }

    async fn begin_exactly_once(&mut self) -> Result<Box<dyn TransactionSession>, SourceError> {
        let consumer = self.consumer()?.clone();
        let session = KafkaTransaction::open(
            &self.name,
            self.settings.clone(),
            consumer,
            self.shared.clone(),
        )
        .await?;
        self.exactly_once = true;
        Ok(Box::new(session))
    }

    async fn close(&mut self) -> Result<(), SourceError> {
        let Some((consumer, thread)) = self.stop() else {
            return Ok(());
        };
        self.queues.clear();
        let joined = tokio::task::spawn_blocking(move || {
            drop(consumer);
            thread.join().is_ok()
        });
        match tokio::time::timeout(CLOSE_TIMEOUT, joined).await {
            Ok(Ok(true)) => Ok(()),
            Ok(_) => Err(SourceError::Fatal {
                source_name: self.name.clone(),
                message: "the Kafka poll thread panicked while closing".to_owned(),
            }),
            Err(_) => {
                tracing::warn!(source = %self.name, "the consumer did not leave the group within {CLOSE_TIMEOUT:?}; leaving it to finish in the background");
                Ok(())
            }
        }
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        // The poll thread notices within one poll interval, ends, and closes
        // the consumer; nothing here blocks.
        let _ = self.stop();
    }
}

/// Creates the consumer, waits for the cluster's first metadata answer and
/// subscribes. Blocking.
fn connect(settings: &SourceSettings, shared: Arc<Shared>) -> Result<Arc<KafkaConsumer>, Failure> {
    let servers = &settings.connection.bootstrap_servers;
    let consumer: KafkaConsumer = settings
        .consumer_config()
        .create_with_context(SpateContext::new(shared))
        .map_err(|e| {
            Failure::fatal(format!(
                "cannot create a Kafka consumer for `{servers}`: {e}"
            ))
        })?;
    let metadata = probe::metadata(
        servers,
        settings.connection.connect_timeout,
        |slice| consumer.fetch_metadata(None, slice),
        || probe::consumer_transport_error(&consumer),
    )?;
    match &settings.subscription {
        Subscription::Topics(topics) => {
            for topic in topics {
                if !metadata.topics().iter().any(|t| t.name() == topic) {
                    tracing::warn!(%topic, servers = %servers, "topic does not exist (yet); reading starts once it does");
                }
            }
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer.subscribe(&names)
        }
        Subscription::Pattern(pattern) => consumer.subscribe(&[pattern.as_str()]),
    }
    .map_err(|e| Failure::fatal(format!("cannot subscribe: {e}; check `topics` / `topic_pattern`")))?;
    Ok(Arc::new(consumer))
}
