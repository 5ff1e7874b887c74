//! MQTT subscriptions as sources.
//!
//! Two kinds share this code; they differ only in what they promise:
//!
//! * `mqtt` — at-least-once. Subscribes at QoS 1 with a persistent session
//!   (`clean_session: false`) under a stable `client_id`, with manual acks:
//!   a message is acknowledged to the broker (PUBACK) only when
//!   [`Source::commit`] covers it. The broker's session is the durable
//!   position store (as a JetStream consumer's ack state is): a message not
//!   acknowledged when spate stops or crashes is delivered again when a
//!   source with the same `client_id` connects, and messages published
//!   while spate is down are queued for it. Capabilities `{exactly_once:
//!   false, durable_positions: true}`.
//! * `mqtt_at_most_once` — QoS 0 (or QoS 1 acknowledged on receipt), clean
//!   session by default. Nothing is redelivered; capabilities `{false,
//!   false}`, so the loader accepts it only under `delivery: at_most_once`.
//!
//! Capabilities are fixed per connector kind and a source's configuration
//! cannot see the function's `delivery`, so the choice between the two is
//! the kind: `mqtt` refuses `qos: 0` and `clean_session: true` (either would
//! lose messages at a restart) and points at `mqtt_at_most_once`.
//!
//! `mqtt` also refuses `qos: 2`: rumqttc 0.25 forgets its QoS 2 receive
//! state when the connection drops, so a PUBREL the broker re-sends after a
//! reconnect (for a message acknowledged just before it) fails the
//! connection again and again. QoS 2 brings nothing under at-least-once
//! anyway; messages published at QoS 2 reach a QoS 1 subscription at QoS 1.
//!
//! # Partitions, offsets, keys
//!
//! MQTT has neither partitions nor offsets. A message's partition is a hash
//! (FNV-1a) of its topic — or of one level of it, `partition_level` (1-based:
//! level 2 of `devices/d7/telemetry` is `d7`) — modulo `partitions`
//! (default 1). Offsets are a per-partition counter in arrival order,
//! starting at 0 for every new source: they are *session-local*; the
//! durable state is the broker's record of unacknowledged messages, not the
//! offsets. MQTT keeps the order of messages of one topic, so events of one
//! topic stay in order within their partition.
//!
//! The key is one topic level (`key_level`, 1-based) or a top-level field of
//! a JSON payload (`key_field`; strings as their text, other values as
//! JSON), or none. Every event carries the header [`TOPIC_HEADER`]
//! (`spate-mqtt-topic`) with its topic, and [`RETAIN_HEADER`] when the
//! broker flagged it as a retained message. The timestamp is the receive
//! time (MQTT 3.1.1 messages carry none).
//!
//! # Commit
//!
//! Committing a partition up to an offset acknowledges every message of the
//! partition below it (PUBACK), in the partition's arrival order. Acks of
//! different partitions may interleave out of arrival order; MQTT 3.1.1 asks
//! clients to acknowledge in order so that brokers can keep "ordered
//! topics", and order *within a topic* is what spate keeps. Mosquitto,
//! EMQX and HiveMQ accept acks in any order.
//!
//! A redelivered message (DUP flag) whose packet id is still held unacked
//! by this source is dropped as the copy it is. If the broker loses the
//! session (it restarted without persistence; `session_present` false on
//! reconnect), the source subscribes again and no longer acknowledges
//! messages of the lost session (their packet ids mean nothing now).
//!
//! # Backpressure and memory
//!
//! A task polls rumqttc's event loop continuously (so keep-alive pings go
//! out) and hands messages to the source through a channel of
//! `max_buffered` messages. The source reads from that channel while it
//! holds fewer than `max_buffered` unread events; paused partitions keep
//! theirs unread. When the channel is full the task stops polling, so
//! nothing more is read from the socket and TCP flow control pushes back
//! on the broker. In practice the bound is the broker's: at QoS 1 it sends
//! at most its in-flight window of unacknowledged messages per client
//! (Mosquitto's `max_inflight_messages`, 20 by default) and queues the rest
//! in the session (Mosquitto's `max_queued_messages`, 1000 by default,
//! beyond which *it* drops messages — size it for the longest outage). So
//! the source holds at most that window of messages, and throughput is
//! bounded by window / commit latency; raise the broker's window for more.
//! If a broker ignores its window and the channel stays full longer than
//! 1.5 × `keep_alive`, the broker drops the connection (no pings went out);
//! rumqttc reconnects, the broker redelivers what is unacknowledged, and the
//! copies are dropped as above.
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `topics` | required | topic filter or list of filters; `+` and `#` wildcards |
//! | `client_id` | required for `mqtt` | stable client id: the broker keeps the session under it |
//! | `qos` | `1` (`mqtt`), `0` (`mqtt_at_most_once`) | subscription QoS: `mqtt` takes `1`; `mqtt_at_most_once` `0` or `1` |
//! | `clean_session` | `false` (`mqtt`), `true` (`mqtt_at_most_once`) | `mqtt` needs `false` |
//! | `partitions` | `1` | number of partitions topics are hashed into (1–1024) |
//! | `partition_level` | whole topic | 1-based topic level hashed into the partition |
//! | `key_level` | none | 1-based topic level used as the key |
//! | `key_field` | none | top-level field of a JSON payload used as the key |
//! | `max_buffered` | `1000` | messages read but not yet handed to the engine |
//! | `url`, `username`, `password`, `tls_ca_file`, `keep_alive`, `connect_timeout`, `max_packet_size` | | see [`connection`](crate::connection) |

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, Packet, Publish, QoS, SubscribeFilter};
use spate_connector::{
    Capabilities, CommitPosition, ConfigReader, Event, Headers, PartitionId, Position, Source,
    SourceBuilder, SourceError, SourceMessage,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::connection::ConnectSettings;
use crate::{error_mark, has_new_errors, RETAIN_HEADER, TOPIC_HEADER};

/// What `mqtt` sources promise: the broker's persistent session keeps
/// unacknowledged messages.
pub const SOURCE_CAPABILITIES: Capabilities = Capabilities {
    exactly_once: false,
    durable_positions: true,
    resumable: false,
};

/// What `mqtt_at_most_once` sources promise: nothing durable.
pub const AT_MOST_ONCE_CAPABILITIES: Capabilities = Capabilities {
    exactly_once: false,
    durable_positions: false,
    resumable: false,
};

/// Default `max_buffered`.
pub const DEFAULT_MAX_BUFFERED: usize = 1000;
/// Largest `partitions`.
pub const MAX_PARTITIONS: u64 = 1024;

/// How events are keyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFrom {
    /// No key.
    None,
    /// A 1-based topic level.
    Level(usize),
    /// A top-level JSON field of the payload.
    Field(String),
}

