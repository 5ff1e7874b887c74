//! The `generate` source: determinism, replay, partitioning, pause, pacing,
//! configuration errors.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use spate_connector::{Event, Source, SourceMessage};
use spate_testsupport::builtin::{
    assert_mentioned, assert_suggests, messages, next, open, read_n, read_source, read_to_end,
    source_builder,
};
use spate_testsupport::positions;

/// A `generate` source of `entries`, opened.
async fn generate(entries: &[(&str, &str)]) -> Box<dyn Source> {
    open(&*source_builder("generate", entries)).await.0
}

fn summary(events: &[Event]) -> Vec<(u32, u64, String, String, Option<i64>)> {
    events
        .iter()
        .map(|e| {
            (
                e.position.partition,
                e.position.offset,
                String::from_utf8_lossy(e.key.as_deref().unwrap_or_default()).into_owned(),
                String::from_utf8_lossy(&e.payload).into_owned(),
                e.timestamp_ms,
            )
        })
        .collect()
}

#[tokio::test]
async fn same_seed_same_events_and_offsets_have_no_gaps() {
    let config = [("count", "400"), ("devices", "10"), ("partitions", "3")];
    let (mut a, partitions) = open(&*source_builder("generate", &config)).await;
    assert_eq!(partitions, vec![0, 1, 2]);
    let first = read_to_end(&mut *a, 64).await;
    assert_eq!(first.len(), 400);
    let mut b = generate(&config).await;
    let second = read_to_end(&mut *b, 7).await;
    assert_eq!(summary(&first), summary(&second));

    let mut offsets: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for event in &first {
        offsets
            .entry(event.position.partition)
            .or_default()
            .push(event.position.offset);
        assert_eq!(&*event.position.stream, "telemetry");
        let payload: serde_json::Value =
            serde_json::from_slice(&event.payload).expect("JSON payload");
        assert_eq!(
            payload["device"].as_str().map(str::as_bytes),
            event.key.as_deref()
        );
        assert_eq!(payload["ts"].as_i64(), event.timestamp_ms);
    }
    for (partition, list) in offsets {
        let expected: Vec<u64> = (0..list.len() as u64).collect();
        assert_eq!(list, expected, "partition {partition} offsets");
    }

    let mut other = generate(&[
        ("count", "400"),
        ("devices", "10"),
        ("partitions", "3"),
        ("seed", "7"),
    ])
    .await;
    let reseeded = read_to_end(&mut *other, 64).await;
    assert_ne!(
        summary(&first),
        summary(&reseeded),
        "another seed gives other readings"
    );
}

#[tokio::test]
async fn a_device_always_reports_to_the_same_partition() {
    let mut source = generate(&[("count", "1000"), ("devices", "25"), ("partitions", "4")]).await;
    let events = read_to_end(&mut *source, 100).await;
    let mut homes: BTreeMap<Vec<u8>, BTreeSet<u32>> = BTreeMap::new();
    for event in &events {
        homes
            .entry(event.key.as_deref().unwrap_or_default().to_vec())
            .or_default()
            .insert(event.position.partition);
    }
    assert_eq!(homes.len(), 25, "every device reports");
    assert!(homes.values().all(|p| p.len() == 1), "{homes:?}");
}

#[tokio::test]
async fn count_ends_the_stream() {
    let mut source = generate(&[("count", "10")]).await;
    assert_eq!(read_to_end(&mut *source, 3).await.len(), 10);
    assert!(matches!(next(&mut *source, 3).await, SourceMessage::End));
    let mut empty = generate(&[("count", "0")]).await;
    assert!(matches!(next(&mut *empty, 3).await, SourceMessage::End));
}

/// Reads `n` events from `source` (batches of at most `max`), commits the
/// `(partition, next_offset)` pairs and drops the source, as a process
/// that stops; returns what was read.
async fn read_commit_and_stop(
    mut source: Box<dyn Source>,
    n: usize,
    max: usize,
    commit: &[(u32, u64)],
) -> Vec<Event> {
    let events = read_n(&mut *source, n, max).await;
    source.commit(&positions::at(commit)).await.expect("commit");
    events
}

#[tokio::test]
async fn a_rebuilt_source_resumes_at_the_committed_positions_with_the_same_events() {
    let builder = source_builder("generate", &[("partitions", "2"), ("devices", "6")]);
    let (source, _) = open(&*builder).await;
    let original = read_commit_and_stop(source, 200, 50, &[(0, 30), (1, 55)]).await;

    let (mut again, _) = open(&*builder).await;
    let replayed = read_n(&mut *again, 60, 60).await;
    for partition in [0u32, 1] {
        let start = if partition == 0 { 30 } else { 55 };
        let replayed: Vec<&Event> = replayed
            .iter()
            .filter(|e| e.position.partition == partition)
            .collect();
        assert_eq!(
            replayed[0].position.offset, start,
            "partition {partition} resumes at its commit"
        );
        for event in replayed {
            let original = original
                .iter()
                .find(|o| o.position == event.position)
                .unwrap_or_else(|| panic!("{:?} was generated before", event.position));
            assert_eq!(original, event, "regenerated identically");
        }
    }
}

