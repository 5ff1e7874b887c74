//! Intake events: events read, sources failing and recovering, partitions
//! assigned and revoked, and partitions paused and resumed for
//! backpressure.

use std::fmt::Display;
use std::time::Duration;

use spate_connector::PartitionId;
use tracing::{debug, error, info, warn};

use crate::metrics::FunctionMetrics;

/// An event was read and admitted: it is in flight until it finishes.
///
/// Counts [`EVENTS_IN`](crate::metrics::EVENTS_IN), raises
/// [`IN_FLIGHT`](crate::metrics::IN_FLIGHT) by one and the scheduler's
/// count of events read (the report's `events_in`). No log line.
pub struct EventRead<'a> {
    /// The function's metric handles.
    pub metrics: &'a FunctionMetrics,
    /// The scheduler's count of events read.
    pub read: &'a mut u64,
}

impl EventRead<'_> {
    /// Counts the event.
    #[inline]
    pub fn emit(self) {
        *self.read += 1;
        self.metrics.events_in.increment(1);
        self.metrics.in_flight.increment(1.0);
    }
}

/// An event of a partition being drained arrived; it is left for the
/// partition's next owner (not admitted, not counted).
///
/// Logs `"event of a draining partition left for its next owner"` at debug
/// with `function` and `partition`.
pub struct EventLeftForNextOwner<'a> {
    /// The function.
    pub function: &'a str,
    /// The partition being drained.
    pub partition: PartitionId,
}

impl EventLeftForNextOwner<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self) {
        debug!(function = %self.function, partition = self.partition, "event of a draining partition left for its next owner");
    }
}

/// A source said it has nothing more (a finite source reached its end).
///
/// Logs `"source ended"` at debug with `function` and `source`.
pub struct SourceEnded<'a> {
    /// The function.
    pub function: &'a str,
    /// The source's name.
    pub source: &'a str,
}

impl SourceEnded<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self) {
        debug!(function = %self.function, source = self.source, "source ended");
    }
}

/// A read failed transiently; the source is asked again after `retry_in`.
///
/// Logs once per outage: the first failure (`failures` is 1) as a warning
/// `"source read failed; retrying with backoff"` with `function`, `source`
/// and `error`; the ones after it at debug, `"source read failed again"`,
/// adding `retry_in` and `failures`.
pub struct SourceReadFailed<'a> {
    /// The function.
    pub function: &'a str,
    /// The source's name.
    pub source: &'a str,
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
    pub fn emit(self) {
        let (function, source, error) = (self.function, self.source, self.error);
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
pub struct SourceRecovered<'a> {
    /// The function.
    pub function: &'a str,
    /// The source's name.
    pub source: &'a str,
    /// Failed reads in a row before this one.
    pub failures: u32,
}

impl SourceRecovered<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self) {
        info!(function = %self.function, source = self.source, failures = self.failures, "source reads again");
    }
}

/// A source failed in a way retrying cannot fix; the function stops.
///
/// Logs an error `"source failed; stopping the function"` with `function`,
/// `source` and `error`.
pub struct SourceFailed<'a> {
    /// The function.
    pub function: &'a str,
    /// The source's name.
    pub source: &'a str,
    /// What failed.
    pub error: &'a dyn Display,
}

impl SourceFailed<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self) {
        error!(function = %self.function, source = self.source, error = %self.error, "source failed; stopping the function");
    }
}

/// Partitions were assigned to the function.
///
/// Logs `"partitions assigned"` at info with `function`, `source` and
/// `partitions`.
pub struct PartitionsAssigned<'a> {
    /// The function.
    pub function: &'a str,
    /// The source's name.
    pub source: &'a str,
    /// The partitions.
    pub partitions: &'a [PartitionId],
}

impl PartitionsAssigned<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self) {
        info!(function = %self.function, source = self.source, partitions = ?self.partitions, "partitions assigned");
    }
}

/// Partitions were revoked: they are drained, committed and released.
///
/// Logs `"partitions revoked; draining"` at info with `function`, `source`
/// and `partitions`.
pub struct PartitionsRevoked<'a> {
    /// The function.
    pub function: &'a str,
    /// The source's name.
    pub source: &'a str,
    /// The partitions.
    pub partitions: &'a [PartitionId],
}

impl PartitionsRevoked<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self) {
        info!(function = %self.function, source = self.source, partitions = ?self.partitions, "partitions revoked; draining");
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
    /// The function.
    pub function: &'a str,
    /// The partitions.
    pub partitions: &'a [PartitionId],
    /// Why the source could not pause them, if it could not.
    pub error: Option<&'a dyn Display>,
}

impl PartitionsPaused<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self) {
        debug!(function = %self.function, partitions = ?self.partitions, "pausing partitions at the in-flight bound");
        if let Some(error) = self.error {
            warn!(function = %self.function, %error, "pause failed");
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
    /// The function.
    pub function: &'a str,
    /// The partitions.
    pub partitions: &'a [PartitionId],
    /// Why the source could not resume them, if it could not.
    pub error: Option<&'a dyn Display>,
}

impl PartitionsResumed<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self) {
        debug!(function = %self.function, partitions = ?self.partitions, "resuming drained partitions");
        if let Some(error) = self.error {
            warn!(function = %self.function, %error, "resume failed");
        }
    }
}

/// How many of the function's partitions are paused now (taken after
/// every backpressure pass).
///
/// Sets [`PAUSED_PARTITIONS`](crate::metrics::PAUSED_PARTITIONS). No log
/// line (see [`PartitionsPaused`], [`PartitionsResumed`]).
pub struct PausedPartitions<'a> {
    /// The function's metric handles.
    pub metrics: &'a FunctionMetrics,
    /// Partitions paused.
    pub paused: usize,
}

impl PausedPartitions<'_> {
    /// Sets the gauge.
    #[inline]
    pub fn emit(self) {
        self.metrics.paused.set(self.paused as f64);
    }
}
