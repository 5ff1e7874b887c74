//! The `mqtt` sink against a real Mosquitto, and configuration errors.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use spate_connector::{Headers, Record, SinkError};
use spate_testsupport::mqtt::*;
use spate_testsupport::positions;

fn record(i: usize) -> Record {
    Record::from_payload(format!("payload-{i}"))
}

#[tokio::test]
async fn sink_round_trip_at_every_qos() {
    let broker = broker();
    for qos in ["0", "1", "2"] {
        let topic = unique(&format!("sink-q{qos}"));
        let mut source = open(&*broker.source(&topic, &[]), 1).await;
        let sink = sink(
            "mqtt",
            &[("url", &broker.url), ("topic", &topic), ("qos", qos)],
        )
        .await;
        for i in 0..5 {
            sink.write(record(i)).await.expect("acknowledged");
        }
        // Pipelined writes resolve too, in order.
        let mut pending = Vec::new();
        for i in 5..10 {
            pending.push(sink.send(record(i)).await.expect("accepted"));
        }
        for p in pending {
            p.await.expect("acknowledged");
        }
        sink.flush().await.unwrap();
        let events = read_n(&mut *source, 10, 100).await;
        let expected: Vec<String> = (0..10).map(|i| format!("payload-{i}")).collect();
        assert_eq!(texts(&events), expected, "qos {qos}");
        source.commit(&positions::at(&[(0, 10)])).await.unwrap();
        source.close().await.unwrap();
    }
}

#[tokio::test]
async fn sink_routes_by_topic_header() {
    let broker = broker();
    let base = unique("routed");
    let mut source = open(&*broker.source(&format!("{base}/#"), &[]), 1).await;
    let default_topic = format!("{base}/default");
    let sink = sink(
        "mqtt",
        &[
            ("url", &broker.url),
            ("topic", &default_topic),
            ("topic_header", "to"),
        ],
    )
    .await;
    let mut headers = Headers::new();
    headers.push("to", Bytes::from(format!("{base}/alerts/high")));
    sink.write(Record {
        headers,
        ..record(0)
    })
    .await
    .unwrap();
    sink.write(record(1)).await.unwrap();
    let mut bad = Headers::new();
    bad.push("to", Bytes::from_static(b"x/+"));
    let error = sink
        .write(Record {
            headers: bad,
            ..record(2)
        })
        .await
        .unwrap_err();
    assert!(matches!(error, SinkError::Rejected { .. }), "{error:?}");

    let events = read_n(&mut *source, 2, 100).await;
    let topics: BTreeMap<String, String> = events
        .iter()
        .map(|e| {
            (
                String::from_utf8(e.payload.to_vec()).unwrap(),
                e.headers
                    .get_str(spate_mqtt::TOPIC_HEADER)
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(topics["payload-0"], format!("{base}/alerts/high"));
    assert_eq!(topics["payload-1"], default_topic);
    source.commit(&positions::at(&[(0, 2)])).await.unwrap();
    source.close().await.unwrap();
}

#[tokio::test]
async fn oversized_records_are_rejected_not_sent() {
    let broker = broker();
    let topic = unique("big");
    let sink = sink(
        "mqtt",
        &[
            ("url", &broker.url),
            ("topic", &topic),
            ("max_packet_size", "2KiB"),
        ],
    )
    .await;
    let error = sink
        .write(Record::from_payload(vec![0u8; 4096]))
        .await
        .unwrap_err();
    assert!(matches!(error, SinkError::Rejected { .. }), "{error:?}");
    // The connection is still fine.
    tokio::time::timeout(Duration::from_secs(5), sink.write(record(1)))
        .await
        .expect("in time")
        .expect("acknowledged");
}

#[test]
fn source_configuration_errors_say_what_to_do() {
    let (builder, errors) = read_source(
        "mqtt",
        &[("url", "http://x"), ("qos", "0"), ("clean_session", "true")],
    );
    assert!(builder.is_none());
    let text = messages(&errors).join("\n");
    assert!(text.contains("missing required field `topics`"), "{text}");
    assert!(
        text.contains("missing required field `client_id`"),
        "{text}"
    );
    assert!(text.contains("invalid MQTT url"), "{text}");
    assert!(
        text.contains("QoS 0 messages are never redelivered"),
        "{text}"
    );
    assert!(
        text.contains("`mqtt` needs `clean_session: false`"),
        "{text}"
    );
    let client_id_hint = errors
        .iter()
        .find(|e| e.message.contains("client_id"))
        .and_then(|e| e.hint.clone())
        .unwrap();
    assert!(
        client_id_hint.contains("persistent session"),
        "{client_id_hint}"
    );
    let qos_hint = errors
        .iter()
        .find(|e| e.message.contains("QoS 0"))
        .and_then(|e| e.hint.clone())
        .unwrap();
    assert!(qos_hint.contains("mqtt_at_most_once"), "{qos_hint}");

    let (_, errors) = read_source(
        "mqtt",
        &[
            ("topics", "a/#/b"),
            ("client_id", "c"),
            ("qos", "2"),
            ("key_level", "2"),
            ("key_field", "id"),
            ("partition_level", "0"),
            ("partitions", "0"),
            ("keep_alive", "500ms"),
            ("password", "s3cret"),
            ("tls_ca_file", "/nonexistent/ca.pem"),
            ("topcs", "x"),
        ],
    );
    let text = messages(&errors).join("\n");
    for expected in [
        "`#` must be a whole level and the last one",
        "rumqttc 0.25 cannot resume a QoS 2 receive",
        "`key_level` and `key_field` are both set",
        "`partition_level` counts topic levels from 1",
        "`partitions` must be between 1 and 1024",
        "`keep_alive` must be whole seconds",
        "missing required field `username`",
        "`tls_ca_file` `/nonexistent/ca.pem` does not exist",
        "unknown key `topcs`",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(!text.contains("s3cret"), "{text}");

    // The lossy kind takes QoS 0 and clean sessions without a client id.
    let (builder, errors) = read_source("mqtt_at_most_once", &[("topics", "a/+"), ("qos", "0")]);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(builder.is_some());
    let (_, errors) = read_source(
        "mqtt_at_most_once",
        &[("topics", "a"), ("clean_session", "false")],
    );
    assert!(messages(&errors)[0].contains("client_id"), "{errors:?}");
}

#[test]
fn capabilities_are_honest() {
    let mqtt = factory("mqtt");
    let source = mqtt.source_capabilities().unwrap();
    assert!(source.durable_positions && !source.exactly_once);
    let sink = mqtt.sink_capabilities().unwrap();
    assert!(!sink.durable_positions && !sink.exactly_once);
    let lossy = factory("mqtt_at_most_once");
    assert!(!lossy.source_capabilities().unwrap().durable_positions);
    assert!(lossy.sink_capabilities().is_none());
}

#[test]
fn sink_configuration_errors() {
    let (builder, errors) = read_sink("mqtt", &[("qos", "3"), ("retain", "maybe")]);
    assert!(builder.is_none());
    let text = messages(&errors).join("\n");
    assert!(text.contains("missing required field `topic`"), "{text}");
    assert!(text.contains("`qos` 3 does not exist"), "{text}");
    assert!(text.contains("`retain` must be"), "{text}");
    let (_, errors) = read_sink("mqtt", &[("topic", "alerts/+")]);
    assert!(messages(&errors)[0].contains("wildcards"), "{errors:?}");
}
