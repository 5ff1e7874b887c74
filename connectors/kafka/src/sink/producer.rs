//! Opening the sink's producer: the cluster is probed (by a client of its
//! own, which sees librdkafka's transport errors) before the one producer is
//! created, off the async runtime. The producer's context logs librdkafka's
//! errors, a broker outage once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rdkafka::producer::FutureProducer;
use rdkafka::ClientContext;

use super::SinkSettings;
use crate::error::Failure;
use spate_connector::internal_events::{ConnectionLost, ProduceError};

/// The producer's context: global errors go to the log.
pub struct SinkContext {
    name: String,
    /// A transport error was logged and no delivery succeeded since.
    down: Arc<AtomicBool>,
}

impl ClientContext for SinkContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        crate::probe::log_librdkafka(level, facility, message);
    }

    /// Transport errors (a broker down) are reported once per outage (a
    /// lost connection): the first, then nothing until a delivery succeeded
    /// again; every other error is a produce error.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if crate::probe::is_transport(&error) && self.down.swap(true, Ordering::Relaxed) {
            tracing::debug!(sink = %self.name, %error, reason, "Kafka producer error");
            return;
        }
        let transport = crate::probe::is_transport(&error);
        let error = format!("{error} ({reason})");
        if transport {
            ConnectionLost {
                connector: "kafka",
                target: &self.name,
                error: Some(&error),
                context: "Kafka producer error",
            }
            .emit();
        } else {
            ProduceError {
                connector: "kafka",
                name: &self.name,
                error: &error,
                context: "Kafka producer error",
            }
            .emit();
        }
    }
}

pub(super) type KafkaProducer = FutureProducer<SinkContext>;

/// Waits for the cluster's first metadata answer, off the async runtime.
pub(super) async fn probe(settings: Arc<SinkSettings>) -> Result<(), Failure> {
    tokio::task::spawn_blocking(move || {
        // The probe's own client sees librdkafka's transport errors, which
        // the producer's polling thread would only log.
        crate::probe::probe_producer(
            &settings.producer_config(),
            &settings.connection.bootstrap_servers,
            settings.connection.connect_timeout,
            &[],
        )
    })
    .await
    .map_err(|e| Failure::retryable(format!("starting the producer failed: {e}")))
    .and_then(|r| r)
}

/// Creates the producer off the async runtime.
pub(super) async fn spawn_create(
    settings: Arc<SinkSettings>,
    name: String,
    down: Arc<AtomicBool>,
) -> Result<KafkaProducer, Failure> {
    tokio::task::spawn_blocking(move || create(&settings, &name, down))
        .await
        .map_err(|e| Failure::retryable(format!("starting the producer failed: {e}")))
        .and_then(|r| r)
}

pub(super) fn create(
    settings: &SinkSettings,
    name: &str,
    down: Arc<AtomicBool>,
) -> Result<KafkaProducer, Failure> {
    settings
        .producer_config()
        .create_with_context(SinkContext {
            name: name.to_owned(),
            down,
        })
        .map_err(|e| {
            Failure::fatal(format!(
                "cannot create a Kafka producer for `{}`: {e}",
                settings.connection.bootstrap_servers
            ))
        })
}
