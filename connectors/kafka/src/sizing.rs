//! Sizes a Kafka sink's producer to its topic: the producer's
//! `message.max.bytes` follows the topic's `max.message.bytes`.
//!
//! Two limits decide whether a record fits: librdkafka refuses at once, in
//! the producer, a record larger than the producer's `message.max.bytes`
//! (librdkafka's default: 1,000,000 bytes), and the broker refuses one larger
//! than the topic's `max.message.bytes`. When they differ one of them is the
//! wrong setting to raise. So when a sink starts it reads the topic's
//! `max.message.bytes` (an admin `DescribeConfigs` request) and sets the
//! producer's `message.max.bytes` to it, clamped to what librdkafka allows
//! ([`MESSAGE_MAX_BYTES_RANGE`]) — unless the pipeline's `properties` set
//! `message.max.bytes` itself, which always wins. A broker that cannot
//! answer (no such request, no permission, the topic not there yet) leaves
//! librdkafka's default, logged at debug. The limit in force is what the
//! sink's errors and [`check`](spate_connector::Sink::check) go by.
//!
//! Under `exactly_once` the records go through the input's transactional
//! producer instead, which serves every output topic: it is given the
//! largest `message.max.bytes` librdkafka allows (unless the input's
//! `properties` set one), so each sink's `check` is the one gate, and a
//! record too large is dead-lettered before it enters a transaction.

use std::ops::RangeInclusive;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

use crate::sink::SinkSettings;

/// The producer property that bounds a record, as librdkafka names it.
pub const PRODUCER_MESSAGE_MAX_BYTES: &str = "message.max.bytes";
/// The topic config that bounds a record batch on the broker.
pub const TOPIC_MAX_MESSAGE_BYTES: &str = "max.message.bytes";
/// What librdkafka accepts for `message.max.bytes`.
pub const MESSAGE_MAX_BYTES_RANGE: RangeInclusive<u64> = 1_000..=1_000_000_000;
/// librdkafka's default `message.max.bytes`.
pub const LIBRDKAFKA_DEFAULT_MESSAGE_MAX_BYTES: u64 = 1_000_000;

/// Where the producer's `message.max.bytes` came from, and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageLimit {
    /// The pipeline's `properties` set it (not changed by spate).
    User(u64),
    /// Sized to the topic's `max.message.bytes` (clamped).
    Topic(u64),
    /// Neither: librdkafka's default.
    Default,
}

impl MessageLimit {
    /// The limit in force, in bytes.
    pub fn bytes(self) -> u64 {
        match self {
            Self::User(bytes) | Self::Topic(bytes) => bytes,
            Self::Default => LIBRDKAFKA_DEFAULT_MESSAGE_MAX_BYTES,
        }
    }

    /// The value spate sets on the producer, if any (`None`: the user's
    /// property or librdkafka's default stands).
    pub fn to_set(self) -> Option<u64> {
        match self {
            Self::Topic(bytes) => Some(bytes),
            Self::User(_) | Self::Default => None,
        }
    }
}

/// Decides the producer's `message.max.bytes` from what the user set (the
/// text of the `message.max.bytes` property, if any) and what the topic
/// said (the text of its `max.message.bytes`, if the broker answered).
pub fn decide(user: Option<&str>, topic: Option<&str>) -> MessageLimit {
    if let Some(user) = user {
        // librdkafka already checked the property when the file loaded; a
        // value it took but that is not a plain integer counts as default.
        return user
            .trim()
            .parse()
            .map_or(MessageLimit::Default, MessageLimit::User);
    }
    match topic.and_then(|text| text.trim().parse::<u64>().ok()) {
        Some(bytes) => MessageLimit::Topic(bytes.clamp(
            *MESSAGE_MAX_BYTES_RANGE.start(),
            *MESSAGE_MAX_BYTES_RANGE.end(),
        )),
        None => MessageLimit::Default,
    }
}

