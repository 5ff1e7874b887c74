//! The Kafka sink: an idempotent producer whose writes resolve on the
//! broker's delivery report.
//!
//! Capabilities `{exactly_once: true, durable_positions: false}`: on its own
//! it writes at least once (idempotence removes the duplicates of its own
//! retries, not those of a redelivered event), and inside an exactly-once
//! function its records go through the source's
//! [`KafkaTransaction`](crate::transaction::KafkaTransaction) instead, so
//! they commit with the source's offsets. The sink names itself as
//! [`TransactionalTarget`] `{kind: "kafka", cluster: bootstrap_servers,
//! destination: topic}`.
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `topic` | required | topic to write to; a record header `spate-kafka-topic` overrides it for that record (the header itself is not written) |
//! | `linger` | `5ms` | how long the producer waits to fill a batch |
//! | `delivery_timeout` | `30s` | how long a record may take to be acknowledged, retries included, before the write fails (retryably) |
//! | `compression` | `none` | `none`, `zstd`, `lz4`, `snappy` or `gzip`; all four codecs are compiled into spate's librdkafka (zstd through rdkafka's `zstd` feature, gzip through `libz`, lz4 and snappy bundled with librdkafka; a unit test checks `builtin.features`) |
//! | `bootstrap_servers`, `connect_timeout`, `tls*`, `sasl_*`, `security`, `properties` | | see [`config`](crate::config) |
//!
//! Every record is written with `acks=all` and `enable.idempotence=true`.
//! The key, headers (in order, repeated names kept) and timestamp (when the
//! record has one; otherwise the broker's clock) are written as given.
//! A write resolves `Ok` only on a successful delivery report. A full local
//! queue makes the write wait, not fail. A record larger than the topic
//! accepts, or naming an invalid topic, is [`SinkError::Rejected`], with the
//! setting to raise: the producer's `message.max.bytes` when librdkafka
//! refused it before sending, the topic's `max.message.bytes` when the
//! broker did. Anything else (broker away, timeout) is
//! [`SinkError::Unavailable`]; so is a refusal of the topic's ACLs, which
//! concerns every record alike (logged at error once, then retried). When
//! the sink starts it sizes the producer's `message.max.bytes` to the
//! topic's `max.message.bytes` (see [`sizing`](crate::sizing)). When the
//! idempotent producer hits a fatal error (it cannot keep its ordering
//! promise any more) the sink replaces it and the write fails retryably.
//!
//! `settings` reads the keys, `producer` opens the producer (probing
//! the cluster first, then creating the one producer with its
//! `message.max.bytes` decided), `record` turns a record into what the
//! producer writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureRecord, Producer};
use spate_connector::{PendingWrite, Record, Sink, SinkBuilder, SinkError, TransactionalTarget};

use crate::error::{
    code_of, is_auth_error, is_size_error, producer_failure, producer_size_failure, Failure,
};
use crate::sizing::{self, MessageLimit, PRODUCER_MESSAGE_MAX_BYTES};
use spate_connector::internal_events::{ProduceError, Reconnected};

mod producer;
mod record;
mod settings;
#[cfg(test)]
mod tests;

use producer::KafkaProducer;
pub use producer::SinkContext;
pub(crate) use record::prepare;
pub use record::TOPIC_HEADER;
pub use settings::{check_topic_name, SinkSettings, DEFAULT_DELIVERY_TIMEOUT, DEFAULT_LINGER};

/// Longest `flush` waits.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds [`KafkaSink`]s.
pub struct KafkaSinkBuilder {
    settings: Arc<SinkSettings>,
}

impl KafkaSinkBuilder {
    /// A builder for these settings (no I/O until `build`).
    pub fn new(settings: SinkSettings) -> Self {
        Self {
            settings: Arc::new(settings),
        }
    }
}

#[async_trait]
impl SinkBuilder for KafkaSinkBuilder {
    async fn build(&self) -> Result<Box<dyn Sink>, SinkError> {
        Ok(Box::new(KafkaSink::open(self.settings.clone()).await?))
    }

    /// Reaches the cluster as `build` does, and checks that `topic`
    /// exists; sends nothing.
    async fn check(&self) -> Result<(), SinkError> {
        let settings = self.settings.clone();
        let name = format!("kafka:{}", settings.topic);
        crate::probe::off_runtime(move || {
            crate::probe::probe_producer(
                &settings.producer_config(),
                &settings.connection.bootstrap_servers,
                settings.connection.connect_timeout,
                &[settings.topic.as_str()],
            )
        })
        .await
        .map_err(|f| f.into_sink(&name))
    }

