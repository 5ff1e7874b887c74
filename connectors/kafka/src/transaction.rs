//! The exactly-once session of a Kafka source: a transactional producer
//! whose transactions carry output records *and* the source group's
//! offsets (`send_offsets_to_transaction`), so both become visible to
//! `read_committed` readers together, or neither does.
//!
//! # Identity and fencing
//!
//! The producer's `transactional.id` is the source's `transactional_id`
//! if set, else `spate-{group_id}-{group_instance_id}`. One of the two is
//! required: the id must be the same after a restart, so that the new
//! process fences the old one (a zombie that still runs is refused by the
//! broker from then on). A process id or host name would change, and a
//! shared id would make the processes of one pipeline fence each other, so
//! spate does not guess; every process needs its own `group_instance_id`
//! (or `transactional_id`). The consumer's group metadata (member id and
//! generation) goes with every offset commit, so the broker also refuses
//! the offsets of a member that lost its partitions in a rebalance.
//!
//! # What the engine sees
//!
//! * `write` begins a transaction if none is open and queues the record
//!   (the header `spate-kafka-topic` sends it to another topic, as in the
//!   sink); a full local queue is waited out.
//! * `commit` sends the positions as the group's offsets and commits; with
//!   positions but no records it opens a transaction just for the offsets.
//! * Errors librdkafka marks fatal, and fencing, are
//!   [`TransactionError::Fatal`]; everything else is
//!   [`TransactionError::Abortable`].
//! * A record larger than its topic accepts is Fatal too: inside a
//!   transaction it can neither be written nor dead-lettered, so retrying
//!   would never end.
//!
//! The session uses the source's connection settings and `properties`;
//! the output sinks' own producer settings (`linger`, `compression`, …) do
//! not apply to records written through it. The source must read
//! `isolation: read_committed`, so that an exactly-once function never acts
//! on records of aborted upstream transactions.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset};
use spate_connector::internal_events::{CommitTimer, ProduceError};
use spate_connector::{
    CommitPosition, Record, SourceError, StoredPosition, TransactionError, TransactionSession,
    TransactionalTarget,
};

use crate::config::cluster_identity;
use crate::consumer::{KafkaConsumer, Shared};
use crate::error::{code_of, producer_failure, transaction_failure, FailureKind};
use crate::sink::{prepare, QUEUE_FULL_WAIT};
use crate::sizing::{MESSAGE_MAX_BYTES_RANGE, PRODUCER_MESSAGE_MAX_BYTES};
use crate::source::SourceSettings;

/// How long one blocking transaction call (init, send offsets, commit,
/// abort) may take before it fails retryably.
pub const TRANSACTION_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The transactional producer's context: remembers the first failed
/// delivery of the open transaction for the commit's error message.
pub struct TransactionContext {
    name: String,
    first_failure: Mutex<Option<String>>,
}

impl ClientContext for TransactionContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let error = format!("{error} ({reason})");
        ProduceError {
            connector: "kafka",
            name: &self.name,
            error: &error,
            context: "Kafka transactional producer error",
        }
        .emit();
    }
}

impl ProducerContext for TransactionContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            let mut first = self.first_failure.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert_with(|| error.to_string());
        }
    }
}

type TransactionalProducer = ThreadedProducer<TransactionContext>;

/// A Kafka source's exactly-once session.
pub struct KafkaTransaction {
    name: String,
    transactional_id: String,
    servers: String,
    producer: Arc<TransactionalProducer>,
    /// Weak: closing the consumer (leaving the group) blocks, and belongs
    /// to the source's poll thread, never to whoever drops the session.
    consumer: Weak<KafkaConsumer>,
    shared: Arc<Shared>,
    /// A transaction is open (begun, not yet committed or aborted).
    open: bool,
}

