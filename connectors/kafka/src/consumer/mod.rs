//! The consumer side's machinery: the librdkafka consumer, the thread that
//! polls it, the partition-id interner and the rebalance hand-over.
//!
//! # Threads
//!
//! One dedicated thread per source calls `BaseConsumer::poll` every 100 ms.
//! librdkafka runs rebalance callbacks, statistics and error events on that
//! thread. Everything it receives goes, converted to owned values, into a
//! bounded channel the source reads in `next` (cancel safe: a channel
//! receive). The source calls `commit`, `pause` and `resume` on the same
//! consumer from the engine's task (librdkafka's API is thread safe; a
//! commit runs on tokio's blocking pool).
//!
//! # Hand-over
//!
//! When librdkafka revokes partitions, [`SpateContext::pre_rebalance`] (on
//! the poll thread) sends [`Item::Revoked`] and then blocks the callback
//! until the source calls [`Shared::release`] for every one of them, the
//! source shuts down, or the group's rebalance deadline
//! (`max.poll.interval.ms`) passed (the broker has moved on by then anyway).
//! While the callback blocks, librdkafka keeps the partitions assigned and
//! commits of them from the engine's task go through. Only then does the
//! default rebalance of rdkafka run (`incremental_unassign` for cooperative
//! assignment, `unassign` for eager).
//!
//! # Partition ids
//!
//! With exactly one topic in `topics`, a partition's id is its Kafka
//! partition number. With several topics or a `topic_pattern`, ids are
//! handed out from 0 in the order partitions are first seen and stay the
//! same for the life of the source (not across restarts; Kafka keeps the
//! committed offsets per topic and partition, so nothing depends on that).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use spate_connector::{Event, Headers, PartitionId, Position};
use tokio::sync::mpsc;

/// The consumer type every Kafka source uses.
pub type KafkaConsumer = BaseConsumer<SpateContext>;

/// How long one `poll` call waits; also how quickly the thread notices
/// shutdown.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What the poll thread hands the source.
#[derive(Debug)]
pub enum Item {
    /// A message, converted.
    Event(Event),
    /// Partitions now assigned (their events follow).
    Assigned(Vec<PartitionId>),
    /// Partitions being revoked; the callback waits for their release.
    Revoked(Vec<PartitionId>),
    /// An error librdkafka reported.
    Error(KafkaError),
    /// The poll thread stopped on its own (it panicked); nothing more comes.
    Stopped(String),
    /// A seek the source asked for ([`Shared::seek`]) was done (or failed):
    /// every event of the partition after this item comes from the new
    /// position, every one before it from the old.
    Seeked {
        /// The partition.
        id: PartitionId,
        /// Where it now reads from.
        offset: u64,
        /// Why the seek failed, if it did.
        failed: Option<String>,
    },
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Maps (topic, partition) to the source's partition ids and back.
#[derive(Debug)]
pub struct Interner {
    /// `Some(topic)`: ids are the partition numbers of this one topic.
    direct: Option<Arc<str>>,
    ids: HashMap<(Arc<str>, i32), PartitionId>,
    by_id: Vec<(Arc<str>, i32)>,
    topics: HashMap<String, Arc<str>>,
}

impl Interner {
    /// An interner; `single_topic` makes ids equal partition numbers.
    pub fn new(single_topic: Option<&str>) -> Self {
        Self {
            direct: single_topic.map(Arc::from),
            ids: HashMap::new(),
            by_id: Vec::new(),
            topics: HashMap::new(),
        }
    }

    fn topic(&mut self, topic: &str) -> Arc<str> {
        if let Some(direct) = self.direct.as_ref().filter(|d| &***d == topic) {
            return direct.clone();
        }
        if let Some(t) = self.topics.get(topic) {
            return t.clone();
        }
        let t: Arc<str> = Arc::from(topic);
        self.topics.insert(topic.to_owned(), t.clone());
        t
    }