    fn target(&self) -> Option<TransactionalTarget> {
        Some(TransactionalTarget {
            kind: crate::KIND,
            cluster: self.settings.connection.bootstrap_servers.clone(),
            destination: self.settings.topic.clone(),
        })
    }
}

/// How long to wait before enqueueing again into a full local queue.
pub(crate) const QUEUE_FULL_WAIT: Duration = Duration::from_millis(20);

/// An idempotent producer writing to one topic.
pub struct KafkaSink {
    name: Arc<str>,
    settings: Arc<SinkSettings>,
    producer: RwLock<Arc<KafkaProducer>>,
    /// A refusal of the topic's ACLs was logged at error already.
    auth_reported: Arc<AtomicBool>,
    /// Shared with the producer's context: a transport error was logged
    /// and no delivery succeeded since.
    down: Arc<AtomicBool>,
}

impl KafkaSink {
    /// Creates the producer, checks that the cluster answers within
    /// `connect_timeout`, and sizes the producer's `message.max.bytes` to
    /// the topic's `max.message.bytes` (see [`sizing`]).
    pub async fn open(settings: Arc<SinkSettings>) -> Result<Self, SinkError> {
        let name = format!("kafka:{}", settings.topic);
        producer::probe(settings.clone())
            .await
            .map_err(|f| f.into_sink(&name))?;
        let settings = Arc::new(sized(&settings).await);
        if let Some(bytes) = settings.message_limit.to_set() {
            tracing::info!(sink = %name, bytes, "sized the producer's `message.max.bytes` to the topic's `max.message.bytes`");
        }
        let down = Arc::new(AtomicBool::new(false));
        let producer = producer::spawn_create(settings.clone(), name.clone(), down.clone())
            .await
            .map_err(|f| f.into_sink(&name))?;
        Ok(Self {
            name: name.into(),
            settings,
            producer: RwLock::new(Arc::new(producer)),
            auth_reported: Arc::new(AtomicBool::new(false)),
            down,
        })
    }

    /// The producer's `message.max.bytes` in force and where it came from.
    pub fn message_limit(&self) -> MessageLimit {
        self.settings.message_limit
    }