/// Partitioning and keying of incoming messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router {
    /// Number of partitions.
    pub partitions: u32,
    /// 1-based topic level hashed into the partition, or the whole topic.
    pub partition_level: Option<usize>,
    /// Where the key comes from.
    pub key: KeyFrom,
}

fn level(topic: &str, level: usize) -> Option<&str> {
    topic.split('/').nth(level.checked_sub(1)?)
}

/// FNV-1a, 32 bits: stable across runs and Rust versions.
fn fnv1a(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

impl Router {
    /// The partition of a topic.
    pub fn partition(&self, topic: &str) -> PartitionId {
        if self.partitions <= 1 {
            return 0;
        }
        let basis = self
            .partition_level
            .and_then(|l| level(topic, l))
            .unwrap_or(topic);
        fnv1a(basis.as_bytes()) % self.partitions
    }

    /// The key of a message.
    pub fn key(&self, topic: &str, payload: &[u8]) -> Option<Bytes> {
        match &self.key {
            KeyFrom::None => None,
            KeyFrom::Level(l) => level(topic, *l).map(|s| Bytes::copy_from_slice(s.as_bytes())),
            KeyFrom::Field(field) => {
                let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
                match value.get(field)? {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(s) => Some(Bytes::from(s.clone())),
                    other => Some(Bytes::from(other.to_string())),
                }
            }
        }
    }
}

/// Checks one topic filter; returns the problem.
pub fn check_filter(filter: &str) -> Option<String> {
    if filter.is_empty() {
        return Some("a topic filter is empty".to_owned());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        if l.contains('#') && (*l != "#" || i + 1 != levels.len()) {
            return Some(format!(
                "`{filter}`: `#` must be a whole level and the last one"
            ));
        }
        if l.contains('+') && *l != "+" {
            return Some(format!("`{filter}`: `+` must be a whole level"));
        }
    }
    None
}

/// A validated source configuration.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    kind: &'static str,
    filters: Vec<String>,
    client_id: Option<String>,
    qos: QoS,
    clean_session: bool,
    manual_acks: bool,
    router: Router,
    max_buffered: usize,
    connect: ConnectSettings,
}

