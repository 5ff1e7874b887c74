//! The JetStream sink: publishes that resolve on the stream's publish
//! acknowledgement.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream as js;
use async_nats::jetstream::context::ContextBuilder;
use async_trait::async_trait;
use spate_connector::{PendingWrite, Record, Sink, SinkBuilder, SinkError, TransactionalTarget};

use crate::connection::ConnectSettings;
use crate::nats_headers;

pub(super) struct JetStreamSinkBuilder {
    pub(super) subject: String,
    pub(super) ack_timeout: Duration,
    pub(super) connect: ConnectSettings,
}

#[async_trait]
impl SinkBuilder for JetStreamSinkBuilder {
    async fn build(&self) -> Result<Box<dyn Sink>, SinkError> {
        let name = format!("jetstream:{}", self.subject);
        let client = self.connect.connect_sink(&name).await?;
        let context = ContextBuilder::new()
            .timeout(self.ack_timeout)
            .build(client);
        Ok(Box::new(JetStreamSink {
            name: Arc::from(name),
            cluster: self.connect.display_url(),
            subject: async_nats::Subject::from(self.subject.as_str()),
            context,
        }))
    }

    /// Connects as `build` does and checks that a stream captures the
    /// subject (else every publish would fail); publishes nothing.
    async fn check(&self) -> Result<(), SinkError> {
        let name = format!("jetstream:{}", self.subject);
        let client = self.connect.connect_sink(&name).await?;
        let context = ContextBuilder::new()
            .timeout(self.ack_timeout)
            .build(client);
        context
            .stream_by_subject(self.subject.as_str())
            .await
            .map(drop)
            .map_err(|e| SinkError::Unavailable {
                sink_name: name,
                message: format!(
                    "no stream at `{}` captures subject `{}` ({e}); create one (e.g. `nats stream add --subjects {}`)",
                    self.connect.display_url(),
                    self.subject,
                    self.subject
                ),
            })
    }

    fn target(&self) -> Option<TransactionalTarget> {
        Some(TransactionalTarget {
            kind: "jetstream",
            cluster: self.connect.display_url(),
            destination: self.subject.clone(),
        })
    }
}

/// Publishes records to one subject captured by a JetStream stream.
pub struct JetStreamSink {
    /// Shared with every pending publish ack (no copy per record).
    name: Arc<str>,
    /// The server URL as configured, naming the cluster for exactly-once.
    cluster: String,
    subject: async_nats::Subject,
    context: js::Context,
}

/// True when the stream refused the message as larger than its
/// `max_msg_size` (JetStream error code 10054).
fn exceeds_stream_limit(e: &js::context::PublishError) -> bool {
    std::error::Error::source(e)
        .and_then(|source| source.downcast_ref::<js::Error>())
        .is_some_and(|error| error.error_code() == js::ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM)
}

/// Classifies a publish failure: too large (for the server or the stream)
/// is a rejection naming the limit to raise, everything else may succeed
/// later.
fn publish_error(
    sink_name: &str,
    subject: &async_nats::Subject,
    e: js::context::PublishError,
) -> SinkError {
    let error = publish_error_kind(sink_name, subject, e);
    spate_connector::internal_events::ProduceError {
        connector: "jetstream",
        name: sink_name,
        error: &error,
        context: "JetStream publish failed",
    }
    .emit();
    error
}

/// The sink error for a failed publish or publish acknowledgement.
fn publish_error_kind(
    sink_name: &str,
    subject: &async_nats::Subject,
    e: js::context::PublishError,
) -> SinkError {
    use js::context::PublishErrorKind as Kind;
    match e.kind() {
        Kind::MaxPayloadExceeded => SinkError::Rejected {
            sink_name: sink_name.to_owned(),
            message: format!(
                "{e}; raise the NATS server's `max_payload` (server configuration), or make the message smaller"
            ),
        },
        Kind::Other if exceeds_stream_limit(&e) => SinkError::Rejected {
            sink_name: sink_name.to_owned(),
            message: format!(
                "the stream capturing `{subject}` refused the message as larger than its `max_msg_size` ({e}); raise the stream's `max_msg_size` (e.g. `nats stream edit <stream> --max-msg-size …`), or make the message smaller"
            ),
        },
        Kind::StreamNotFound => SinkError::Unavailable {
            sink_name: sink_name.to_owned(),
            message: format!(
                "no stream captures subject `{subject}`; create one whose subjects include it"
            ),
        },
        _ => SinkError::Unavailable {
            sink_name: sink_name.to_owned(),
            message: format!("publish not acknowledged: {e}"),
        },
    }
}

#[async_trait]
impl Sink for JetStreamSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn transactional_target(&self) -> Option<TransactionalTarget> {
        Some(TransactionalTarget {
            kind: "jetstream",
            cluster: self.cluster.clone(),
            destination: self.subject.to_string(),
        })
    }

    async fn write(&self, record: Record) -> Result<(), SinkError> {
        self.send(record).await?.await
    }

    /// Publishes (the client keeps publish order) and returns the publish
    /// ack to wait for, so the engine can start the partition's next event
    /// while this one's ack is on its way.
    async fn send(&self, record: Record) -> Result<PendingWrite, SinkError> {
        let headers = nats_headers(record.key.as_ref(), &record.headers).map_err(|message| {
            SinkError::Rejected {
                sink_name: self.name.to_string(),
                message,
            }
        })?;
        let ack = match headers {
            Some(headers) => {
                self.context
                    .publish_with_headers(self.subject.clone(), headers, record.payload)
                    .await
            }
            None => {
                self.context
                    .publish(self.subject.clone(), record.payload)
                    .await
            }
        }
        .map_err(|e| publish_error(&self.name, &self.subject, e))?;
        let (name, subject) = (self.name.clone(), self.subject.clone());
        Ok(Box::pin(async move {
            ack.await
                .map(|_| ())
                .map_err(|e| publish_error(&name, &subject, e))
        }))
    }
}