    /// The id of a partition, handing out a new one if needed, and the
    /// shared topic name.
    pub fn id(&mut self, topic: &str, partition: i32) -> (PartitionId, Arc<str>) {
        let topic = self.topic(topic);
        if self.direct.as_ref() == Some(&topic) {
            if let Ok(id) = PartitionId::try_from(partition) {
                return (id, topic);
            }
        }
        let key = (topic.clone(), partition);
        if let Some(id) = self.ids.get(&key) {
            return (*id, topic);
        }
        let id = self.by_id.len() as PartitionId;
        self.by_id.push(key.clone());
        self.ids.insert(key, id);
        (id, topic)
    }

    /// The id of a partition if it has one already.
    pub fn existing(&self, topic: &str, partition: i32) -> Option<PartitionId> {
        if let Some(direct) = &self.direct {
            return (&**direct == topic)
                .then(|| PartitionId::try_from(partition).ok())
                .flatten();
        }
        self.ids.get(&(Arc::from(topic), partition)).copied()
    }

    /// The topic and partition of an id.
    pub fn lookup(&self, id: PartitionId) -> Option<(Arc<str>, i32)> {
        match &self.direct {
            Some(topic) => i32::try_from(id).ok().map(|p| (topic.clone(), p)),
            None => self.by_id.get(id as usize).cloned(),
        }
    }

    /// The ids of every partition in a list (handing out new ones).
    pub fn ids_of(&mut self, tpl: &TopicPartitionList) -> Vec<PartitionId> {
        let mut ids: Vec<PartitionId> = tpl
            .elements()
            .iter()
            .map(|e| self.id(e.topic(), e.partition()).0)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// A partition list for these ids, each with `offset` (unknown ids are
    /// left out and returned separately).
    pub fn list(
        &self,
        ids: impl IntoIterator<Item = (PartitionId, Offset)>,
    ) -> (TopicPartitionList, Vec<PartitionId>) {
        let mut tpl = TopicPartitionList::new();
        let mut unknown = Vec::new();
        for (id, offset) in ids {
            match self.lookup(id) {
                Some((topic, partition)) => {
                    // Only fails for an offset librdkafka cannot represent.
                    if tpl.add_partition_offset(&topic, partition, offset).is_err() {
                        unknown.push(id);
                    }
                }
                None => unknown.push(id),
            }
        }
        (tpl, unknown)
    }
}

/// A partition's offsets from librdkafka's statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// The partition's end: its last stable offset when reading committed
    /// data, else its high watermark.
    pub end: u64,
    /// The group's committed offset, if any (where reading starts before
    /// anything was handed out).
    pub position: Option<u64>,
}

/// State shared by the poll thread (through the consumer context), the
/// source and its transaction session.
pub struct Shared {
    /// Partition ids.
    pub interner: Mutex<Interner>,
    /// Where the poll thread sends what it receives.
    pub tx: mpsc::Sender<Item>,
    /// Set once the source closes or is dropped: callbacks stop blocking
    /// and sending, the poll thread ends.
    shutdown: AtomicBool,
    /// Revoked partitions the engine has not released yet.
    unreleased: Mutex<BTreeSet<PartitionId>>,
    released: Condvar,
    /// Longest a revocation waits for its release.
    handover_limit: Duration,
    /// Per partition id, from librdkafka's statistics.
    offsets: Mutex<HashMap<PartitionId, PartitionOffsets>>,
    /// Seeks the poll thread is to do before its next poll.
    seeks: Mutex<Vec<(PartitionId, u64)>>,
    /// Whether the end of a partition is its last stable offset.
    read_committed: bool,
    /// For log lines.
    name: String,
}

impl Shared {
    /// Shared state; `handover_limit` bounds a revocation's wait;
    /// `read_committed` says where a partition ends for [`Shared::offsets`].
    pub fn new(
        name: String,
        interner: Interner,
        tx: mpsc::Sender<Item>,
        handover_limit: Duration,
        read_committed: bool,
    ) -> Self {
        Self {
            interner: Mutex::new(interner),
            tx,
            shutdown: AtomicBool::new(false),
            unreleased: Mutex::new(BTreeSet::new()),
            released: Condvar::new(),
            handover_limit,
            offsets: Mutex::new(HashMap::new()),
            seeks: Mutex::new(Vec::new()),
            read_committed,
            name,
        }
    }

