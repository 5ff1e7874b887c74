//! The conformance suite ([`spate_connector::testkit::conformance`]) against
//! the `kafka` connector on a real Kafka-protocol broker (Tansu, one for
//! the whole run; see `spate_testsupport::kafka`): a fresh two-partition
//! topic and consumer group per check, produced into with a plain rdkafka
//! producer, a second group member for the rebalance, and an output topic
//! of the same cluster for the exactly-once session.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::producer::FutureRecord;
use spate_connector::testkit::conformance::{self, Fixture, Harness, TestStream};
use spate_connector::testkit::{read_sink_config, read_source_config};
use spate_connector::{Sink, Source, SourceBuilder};
use spate_testsupport::kafka::{create_topic, factory, producer, tansu, unique, Broker};

/// Partitions of every test topic.
const PARTITIONS: u32 = 2;

struct KafkaFixture {
    broker: Broker,
}

#[async_trait]
impl Fixture for KafkaFixture {
    async fn stream(&self, label: &str) -> Result<Box<dyn TestStream>, String> {
        // The exactly-once session needs a stable identity: static
        // membership, which also keeps the partitions across sessions.
        let member = label.contains("exactly-once").then_some("worker-1");
        KafkaStream::create(&self.broker.bootstrap, label, PARTITIONS, member).await
    }
}

struct KafkaStream {
    bootstrap: String,
    topic: String,
    group: String,
    partitions: u32,
    source: Box<dyn SourceBuilder>,
}

impl KafkaStream {
    async fn create(
        bootstrap: &str,
        label: &str,
        partitions: u32,
        member: Option<&str>,
    ) -> Result<Box<dyn TestStream>, String> {
        let topic = unique(label);
        create_topic(bootstrap, &topic, partitions as i32).await;
        let group = unique(&format!("{label}-group"));
        let source = source_builder(bootstrap, &topic, &group, member)?;
        Ok(Box::new(KafkaStream {
            bootstrap: bootstrap.to_owned(),
            topic,
            group,
            partitions,
            source,
        }))
    }
}

/// Source settings; `session_timeout: 6s` because Tansu answers a group
/// join only after half the session timeout.
fn source_builder(
    bootstrap: &str,
    topic: &str,
    group: &str,
    member: Option<&str>,
) -> Result<Box<dyn SourceBuilder>, String> {
    let mut entries = vec![
        ("bootstrap_servers", bootstrap),
        ("topics", topic),
        ("group_id", group),
        ("session_timeout", "6s"),
    ];
    if let Some(member) = member {
        entries.push(("group_instance_id", member));
    }
    let (builder, errors) = read_source_config(&*factory(), &entries);
    if !errors.is_empty() {
        return Err(format!("{errors:?}"));
    }
    builder.ok_or_else(|| "no source builder".to_owned())
}

#[async_trait]
impl TestStream for KafkaStream {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    async fn source(&self) -> Result<Box<dyn Source>, String> {
        self.source.build().await.map_err(|e| e.to_string())
    }

    async fn produce(&self, partition: u32, payloads: Vec<Bytes>) -> Result<(), String> {
        let producer = producer(&self.bootstrap);
        for payload in payloads {
            let record = FutureRecord::<(), [u8]>::to(&self.topic)
                .payload(&payload[..])
                .partition(partition as i32);
            producer
                .send(record, Duration::from_secs(10))
                .await
                .map_err(|(e, _)| format!("produce failed: {e}"))?;
        }
        Ok(())
    }

    async fn sink(&self) -> Result<Box<dyn Sink>, String> {
        let entries = [
            ("bootstrap_servers", self.bootstrap.as_str()),
            ("topic", self.topic.as_str()),
        ];
        let (builder, errors) = read_sink_config(&*factory(), &entries);
        if !errors.is_empty() {
            return Err(format!("{errors:?}"));
        }
        let builder = builder.ok_or("no sink builder")?;
        builder.build().await.map_err(|e| e.to_string())
    }

    async fn transaction_output(&self) -> Result<Box<dyn TestStream>, String> {
        KafkaStream::create(&self.bootstrap, &format!("{}-output", self.topic), 1, None).await
    }

    /// A second member joins the group.
    async fn rebalance(&self) -> Result<Option<Box<dyn Source>>, String> {
        let builder = source_builder(&self.bootstrap, &self.topic, &self.group, None)?;
        let source = builder.build().await.map_err(|e| e.to_string())?;
        Ok(Some(source))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_connector_keeps_the_contract() {
    let kafka = factory();
    conformance::run(
        Harness::new("kafka", KafkaFixture { broker: tansu() })
            .source(kafka.source_capabilities().unwrap())
            .sink(kafka.sink_capabilities().unwrap())
            .group()
            .wait(Duration::from_secs(30))
            .quiet(Duration::from_secs(2))
            .budget(Duration::from_secs(180)),
    )
    .await;
}
