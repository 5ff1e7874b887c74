//! The `jetstream` sink, the core `nats` source and sink, and configuration
//! errors, against a real nats-server.

use std::time::Duration;

use bytes::Bytes;
use spate_connector::{ConfigError, Record, SinkError, SourceMessage};
use spate_testsupport::nats::*;

fn record(i: usize) -> Record {
    spate_testsupport::connector::numbered_record(i, None)
}

#[tokio::test]
async fn jetstream_sink_resolves_on_the_publish_ack() {
    let server = server();
    let client = server.client().await;
    let base = unique("sink");
    let stream = base.to_uppercase();
    let subject = format!("{base}.out");
    create_stream(&client, &stream, std::slice::from_ref(&subject)).await;

    let sink = sink("jetstream", &[("url", &server.url), ("subject", &subject)]).await;
    for i in 0..5 {
        sink.write(record(i)).await.expect("acknowledged");
    }
    sink.flush().await.unwrap();
    // Acknowledged means stored: the stream holds all five right now.
    let context = async_nats::jetstream::new(client.clone());
    let mut s = context.get_stream(&stream).await.unwrap();
    assert_eq!(s.info().await.unwrap().state.messages, 5);

    // Read them back through the jetstream source.
    let builder = source_builder(
        "jetstream",
        &[
            ("url", &server.url),
            ("stream", &stream),
            ("durable", "check"),
        ],
    );
    let mut source = open(&*builder).await;
    let events = read_n(&mut *source, 5, 100).await;
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.key.as_deref(), Some(format!("dev-{i}").as_bytes()));
        assert_eq!(event.payload, format!("payload-{i}").as_bytes());
        assert_eq!(
            event.headers.get_str("trace"),
            Some(format!("t-{i}").as_str())
        );
        let multi: Vec<&Bytes> = event
            .headers
            .iter()
            .filter(|(n, _)| *n == "multi")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(
            multi,
            vec![&Bytes::from_static(b"a"), &Bytes::from_static(b"b")]
        );
    }
    source.close().await.unwrap();
    delete_stream(&client, &stream).await;
}

#[tokio::test]
async fn jetstream_sink_without_a_stream_fails_retryably_with_a_hint() {
    let server = server();
    let subject = format!("{}.nowhere", unique("nostream"));
    let sink = sink(
        "jetstream",
        &[
            ("url", &server.url),
            ("subject", &subject),
            ("ack_timeout", "1s"),
        ],
    )
    .await;
    let error = sink.write(record(0)).await.unwrap_err();
    assert!(matches!(error, SinkError::Unavailable { .. }), "{error:?}");
    assert!(error.to_string().contains("no stream captures"), "{error}");
}

#[tokio::test]
async fn core_round_trip_with_headers_and_key() {
    let server = server();
    let base = unique("core");
    let wildcard = format!("{base}.>");
    let subject = format!("{base}.a");
    let builder = source_builder("nats", &[("url", &server.url), ("subject", &wildcard)]);
    let mut source = open(&*builder).await;
    let sink = sink("nats", &[("url", &server.url), ("subject", &subject)]).await;
    for i in 0..4 {
        sink.write(record(i)).await.unwrap();
    }
    let events = read_n(&mut *source, 4, 100).await;
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.position.offset, i as u64, "per-session counter");
        assert_eq!(event.position.partition, 0);
        assert_eq!(event.key.as_deref(), Some(format!("dev-{i}").as_bytes()));
        assert_eq!(event.payload, format!("payload-{i}").as_bytes());
        assert_eq!(
            event.headers.get_str("trace"),
            Some(format!("t-{i}").as_str())
        );
        assert_eq!(
            event.headers.get_str("spate-nats-subject"),
            Some(subject.as_str())
        );
    }
    // Without key or headers too.
    sink.write(Record::from_payload("plain")).await.unwrap();
    let events = read_n(&mut *source, 1, 100).await;
    assert_eq!(events[0].key, None);
    assert_eq!(events[0].payload, "plain".as_bytes());

    // Paused: nothing returned.
    source.pause(&[0]).unwrap();
    sink.write(Record::from_payload("later")).await.unwrap();
    assert!(next_within(&mut *source, 100, Duration::from_millis(500))
        .await
        .is_none());
    source.resume(&[0]).unwrap();
    match next(&mut *source, 100).await {
        SourceMessage::Events(batch) => assert_eq!(batch[0].payload, "later".as_bytes()),
        other => panic!("unexpected {other:?}"),
    }
    source.close().await.unwrap();
}

#[tokio::test]
async fn core_sends_are_pipelined_in_order_and_resolve_once_flushed() {
    let server = server();
    let subject = unique("corepipe");
    let builder = source_builder("nats", &[("url", &server.url), ("subject", &subject)]);
    let mut source = open(&*builder).await;
    let sink = sink("nats", &[("url", &server.url), ("subject", &subject)]).await;
    // Publish 500 without waiting, then wait for every flush.
    let mut pending = Vec::new();
    for i in 0..500 {
        pending.push(
            sink.send(Record::from_payload(format!("m{i}")))
                .await
                .expect("published"),
        );
    }
    for write in pending {
        tokio::time::timeout(Duration::from_secs(10), write)
            .await
            .expect("every send resolves")
            .expect("flushed");
    }
    let events = read_n(&mut *source, 500, 1000).await;
    let payloads: Vec<String> = events
        .iter()
        .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
        .collect();
    let expected: Vec<String> = (0..500).map(|i| format!("m{i}")).collect();
    assert_eq!(payloads, expected, "publish order kept");
    source.close().await.unwrap();
}

