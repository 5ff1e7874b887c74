//! The handler API: what a function spate runs for each event sees and
//! returns — [`Handler`], its [`Context`], its [`Output`]s, its
//! [`HandlerError`] — and the [`HandlerState`] contract that makes a
//! stateful handler exact under `exactly_once`.
//!
//! A handler receives one decoded [`Event`] and returns zero or more
//! [`Output`]s, or a [`HandlerError`] that says whether trying again can help.
//! Retries, timeouts and dead-lettering are the engine's job, not the
//! handler's.

use std::future::Future;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use crate::event::{Event, PartitionId, Record};
use crate::state::StateChange;

/// What a handler knows about the call besides the event, and where a
/// stateful handler records the state changes the call made.
#[derive(Debug)]
pub struct Context {
    /// The function's name from the pipeline file.
    pub function: Arc<str>,
    /// 1 for the first attempt, 2 for the first retry, …
    pub attempt: u32,
    /// Index (in the function's `inputs`) of the input the event came from.
    pub input: usize,
    state_changes: Mutex<Vec<StateChange>>,
}

impl Context {
    /// The context of attempt `attempt` of function `function`, for an
    /// event of its first input.
    pub fn new(function: Arc<str>, attempt: u32) -> Self {
        Self {
            function,
            attempt,
            input: 0,
            state_changes: Mutex::new(Vec::new()),
        }
    }

    /// The same context for an event of input `input`.
    pub fn with_input(mut self, input: usize) -> Self {
        self.input = input;
        self
    }

    /// Records that this call set `key`'s state to `value` (the key's whole
    /// state). Only a handler that exposes [`Handler::state`] records
    /// changes; the engine commits them with the event under
    /// `exactly_once` (see [`HandlerState`]) and ignores them otherwise.
    pub fn put_state(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.changes().push(StateChange {
            key: key.into(),
            value: Some(value.into()),
        });
    }

    /// Records that this call removed `key`'s state.
    pub fn remove_state(&self, key: impl Into<Bytes>) {
        self.changes().push(StateChange {
            key: key.into(),
            value: None,
        });
    }

    /// Takes the state changes recorded so far (the engine's side).
    pub fn take_state_changes(&self) -> Vec<StateChange> {
        std::mem::take(&mut *self.changes())
    }

    fn changes(&self) -> std::sync::MutexGuard<'_, Vec<StateChange>> {
        self.state_changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// State a handler keeps between events, per input partition, that the
/// engine can give back after a restart or a rebalance.
///
/// The contract, which makes `exactly_once` exact for a stateful handler:
///
/// 1. The handler keeps its state per (input, partition, key) and changes a
///    key's state only while handling an event of that key, recording the
///    key's whole new state with [`Context::put_state`] (or its removal
///    with [`Context::remove_state`]) in the same call. A call that returns
///    an error changes nothing.
/// 2. The engine commits each event's changes together with the event's
///    position (in offset order, once the watermark passes it) and, when a
///    partition is assigned, calls [`HandlerState::restore`] with that
///    partition's committed state before any of its events; when a
///    partition is let go, [`HandlerState::forget`].
/// 3. Events of one key run one at a time in offset order (`ordering: key`
///    or `partition`), so the last committed change of a key holds exactly
///    the committed events of that key.
pub trait HandlerState: Send + Sync {
    /// Replaces the state of one partition of one input with committed
    /// entries (key, value as recorded).
    fn restore(&self, input: usize, partition: PartitionId, entries: Vec<(Bytes, Bytes)>);

    /// Drops the state of one partition of one input: it is no longer this
    /// process's, or its uncommitted part must not be counted again.
    fn forget(&self, input: usize, partition: PartitionId);
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
    /// What went wrong; it ends up in the dead letter's `spate-dlq-error`
    /// header.
    pub message: String,
    /// The dead letter's `spate-dlq-reason` when the event is given up on
    /// (`late`, `invalid`, …); `handler-error` when `None`.
    pub reason: Option<&'static str>,
}

impl HandlerError {
    /// A failure that a later attempt may not repeat.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Retryable,
            message: message.into(),
            reason: None,
        }
    }

    /// A failure that will repeat on every attempt: dead-letter the event.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            message: message.into(),
            reason: None,
        }
    }

    /// The same error with its dead-letter reason word.
    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
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

    /// The state this handler keeps between events, if it keeps any (see
    /// [`HandlerState`]). The default is none.
    fn state(&self) -> Option<&dyn HandlerState> {
        None
    }

    /// True when [`Handler::handle`] only computes: it never waits on I/O,
    /// a timer or a lock another task holds, so its future is ready when
    /// first polled. The engine may then run it on the task that already
    /// holds the event instead of handing the event to a handler task (it
    /// still does when the handler's measured cost per event is not
    /// small). The default is false: the handler runs on the task pool,
    /// whose size follows the load.
    fn is_cpu_only(&self) -> bool {
        false
    }
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

/// Adapts a synchronous `Fn(Event, &Context) -> Result<Vec<Output>,
/// HandlerError>` to [`Handler`]: a CPU-only handler (see
/// [`Handler::is_cpu_only`]), which the engine may run without a hand-off.
pub struct SyncFnHandler<F>(pub F);

#[async_trait]
impl<F> Handler for SyncFnHandler<F>
where
    F: Fn(Event, &Context) -> Result<Vec<Output>, HandlerError> + Send + Sync + 'static,
{
    async fn handle(&self, event: Event, ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        (self.0)(event, ctx)
    }

    fn is_cpu_only(&self) -> bool {
        true
    }
}
