//! Helpers of the MQTT connector's integration tests, the IoT end-to-end
//! tests and the benches: a real Mosquitto (the one at `MQTT_URL`, default
//! `127.0.0.1:1883`, if it answers, else one started for the test), a plain
//! rumqttc publisher, configuration read through the crate's factories and
//! event collection.
//!
//! Guarantees: a broker of the test's own runs on a free port with the
//! [`Settings`] asked for and is stopped when the [`Broker`] guard drops;
//! the shared broker is never stopped or restarted. Every test uses its own
//! topics and client ids ([`unique`]).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use spate_connector::{Event, Source, SourceBuilder, SourceMessage};

use crate::process::{binary, shared, start_on, start_on_free_port, ChildGuard};

/// A running broker: ours (stopped on drop) or the one at `MQTT_URL`.
pub struct Broker {
    /// `mqtt://host:port`.
    pub url: String,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    child: Option<ChildGuard>,
    dir: Option<tempfile::TempDir>,
}

/// How a Mosquitto of the test's own is configured.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `max_inflight_messages` per client (0: no limit).
    pub inflight: u32,
    /// `max_queued_messages` per session (`None`: Mosquitto's 1,000).
    pub max_queued: Option<u32>,
    /// Keeps sessions on disk across a [`Broker::restart`].
    pub persistent: bool,
}

impl Default for Settings {
    /// Anonymous access, no persistence, the default in-flight window of
    /// 20 written out.
    fn default() -> Self {
        Self {
            inflight: 20,
            max_queued: None,
            persistent: false,
        }
    }
}

/// The broker at `MQTT_URL` if one answers, else a fresh one of our own.
pub fn broker() -> Broker {
    let Some(host_port) = shared("MQTT_URL", "127.0.0.1:1883", "mqtt") else {
        return start_own();
    };
    let (host, port) = host_port.rsplit_once(':').expect("host:port");
    Broker {
        url: format!("mqtt://{host_port}"),
        host: host.to_owned(),
        port: port.parse().expect("port"),
        child: None,
        dir: None,
    }
}

/// Starts a Mosquitto of our own on a free port with the default
/// [`Settings`].
pub fn start_own() -> Broker {
    start_with(Settings::default())
}

/// Starts a Mosquitto of our own on a free port with `settings`.
pub fn start_with(settings: Settings) -> Broker {
    let dir = tempfile::tempdir().expect("temp dir");
    let persistence = if settings.persistent {
        // Mosquitto started as root drops to the `mosquitto` user, which
        // must be able to write its database here.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("store dir writable");
        format!(
            "persistence true\npersistence_location {}/\n",
            dir.path().display()
        )
    } else {
        "persistence false\n".to_owned()
    };
    let queue = settings
        .max_queued
        .map(|n| format!("max_queued_messages {n}\n"))
        .unwrap_or_default();
    let config = dir.path().join("mosquitto.conf");
    let (child, port) = start_on_free_port("mosquitto", |port| {
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\n{persistence}\
                 max_inflight_messages {}\n{queue}",
                settings.inflight
            ),
        )
        .expect("config written");
        spawn_mosquitto(&config)
    });
    Broker {
        url: format!("mqtt://127.0.0.1:{port}"),
        host: "127.0.0.1".to_owned(),
        port,
        child: Some(child),
        dir: Some(dir),
    }
}

fn spawn_mosquitto(config: &std::path::Path) -> Child {
    Command::new(binary("MOSQUITTO_BIN", "mosquitto"))
        .arg("-c")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto starts (Debian package `mosquitto`, or set MQTT_URL)")
}

impl Broker {
    /// Stops our own broker gracefully (SIGTERM: a persistent one saves its
    /// sessions) and starts it again on the same port and configuration.
    /// Panics for the shared broker, which tests never restart.
    pub fn restart(&mut self) {
        let (Some(child), Some(dir)) = (self.child.as_mut(), self.dir.as_ref()) else {
            panic!("only a broker of the test's own (start_own) may be restarted");
        };
        child.terminate();
        let config = dir.path().join("mosquitto.conf");
        let child = start_on(self.port, |_| spawn_mosquitto(&config))
            .unwrap_or_else(|| panic!("mosquitto did not come back on port {}", self.port));
        self.child = Some(child);
    }

    /// Creates the persistent session `client_id` with its subscription, so
    /// the broker queues messages for a client before it first connects.
    pub async fn create_session(&self, client_id: &str, filter: &str) {
        let mut options = MqttOptions::new(client_id, self.host.clone(), self.port);
        options.set_clean_session(false);
        let (client, mut events) = AsyncClient::new(options, 10);
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe requested");
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Packet::SubAck(_) = incoming(events.poll().await) {
                    break;
                }
            }
        })
        .await
        .expect("subscribed");
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), events.poll()).await;
    }

    /// A builder of an `mqtt` source on this broker subscribed to `topics`
    /// under a client id of its own (so a builder reopens its persistent
    /// session), with the `extra` settings.
    pub fn source(&self, topics: &str, extra: &[(&str, &str)]) -> Box<dyn SourceBuilder> {
        let client_id = unique("src");
        let mut entries = vec![
            ("url", self.url.as_str()),
            ("topics", topics),
            ("client_id", client_id.as_str()),
        ];
        entries.extend_from_slice(extra);
        source_builder("mqtt", &entries)
    }

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

pub use crate::names::unique;

/// Payloads `msg-0` … `msg-{n-1}`.
pub fn payloads(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("msg-{i}")).collect()
}

crate::connector::config_helpers!(spate_mqtt::connectors);

/// Builds a source and consumes its initial assignment of `partitions`.
pub async fn open(builder: &dyn SourceBuilder, partitions: u32) -> Box<dyn Source> {
    crate::connector::open_assigned(builder, partitions, NEXT_PATIENCE).await
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

/// The packet of an incoming event (outgoing ones read as `PingResp`);
/// fails the test on a connection error.
pub fn incoming(event: Result<MqttEvent, rumqttc::ConnectionError>) -> Packet {
    match event.expect("test client connected") {
        MqttEvent::Incoming(packet) => packet,
        MqttEvent::Outgoing(_) => Packet::PingResp,
    }
}
