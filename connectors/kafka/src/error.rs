//! How librdkafka's errors become the contract's errors: each failure is
//! sorted into "trying again may help", "this can never work" (the record
//! or the configuration is wrong) or "this client is done", with a message
//! that names the cluster and says what to check.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use spate_connector::{SinkError, SourceError, TransactionError};
use thiserror::Error;

/// What kind of failure a librdkafka error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The cluster is unreachable or busy; the same call may work later.
    Retryable,
    /// This one record can never be written (too large, invalid topic).
    Rejected,
    /// The client cannot go on: misconfigured, unauthorized, fenced.
    Fatal,
}

/// A classified failure with an operator-facing message.
#[derive(Debug, Clone, Error)]
#[error("{message}")]
pub struct Failure {
    /// How to treat it.
    pub kind: FailureKind,
    /// What went wrong and what to do about it.
    pub message: String,
}

impl Failure {
    /// A retryable failure.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Retryable,
            message: message.into(),
        }
    }

    /// A fatal failure.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Fatal,
            message: message.into(),
        }
    }

    /// A rejected record.
    pub fn rejected(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Rejected,
            message: message.into(),
        }
    }

    /// As a source error (a rejection counts as fatal: sources have no
    /// records to reject).
    pub fn into_source(self, source_name: &str) -> SourceError {
        match self.kind {
            FailureKind::Retryable => SourceError::Unavailable {
                source_name: source_name.to_owned(),
                message: self.message,
            },
            FailureKind::Rejected | FailureKind::Fatal => SourceError::Fatal {
                source_name: source_name.to_owned(),
                message: self.message,
            },
        }
    }

    /// As a sink error (a fatal client error is retryable for a sink: the
    /// sink replaces its producer and the write can be tried again).
    pub fn into_sink(self, sink_name: &str) -> SinkError {
        match self.kind {
            FailureKind::Rejected => SinkError::Rejected {
                sink_name: sink_name.to_owned(),
                message: self.message,
            },
            FailureKind::Retryable | FailureKind::Fatal => SinkError::Unavailable {
                sink_name: sink_name.to_owned(),
                message: self.message,
            },
        }
    }
}

/// The error code inside a librdkafka error, if it has one.
pub fn code_of(error: &KafkaError) -> Option<RDKafkaErrorCode> {
    match error {
        KafkaError::Transaction(inner) => Some(inner.code()),
        other => other.rdkafka_error_code(),
    }
}

/// True for errors that mean the credentials or permissions are wrong.
pub fn is_auth_error(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::Authentication
            | C::SaslAuthenticationFailed
            | C::IllegalSASLState
            | C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
    )
}

/// Classifies an error a consumer reports while polling or committing.
pub fn consumer_failure(error: &KafkaError, servers: &str) -> Failure {
    use RDKafkaErrorCode as C;
    let fatal_client = matches!(error, KafkaError::MessageConsumptionFatal(_));
    let code = code_of(error);
    match code {
        _ if fatal_client => Failure::fatal(format!(
            "the Kafka consumer for `{servers}` hit a fatal error: {error}; restart the pipeline, and check the broker logs"
        )),
        Some(code) if is_auth_error(code) => Failure::fatal(format!(
            "Kafka at `{servers}` refused the credentials or permissions: {error}; check `sasl_*`/`tls_*` and the ACLs for the topics and the group"
        )),
        Some(C::FencedInstanceId) => Failure::fatal(format!(
            "another consumer joined the group with the same `group_instance_id` ({error}); give every process its own `group_instance_id`"
        )),
        Some(C::InvalidGroupId | C::InconsistentGroupProtocol) => Failure::fatal(format!(
            "Kafka at `{servers}` refused the consumer group: {error}; check `group_id` and that every member uses the same `assignment`"
        )),
        Some(C::UnknownTopicOrPartition | C::UnknownTopic) => Failure::retryable(format!(
            "a subscribed topic does not exist at `{servers}` yet ({error}); create it, consumption starts once it exists"
        )),
        Some(C::SSL) => Failure::fatal(format!(
            "TLS with Kafka at `{servers}` failed: {error}; check `tls_ca_file`, `tls_cert_file`, `tls_key_file` and that the brokers speak TLS on that port"
        )),
        _ => Failure::retryable(format!(
            "Kafka at `{servers}` is unavailable: {error}; librdkafka reconnects by itself"
        )),
    }
}