    /// The interner, locked.
    pub fn interner(&self) -> MutexGuard<'_, Interner> {
        lock(&self.interner)
    }

    /// Lets a waiting revocation go on for these partitions.
    pub fn release(&self, ids: &[PartitionId]) {
        let mut unreleased = lock(&self.unreleased);
        for id in ids {
            unreleased.remove(id);
        }
        drop(unreleased);
        self.released.notify_all();
    }

    /// Stops the poll thread and unblocks a waiting revocation; idempotent.
    pub fn shut_down(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        // Taking the lock orders the flag before a waiter's check.
        drop(lock(&self.unreleased));
        self.released.notify_all();
    }

    /// True once [`Shared::shut_down`] was called.
    pub fn is_shut_down(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// Asks the poll thread to move partition `id` to `offset` before its
    /// next poll; it answers with [`Item::Seeked`]. Seeking on the poll
    /// thread orders the seek among the items it sends, and librdkafka
    /// drops what it had fetched from the old position.
    pub fn seek(&self, id: PartitionId, offset: u64) {
        lock(&self.seeks).push((id, offset));
    }

    /// A partition's offsets as of librdkafka's last statistics.
    pub fn offsets(&self, id: PartitionId) -> Option<PartitionOffsets> {
        lock(&self.offsets).get(&id).copied()
    }

    /// Sends from the poll thread; false when the source is gone.
    fn send(&self, item: Item) -> bool {
        if self.is_shut_down() {
            return false;
        }
        self.tx.blocking_send(item).is_ok()
    }

    /// Blocks until every id is released, shutdown, or the limit passed.
    fn wait_for_release(&self, ids: &[PartitionId]) {
        let deadline = Instant::now() + self.handover_limit;
        let mut unreleased = lock(&self.unreleased);
        loop {
            if self.is_shut_down() || !ids.iter().any(|id| unreleased.contains(id)) {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(
                    source = %self.name,
                    partitions = ?ids,
                    waited = ?self.handover_limit,
                    "revoked partitions were not released in time; letting them go (the group has moved on)"
                );
                break;
            }
            unreleased = self
                .released
                .wait_timeout(unreleased, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        for id in ids {
            unreleased.remove(id);
        }
    }
}

/// The consumer context: statistics, errors and the rebalance hand-over.
pub struct SpateContext {
    shared: Arc<Shared>,
}

impl SpateContext {
    /// A context over shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl ClientContext for SpateContext {
    fn stats(&self, statistics: Statistics) {
        let interner = self.shared.interner();
        let mut found = Vec::new();
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                // librdkafka's own `consumer_lag` counts from the committed
                // offset; spate wants what is not read yet.
                let end = if self.shared.read_committed {
                    p.ls_offset
                } else {
                    p.hi_offset
                };
                // Fetched is not read: events waiting in the source count
                // as lag, so the fallback is the committed offset, not
                // librdkafka's application offset.
                let position = p.committed_offset;
                if *partition < 0 || end < 0 {
                    continue;
                }
                if let Some(id) = interner.existing(topic, *partition) {
                    let end = end as u64;
                    let position = u64::try_from(position).ok();
                    found.push((id, PartitionOffsets { end, position }));
                }
            }
        }
        drop(interner);
        lock(&self.shared.offsets).extend(found);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        crate::probe::log_librdkafka(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Consumer errors also reach the source through `poll`, which
        // reports them to the engine; log them here only for debugging.
        tracing::debug!(source = %self.shared.name, %error, reason, "librdkafka error");
    }
}

impl ConsumerContext for SpateContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        if self.shared.is_shut_down() {
            return;
        }
        let ids = self.shared.interner().ids_of(tpl);
        if ids.is_empty() {
            return;
        }
        lock(&self.shared.offsets).retain(|id, _| !ids.contains(id));
        lock(&self.shared.unreleased).extend(ids.iter().copied());
        tracing::debug!(source = %self.shared.name, partitions = ?ids, "revoking; waiting for the engine to release");
        if !self.shared.send(Item::Revoked(ids.clone())) {
            self.shared.release(&ids);
            return;
        }
        self.shared.wait_for_release(&ids);
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        if self.shared.is_shut_down() || tpl.count() == 0 {
            return;
        }
        // A partition paused in an earlier assignment stays paused in
        // librdkafka; the engine starts every assignment unpaused.
        if let Err(error) = consumer.resume(tpl) {
            tracing::debug!(source = %self.shared.name, %error, "resume of newly assigned partitions failed");
        }
        let ids = self.shared.interner().ids_of(tpl);
        self.shared.send(Item::Assigned(ids));
    }
}

