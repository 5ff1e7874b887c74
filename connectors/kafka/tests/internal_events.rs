//! The Kafka connectors count their own happenings through the contract's
//! internal events: against librdkafka's mock cluster, a group commit
//! records its latency, a commit during an outage and the sink's lost
//! connection are counted, and so is the sink's reconnect.

use rdkafka::mocking::MockCluster;
use spate_connector::internal_events::names;
use spate_connector::Record;
use spate_testsupport::kafka::*;
use spate_testsupport::metrics::Totals;
use spate_testsupport::positions;

const KAFKA: &[(&str, &str)] = &[("connector", "kafka")];

/// The group commit runs as a synchronous librdkafka call on tokio's
/// blocking pool, and a commit the coordinator lost during the outage may
/// never return (the source bounds its wait by `commit_timeout` and starts
/// no second one meanwhile). The runtime is therefore shut down with a
/// grace, as the binary's is, instead of waiting for that thread.
#[test]
fn commits_outages_and_reconnects_are_counted() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(commits_outages_and_reconnects());
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
}

async fn commits_outages_and_reconnects() {
    let mut totals = Totals::install();

    let cluster = MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique("events");
    cluster.create_topic(&topic, 1, 1).expect("topic");
    // Kept to the end: with no producer connected, the commit left pending
    // by the outage was seen never to resolve (see above).
    let producer = producer(&bootstrap);
    let records = (0..5).map(|i| (0, format!("msg-{i}")));
    produce_payloads(&producer, &topic, records).await;
    let group = unique("group");
    let builder = source_builder(&mock_source_entries(&bootstrap, &topic, &group));
    let mut source = open(&*builder, 1).await;
    let events = read_n(&mut *source, 5, 100).await;
    let position = |next_offset| positions::at(&[(0, next_offset)]);
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
