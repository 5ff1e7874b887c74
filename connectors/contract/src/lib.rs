//! The whole plug-in contract of spate: what an event is, what a source and
//! a sink promise (and a transaction across them), how a connector reads
//! its own configuration, the handler API ([`Handler`], [`Context`],
//! [`Output`], [`HandlerError`], [`HandlerState`]) and the codec traits
//! ([`PayloadDecoder`], [`PayloadEncoder`]).
//!
//! Arrows point one way: connector, handler and format crates and the engine
//! depend on this crate; it depends on no other spate crate. The delivery guarantees of the whole product rest on the rules
//! written on [`Source`] and [`Sink`]; a connector that breaks them breaks
//! at-least-once for every pipeline that uses it.

pub mod codec;
pub mod config;
pub mod dead_letter;
pub mod error;
pub mod event;
pub mod factory;
pub mod format;
pub mod handler;
pub mod handler_factory;
pub mod internal_events;
pub mod sink;
pub mod source;
pub mod state;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod transaction;

pub use codec::{
    DecodeError, Decoded, EncodeError, PayloadDecoder, PayloadEncoder, SCHEMA_ID_HEADER,
};
pub use config::{ConfigError, ConfigNode, ConfigReader, NodeKind, Span};
pub use error::{SinkError, SourceError};
pub use event::{Event, Headers, PartitionId, Position, Record};
pub use factory::{
    Capabilities, ConfiguredCapabilities, ConnectorFactory, SinkBuilder, SourceBuilder,
};
pub use handler::{
    Context, ErrorKind, FnHandler, Handler, HandlerError, HandlerFn, HandlerState, Output,
    SyncFnHandler,
};
pub use sink::{PendingWrite, SessionOwner, Sink};
pub use source::{CommitPosition, Source, SourceMessage, StoredPosition};
pub use state::{StateChange, StateEntry};
pub use transaction::{
    TransactionError, TransactionSession, TransactionalTarget, RECORD_ID_HEADER,
};
