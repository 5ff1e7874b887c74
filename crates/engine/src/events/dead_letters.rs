//! Dead-letter events: dead letters written (or committed), their writes
//! failing or deferred, reduced to their headers, or unwritable.

use std::fmt::Display;

use spate_connector::{dead_letter, PartitionId};
use tracing::{error, warn};

use super::scope::{count, Scope};

/// Why an event was dead-lettered, as its dead letter's headers say.
#[derive(Clone, Copy)]
pub struct DeadLetterCause<'a> {
    /// The reason word (see `spate_connector::dead_letter::REASON`).
    pub reason: &'a str,
    /// The last error.
    pub error: &'a str,
}

/// An event was dead-lettered: its dead letter was acknowledged by the
/// dead-letter sink (or, under `exactly_once`, committed).
///
/// Counts [`EVENTS_DEAD_LETTERED`](crate::metrics::EVENTS_DEAD_LETTERED)
/// and the tally's `dead_lettered`; with a cause, logs a warning
/// `"event dead-lettered"` with `function`, `stream`, `partition`,
/// `offset`, `reason` and `error`.
pub struct EventDeadLettered<'a> {
    /// The event's stream.
    pub stream: &'a str,
    /// The event's partition.
    pub partition: PartitionId,
    /// The event's offset.
    pub offset: u64,
    /// Why, when known.
    pub cause: Option<DeadLetterCause<'a>>,
}

impl EventDeadLettered<'_> {
    /// Counts and logs the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        count(&scope.metrics.dead_lettered, &scope.tally.dead_lettered, 1);
        if let Some(cause) = self.cause {
            warn!(
                function = %scope.name,
                stream = %self.stream,
                partition = self.partition,
                offset = self.offset,
                reason = cause.reason,
                error = %cause.error,
                "event dead-lettered"
            );
        }
    }
}

/// A dead-letter write failed transiently; it is tried again after backoff
/// and the event's offset waits for it.
///
/// Logs a warning `"dead-letter write failed; the offset stays uncommitted
/// until it succeeds"` with `function` and `error`. (The retry counts as
/// [`RetryScheduled`](super::RetryScheduled).)
pub struct DeadLetterWriteFailed<'a>(
    /// What failed.
    pub &'a dyn Display,
);

impl DeadLetterWriteFailed<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        warn!(function = %scope.name, error = %self.0, "dead-letter write failed; the offset stays uncommitted until it succeeds");
    }
}

/// Under `exactly_once`, the dead-letter sink's check refused a dead letter
/// for now (a transient refusal): it is staged again after backoff and the
/// event's offset waits for it.
///
/// Logs a warning `"the dead-letter sink cannot take this dead letter now;
/// the offset stays uncommitted until it does"` with `function` and
/// `error`.
pub struct DeadLetterDeferred<'a>(
    /// Why the sink refused it.
    pub &'a dyn Display,
);

impl DeadLetterDeferred<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        warn!(function = %scope.name, error = %self.0, "the dead-letter sink cannot take this dead letter now; the offset stays uncommitted until it does");
    }
}

/// The dead-letter sink rejected a dead letter for good; it is written
/// again without its payload (see [`crate::dead_letter`]).
///
/// Counts [`DEAD_LETTERS_REDUCED`](crate::metrics::DEAD_LETTERS_REDUCED)
/// and logs a warning `"the dead-letter sink rejected the dead letter for
/// good; writing it without its payload (headers …)"` with `function`,
/// `stream`, `partition`, `offset`, `payload_bytes` and `error`.
pub struct DeadLetterReduced<'a> {
    /// The event's stream.
    pub stream: &'a str,
    /// The event's partition.
    pub partition: PartitionId,
    /// The event's offset.
    pub offset: u64,
    /// The size of the payload left out.
    pub payload_bytes: usize,
    /// The sink's rejection.
    pub error: &'a dyn Display,
}

impl DeadLetterReduced<'_> {
    /// Counts and logs the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        warn!(
            function = %scope.name,
            stream = %self.stream,
            partition = self.partition,
            offset = self.offset,
            payload_bytes = self.payload_bytes,
            error = %self.error,
            "the dead-letter sink rejected the dead letter for good; writing it without its payload (headers `{}`, `{}`)",
            dead_letter::PAYLOAD_SIZE,
            dead_letter::PAYLOAD_SHA256,
        );
        scope.metrics.dead_letters_reduced.increment(1);
    }
}

/// A dead letter cannot be written at all (its reduced form was rejected
/// too): the function stops.
///
/// Logs an error `"a dead letter cannot be written; stopping the
/// function"` with `function` and `message` (which names the dead-letter
/// sink and the setting to change).
pub struct DeadLetterUnwritable<'a> {
    /// What was refused, by which sink, and why.
    pub message: &'a str,
}

impl DeadLetterUnwritable<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        error!(function = %scope.name, message = %self.message, "a dead letter cannot be written; stopping the function");
    }
}