/// Reads `topic`'s `max.message.bytes` from the cluster, or `None` (logged
/// at debug) when the broker cannot say within `timeout`.
pub async fn topic_max_message_bytes(
    settings: &SinkSettings,
    topic: &str,
    timeout: Duration,
) -> Option<String> {
    let mut config = settings.connection.client_config();
    settings.connection.finish(&mut config);
    let admin: AdminClient<DefaultClientContext> = match config.create() {
        Ok(admin) => admin,
        Err(error) => {
            tracing::debug!(topic, %error, "no admin client to read the topic's `max.message.bytes`; the producer keeps its `message.max.bytes`");
            return None;
        }
    };
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let specifier = [ResourceSpecifier::Topic(topic)];
    let answer = tokio::time::timeout(timeout, admin.describe_configs(&specifier, &options)).await;
    // Dropping an admin client joins its thread: not on the async runtime.
    tokio::task::spawn_blocking(move || drop(admin));
    let value = match answer {
        Ok(Ok(results)) => results.into_iter().find_map(|result| match result {
            Ok(resource) => resource
                .get(TOPIC_MAX_MESSAGE_BYTES)
                .and_then(|entry| entry.value.clone()),
            Err(code) => {
                tracing::debug!(
                    topic,
                    ?code,
                    "the broker did not describe the topic's configs"
                );
                None
            }
        }),
        Ok(Err(error)) => {
            tracing::debug!(topic, %error, "the broker did not answer DescribeConfigs");
            None
        }
        Err(_elapsed) => {
            tracing::debug!(topic, ?timeout, "DescribeConfigs timed out");
            None
        }
    };
    if value.is_none() {
        tracing::debug!(topic, "the topic's `max.message.bytes` is unknown; the producer keeps librdkafka's `message.max.bytes`");
    }
    value
}

/// The bytes librdkafka counts against `message.max.bytes` for a record
/// (its upper bound of a v2 record's framing plus key, value and headers),
/// so a check before a transaction agrees with the producer's own.
pub fn wire_size(record: &spate_connector::Record) -> u64 {
    // Length, attributes, timestamp and offset deltas, key and value
    // lengths, header count: librdkafka's RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD.
    const V2_MAX_OVERHEAD: u64 = 5 + 1 + 10 + 5 + 5 + 5 + 5;
    let key = record.key.as_ref().map_or(0, |k| k.len() as u64);
    let headers: u64 = record
        .headers
        .iter()
        .filter(|(name, _)| *name != crate::sink::TOPIC_HEADER)
        .map(|(name, value)| {
            let (name, value) = (name.len() as u64, value.len() as u64);
            varint_len(name) + name + varint_len(value) + value
        })
        .sum();
    V2_MAX_OVERHEAD + key + record.payload.len() as u64 + headers
}

/// Bytes of a zig-zag varint of the non-negative `n`.
fn varint_len(n: u64) -> u64 {
    let mut zigzag = n << 1;
    let mut len = 1;
    while zigzag >= 0x80 {
        zigzag >>= 7;
        len += 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topic_limit_sizes_the_producer_unless_the_user_set_one() {
        assert_eq!(
            decide(None, Some("2097152")),
            MessageLimit::Topic(2_097_152)
        );
        assert_eq!(decide(None, Some("2097152")).to_set(), Some(2_097_152));
        assert_eq!(
            decide(Some("5000000"), Some("2097152")),
            MessageLimit::User(5_000_000)
        );
        assert_eq!(decide(Some("5000000"), Some("2097152")).to_set(), None);
        assert_eq!(decide(Some("5000000"), None).bytes(), 5_000_000);
    }

    #[test]
    fn an_unknown_topic_limit_keeps_librdkafkas_default() {
        assert_eq!(decide(None, None), MessageLimit::Default);
        assert_eq!(decide(None, Some("lots")), MessageLimit::Default);
        assert_eq!(decide(None, None).to_set(), None);
        assert_eq!(decide(None, None).bytes(), 1_000_000);
    }

    #[test]
    fn a_topic_limit_outside_librdkafkas_range_is_clamped() {
        assert_eq!(decide(None, Some("10")), MessageLimit::Topic(1_000));
        assert_eq!(
            decide(None, Some("2147483647")),
            MessageLimit::Topic(1_000_000_000)
        );
    }

    #[test]
    fn the_wire_size_counts_framing_key_payload_and_headers() {
        let mut record = spate_connector::Record::from_payload(vec![0u8; 100]);
        record.key = Some(bytes::Bytes::from_static(b"key"));
        record.headers.push("h", bytes::Bytes::from_static(b"v"));
        assert_eq!(wire_size(&record), 36 + 3 + 100 + (1 + 1 + 1 + 1));
        assert_eq!(varint_len(63), 1);
        assert_eq!(varint_len(64), 2);
    }
}
