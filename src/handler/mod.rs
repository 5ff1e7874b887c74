//! Handlers: the functions spate runs for each event, and the registry that
//! names them.
//!
//! A handler receives one decoded [`Event`] and returns zero or more
//! [`Output`]s, or a [`HandlerError`] that says whether trying again can help.
//! Retries, timeouts and dead-lettering are the engine's job, not the
//! handler's.

pub mod builtin;
pub mod expr;
pub mod http;
mod registry;

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use spate_connector::{Event, Headers, Record};

pub use registry::{BuiltinHandler, HandlerEntry, Registry};

/// What a handler knows about the call besides the event.
#[derive(Debug, Clone)]
pub struct Context {
    /// The function's name from the pipeline file.
    pub function: Arc<str>,
    /// 1 for the first attempt, 2 for the first retry, …
    pub attempt: u32,
}

/// One output of a handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The record to write.
    pub record: Record,
    /// Which declared output to write it to (`name:` of the output); `None`
    /// writes it to every declared output.
    pub to: Option<Arc<str>>,
}

impl Output {
    /// An output with this payload for every declared output.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            record: Record::from_payload(payload),
            to: None,
        }
    }

    /// An output that keeps the event's key, headers and timestamp.
    pub fn from_event(event: &Event, payload: impl Into<Bytes>) -> Self {
        Self {
            record: Record {
                key: event.key.clone(),
                payload: payload.into(),
                headers: event.headers.clone(),
                timestamp_ms: event.timestamp_ms,
            },
            to: None,
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.record.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: impl Into<Bytes>) -> Self {
        self.record.headers.push(name, value);
        self
    }

    /// Routes the output to one named output.
    pub fn to(mut self, output: &str) -> Self {
        self.to = Some(Arc::from(output));
        self
    }
}

/// Whether a failed attempt is worth repeating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A passing fault (a timeout, a dependency down): retry with backoff.
    Retryable,
    /// The event itself is bad (undecodable, invalid): dead-letter at once.
    Permanent,
}

/// A handler's failure, with whether to retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    /// Retry or not.
    pub kind: ErrorKind,
    /// What went wrong; it ends up in the dead letter's `spate-error` header.
    pub message: String,
}

impl HandlerError {
    /// A failure that a later attempt may not repeat.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Retryable,
            message: message.into(),
        }
    }

    /// A failure that will repeat on every attempt: dead-letter the event.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            message: message.into(),
        }
    }

    /// True when the engine should try again.
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Retryable
    }
}

/// A function the engine can run for each event.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one event.
    async fn handle(&self, event: Event, ctx: &Context) -> Result<Vec<Output>, HandlerError>;
}

/// Lets plain `async fn(Event, &Context) -> Result<Vec<Output>, HandlerError>`
/// items be registered as handlers.
pub trait HandlerFn<'a>: Send + Sync + 'static {
    /// The future the function returns.
    type Future: Future<Output = Result<Vec<Output>, HandlerError>> + Send + 'a;
    /// Calls the function.
    fn call(&self, event: Event, ctx: &'a Context) -> Self::Future;
}

impl<'a, F, Fut> HandlerFn<'a> for F
where
    F: Fn(Event, &'a Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<Output>, HandlerError>> + Send + 'a,
{
    type Future = Fut;
    fn call(&self, event: Event, ctx: &'a Context) -> Fut {
        self(event, ctx)
    }
}

/// Adapts a [`HandlerFn`] to [`Handler`].
pub struct FnHandler<F>(pub F);

#[async_trait]
impl<F> Handler for FnHandler<F>
where
    F: for<'a> HandlerFn<'a>,
{
    async fn handle(&self, event: Event, ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        self.0.call(event, ctx).await
    }
}

/// Headers for a copy of an event's metadata, used by built-ins.
pub(crate) fn passthrough_output(event: Event) -> Output {
    let Event {
        key,
        payload,
        headers,
        timestamp_ms,
        ..
    } = event;
    Output {
        record: Record {
            key,
            payload,
            headers: if headers.is_empty() {
                Headers::new()
            } else {
                headers
            },
            timestamp_ms,
        },
        to: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spate_connector::Position;

    async fn shout(event: Event, ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        let text = String::from_utf8_lossy(&event.payload).to_uppercase();
        Ok(vec![Output::from_event(
            &event,
            format!("{text} from {}", ctx.function),
        )])
    }

    #[tokio::test]
    async fn a_plain_async_fn_registers_and_runs() {
        let mut registry = Registry::empty();
        registry.register("shout", shout);
        let Some(HandlerEntry::Function(handler)) = registry.handler("shout") else {
            panic!("not registered as a function");
        };
        let event = Event {
            key: Some(Bytes::from_static(b"k")),
            payload: Bytes::from_static(b"hi"),
            headers: Headers::new(),
            timestamp_ms: Some(5),
            position: Position {
                stream: Arc::from("s"),
                partition: 0,
                offset: 0,
            },
        };
        let ctx = Context {
            function: Arc::from("f"),
            attempt: 1,
        };
        let outputs = handler.handle(event, &ctx).await.unwrap();
        assert_eq!(outputs[0].record.payload, Bytes::from_static(b"HI from f"));
        assert_eq!(outputs[0].record.key, Some(Bytes::from_static(b"k")));
        assert_eq!(outputs[0].record.timestamp_ms, Some(5));
    }
}
