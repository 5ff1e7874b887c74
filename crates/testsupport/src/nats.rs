//! Helpers of the NATS connector's integration tests, the end-to-end tests
//! and the benches: a real nats-server (the one at `NATS_URL`, default
//! `127.0.0.1:4222`, if it answers, else one started for the test),
//! configuration read through the crate's factories, event collection, and
//! JetStream set-up and checks with a plain async-nats client.
//!
//! Guarantees: a server of the test's own runs `nats-server -js` on a free
//! port with a temporary store directory and is stopped when the [`Server`]
//! guard drops; the shared server is never stopped or restarted. Every
//! test uses its own stream, subject and durable names ([`unique`]).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use spate_connector::{ConfigNode, Event, Source, SourceBuilder, SourceMessage};

use crate::process::{binary, shared, start_on, start_on_free_port, ChildGuard};

/// A running nats-server: ours (stopped on drop) or the one at `NATS_URL`.
pub struct Server {
    /// `nats://host:port`.
    pub url: String,
    child: Option<ChildGuard>,
    _store: Option<tempfile::TempDir>,
}

/// The server at `NATS_URL` if one answers, else a fresh one of our own.
pub fn server() -> Server {
    match shared("NATS_URL", "127.0.0.1:4222", "nats") {
        Some(host_port) => Server {
            url: format!("nats://{host_port}"),
            child: None,
            _store: None,
        },
        None => start_own(),
    }
}

/// Starts a nats-server of our own on a free port.
pub fn start_own() -> Server {
    start_own_with_config("")
}

/// Starts a nats-server of our own on a free port with `config` (nats-server
/// configuration syntax: accounts, subject mappings, TLS, ...) as its
/// configuration file. Port, address, JetStream and store dir come from the
/// command line and override it.
pub fn start_own_with_config(config: &str) -> Server {
    let store = tempfile::tempdir().expect("temp dir");
    std::fs::write(store.path().join("server.conf"), config).expect("server config written");
    let (child, port) = start_on_free_port("nats-server", |port| spawn_server(port, store.path()));
    Server {
        url: format!("nats://127.0.0.1:{port}"),
        child: Some(child),
        _store: Some(store),
    }
}

fn spawn_server(port: u16, store: &std::path::Path) -> Child {
    Command::new(binary("NATS_SERVER_BIN", "nats-server"))
        .arg("-c")
        .arg(store.join("server.conf"))
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store.join("jetstream"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server starts (Debian package `nats-server`, or set NATS_URL)")
}

impl Server {
    /// Stops our own server and starts it again on the same port and store
    /// (for reconnect tests). Returns false if the server is not ours.
    pub fn restart(&mut self, down_for: Duration) -> bool {
        let (Some(child), Some(store)) = (self.child.as_mut(), self._store.as_ref()) else {
            return false;
        };
        child.kill();
        std::thread::sleep(down_for);
        let port: u16 = self.url.rsplit(':').next().unwrap().parse().unwrap();
        let child = start_on(port, |port| spawn_server(port, store.path()))
            .unwrap_or_else(|| panic!("nats-server did not come back on port {port}"));
        self.child = Some(child);
        true
    }

    /// A plain async-nats client for setting up and checking.
    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(&self.url)
            .await
            .expect("test client connects")
    }
}

pub use crate::names::unique;

/// A mapping node of unquoted scalars (see
/// [`spate_connector::testkit::config_map`]).
pub fn config(entries: &[(&str, &str)]) -> ConfigNode {
    spate_connector::testkit::config_map(entries)
}

crate::connector::config_helpers!(spate_nats::connectors);

/// Builds a source and consumes its initial assignment.
pub async fn open(builder: &dyn SourceBuilder) -> Box<dyn Source> {
    crate::connector::open_assigned(builder, 1, NEXT_PATIENCE).await
}

/// `next` with a generous timeout so a broken source fails instead of hanging.
pub async fn next(source: &mut dyn Source, max: usize) -> SourceMessage {
    spate_connector::testkit::next_before(source, max, NEXT_PATIENCE).await
}

/// How long a `next` may take before the test fails.
const NEXT_PATIENCE: Duration = Duration::from_secs(15);

pub use spate_connector::testkit::next_within;

/// Reads until at least `n` events arrived, checking batch bounds.
pub async fn read_n(source: &mut dyn Source, n: usize, max: usize) -> Vec<Event> {
    spate_connector::testkit::read_events(source, n, max, Duration::from_secs(15)).await
}

/// Creates a stream with these subjects.
pub async fn create_stream(client: &async_nats::Client, name: &str, subjects: &[String]) {
    async_nats::jetstream::new(client.clone())
        .create_stream(async_nats::jetstream::stream::Config {
            name: name.to_owned(),
            subjects: subjects.to_vec(),
            ..Default::default()
        })
        .await
        .expect("stream created");
}

