//! The raw async-nats floors: what a NATS → no-op → NATS pipeline does,
//! with nothing else in the way. Shared by `nats_e2e` (in-process) and
//! `compare` (as child processes).
//!
//! - [`jetstream`]: a durable pull consumer fetching batches of
//!   [`FETCH_BATCH`] (the engine's read batch), publishing each message's
//!   payload to the output subject and acking the input once the publish
//!   ack arrived, with at most `window` inputs between fetch and ack.
//!   Exactly-once: every publish carries `Nats-Msg-Id`
//!   (`<stream>/0/<sequence>/0`, as spate stamps it) and inputs are
//!   double-acked.
//! - [`core`]: a subscriber republishing every message to the output
//!   subject.
//!
//! Guarantees: an input is acked only after its output's publish ack; both
//! loops end when `stop` is cancelled (or, for [`jetstream`], after `until`
//! inputs are done), flushing what they sent.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, message::PublishMessage};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

/// Messages per pull request: the engine's read batch
/// (`EngineOptions::max_batch`), so both ask the server alike.
pub const FETCH_BATCH: usize = 512;

/// Where the JetStream loop reads and writes.
pub struct JetStreamRoute {
    /// Server URL.
    pub url: String,
    /// Input stream.
    pub input_stream: String,
    /// Durable consumer on it (created here).
    pub durable: String,
    /// Output subject (captured by the output stream).
    pub output: String,
}

/// The raw JetStream loop; see the module docs.
pub async fn jetstream(
    route: JetStreamRoute,
    window: usize,
    max_ack_pending: usize,
    exactly_once: bool,
    until: Option<usize>,
    stop: CancellationToken,
) {
    let client = async_nats::connect(&route.url)
        .await
        .expect("raw client connects");
    let js = jetstream::ContextBuilder::new()
        .max_ack_inflight(window + FETCH_BATCH)
        .build(client.clone());
    let consumer: jetstream::consumer::PullConsumer = js
        .get_stream(&route.input_stream)
        .await
        .expect("input stream")
        .create_consumer(pull::Config {
            durable_name: Some(route.durable.clone()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: max_ack_pending as i64,
            ..Default::default()
        })
        .await
        .expect("raw consumer");
    let output = async_nats::Subject::from(route.output.as_str());
    // Inputs whose output is published, resolving to the input once the
    // publish is acknowledged.
    let mut publishes = FuturesUnordered::new();
    // Exactly-once: double acks waiting for the server's confirmation.
    let mut acks = FuturesUnordered::new();
    let mut batch = None;
    let (mut fetched, mut done) = (0usize, 0usize);
    let limit = until.unwrap_or(usize::MAX);
    while done < limit && !stop.is_cancelled() {
        let open = publishes.len() + acks.len();
        if batch.is_none() && fetched < limit && open < window {
            let want = (window - open).min(FETCH_BATCH);
            batch = Some(
                consumer
                    .batch()
                    .max_messages(want)
                    .expires(Duration::from_secs(1))
                    .messages()
                    .await
                    .expect("pull request"),
            );
        }
        tokio::select! {
            item = async { batch.as_mut().expect("a batch").next().await }, if batch.is_some() => {
                match item {
                    Some(message) => {
                        let message: jetstream::Message = message.expect("message fetched");
                        fetched += 1;
                        let mut publish = PublishMessage::build().payload(message.payload.clone());
                        if exactly_once {
                            let sequence = message.info().expect("ack metadata").stream_sequence;
                            publish = publish
                                .message_id(format!("{}/0/{sequence}/0", route.input_stream));
                        }
                        let ack = js
                            .send_publish(output.clone(), publish)
                            .await
                            .expect("output published");
                        publishes.push(async move {
                            ack.await.expect("output publish acked");
                            message
                        });
                    }
                    None => batch = None,
                }
            }
            Some(message) = publishes.next(), if !publishes.is_empty() => {
                if exactly_once {
                    acks.push(async move {
                        message.double_ack().await.expect("input double-acked");
                    });
                } else {
                    message.ack().await.expect("input acked");
                    done += 1;
                }
            }
            Some(()) = acks.next(), if !acks.is_empty() => done += 1,
            _ = stop.cancelled() => break,
        }
    }
    // Finish what is open so nothing stays unacked.
    while let Some(message) = publishes.next().await {
        if exactly_once {
            message.double_ack().await.expect("input double-acked");
        } else {
            message.ack().await.expect("input acked");
        }
    }
    while acks.next().await.is_some() {}
    client.flush().await.expect("acks flushed");
}

/// The raw core loop: republish every input message to the output.
pub async fn core(url: String, input: String, output: String, stop: CancellationToken) {
    let client = async_nats::connect(&url)
        .await
        .expect("raw client connects");
    let mut inputs = client.subscribe(input).await.expect("raw subscription");
    client.flush().await.expect("subscribed");
    let output = async_nats::Subject::from(output.as_str());
    loop {
        tokio::select! {
            message = inputs.next() => {
                let message = message.expect("subscription open");
                client
                    .publish(output.clone(), message.payload)
                    .await
                    .expect("republished");
            }
            _ = stop.cancelled() => break,
        }
    }
    client.flush().await.expect("flushed");
}
