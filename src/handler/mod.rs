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
pub mod window;

use spate_connector::{Event, Headers, Record};

pub use spate_connector::handler::{
    Context, ErrorKind, FnHandler, Handler, HandlerError, HandlerFn, HandlerState, Output,
};

pub use registry::{BuiltinHandler, HandlerEntry, Registry};

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
    use std::sync::Arc;

    use bytes::Bytes;
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
        let ctx = Context::new(Arc::from("f"), 1);
        let outputs = handler.handle(event, &ctx).await.unwrap();
        assert_eq!(outputs[0].record.payload, Bytes::from_static(b"HI from f"));
        assert_eq!(outputs[0].record.key, Some(Bytes::from_static(b"k")));
        assert_eq!(outputs[0].record.timestamp_ms, Some(5));
    }
}
