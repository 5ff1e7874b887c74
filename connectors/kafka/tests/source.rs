//! The Kafka source against a real Kafka-protocol broker (Tansu), through
//! the contract: order, commits, pause, and the rebalance hand-over.

use std::collections::BTreeMap;
use std::time::Duration;

use spate_connector::{CommitPosition, SourceMessage};
use spate_testsupport::kafka::*;

#[tokio::test]
async fn reads_every_partition_in_order_and_a_new_member_resumes_after_the_commit() {
    let broker = tansu();
    let topic = broker.topic("orders", 4).await;
    let group = unique("fn");
    let produced = produce_n(&broker.bootstrap, &topic, 4, 40, "msg").await;

    // Statistics (and so lag) every 200 ms instead of every 5 s.
    let node = map(vec![
        ("bootstrap_servers", scalar(&broker.bootstrap, 2)),
        ("topics", scalar(&topic, 3)),
        ("group_id", scalar(&group, 4)),
        ("session_timeout", scalar("6s", 5)),
        (
            "properties",
            properties(&[("statistics.interval.ms", "200")], 7),
        ),
    ]);
    let (builder, errors) = read_source_node(&node);
    assert!(errors.is_empty(), "{errors:?}");
    let builder = builder.expect("builder");
    let mut source = open(&*builder, 4).await;
    let events = read_n(&mut *source, 40, 7).await;

    // Every message once, in offset order per partition, with its key,
    // payload, header and position.
    let offsets = by_partition(&events);
    for (partition, offset, payload) in &produced {
        let event = events
            .iter()
            .find(|e| {
                e.position.partition == *partition as u32 && e.position.offset == *offset as u64
            })
            .unwrap_or_else(|| panic!("{partition}/{offset} missing"));
        assert_eq!(text(&event.payload), *payload);
        let i: usize = payload.trim_start_matches("msg-").parse().unwrap();
        assert_eq!(event.key.as_deref(), Some(format!("key-{i}").as_bytes()));
        assert_eq!(event.headers.get_str("n"), Some(i.to_string().as_str()));
        assert_eq!(&*event.position.stream, topic.as_str());
        assert!(event.timestamp_ms.is_some_and(|t| t > 1_600_000_000_000));
    }
    assert_eq!(offsets.values().map(Vec::len).sum::<usize>(), 40);
    assert!(next_within(&mut *source, 100, Duration::from_millis(500))
        .await
        .is_none());
    // Everything read: librdkafka's statistics report no lag.
    let lags: Vec<Option<u64>> = (0..4).map(|p| source.lag(p)).collect();
    assert_eq!(lags, vec![Some(0); 4]);

    // The engine finished different amounts per partition.
    let finished: BTreeMap<u32, u64> = [(0, 4), (1, 10), (2, 0), (3, 7)].into();
    let positions: Vec<CommitPosition> = finished
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(p, n)| CommitPosition {
            partition: *p,
            next_offset: offsets[p][*n as usize - 1] + 1,
        })
        .collect();
    source.commit(&positions).await.expect("commit");
    source.close().await.expect("close");
    let expected_committed: Vec<Option<i64>> = (0..4)
        .map(|p| {
            positions
                .iter()
                .find(|c| c.partition == p)
                .map(|c| c.next_offset as i64)
        })
        .collect();
    assert_eq!(
        committed(&broker.bootstrap, &group, &topic, 4),
        expected_committed
    );

    // A new member of the group gets exactly what was not committed, and
    // before it hands anything out, its lag counts from the commit.
    let mut source = open(&*builder, 4).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let lags: Vec<Option<u64>> = (0..4).map(|p| source.lag(p)).collect();
    assert_eq!(lags, vec![Some(6), Some(0), None, Some(3)]);
    let remaining: usize = finished.values().map(|n| 10 - *n as usize).sum();
    let again = read_n(&mut *source, remaining, 100).await;
    let again_offsets = by_partition(&again);
    for (p, n) in &finished {
        let expected: Vec<u64> = offsets[p][*n as usize..].to_vec();
        assert_eq!(
            again_offsets.get(p).cloned().unwrap_or_default(),
            expected,
            "partition {p}"
        );
    }
    assert!(
        next_within(&mut *source, 100, Duration::from_millis(1000))
            .await
            .is_none(),
        "nothing else is read"
    );
    source.close().await.expect("close");
}