/// True for the errors that say a record (or its batch) is too large.
pub fn is_size_error(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge
    )
}

/// The rejection of a record librdkafka refused to enqueue as larger than
/// the producer's `message.max.bytes` (`limit`): the producer's setting is
/// the one to raise, not the topic's.
pub fn producer_size_failure(topic: &str, wire_size: u64, limit: u64) -> Failure {
    Failure::rejected(format!(
        "the record ({wire_size} bytes with key, headers and framing) is larger than this producer's `message.max.bytes` ({limit} bytes); raise `message.max.bytes` under the sink's `properties` (up to topic `{topic}`'s `max.message.bytes` on the broker), or make the record smaller"
    ))
}

/// Classifies an error of a producer's delivery report or send. A size
/// error here came from the broker: the topic's `max.message.bytes` is the
/// limit (see [`producer_size_failure`] for the producer's own).
pub fn producer_failure(error: &KafkaError, servers: &str, topic: &str) -> Failure {
    use RDKafkaErrorCode as C;
    match code_of(error) {
        Some(code) if is_size_error(code) => Failure::rejected(format!(
            "the broker refused the record as larger than topic `{topic}` accepts ({error}); raise the topic's `max.message.bytes` on the broker (e.g. `kafka-configs --alter --entity-type topics --entity-name {topic} --add-config max.message.bytes=…`), or make the record smaller"
        )),
        Some(C::InvalidTopic) => Failure::rejected(format!(
            "`{topic}` is not a valid Kafka topic name ({error})"
        )),
        Some(C::InvalidRecord | C::InvalidMessage | C::InvalidTimestamp) => {
            Failure::rejected(format!("topic `{topic}` refused the record: {error}"))
        }
        // Not about the record: every record to the topic fails alike, and
        // granting the ACL lets them all through, so it is retried (the
        // sink says so loudly, once).
        Some(code) if is_auth_error(code) => Failure::retryable(format!(
            "Kafka at `{servers}` does not allow writing to `{topic}` ({error}); check the credentials and the ACLs (retried until they allow it)"
        )),
        Some(C::MessageTimedOut) => Failure::retryable(format!(
            "Kafka at `{servers}` did not acknowledge the record for `{topic}` within `delivery_timeout` ({error})"
        )),
        _ => Failure::retryable(format!(
            "writing to `{topic}` at `{servers}` failed: {error}"
        )),
    }
}

/// Classifies an error of a transactional producer.
pub fn transaction_failure(
    error: &KafkaError,
    session: &str,
    transactional_id: &str,
) -> TransactionError {
    use RDKafkaErrorCode as C;
    // Everything that is neither fatal nor fencing is handled the same
    // way, whether librdkafka marks it abortable or retriable: the engine
    // aborts and writes the records again.
    let fatal = matches!(error, KafkaError::Transaction(inner) if inner.is_fatal());
    let code = code_of(error);
    let fenced = matches!(
        code,
        Some(
            C::Fenced
                | C::ProducerFenced
                | C::InvalidProducerEpoch
                | C::TransactionCoordinatorFenced
        )
    );
    if fenced {
        return TransactionError::Fatal {
            session: session.to_owned(),
            message: format!(
                "another process took over transactional id `{transactional_id}`; this one stops ({error})"
            ),
        };
    }
    if fatal || code.is_some_and(is_auth_error) {
        return TransactionError::Fatal {
            session: session.to_owned(),
            message: format!(
                "the transactional producer `{transactional_id}` cannot go on: {error}; check the broker logs and the transactional-id ACLs"
            ),
        };
    }
    TransactionError::Abortable {
        session: session.to_owned(),
        message: error.to_string(),
    }
}
