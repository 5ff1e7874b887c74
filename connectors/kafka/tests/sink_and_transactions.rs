//! The Kafka sink and the exactly-once session against a real
//! Kafka-protocol broker (Tansu).

use std::time::Duration;

use bytes::Bytes;
use spate_connector::{
    Record, SinkError, SourceError, SourceMessage, TransactionError, TransactionalTarget,
};
use spate_testsupport::kafka::*;
use spate_testsupport::positions;

/// Everything in `topic`, aborted or not, once `expect` records arrived
/// and nothing more came for 300 ms.
fn written(broker: &Broker, topic: &str, expect: usize) -> Vec<ReadBack> {
    read_topic(
        &broker.bootstrap,
        topic,
        false,
        expect,
        Duration::from_millis(300),
    )
}

fn record(i: usize) -> Record {
    spate_testsupport::connector::numbered_record(i, Some(1_700_000_000_000 + i as i64))
}

#[tokio::test]
async fn sink_writes_keys_headers_and_timestamps_and_resolves_on_delivery() {
    let broker = tansu();
    let topic = broker.topic("out", 1).await;
    let other = broker.topic("elsewhere", 1).await;
    let sink = sink(&[("bootstrap_servers", &broker.bootstrap), ("topic", &topic)]).await;
    assert_eq!(
        sink.transactional_target(),
        Some(TransactionalTarget {
            kind: "kafka",
            cluster: broker.bootstrap.clone(),
            destination: topic.clone(),
        })
    );

    for i in 0..5 {
        sink.write(record(i)).await.expect("acknowledged");
        // Resolved means delivered: the record is readable right now.
        let stored = read_topic(&broker.bootstrap, &topic, false, i + 1, Duration::ZERO);
        assert_eq!(
            stored.len(),
            i + 1,
            "record {i} readable once its write resolved"
        );
    }
    let stored = written(&broker, &topic, 5);
    assert_eq!(stored.len(), 5);
    for (i, r) in stored.iter().enumerate() {
        assert_eq!(r.key.as_deref(), Some(format!("dev-{i}").as_bytes()));
        assert_eq!(r.payload, format!("payload-{i}").into_bytes());
        assert_eq!(r.timestamp, Some(1_700_000_000_000 + i as i64));
        assert_eq!(
            r.headers,
            vec![
                ("trace".to_owned(), format!("t-{i}").into_bytes()),
                ("multi".to_owned(), b"a".to_vec()),
                ("multi".to_owned(), b"b".to_vec()),
            ]
        );
    }

    // The override header picks the topic and is not written.
    let mut routed = record(9);
    routed
        .headers
        .push(spate_kafka::TOPIC_HEADER, Bytes::from(other.clone()));
    sink.write(routed).await.expect("routed write");
    let elsewhere = written(&broker, &other, 1);
    assert_eq!(elsewhere.len(), 1);
    assert_eq!(elsewhere[0].payload, b"payload-9".to_vec());
    assert!(elsewhere[0]
        .headers
        .iter()
        .all(|(name, _)| name != spate_kafka::TOPIC_HEADER));
    assert_eq!(written(&broker, &topic, 5).len(), 5);

    // Too large for the producer (librdkafka's message.max.bytes, 1 MB):
    // rejected, so the engine dead-letters it instead of retrying forever,
    // and the message names the producer's setting, not the topic's.
    let huge = Record::from_payload(vec![b'x'; 2_000_000]);
    match sink.write(huge).await {
        Err(SinkError::Rejected { message, .. }) => {
            assert!(
                message.contains("this producer's `message.max.bytes` (1000000 bytes)"),
                "{message}"
            );
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    sink.flush().await.expect("flush");
}

/// Settings of an exactly-once input.
fn eos_entries<'a>(broker: &'a Broker, topic: &'a str, group: &'a str) -> Vec<(&'a str, &'a str)> {
    source_entries(broker, topic, group, &[("group_instance_id", "worker-1")])
}

#[tokio::test]
async fn transactions_commit_records_with_offsets_and_a_newer_session_fences_the_older() {
    let broker = tansu();
    let input = broker.topic("in", 2).await;
    let output = broker.topic("out", 1).await;
    let group = unique("fn");
    produce_n(&broker.bootstrap, &input, 2, 20, "in").await;
    let target = TransactionalTarget {
        kind: "kafka",
        cluster: broker.bootstrap.clone(),
        destination: output.clone(),
    };

    // Without a stable identity there is no session. (Its own group: a
    // member closed while still joining would hold up the next join of
    // the same group on Tansu for up to a session timeout.)
    let anonymous_group = format!("{group}-anonymous");
    let anonymous = source_builder(&source_entries(&broker, &input, &anonymous_group, &[]));
    let mut source = anonymous.build().await.expect("builds");
    match source.begin_exactly_once().await {
        Err(SourceError::Fatal { message, .. }) => {
            assert!(message.contains("group_instance_id"), "{message}")
        }
        other => panic!(
            "expected Fatal, got {:?}",
            other.map(|s| s.name().to_owned())
        ),
    }
    source.close().await.expect("close");

    let builder = source_builder(&eos_entries(&broker, &input, &group));
    let mut source = builder.build().await.expect("builds");
    let mut session = source.begin_exactly_once().await.expect("session opens");
    assert_eq!(session.name(), format!("kafka:spate-{group}-worker-1"));
    session.accepts(&target).expect("same cluster");
    let foreign = TransactionalTarget {
        cluster: "elsewhere:9092".to_owned(),
        ..target.clone()
    };
    let why = session.accepts(&foreign).unwrap_err();
    assert!(
        why.contains("elsewhere:9092") && why.contains(&broker.bootstrap),
        "{why}"
    );
    let nats = TransactionalTarget {
        kind: "jetstream",
        ..target.clone()
    };
    assert!(session.accepts(&nats).unwrap_err().contains("jetstream"));

    // Assignments may come one partition at a time, with events between.
    let mut owned = Vec::new();
    let mut events = Vec::new();
    while owned.len() < 2 || events.len() < 20 {
        match next(&mut *source, 100).await {
            SourceMessage::Assigned(ids) => owned.extend(ids),
            SourceMessage::Events(batch) => events.extend(batch),
            other => panic!("unexpected {other:?}"),
        }
    }
    let offsets = by_partition(&events);

    // Commit 1: three records and the positions after four events each.
    for i in 0..3 {
        session.write(&target, record(i)).await.expect("write");
    }
    let first = positions::at(&[(0, offsets[&0][4]), (1, offsets[&1][4])]);
    session.commit(&first, &[]).await.expect("commit");
    let expected = vec![Some(offsets[&0][4] as i64), Some(offsets[&1][4] as i64)];
    assert_eq!(committed(&broker.bootstrap, &group, &input, 2), expected);
    let out = read_topic(
        &broker.bootstrap,
        &output,
        true,
        3,
        Duration::from_millis(500),
    );
    let payloads: Vec<Vec<u8>> = out.iter().map(|r| r.payload.clone()).collect();
    assert_eq!(
        payloads,
        (0..3)
            .map(|i| format!("payload-{i}").into_bytes())
            .collect::<Vec<_>>()
    );
    // The engine calls `Source::commit` after the session commit: a no-op.
    source.commit(&first).await.expect("no-op commit");

    // An aborted transaction commits no offsets. (Tansu keeps aborted
    // records visible even to read_committed readers, a known defect, so
    // only the offsets are checked.)
    session.write(&target, record(3)).await.expect("write");
    session.abort().await.expect("abort");
    assert_eq!(committed(&broker.bootstrap, &group, &input, 2), expected);
    // The next transaction carries the same records again, and newer
    // positions.
    session
        .write(&target, record(3))
        .await
        .expect("write again");
    let second = positions::at(&[(0, offsets[&0][6])]);
    session
        .commit(&second, &[])
        .await
        .expect("commit after abort");
    let expected = vec![Some(offsets[&0][6] as i64), Some(offsets[&1][4] as i64)];
    assert_eq!(committed(&broker.bootstrap, &group, &input, 2), expected);
    // Positions without records get a transaction of their own, which
    // resolves. (Tansu 0.6.0 acknowledges such a transaction but never
    // applies its offsets: its in-memory store starts a transaction only
    // when a partition is added to it, so the offsets are not checked
    // here. On Kafka the offsets are committed.)
    session
        .commit(&positions::at(&[(1, offsets[&1][5])]), &[])
        .await
        .expect("offsets-only commit");
    // Nothing written and no positions: nothing to do.
    session.commit(&[], &[]).await.expect("empty commit");
    session.write(&target, record(4)).await.expect("write");
    let with_record = positions::at(&[(1, offsets[&1][6])]);
    session.commit(&with_record, &[]).await.expect("commit");
    let expected = vec![Some(offsets[&0][6] as i64), Some(offsets[&1][6] as i64)];
    assert_eq!(committed(&broker.bootstrap, &group, &input, 2), expected);

    // A second session with the same transactional id (a restarted
    // process) fences the first: its next commit is fatal and moves no
    // offset.
    let mut newer = source.begin_exactly_once().await.expect("newer session");
    let fenced = async {
        session.write(&target, record(5)).await?;
        session
            .commit(&positions::at(&[(1, offsets[&1][8])]), &[])
            .await
    };
    match fenced.await {
        Err(TransactionError::Fatal { message, .. }) => assert!(
            message.contains("another process took over transactional id"),
            "{message}"
        ),
        other => panic!("expected Fatal, got {other:?}"),
    }
    assert_eq!(committed(&broker.bootstrap, &group, &input, 2), expected);
    // The newer one works.
    newer.write(&target, record(6)).await.expect("write");
    let third = positions::at(&[(1, offsets[&1][9])]);
    newer.commit(&third, &[]).await.expect("newer commit");
    assert_eq!(
        committed(&broker.bootstrap, &group, &input, 2),
        vec![Some(offsets[&0][6] as i64), Some(offsets[&1][9] as i64)]
    );
    source.close().await.expect("close");
}
