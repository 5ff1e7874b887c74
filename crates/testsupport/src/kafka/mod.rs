//! Helpers of the Kafka connector's integration tests: a real
//! Kafka-protocol broker (Tansu, [`broker`]) per test, topic set-up and
//! read-back with plain rdkafka clients, hand-built configuration, and
//! event collection through the contract; [`blocking`] is the same broker
//! behind a synchronous face for the end-to-end tests and benches.
//!
//! Guarantees: every broker is the test's own, killed when its guard
//! drops. Tansu 0.6.0 has known defects the tests work around, each noted
//! where it matters: records of aborted transactions stay visible to
//! `read_committed` readers, ListOffsets "latest" is wrong (so topics are
//! read back until they go quiet, not up to the high watermark), and a
//! group join takes about 3 s.

pub mod blocking;
pub mod broker;

pub use broker::*;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::connector::Read;
use bytes::Bytes;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use spate_connector::config::ConfigErrors;
use spate_connector::{
    ConfigNode, ConfigReader, ConnectorFactory, Event, NodeKind, SinkBuilder, Source,
    SourceBuilder, SourceMessage, Span,
};

pub use crate::names::unique;

/// A plain producer for setting up data.
pub fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "1")
        .create()
        .expect("producer")
}

/// What was produced: (partition, offset, payload).
pub type Produced = Vec<(i32, i64, String)>;

/// Produces `n` messages `{tag}-{i}` with key `key-{i}` and header `n: i`,
/// message `i` to partition `i % partitions`; waits for each delivery.
pub async fn produce_n(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    n: usize,
    tag: &str,
) -> Produced {
    let producer = producer(bootstrap);
    let mut out = Vec::new();
    for i in 0..n {
        let payload = format!("{tag}-{i}");
        let key = format!("key-{i}");
        let number = i.to_string();
        let record = FutureRecord::to(topic)
            .payload(&payload)
            .key(&key)
            .partition((i as i32) % partitions)
            .headers(OwnedHeaders::new().insert(Header {
                key: "n",
                value: Some(&number),
            }));
        let delivery = producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap_or_else(|(e, _)| panic!("produce failed: {e}"));
        out.push((delivery.partition, delivery.offset, payload));
    }
    out
}

/// Produces each `(partition, payload)` through `producer` in order,
/// without key or headers; waits for each delivery.
pub async fn produce_payloads(
    producer: &FutureProducer,
    topic: &str,
    records: impl IntoIterator<Item = (i32, String)>,
) {
    for (partition, payload) in records {
        let record = FutureRecord::<(), _>::to(topic)
            .payload(&payload)
            .partition(partition);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap_or_else(|(e, _)| panic!("produce {payload}: {e}"));
    }
}

/// The crate's factory.
pub fn factory() -> Arc<dyn ConnectorFactory> {
    crate::connector::find(spate_kafka::connectors(), "kafka")
}

/// A scalar node.
pub fn scalar(text: &str, line: u32) -> ConfigNode {
    ConfigNode {
        kind: NodeKind::Scalar {
            text: text.to_owned(),
            quoted: false,
        },
        span: Span { line, column: 12 },
    }
}

/// A mapping node; values on consecutive lines from 2.
pub fn map(entries: Vec<(&str, ConfigNode)>) -> ConfigNode {
    let entries = entries
        .into_iter()
        .map(|(key, value)| {
            let key_span = Span {
                column: 5,
                ..value.span
            };
            (key.to_owned(), key_span, value)
        })
        .collect();
    ConfigNode {
        kind: NodeKind::Map(entries),
        span: Span { line: 1, column: 5 },
    }
}

/// A `properties:` mapping node.
pub fn properties(entries: &[(&str, &str)], first_line: u32) -> ConfigNode {
    map(entries
        .iter()
        .enumerate()
        .map(|(i, (k, v))| (*k, scalar(v, first_line + i as u32)))
        .collect())
}

