//! The conformance suite ([`spate_connector::testkit::conformance`]) against
//! the `mqtt` and `mqtt_at_most_once` connectors on a real broker (the
//! Mosquitto at `MQTT_URL`, or one of our own; see `spate_testsupport::mqtt`).
//!
//! Each check gets its own topic tree `conformance/<unique>/<partition>`,
//! hashed into two source partitions, and its own client id (the broker's
//! persistent session is where `mqtt` keeps its positions). `mqtt` reads
//! the suite's per-topic `seq` as its `sequence:`, which makes it
//! resumable; `mqtt_at_most_once` (QoS 0, clean session) claims nothing
//! durable and has no sink.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rumqttc::QoS;
use spate_connector::testkit::conformance::{self, Fixture, Harness, TestStream};
use spate_connector::testkit::read_source_config;
use spate_connector::{Sink, Source, SourceBuilder};
use spate_testsupport::mqtt::{broker, factory, read_sink, unique, Broker};

static NAMES: AtomicU32 = AtomicU32::new(0);

struct MqttFixture {
    broker: Arc<Broker>,
    kind: &'static str,
}

struct MqttStream {
    broker: Arc<Broker>,
    prefix: String,
    source: Box<dyn SourceBuilder>,
}

#[async_trait]
impl Fixture for MqttFixture {
    async fn stream(&self, label: &str) -> Result<Box<dyn TestStream>, String> {
        let n = NAMES.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("conformance/{}", unique(&format!("{label}-{n}")));
        let client_id = unique(&format!("conformance-{n}"));
        let topics = format!("{prefix}/#");
        let mut entries = vec![
            ("url", self.broker.url.as_str()),
            ("topics", topics.as_str()),
            ("client_id", client_id.as_str()),
            ("partitions", "2"),
        ];
        if self.kind == "mqtt" {
            entries.push(("sequence", "/seq"));
        }
        let (builder, errors) = read_source_config(&*factory(self.kind), &entries);
        if !errors.is_empty() {
            return Err(format!("{errors:?}"));
        }
        Ok(Box::new(MqttStream {
            broker: self.broker.clone(),
            prefix,
            source: builder.ok_or("no source builder")?,
        }))
    }
}

#[async_trait]
impl TestStream for MqttStream {
    fn partitions(&self) -> u32 {
        2
    }

    async fn source(&self) -> Result<Box<dyn Source>, String> {
        self.source.build().await.map_err(|e| e.to_string())
    }

    /// Publishes at QoS 1 to the partition's own topic.
    async fn produce(&self, partition: u32, payloads: Vec<Bytes>) -> Result<(), String> {
        let topic = format!("{}/{partition}", self.prefix);
        let messages: Vec<(String, String)> = payloads
            .iter()
            .map(|p| (topic.clone(), String::from_utf8_lossy(p).into_owned()))
            .collect();
        self.broker.publish_to(&messages, QoS::AtLeastOnce).await;
        Ok(())
    }

    async fn sink(&self) -> Result<Box<dyn Sink>, String> {
        let topic = format!("{}/0", self.prefix);
        let (builder, errors) = read_sink("mqtt", &[("url", &self.broker.url), ("topic", &topic)]);
        if !errors.is_empty() {
            return Err(format!("{errors:?}"));
        }
        let builder = builder.ok_or("no sink builder")?;
        builder.build().await.map_err(|e| e.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mqtt_connector_keeps_the_contract() {
    let mqtt = factory("mqtt");
    conformance::run(
        Harness::new(
            "mqtt",
            MqttFixture {
                broker: Arc::new(broker()),
                kind: "mqtt",
            },
        )
        .source(mqtt.source_capabilities().unwrap())
        .sink(mqtt.sink_capabilities().unwrap()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mqtt_at_most_once_connector_keeps_the_contract() {
    let mqtt = factory("mqtt_at_most_once");
    assert!(mqtt.sink_capabilities().is_none());
    conformance::run(
        Harness::new(
            "mqtt_at_most_once",
            MqttFixture {
                broker: Arc::new(broker()),
                kind: "mqtt_at_most_once",
            },
        )
        .source(mqtt.source_capabilities().unwrap()),
    )
    .await;
}
