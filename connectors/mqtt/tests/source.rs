//! The `mqtt` and `mqtt_at_most_once` sources against a real Mosquitto.

use std::collections::BTreeMap;
use std::time::Duration;

use rumqttc::QoS;
use spate_testsupport::mqtt::*;
use spate_testsupport::positions;

#[tokio::test]
async fn wildcard_subscription_keeps_order_within_a_partition() {
    let broker = broker();
    let base = unique("order");
    let filter = format!("{base}/+/telemetry");
    let builder = broker.source(
        &filter,
        &[
            ("partitions", "4"),
            ("partition_level", "2"),
            ("key_level", "2"),
        ],
    );
    let mut source = open(&*builder, 4).await;
    let mut messages = Vec::new();
    for i in 0..30 {
        let device = format!("dev{}", i % 3);
        messages.push((
            format!("{base}/{device}/telemetry"),
            format!("{device}:{i}"),
        ));
    }
    broker.publish_to(&messages, QoS::AtLeastOnce).await;
    // Commit as we go: without commits the broker stops at its in-flight
    // window (20 unacknowledged messages in Mosquitto).
    let mut events = Vec::new();
    while events.len() < 30 {
        let batch = read_n(&mut *source, 1, 7).await;
        events.extend(batch);
        source.commit(&positions::after(&events)).await.unwrap();
    }
    assert_eq!(events.len(), 30);

    let mut last_offset: BTreeMap<u32, u64> = BTreeMap::new();
    let mut per_device: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut device_partition: BTreeMap<String, u32> = BTreeMap::new();
    for event in &events {
        let p = event.position.partition;
        assert!(p < 4);
        if let Some(last) = last_offset.get(&p) {
            assert!(
                event.position.offset > *last,
                "offsets grow within a partition"
            );
        }
        last_offset.insert(p, event.position.offset);
        let text = String::from_utf8(event.payload.to_vec()).unwrap();
        let (device, i) = text.split_once(':').unwrap();
        assert_eq!(
            event.key.as_deref(),
            Some(device.as_bytes()),
            "key = level 2"
        );
        assert_eq!(
            event.headers.get_str(spate_mqtt::TOPIC_HEADER),
            Some(format!("{base}/{device}/telemetry").as_str())
        );
        let partition = *device_partition.entry(device.to_owned()).or_insert(p);
        assert_eq!(partition, p, "one device, one partition");
        per_device
            .entry(device.to_owned())
            .or_default()
            .push(i.parse().unwrap());
    }
    for (device, order) in per_device {
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted, "{device} in publish order");
        assert_eq!(order.len(), 10);
    }
    source.commit(&positions::after(&events)).await.unwrap();
    source.close().await.unwrap();
}