/// Reads a source of kind `mqtt` (`durable`) or `mqtt_at_most_once`.
pub fn read_source(config: &mut ConfigReader<'_>, durable: bool) -> Option<SourceSettings> {
    let mark = error_mark(config);
    let kind = if durable { "mqtt" } else { "mqtt_at_most_once" };
    let mut filters = Vec::new();
    match config.list("topics") {
        None => config.missing(
            "topics",
            Some("the topic filter(s) to subscribe to, e.g. `devices/+/telemetry`".to_owned()),
        ),
        Some(items) => {
            for item in items {
                match item.as_text() {
                    Some(text) => {
                        if let Some(problem) = check_filter(text) {
                            config.error(
                                item.span,
                                config.child_path("topics"),
                                format!("invalid topic filter: {problem}"),
                                Some("levels are separated by `/`; `+` matches one level, `#` the rest".to_owned()),
                            );
                        }
                        filters.push(text.to_owned());
                    }
                    None => config.error(
                        item.span,
                        config.child_path("topics"),
                        format!(
                            "a topic filter must be a string, found {}",
                            item.type_name()
                        ),
                        None,
                    ),
                }
            }
            if filters.is_empty() {
                config.error_at_key("topics", "`topics` is empty", None);
            }
        }
    }
    let client_id = config.string("client_id");
    let qos_number = config.u64("qos");
    let clean_session = config.bool("clean_session").unwrap_or(!durable);
    let qos = match (durable, qos_number) {
        (true, None | Some(1)) => QoS::AtLeastOnce,
        (true, Some(0)) => {
            config.error_at_key(
                "qos",
                "`mqtt` subscribes at QoS 1: QoS 0 messages are never redelivered, so they cannot back `at_least_once`",
                Some("remove `qos`, or use `type: mqtt_at_most_once` with `delivery: at_most_once`".to_owned()),
            );
            QoS::AtMostOnce
        }
        (true, Some(2)) => {
            config.error_at_key(
                "qos",
                "`mqtt` subscribes at QoS 1: QoS 2 gives nothing more under at-least-once, and rumqttc 0.25 cannot resume a QoS 2 receive after a reconnect",
                Some("use `qos: 1`; messages published at QoS 2 are delivered at QoS 1".to_owned()),
            );
            QoS::ExactlyOnce
        }
        (false, None | Some(0)) => QoS::AtMostOnce,
        (false, Some(1)) => QoS::AtLeastOnce,
        (_, Some(n)) => {
            config.error_at_key(
                "qos",
                format!("`qos` {n} does not exist"),
                Some(
                    if durable {
                        "use `qos: 1`"
                    } else {
                        "use `qos: 0` or `qos: 1`"
                    }
                    .to_owned(),
                ),
            );
            QoS::AtMostOnce
        }
    };
    if durable {
        if clean_session {
            config.error_at_key(
                "clean_session",
                "`mqtt` needs `clean_session: false`: a clean session forgets unacknowledged messages and everything published while spate is down",
                Some("remove `clean_session`, or use `type: mqtt_at_most_once` with `delivery: at_most_once`".to_owned()),
            );
        }
        if client_id.is_none() {
            config.missing(
                "client_id",
                Some("a persistent session lives under a stable client id: give one that is the same at every start and used by no other client, e.g. `spate-telemetry-ingest`".to_owned()),
            );
        }
    } else if !clean_session && client_id.is_none() {
        config.missing(
            "client_id",
            Some(
                "`clean_session: false` keeps a session under a stable client id; give one"
                    .to_owned(),
            ),
        );
    }
    if let Some(id) = &client_id {
        if id.is_empty() || id.len() > 65_535 {
            config.error_at_key("client_id", "`client_id` is empty or too long", None);
        }
    }
    let partitions = config.u64("partitions").unwrap_or(1);
    if !(1..=MAX_PARTITIONS).contains(&partitions) {
        config.error_at_key(
            "partitions",
            format!("`partitions` must be between 1 and {MAX_PARTITIONS}"),
            None,
        );
    }
    let partition_level = config.u64("partition_level");
    let key_level = config.u64("key_level");
    let key_field = config.string("key_field");
    for (key, value) in [
        ("partition_level", partition_level),
        ("key_level", key_level),
    ] {
        if value == Some(0) {
            config.error_at_key(
                key,
                format!("`{key}` counts topic levels from 1"),
                Some("in `devices/d7/telemetry`, level 2 is `d7`".to_owned()),
            );
        }
    }
    let key = match (key_level, key_field) {
        (Some(_), Some(_)) => {
            config.error_at_key(
                "key_field",
                "`key_level` and `key_field` are both set",
                Some("key events by a topic level or by a payload field, not both".to_owned()),
            );
            KeyFrom::None
        }
        (Some(l), None) => KeyFrom::Level(l as usize),
        (None, Some(f)) => KeyFrom::Field(f),
        (None, None) => KeyFrom::None,
    };
    let max_buffered = config
        .u64("max_buffered")
        .map_or(DEFAULT_MAX_BUFFERED, |n| n as usize);
    if max_buffered == 0 {
        config.error_at_key("max_buffered", "`max_buffered` must be at least 1", None);
    }
    let connect = ConnectSettings::read(config);
    if has_new_errors(config, mark) {
        return None;
    }
    Some(SourceSettings {
        kind,
        filters,
        client_id,
        qos,
        clean_session,
        manual_acks: durable,
        router: Router {
            partitions: partitions as u32,
            partition_level: partition_level.map(|l| l as usize),
            key,
        },
        max_buffered,
        connect,
    })
}

