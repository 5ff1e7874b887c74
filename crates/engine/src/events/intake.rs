//! Intake events: events read, sources failing and recovering, partitions
//! assigned and revoked, and partitions paused and resumed for
//! backpressure.

use std::fmt::Display;
use std::time::Duration;

use spate_connector::PartitionId;
use tracing::{debug, error, info, warn};

use super::{ConnectorScope, Scope};

/// Events of one batch were read and admitted: they are in flight until
/// they finish.
///
/// Counts [`EVENTS_IN`](crate::metrics::EVENTS_IN) by `count`, raises
/// [`IN_FLIGHT`](crate::metrics::IN_FLIGHT) by as many and the scheduler's
/// count of events read (the report's `events_in`). No log line.
pub struct EventsRead<'a> {
    /// The scheduler's count of events read.
    pub read: &'a mut u64,
    /// Events admitted.
    pub count: u64,
}

impl EventsRead<'_> {
    /// Counts the events.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        if self.count == 0 {
            return;
        }
        *self.read += self.count;
        scope.metrics.events_in.increment(self.count);
        scope.metrics.in_flight.increment(self.count as f64);
    }
}

/// An event of a partition being drained arrived; it is left for the
/// partition's next owner (not admitted, not counted).
///
/// Logs `"event of a draining partition left for its next owner"` at debug
/// with `function` and `partition`.
pub struct EventLeftForNextOwner {
    /// The partition being drained.
    pub partition: PartitionId,
}

impl EventLeftForNextOwner {
    /// Logs the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        debug!(function = %scope.name, partition = self.partition, "event of a draining partition left for its next owner");
    }
}

/// A source said it has nothing more (a finite source reached its end).
///
/// Logs `"source ended"` at debug with `function` and `source`.
pub struct SourceEnded;

impl SourceEnded {
    /// Logs the event.
    #[inline]
    pub fn emit(self, source: ConnectorScope<'_>) {
        debug!(function = %source.function.name, source = source.name, "source ended");
    }
}

/// A read failed transiently; the source is asked again after `retry_in`.
///
/// Logs once per outage: the first failure (`failures` is 1) as a warning
/// `"source read failed; retrying with backoff"` with `function`, `source`
/// and `error`; the ones after it at debug, `"source read failed again"`,
/// adding `retry_in` and `failures`.
pub struct SourceReadFailed<'a> {
    /// What failed.
    pub error: &'a dyn Display,
    /// The backoff before the next read.
    pub retry_in: Duration,
    /// Failed reads in a row, this one included.
    pub failures: u32,
}

impl SourceReadFailed<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self, source: ConnectorScope<'_>) {
        let (function, error) = (&source.function.name, self.error);
        let source = source.name;
        if self.failures == 1 {
            warn!(function = %function, source, %error, "source read failed; retrying with backoff");
        } else {
            debug!(function = %function, source, %error, retry_in = ?self.retry_in, failures = self.failures, "source read failed again");
        }
    }
}

/// A source read again after failed reads.
///
/// Logs `"source reads again"` at info with `function`, `source` and
/// `failures` (the failed reads of the outage).
pub struct SourceRecovered {
    /// Failed reads in a row before this one.
    pub failures: u32,
}

impl SourceRecovered {
    /// Logs the event.
    #[inline]
    pub fn emit(self, source: ConnectorScope<'_>) {
        info!(function = %source.function.name, source = source.name, failures = self.failures, "source reads again");
    }
}

/// A source failed in a way retrying cannot fix; the function stops.
///
/// Logs an error `"source failed; stopping the function"` with `function`,
/// `source` and `error`.
pub struct SourceFailed<'a>(
    /// What failed.
    pub &'a dyn Display,
);

impl SourceFailed<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self, source: ConnectorScope<'_>) {
        error!(function = %source.function.name, source = source.name, error = %self.0, "source failed; stopping the function");
    }
}

/// Partitions were assigned to the function.
///
/// Logs `"partitions assigned"` at info with `function`, `source` and
/// `partitions`.
pub struct PartitionsAssigned<'a> {
    /// The partitions.
    pub partitions: &'a [PartitionId],
}

impl PartitionsAssigned<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self, source: ConnectorScope<'_>) {
        info!(function = %source.function.name, source = source.name, partitions = ?self.partitions, "partitions assigned");
    }
}

/// Partitions were revoked: they are drained, committed and released.
///
/// Logs `"partitions revoked; draining"` at info with `function`, `source`
/// and `partitions`.
pub struct PartitionsRevoked<'a> {
    /// The partitions.
    pub partitions: &'a [PartitionId],
}

impl PartitionsRevoked<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self, source: ConnectorScope<'_>) {
        info!(function = %source.function.name, source = source.name, partitions = ?self.partitions, "partitions revoked; draining");
    }
}

/// Partitions reached their in-flight bound (or the process its own) and
/// are paused at the source; `error` when the source could not pause them.
///
/// Logs `"pausing partitions at the in-flight bound"` at debug with
/// `function` and `partitions`; a failure as a warning `"pause failed"`
/// with `function` and `error`. The count of paused partitions is
/// [`PausedPartitions`].
pub struct PartitionsPaused<'a> {
    /// The partitions.
    pub partitions: &'a [PartitionId],
    /// Why the source could not pause them, if it could not.
    pub error: Option<&'a dyn Display>,
}

impl PartitionsPaused<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        debug!(function = %scope.name, partitions = ?self.partitions, "pausing partitions at the in-flight bound");
        if let Some(error) = self.error {
            warn!(function = %scope.name, %error, "pause failed");
        }
    }
}

/// Paused partitions drained to half their bound and are resumed;
/// `error` when the source could not resume them.
///
/// Logs `"resuming drained partitions"` at debug with `function` and
/// `partitions`; a failure as a warning `"resume failed"` with `function`
/// and `error`.
pub struct PartitionsResumed<'a> {
    /// The partitions.
    pub partitions: &'a [PartitionId],
    /// Why the source could not resume them, if it could not.
    pub error: Option<&'a dyn Display>,
}

impl PartitionsResumed<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        debug!(function = %scope.name, partitions = ?self.partitions, "resuming drained partitions");
        if let Some(error) = self.error {
            warn!(function = %scope.name, %error, "resume failed");
        }
    }
}

/// How many of the function's partitions are paused now (taken after
/// every backpressure pass).
///
/// Sets [`PAUSED_PARTITIONS`](crate::metrics::PAUSED_PARTITIONS). No log
/// line (see [`PartitionsPaused`], [`PartitionsResumed`]).
pub struct PausedPartitions {
    /// Partitions paused.
    pub paused: usize,
}

impl PausedPartitions {
    /// Sets the gauge.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        scope.metrics.paused.set(self.paused as f64);
    }
}