#[tokio::test]
async fn uncommitted_messages_are_redelivered_and_committed_ones_are_not() {
    let broker = broker();
    let topic = unique("redeliver");
    let builder = broker.source(&topic, &[]);
    let mut source = open(&*builder, 1).await;
    broker.publish(&topic, &payloads(5), QoS::AtLeastOnce).await;
    let events = read_n(&mut *source, 5, 100).await;
    assert_eq!(texts(&events), payloads(5));
    // Only the first two are finished; then spate "crashes" (no close).
    source.commit(&positions::at(&[(0, 2)])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(source);

    let mut source = open(&*builder, 1).await;
    let events = read_n(&mut *source, 3, 100).await;
    assert_eq!(texts(&events), vec!["msg-2", "msg-3", "msg-4"]);
    assert_eq!(
        events.iter().map(|e| e.position.offset).collect::<Vec<_>>(),
        vec![0, 1, 2],
        "offsets are session-local"
    );
    assert!(
        read_quiet(&mut *source, Duration::from_millis(700))
            .await
            .is_empty(),
        "nothing committed comes back"
    );
    source.commit(&positions::after(&events)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(source);

    // Everything was acknowledged: nothing comes back.
    let mut source = open(&*builder, 1).await;
    assert!(read_quiet(&mut *source, Duration::from_secs(1))
        .await
        .is_empty());
    source.close().await.unwrap();
}

#[tokio::test]
async fn the_persistent_session_keeps_what_was_published_while_down() {
    let broker = broker();
    let topic = unique("offline");
    let builder = broker.source(&format!("{topic}/#"), &[]);
    let mut source = open(&*builder, 1).await;
    source.close().await.unwrap();
    drop(source);

    broker
        .publish(&format!("{topic}/a"), &payloads(4), QoS::AtLeastOnce)
        .await;

    let mut source = open(&*builder, 1).await;
    let events = read_n(&mut *source, 4, 100).await;
    assert_eq!(texts(&events), payloads(4));
    source.commit(&positions::after(&events)).await.unwrap();
    source.close().await.unwrap();
}

#[tokio::test]
async fn at_most_once_qos0_loses_what_it_did_not_see_and_redelivers_nothing() {
    let broker = broker();
    let topic = unique("qos0");
    let builder = source_builder(
        "mqtt_at_most_once",
        &[("url", &broker.url), ("topics", &topic)],
    );
    let mut source = open(&*builder, 1).await;
    broker.publish(&topic, &payloads(3), QoS::AtLeastOnce).await;
    let events = read_n(&mut *source, 3, 100).await;
    assert_eq!(texts(&events), payloads(3));
    drop(source); // no commit

    // Published while nobody listens: gone (clean session).
    broker.publish(&topic, &payloads(2), QoS::AtLeastOnce).await;
    let mut source = open(&*builder, 1).await;
    assert!(read_quiet(&mut *source, Duration::from_millis(700))
        .await
        .is_empty());
    // Live QoS 0 delivery works.
    broker.publish(&topic, &payloads(2), QoS::AtMostOnce).await;
    let events = read_n(&mut *source, 2, 100).await;
    assert_eq!(texts(&events), payloads(2));
    source.close().await.unwrap();
}

#[tokio::test]
async fn pause_stops_delivery_and_the_broker_window_bounds_what_is_held() {
    let broker = broker();
    let topic = unique("bounded");
    let builder = broker.source(&topic, &[("max_buffered", "5")]);
    let mut source = open(&*builder, 1).await;
    source.pause(&[0]).unwrap();
    broker
        .publish(&topic, &payloads(60), QoS::AtLeastOnce)
        .await;
    assert!(
        next_within(&mut *source, 100, Duration::from_millis(500))
            .await
            .is_none(),
        "a paused partition delivers nothing"
    );
    source.resume(&[0]).unwrap();
    // Without commits the broker stops at its in-flight window (Mosquitto:
    // 20 unacknowledged messages per client).
    let first = read_quiet(&mut *source, Duration::from_millis(800)).await;
    assert!(
        !first.is_empty() && first.len() <= 20,
        "held {} messages without commits",
        first.len()
    );
    let mut all = first;
    // Committing opens the window again, until everything arrived.
    while all.len() < 60 {
        source.commit(&positions::after(&all)).await.unwrap();
        let more = read_quiet(&mut *source, Duration::from_millis(800)).await;
        assert!(!more.is_empty(), "stalled after {} messages", all.len());
        all.extend(more);
    }
    assert_eq!(texts(&all), payloads(60), "in order, none lost, none twice");
    source.commit(&positions::after(&all)).await.unwrap();
    source.close().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_broker_fails_retryably_with_a_hint() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let builder = source_builder(
        "mqtt",
        &[
            ("url", &url),
            ("topics", "a/b"),
            ("client_id", "nobody"),
            ("password", "s3cret"),
            ("username", "alice"),
            ("connect_timeout", "1s"),
        ],
    );
    let error = match builder.build().await {
        Ok(_) => panic!("connected to nothing"),
        Err(e) => e,
    };
    assert!(error.is_retryable(), "{error}");
    let text = error.to_string();
    assert!(text.contains(&url), "{text}");
    assert!(text.contains("check that the MQTT broker"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}
