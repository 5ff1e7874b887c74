//! The sink half of the contract.
//!
//! # The delivery rule a sink must keep
//!
//! [`Sink::write`] resolves `Ok` only once the record is *acknowledged*:
//! durable by the sink's own standard (a Kafka delivery report, a JetStream
//! publish ack, a database commit, a file write handed to the OS and flushed).
//! The engine counts an event finished — and lets its offset be committed —
//! only after every write for it resolved `Ok`, so a sink that acknowledges
//! early turns at-least-once into at-most-once.
//!
//! Writes may be called concurrently from many handler tasks; a sink is free
//! to batch them internally (group commit) as long as each call resolves only
//! when its own record is acknowledged.
//!
//! # Pipelined writes
//!
//! Waiting for each acknowledgement before the next event of a partition may
//! start caps a partition at one event per round trip. A sink that keeps the
//! order of what it accepts (a Kafka producer with idempotence) overrides
//! [`Sink::send`]: it returns as soon as the record is *accepted in order*
//! — queued behind every record accepted before it — with a
//! [`PendingWrite`] that resolves on the acknowledgement. The engine then
//! starts the partition's next event at once and counts the event finished
//! (and its position committable) only when the pending write resolves
//! `Ok`. The default `send` waits for the whole `write`.

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;

use crate::error::SinkError;
use crate::event::Record;
use crate::transaction::{TransactionSession, TransactionalTarget};

/// A write accepted in order and not yet acknowledged; resolves `Ok` once
/// the record is durable (see [`Sink::send`]).
pub type PendingWrite = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send>>;

/// Whose positions and state an exactly-once session opened by a sink
/// stores: the key of its rows in the database's offsets and state tables.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionOwner {
    /// The pipeline (the pipeline file's name without `.yaml`).
    pub pipeline: String,
    /// The function.
    pub function: String,
    /// The source, as it names itself (`kind:stream`).
    pub source: String,
}

/// A destination for handler outputs and dead letters.
#[async_trait]
pub trait Sink: Send + Sync {
    /// A short name for logs and errors (`kind:target`).
    fn name(&self) -> &str;

    /// Writes one record and resolves once it is acknowledged.
    async fn write(&self, record: Record) -> Result<(), SinkError>;

    /// Accepts one record in order and returns what resolves on its
    /// acknowledgement (see the module docs). An `Err` here means the record
    /// was not accepted at all. The default waits for [`Sink::write`].
    async fn send(&self, record: Record) -> Result<PendingWrite, SinkError> {
        self.write(record).await?;
        Ok(Box::pin(std::future::ready(Ok(()))))
    }

    /// Where this sink's records go inside an exactly-once transaction, or
    /// `None` if it cannot take part in one (see [`crate::transaction`]).
    fn transactional_target(&self) -> Option<TransactionalTarget> {
        None
    }

    /// Checks that a record could be written, before the engine stages it
    /// in an exactly-once transaction, where a refusal at commit could no
    /// longer be dead-lettered alone. [`SinkError::Rejected`] of an output
    /// sends the event to its dead letter (`output-rejected`) with the
    /// message; of a dead letter, has it staged in reduced form (see
    /// [`SinkError::Rejected`]). The default accepts.
    fn check(&self, record: &Record) -> Result<(), SinkError> {
        let _ = record;
        Ok(())
    }

    /// Opens an exactly-once session that stores the source's positions
    /// (and stateful handlers' state) in this sink's own store, in the same
    /// transactions as the records: the database half of `exactly_once`,
    /// for a source that resumes from them
    /// ([`Source::resume_from`](crate::Source::resume_from)). Sinks whose
    /// capabilities claim `durable_positions` implement it; the default
    /// refuses.
    async fn begin_exactly_once(
        &self,
        owner: &SessionOwner,
    ) -> Result<Box<dyn TransactionSession>, SinkError> {
        let _ = owner;
        Err(SinkError::Rejected {
            sink_name: self.name().to_owned(),
            message: "this sink cannot store source positions".to_owned(),
        })
    }

    /// Makes everything acknowledged so far durable and releases buffers;
    /// called on shutdown.
    async fn flush(&self) -> Result<(), SinkError> {
        Ok(())
    }
}
