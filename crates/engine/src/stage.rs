//! The per-event stage machine: decode → handler (under its timeout, with
//! panics caught) → route → encode → outcome, a retry or a dead letter with
//! its reason.
//!
//! The engine's handler tasks ([`crate::worker`]) run these stages on a work
//! item, and `spate test` runs them offline through [`Offline`]: both decide
//! an event with the same functions, so the reasons and messages a user
//! sees in a dead letter are the same whichever ran it. Each stage returns
//! a [`Failed`] attempt instead of an error value of its own; [`next`] says
//! whether that failure is tried again or dead-lettered.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use spate_connector::{
    dead_letter, Context, DecodeError, ErrorKind, Event, Handler, Output, PayloadDecoder,
    PayloadEncoder, Record, SCHEMA_ID_HEADER,
};

use crate::backoff;
use crate::policy::RetryPolicy;

/// Dead-letter reason: the payload could not be decoded.
pub const DECODE_ERROR: &str = "decode-error";
/// Dead-letter reason: the handler failed without a reason of its own.
pub const HANDLER_ERROR: &str = "handler-error";
/// Dead-letter reason: the handler panicked.
pub const PANIC: &str = "panic";
/// Dead-letter reason: an attempt ran past the function's timeout.
pub const TIMEOUT: &str = "timeout";
/// Dead-letter reason: the handler routed to an output not declared.
pub const UNKNOWN_OUTPUT: &str = "unknown-output";
/// Dead-letter reason: an output does not fit its output's format.
pub const ENCODE_ERROR: &str = "encode-error";
/// Dead-letter reason: a sink refused an output for good.
pub const OUTPUT_REJECTED: &str = "output-rejected";

/// A failed attempt at one stage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Failed {
    /// The dead letter's reason, should it come to that.
    pub reason: &'static str,
    /// What went wrong, as the dead letter's error header says it.
    pub message: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
}

impl Failed {
    /// A failure with this reason and message.
    pub fn new(reason: &'static str, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            reason,
            message: message.into(),
            retryable,
        }
    }

    /// A payload that failed to decode.
    pub fn decode(error: DecodeError) -> Self {
        Self::new(DECODE_ERROR, error.message, error.retryable)
    }
}

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again after this backoff.
    Retry(Duration),
    /// Dead-letter the event.
    DeadLetter,
}

/// Whether a failure after `attempts` attempts is tried again (retryable
/// and attempts left under `retry.max_attempts`) or dead-lettered.
pub fn next(failed: &Failed, attempts: u32, retry: &RetryPolicy) -> Next {
    if failed.retryable && attempts < retry.max_attempts {
        Next::Retry(backoff::delay(
            retry.initial_backoff,
            retry.max_backoff,
            attempts,
        ))
    } else {
        Next::DeadLetter
    }
}

/// Stage 0: an event its source could not decode carries the reason in a
/// header; it is dead-lettered before any attempt.
pub fn carried_decode_error(event: &Event) -> Option<Failed> {
    event
        .headers
        .get_str(dead_letter::DECODE_ERROR)
        .map(|reason| Failed::new(DECODE_ERROR, reason, false))
}

/// Decode: replaces `event`'s payload with the decoded one (and records its
/// schema id). On failure the error is returned whole, so its dead-letter
/// headers can go on the event's dead letter.
pub async fn decode(decoder: &dyn PayloadDecoder, event: &mut Event) -> Result<(), DecodeError> {
    let decoded = decoder.decode(&event.payload).await?;
    event.payload = decoded.payload;
    if let Some(id) = decoded.schema_id {
        event.headers.set(SCHEMA_ID_HEADER, id.to_string());
    }
    Ok(())
}

/// Handle: one handler attempt under `timeout`, a panic caught and made a
/// permanent failure, a timeout a retryable one.
pub async fn call_handler(
    handler: &dyn Handler,
    event: Event,
    ctx: &Context,
    timeout: Duration,
) -> Result<Vec<Output>, Failed> {
    let call = AssertUnwindSafe(handler.handle(event, ctx)).catch_unwind();
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(Ok(outputs))) => Ok(outputs),
        Ok(Ok(Err(error))) => Err(Failed::new(
            error.reason.unwrap_or(HANDLER_ERROR),
            error.message,
            error.kind == ErrorKind::Retryable,
        )),
        Ok(Err(panic)) => Err(Failed::new(
            PANIC,
            format!("handler panicked: {}", panic_message(panic.as_ref())),
            false,
        )),
        Err(_elapsed) => Err(Failed::new(
            TIMEOUT,
            format!("attempt {} timed out after {timeout:?}", ctx.attempt),
            true,
        )),
    }
}