impl KafkaTransaction {
    /// Creates the transactional producer and runs `init_transactions`,
    /// which fences any older producer with the same id.
    pub(crate) async fn open(
        source_name: &str,
        settings: Arc<SourceSettings>,
        consumer: Arc<KafkaConsumer>,
        shared: Arc<Shared>,
    ) -> Result<Self, SourceError> {
        let fatal = |message: String| SourceError::Fatal {
            source_name: source_name.to_owned(),
            message,
        };
        let transactional_id = match (&settings.transactional_id, &settings.group_instance_id) {
            (Some(id), _) => id.clone(),
            (None, Some(instance)) => format!("spate-{}-{instance}", settings.group_id),
            (None, None) => {
                return Err(fatal(
                    "`delivery: exactly_once` needs a transactional id that stays the same across restarts of this process: set `group_instance_id` (one per process) or `transactional_id` on the Kafka input".to_owned(),
                ))
            }
        };
        if !settings.read_committed {
            return Err(fatal(
                "`delivery: exactly_once` reads `isolation: read_committed` only; remove `isolation: read_uncommitted`".to_owned(),
            ));
        }
        let name = format!("kafka:{transactional_id}");
        let mut config = settings.connection.client_config();
        config
            .set("transactional.id", &transactional_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5");
        // The sinks' `check` (sized to each topic's `max.message.bytes`) is
        // what keeps a record too large out of a transaction, where it could
        // no longer be dead-lettered alone; this producer serves every
        // output topic, so it must not refuse less than any of them allows.
        if !settings.connection.has_property(PRODUCER_MESSAGE_MAX_BYTES) {
            config.set(
                PRODUCER_MESSAGE_MAX_BYTES,
                MESSAGE_MAX_BYTES_RANGE.end().to_string(),
            );
        }
        settings.connection.finish(&mut config);
        let context = TransactionContext {
            name: name.clone(),
            first_failure: Mutex::new(None),
        };
        let producer: TransactionalProducer = config
            .create_with_context(context)
            .map_err(|e| fatal(format!("cannot create the transactional producer: {e}")))?;
        let producer = Arc::new(producer);
        let servers = settings.connection.bootstrap_servers.clone();
        let initialized = {
            let producer = producer.clone();
            tokio::task::spawn_blocking(move || {
                producer.init_transactions(TRANSACTION_CALL_TIMEOUT)
            })
            .await
            .map_err(|e| fatal(format!("init_transactions task failed: {e}")))?
        };
        if let Err(error) = initialized {
            let message = format!(
                "initializing transactions for `{transactional_id}` at `{servers}` failed: {error}"
            );
            let retriable = matches!(&error, KafkaError::Transaction(e) if e.is_retriable())
                || code_of(&error) == Some(RDKafkaErrorCode::OperationTimedOut);
            return Err(if retriable {
                SourceError::Unavailable {
                    source_name: source_name.to_owned(),
                    message,
                }
            } else {
                fatal(format!("{message}; the cluster must support transactions (Kafka 2.5 or later) and allow this transactional id"))
            });
        }
        tracing::info!(session = %name, "transactional producer ready");
        Ok(Self {
            name,
            transactional_id,
            servers,
            producer,
            consumer: Arc::downgrade(&consumer),
            shared,
            open: false,
        })
    }

    fn error(&self, error: &KafkaError) -> TransactionError {
        transaction_failure(error, &self.name, &self.transactional_id)
    }

    fn begin(&mut self) -> Result<(), TransactionError> {
        if self.open {
            return Ok(());
        }
        self.producer
            .begin_transaction()
            .map_err(|e| self.error(&e))?;
        if let Ok(mut first) = self.producer.context().first_failure.lock() {
            *first = None;
        }
        self.open = true;
        Ok(())
    }

    /// Commits offsets with no records through the consumer group.
    async fn commit_offsets_only(
        &self,
        offsets: rdkafka::TopicPartitionList,
    ) -> Result<(), TransactionError> {
        if offsets.count() == 0 {
            return Ok(());
        }
        let consumer = self
            .consumer
            .upgrade()
            .ok_or_else(|| TransactionError::Fatal {
                session: self.name.clone(),
                message: "the source's consumer is closed".to_owned(),
            })?;
        let committed = tokio::task::spawn_blocking(move || {
            consumer.commit(&offsets, rdkafka::consumer::CommitMode::Sync)
        })
        .await
        .map_err(|e| TransactionError::Abortable {
            session: self.name.clone(),
            message: format!("the commit task failed: {e}"),
        })?;
        committed.map_err(|e| TransactionError::Abortable {
            session: self.name.clone(),
            message: format!("committing offsets (no records in this transaction) failed: {e}"),
        })
    }

    /// Runs a blocking producer call on tokio's blocking pool.
    async fn blocking(
        &self,
        call: impl FnOnce(&TransactionalProducer) -> Result<(), KafkaError> + Send + 'static,
    ) -> Result<(), TransactionError> {
        let producer = self.producer.clone();
        let result = tokio::task::spawn_blocking(move || call(&producer))
            .await
            .map_err(|e| TransactionError::Abortable {
                session: self.name.clone(),
                message: format!("the transaction task failed: {e}"),
            })?;
        result.map_err(|e| self.error(&e))
    }

    /// Commits the open transaction with `positions` (or, with nothing
    /// produced, the positions alone).
    async fn commit_transaction(
        &mut self,
        positions: &[CommitPosition],
    ) -> Result<(), TransactionError> {
        let (offsets, unknown) = self.shared.interner().list(positions.iter().map(|p| {
            (
                p.partition,
                Offset::Offset(i64::try_from(p.next_offset).unwrap_or(i64::MAX)),
            )
        }));
        if !unknown.is_empty() {
            tracing::warn!(session = %self.name, partitions = ?unknown, "positions of partitions the source never had are left out");
        }
        if !self.open {
            // No record to make atomic with the offsets: a plain group
            // commit, fenced by the group generation just as the
            // transactional one is (and Tansu 0.6 ignores offsets-only
            // transactions).
            return self.commit_offsets_only(offsets).await;
        }
        if offsets.count() > 0 {
            let metadata = self
                .consumer
                .upgrade()
                .and_then(|consumer| consumer.group_metadata())
                .ok_or_else(|| TransactionError::Fatal {
                    session: self.name.clone(),
                    message: "the source's consumer is closed or has no group metadata".to_owned(),
                })?;
            self.blocking(move |producer| {
                producer.send_offsets_to_transaction(&offsets, &metadata, TRANSACTION_CALL_TIMEOUT)
            })
            .await?;
        }
        let committed = self
            .blocking(|producer| producer.commit_transaction(TRANSACTION_CALL_TIMEOUT))
            .await;
        match committed {
            Ok(()) => {
                self.open = false;
                Ok(())
            }
            Err(TransactionError::Abortable { session, message }) => {
                let first = self
                    .producer
                    .context()
                    .first_failure
                    .lock()
                    .ok()
                    .and_then(|f| f.clone());
                Err(TransactionError::Abortable {
                    session,
                    message: match first {
                        Some(first) => format!("{message} (first failed record: {first})"),
                        None => message,
                    },
                })
            }
            Err(fatal) => Err(fatal),
        }
    }
}

#[async_trait]
impl TransactionSession for KafkaTransaction {
    fn name(&self) -> &str {
        &self.name
    }