#[tokio::test]
async fn pause_holds_back_fetched_events_and_resume_delivers_the_rest_in_order() {
    let broker = tansu();
    let topic = broker.topic("paused", 2).await;
    let group = unique("fn");
    // 150 on partition 0, 30 on partition 1 (i % 2 == 1 for the first 60).
    produce_n(&broker.bootstrap, &topic, 1, 150, "p0").await;
    let records = (0..30).map(|i| (1, format!("p1-{i}")));
    produce_payloads(&producer(&broker.bootstrap), &topic, records).await;

    let builder = source_builder(&source_entries(&broker, &topic, &group, &[]));
    let mut source = open(&*builder, 2).await;
    // Read a little of partition 0, so that more of it is fetched already.
    let mut seen: Vec<spate_connector::Event> = Vec::new();
    while !seen.iter().any(|e| e.position.partition == 0) {
        seen.extend(read_n(&mut *source, 1, 3).await);
    }
    source.pause(&[0]).expect("pause");
    let at_pause = seen.iter().filter(|e| e.position.partition == 0).count();

    // Paused: partition 1 continues, partition 0 gives nothing, even the
    // events librdkafka had fetched before the pause.
    loop {
        match next_within(&mut *source, 10, Duration::from_millis(1500)).await {
            Some(SourceMessage::Events(batch)) => {
                assert!(
                    batch.iter().all(|e| e.position.partition == 1),
                    "partition 0 delivered while paused: {:?}",
                    batch
                        .iter()
                        .map(|e| (e.position.partition, e.position.offset))
                        .collect::<Vec<_>>()
                );
                seen.extend(batch);
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => break,
        }
    }
    assert_eq!(
        seen.iter().filter(|e| e.position.partition == 1).count(),
        30
    );
    assert_eq!(
        seen.iter().filter(|e| e.position.partition == 0).count(),
        at_pause
    );

    source.resume(&[0]).expect("resume");
    let rest = read_n(&mut *source, 150 - at_pause, 10).await;
    seen.extend(rest);
    let offsets = by_partition(&seen);
    assert_eq!(
        offsets[&0],
        (0..150).collect::<Vec<u64>>(),
        "none lost, none twice, in order"
    );
    assert_eq!(offsets[&1], (0..30).collect::<Vec<u64>>());
    assert!(next_within(&mut *source, 100, Duration::from_millis(500))
        .await
        .is_none());
    source.close().await.expect("close");
}

#[tokio::test]
async fn revocation_waits_for_release_and_the_next_member_continues_after_the_commit() {
    let broker = tansu();
    let topic = broker.topic("shared", 4).await;
    let group = unique("fn");
    produce_n(&broker.bootstrap, &topic, 4, 80, "msg").await;
    let builder = source_builder(&source_entries(&broker, &topic, &group, &[]));

    let mut a = open(&*builder, 4).await;
    let events = read_n(&mut *a, 80, 100).await;
    let offsets = by_partition(&events);
    assert!(offsets.values().all(|o| o.len() == 20));

    // A second member joins; whatever it reports comes through a channel.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let b_builder = source_builder(&source_entries(&broker, &topic, &group, &[]));
    let b = tokio::spawn(async move {
        let mut b = b_builder.build().await.expect("second member builds");
        loop {
            tokio::select! {
                message = b.next(100) => {
                    if seen_tx.send(message.expect("second member reads")).is_err() {
                        break;
                    }
                }
                _ = &mut stop_rx => break,
            }
        }
        b.close().await.expect("close");
    });

    let revoked = match next(&mut *a, 100).await {
        SourceMessage::Revoked(ids) => ids,
        other => panic!("expected Revoked, got {other:?}"),
    };
    assert!(
        !revoked.is_empty() && revoked.len() < 4,
        "cooperative: only some move, got {revoked:?}"
    );

    // Until A releases them, nobody else gets the revoked partitions...
    // (Without the hand-over Tansu gives them to the new member about 5 s
    // after the revocation; wait longer than that.)
    tokio::time::sleep(Duration::from_secs(7)).await;
    while let Ok(message) = seen_rx.try_recv() {
        assert!(
            !matches!(&message, SourceMessage::Assigned(ids) if ids.iter().any(|id| revoked.contains(id))),
            "revoked partitions assigned before their release: {message:?}"
        );
        assert!(!matches!(message, SourceMessage::Events(_)), "{message:?}");
    }
    // ... and A can still commit them: it finished half of each.
    let positions: Vec<CommitPosition> = revoked
        .iter()
        .map(|p| CommitPosition {
            partition: *p,
            next_offset: offsets[p][10],
        })
        .collect();
    a.commit(&positions)
        .await
        .expect("commit during the hand-over");
    a.release(&revoked).await.expect("release");

    // The second member gets them and continues right after the commit.
    let mut assigned = Vec::new();
    let mut moved: Vec<spate_connector::Event> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while moved.len() < 10 * revoked.len() {
        let message = tokio::time::timeout_at(deadline, seen_rx.recv())
            .await
            .expect("the second member gets the revoked partitions' rest within 30s")
            .expect("second member running");
        match message {
            SourceMessage::Assigned(ids) => assigned.extend(ids),
            SourceMessage::Events(batch) => {
                for e in &batch {
                    assert!(
                        assigned.contains(&e.position.partition),
                        "event before its assignment"
                    );
                }
                moved.extend(batch);
            }
            other => panic!("second member: unexpected {other:?}"),
        }
    }
    assigned.sort_unstable();
    assert_eq!(assigned, revoked);
    let moved_offsets = by_partition(&moved);
    for p in &revoked {
        assert_eq!(moved_offsets[p], offsets[p][10..].to_vec(), "partition {p}");
    }
    // A keeps the rest: no further revocation, nothing more to read.
    assert!(next_within(&mut *a, 100, Duration::from_millis(1500))
        .await
        .is_none());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(seen_rx.try_recv().is_err(), "nothing read twice");

    let _ = stop_tx.send(());
    b.await.expect("second member task");
    a.close().await.expect("close");
}