#[tokio::test]
async fn core_queue_group_shares_messages() {
    let server = server();
    let subject = format!("{}.q", unique("queue"));
    let config = [
        ("url", server.url.as_str()),
        ("subject", subject.as_str()),
        ("queue_group", "workers"),
    ];
    let builder = source_builder("nats", &config);
    let mut a = open(&*builder).await;
    let mut b = open(&*builder).await;
    let sink = sink("nats", &[("url", &server.url), ("subject", &subject)]).await;
    for i in 0..40 {
        sink.write(record(i)).await.unwrap();
    }
    let mut total = 0;
    for source in [&mut a, &mut b] {
        while let Some(SourceMessage::Events(batch)) =
            next_within(&mut **source, 100, Duration::from_millis(300)).await
        {
            total += batch.len();
        }
    }
    assert_eq!(total, 40, "each message went to exactly one member");
}

#[tokio::test]
async fn unreachable_server_is_unavailable_with_the_url_and_no_password() {
    let (builder, errors) = read_source(
        "jetstream",
        &[
            ("url", "nats://alice:s3cret@127.0.0.1:1"),
            ("stream", "S"),
            ("durable", "d"),
            ("connect_timeout", "500ms"),
        ],
    );
    assert!(errors.is_empty(), "{errors:?}");
    let error = match builder.unwrap().build().await {
        Ok(_) => panic!("connected to nothing"),
        Err(e) => e,
    };
    assert!(error.is_retryable());
    let text = error.to_string();
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("check that nats-server is running"), "{text}");
}

#[test]
fn jetstream_source_requires_stream_and_durable() {
    let (builder, errors) = read_source("jetstream", &[("subjects", "a.>")]);
    assert!(builder.is_none());
    let msgs = messages(&errors);
    assert!(
        msgs.contains(&"missing required field `stream` in `inputs[0]`".to_owned()),
        "{msgs:?}"
    );
    assert!(
        msgs.contains(&"missing required field `durable` in `inputs[0]`".to_owned()),
        "{msgs:?}"
    );
}

#[test]
fn unknown_keys_get_a_did_you_mean() {
    let (builder, errors) = read_source(
        "jetstream",
        &[("stream", "S"), ("durabel", "d"), ("durable", "d")],
    );
    assert!(
        builder.is_some(),
        "unknown keys are reported by the reader's drop"
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].message, "unknown key `durabel` in `inputs[0]`");
    assert_eq!(errors[0].hint.as_deref(), Some("did you mean `durable`?"));
    assert_eq!(errors[0].span.line, 3);

    let (_, errors) = read_sink("nats", &[("subject", "x"), ("tokn", "t")]);
    assert_eq!(errors[0].hint.as_deref(), Some("did you mean `token`?"));
}

/// No builder came of a configuration, and its errors name every one of
/// `expected`.
fn assert_refused(built: bool, errors: &[ConfigError], expected: &[&str]) {
    assert!(!built);
    let msgs = messages(errors);
    for part in expected {
        assert_mentioned(&msgs, part);
    }
}

#[test]
fn credentials_conflicts_and_bad_values_are_reported() {
    let (builder, errors) = read_sink(
        "nats",
        &[
            ("subject", "a.*"),
            ("user", "u"),
            ("token", "t"),
            ("max_ack_pending", "1"),
        ],
    );
    assert_refused(
        builder.is_some(),
        &errors,
        &[
            "wildcard subject",
            "missing required field `password`",
            "unknown key `max_ack_pending`",
        ],
    );

    let (builder, errors) = read_source(
        "jetstream",
        &[
            ("stream", "S"),
            ("durable", "d"),
            ("max_ack_pending", "0"),
            ("ack_wait", "soon"),
        ],
    );
    assert_refused(
        builder.is_some(),
        &errors,
        &[
            "`max_ack_pending` must be between 1 and",
            "`ack_wait` must be a duration",
        ],
    );
}

#[test]
fn capabilities_are_as_documented() {
    let core = factory("nats");
    let js = factory("jetstream");
    let none = spate_connector::Capabilities {
        exactly_once: false,
        durable_positions: false,
        resumable: false,
    };
    assert_eq!(core.source_capabilities(), Some(none));
    assert_eq!(core.sink_capabilities(), Some(none));
    assert_eq!(
        js.source_capabilities(),
        Some(spate_connector::Capabilities {
            exactly_once: true,
            durable_positions: true,
            resumable: false,
        })
    );
    assert_eq!(
        js.sink_capabilities(),
        Some(spate_connector::Capabilities {
            exactly_once: true,
            durable_positions: false,
            resumable: false,
        })
    );
}
