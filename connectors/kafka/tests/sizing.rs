//! The Kafka sink's size limits against a real Kafka-protocol broker
//! (Tansu): a record over the producer's `message.max.bytes` is rejected for
//! good (never retried) with a message naming that setting, and the sink
//! sizes its producer to what the broker says of the topic.

use std::sync::Arc;

use bytes::Bytes;
use spate_connector::{Record, SinkError};
use spate_kafka::sink::{KafkaSink, SinkSettings};
use spate_kafka::sizing::MessageLimit;
use spate_testsupport::kafka::*;

fn big(bytes: usize) -> Record {
    Record::from_payload(Bytes::from(vec![b'x'; bytes]))
}

/// Reads sink settings through the loader's path.
fn settings(node: &spate_connector::ConfigNode) -> SinkSettings {
    let errors = spate_connector::config::ConfigErrors::default();
    let settings = {
        let mut reader = spate_connector::ConfigReader::new(node, "outputs[0]", &errors);
        SinkSettings::read(&mut reader)
    };
    let errors = errors.into_inner();
    assert!(errors.is_empty(), "{errors:?}");
    settings.expect("valid settings")
}

#[tokio::test]
async fn a_record_over_the_producers_limit_is_rejected_naming_the_producer_setting() {
    let broker = tansu();
    let topic = broker.topic("limited", 1).await;
    let node = map(vec![
        ("bootstrap_servers", scalar(&broker.bootstrap, 2)),
        ("topic", scalar(&topic, 3)),
        (
            "properties",
            properties(&[("message.max.bytes", "1000000")], 4),
        ),
    ]);
    let sink = KafkaSink::open(Arc::new(settings(&node)))
        .await
        .expect("sink opens");
    assert_eq!(sink.message_limit(), MessageLimit::User(1_000_000));
    use spate_connector::Sink as _;
    let error = sink
        .write(big(1_100_000))
        .await
        .expect_err("over the producer's limit");
    assert!(matches!(error, SinkError::Rejected { .. }), "{error}");
    assert!(!error.is_retryable());
    let text = error.to_string();
    assert!(
        text.contains("producer's `message.max.bytes` (1000000 bytes)")
            && text.contains("`properties`"),
        "{text}"
    );
    // The same record fails `check`, which an exactly-once function runs
    // before it stages it; a small one passes both and is written.
    assert!(matches!(
        sink.check(&big(1_100_000)),
        Err(SinkError::Rejected { .. })
    ));
    sink.check(&big(10)).expect("a small record fits");
    sink.write(big(10))
        .await
        .expect("a small record is written");
}

/// Creates `topic` with `max.message.bytes` set on the broker.
async fn create_limited_topic(bootstrap: &str, topic: &str, max_message_bytes: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let created = admin
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))
                .set("max.message.bytes", max_message_bytes)],
            &AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(10))),
        )
        .await
        .expect("create_topics");
    for result in created {
        result.unwrap_or_else(|(t, e)| panic!("creating topic {t} failed: {e}"));
    }
}

fn node_for(bootstrap: &str, topic: &str) -> spate_connector::ConfigNode {
    map(vec![
        ("bootstrap_servers", scalar(bootstrap, 2)),
        ("topic", scalar(topic, 3)),
    ])
}

#[tokio::test]
async fn the_sink_sizes_its_producer_to_the_topics_max_message_bytes() {
    use spate_connector::Sink as _;
    let broker = tansu();
    let topic = unique("roomy");
    create_limited_topic(&broker.bootstrap, &topic, "2000000").await;
    let sink = KafkaSink::open(Arc::new(settings(&node_for(&broker.bootstrap, &topic))))
        .await
        .expect("sink opens");
    assert_eq!(sink.message_limit(), MessageLimit::Topic(2_000_000));
    // Over librdkafka's default of 1,000,000, within the topic's limit.
    sink.write(big(1_500_000))
        .await
        .expect("a record the topic accepts is written");
    let stored = read_topic(
        &broker.bootstrap,
        &topic,
        false,
        1,
        std::time::Duration::ZERO,
    );
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].payload.len(), 1_500_000);
    let error = sink
        .write(big(2_100_000))
        .await
        .expect_err("over the topic's limit");
    assert!(matches!(error, SinkError::Rejected { .. }), "{error}");
}

#[tokio::test]
async fn a_topic_the_broker_describes_without_a_limit_keeps_librdkafkas_default() {
    // Tansu 0.6.0 answers DescribeConfigs with no entries for a topic
    // created without configs.
    let broker = tansu();
    let topic = broker.topic("plain", 1).await;
    let sink = KafkaSink::open(Arc::new(settings(&node_for(&broker.bootstrap, &topic))))
        .await
        .expect("sink opens");
    assert_eq!(sink.message_limit(), MessageLimit::Default);
}
