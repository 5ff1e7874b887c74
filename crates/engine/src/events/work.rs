//! Work events: the handler task pool scaling, handler attempts and their
//! failures, retries, outputs acknowledged, and events leaving flight.

use std::fmt::Display;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::metrics::FunctionMetrics;
use crate::worker::Tally;

/// Handler tasks were started: at start (`concurrency.min`) or by the
/// scaler.
///
/// Raises [`CONCURRENCY`](crate::metrics::CONCURRENCY) by `added`, counts
/// [`SCALE_CHANGES`](crate::metrics::SCALE_CHANGES)`{direction="up"}` and
/// logs `"handler concurrency up"` at info with `function`, `from`, `to`
/// and `reason`.
pub struct ConcurrencyScaledUp<'a> {
    /// The function's metric handles.
    pub metrics: &'a FunctionMetrics,
    /// The function.
    pub function: &'a str,
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
    pub fn emit(self) {
        self.metrics.concurrency.increment(self.added as f64);
        self.metrics.scaled_up.increment(1);
        let (from, to) = (self.from, self.from + self.added);
        info!(function = %self.function, from, to, reason = self.reason, "handler concurrency up");
    }
}

/// A handler task retired after idling (more than `concurrency.min` were
/// alive).
///
/// Lowers [`CONCURRENCY`](crate::metrics::CONCURRENCY) by one, counts
/// [`SCALE_CHANGES`](crate::metrics::SCALE_CHANGES)`{direction="down"}`
/// and logs `"handler concurrency down"` at info with `function`, `tasks`
/// (alive after it) and `reason`.
pub struct ConcurrencyScaledDown<'a> {
    /// The function's metric handles.
    pub metrics: &'a FunctionMetrics,
    /// The function.
    pub function: &'a str,
    /// Tasks alive after it retired.
    pub tasks: usize,
    /// How long it idled.
    pub idle_for: Duration,
}

impl ConcurrencyScaledDown<'_> {
    /// Counts and logs the event.
    #[inline]
    pub fn emit(self) {
        self.metrics.concurrency.decrement(1.0);
        self.metrics.scaled_down.increment(1);
        info!(
            function = %self.function,
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
pub struct HandlerTaskEnded<'a> {
    /// The function's metric handles.
    pub metrics: &'a FunctionMetrics,
}

impl HandlerTaskEnded<'_> {
    /// Counts the event.
    #[inline]
    pub fn emit(self) {
        self.metrics.concurrency.decrement(1.0);
    }
}

/// The handler ran once (whatever came of it).
///
/// Records `elapsed` in [`HANDLER_SECONDS`](crate::metrics::HANDLER_SECONDS).
/// No log line.
pub struct HandlerRan<'a> {
    /// The function's metric handles.
    pub metrics: &'a FunctionMetrics,
    /// How long the attempt took.
    pub elapsed: Duration,
}

impl HandlerRan<'_> {
    /// Records the latency.
    #[inline]
    pub fn emit(self) {
        self.metrics
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
    /// The function's metric handles.
    pub metrics: &'a FunctionMetrics,
    /// The function.
    pub function: &'a str,
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
    pub fn emit(self) {
        self.metrics.failed.increment(1);
        if self.retrying {
            debug!(function = %self.function, attempt = self.attempt, error = %self.error, "attempt failed; retrying");
        }
    }
}

/// A retry was scheduled: of the handler, or of an output or dead-letter
/// write.
///
/// Counts [`RETRIES`](crate::metrics::RETRIES) and the tally's `retries`.
/// No log line (the failure that caused it logs).
pub struct RetryScheduled<'a> {
    /// The function's metric handles.
    pub metrics: &'a FunctionMetrics,
    /// The function's tally.
    pub tally: &'a Tally,
}

impl RetryScheduled<'_> {
    /// Counts the event.
    #[inline]
    pub fn emit(self) {
        self.metrics.retries.increment(1);
        self.tally.retries.fetch_add(1, AtomicOrdering::Relaxed);
    }
}

/// The handler finished an event: every output acknowledged (or, under
/// `exactly_once`, staged for the transaction).
///
/// Counts [`EVENTS_HANDLED`](crate::metrics::EVENTS_HANDLED) and the
/// tally's `handled`. No log line.
pub struct EventHandled<'a> {
    /// The function's metric handles.
    pub metrics: &'a FunctionMetrics,
    /// The function's tally.
    pub tally: &'a Tally,
}

impl EventHandled<'_> {
    /// Counts the event.
    #[inline]
    pub fn emit(self) {
        self.metrics.handled.increment(1);
        self.tally.handled.fetch_add(1, AtomicOrdering::Relaxed);
    }
}

/// An output write failed transiently; it is retried after backoff.
///
/// Logs a warning `"output write failed; will retry"` with `function`,
/// `output` and `error`. (The retry counts as [`RetryScheduled`].)
pub struct OutputWriteFailed<'a> {
    /// The function.
    pub function: &'a str,
    /// The output's name.
    pub output: &'a str,
    /// What failed.
    pub error: &'a dyn Display,
}

impl OutputWriteFailed<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self) {
        warn!(function = %self.function, output = %self.output, error = %self.error, "output write failed; will retry");
    }
}

/// Output records were acknowledged by their sinks (or committed in a
/// transaction).
///
/// Counts `count` in [`EVENTS_OUT`](crate::metrics::EVENTS_OUT) and the
/// tally's `outputs`. No log line.
pub struct OutputsAcknowledged<'a> {
    /// The function's metric handles.
    pub metrics: &'a FunctionMetrics,
    /// The function's tally.
    pub tally: &'a Tally,
    /// Records acknowledged.
    pub count: u64,
}

impl OutputsAcknowledged<'_> {
    /// Counts the event.
    #[inline]
    pub fn emit(self) {
        self.metrics.out.increment(self.count);
        self.tally
            .outputs
            .fetch_add(self.count, AtomicOrdering::Relaxed);
    }
}

/// An event finished (handled or dead-lettered) and leaves flight.
///
/// Lowers [`IN_FLIGHT`](crate::metrics::IN_FLIGHT) by one. No log line
/// (its outcome was counted when it happened).
pub struct EventFinished<'a> {
    /// The function's metric handles.
    pub metrics: &'a FunctionMetrics,
}

impl EventFinished<'_> {
    /// Counts the event.
    #[inline]
    pub fn emit(self) {
        self.metrics.in_flight.decrement(1.0);
    }
}

/// Events left flight unfinished: their partition is being let go (drained
/// or re-assigned), and they stay uncommitted for its next owner.
///
/// Lowers [`IN_FLIGHT`](crate::metrics::IN_FLIGHT) by `count`. No log line
/// (a drain that left events running warns, see
/// [`DrainDeadlinePassed`](super::DrainDeadlinePassed)).
pub struct EventsAbandoned<'a> {
    /// The function's metric handles.
    pub metrics: &'a FunctionMetrics,
    /// Events let go.
    pub count: usize,
}

impl EventsAbandoned<'_> {
    /// Counts the event.
    #[inline]
    pub fn emit(self) {
        self.metrics.in_flight.decrement(self.count as f64);
    }
}