/// Polls until shutdown or until the source is gone, forwarding everything.
/// The thread's `Arc` of the consumer is usually the last one, so closing
/// the consumer (leaving the group) happens here, off the async runtime.
pub fn poll_loop(consumer: Arc<KafkaConsumer>, shared: Arc<Shared>) {
    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        poll_until_shutdown(&consumer, &shared)
    }));
    if let Err(panic) = polled {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        // The source is still reading: tell it, without blocking forever.
        let _ = shared.tx.try_send(Item::Stopped(why));
    }
    tracing::debug!(source = %shared.name, "poll thread ends; closing the consumer");
    drop(consumer);
}

/// How long one seek may take before it counts as failed.
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);

fn poll_until_shutdown(consumer: &KafkaConsumer, shared: &Shared) {
    // Seeks librdkafka refused because their partition was not fetching
    // yet, with when each was first asked for.
    let mut not_ready: Vec<(PartitionId, u64, Instant)> = Vec::new();
    while !shared.is_shut_down() {
        let asked = std::mem::take(&mut *lock(&shared.seeks));
        let seeks = std::mem::take(&mut not_ready).into_iter().chain(
            asked
                .into_iter()
                .map(|(id, offset)| (id, offset, Instant::now())),
        );
        for (id, offset, since) in seeks {
            let failed = match shared.interner().lookup(id) {
                None => Some(format!("partition id {id} is unknown")),
                Some((topic, partition)) => match consumer.seek(
                    &topic,
                    partition,
                    Offset::Offset(i64::try_from(offset).unwrap_or(i64::MAX)),
                    SEEK_TIMEOUT,
                ) {
                    Ok(()) => None,
                    Err(error) if not_fetching_yet(&error) && since.elapsed() < SEEK_TIMEOUT => {
                        // Right after an assignment: again after the next
                        // poll. The partition's events are dropped until
                        // the seek is done, so none is handed out early.
                        not_ready.push((id, offset, since));
                        continue;
                    }
                    Err(error) => Some(error.to_string()),
                },
            };
            if !shared.send(Item::Seeked { id, offset, failed }) {
                return;
            }
        }
        let item = match consumer.poll(POLL_INTERVAL) {
            None => continue,
            Some(Ok(message)) => {
                let (id, topic) = shared.interner().id(message.topic(), message.partition());
                Item::Event(to_event(&message, id, topic))
            }
            Some(Err(error)) => Item::Error(error),
        };
        if !shared.send(item) {
            break;
        }
    }
}

/// Whether librdkafka refused a seek only because the partition is not
/// fetching yet (`Local: Erroneous state`, seen right after an assignment).
fn not_fetching_yet(error: &KafkaError) -> bool {
    matches!(error, KafkaError::Seek(why) if why.contains(&RDKafkaErrorCode::State.to_string()))
}

fn to_event(message: &BorrowedMessage<'_>, id: PartitionId, topic: Arc<str>) -> Event {
    Event {
        key: message.key().map(Bytes::copy_from_slice),
        payload: message
            .payload()
            .map(Bytes::copy_from_slice)
            .unwrap_or_default(),
        headers: headers_of(message),
        timestamp_ms: message.timestamp().to_millis(),
        position: Position {
            stream: topic,
            partition: id,
            offset: u64::try_from(message.offset()).unwrap_or(0),
        },
    }
}

