//! Kafka connectors (`kafka`): consumer-group sources whose offsets move
//! only when the engine commits finished events, idempotent sinks that
//! acknowledge a write only on the broker's delivery report, and
//! exactly-once consume-transform-produce through transactions that commit
//! output records together with the source group's offsets.
//!
//! Built on librdkafka (through `rdkafka`), compiled into spate.
//!
//! | role | what | positions | capabilities |
//! | --- | --- | --- | --- |
//! | [`source`] | consumer-group member, cooperative or eager rebalancing, offsets committed by the engine | the group's committed offsets | `{exactly_once: true, durable_positions: true}` |
//! | [`sink`] | idempotent producer, `acks=all`, resolves on the delivery report | — | `{exactly_once: true, durable_positions: false}` |
//! | [`transaction`] session | transactional producer opened by the source for `delivery: exactly_once` | offsets sent to the transaction | — |
//!
//! The connection settings (`bootstrap_servers`, TLS, SASL, librdkafka
//! `properties`) are the same for both roles; see [`config`]. Each role's
//! own settings are listed in its module.
//!
//! Every factory reads its settings through the contract's
//! [`ConfigReader`]: the keys it asks for are its schema, every problem is
//! recorded (librdkafka property names and values included), and an
//! invalid configuration makes the factory return `None` without any I/O.
//! Building connects: a cluster that does not answer within
//! `connect_timeout` fails the build retryably, naming the bootstrap
//! servers.

#![warn(missing_docs)]

use std::sync::Arc;

use spate_connector::factory::ConnectorFamily;
use spate_connector::{Capabilities, ConfigReader, ConnectorFactory, SinkBuilder, SourceBuilder};

pub mod config;
pub mod consumer;
pub mod error;
pub mod probe;
pub mod sink;
pub mod sizing;
pub mod source;
pub mod transaction;

pub use crate::sink::{KafkaSink, TOPIC_HEADER};
pub use crate::source::KafkaSource;
pub use crate::transaction::KafkaTransaction;

/// The connector kind, as written in `type:`.
pub const KIND: &str = "kafka";

/// What Kafka sources promise.
pub const SOURCE_CAPABILITIES: Capabilities = Capabilities::NONE
    .with_exactly_once()
    .with_durable_positions()
    .with_resumable();

/// What Kafka sinks promise.
pub const SINK_CAPABILITIES: Capabilities = Capabilities::NONE.with_exactly_once();

/// Every connector family of this crate.
pub fn connectors() -> Vec<Arc<dyn ConnectorFactory>> {
    vec![Arc::new(KafkaFactory)]
}

/// The `kafka` connector family.
#[derive(Debug, Clone, Copy, Default)]
pub struct KafkaFactory;

impl ConnectorFamily for KafkaFactory {
    const KIND: &'static str = KIND;
    const SOURCE: Option<Capabilities> = Some(SOURCE_CAPABILITIES);
    const SINK: Option<Capabilities> = Some(SINK_CAPABILITIES);

    fn read_source(&self, config: &mut ConfigReader<'_>) -> Option<Box<dyn SourceBuilder>> {
        let settings = source::SourceSettings::read(config)?;
        Some(Box::new(source::KafkaSourceBuilder::new(settings)))
    }

    fn read_sink(&self, config: &mut ConfigReader<'_>) -> Option<Box<dyn SinkBuilder>> {
        let settings = sink::SinkSettings::read(config)?;
        Some(Box::new(sink::KafkaSinkBuilder::new(settings)))
    }
}

/// How many configuration problems were recorded so far.
fn error_mark(config: &ConfigReader<'_>) -> usize {
    config.errors().borrow().len()
}

/// An optional duration that must be at least `min`; a shorter one is
/// recorded as an error (and still returned: the caller stops on errors).
fn duration_at_least(
    config: &mut ConfigReader<'_>,
    key: &'static str,
    min: std::time::Duration,
) -> Option<std::time::Duration> {
    let value = config.duration(key);
    if value.is_some_and(|d| d < min) {
        config.error_at_key(key, format!("`{key}` must be at least {min:?}"), None);
    }
    value
}

/// True when problems were recorded since `mark` was taken.
fn has_new_errors(config: &ConfigReader<'_>, mark: usize) -> bool {
    config.errors().borrow().len() > mark
}
