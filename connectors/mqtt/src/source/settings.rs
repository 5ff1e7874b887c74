//! Reading an MQTT source's settings: topic filters, session, QoS,
//! partitioning and keying, and the per-topic sequence that lets the source
//! resume from positions a database stored. No I/O; every problem is
//! recorded with its place in the pipeline file.

use bytes::Bytes;
use rumqttc::{QoS, SubscribeFilter};
use spate_connector::{ConfigReader, PartitionId};

use crate::connection::ConnectSettings;
use crate::{error_mark, has_new_errors};

pub const DEFAULT_MAX_BUFFERED: usize = 1000;

/// The largest `max_buffered` (it sizes a channel).
pub const MAX_MAX_BUFFERED: usize = 1_000_000;
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
    pub(super) kind: &'static str,
    pub(super) filters: Vec<String>,
    pub(super) client_id: Option<String>,
    pub(super) qos: QoS,
    pub(super) clean_session: bool,
    pub(super) manual_acks: bool,
    pub(super) router: Router,
    pub(super) max_buffered: usize,
    /// JSON pointer to each message's per-topic sequence (`sequence`).
    pub(super) sequence: Option<String>,
    pub(super) connect: ConnectSettings,
}

impl SourceSettings {
    /// Every topic filter at the source's QoS, as subscribed.
    pub(super) fn subscribe_filters(&self) -> Vec<SubscribeFilter> {
        self.filters
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), self.qos))
            .collect()
    }
}

/// Reads a source of kind `mqtt` (`durable`) or `mqtt_at_most_once`.
pub fn read_source(config: &mut ConfigReader<'_>, durable: bool) -> Option<SourceSettings> {
    let mark = error_mark(config);
    let kind = if durable { "mqtt" } else { "mqtt_at_most_once" };
    let filters = read_filters(config);
    let (client_id, qos, clean_session) = read_session(config, durable);
    let router = read_router(config);
    let max_buffered = config
        .u64_in("max_buffered", 1..=MAX_MAX_BUFFERED as u64)
        .map_or(DEFAULT_MAX_BUFFERED, |n| {
            usize::try_from(n).unwrap_or(MAX_MAX_BUFFERED)
        });
    let sequence = read_sequence(config, durable);
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
        router,
        max_buffered,
        sequence,
        connect,
    })
}

/// `topics`: one or more valid topic filters.
fn read_filters(config: &mut ConfigReader<'_>) -> Vec<String> {
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
    filters
}

/// `client_id`, `qos` and `clean_session`: a durable source (`mqtt`) needs
/// a persistent session under a stable client id at QoS 1.
fn read_session(config: &mut ConfigReader<'_>, durable: bool) -> (Option<String>, QoS, bool) {
    let client_id = config.string("client_id");
    let qos_number = config.u64("qos");
    let clean_session = config.bool("clean_session").unwrap_or(!durable);
    let qos = session_qos(config, durable, qos_number);
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
    (client_id, qos, clean_session)
}

/// The QoS a source subscribes at, from `qos` as written.
fn session_qos(config: &ConfigReader<'_>, durable: bool, qos_number: Option<u64>) -> QoS {
    match (durable, qos_number) {
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
    }
}

/// `partitions`, `partition_level`, `key_level` and `key_field`.
fn read_router(config: &mut ConfigReader<'_>) -> Router {
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
    Router {
        partitions: partitions as u32,
        partition_level: partition_level.map(|l| l as usize),
        key,
    }
}

/// `sequence`: a JSON pointer, only for a durable source.
fn read_sequence(config: &mut ConfigReader<'_>, durable: bool) -> Option<String> {
    let sequence = config.string("sequence");
    if let Some(pointer) = &sequence {
        if !durable {
            config.error_at_key(
                "sequence",
                "`sequence` lets an `mqtt` input resume from positions a database stored (`exactly_once`), which `mqtt_at_most_once` never gives",
                Some("remove `sequence`, or use `type: mqtt`".to_owned()),
            );
        } else if !pointer.starts_with('/') {
            config.error_at_key(
                "sequence",
                format!("`sequence` must be a JSON pointer into the payload, found `{pointer}`"),
                Some(format!(
                    "write `sequence: /{}`",
                    pointer.trim_start_matches('$')
                )),
            );
        }
    }
    sequence
}
