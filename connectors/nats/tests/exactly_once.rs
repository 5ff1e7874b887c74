//! The JetStream exactly-once session on a real nats-server: publishes carry
//! `Nats-Msg-Id` from the record id so a republish is dropped; a foreign
//! output is refused; an output stream whose duplicate window is too short
//! for the input's `ack_wait` stops the session with the fix.

use std::time::Duration;

use bytes::Bytes;
use spate_connector::{
    Headers, Record, Source, TransactionError, TransactionalTarget, RECORD_ID_HEADER,
};
use spate_testsupport::nats::{
    create_stream, open, server, source_builder, stream_len, unique, Server,
};

fn record(id: &str, payload: &str) -> Record {
    let mut headers = Headers::new();
    headers.push(RECORD_ID_HEADER, Bytes::copy_from_slice(id.as_bytes()));
    Record {
        key: None,
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        headers,
        timestamp_ms: None,
    }
}

/// One test's streams `IN_<tag>` and `OUT_<tag>` (with this duplicate
/// window, else the server's default), an opened source of the input
/// (plus `extra` settings) and the output as a transactional target.
struct Case {
    _server: Server,
    client: async_nats::Client,
    input: String,
    output: String,
    target: TransactionalTarget,
    source: Box<dyn Source>,
}

async fn case(prefix: &str, window: Option<Duration>, extra: &[(&str, &str)]) -> Case {
    let server = server();
    let client = server.client().await;
    let tag = unique(prefix);
    let (input, output) = (format!("IN_{tag}"), format!("OUT_{tag}"));
    create_stream(&client, &input, &[format!("in.{tag}")]).await;
    match window {
        None => create_stream(&client, &output, &[format!("out.{tag}")]).await,
        Some(duplicate_window) => {
            async_nats::jetstream::new(client.clone())
                .create_stream(async_nats::jetstream::stream::Config {
                    name: output.clone(),
                    subjects: vec![format!("out.{tag}")],
                    duplicate_window,
                    ..Default::default()
                })
                .await
                .expect("output stream");
        }
    }
    let durable = format!("d_{tag}");
    let mut settings = vec![
        ("url", server.url.as_str()),
        ("stream", input.as_str()),
        ("durable", durable.as_str()),
    ];
    settings.extend_from_slice(extra);
    let source = open(&*source_builder("jetstream", &settings)).await;
    let target = TransactionalTarget {
        kind: "jetstream",
        cluster: server.url.clone(),
        destination: format!("out.{tag}"),
    };
    Case {
        _server: server,
        client,
        input,
        output,
        target,
        source,
    }
}

#[tokio::test]
async fn republished_records_are_dropped_by_id_and_foreign_outputs_refused() {
    let mut c = case("eos", None, &[]).await;
    let (input, target) = (c.input.clone(), c.target.clone());
    let mut session = c.source.begin_exactly_once().await.expect("session opens");
    session
        .accepts(&target)
        .expect("same server, jetstream output");
    let elsewhere = TransactionalTarget {
        cluster: "nats://10.0.0.9:4222".to_owned(),
        ..target.clone()
    };
    let why = session
        .accepts(&elsewhere)
        .expect_err("another server is refused");
    assert!(why.contains("same `url`"), "{why}");
    let kafka = TransactionalTarget {
        kind: "kafka",
        ..target.clone()
    };
    assert!(session.accepts(&kafka).is_err());

    for round in 0..2 {
        // The second round republishes the same ids, as after a crash.
        for n in 0..5 {
            session
                .write(
                    &target,
                    record(&format!("{input}/0/{n}/0"), &format!("out-{n}-{round}")),
                )
                .await
                .expect("publish");
        }
        session.commit(&[], &[]).await.expect("publish acks");
    }
    assert_eq!(
        stream_len(&c.client, &c.output).await,
        Some(5),
        "republished ids are dropped as duplicates"
    );
}

#[tokio::test]
async fn a_duplicate_window_shorter_than_the_redelivery_delay_stops_the_session() {
    let Case {
        _server,
        output,
        target,
        mut source,
        ..
    } = case(
        "window",
        Some(Duration::from_secs(10)),
        &[("ack_wait", "30s")],
    )
    .await;
    let mut session = source.begin_exactly_once().await.expect("session opens");
    let error = session
        .write(&target, record("x/0/1/0", "out"))
        .await
        .expect_err("a 10s window cannot cover a 30s ack_wait");
    match error {
        TransactionError::Fatal { message, .. } => {
            assert!(
                message.contains(&output) && message.contains("dupe-window"),
                "{message}"
            );
        }
        other => panic!("expected a fatal error, got {other}"),
    }
}

#[tokio::test]
async fn a_transaction_larger_than_the_publish_ack_window_commits() {
    // async-nats lets 5,000 publishes await their ack at once; a session
    // holding every ack until its commit used to wait on itself past that.
    let mut c = case("eosbig", None, &[]).await;
    let (input, target) = (c.input.clone(), c.target.clone());
    let mut session = c.source.begin_exactly_once().await.expect("session opens");
    let records = 12_000;
    let written = async {
        for n in 0..records {
            session
                .write(&target, record(&format!("{input}/0/{n}/0"), "x"))
                .await
                .expect("publish");
        }
        session.commit(&[], &[]).await.expect("publish acks");
    };
    tokio::time::timeout(Duration::from_secs(60), written)
        .await
        .expect("a 12,000-record transaction commits instead of stalling");
    assert_eq!(stream_len(&c.client, &c.output).await, Some(records));
}
