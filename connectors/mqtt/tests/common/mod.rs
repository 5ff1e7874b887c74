//! Helpers shared by the integration tests: a real Mosquitto broker (the one
//! at `MQTT_URL`, default `127.0.0.1:1883`, if it answers, else one started
//! for the test on a free port and stopped when the [`Broker`] guard is
//! dropped), a plain rumqttc publisher, and configuration helpers. Every
//! test uses its own topics and client ids (random suffix).

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use spate_connector::{
    ConfigError, ConnectorFactory, Event, Sink, SinkBuilder, Source, SourceBuilder, SourceMessage,
};

/// A running broker: ours (stopped on drop) or the one at `MQTT_URL`.
pub struct Broker {
    /// `mqtt://host:port`.
    pub url: String,
    /// Host and port.
    pub host: String,
    /// Port.
    pub port: u16,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn answers(addr: &str) -> bool {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok())
}

fn mosquitto_binary() -> String {
    std::env::var("MOSQUITTO_BIN").unwrap_or_else(|_| {
        if std::path::Path::new("/usr/sbin/mosquitto").exists() {
            "/usr/sbin/mosquitto".to_owned()
        } else {
            "mosquitto".to_owned()
        }
    })
}

/// The broker at `MQTT_URL` if one answers, else a fresh one of our own.
pub fn broker() -> Broker {
    let env_url = std::env::var("MQTT_URL").unwrap_or_else(|_| "127.0.0.1:1883".to_owned());
    let host_port = env_url
        .trim_start_matches("mqtt://")
        .trim_end_matches('/')
        .to_owned();
    if answers(&host_port) {
        let (host, port) = host_port.rsplit_once(':').expect("host:port");
        return Broker {
            url: format!("mqtt://{host_port}"),
            host: host.to_owned(),
            port: port.parse().expect("port"),
            child: None,
            _dir: None,
        };
    }
    start_own()
}

/// Starts a Mosquitto of our own on a free port (anonymous access, the
/// default in-flight window of 20 written out).
pub fn start_own() -> Broker {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let config = dir.path().join("mosquitto.conf");
    std::fs::write(
        &config,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 20\n"
        ),
    )
    .expect("config written");
    let child = Command::new(mosquitto_binary())
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto starts (Debian package `mosquitto`, or set MQTT_URL)");
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answers(&addr) {
        assert!(
            Instant::now() < deadline,
            "mosquitto did not come up on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Broker {
        url: format!("mqtt://{addr}"),
        host: "127.0.0.1".to_owned(),
        port,
        child: Some(child),
        _dir: Some(dir),
    }
}

impl Broker {
    /// Publishes each payload to `topic` at `qos`, waiting for every
    /// acknowledgement (QoS 1).
    pub async fn publish(&self, topic: &str, payloads: &[String], qos: QoS) {
        let messages: Vec<(String, String)> = payloads
            .iter()
            .map(|p| (topic.to_owned(), p.clone()))
            .collect();
        self.publish_to(&messages, qos).await;
    }

    /// Publishes (topic, payload) pairs in order.
    pub async fn publish_to(&self, messages: &[(String, String)], qos: QoS) {
        let mut options = MqttOptions::new(unique("pub"), self.host.clone(), self.port);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut event_loop) = AsyncClient::new(options, 1024);
        for (topic, payload) in messages {
            client
                .publish(topic.clone(), qos, false, payload.clone().into_bytes())
                .await
                .expect("publish requested");
        }
        let deadline = Duration::from_secs(10);
        tokio::time::timeout(deadline, async {
            let mut acked = 0;
            let mut sent = 0;
            loop {
                match event_loop.poll().await.expect("test publisher connected") {
                    MqttEvent::Incoming(Packet::PubAck(_)) => acked += 1,
                    MqttEvent::Outgoing(rumqttc::Outgoing::Publish(_)) => sent += 1,
                    _ => {}
                }
                let done = match qos {
                    QoS::AtMostOnce => sent,
                    _ => acked,
                };
                if done == messages.len() {
                    break;
                }
            }
        })
        .await
        .expect("messages published in time");
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), event_loop.poll()).await;
    }
}

/// A random suffix for topics and client ids.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

/// Payloads `msg-0` … `msg-{n-1}`.
pub fn payloads(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("msg-{i}")).collect()
}

/// The factory of `kind` from the crate's list.
pub fn factory(kind: &str) -> Arc<dyn ConnectorFactory> {
    spate_mqtt::connectors()
        .into_iter()
        .find(|f| f.kind() == kind)
        .unwrap_or_else(|| panic!("no connector `{kind}`"))
}

/// Reads a source configuration; returns the builder and every problem.
pub fn read_source(
    kind: &str,
    entries: &[(&str, &str)],
) -> (Option<Box<dyn SourceBuilder>>, Vec<ConfigError>) {
    spate_connector::testkit::read_source_config(&*factory(kind), entries)
}

/// Reads a sink configuration; see [`read_source`].
pub fn read_sink(
    kind: &str,
    entries: &[(&str, &str)],
) -> (Option<Box<dyn SinkBuilder>>, Vec<ConfigError>) {
    spate_connector::testkit::read_sink_config(&*factory(kind), entries)
}

/// A source builder from a configuration that must be valid.
pub fn source_builder(kind: &str, entries: &[(&str, &str)]) -> Box<dyn SourceBuilder> {
    let (builder, errors) = read_source(kind, entries);
    assert!(errors.is_empty(), "unexpected config errors: {errors:?}");
    builder.expect("a builder for a valid configuration")
}

/// A built sink from a configuration that must be valid.
pub async fn sink(entries: &[(&str, &str)]) -> Box<dyn Sink> {
    let (builder, errors) = read_sink("mqtt", entries);
    assert!(errors.is_empty(), "unexpected config errors: {errors:?}");
    builder
        .expect("a builder")
        .build()
        .await
        .expect("sink builds")
}

/// Builds a source and consumes its initial assignment of `partitions`.
pub async fn open(builder: &dyn SourceBuilder, partitions: u32) -> Box<dyn Source> {
    let mut source = builder.build().await.expect("source builds");
    match next(&mut *source, 10).await {
        SourceMessage::Assigned(assigned) => {
            assert_eq!(assigned, (0..partitions).collect::<Vec<_>>())
        }
        other => panic!("expected Assigned first, got {other:?}"),
    }
    source
}

/// `next` with a generous timeout so a broken source fails instead of hanging.
pub async fn next(source: &mut dyn Source, max: usize) -> SourceMessage {
    spate_connector::testkit::next_before(source, max, Duration::from_secs(15)).await
}

pub use spate_connector::testkit::next_within;

/// Reads until at least `n` events arrived, checking batch bounds.
pub async fn read_n(source: &mut dyn Source, n: usize, max: usize) -> Vec<Event> {
    spate_connector::testkit::read_events(source, n, max, Duration::from_secs(15)).await
}

/// Events that arrive within `wait` (reading until a quiet `wait`).
pub async fn read_quiet(source: &mut dyn Source, wait: Duration) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(message) = next_within(source, 100, wait).await {
        match message {
            SourceMessage::Events(batch) => events.extend(batch),
            other => panic!("unexpected {other:?}"),
        }
    }
    events
}

/// The payloads of events as text.
pub fn texts(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| String::from_utf8(e.payload.to_vec()).unwrap())
        .collect()
}

/// The messages of every problem.
pub fn messages(errors: &[ConfigError]) -> Vec<String> {
    errors.iter().map(|e| e.message.clone()).collect()
}
