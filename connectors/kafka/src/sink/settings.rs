//! A Kafka sink's settings (`topic`, `linger`, `delivery_timeout`,
//! `compression` and the connection keys), read with every problem
//! recorded, and the idempotent `acks=all` producer configuration they make.

use std::time::Duration;

use spate_connector::ConfigReader;

use crate::config::ConnectionSettings;
use crate::sizing::{MessageLimit, PRODUCER_MESSAGE_MAX_BYTES};

/// Default `linger`.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(5);
/// Default `delivery_timeout`.
pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Every setting of a Kafka sink.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// Cluster and security.
    pub connection: ConnectionSettings,
    /// `topic`.
    pub topic: String,
    /// `linger`.
    pub linger: Duration,
    /// `delivery_timeout`.
    pub delivery_timeout: Duration,
    /// `compression`, as librdkafka names it.
    pub compression: &'static str,
    /// The producer's `message.max.bytes` and where it came from: the
    /// default until the sink starts and reads the topic's limit.
    pub message_limit: MessageLimit,
}

impl SinkSettings {
    /// Reads a sink's settings, recording every problem; `None` if any.
    pub fn read(config: &mut ConfigReader<'_>) -> Option<Self> {
        let mark = crate::error_mark(config);
        let topic = config.required_string(
            "topic",
            Some("the topic to write to, e.g. `orders-enriched`".to_owned()),
        );
        if let Some(topic) = &topic {
            if let Err(why) = check_topic_name(topic) {
                config.error_at_key("topic", why, None);
            }
        }
        let linger = config.duration("linger").unwrap_or(DEFAULT_LINGER);
        let delivery_timeout =
            crate::duration_at_least(config, "delivery_timeout", Duration::from_secs(1))
                .unwrap_or(DEFAULT_DELIVERY_TIMEOUT);
        if delivery_timeout >= Duration::from_secs(1) && delivery_timeout <= linger {
            config.error_at_key(
                "delivery_timeout",
                "`delivery_timeout` must be longer than `linger`",
                None,
            );
        }
        let compression = config
            .one_of("compression", &["none", "zstd", "lz4", "snappy", "gzip"])
            .unwrap_or("none");
        let connection = ConnectionSettings::read(config);
        if crate::has_new_errors(config, mark) {
            return None;
        }
        Some(Self {
            connection,
            topic: topic?,
            linger,
            delivery_timeout,
            compression,
            message_limit: MessageLimit::Default,
        })
    }

    /// The librdkafka producer configuration.
    pub fn producer_config(&self) -> rdkafka::ClientConfig {
        let mut config = self.connection.client_config();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", self.linger.as_millis().to_string())
            .set(
                "message.timeout.ms",
                self.delivery_timeout.as_millis().to_string(),
            )
            .set("compression.type", self.compression);
        if let Some(bytes) = self.message_limit.to_set() {
            config.set(PRODUCER_MESSAGE_MAX_BYTES, bytes.to_string());
        }
        self.connection.finish(&mut config);
        config
    }
}

/// Kafka's rules for topic names: 1 to 249 of `[a-zA-Z0-9._-]`, not `.`
/// or `..`.
pub fn check_topic_name(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 249 || topic == "." || topic == ".." {
        return Err(format!(
            "`{topic}` is not a valid Kafka topic name (1 to 249 characters, not `.` or `..`)"
        ));
    }
    if let Some(bad) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "`{topic}` is not a valid Kafka topic name: `{bad}` is not allowed (use letters, digits, `.`, `_` and `-`)"
        ));
    }
    Ok(())
}