/// Builds MQTT sources.
pub struct MqttSourceBuilder {
    settings: SourceSettings,
}

impl MqttSourceBuilder {
    /// A builder for validated settings.
    pub fn new(settings: SourceSettings) -> Self {
        Self { settings }
    }
}

fn random_client_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("spate-{}-{}", std::process::id(), nanos % 1_000_000_000_000)
}

/// What the event-loop task hands the source.
enum Delivery {
    /// A message and the broker session it belongs to.
    Message(Publish, u64),
    /// The subscription failed for good.
    Failed(String),
}

#[async_trait]
impl SourceBuilder for MqttSourceBuilder {
    async fn build(&self) -> Result<Box<dyn Source>, SourceError> {
        let s = &self.settings;
        let name = format!("{}:{}", s.kind, s.filters.join(","));
        let unavailable = |message: String| SourceError::Unavailable {
            source_name: name.clone(),
            message,
        };
        let client_id = s.client_id.clone().unwrap_or_else(random_client_id);
        let mut options = s
            .connect
            .options(&client_id, s.clean_session)
            .await
            .map_err(unavailable)?;
        options.set_manual_acks(s.manual_acks);
        let (client, mut event_loop) = s.connect.client(options);
        let session_present = s
            .connect
            .first_connack(&mut event_loop)
            .await
            .map_err(unavailable)?;
        tracing::info!(source = %name, session_present, "MQTT connected");
        let filters: Vec<SubscribeFilter> = s
            .filters
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), s.qos))
            .collect();
        client
            .subscribe_many(filters.clone())
            .await
            .map_err(|e| unavailable(format!("cannot subscribe: {e}")))?;
        // Wait for the SUBACK; a persistent session may deliver queued
        // messages before it, which are kept.
        let mut early = Vec::new();
        let wait = s.connect.connect_timeout + Duration::from_secs(1);
        let subscribed = tokio::time::timeout(wait, async {
            loop {
                match event_loop.poll().await {
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => early.push(p),
                    Ok(MqttEvent::Incoming(Packet::SubAck(ack))) => return suback_problem(&ack),
                    Ok(_) => {}
                    Err(e) => return Some(s.connect.describe_error(&e)),
                }
            }
        })
        .await;
        match subscribed {
            Ok(None) => {}
            Ok(Some(problem)) => {
                return Err(SourceError::Fatal {
                    source_name: name.clone(),
                    message: problem,
                })
            }
            Err(_) => {
                return Err(unavailable(
                    "the broker did not confirm the subscription in time".to_owned(),
                ))
            }
        }
        let (tx, rx) = mpsc::channel(s.max_buffered);
        let session = Arc::new(AtomicU64::new(0));
        let driver = tokio::spawn(drive(
            event_loop,
            client.clone(),
            filters,
            tx,
            session.clone(),
            name.clone(),
        ));
        let partitions = (0..s.router.partitions)
            .map(|_| PartitionState::default())
            .collect();
        let mut source = MqttSource {
            stream: Arc::from(s.filters.join(",").as_str()),
            name,
            client,
            rx,
            driver,
            session,
            session_seen: 0,
            manual_acks: s.manual_acks,
            router: s.router.clone(),
            partitions,
            assigned: false,
            unread_total: 0,
            max_buffered: s.max_buffered,
            held_ids: HashMap::new(),
            pending_acks: VecDeque::new(),
            failed: None,
            round_robin: 0,
        };
        for publish in early {
            source.ingest(publish, 0);
        }
        Ok(Box::new(source))
    }
}

