//! Broker failures, injected with librdkafka's in-process mock cluster:
//! the source reports retryable errors (or waits) while the cluster is
//! down and afterwards delivers everything exactly once, in order; the sink
//! waits out the outage.

use std::time::Duration;

use rdkafka::mocking::MockCluster;
use spate_connector::{Record, SourceMessage};
use spate_testsupport::kafka::*;
use spate_testsupport::positions;

/// Produces `msg-{i}` for each `i` in `from..to`, to partition `i % 2`.
async fn produce_to(bootstrap: &str, topic: &str, from: usize, to: usize) {
    let records = (from..to).map(|i| ((i % 2) as i32, format!("msg-{i}")));
    produce_payloads(&producer(bootstrap), topic, records).await;
}

#[tokio::test]
async fn a_broker_outage_loses_and_repeats_nothing() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique("mocked");
    let group = unique("fn");
    cluster.create_topic(&topic, 2, 1).expect("topic");
    produce_to(&bootstrap, &topic, 0, 30).await;

    let builder = source_builder(&mock_source_entries(&bootstrap, &topic, &group));
    let mut source = open(&*builder, 2).await;
    let mut events = read_n(&mut *source, 30, 100).await;
    let first = by_partition(&events);
    source
        .commit(&positions::at(&[(0, first[&0][10]), (1, first[&1][10])]))
        .await
        .expect("commit while up");

    let sink: std::sync::Arc<dyn spate_connector::Sink> =
        sink(&[("bootstrap_servers", &bootstrap), ("topic", &topic)])
            .await
            .into();
    cluster.broker_down(1).expect("broker down");
    // While the broker is away, `next` either waits or says so retryably,
    // naming the bootstrap servers.
    let outage = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < outage {
        match tokio::time::timeout(Duration::from_millis(500), source.next(100)).await {
            Err(_) => {}
            Ok(Ok(SourceMessage::Events(batch))) => panic!("events while down: {batch:?}"),
            Ok(Ok(other)) => panic!("unexpected {other:?} while down"),
            Ok(Err(error)) => {
                assert!(error.is_retryable(), "not retryable: {error}");
                assert!(error.to_string().contains(&bootstrap), "{error}");
            }
        }
    }
    // A commit cannot be confirmed while the broker is away: it fails
    // retryably after `commit_timeout` instead of blocking the engine.
    let started = tokio::time::Instant::now();
    let error = source
        .commit(&positions::at(&[(0, first[&0][12])]))
        .await
        .expect_err("no commit while the broker is down");
    assert!(error.is_retryable(), "{error}");
    assert!(error.to_string().contains("commit_timeout"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // A write started during the outage waits for the broker.
    let write = tokio::spawn({
        let sink = sink.clone();
        async move { sink.write(Record::from_payload("msg-30")).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !write.is_finished(),
        "a write cannot be acknowledged while the broker is down"
    );
    cluster.broker_up(1).expect("broker up");
    write
        .await
        .expect("write task")
        .expect("write succeeds after recovery");
    produce_to(&bootstrap, &topic, 31, 50).await;

    // Everything after the outage arrives once, in order, where it left off.
    events.extend(read_n(&mut *source, 20, 100).await);
    let all = by_partition(&events);
    assert_eq!(all.values().map(Vec::len).sum::<usize>(), 50);
    let payloads: std::collections::BTreeSet<String> =
        events.iter().map(|e| text(&e.payload)).collect();
    assert_eq!(payloads.len(), 50, "no payload twice");
    assert!(next_within(&mut *source, 100, Duration::from_millis(1000))
        .await
        .is_none());
    // The offsets committed before the outage are still the group's; a
    // commit after it stores the new ones. (Reopening the group on the mock
    // cluster would wait out the old member's session: the mock ignores
    // LeaveGroup.)
    // (The commit that timed out during the outage may have gone through
    // after it: partition 0 is at 10 or 12.)
    let before = committed(&bootstrap, &group, &topic, 2);
    assert!(
        before == vec![Some(all[&0][10] as i64), Some(all[&1][10] as i64)]
            || before == vec![Some(all[&0][12] as i64), Some(all[&1][10] as i64)],
        "{before:?}"
    );
    let ends = positions::at(&[
        (0, all[&0].last().unwrap() + 1),
        (1, all[&1].last().unwrap() + 1),
    ]);
    // The engine retries a failed commit; the one that timed out during
    // the outage may still be finishing first.
    let mut attempts = 0;
    while let Err(error) = source.commit(&ends).await {
        attempts += 1;
        assert!(error.is_retryable() && attempts < 15, "{error}");
    }
    assert_eq!(
        committed(&bootstrap, &group, &topic, 2),
        vec![
            Some(ends[0].next_offset as i64),
            Some(ends[1].next_offset as i64)
        ]
    );
    source.close().await.expect("close");
}

#[tokio::test]
async fn building_without_a_reachable_cluster_fails_retryably_naming_it() {
    // Nothing listens on port 1.
    let nowhere = "127.0.0.1:1";
    let started = std::time::Instant::now();
    let builder = source_builder(&[
        ("bootstrap_servers", nowhere),
        ("topics", "orders"),
        ("group_id", "fn"),
        ("connect_timeout", "1s"),
    ]);
    let error = match builder.build().await {
        Err(error) => error,
        Ok(_) => panic!("a source without a cluster"),
    };
    assert!(error.is_retryable(), "{error}");
    assert!(error.to_string().contains(nowhere), "{error}");
    assert!(error.to_string().contains("bootstrap_servers"), "{error}");

    let (builder, errors) = spate_connector::testkit::read_sink_config(
        &*factory(),
        &[
            ("bootstrap_servers", nowhere),
            ("topic", "out"),
            ("connect_timeout", "1s"),
        ],
    );
    assert!(errors.is_empty(), "{errors:?}");
    let error = match builder.expect("builder").build().await {
        Err(error) => error,
        Ok(_) => panic!("a sink without a cluster"),
    };
    assert!(error.is_retryable(), "{error}");
    assert!(error.to_string().contains(nowhere), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}
