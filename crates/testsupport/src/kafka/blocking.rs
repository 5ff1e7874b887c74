//! The Kafka test broker (Tansu, see [`super::broker`]) behind a small
//! synchronous face for the end-to-end tests and the benchmarks: topics,
//! bulk input, read-back and committed offsets.
//!
//! Guarantees: every [`Tansu`] is a broker of its own, killed on drop.
//! Known limits of this broker the tests respect: aborted transactional
//! records stay visible to every reader (so reads here are uncommitted
//! reads), ListOffsets "latest" is unreliable (reads stop on a count or on
//! silence, never on the high watermark), and a group join takes half the
//! session timeout (pipelines here set `session_timeout: 6s`).

use super::broker;

use std::collections::BTreeMap;
use std::time::Duration;

pub use broker::ReadBack;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};
use rdkafka::ClientConfig;

/// A running Tansu broker, killed on drop.
pub struct Tansu {
    /// `127.0.0.1:PORT`.
    pub bootstrap: String,
    _broker: broker::Broker,
}

impl Tansu {
    /// Starts a fresh broker on a free port.
    pub fn start() -> Self {
        let broker = broker::tansu();
        Self {
            bootstrap: broker.bootstrap.clone(),
            _broker: broker,
        }
    }

    /// Creates a topic with `partitions` partitions.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(broker::create_topic(&self.bootstrap, name, partitions));
    }

    /// Produces records (key, payload) to `topic`, record `i` to partition
    /// `i % partitions`, as fast as the producer takes them, and waits until
    /// every one is acknowledged.
    pub fn produce(&self, topic: &str, partitions: i32, records: &[(String, Vec<u8>)]) {
        self.produce_from(topic, partitions, 0, records);
    }

    /// [`Tansu::produce`] for records numbered from `first` (record `i` of
    /// the slice goes to partition `(first + i) % partitions`).
    pub fn produce_from(
        &self,
        topic: &str,
        partitions: i32,
        first: usize,
        records: &[(String, Vec<u8>)],
    ) {
        let placed: Vec<(i32, String, Vec<u8>)> = records
            .iter()
            .enumerate()
            .map(|(index, (key, payload))| {
                let partition = ((first + index) % partitions as usize) as i32;
                (partition, key.clone(), payload.clone())
            })
            .collect();
        self.produce_to(topic, &placed);
    }

    /// Produces (partition, key, payload) records to `topic` in order and
    /// waits until every one is acknowledged.
    pub fn produce_to(&self, topic: &str, records: &[(i32, String, Vec<u8>)]) {
        Producer::new(&self.bootstrap).produce_to(topic, records);
    }

    /// Everything on `topic` (uncommitted reads), once `quiet` passed with
    /// nothing new after at least `expect` records.
    pub fn read_all(&self, topic: &str, expect: usize, quiet: Duration) -> Vec<ReadBack> {
        broker::read_topic(&self.bootstrap, topic, false, expect, quiet)
    }

    /// The group's committed offsets on `topic`, by partition (absent: none).
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
        broker::committed(&self.bootstrap, group, topic, partitions)
            .into_iter()
            .enumerate()
            .filter_map(|(p, o)| o.map(|o| (p as i32, o)))
            .collect()
    }
}

/// An idempotent producer to the broker, usable from another thread.
pub struct Producer {
    producer: ThreadedProducer<DefaultProducerContext>,
}

impl Producer {
    /// A producer to `bootstrap`.
    pub fn new(bootstrap: &str) -> Self {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        Self { producer }
    }

    /// Produces (partition, key, payload) records to `topic` in order and
    /// waits until every one is acknowledged.
    pub fn produce_to(&self, topic: &str, records: &[(i32, String, Vec<u8>)]) {
        for (partition, key, payload) in records {
            let mut record = BaseRecord::to(topic)
                .key(key.as_bytes())
                .payload(payload.as_slice())
                .partition(*partition);
            while let Err((_, back)) = self.producer.send(record) {
                record = back;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.producer
            .flush(Duration::from_secs(30))
            .expect("every input record acknowledged");
    }
}

/// A header's value as text.
pub fn header<'m>(message: &'m ReadBack, name: &str) -> Option<&'m str> {
    message
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// The payload as text.
pub fn text(message: &ReadBack) -> String {
    String::from_utf8_lossy(&message.payload).into_owned()
}

/// The YAML of the end-to-end tests' one-function pipeline
/// `validate-orders`: the amount filter from a Kafka topic to Kafka topics,
/// committing every 20 ms (or, with `delivery: exactly_once`, a transaction
/// every 100 ms), draining for up to 5 s.
pub struct FilterPipeline<'a> {
    /// The broker's `host:port`, for the input and both outputs.
    pub bootstrap: &'a str,
    /// The input topic, read by consumer group `group`.
    pub input: &'a str,
    pub group: &'a str,
    /// The input's `transactional_id` (given with `delivery: exactly_once`).
    pub transactional_id: Option<&'a str>,
    /// The topics of the valid orders and of the dead letters.
    pub output: &'a str,
    pub dead: &'a str,
    /// More entries of the dead-letter sink's flow mapping (`, key: value`).
    pub dead_extra: &'a str,
    pub delivery: &'a str,
    pub ordering: &'a str,
    /// The function's `concurrency.max` (`min` is 1), if it sets one.
    pub concurrency_max: Option<usize>,
}

impl FilterPipeline<'_> {
    pub fn yaml(&self) -> String {
        let eos = self
            .transactional_id
            .map(|id| format!("\n      transactional_id: {id}"))
            .unwrap_or_default();
        let timing = match self.delivery {
            "exactly_once" => "transaction_interval: 100ms",
            _ => "commit_interval: 20ms",
        };
        let concurrency = self
            .concurrency_max
            .map(|max| format!("    concurrency: {{min: 1, max: {max}}}\n"))
            .unwrap_or_default();
        format!(
            r#"settings:
  metrics_address: off
functions:
  - name: validate-orders
    input:
      type: kafka
      bootstrap_servers: {bootstrap}
      topics: [{input}]
      group_id: {group}
      session_timeout: 6s{eos}
    handler: {{name: filter, field: amount, gte: 0}}
    outputs:
      - {{type: kafka, bootstrap_servers: {bootstrap}, topic: {output}}}
    dead_letter: {{type: kafka, bootstrap_servers: {bootstrap}, topic: {dead}{dead_extra}}}
    delivery: {delivery}
    ordering: {ordering}
    {timing}
    drain_timeout: 5s
{concurrency}"#,
            bootstrap = self.bootstrap,
            input = self.input,
            group = self.group,
            output = self.output,
            dead = self.dead,
            dead_extra = self.dead_extra,
            delivery = self.delivery,
            ordering = self.ordering,
        )
    }
}
