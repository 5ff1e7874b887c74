//! Handlers: the functions spate runs for each event, and the registry that
//! names them.
//!
//! A handler receives one decoded [`Event`](spate_connector::Event) and returns zero or more
//! [`Output`]s, or a [`HandlerError`] that says whether trying again can help.
//! Retries, timeouts and dead-lettering are the engine's job, not the
//! handler's.

pub use spate_handlers::{builtin, expr, http, window};

pub use spate_connector::handler::{
    Context, ErrorKind, FnHandler, Handler, HandlerError, HandlerFn, HandlerState, Output,
    SyncFnHandler,
};

pub use crate::registry::Registry;
pub use spate_connector::handler_factory::HandlerFactory;
/// The name built-ins' factory trait had before it moved into the contract.
pub use spate_connector::handler_factory::HandlerFactory as BuiltinHandler;
pub use spate_loader::HandlerEntry;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use spate_connector::{Event, Headers};

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