fn suback_problem(ack: &rumqttc::SubAck) -> Option<String> {
    ack.return_codes
        .iter()
        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
        .then(|| {
            "the broker refused the subscription (check the topic filters and the broker's ACL for this user)"
                .to_owned()
        })
}

/// Polls the event loop forever (keep-alive, reconnects) and forwards
/// messages; stops when the source is dropped.
async fn drive(
    mut event_loop: EventLoop,
    client: AsyncClient,
    filters: Vec<SubscribeFilter>,
    tx: mpsc::Sender<Delivery>,
    session: Arc<AtomicU64>,
    name: String,
) {
    let mut failures = 0u32;
    loop {
        match event_loop.poll().await {
            Ok(MqttEvent::Incoming(Packet::Publish(publish))) => {
                let current = session.load(Ordering::Acquire);
                // Waiting here stops reading the socket (backpressure).
                if tx.send(Delivery::Message(publish, current)).await.is_err() {
                    return;
                }
            }
            Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                failures = 0;
                if ack.session_present {
                    tracing::info!(source = %name, "MQTT reconnected; session resumed");
                } else {
                    session.fetch_add(1, Ordering::AcqRel);
                    tracing::warn!(source = %name, "MQTT reconnected but the broker lost the session; subscribing again (unacknowledged messages of the old session may be lost)");
                    if let Err(e) = client.try_subscribe_many(filters.clone()) {
                        let _ = tx
                            .send(Delivery::Failed(format!("cannot subscribe again: {e}")))
                            .await;
                        return;
                    }
                }
            }
            Ok(MqttEvent::Incoming(Packet::SubAck(ack))) => {
                if let Some(problem) = suback_problem(&ack) {
                    let _ = tx.send(Delivery::Failed(problem)).await;
                    return;
                }
            }
            Ok(MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(source = %name, error = %e, "MQTT connection lost; reconnecting");
                let backoff = Duration::from_millis(100 * u64::from(failures.min(50)));
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// A message handed to the engine and not yet acknowledged.
#[derive(Debug)]
struct Held {
    offset: u64,
    packet_id: u16,
    session: u64,
    /// False once the broker reused the packet id (it considers the message
    /// acknowledged), so no ack is sent for it.
    ack: bool,
}

#[derive(Debug, Default)]
struct PartitionState {
    next_offset: u64,
    paused: bool,
    unread: VecDeque<Event>,
    held: VecDeque<Held>,
}

/// An MQTT subscription as a partitioned source.
pub struct MqttSource {
    name: String,
    stream: Arc<str>,
    client: AsyncClient,
    rx: mpsc::Receiver<Delivery>,
    driver: JoinHandle<()>,
    session: Arc<AtomicU64>,
    session_seen: u64,
    manual_acks: bool,
    router: Router,
    partitions: Vec<PartitionState>,
    assigned: bool,
    unread_total: usize,
    max_buffered: usize,
    /// Packet id → (partition, offset) of held messages of the current session.
    held_ids: HashMap<u16, (PartitionId, u64)>,
    /// Acks the client's request channel had no room for yet.
    pending_acks: VecDeque<(Publish, PartitionId, u64)>,
    failed: Option<String>,
    round_robin: usize,
}

impl Drop for MqttSource {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl MqttSource {
    fn ingest(&mut self, publish: Publish, session: u64) {
        if session > self.session_seen {
            // The broker lost the old session: its packet ids mean nothing.
            self.session_seen = session;
            self.held_ids.clear();
        }
        let tracked = self.manual_acks && publish.qos != QoS::AtMostOnce;
        if tracked {
            if let Some(&(partition, offset)) = self.held_ids.get(&publish.pkid) {
                if publish.dup {
                    // A redelivery of a message we still hold.
                    tracing::debug!(source = %self.name, pkid = publish.pkid, "dropped a redelivered copy");
                    return;
                }
                // The broker reused the id: it counts the old message as
                // acknowledged, so acking it again would ack this one.
                if let Some(held) = self.partitions[partition as usize]
                    .held
                    .iter_mut()
                    .find(|h| h.offset == offset)
                {
                    held.ack = false;
                }
            }
        }
        let topic = publish.topic.as_str();
        let partition = self.router.partition(topic);
        let key = self.router.key(topic, &publish.payload);
        let mut headers = Headers::new();
        headers.push(TOPIC_HEADER, Bytes::copy_from_slice(topic.as_bytes()));
        if publish.retain {
            headers.push(RETAIN_HEADER, Bytes::from_static(b"true"));
        }
        let state = &mut self.partitions[partition as usize];
        let offset = state.next_offset;
        state.next_offset += 1;
        if tracked {
            state.held.push_back(Held {
                offset,
                packet_id: publish.pkid,
                session,
                ack: true,
            });
            self.held_ids.insert(publish.pkid, (partition, offset));
        }
        state.unread.push_back(Event {
            key,
            payload: publish.payload,
            headers,
            timestamp_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| d.as_millis() as i64),
            position: Position {
                stream: self.stream.clone(),
                partition,
                offset,
            },
        });
        self.unread_total += 1;
    }

    /// Takes up to `max` unread events of unpaused partitions, round robin.
    fn take_ready(&mut self, max: usize) -> Vec<Event> {
        let mut events = Vec::new();
        let n = self.partitions.len();
        let mut progressed = true;
        while events.len() < max && progressed {
            progressed = false;
            for i in 0..n {
                if events.len() >= max {
                    break;
                }
                let p = (self.round_robin + i) % n;
                let state = &mut self.partitions[p];
                if state.paused {
                    continue;
                }
                if let Some(event) = state.unread.pop_front() {
                    events.push(event);
                    progressed = true;
                }
            }
        }
        self.round_robin = (self.round_robin + 1) % n.max(1);
        self.unread_total -= events.len();
        events
    }

    /// Hands queued acks to the client; false if some still wait.
    fn flush_acks(&mut self) -> bool {
        while let Some((publish, _, _)) = self.pending_acks.front() {
            match self.client.try_ack(publish) {
                Ok(()) => {
                    let (publish, partition, offset) =
                        self.pending_acks.pop_front().expect("front exists");
                    // Forget the id only once the ack is on its way, so a
                    // redelivery before it is still recognised.
                    if self.held_ids.get(&publish.pkid) == Some(&(partition, offset)) {
                        self.held_ids.remove(&publish.pkid);
                    }
                }
                Err(rumqttc::ClientError::TryRequest(rumqttc::Request::PubAck(_))) => return false,
                Err(_) => {
                    // The event loop is gone; the broker redelivers.
                    self.pending_acks.clear();
                    return true;
                }
            }
        }
        true
    }

    fn check_partition(&self, partition: PartitionId) -> Result<(), SourceError> {
        if (partition as usize) < self.partitions.len() {
            Ok(())
        } else {
            Err(SourceError::Fatal {
                source_name: self.name.clone(),
                message: format!("partition {partition} does not exist"),
            })
        }
    }
}

#[async_trait]
impl Source for MqttSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn next(&mut self, max_events: usize) -> Result<SourceMessage, SourceError> {
        if !self.assigned {
            self.assigned = true;
            return Ok(SourceMessage::Assigned(
                (0..self.partitions.len() as PartitionId).collect(),
            ));
        }
        let max_events = max_events.max(1);
        loop {
            let acks_waiting = !self.flush_acks();
            if let Some(message) = self.failed.clone() {
                return Err(SourceError::Fatal {
                    source_name: self.name.clone(),
                    message,
                });
            }
            while self.unread_total < self.max_buffered {
                match self.rx.try_recv() {
                    Ok(Delivery::Message(publish, session)) => self.ingest(publish, session),
                    Ok(Delivery::Failed(message)) => self.failed = Some(message),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        return Err(SourceError::Unavailable {
                            source_name: self.name.clone(),
                            message: "the MQTT event loop stopped".to_owned(),
                        })
                    }
                }
            }
            if self.failed.is_some() {
                continue;
            }
            let events = self.take_ready(max_events);
            if !events.is_empty() {
                return Ok(SourceMessage::Events(events));
            }
            if self.unread_total >= self.max_buffered {
                // Everything buffered belongs to paused partitions: stop
                // reading until a resume (cancel safe: nothing in flight).
                if acks_waiting {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                std::future::pending::<()>().await;
            }
            tokio::select! {
                delivery = self.rx.recv() => match delivery {
                    Some(Delivery::Message(publish, session)) => self.ingest(publish, session),
                    Some(Delivery::Failed(message)) => self.failed = Some(message),
                    None => {
                        return Err(SourceError::Unavailable {
                            source_name: self.name.clone(),
                            message: "the MQTT event loop stopped".to_owned(),
                        })
                    }
                },
                _ = tokio::time::sleep(Duration::from_millis(10)), if acks_waiting => {}
            }
        }
    }

    fn pause(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError> {
        for p in partitions {
            self.check_partition(*p)?;
            self.partitions[*p as usize].paused = true;
        }
        Ok(())
    }

    fn resume(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError> {
        for p in partitions {
            self.check_partition(*p)?;
            self.partitions[*p as usize].paused = false;
        }
        Ok(())
    }

    async fn commit(&mut self, positions: &[CommitPosition]) -> Result<(), SourceError> {
        let current = self.session.load(Ordering::Acquire);
        for position in positions {
            self.check_partition(position.partition)?;
            let state = &mut self.partitions[position.partition as usize];
            while state
                .held
                .front()
                .is_some_and(|h| h.offset < position.next_offset)
            {
                let held = state.held.pop_front().expect("front exists");
                if held.session != current {
                    continue;
                }
                if !held.ack {
                    continue;
                }
                let mut publish = Publish::new("", QoS::AtLeastOnce, Vec::<u8>::new());
                publish.pkid = held.packet_id;
                self.pending_acks
                    .push_back((publish, position.partition, held.offset));
            }
        }
        self.flush_acks();
        Ok(())
    }

    fn lag(&self, partition: PartitionId) -> Option<u64> {
        self.partitions
            .get(partition as usize)
            .map(|p| p.unread.len() as u64)
    }

    async fn close(&mut self) -> Result<(), SourceError> {
        // Give queued acks a moment to leave, then disconnect cleanly (the
        // session stays on the broker).
        for _ in 0..100 {
            if self.flush_acks() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = self.client.disconnect().await;
        let driver = &mut self.driver;
        let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;
        Ok(())
    }
}
