//! Kafka plumbing of the comparison: stamped input (preloaded or paced),
//! the output checker, committed offsets, and topic clean-up, on the Tansu
//! broker the harness started (`tests/kafka_common`).
//!
//! Guarantees: the checker reads every partition of the output topic from
//! the beginning with its own assignment (no group) and `read_committed`
//! (Tansu ignores it: aborted transactional records are visible to every
//! reader, which is why exactly-once runs are judged by record ids, see
//! [`super::tally`]); it stops only when asked.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::tally::{self, Tally};
use crate::kafka_common::Tansu;

/// The record's key: `k<id % keys>`.
pub fn key(id: u64, keys: u64) -> String {
    format!("k{}", id % keys.max(1))
}

/// Writes records `first..first+count` (stamped payloads of `size` bytes,
/// record `i` to partition `i % partitions`, key `k<i % keys>`) and waits
/// until every one is acknowledged.
pub fn preload(
    broker: &Tansu,
    topic: &str,
    partitions: i32,
    keys: u64,
    first: u64,
    count: u64,
    size: usize,
) {
    let records: Vec<(i32, String, Vec<u8>)> = (first..first + count)
        .map(|id| {
            (
                (id % partitions as u64) as i32,
                key(id, keys),
                tally::payload(id, size),
            )
        })
        .collect();
    crate::kafka_common::Producer::new(&broker.bootstrap).produce_to(topic, &records);
}

/// A producer writing stamped records at a steady rate (no batching delay,
/// so the stamp is when the record left the harness).
pub struct Pacer {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
    partitions: i32,
    keys: u64,
    size: usize,
}

impl Pacer {
    /// A pacer writing to `topic`, connected (so no record waits for the
    /// connection, which would count as latency).
    pub fn new(broker: &Tansu, topic: &str, partitions: i32, keys: u64, size: usize) -> Self {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &broker.bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "0")
            .create()
            .expect("pacing producer");
        producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("pacing producer connects");
        Self {
            producer,
            topic: topic.to_owned(),
            partitions,
            keys,
            size,
        }
    }

    /// Writes records `first..first+count` at `rate` per second (in ticks of
    /// 10 ms), then waits for every acknowledgement; counts each record in
    /// `sent_so_far` as it goes. Returns how many were written.
    pub fn run(&self, first: u64, count: u64, rate: f64, sent_so_far: &AtomicU64) -> u64 {
        let start = Instant::now();
        let mut sent = 0u64;
        while sent < count {
            let due = ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(count);
            while sent < due {
                let id = first + sent;
                let payload = tally::payload(id, self.size);
                let key = key(id, self.keys);
                let mut record = BaseRecord::to(&self.topic)
                    .key(key.as_bytes())
                    .payload(payload.as_slice())
                    .partition((id % self.partitions as u64) as i32);
                while let Err((_, back)) = self.producer.send(record) {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                sent += 1;
                sent_so_far.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.producer
            .flush(Duration::from_secs(30))
            .expect("paced records acknowledged");
        sent
    }
}

/// A thread reading the output topic into a tally until stopped.
pub struct Checker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checker {
    /// Starts reading `topic` (every partition, from the beginning).
    pub fn start(broker: &Tansu, topic: &str, tally: Arc<Mutex<Tally>>) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &broker.bootstrap)
            .set("group.id", "spate-bench-checker")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "10")
            .create()
            .expect("checker consumer");
        let partitions = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("output topic metadata")
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len());
        assert!(partitions > 0, "output topic {topic} has no partitions");
        let mut list = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            list.add_partition_offset(topic, p, Offset::Beginning)
                .expect("offset");
        }
        consumer.assign(&list).expect("checker assignment");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            let topic = topic.to_owned();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match consumer.poll(Duration::from_millis(20)) {
                        Some(Ok(message)) => {
                            let (at, at_us) = (Instant::now(), tally::now_us());
                            tally.lock().expect("tally").record(
                                message.payload().unwrap_or_default(),
                                at,
                                at_us,
                            );
                        }
                        Some(Err(e)) => panic!("checker reading {topic}: {e}"),
                        None => {}
                    }
                }
            })
        };
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops reading.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The sum of the group's committed offsets over `partitions` partitions.
pub fn committed_total(broker: &Tansu, group: &str, topic: &str, partitions: i32) -> i64 {
    broker.committed(group, topic, partitions).values().sum()
}

/// Waits up to `within` until the group committed `expect` offsets in all;
/// returns what it committed last.
pub fn await_commits(
    broker: &Tansu,
    group: &str,
    topic: &str,
    partitions: i32,
    expect: i64,
    within: Duration,
) -> i64 {
    let deadline = Instant::now() + within;
    loop {
        let total = committed_total(broker, group, topic, partitions);
        if total >= expect || Instant::now() >= deadline {
            return total;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Deletes topics (best effort: frees the broker's memory between runs).
pub fn delete_topics(broker: &Tansu, topics: &[&str]) {
    let admin: AdminClient<DefaultClientContext> = match ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()
    {
        Ok(admin) => admin,
        Err(_) => return,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _ = runtime.block_on(admin.delete_topics(
        topics,
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ));
}
