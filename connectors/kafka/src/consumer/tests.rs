//! Unit tests of the consumer machinery: seek retries, partition ids and the
//! hand-over's release.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Offset;
use tokio::sync::mpsc;

use super::poll::not_fetching_yet;
#[test]
fn a_seek_refused_only_because_the_partition_is_not_fetching_yet_is_retried() {
    // As `BaseConsumer::seek` words them (librdkafka's `rd_kafka_err2str`).
    let early = KafkaError::Seek("Local: Erroneous state".to_owned());
    assert!(not_fetching_yet(&early), "{early}");
    let other = KafkaError::Seek("Local: Unknown partition".to_owned());
    assert!(!not_fetching_yet(&other), "{other}");
    assert!(!not_fetching_yet(&KafkaError::NoMessageReceived));
}

use super::*;

#[test]
fn one_topic_uses_partition_numbers() {
    let mut interner = Interner::new(Some("orders"));
    assert_eq!(interner.id("orders", 3).0, 3);
    assert_eq!(interner.existing("orders", 7), Some(7));
    assert_eq!(
        interner.lookup(3).map(|(t, p)| (t.to_string(), p)),
        Some(("orders".into(), 3))
    );
}

#[test]
fn several_topics_get_dense_ids_in_order_of_first_sight() {
    let mut interner = Interner::new(None);
    assert_eq!(interner.id("a", 5).0, 0);
    assert_eq!(interner.id("b", 5).0, 1);
    assert_eq!(interner.id("a", 5).0, 0);
    assert_eq!(interner.existing("b", 5), Some(1));
    assert_eq!(interner.existing("b", 6), None);
    let (tpl, unknown) = interner.list([(1, Offset::Offset(9)), (7, Offset::Offset(1))]);
    assert_eq!(unknown, vec![7]);
    let elements = tpl.elements();
    assert_eq!(elements.len(), 1);
    assert_eq!((elements[0].topic(), elements[0].partition()), ("b", 5));
}

#[test]
fn release_unblocks_a_waiting_revocation_and_shutdown_always_does() {
    let (tx, _rx) = mpsc::channel(4);
    let shared = Arc::new(Shared::new(
        "test".into(),
        Interner::new(None),
        tx,
        Duration::from_secs(30),
        true,
    ));
    lock(&shared.unreleased).extend([1, 2]);
    let waiter = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            shared.wait_for_release(&[1, 2]);
            started.elapsed()
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    shared.release(&[1]);
    std::thread::sleep(Duration::from_millis(50));
    assert!(!waiter.is_finished(), "partition 2 is still held");
    shared.release(&[2]);
    assert!(waiter.join().unwrap() < Duration::from_secs(5));

    lock(&shared.unreleased).insert(3);
    let waiter = {
        let shared = shared.clone();
        std::thread::spawn(move || shared.wait_for_release(&[3]))
    };
    std::thread::sleep(Duration::from_millis(50));
    shared.shut_down();
    waiter.join().unwrap();
}

fn event(offset: u64) -> spate_connector::Event {
    spate_connector::Event {
        key: None,
        payload: bytes::Bytes::from_static(b"x"),
        headers: spate_connector::Headers::new(),
        timestamp_ms: None,
        position: spate_connector::Position {
            stream: "t".into(),
            partition: 0,
            offset,
        },
    }
}

fn offsets(item: Item) -> Vec<u64> {
    match item {
        Item::Events(events) => events.iter().map(|e| e.position.offset).collect(),
        other => panic!("expected events, got {other:?}"),
    }
}

#[test]
fn staged_events_go_out_as_one_batch_before_any_later_item() {
    let (tx, mut rx) = mpsc::channel(4);
    let shared = Shared::new(
        "test".into(),
        Interner::new(None),
        tx,
        Duration::from_secs(30),
        true,
    );
    assert!(shared.flush(), "nothing staged: nothing to send");
    assert!(rx.try_recv().is_err(), "an empty batch is not sent");
    shared.stage(event(1));
    shared.stage(event(2));
    assert!(shared.send(Item::Assigned(vec![3])));
    shared.stage(event(3));
    assert!(shared.flush());
    assert_eq!(offsets(rx.try_recv().unwrap()), vec![1, 2]);
    assert!(matches!(rx.try_recv().unwrap(), Item::Assigned(ids) if ids == vec![3]));
    assert_eq!(offsets(rx.try_recv().unwrap()), vec![3]);
    assert!(rx.try_recv().is_err());
    shared.shut_down();
    shared.stage(event(4));
    assert!(!shared.flush(), "the source is gone");
}
