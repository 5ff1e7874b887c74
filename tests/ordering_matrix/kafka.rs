//! Kafka rows (on Tansu, the test's own broker): a consumer group whose
//! partitions move on every kill, handover and scale step. Tansu keeps its
//! log in memory, so these rows have no broker restart; and it shows the
//! records of aborted transactions to every reader, so exactly-once into
//! Kafka is proven by `tests/kafka_pipeline.rs`, not here.

use std::sync::Arc;

use super::check::{Order, Promise};
use super::harness::{self, Publish, Row};
use super::recorder::Recorder;
use crate::kafka_common::{Producer, Tansu};

const PARTITIONS: u64 = 8;
const KEYS: u64 = 64;

fn pipeline(
    broker: &Tansu,
    recorder: &Recorder,
    tag: &str,
    ordering: &str,
    delivery: &str,
) -> String {
    let bootstrap = &broker.bootstrap;
    harness::pipeline_yaml(
        recorder,
        &format!(
            "type: kafka\nbootstrap_servers: {bootstrap}\ntopics: [{tag}]\n\
             group_id: {tag}-group\nsession_timeout: 6s"
        ),
        &format!(
            "dead_letter: {{type: kafka, bootstrap_servers: {bootstrap}, topic: {tag}-dead}}\n\
             delivery: {delivery}\nordering: {ordering}\ncommit_interval: 50ms"
        ),
    )
}

/// A key's partition: its number modulo the partition count.
fn partition_of(n: u64) -> u64 {
    (n % KEYS) % PARTITIONS
}

async fn row(name: &'static str, ordering: &str, order: Order) {
    row_with(name, ordering, "at_least_once", order).await;
}

async fn row_with(name: &'static str, ordering: &str, delivery: &str, order: Order) {
    let at_least_once = delivery == "at_least_once";
    let tag = format!("matrix-{ordering}-{delivery}");
    // The broker's helpers block on a runtime of their own.
    let broker = tokio::task::block_in_place(|| {
        let broker = Tansu::start();
        broker.create_topic(&tag, PARTITIONS as i32);
        broker.create_topic(&format!("{tag}-dead"), 1);
        broker
    });
    let recorder = Recorder::start(false).await;
    let dir = harness::workdir();
    let text = pipeline(&broker, &recorder, &tag, ordering, delivery);
    let file = harness::write_pipeline(dir.path(), &text);
    let producer = Arc::new(Producer::new(&broker.bootstrap));
    let publish: Publish = Arc::new(move |numbers: Vec<u64>| {
        let (producer, topic) = (producer.clone(), tag.clone());
        Box::pin(async move {
            let records: Vec<(i32, String, Vec<u8>)> = numbers
                .iter()
                .map(|&n| {
                    let (key, _) = harness::key_and_seq(n, KEYS);
                    (
                        partition_of(n) as i32,
                        key,
                        harness::payload(n, KEYS).into_bytes(),
                    )
                })
                .collect();
            tokio::task::spawn_blocking(move || producer.produce_to(&topic, &records))
                .await
                .expect("producer thread");
        })
    });
    let row = Row {
        name,
        promise: Promise {
            lossless: at_least_once,
            copies: at_least_once,
            order,
            exclusive: order != Order::None,
        },
        actions: harness::PROCESS_CHAOS,
    };
    harness::run(&row, &recorder, &file, dir.path(), publish, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_key_order_survives_kills_handovers_and_scaling() {
    row("kafka/key/at_least_once", "key", Order::Key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_partition_order_survives_kills_handovers_and_scaling() {
    row(
        "kafka/partition/at_least_once",
        "partition",
        Order::Partition,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_unordered_loses_nothing_through_kills_handovers_and_scaling() {
    row("kafka/none/at_least_once", "none", Order::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_at_most_once_keeps_key_order_and_never_copies_through_kills_and_scaling() {
    row_with("kafka/key/at_most_once", "key", "at_most_once", Order::Key).await;
}
