//! Work events: the handler task pool scaling, handler attempts and their
//! failures, retries, outputs acknowledged, and events leaving flight.

use std::fmt::Display;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::scope::{count, ConnectorScope, Scope};

/// Handler tasks were started: at start (`concurrency.min`) or by the
/// scaler.
///
/// Raises [`CONCURRENCY`](crate::metrics::CONCURRENCY) by `added`, counts
/// [`SCALE_CHANGES`](crate::metrics::SCALE_CHANGES)`{direction="up"}` and
/// logs `"handler concurrency up"` at info with `function`, `from`, `to`
/// and `reason`.
pub struct ConcurrencyScaledUp<'a> {
    /// Tasks alive before.
    pub from: usize,
    /// Tasks started.
    pub added: usize,
    /// Why (the scaler's reason, or the configured minimum).
    pub reason: &'a str,
}

impl ConcurrencyScaledUp<'_> {
    /// Counts and logs the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        scope.metrics.concurrency.increment(self.added as f64);
        scope.metrics.scaled_up.increment(1);
        let (from, to) = (self.from, self.from + self.added);
        info!(function = %scope.name, from, to, reason = self.reason, "handler concurrency up");
    }
}

/// A handler task retired after idling (more than `concurrency.min` were
/// alive).
///
/// Lowers [`CONCURRENCY`](crate::metrics::CONCURRENCY) by one, counts
/// [`SCALE_CHANGES`](crate::metrics::SCALE_CHANGES)`{direction="down"}`
/// and logs `"handler concurrency down"` at info with `function`, `tasks`
/// (alive after it) and `reason`.
pub struct ConcurrencyScaledDown {
    /// Tasks alive after it retired.
    pub tasks: usize,
    /// How long it idled.
    pub idle_for: Duration,
}

impl ConcurrencyScaledDown {
    /// Counts and logs the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        scope.metrics.concurrency.decrement(1.0);
        scope.metrics.scaled_down.increment(1);
        info!(
            function = %scope.name,
            tasks = self.tasks,
            reason = %format!("idle for {:?}", self.idle_for),
            "handler concurrency down"
        );
    }
}

/// A handler task ended because the function is closing (not a scale
/// change: see [`ConcurrencyScaledDown`]).
///
/// Lowers [`CONCURRENCY`](crate::metrics::CONCURRENCY) by one. No log line.
pub struct HandlerTaskEnded;

impl HandlerTaskEnded {
    /// Counts the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        scope.metrics.concurrency.decrement(1.0);
    }
}

/// The handler ran once (whatever came of it).
///
/// Records `elapsed` in [`HANDLER_SECONDS`](crate::metrics::HANDLER_SECONDS).
/// No log line.
pub struct HandlerRan {
    /// How long the attempt took.
    pub elapsed: Duration,
}

impl HandlerRan {
    /// Records the latency.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        scope
            .metrics
            .handler_seconds
            .record(self.elapsed.as_secs_f64());
    }
}

/// An attempt failed: the handler (or decoding, routing, encoding, a sink's
/// check) failed the event. It is retried, or dead-lettered (see
/// [`EventDeadLettered`](super::EventDeadLettered)).
///
/// Counts [`EVENTS_FAILED`](crate::metrics::EVENTS_FAILED); when it is
/// retried, logs `"attempt failed; retrying"` at debug with `function`,
/// `attempt` and `error`.
pub struct AttemptFailed<'a> {
    /// The attempt that failed (1 for the first).
    pub attempt: u32,
    /// What failed.
    pub error: &'a str,
    /// Whether it is retried (else it is dead-lettered).
    pub retrying: bool,
}

impl AttemptFailed<'_> {
    /// Counts and logs the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        scope.metrics.failed.increment(1);
        if self.retrying {
            debug!(function = %scope.name, attempt = self.attempt, error = %self.error, "attempt failed; retrying");
        }
    }
}

/// A retry was scheduled: of the handler, or of an output or dead-letter
/// write.
///
/// Counts [`RETRIES`](crate::metrics::RETRIES) and the tally's `retries`.
/// No log line (the failure that caused it logs).
pub struct RetryScheduled;

impl RetryScheduled {
    /// Counts the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        count(&scope.metrics.retries, &scope.tally.retries, 1);
    }
}

/// The handler finished an event: every output acknowledged (or, under
/// `exactly_once`, staged for the transaction).
///
/// Counts [`EVENTS_HANDLED`](crate::metrics::EVENTS_HANDLED) and the
/// tally's `handled`. No log line.
pub struct EventHandled;

impl EventHandled {
    /// Counts the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        count(&scope.metrics.handled, &scope.tally.handled, 1);
    }
}

/// An output write failed transiently; it is retried after backoff.
///
/// Logs a warning `"output write failed; will retry"` with `function`,
/// `output` and `error`. (The retry counts as [`RetryScheduled`].)
pub struct OutputWriteFailed<'a>(
    /// What failed.
    pub &'a dyn Display,
);

impl OutputWriteFailed<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self, output: ConnectorScope<'_>) {
        warn!(function = %output.function.name, output = %output.name, error = %self.0, "output write failed; will retry");
    }
}

/// Output records were acknowledged by their sinks (or committed in a
/// transaction).
///
/// Counts `count` in [`EVENTS_OUT`](crate::metrics::EVENTS_OUT) and the
/// tally's `outputs`. No log line.
pub struct OutputsAcknowledged {
    /// Records acknowledged.
    pub count: u64,
}

impl OutputsAcknowledged {
    /// Counts the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        count(&scope.metrics.out, &scope.tally.outputs, self.count);
    }
}

/// An event finished (handled or dead-lettered) and leaves flight.
///
/// Lowers [`IN_FLIGHT`](crate::metrics::IN_FLIGHT) by one. No log line
/// (its outcome was counted when it happened).
pub struct EventFinished;

impl EventFinished {
    /// Counts the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        scope.metrics.in_flight.decrement(1.0);
    }
}

/// Events left flight unfinished: their partition is being let go (drained
/// or re-assigned), and they stay uncommitted for its next owner.
///
/// Lowers [`IN_FLIGHT`](crate::metrics::IN_FLIGHT) by `count`. No log line
/// (a drain that left events running warns, see
/// [`DrainDeadlinePassed`](super::DrainDeadlinePassed)).
pub struct EventsAbandoned {
    /// Events let go.
    pub count: usize,
}

impl EventsAbandoned {
    /// Counts the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        scope.metrics.in_flight.decrement(self.count as f64);
    }
}
