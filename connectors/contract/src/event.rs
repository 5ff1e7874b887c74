//! Events read from sources and records written to sinks.
//!
//! An [`Event`] always carries its [`Position`]: the engine's offset tracking
//! and every dead letter's provenance come from it, so a source must fill it
//! truthfully and positions must grow within a partition.

use std::sync::Arc;

use bytes::Bytes;

/// A source's unit of order: a Kafka partition, a JetStream subject
/// partition, an MQTT topic, a line-numbered file (one partition).
pub type PartitionId = u32;

/// Where an event came from. Within one partition offsets strictly increase
/// in the order the source hands events to the engine; they need not be
/// contiguous (Kafka compaction and transaction markers leave gaps).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// The source's name for the stream: topic, subject, stream or file path.
    pub stream: Arc<str>,
    /// The partition within that stream.
    pub partition: PartitionId,
    /// The offset (or sequence, or line number) within the partition.
    pub offset: u64,
}

/// Ordered header list; names may repeat, as in Kafka and NATS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, Bytes)>);

impl Headers {
    /// An empty header list.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Appends a header, keeping any earlier one of the same name.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<Bytes>) {
        self.0.push((name.into(), value.into()));
    }

    /// Replaces every header of this name with one value.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<Bytes>) {
        let name = name.into();
        self.0.retain(|(n, _)| *n != name);
        self.0.push((name, value.into()));
    }

    /// The last value given for `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.0.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The last value of `name` as UTF-8 text, if present and valid.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Iterates over all headers in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes the headers occupy (names plus values), for in-flight accounting.
    pub fn byte_len(&self) -> usize {
        self.0.iter().map(|(n, v)| n.len() + v.len()).sum()
    }
}

/// One event as read from a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Partitioning / ordering key, if the source has one.
    pub key: Option<Bytes>,
    /// The payload bytes, undecoded.
    pub payload: Bytes,
    /// Headers in the source's order.
    pub headers: Headers,
    /// Event time in milliseconds since the Unix epoch, if the source has one.
    pub timestamp_ms: Option<i64>,
    /// Where the event came from.
    pub position: Position,
}

impl Event {
    /// Bytes this event holds (key, payload, headers), for in-flight bounds.
    pub fn byte_len(&self) -> usize {
        self.key.as_ref().map_or(0, Bytes::len) + self.payload.len() + self.headers.byte_len()
    }

    /// The wall-clock time now, in milliseconds since the Unix epoch: the
    /// [`Event::timestamp_ms`] of a message that carries no time of its own
    /// (its receive time). `None` for a clock before the epoch.
    pub fn receive_time_ms() -> Option<i64> {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as i64)
    }
}

/// One record handed to a sink: an output of a handler or a dead letter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Key to write with (Kafka key, NATS subject suffix, …), if any.
    pub key: Option<Bytes>,
    /// The payload bytes.
    pub payload: Bytes,
    /// Headers to write.
    pub headers: Headers,
    /// Event time in milliseconds since the Unix epoch, if any.
    pub timestamp_ms: Option<i64>,
}

impl Record {
    /// A record with only a payload.
    pub fn from_payload(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: payload.into(),
            ..Self::default()
        }
    }
}
