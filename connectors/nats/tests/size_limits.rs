//! Messages too large for NATS are rejected for good (never retried) with
//! a message naming the limit to raise: the server's `max_payload` for the
//! core `nats` and the `jetstream` sinks, a stream's `max_msg_size` for
//! `jetstream`. Against a real nats-server.

use bytes::Bytes;
use spate_connector::{Record, SinkError};
use spate_testsupport::nats::*;

fn big(bytes: usize) -> Record {
    Record::from_payload(Bytes::from(vec![b'x'; bytes]))
}

/// Asserts `result` is a rejection whose message contains `setting`.
fn assert_rejected_naming(result: Result<(), SinkError>, setting: &str) {
    match result {
        Err(error @ SinkError::Rejected { .. }) => {
            assert!(!error.is_retryable());
            let text = error.to_string();
            assert!(text.contains(setting), "names {setting}: {text}");
        }
        other => panic!("expected a rejection naming {setting}, got {other:?}"),
    }
}

/// A `jetstream` sink into a fresh stream `BASE` (whose `max_msg_size` is
/// `max_message_size`, 0: none) rejects a message of `too_big` bytes naming
/// `setting`, and stores a small one.
async fn jetstream_rejects(
    server: &Server,
    base: &str,
    max_message_size: i32,
    too_big: usize,
    setting: &str,
) {
    let client = server.client().await;
    let stream = base.to_uppercase();
    let subject = format!("{base}.js");
    async_nats::jetstream::new(client.clone())
        .create_stream(async_nats::jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![subject.clone()],
            max_message_size,
            ..Default::default()
        })
        .await
        .expect("stream created");
    let js = sink("jetstream", &[("url", &server.url), ("subject", &subject)]).await;
    assert_rejected_naming(js.write(big(too_big)).await, setting);
    js.write(big(10)).await.expect("a small message is stored");
    delete_stream(&client, &stream).await;
}

#[tokio::test]
async fn a_message_over_the_servers_max_payload_is_rejected_naming_it() {
    let server = server();
    let client = server.client().await;
    let max = client.server_info().max_payload;
    let base = unique("big");
    let core = sink(
        "nats",
        &[("url", &server.url), ("subject", &format!("{base}.out"))],
    )
    .await;
    assert_rejected_naming(core.write(big(max + 1)).await, "`max_payload`");
    core.write(big(10))
        .await
        .expect("a small message is written");

    jetstream_rejects(&server, &base, 0, max + 1, "`max_payload`").await;
}

#[tokio::test]
async fn a_message_over_the_streams_max_msg_size_is_rejected_naming_it() {
    let server = server();
    jetstream_rejects(&server, &unique("limited"), 1_000, 2_000, "`max_msg_size`").await;
}
