//! spate's built-in handlers, each registered like a connector through a
//! [`HandlerFactory`] (the contract's): `passthrough`, `filter`, `map`,
//! `route` (jq expressions, [`expr`]), `http` ([`http`]) and `window`
//! ([`window`]). [`handlers()`] lists them; the binary registers that list.

pub mod builtin;
pub mod expr;
pub mod http;
mod mapping;
#[cfg(test)]
mod testing;
pub mod window;

use spate_connector::{Event, Headers, Record};

pub use builtin::handlers;
pub use spate_connector::handler::{
    Context, ErrorKind, FnHandler, Handler, HandlerError, HandlerFn, HandlerState, Output,
    SyncFnHandler,
};
pub use spate_connector::handler_factory::HandlerFactory;

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
