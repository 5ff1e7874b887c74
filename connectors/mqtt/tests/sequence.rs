//! `sequence:` against a real Mosquitto: the positions an `mqtt` source
//! hands a database are each topic's last finished sequence, and a source
//! resumed from them acknowledges the broker's redeliveries of finished
//! messages without handing them on, while out-of-sequence and unnumbered
//! messages are marked for the dead letters.

use std::time::Duration;

use rumqttc::QoS;
use spate_connector::{dead_letter, StoredPosition};
use spate_testsupport::mqtt::*;
use spate_testsupport::positions;

fn reading(seq: u64) -> String {
    format!(r#"{{"seq":{seq},"t":21.5}}"#)
}

#[tokio::test]
async fn a_resumed_source_skips_what_the_database_holds_and_acknowledges_it() {
    let broker = broker();
    let base = unique("seq");
    let (t1, t2) = (
        format!("{base}/d1/telemetry"),
        format!("{base}/d2/telemetry"),
    );
    let filter = format!("{base}/+/telemetry");
    let builder = broker.source(&filter, &[("sequence", "/seq")]);
    assert!(
        builder.capabilities().is_none(),
        "with `sequence` the source can do all its kind can"
    );
    let mut source = open(&*builder, 1).await;
    let mut messages: Vec<(String, String)> = (1..=10).map(|s| (t1.clone(), reading(s))).collect();
    messages.extend((1..=5).map(|s| (t2.clone(), reading(s))));
    broker.publish_to(&messages, QoS::AtLeastOnce).await;
    let events = read_n(&mut *source, 15, 100).await;
    assert_eq!(events.len(), 15);
    // Finished: t1's ten and t2's first two (offsets 0..12).
    let commit = positions::at(&[(0, events[11].position.offset + 1)]);
    let stored = source.positions_to_store(&commit);
    assert_eq!(
        stored,
        vec![
            StoredPosition {
                partition: t1.clone(),
                next_offset: 11
            },
            StoredPosition {
                partition: t2.clone(),
                next_offset: 3
            },
        ]
    );
    // Crash after the database committed, before any ack reached the broker.
    drop(source);

    let mut source = open(&*builder, 1).await;
    source.resume_from(&stored).expect("resumes");
    let events = read_quiet(&mut *source, Duration::from_millis(1500)).await;
    assert_eq!(
        texts(&events),
        vec![reading(3), reading(4), reading(5)],
        "only t2's unfinished messages are handed on"
    );
    assert!(events
        .iter()
        .all(|e| e.headers.get(dead_letter::DECODE_ERROR).is_none()));
    // The finished redeliveries were acknowledged: a third session sees
    // only what is still unacknowledged.
    source.close().await.unwrap();
    drop(source);
    let mut source = open(&*builder, 1).await;
    let again = read_quiet(&mut *source, Duration::from_millis(1500)).await;
    assert_eq!(texts(&again), vec![reading(3), reading(4), reading(5)]);
    source.close().await.unwrap();
}

#[tokio::test]
async fn out_of_sequence_and_unnumbered_messages_go_to_the_dead_letters() {
    let broker = broker();
    let topic = unique("seq-bad");
    let builder = broker.source(&topic, &[("sequence", "/seq")]);
    let mut source = open(&*builder, 1).await;
    let payloads = vec![
        reading(5),
        reading(4),
        r#"{"t":1}"#.to_owned(),
        "not json".to_owned(),
        reading(6),
    ];
    broker.publish(&topic, &payloads, QoS::AtLeastOnce).await;
    let events = read_n(&mut *source, 5, 100).await;
    let reasons: Vec<Option<String>> = events
        .iter()
        .map(|e| {
            e.headers
                .get_str(dead_letter::DECODE_ERROR)
                .map(str::to_owned)
        })
        .collect();
    assert!(reasons[0].is_none() && reasons[4].is_none(), "{reasons:?}");
    assert!(
        reasons[1].as_deref().unwrap_or("").contains("not above 5"),
        "{reasons:?}"
    );
    assert!(
        reasons[2]
            .as_deref()
            .unwrap_or("")
            .contains("no sequence at `/seq`"),
        "{reasons:?}"
    );
    assert!(
        reasons[3].as_deref().unwrap_or("").contains("not JSON"),
        "{reasons:?}"
    );
    // Dead-lettered ones store no position; the topic's last is 6.
    let stored = source.positions_to_store(&positions::at(&[(0, events[4].position.offset + 1)]));
    assert_eq!(
        stored,
        vec![StoredPosition {
            partition: topic.clone(),
            next_offset: 7
        }]
    );
    source.close().await.unwrap();
}

#[test]
fn sequence_is_checked_and_decides_resumability() {
    let (builder, errors) = read_source(
        "mqtt",
        &[("topics", "a/b"), ("client_id", "c"), ("sequence", "seq")],
    );
    assert!(builder.is_none());
    assert_eq!(
        messages(&errors),
        vec!["`sequence` must be a JSON pointer into the payload, found `seq`"]
    );
    assert_eq!(errors[0].hint.as_deref(), Some("write `sequence: /seq`"));
    let (_, errors) = read_source(
        "mqtt_at_most_once",
        &[("topics", "a/b"), ("sequence", "/s")],
    );
    assert!(messages(&errors)[0].contains("never gives"), "{errors:?}");
    let without = source_builder("mqtt", &[("topics", "a/b"), ("client_id", "c")]);
    let limited = without.capabilities().expect("less than the kind can");
    assert!(!limited.capabilities.resumable);
    assert!(limited.capabilities.durable_positions);
    assert!(limited.hint.contains("sequence: /seq"), "{}", limited.hint);
}