/// Reads configuration `node` at `path` with `read` as the loader would:
/// what it built, if anything, and every problem recorded.
fn read_node<B: ?Sized>(
    node: &ConfigNode,
    path: &str,
    read: impl FnOnce(&dyn ConnectorFactory, &mut ConfigReader<'_>) -> Option<Box<B>>,
) -> Read<B> {
    let errors = ConfigErrors::default();
    let builder = read(&*factory(), &mut ConfigReader::new(node, path, &errors));
    (builder, errors.into_inner())
}

/// Reads a source configuration node as the loader would.
pub fn read_source_node(node: &ConfigNode) -> Read<dyn SourceBuilder> {
    read_node(node, "inputs[0]", |factory, reader| factory.source(reader))
}

/// Reads a sink configuration node as the loader would.
pub fn read_sink_node(node: &ConfigNode) -> Read<dyn SinkBuilder> {
    read_node(node, "outputs[0]", |factory, reader| factory.sink(reader))
}

/// Source settings for `topic` and `group` at `broker`, plus `extra`.
/// `session_timeout: 6s`: Tansu answers a group join only after half the
/// session timeout (about 23 s with librdkafka's default of 45 s).
pub fn source_entries<'a>(
    broker: &'a Broker,
    topic: &'a str,
    group: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut entries = vec![
        ("bootstrap_servers", broker.bootstrap.as_str()),
        ("topics", topic),
        ("group_id", group),
        ("session_timeout", "6s"),
    ];
    entries.extend_from_slice(extra);
    entries
}

/// Source settings for `topic` and `group` on librdkafka's mock cluster at
/// `bootstrap`: a session longer than the outages the tests inject (so the
/// group keeps the member), and commits that give up after 1 s.
pub fn mock_source_entries<'a>(
    bootstrap: &'a str,
    topic: &'a str,
    group: &'a str,
) -> [(&'a str, &'a str); 5] {
    [
        ("bootstrap_servers", bootstrap),
        ("topics", topic),
        ("group_id", group),
        ("session_timeout", "30s"),
        ("commit_timeout", "1s"),
    ]
}

/// A source builder from settings that must be valid.
pub fn source_builder(entries: &[(&str, &str)]) -> Box<dyn SourceBuilder> {
    crate::connector::valid_source(&*factory(), entries)
}

/// A built sink from settings that must be valid.
pub async fn sink(entries: &[(&str, &str)]) -> Box<dyn spate_connector::Sink> {
    crate::connector::valid_sink(&*factory(), entries).await
}

/// `next` with a timeout long enough for Tansu's group joins.
pub async fn next(source: &mut dyn Source, max: usize) -> SourceMessage {
    spate_connector::testkit::next_before(source, max, Duration::from_secs(30)).await
}

pub use spate_connector::testkit::next_within;

/// Builds a source and waits until it owns `partitions` partitions.
pub async fn open(builder: &dyn SourceBuilder, partitions: usize) -> Box<dyn Source> {
    let mut source = builder.build().await.expect("source builds");
    let mut owned = Vec::new();
    while owned.len() < partitions {
        match next(&mut *source, 100).await {
            SourceMessage::Assigned(ids) => owned.extend(ids),
            other => panic!("expected Assigned first, got {other:?}"),
        }
    }
    source
}

/// Events by partition, checking that offsets strictly increase.
pub fn by_partition(events: &[Event]) -> BTreeMap<u32, Vec<u64>> {
    let mut out: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for e in events {
        let offsets = out.entry(e.position.partition).or_default();
        if let Some(last) = offsets.last() {
            assert!(
                e.position.offset > *last,
                "partition {}: offset {} after {last}",
                e.position.partition,
                e.position.offset
            );
        }
        offsets.push(e.position.offset);
    }
    out
}

/// Reads until `n` events arrived (any other message fails the test).
pub async fn read_n(source: &mut dyn Source, n: usize, max: usize) -> Vec<Event> {
    spate_connector::testkit::read_events(source, n, max, Duration::from_secs(30)).await
}

/// The payload as text.
pub fn text(payload: &Bytes) -> String {
    String::from_utf8_lossy(payload).into_owned()
}
