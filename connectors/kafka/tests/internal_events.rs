//! The Kafka connectors count their own happenings through the contract's
//! internal events: against librdkafka's mock cluster, a group commit
//! records its latency, a commit during an outage and the sink's lost
//! connection are counted, and so is the sink's reconnect.

use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::FutureRecord;
use spate_connector::internal_events::names;
use spate_connector::{CommitPosition, Record};
use spate_testsupport::kafka::*;
use spate_testsupport::metrics::Totals;

const KAFKA: &[(&str, &str)] = &[("connector", "kafka")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_outages_and_reconnects_are_counted() {
    let mut totals = Totals::install();

    let cluster = MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique("events");
    cluster.create_topic(&topic, 1, 1).expect("topic");
    let producer = producer(&bootstrap);
    for i in 0..5 {
        let payload = format!("msg-{i}");
        let record = FutureRecord::<(), _>::to(&topic)
            .payload(&payload)
            .partition(0);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("produce");
    }
    let group = unique("group");
    let entries = [
        ("bootstrap_servers", bootstrap.as_str()),
        ("topics", topic.as_str()),
        ("group_id", group.as_str()),
        ("session_timeout", "30s"),
        ("commit_timeout", "1s"),
    ];
    let builder = source_builder(&entries);
    let mut source = open(&*builder, 1).await;
    let events = read_n(&mut *source, 5, 100).await;
    let position = |next_offset| {
        [CommitPosition {
            partition: 0,
            next_offset,
        }]
    };
    source
        .commit(&position(events[2].position.offset + 1))
        .await
        .expect("commit while up");
    totals.wait_for(names::COMMIT_DURATION, KAFKA).await;

    let sink = sink(&[("bootstrap_servers", &bootstrap), ("topic", &topic)]).await;
    sink.write(Record::from_payload("before"))
        .await
        .expect("write while up");
    cluster.broker_down(1).expect("broker down");
    source
        .commit(&position(events[4].position.offset + 1))
        .await
        .expect_err("no commit while down");
    totals.wait_for(names::COMMIT_ERRORS, KAFKA).await;

    let sink: std::sync::Arc<dyn spate_connector::Sink> = sink.into();
    let write = tokio::spawn({
        let sink = sink.clone();
        async move { sink.write(Record::from_payload("during")).await }
    });
    totals.wait_for(names::DISCONNECTS, KAFKA).await;
    cluster.broker_up(1).expect("broker up");
    write
        .await
        .expect("write task")
        .expect("write succeeds after recovery");
    totals.wait_for(names::RECONNECTS, KAFKA).await;
}
