//! The contract between spate's engine and its connectors: what an event is,
//! what a source and a sink promise, and how a connector reads its own
//! configuration.
//!
//! Arrows point one way: connector crates depend on this crate, never on the
//! engine. The delivery guarantees of the whole product rest on the rules
//! written on [`Source`] and [`Sink`]; a connector that breaks them breaks
//! at-least-once for every pipeline that uses it.

pub mod config;
pub mod dead_letter;
pub mod error;
pub mod event;
pub mod factory;
pub mod sink;
pub mod source;
pub mod state;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod transaction;

pub use config::{ConfigError, ConfigNode, ConfigReader, NodeKind, Span};
pub use error::{SinkError, SourceError};
pub use event::{Event, Headers, PartitionId, Position, Record};
pub use factory::{
    Capabilities, ConfiguredCapabilities, ConnectorFactory, SinkBuilder, SourceBuilder,
};
pub use sink::{PendingWrite, SessionOwner, Sink};
pub use source::{CommitPosition, Source, SourceMessage, StoredPosition};
pub use state::{StateChange, StateEntry};
pub use transaction::{
    TransactionError, TransactionSession, TransactionalTarget, RECORD_ID_HEADER,
};