/// The headers of a message, in order. Read through librdkafka's C API
/// because rdkafka's safe API panics on a header name that is not UTF-8
/// (any producer can send one); such names are converted lossily here.
fn headers_of(message: &BorrowedMessage<'_>) -> Headers {
    use rdkafka::bindings as rd;
    use std::ffi::CStr;
    let mut out = Headers::new();
    let mut native: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `message.ptr()` is a valid message owned by the consumer for
    // the lifetime of `message`; librdkafka writes a pointer to the
    // message's own header list (or returns an error and leaves it null).
    let err = unsafe { rd::rd_kafka_message_headers(message.ptr(), &mut native) };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || native.is_null() {
        return out;
    }
    let mut index = 0;
    loop {
        let mut name: *const std::os::raw::c_char = std::ptr::null();
        let mut value: *const std::os::raw::c_void = std::ptr::null();
        let mut size: usize = 0;
        // SAFETY: `native` stays valid while `message` lives; the out
        // pointers are valid locals; an index past the end returns an error.
        let err =
            unsafe { rd::rd_kafka_header_get_all(native, index, &mut name, &mut value, &mut size) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            break;
        }
        // SAFETY: librdkafka returns a NUL-terminated name and, unless null,
        // a value of `size` bytes, both owned by the header list.
        let (name, value) = unsafe {
            let name = CStr::from_ptr(name).to_string_lossy().into_owned();
            let value = if value.is_null() {
                Bytes::new()
            } else {
                Bytes::copy_from_slice(std::slice::from_raw_parts(value.cast::<u8>(), size))
            };
            (name, value)
        };
        out.push(name, value);
        index += 1;
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_seek_refused_only_because_the_partition_is_not_fetching_yet_is_retried() {
        let early = KafkaError::Seek(RDKafkaErrorCode::State.to_string());
        assert!(not_fetching_yet(&early), "{early}");
        let other = KafkaError::Seek(RDKafkaErrorCode::UnknownPartition.to_string());
        assert!(!not_fetching_yet(&other), "{other}");
        assert!(!not_fetching_yet(&KafkaError::NoMessageReceived));
    }

    use super::*;

    #[test]
    fn one_topic_uses_partition_numbers() {
        let mut interner = Interner::new(Some("orders"));
        assert_eq!(interner.id("orders", 3).0, 3);
        assert_eq!(interner.existing("orders", 7), Some(7));
        assert_eq!(
            interner.lookup(3).map(|(t, p)| (t.to_string(), p)),
            Some(("orders".into(), 3))
        );
    }

    #[test]
    fn several_topics_get_dense_ids_in_order_of_first_sight() {
        let mut interner = Interner::new(None);
        assert_eq!(interner.id("a", 5).0, 0);
        assert_eq!(interner.id("b", 5).0, 1);
        assert_eq!(interner.id("a", 5).0, 0);
        assert_eq!(interner.existing("b", 5), Some(1));
        assert_eq!(interner.existing("b", 6), None);
        let (tpl, unknown) = interner.list([(1, Offset::Offset(9)), (7, Offset::Offset(1))]);
        assert_eq!(unknown, vec![7]);
        let elements = tpl.elements();
        assert_eq!(elements.len(), 1);
        assert_eq!((elements[0].topic(), elements[0].partition()), ("b", 5));
    }

    #[test]
    fn release_unblocks_a_waiting_revocation_and_shutdown_always_does() {
        let (tx, _rx) = mpsc::channel(4);
        let shared = Arc::new(Shared::new(
            "test".into(),
            Interner::new(None),
            tx,
            Duration::from_secs(30),
            true,
        ));
        lock(&shared.unreleased).extend([1, 2]);
        let waiter = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                shared.wait_for_release(&[1, 2]);
                started.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        shared.release(&[1]);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "partition 2 is still held");
        shared.release(&[2]);
        assert!(waiter.join().unwrap() < Duration::from_secs(5));

        lock(&shared.unreleased).insert(3);
        let waiter = {
            let shared = shared.clone();
            std::thread::spawn(move || shared.wait_for_release(&[3]))
        };
        std::thread::sleep(Duration::from_millis(50));
        shared.shut_down();
        waiter.join().unwrap();
    }
}