    fn accepts(&self, target: &TransactionalTarget) -> Result<(), String> {
        accepts(&self.servers, target)
    }

    async fn write(
        &mut self,
        target: &TransactionalTarget,
        record: Record,
    ) -> Result<(), TransactionError> {
        let prepared =
            prepare(&record, &target.destination).map_err(|f| TransactionError::Fatal {
                session: self.name.clone(),
                message: format!(
                    "{f}; inside an exactly-once transaction the record cannot be dead-lettered"
                ),
            })?;
        self.begin()?;
        let mut base = BaseRecord::to(prepared.topic).payload(record.payload.as_ref());
        if let Some(headers) = prepared.headers {
            base = base.headers(headers);
        }
        if let Some(key) = record.key.as_deref() {
            base = base.key(key);
        }
        if let Some(ts) = record.timestamp_ms {
            base = base.timestamp(ts);
        }
        loop {
            match self.producer.send(base) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    base = back;
                    tokio::time::sleep(QUEUE_FULL_WAIT).await;
                }
                Err((error, _)) => {
                    let failure = producer_failure(&error, &self.servers, prepared.topic);
                    if failure.kind == FailureKind::Rejected {
                        return Err(TransactionError::Fatal {
                            session: self.name.clone(),
                            message: format!("{failure}; inside an exactly-once transaction the record cannot be dead-lettered, so the function stops"),
                        });
                    }
                    return Err(self.error(&error));
                }
            }
        }
    }

    async fn commit(
        &mut self,
        positions: &[CommitPosition],
        _stored: &[StoredPosition],
    ) -> Result<(), TransactionError> {
        if positions.is_empty() && !self.open {
            return Ok(());
        }
        let timer = CommitTimer::start("kafka");
        let outcome = self.commit_transaction(positions).await;
        timer.finish(&self.name, &outcome, "Kafka transaction commit failed");
        outcome
    }

    async fn abort(&mut self) -> Result<(), TransactionError> {
        if !self.open {
            return Ok(());
        }
        self.blocking(|producer| producer.abort_transaction(TRANSACTION_CALL_TIMEOUT))
            .await?;
        self.open = false;
        Ok(())
    }
}

/// Whether a Kafka input on `servers` can hold `target`'s records in its
/// transaction: only Kafka records of the same cluster.
pub(crate) fn accepts(servers: &str, target: &TransactionalTarget) -> Result<(), String> {
    if target.kind != crate::KIND {
        return Err(format!(
            "a Kafka transaction can only hold Kafka records, not `{}` ones",
            target.kind
        ));
    }
    if cluster_identity(&target.cluster) != cluster_identity(servers) {
        return Err(format!(
            "the output writes to Kafka at `{}` but the input reads from `{servers}`; one transaction covers one cluster, so both need the same `bootstrap_servers`",
            target.cluster
        ));
    }
    Ok(())
}