#[tokio::test]
async fn a_state_file_carries_positions_across_builders() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state/generate.json");
    let state = state.to_str().expect("UTF-8 path");
    let config = [("partitions", "2"), ("devices", "4"), ("state_file", state)];
    let source = generate(&config).await;
    let original = read_commit_and_stop(source, 40, 40, &[(0, 12), (1, 9)]).await;

    // A new builder, as after a process restart.
    let mut restarted = generate(&config).await;
    let events = read_n(&mut *restarted, 10, 10).await;
    let first_of = |p: u32| {
        events
            .iter()
            .find(|e| e.position.partition == p)
            .expect("both partitions flow")
    };
    assert_eq!(first_of(0).position.offset, 12);
    assert_eq!(first_of(1).position.offset, 9);
    assert!(original.contains(first_of(0)) && original.contains(first_of(1)));
}

#[tokio::test]
async fn a_paused_partition_yields_nothing_until_resumed() {
    let mut source = generate(&[("partitions", "3"), ("devices", "9")]).await;
    read_n(&mut *source, 30, 30).await;
    source.pause(&[1]).expect("pause");
    let during = read_n(&mut *source, 300, 50).await;
    assert!(during.iter().all(|e| e.position.partition != 1));
    source.pause(&[0, 2]).expect("pause the rest");
    let idle = tokio::time::timeout(Duration::from_millis(100), source.next(10)).await;
    assert!(idle.is_err(), "all partitions paused: next must wait");
    source.resume(&[0, 1, 2]).expect("resume");
    let after = read_n(&mut *source, 30, 30).await;
    let first_of_one = after
        .iter()
        .find(|e| e.position.partition == 1)
        .expect("partition 1 flows again");
    assert_eq!(
        first_of_one.position.offset, 10,
        "partition 1 continues where it stopped"
    );
}

#[tokio::test]
async fn rate_paces_events_and_cancelled_waits_lose_nothing() {
    let mut source = generate(&[("rate", "200"), ("count", "40")]).await;
    let started = Instant::now();
    let mut events = Vec::new();
    loop {
        // Short timeouts cancel `next` while it waits for the next due event.
        match tokio::time::timeout(Duration::from_millis(3), source.next(1000)).await {
            Err(_) => continue,
            Ok(Ok(SourceMessage::Events(batch))) => events.extend(batch),
            Ok(Ok(SourceMessage::End)) => break,
            Ok(other) => panic!("unexpected {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10), "stuck");
    }
    // 40 events at 200/s: the last is due 195ms after the first.
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    let mut seen: Vec<(u32, u64)> = events
        .iter()
        .map(|e| (e.position.partition, e.position.offset))
        .collect();
    seen.sort_unstable();
    let expected: Vec<(u32, u64)> = (0..4).flat_map(|p| (0..10).map(move |o| (p, o))).collect();
    assert_eq!(seen, expected, "every event exactly once");
}

#[tokio::test]
async fn malformed_every_and_payload_bytes_shape_payloads() {
    let mut source = generate(&[
        ("count", "100"),
        ("malformed_every", "10"),
        ("payload_bytes", "512"),
    ])
    .await;
    let events = read_to_end(&mut *source, 100).await;
    let (bad, good): (Vec<&Event>, Vec<&Event>) = events
        .iter()
        .partition(|e| serde_json::from_slice::<serde_json::Value>(&e.payload).is_err());
    assert_eq!(bad.len(), 10);
    assert!(good.iter().all(|e| e.payload.len() == 512));
}

#[test]
fn configuration_problems_are_all_reported() {
    let (builder, errors) = read_source(
        "generate",
        &[
            ("devices", "2"),
            ("partitions", "4"),
            ("rate", "-1"),
            ("devics", "3"),
            ("count", "many"),
        ],
    );
    assert!(builder.is_none());
    let messages = messages(&errors);
    assert_mentioned(&messages, "must not exceed `devices`");
    assert_mentioned(&messages, "`rate` must not be negative");
    assert_mentioned(&messages, "`count` must be a whole number");
    let unknown = assert_suggests(&errors, "devics", "devices");
    assert_eq!(unknown.span.line, 5);
    assert_eq!(unknown.path, "inputs[0].devics");
}
