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

use async_trait::async_trait;

use crate::error::SinkError;
use crate::event::Record;
use crate::transaction::TransactionalTarget;

/// A destination for handler outputs and dead letters.
#[async_trait]
pub trait Sink: Send + Sync {
    /// A short name for logs and errors (`kind:target`).
    fn name(&self) -> &str;

    /// Writes one record and resolves once it is acknowledged.
    async fn write(&self, record: Record) -> Result<(), SinkError>;

    /// Where this sink's records go inside an exactly-once transaction, or
    /// `None` if it cannot take part in one (see [`crate::transaction`]).
    fn transactional_target(&self) -> Option<TransactionalTarget> {
        None
    }

    /// Makes everything acknowledged so far durable and releases buffers;
    /// called on shutdown.
    async fn flush(&self) -> Result<(), SinkError> {
        Ok(())
    }
}
