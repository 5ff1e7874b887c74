//! Lifecycle events: a function starting and stopping, closing its
//! connectors, draining and releasing partitions, and each partition's lag.

use std::fmt::Display;

use spate_connector::PartitionId;
use tracing::{info, warn};

use super::{ConnectorScope, Scope};
use crate::metrics::PartitionGauges;

/// A function started running.
///
/// Logs `"function started"` at info with `function`.
pub struct FunctionStarted;

impl FunctionStarted {
    /// Logs the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        info!(function = %scope.name, "function started");
    }
}

/// Shutdown was asked for: intake stops and in-flight events drain.
///
/// Logs `"stopping intake, draining in-flight events"` at info with
/// `function`.
pub struct FunctionStopping;

impl FunctionStopping {
    /// Logs the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        info!(function = %scope.name, "stopping intake, draining in-flight events");
    }
}

/// A function stopped: drained, committed and closed.
///
/// Logs `"function stopped"` at info with `function` and `events` (read).
pub struct FunctionStopped {
    /// Events it read.
    pub events: u64,
}

impl FunctionStopped {
    /// Logs the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        info!(function = %scope.name, events = self.events, "function stopped");
    }
}

/// Closing a source at the end failed.
///
/// Logs a warning `"closing source failed"` with `function`, `source` and
/// `error`.
pub struct SourceCloseFailed<'a>(
    /// What failed.
    pub &'a dyn Display,
);

impl SourceCloseFailed<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self, source: ConnectorScope<'_>) {
        warn!(function = %source.function.name, source = source.name, error = %self.0, "closing source failed");
    }
}

/// Flushing an output at the end failed.
///
/// Logs a warning `"flushing output failed"` with `function`, `output` and
/// `error`.
pub struct OutputFlushFailed<'a>(
    /// What failed.
    pub &'a dyn Display,
);

impl OutputFlushFailed<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self, output: ConnectorScope<'_>) {
        warn!(function = %output.function.name, output = %output.name, error = %self.0, "flushing output failed");
    }
}

/// Flushing the dead-letter sink at the end failed.
///
/// Logs a warning `"flushing dead-letter sink failed"` with `function` and
/// `error`.
pub struct DeadLetterFlushFailed<'a>(
    /// What failed.
    pub &'a dyn Display,
);

impl DeadLetterFlushFailed<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        warn!(function = %scope.name, error = %self.0, "flushing dead-letter sink failed");
    }
}

/// A partition's drain ended at its deadline with events still running;
/// they stay uncommitted and are redelivered to its next owner.
///
/// Logs a warning `"drain deadline passed with events still running; they
/// stay uncommitted and will be redelivered"` with `function`, `partition`
/// and `running`.
pub struct DrainDeadlinePassed {
    /// The partition.
    pub partition: PartitionId,
    /// Events still running.
    pub running: usize,
}

impl DrainDeadlinePassed {
    /// Logs the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        warn!(
            function = %scope.name,
            partition = self.partition,
            running = self.running,
            "drain deadline passed with events still running; they stay uncommitted and will be redelivered"
        );
    }
}

/// Revoked partitions were drained and committed, and handed back to the
/// source; `error` when the source could not release them.
///
/// Logs `"revoked partitions drained, committed and released"` at info
/// with `function` and `partitions`; a failure as a warning `"releasing
/// revoked partitions failed"` with `function` and `error`.
pub struct PartitionsReleased<'a> {
    /// The partitions.
    pub partitions: &'a [PartitionId],
    /// Why the source could not release them, if it could not.
    pub error: Option<&'a dyn Display>,
}

impl PartitionsReleased<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        match self.error {
            Some(error) => {
                warn!(function = %scope.name, %error, "releasing revoked partitions failed")
            }
            None => {
                info!(function = %scope.name, partitions = ?self.partitions, "revoked partitions drained, committed and released")
            }
        }
    }
}

/// A partition's lag, taken on the commit interval.
///
/// Sets [`PARTITION_UNCOMMITTED`](crate::metrics::PARTITION_UNCOMMITTED),
/// [`PARTITION_LAG_SECONDS`](crate::metrics::PARTITION_LAG_SECONDS) and,
/// when the source knows it,
/// [`PARTITION_LAG_EVENTS`](crate::metrics::PARTITION_LAG_EVENTS), through
/// the partition's own handles. No log line.
pub struct PartitionLagMeasured<'a> {
    /// The partition's gauges.
    pub gauges: &'a mut PartitionGauges,
    /// Events read but not committable.
    pub uncommitted: usize,
    /// Events in the source not yet read, when the source knows.
    pub lag: Option<u64>,
    /// Age of the oldest unfinished event, seconds.
    pub age_secs: f64,
}

impl PartitionLagMeasured<'_> {
    /// Sets the gauges.
    #[inline]
    pub fn emit(self) {
        self.gauges.uncommitted.set(self.uncommitted as f64);
        self.gauges.lag_seconds.set(self.age_secs);
        if let Some(lag) = self.lag {
            self.gauges.lag_events().set(lag as f64);
        }
    }
}
