//! What one NATS bench case sets up, shared by the comparison harness's
//! scenario 2 (`benches/harness/nats_cases.rs`) and `nats_e2e.rs`: the
//! names of its streams, subjects and durable, the streams' creation and
//! deletion, the preload of the input stream, the subscription that counts
//! core outputs, and the spate pipeline of the case.
//!
//! Guarantees: a case's names derive from its tag alone (a caller passing
//! distinct tags gets distinct streams), and a case's streams are gone once
//! it deleted them.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;

use crate::nats as nats_common;

/// Most input publishes awaiting their ack at once.
const PUBLISH_WINDOW: usize = 4_000;

/// The names of one case's streams, subjects and input durable.
pub struct Names {
    /// The input stream (`IN_<tag>`), on subject [`Names::input`].
    pub input_stream: String,
    /// The output stream (`OUT_<tag>`), on subject [`Names::output`].
    pub output_stream: String,
    /// The dead-letter stream (`DEAD_<tag>`), on subject [`Names::dead`].
    pub dead_stream: String,
    /// The input subject.
    pub input: String,
    /// The output subject.
    pub output: String,
    /// The dead-letter subject.
    pub dead: String,
    /// The input's durable consumer (also names the case's files).
    pub durable: String,
}

impl Names {
    /// The names of a case tagged `tag` (letters, digits and `_` only).
    pub fn from_tag(tag: &str) -> Self {
        Self {
            input_stream: format!("IN_{tag}"),
            output_stream: format!("OUT_{tag}"),
            dead_stream: format!("DEAD_{tag}"),
            input: format!("in.{tag}"),
            output: format!("out.{tag}"),
            dead: format!("dead.{tag}"),
            durable: format!("bench_{tag}"),
        }
    }

    /// The input, output and dead-letter streams with their subjects.
    fn streams(&self) -> [(&String, &String); 3] {
        [
            (&self.input_stream, &self.input),
            (&self.output_stream, &self.output),
            (&self.dead_stream, &self.dead),
        ]
    }

    /// Creates the three streams.
    pub async fn create_streams(&self, client: &async_nats::Client) {
        for (stream, subject) in self.streams() {
            nats_common::create_stream(client, stream, std::slice::from_ref(subject)).await;
        }
    }

    /// Deletes the three streams.
    pub async fn delete_streams(&self, client: &async_nats::Client) {
        for (stream, _) in self.streams() {
            nats_common::delete_stream(client, stream).await;
        }
    }
}

/// Publishes `count` messages to a JetStream subject, the `i`-th with
/// `payload(i)`, at `rate` per second (or as fast as the acks allow with
/// `None`), with at most 4,000 acks outstanding; returns once every publish
/// was acked.
pub async fn js_publish(
    client: &async_nats::Client,
    subject: &str,
    count: u64,
    rate: Option<f64>,
    payload: impl Fn(u64) -> Bytes,
) {
    let js = jetstream::new(client.clone());
    let mut acks: FuturesUnordered<
        <jetstream::context::PublishAckFuture as IntoFuture>::IntoFuture,
    > = FuturesUnordered::new();
    let start = Instant::now();
    for i in 0..count {
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        if acks.len() >= PUBLISH_WINDOW {
            acks.next()
                .await
                .expect("an ack")
                .expect("input publish acked");
        }
        let ack = js
            .publish(subject.to_owned(), payload(i))
            .await
            .expect("input published");
        acks.push(ack.into_future());
    }
    while let Some(ack) = acks.next().await {
        ack.expect("input publish acked");
    }
}

/// Connects a client with room enough never to drop (a subscription buffer
/// of 2^20 messages), subscribes it to `subject` and waits until the server
/// has the subscription. Keep the client while reading the subscriber.
pub async fn output_subscriber(
    url: &str,
    subject: &str,
) -> (async_nats::Client, async_nats::Subscriber) {
    let client = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connect(url)
        .await
        .expect("output counter connects");
    let outputs = client
        .subscribe(subject.to_owned())
        .await
        .expect("output subscription");
    client.flush().await.expect("subscribed");
    (client, outputs)
}

/// The delivery of a case: which connectors its pipeline uses, and how it
/// commits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Core NATS subjects, `delivery: at_most_once`.
    Core,
    /// JetStream, `delivery: at_least_once`.
    AtLeastOnce,
    /// JetStream, `delivery: exactly_once`.
    ExactlyOnce,
}

/// The text of the spate pipeline of a case: `names`' input through the
/// `passthrough` handler to its output (dead letters to its dead-letter
/// subject) on the server at `url`, `ordering: partition`, `concurrency:
/// {min: 4, max: 64}`, `in_flight` events in flight at most, and on
/// JetStream the input durable with `max_ack_pending`.
pub fn spate_pipeline(
    url: &str,
    names: &Names,
    delivery: Delivery,
    in_flight: usize,
    max_ack_pending: usize,
) -> String {
    let (input, outputs, dead, policy) = if delivery == Delivery::Core {
        (
            format!("{{type: nats, url: {url}, subject: {}}}", names.input),
            format!("{{type: nats, url: {url}, subject: {}}}", names.output),
            format!("{{type: nats, url: {url}, subject: {}}}", names.dead),
            "delivery: at_most_once",
        )
    } else {
        let policy = if delivery == Delivery::ExactlyOnce {
            "delivery: exactly_once\n    transaction_interval: 100ms"
        } else {
            "delivery: at_least_once\n    commit_interval: 100ms"
        };
        (
            format!(
                "{{type: jetstream, url: {url}, stream: {}, durable: {}, max_ack_pending: {max_ack_pending}, ack_wait: 30s, fetch_wait: 1s}}",
                names.input_stream, names.durable
            ),
            format!("{{type: jetstream, url: {url}, subject: {}}}", names.output),
            format!("{{type: jetstream, url: {url}, subject: {}}}", names.dead),
            policy,
        )
    };
    format!(
        "settings:\n  metrics_address: off\nfunctions:\n  - name: bench\n    input: {input}\n    handler: passthrough\n    outputs: [{outputs}]\n    dead_letter: {dead}\n    {policy}\n    ordering: partition\n    concurrency: {{min: 4, max: 64}}\n    max_in_flight: {{events: {in_flight}, bytes: 256MiB}}\n    drain_timeout: 10s\n"
    )
}
