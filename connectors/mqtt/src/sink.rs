//! Publishing records as MQTT messages.
//!
//! A write resolves when the broker acknowledged the message: PUBACK at
//! QoS 1 (the default), PUBCOMP at QoS 2. At QoS 0 there is no
//! acknowledgement; the write resolves once the message is written and
//! flushed to the socket (capabilities `{false, false}` either way: MQTT
//! publishes cannot take part in a transaction).
//!
//! rumqttc reports acknowledgements by packet id only, and the packet id of
//! a publish as an `Outgoing::Publish` event in the order publishes were
//! requested. The sink keeps its own FIFO of waiting writes, matched with
//! those events, under a lock that also orders the requests. If the
//! connection fails, every write not yet acknowledged fails (retryably; the
//! engine writes it again) and the sink starts a fresh client with a clean
//! session, so no resend of an old publish can be mistaken for a new one.
//! A message whose PUBACK was lost with the connection is therefore
//! published twice — at-least-once.
//!
//! MQTT 3.1.1 messages carry no headers and no key: a record's payload is
//! the message; its key and headers are not sent (except the topic header
//! below, which picks the topic).
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `topic` | required unless `topic_header` | topic to publish to (no wildcards) |
//! | `topic_header` | none | header whose value is the record's topic; records without it go to `topic` (and are rejected if there is none) |
//! | `qos` | `1` | `0`, `1` or `2` |
//! | `retain` | `false` | publish as retained messages |
//! | `client_id` | generated | client id (the sink always uses a clean session) |
//! | `ack_timeout` | `30s` | how long a write waits for its acknowledgement |
//! | `url`, `username`, `password`, `tls_ca_file`, `keep_alive`, `connect_timeout`, `max_packet_size` | | see [`connection`](crate::connection) |

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, Outgoing, Packet, QoS};
use spate_connector::{
    Capabilities, ConfigReader, PendingWrite, Record, Sink, SinkBuilder, SinkError,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::connection::ConnectSettings;
use crate::source::check_filter;
use crate::{error_mark, has_new_errors};

/// What MQTT sinks promise: acknowledged publishes, no transactions.
pub const SINK_CAPABILITIES: Capabilities = Capabilities::NONE;

/// Default `ack_timeout`.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// A validated sink configuration.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    topic: Option<String>,
    topic_header: Option<String>,
    qos: QoS,
    retain: bool,
    client_id: Option<String>,
    ack_timeout: Duration,
    connect: ConnectSettings,
}

fn check_topic(topic: &str) -> Option<String> {
    if topic.is_empty() {
        Some("the topic is empty".to_owned())
    } else if topic.contains(['+', '#']) {
        Some(format!(
            "cannot publish to `{topic}`: `+` and `#` are wildcards"
        ))
    } else {
        check_filter(topic)
    }
}

/// Reads a sink's settings.
pub fn read_sink(config: &mut ConfigReader<'_>) -> Option<SinkSettings> {
    let mark = error_mark(config);
    let topic = config.string("topic");
    let topic_header = config.string("topic_header");
    if topic.is_none() && topic_header.is_none() {
        config.missing(
            "topic",
            Some("the topic to publish to, e.g. `alerts/high`, or `topic_header` to take it from each record".to_owned()),
        );
    }
    if let Some(problem) = topic.as_deref().and_then(check_topic) {
        config.error_at_key(
            "topic",
            problem,
            Some("a sink publishes to one concrete topic".to_owned()),
        );
    }
    let qos = match config.u64("qos") {
        None | Some(1) => QoS::AtLeastOnce,
        Some(0) => QoS::AtMostOnce,
        Some(2) => QoS::ExactlyOnce,
        Some(n) => {
            config.error_at_key(
                "qos",
                format!("`qos` {n} does not exist"),
                Some("use `0`, `1` or `2`".to_owned()),
            );
            QoS::AtLeastOnce
        }
    };
    let retain = config.bool("retain").unwrap_or(false);
    let client_id = config.string("client_id");
    let ack_timeout = config
        .duration("ack_timeout")
        .unwrap_or(DEFAULT_ACK_TIMEOUT);
    let connect = ConnectSettings::read(config);
    if has_new_errors(config, mark) {
        return None;
    }
    Some(SinkSettings {
        topic,
        topic_header,
        qos,
        retain,
        client_id,
        ack_timeout,
        connect,
    })
}

/// Builds MQTT sinks.
pub struct MqttSinkBuilder {
    settings: SinkSettings,
}

impl MqttSinkBuilder {
    /// A builder for validated settings.
    pub fn new(settings: SinkSettings) -> Self {
        Self { settings }
    }
}

type Reply = oneshot::Sender<Result<(), String>>;

