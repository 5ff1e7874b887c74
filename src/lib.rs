//! spate runs functions subscribed to event streams.
//!
//! A pipeline file binds sources (Kafka, NATS, JetStream, MQTT, files, a
//! synthetic generator) to handler functions and says where outputs and
//! failures go. The engine fans events out to handler tasks by partition or
//! key, bounds what it holds in memory by pausing sources, retries with
//! backoff, dead-letters what cannot be handled, and commits a source
//! position only when every event below it is finished.

pub use spate_engine as engine;
/// Payload formats (the `spate-formats` crate).
pub use spate_formats as format;
pub mod handler;
/// Metric names and per-function metric handles (the engine's).
pub use spate_engine::metrics as observability;
/// Pipeline files (the `spate-loader` crate).
pub use spate_loader as pipeline;
pub mod limits_table;
pub mod registry;
pub mod runtime;
pub mod serve;
pub mod testing;

/// An error and its causes on one line, `: `-separated, each cause left out
/// when the text before it already says it (errors whose message repeats
/// their source's, as `#[error("…: {0}")]` with `#[source]` does), so
/// nothing is printed twice.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let said = next.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = next.source();
    }
    text
}

pub use handler::{Context, ErrorKind, Handler, HandlerError, Output};
pub use registry::{registry, Registry};
pub use runtime::Runtime;
pub use spate_connector::{Event, Headers, Record};
