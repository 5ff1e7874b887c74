//! MQTT connectors for spate, built on [`rumqttc`] 0.25 (MQTT 3.1.1).
//!
//! | kind | source | sink | positions | capabilities (source / sink) |
//! | --- | --- | --- | --- | --- |
//! | `mqtt` | QoS 1 subscription (wildcards) in a persistent session, manual acks on commit; topics hashed into `partitions`; offset = per-partition arrival counter | publish at QoS 0/1/2, resolves on PUBACK / PUBCOMP | the broker's session (unacknowledged messages are redelivered); with `sequence:`, each topic's last sequence, stored by a database sink | `{false, true, resumable}` / `{false, false, false}` |
//! | `mqtt_at_most_once` | QoS 0 (or auto-acked QoS 1) subscription, clean session by default | — | none | `{false, false, false}` / — |
//!
//! See [`source`] for delivery, partitioning and backpressure, [`sink`] for
//! how acknowledgements are matched to writes, and [`connection`] for the
//! broker settings (URL, username/password, TLS, keep-alive).
//!
//! Every factory reads its settings through the contract's
//! [`ConfigReader`]: the keys it asks for are its schema, every problem is
//! recorded, and an invalid configuration makes the factory return `None`
//! without network I/O (`tls_ca_file` is checked to exist).

#![warn(missing_docs)]

use std::sync::Arc;

use spate_connector::factory::ConnectorFamily;
use spate_connector::{Capabilities, ConfigReader, ConnectorFactory, SinkBuilder, SourceBuilder};

pub mod connection;
pub mod sink;
pub mod source;

/// Header added to every event with the topic the message was published on.
pub const TOPIC_HEADER: &str = "spate-mqtt-topic";
/// Header (`true`) on events the broker delivered as retained messages.
pub const RETAIN_HEADER: &str = "spate-mqtt-retain";

/// Every connector family of this crate.
pub fn connectors() -> Vec<Arc<dyn ConnectorFactory>> {
    vec![Arc::new(MqttFactory), Arc::new(MqttAtMostOnceFactory)]
}

/// The `mqtt` connector family: at-least-once source, acknowledged sink.
#[derive(Debug, Clone, Copy, Default)]
pub struct MqttFactory;

impl ConnectorFamily for MqttFactory {
    const KIND: &'static str = "mqtt";
    const SOURCE: Option<Capabilities> = Some(source::SOURCE_CAPABILITIES);
    const SINK: Option<Capabilities> = Some(sink::SINK_CAPABILITIES);

    fn read_source(&self, config: &mut ConfigReader<'_>) -> Option<Box<dyn SourceBuilder>> {
        let settings = source::read_source(config, true)?;
        Some(Box::new(source::MqttSourceBuilder::new(settings)))
    }

    fn read_sink(&self, config: &mut ConfigReader<'_>) -> Option<Box<dyn SinkBuilder>> {
        let settings = sink::read_sink(config)?;
        Some(Box::new(sink::MqttSinkBuilder::new(settings)))
    }
}

/// The `mqtt_at_most_once` connector family: a lossy (QoS 0 or clean
/// session) subscription, accepted only under `delivery: at_most_once`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MqttAtMostOnceFactory;

impl ConnectorFamily for MqttAtMostOnceFactory {
    const KIND: &'static str = "mqtt_at_most_once";
    const SOURCE: Option<Capabilities> = Some(source::AT_MOST_ONCE_CAPABILITIES);

    fn read_source(&self, config: &mut ConfigReader<'_>) -> Option<Box<dyn SourceBuilder>> {
        let settings = source::read_source(config, false)?;
        Some(Box::new(source::MqttSourceBuilder::new(settings)))
    }
}

/// How many configuration problems were recorded so far.
fn error_mark(config: &ConfigReader<'_>) -> usize {
    config.errors().borrow().len()
}

/// True when problems were recorded since `mark` was taken.
fn has_new_errors(config: &ConfigReader<'_>, mark: usize) -> bool {
    config.errors().borrow().len() > mark
}

#[cfg(test)]
mod tests {
    use super::source::{check_filter, KeyFrom, Router};

    #[test]
    fn partitions_follow_the_configured_level() {
        let router = Router {
            partitions: 8,
            partition_level: Some(2),
            key: KeyFrom::Level(2),
        };
        let a = router.partition("devices/d7/telemetry");
        assert_eq!(a, router.partition("devices/d7/status"));
        assert!(a < 8);
        assert_eq!(
            router.key("devices/d7/telemetry", b"").as_deref(),
            Some(&b"d7"[..])
        );
        let single = Router {
            partitions: 1,
            partition_level: None,
            key: KeyFrom::Field("id".into()),
        };
        assert_eq!(single.partition("x/y"), 0);
        assert_eq!(
            single.key("x", br#"{"id":"a1"}"#).as_deref(),
            Some(&b"a1"[..])
        );
        assert_eq!(single.key("x", br#"{"id":7}"#).as_deref(), Some(&b"7"[..]));
        assert_eq!(single.key("x", b"not json"), None);
    }

    #[test]
    fn filters_are_checked() {
        assert!(check_filter("a/+/c").is_none());
        assert!(check_filter("a/#").is_none());
        assert!(check_filter("a/#/c").is_some());
        assert!(check_filter("a/b+").is_some());
        assert!(check_filter("").is_some());
    }
}
