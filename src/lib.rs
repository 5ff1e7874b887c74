//! spate runs functions subscribed to event streams.
//!
//! A pipeline file binds sources (Kafka, NATS, JetStream, MQTT, files, a
//! synthetic generator) to handler functions and says where outputs and
//! failures go. The engine fans events out to handler tasks by partition or
//! key, bounds what it holds in memory by pausing sources, retries with
//! backoff, dead-letters what cannot be handled, and commits a source
//! position only when every event below it is finished.

pub mod engine;
pub mod format;
pub mod handler;
pub mod observability;
pub mod pipeline;
pub mod runtime;
pub mod serve;
pub mod testing;

pub use handler::{Context, ErrorKind, Handler, HandlerError, Output, Registry};
pub use runtime::Runtime;
pub use spate_connector::{Event, Headers, Record};