/// Writes waiting for a packet id, and for an acknowledgement.
#[derive(Default)]
struct Tracker {
    /// In request order; the next `Outgoing::Publish` is the front's.
    awaiting_id: VecDeque<Reply>,
    by_id: HashMap<u16, Reply>,
    /// Writes whose packet id was still in use (the broker acked out of order).
    collided: HashMap<u16, Reply>,
}

impl Tracker {
    fn fail_all(&mut self, message: &str) {
        let replies = self
            .awaiting_id
            .drain(..)
            .chain(self.by_id.drain().map(|(_, r)| r))
            .chain(self.collided.drain().map(|(_, r)| r));
        for reply in replies {
            let _ = reply.send(Err(message.to_owned()));
        }
    }

    fn acked(&mut self, pkid: u16) {
        if let Some(reply) = self.by_id.remove(&pkid) {
            let _ = reply.send(Ok(()));
        }
        if let Some(reply) = self.collided.remove(&pkid) {
            self.by_id.insert(pkid, reply);
        }
    }

    fn on_event(&mut self, event: &MqttEvent) {
        match event {
            MqttEvent::Outgoing(Outgoing::Publish(0)) => {
                // QoS 0: written and flushed; nothing more will come.
                if let Some(reply) = self.awaiting_id.pop_front() {
                    let _ = reply.send(Ok(()));
                }
            }
            // A collided publish going out after all is already known.
            MqttEvent::Outgoing(Outgoing::Publish(pkid)) if !self.by_id.contains_key(pkid) => {
                if let Some(reply) = self.awaiting_id.pop_front() {
                    self.by_id.insert(*pkid, reply);
                }
            }
            MqttEvent::Outgoing(Outgoing::AwaitAck(pkid)) => {
                if let Some(reply) = self.awaiting_id.pop_front() {
                    self.collided.insert(*pkid, reply);
                }
            }
            MqttEvent::Incoming(Packet::PubAck(ack)) => self.acked(ack.pkid),
            MqttEvent::Incoming(Packet::PubComp(comp)) => self.acked(comp.pkid),
            _ => {}
        }
    }
}

struct Shared {
    name: String,
    /// The current client; held while a publish is requested, so request
    /// order and `awaiting_id` order agree.
    client: tokio::sync::Mutex<AsyncClient>,
    tracker: Mutex<Tracker>,
}

impl Shared {
    fn tracker(&self) -> MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl SinkBuilder for MqttSinkBuilder {
    /// Connects as `build` does (as a throwaway client, so a running spate
    /// with the same client id is not pushed off), then lets go.
    async fn check(&self) -> Result<(), SinkError> {
        let s = &self.settings;
        let name = format!("mqtt:{}", s.topic.clone().unwrap_or_default());
        let unavailable = |message: String| SinkError::Unavailable {
            sink_name: name.clone(),
            message,
        };
        let (client, _event_loop) = s
            .connect
            .connect_throwaway(&format!("spate-check-{}", std::process::id()))
            .await
            .map_err(unavailable)?;
        let _ = client.try_disconnect();
        Ok(())
    }

    async fn build(&self) -> Result<Box<dyn Sink>, SinkError> {
        let s = self.settings.clone();
        let target = s
            .topic
            .clone()
            .or_else(|| s.topic_header.as_ref().map(|h| format!("<{h}>")))
            .unwrap_or_default();
        let name = format!("mqtt:{target}");
        let unavailable = |message: String| SinkError::Unavailable {
            sink_name: name.clone(),
            message,
        };
        let (client, mut event_loop) = connect(&s).await.map_err(unavailable)?;
        s.connect
            .first_connack(&mut event_loop)
            .await
            .map_err(unavailable)?;
        let shared = Arc::new(Shared {
            name: name.clone(),
            client: tokio::sync::Mutex::new(client),
            tracker: Mutex::new(Tracker::default()),
        });
        let driver = tokio::spawn(drive(shared.clone(), s.clone(), event_loop));
        Ok(Box::new(MqttSink {
            name,
            settings: s,
            shared,
            driver,
        }))
    }
}

async fn connect(s: &SinkSettings) -> Result<(AsyncClient, EventLoop), String> {
    let client_id = s
        .client_id
        .clone()
        .unwrap_or_else(|| crate::connection::generated_client_id("spate-sink"));
    let options = s.connect.options(&client_id, true).await?;
    Ok(s.connect.client(options))
}

/// Polls the event loop, matching acknowledgements to writes; on a
/// connection failure fails every waiting write and starts a fresh client.
async fn drive(shared: Arc<Shared>, settings: SinkSettings, mut event_loop: EventLoop) {
    let mut failures = 0u32;
    loop {
        let error = loop {
            match event_loop.poll().await {
                Ok(event) => {
                    if matches!(event, MqttEvent::Incoming(Packet::ConnAck(_))) {
                        failures = 0;
                    }
                    shared.tracker().on_event(&event);
                }
                Err(e) => break settings.connect.describe_error(&e),
            }
        };
        // Dropping the event loop closes the request channel: a write
        // blocked on it fails and lets go of the client lock.
        drop(event_loop);
        spate_connector::internal_events::ConnectionLost {
            connector: "mqtt",
            target: &shared.name,
            error: Some(&error),
            context: "MQTT connection lost; reconnecting with a fresh session",
        }
        .emit();
        let message = format!("not acknowledged: {error}");
        shared.tracker().fail_all(&message);
        failures = failures.saturating_add(1);
        loop {
            tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(50)))).await;
            match connect(&settings).await {
                Ok((client, fresh)) => {
                    let mut current = shared.client.lock().await;
                    shared.tracker().fail_all(&message);
                    *current = client;
                    event_loop = fresh;
                    spate_connector::internal_events::Reconnected {
                        connector: "mqtt",
                        target: &shared.name,
                        context: "MQTT sink reconnected with a fresh session",
                    }
                    .emit();
                    break;
                }
                Err(e) => {
                    tracing::warn!(sink = %shared.name, error = %e, "cannot set up the MQTT client");
                    failures = failures.saturating_add(1);
                }
            }
        }
    }
}