/// Deletes a stream (end of test).
pub async fn delete_stream(client: &async_nats::Client, name: &str) {
    let _ = async_nats::jetstream::new(client.clone())
        .delete_stream(name)
        .await;
}

/// Publishes `n` messages `msg-<i>` with key `key-<i % 3>` and a header
/// `n: <i>` to `subject`, waiting for each publish ack.
pub async fn publish_n(client: &async_nats::Client, subject: &str, n: usize) {
    let context = async_nats::jetstream::new(client.clone());
    for i in 0..n {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("spate-key", format!("key-{}", i % 3).as_str());
        headers.insert("n", i.to_string().as_str());
        context
            .publish_with_headers(subject.to_owned(), headers, format!("msg-{i}").into())
            .await
            .expect("publish")
            .await
            .expect("publish ack");
    }
}

/// The consumer's number of delivered-but-unacked messages.
pub async fn ack_pending(client: &async_nats::Client, stream: &str, durable: &str) -> usize {
    let context = async_nats::jetstream::new(client.clone());
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = context
        .get_consumer_from_stream(durable, stream)
        .await
        .expect("consumer exists");
    consumer
        .info()
        .await
        .expect("consumer info")
        .num_ack_pending
}

/// How many messages a stream holds now (`None` if it does not exist).
pub async fn stream_len(client: &async_nats::Client, stream: &str) -> Option<usize> {
    let mut stream = async_nats::jetstream::new(client.clone())
        .get_stream(stream)
        .await
        .ok()?;
    Some(stream.info().await.ok()?.state.messages as usize)
}

/// Every message a stream holds now, in stream order, read by an
/// ephemeral consumer without acks (fails the test on a stall).
pub async fn stream_messages(
    client: &async_nats::Client,
    stream: &str,
) -> Vec<async_nats::jetstream::Message> {
    use futures_util::StreamExt;
    let count = stream_len(client, stream).await.expect("stream exists");
    let consumer = async_nats::jetstream::new(client.clone())
        .get_stream(stream)
        .await
        .expect("stream")
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("reader");
    let mut messages = consumer.messages().await.expect("messages");
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("stream read in time")
            .expect("open")
            .expect("message");
        out.push(message);
    }
    out
}

/// The YAML of a one-function pipeline `orders` of the end-to-end tests:
/// a JetStream input, its outputs and dead letters published to JetStream
/// subjects, commits (or transactions, with `delivery: exactly_once`) every
/// 50 ms.
pub struct JetStreamPipeline<'a> {
    pub url: &'a str,
    pub stream: &'a str,
    pub durable: &'a str,
    /// More keys of the input, each on its own line, indented by six.
    pub input_extra: &'a str,
    pub ack_wait: &'a str,
    pub fetch_wait: &'a str,
    pub handler: &'a str,
    pub output_subject: &'a str,
    pub dead_subject: &'a str,
    pub delivery: &'a str,
    pub ordering: &'a str,
    pub concurrency_max: usize,
    pub drain_timeout: &'a str,
    /// More keys of the function, each on its own line, indented by four.
    pub extra: &'a str,
}

impl JetStreamPipeline<'_> {
    pub fn yaml(&self) -> String {
        let Self {
            url,
            stream,
            durable,
            input_extra,
            ack_wait,
            fetch_wait,
            handler,
            output_subject,
            dead_subject,
            delivery,
            ordering,
            concurrency_max,
            drain_timeout,
            extra,
        } = self;
        let timing = if *delivery == "exactly_once" {
            "transaction_interval: 50ms"
        } else {
            "commit_interval: 50ms"
        };
        format!(
            r#"settings:
  metrics_address: off
functions:
  - name: orders
    input:
      type: jetstream
      url: {url}
      stream: {stream}
      durable: {durable}
{input_extra}      ack_wait: {ack_wait}
      fetch_wait: {fetch_wait}
    handler: {handler}
    outputs: [{{type: jetstream, url: {url}, subject: "{output_subject}"}}]
    dead_letter: {{type: jetstream, url: {url}, subject: {dead_subject}}}
    delivery: {delivery}
    ordering: {ordering}
    concurrency: {{min: 1, max: {concurrency_max}}}
    {timing}
    drain_timeout: {drain_timeout}
{extra}"#
        )
    }
}

/// The order number of an end-to-end test's message: `order` of its JSON
/// payload, or the number of a poison `not json <n>` payload.
pub fn order_of(payload: &[u8]) -> usize {
    let text = String::from_utf8_lossy(payload);
    match text.strip_prefix("not json ") {
        Some(n) => n.parse().expect("poison payload"),
        None => {
            let value: serde_json::Value = serde_json::from_str(&text).expect("JSON output");
            value["order"].as_u64().expect("order") as usize
        }
    }
}