/// The text a handler panicked with (`&str` or `String` payloads), else
/// "unknown panic".
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// Route: resolves a handler's outputs to (output index, record) pairs: an
/// output without `to` goes to every declared output, one with `to` to the
/// output of that name. Errs with the message a user sees when `to` names
/// an output the function does not declare.
pub fn resolve_outputs(
    declared: &[Arc<str>],
    outputs: Vec<Output>,
) -> Result<Vec<(usize, Record)>, String> {
    let mut pending = Vec::with_capacity(outputs.len());
    for output in outputs {
        match &output.to {
            None => {
                let count = declared.len();
                for index in 0..count.saturating_sub(1) {
                    pending.push((index, output.record.clone()));
                }
                if count > 0 {
                    pending.push((count - 1, output.record));
                }
            }
            Some(name) => match declared.iter().position(|o| o == name) {
                Some(index) => pending.push((index, output.record)),
                None => {
                    let names: Vec<&str> = declared.iter().map(|o| &**o).collect();
                    return Err(format!(
                        "handler routed an output to `{name}`, which this function does not declare (outputs: {})",
                        if names.is_empty() { "none".to_owned() } else { names.join(", ") }
                    ));
                }
            },
        }
    }
    Ok(pending)
}

/// Route, as a stage: [`resolve_outputs`], an unknown output a permanent
/// failure.
pub fn route(declared: &[Arc<str>], outputs: Vec<Output>) -> Result<Vec<(usize, Record)>, Failed> {
    resolve_outputs(declared, outputs)
        .map_err(|message| Failed::new(UNKNOWN_OUTPUT, message, false))
}

/// Encode: encodes each routed record in its output's format, in place
/// (`encoder(index)` is output `index`'s encoder, `None`: as it is). The
/// first record that does not fit fails the attempt: retryably when the
/// encoder says so (a schema registry away), else for good.
pub async fn encode<'a>(
    declared: &[Arc<str>],
    encoder: impl Fn(usize) -> Option<&'a dyn PayloadEncoder>,
    pending: &mut [(usize, Record)],
) -> Result<(), Failed> {
    for (index, record) in pending.iter_mut() {
        let Some(encoder) = encoder(*index) else {
            continue;
        };
        match encoder.encode(&record.payload).await {
            Ok(encoded) => record.payload = encoded,
            Err(error) => {
                let message = format!(
                    "output `{}` cannot be encoded: {}",
                    declared[*index], error.message
                );
                return Err(Failed::new(ENCODE_ERROR, message, error.retryable));
            }
        }
    }
    Ok(())
}

/// What became of one event run offline.
#[derive(Debug, Clone, PartialEq)]
pub enum Decided {
    /// Handled: the handler's outputs, as it made them (before encoding).
    Handled(Vec<Output>),
    /// Failed for good after `attempts` attempts.
    DeadLetter {
        /// The last failure.
        failed: Failed,
        /// Attempts made.
        attempts: u32,
    },
}

/// The stages of one function, run offline (no sinks, no sleeping through
/// backoffs): what `spate test` decides each recorded event with.
pub struct Offline {
    /// The function's name (handlers see it in their context).
    pub name: Arc<str>,
    /// Its handler.
    pub handler: Arc<dyn Handler>,
    /// Its outputs' names, in declaration order.
    pub output_names: Vec<Arc<str>>,
    /// Its retry policy.
    pub retry: RetryPolicy,
    /// The input's decoder (`None`: payloads as they are).
    pub decoder: Option<Arc<dyn PayloadDecoder>>,
    /// Per output: its encoder (`None`: as the handler made it).
    pub encoders: Vec<Option<Arc<dyn PayloadEncoder>>>,
}

impl Offline {
    /// Decides one event of input 0 the way a handler task would, retrying
    /// at once instead of after the backoff.
    pub async fn run(&self, event: Event) -> Decided {
        if let Some(failed) = carried_decode_error(&event) {
            return Decided::DeadLetter {
                failed,
                attempts: 0,
            };
        }
        let mut attempts = 0;
        // Kept after a handler attempt whose encoding may be retried: the
        // retry encodes again, it does not run the handler again.
        let mut handled: Option<Vec<Output>> = None;
        loop {
            attempts += 1;
            let result = match handled.clone() {
                Some(outputs) => self.finish(outputs).await,
                None => match self.attempt(&event, attempts).await {
                    Ok(outputs) => {
                        handled = Some(outputs.clone());
                        self.finish(outputs).await
                    }
                    Err(failed) => Err(failed),
                },
            };
            let failed = match result {
                Ok(outputs) => return Decided::Handled(outputs),
                Err(failed) => failed,
            };
            if failed.reason != ENCODE_ERROR {
                handled = None;
            }
            if next(&failed, attempts, &self.retry) == Next::DeadLetter {
                return Decided::DeadLetter { failed, attempts };
            }
        }
    }

    /// Decode and one handler attempt.
    async fn attempt(&self, event: &Event, attempts: u32) -> Result<Vec<Output>, Failed> {
        let mut event = event.clone();
        if let Some(decoder) = &self.decoder {
            decode(&**decoder, &mut event)
                .await
                .map_err(Failed::decode)?;
        }
        let ctx = Context::new(self.name.clone(), attempts).with_input(0);
        call_handler(&*self.handler, event, &ctx, self.retry.timeout).await
    }

    /// Route and encode, checking the outputs as the engine would; the
    /// handler's outputs as they were when they pass.
    async fn finish(&self, outputs: Vec<Output>) -> Result<Vec<Output>, Failed> {
        let mut pending = route(&self.output_names, outputs.clone())?;
        let encoder = |index: usize| self.encoders.get(index).and_then(|e| e.as_deref());
        encode(&self.output_names, encoder, &mut pending).await?;
        Ok(outputs)
    }
}