    fn producer(&self) -> Arc<KafkaProducer> {
        self.producer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces a producer that hit a fatal error (once, however many
    /// writes saw it).
    fn replace_if_fatal(&self, failed: &Arc<KafkaProducer>) {
        let Some((code, reason)) = failed.client().fatal_error() else {
            return;
        };
        let mut current = self.producer.write().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&current, failed) {
            return;
        }
        match producer::create(&self.settings, &self.name, self.down.clone()) {
            Ok(fresh) => {
                tracing::warn!(sink = %self.name, ?code, %reason, "the idempotent producer hit a fatal error; replaced it");
                let old = std::mem::replace(&mut *current, Arc::new(fresh));
                drop(current);
                // Dropping a producer purges and joins its thread: not on
                // the async runtime.
                tokio::task::spawn_blocking(move || drop(old));
            }
            Err(e) => {
                tracing::error!(sink = %self.name, error = %e, "replacing the failed producer failed")
            }
        }
    }
}

#[async_trait]
impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&self, record: Record) -> Result<(), SinkError> {
        self.send(record).await?.await
    }

    /// Enqueues the record (the idempotent producer keeps the order of what
    /// it accepted, per partition) and returns its delivery report to wait
    /// for, so the engine can start the partition's next event meanwhile.
    async fn send(&self, record: Record) -> Result<PendingWrite, SinkError> {
        let prepared =
            prepare(&record, &self.settings.topic).map_err(|f| f.into_sink(&self.name))?;
        let mut producer = self.producer();
        if producer.client().fatal_error().is_some() {
            self.replace_if_fatal(&producer);
            producer = self.producer();
        }
        let mut future = FutureRecord::to(prepared.topic).payload(record.payload.as_ref());
        if let Some(headers) = prepared.headers {
            future = future.headers(headers);
        }
        if let Some(key) = record.key.as_deref() {
            future = future.key(key);
        }
        if let Some(ts) = record.timestamp_ms {
            future = future.timestamp(ts);
        }
        let delivery = loop {
            match producer.send_result(future) {
                Ok(delivery) => break delivery,
                // A full local queue is waited out, not an error.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    future = back;
                    tokio::time::sleep(QUEUE_FULL_WAIT).await;
                }
                Err((error, _)) => {
                    self.replace_if_fatal(&producer);
                    let failure = match code_of(&error) {
                        // Refused before sending: the producer's limit.
                        Some(code) if is_size_error(code) => producer_size_failure(
                            prepared.topic,
                            sizing::wire_size(&record),
                            self.settings.message_limit.bytes(),
                        ),
                        _ => producer_failure(
                            &error,
                            &self.settings.connection.bootstrap_servers,
                            prepared.topic,
                        ),
                    };
                    report_auth_once(&self.auth_reported, &self.name, &error, &failure);
                    return Err(failure.into_sink(&self.name));
                }
            }
        };
        // What an error report needs, without copying a string per record:
        // the sink's name and settings are shared, the topic is copied only
        // when a header routed the record elsewhere.
        let (name, settings) = (self.name.clone(), self.settings.clone());
        let auth_reported = self.auth_reported.clone();
        let down = self.down.clone();
        let routed_topic = (prepared.topic != settings.topic).then(|| prepared.topic.to_owned());
        Ok(Box::pin(async move {
            match delivery.await {
                Ok(Ok(_)) => {
                    if down.swap(false, Ordering::Relaxed) {
                        Reconnected {
                            connector: "kafka",
                            target: &name,
                            context: "Kafka reachable again",
                        }
                        .emit();
                    }
                    Ok(())
                }
                Ok(Err((error, _))) => {
                    let context = if producer.client().fatal_error().is_some() {
                        "the producer hit a fatal error; the next write replaces it"
                    } else {
                        "Kafka delivery failed; the engine retries the write"
                    };
                    ProduceError {
                        connector: "kafka",
                        name: &name,
                        error: &error,
                        context,
                    }
                    .emit();
                    let topic = routed_topic.as_deref().unwrap_or(&settings.topic);
                    let failure =
                        producer_failure(&error, &settings.connection.bootstrap_servers, topic);
                    report_auth_once(&auth_reported, &name, &error, &failure);
                    Err(failure.into_sink(&name))
                }
                Err(_canceled) => Err(SinkError::Unavailable {
                    sink_name: name.to_string(),
                    message: "the producer was dropped before the delivery report".to_owned(),
                }),
            }
        }))
    }

    /// Refuses a record larger than the producer's `message.max.bytes`
    /// before an exactly-once transaction takes it (inside one, a refusal
    /// could not be dead-lettered alone).
    fn check(&self, record: &Record) -> Result<(), SinkError> {
        let limit = self.settings.message_limit.bytes();
        let size = sizing::wire_size(record);
        if size <= limit {
            return Ok(());
        }
        let topic = record
            .headers
            .get_str(TOPIC_HEADER)
            .unwrap_or(&self.settings.topic);
        Err(producer_size_failure(topic, size, limit).into_sink(&self.name))
    }

    fn transactional_target(&self) -> Option<TransactionalTarget> {
        Some(TransactionalTarget {
            kind: crate::KIND,
            cluster: self.settings.connection.bootstrap_servers.clone(),
            destination: self.settings.topic.clone(),
        })
    }

    async fn flush(&self) -> Result<(), SinkError> {
        let producer = self.producer();
        let flushed = tokio::task::spawn_blocking(move || producer.flush(FLUSH_TIMEOUT))
            .await
            .map_err(|e| SinkError::Unavailable {
                sink_name: self.name.to_string(),
                message: format!("the flush task failed: {e}"),
            })?;
        flushed.map_err(|e| SinkError::Unavailable {
            sink_name: self.name.to_string(),
            message: format!("records still unacknowledged after {FLUSH_TIMEOUT:?}: {e}"),
        })
    }
}

/// Logs a refusal of the topic's ACLs at error, once per sink: it is
/// retried like an outage, but only an operator can end it.
fn report_auth_once(reported: &AtomicBool, name: &str, error: &KafkaError, failure: &Failure) {
    if code_of(error).is_some_and(is_auth_error) && !reported.swap(true, Ordering::Relaxed) {
        tracing::error!(sink = %name, %failure, "Kafka refuses this producer the topic; writes are retried until the ACLs allow them");
    }
}

/// `settings` with the producer's `message.max.bytes` decided: the user's
/// property if set, else the topic's `max.message.bytes` as the cluster
/// reports it (see [`sizing`]).
async fn sized(settings: &SinkSettings) -> SinkSettings {
    let user = settings
        .connection
        .properties
        .iter()
        .find(|(key, _)| key == PRODUCER_MESSAGE_MAX_BYTES)
        .map(|(_, value)| value.as_str());
    let topic_limit = match user {
        Some(_) => None,
        None => {
            let timeout = settings.connection.connect_timeout;
            sizing::topic_max_message_bytes(settings, &settings.topic, timeout).await
        }
    };
    let mut sized = settings.clone();
    sized.message_limit = sizing::decide(user, topic_limit.as_deref());
    sized
}
