//! The raw rdkafka floor: a consume→produce loop doing what a Kafka →
//! no-op → Kafka pipeline does, with nothing else in the way. Shared by
//! `kafka_e2e` (in-process) and `compare` (as a child process).
//!
//! One thread polls a consumer-group member, produces each record (key and
//! payload unchanged) on an idempotent producer and, every 100 ms, either
//! flushes the producer and commits the consumed offsets synchronously
//! (at-least-once) or sends the offsets to the open transaction and commits
//! it (exactly-once, `transactional.id` = `<group>-raw`).
//!
//! Guarantees: at-least-once never commits an offset whose output is not
//! acknowledged; on stop it flushes and commits what it consumed (aborting
//! the open transaction under exactly-once, whose records are then read
//! again by the next member).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// How often the loop commits (or commits its transaction).
pub const COMMIT_EVERY: Duration = Duration::from_millis(100);

/// A consumer-group member reading `topic` from the earliest offset,
/// committed reads only, offsets committed by hand; `timing` is the session
/// timeout and `fetch.wait.max.ms` (ms).
pub fn consumer(bootstrap: &str, group: &str, topic: &str, timing: (u32, u32)) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", timing.0.to_string())
        // A third of the session, as spate's source sets it.
        .set(
            "heartbeat.interval.ms",
            (timing.0 / 3).min(3_000).to_string(),
        )
        .set("fetch.wait.max.ms", timing.1.to_string())
        .create()
        .expect("raw consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Runs the loop until `stop`; calls `on_first` when the first record is
/// taken up.
#[allow(clippy::too_many_arguments)]
pub fn raw_loop(
    bootstrap: &str,
    group: &str,
    input: &str,
    output: &str,
    transactional: bool,
    timing: (u32, u32),
    stop: &AtomicBool,
    on_first: &dyn Fn(),
) {
    let consumer = consumer(bootstrap, group, input, timing);
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    if transactional {
        config.set("transactional.id", format!("{group}-raw"));
    }
    let producer: ThreadedProducer<DefaultProducerContext> = config.create().expect("producer");
    if transactional {
        producer
            .init_transactions(Duration::from_secs(30))
            .expect("init transactions");
        producer.begin_transaction().expect("begin");
    }
    let mut positions: BTreeMap<i32, i64> = BTreeMap::new();
    let mut last_commit = Instant::now();
    let mut first = true;
    let commit = |positions: &mut BTreeMap<i32, i64>| {
        let mut list = TopicPartitionList::new();
        for (partition, offset) in positions.iter() {
            list.add_partition_offset(input, *partition, Offset::Offset(*offset))
                .expect("offset");
        }
        if transactional {
            let metadata = consumer.group_metadata().expect("group metadata");
            producer
                .send_offsets_to_transaction(&list, &metadata, Duration::from_secs(30))
                .expect("offsets in transaction");
            producer
                .commit_transaction(Duration::from_secs(30))
                .expect("commit");
            producer.begin_transaction().expect("begin");
        } else {
            producer.flush(Duration::from_secs(30)).expect("flush");
            consumer.commit(&list, CommitMode::Sync).expect("commit");
        }
        positions.clear();
    };
    while !stop.load(Ordering::SeqCst) {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(10)) {
            if first {
                first = false;
                on_first();
            }
            let mut record = BaseRecord::to(output).payload(message.payload().unwrap_or_default());
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            while let Err((_, back)) = producer.send(record) {
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            positions.insert(message.partition(), message.offset() + 1);
        }
        if last_commit.elapsed() >= COMMIT_EVERY && !positions.is_empty() {
            commit(&mut positions);
            last_commit = Instant::now();
        }
    }
    if transactional {
        let _ = producer.abort_transaction(Duration::from_secs(10));
    } else if !positions.is_empty() {
        commit(&mut positions);
    }
}