/// Publishes records as MQTT messages.
pub struct MqttSink {
    name: String,
    settings: SinkSettings,
    shared: Arc<Shared>,
    driver: JoinHandle<()>,
}

impl Drop for MqttSink {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl MqttSink {
    fn rejected(&self, message: String) -> SinkError {
        SinkError::Rejected {
            sink_name: self.name.clone(),
            message,
        }
    }

    fn unavailable(&self, message: String) -> SinkError {
        SinkError::Unavailable {
            sink_name: self.name.clone(),
            message,
        }
    }

    fn topic_of(&self, record: &Record) -> Result<String, SinkError> {
        if let Some(header) = &self.settings.topic_header {
            if let Some(value) = record.headers.get(header) {
                let topic = std::str::from_utf8(value)
                    .map_err(|_| self.rejected(format!("header `{header}` is not UTF-8 text")))?;
                if let Some(problem) = check_topic(topic) {
                    return Err(self.rejected(format!("header `{header}`: {problem}")));
                }
                return Ok(topic.to_owned());
            }
        }
        self.settings.topic.clone().ok_or_else(|| {
            self.rejected(format!(
                "the record has no `{}` header and the sink no `topic`",
                self.settings.topic_header.as_deref().unwrap_or_default()
            ))
        })
    }
}

#[async_trait]
impl Sink for MqttSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&self, record: Record) -> Result<(), SinkError> {
        self.send(record).await?.await
    }

    /// Requests the publish now (one connection keeps the order); resolves
    /// on the acknowledgement.
    async fn send(&self, record: Record) -> Result<PendingWrite, SinkError> {
        let topic = self.topic_of(&record)?;
        // Fixed header (≤5) + topic length (2) + topic + packet id (2).
        let size = record.payload.len() + topic.len() + 9;
        if size > self.settings.connect.max_packet_size {
            return Err(self.rejected(format!(
                "the message ({size} bytes) is larger than `max_packet_size` ({} bytes)",
                self.settings.connect.max_packet_size
            )));
        }
        let (reply, acked) = oneshot::channel();
        {
            let client = self.shared.client.lock().await;
            self.shared.tracker().awaiting_id.push_back(reply);
            let requested = client
                .publish_bytes(
                    topic,
                    self.settings.qos,
                    self.settings.retain,
                    record.payload,
                )
                .await;
            if let Err(e) = requested {
                // Nothing was pushed after ours (we hold the client lock);
                // take it back so the FIFO stays matched.
                self.shared.tracker().awaiting_id.pop_back();
                return Err(produce_failed(
                    &self.name,
                    self.unavailable(format!("publish failed: {e}")),
                ));
            }
        }
        let timeout = self.settings.ack_timeout;
        let name = self.name.clone();
        Ok(Box::pin(async move {
            let unavailable = |message: String| SinkError::Unavailable {
                sink_name: name.clone(),
                message,
            };
            let outcome = match tokio::time::timeout(timeout, acked).await {
                Ok(Ok(Ok(()))) => return Ok(()),
                Ok(Ok(Err(message))) => Err(unavailable(message)),
                Ok(Err(_)) => Err(unavailable(
                    "the sink closed before the acknowledgement".to_owned(),
                )),
                Err(_) => Err(unavailable(format!(
                    "no acknowledgement from the broker within {timeout:?}"
                ))),
            };
            outcome.map_err(|error| produce_failed(&name, error))
        }))
    }
}

/// Reports a failed publish (see [`ProduceError`](spate_connector::internal_events::ProduceError)).
fn produce_failed(name: &str, error: SinkError) -> SinkError {
    spate_connector::internal_events::ProduceError {
        connector: "mqtt",
        name,
        error: &error,
        context: "MQTT publish failed",
    }
    .emit();
    error
}
