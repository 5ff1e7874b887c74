//! Metric names and per-function metric handles.
//!
//! Every metric spate exports is named here, once. Labels stay
//! low-cardinality: `function`, plus `stream` and `partition` for the
//! per-partition gauges. Handles are registered once per function (the
//! per-partition ones once per partition) so the per-event path only bumps
//! atomics; they are updated only by the events of [`crate::events`].

use std::sync::Arc;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

/// Events read from sources.
pub const EVENTS_IN: &str = "spate_events_in_total";
/// Events finished by the handler (outputs acknowledged).
pub const EVENTS_HANDLED: &str = "spate_events_handled_total";
/// Output records acknowledged by sinks.
pub const EVENTS_OUT: &str = "spate_events_out_total";
/// Failed handler attempts (each attempt counts).
pub const EVENTS_FAILED: &str = "spate_events_failed_total";
/// Events written to the dead-letter sink.
pub const EVENTS_DEAD_LETTERED: &str = "spate_events_dead_lettered_total";
/// Dead letters written without their payload because the dead-letter
/// sink rejected them whole for good (see `engine::dead_letter`).
pub const DEAD_LETTERS_REDUCED: &str = "spate_dead_letters_reduced_total";
/// Retries scheduled (handler, output or dead-letter writes).
pub const RETRIES: &str = "spate_retries_total";
/// Handler latency per attempt, seconds.
pub const HANDLER_SECONDS: &str = "spate_handler_duration_seconds";
/// Events read and not yet finished.
pub const IN_FLIGHT: &str = "spate_in_flight_events";
/// Handler tasks alive.
pub const CONCURRENCY: &str = "spate_handler_concurrency";
/// Concurrency changes, labelled `direction` (`up`/`down`).
pub const SCALE_CHANGES: &str = "spate_scale_changes_total";
/// Partitions paused for backpressure.
pub const PAUSED_PARTITIONS: &str = "spate_paused_partitions";
/// Successful commits.
pub const COMMITS: &str = "spate_commits_total";
/// Failed commits.
pub const COMMIT_FAILURES: &str = "spate_commit_failures_total";
/// Commit latency, seconds.
pub const COMMIT_SECONDS: &str = "spate_commit_duration_seconds";
/// Events read but not committable, per partition.
pub const PARTITION_UNCOMMITTED: &str = "spate_partition_uncommitted_events";
/// Events in the source not yet read, per partition (when the source knows).
pub const PARTITION_LAG_EVENTS: &str = "spate_partition_lag_events";
/// Age of the oldest unfinished event per partition, seconds.
pub const PARTITION_LAG_SECONDS: &str = "spate_partition_lag_seconds";

/// The handles one function updates.
#[derive(Clone)]
pub struct FunctionMetrics {
    /// See [`EVENTS_IN`].
    pub events_in: Counter,
    /// See [`EVENTS_HANDLED`].
    pub handled: Counter,
    /// See [`EVENTS_OUT`].
    pub out: Counter,
    /// See [`EVENTS_FAILED`].
    pub failed: Counter,
    /// See [`EVENTS_DEAD_LETTERED`].
    pub dead_lettered: Counter,
    /// See [`DEAD_LETTERS_REDUCED`].
    pub dead_letters_reduced: Counter,
    /// See [`RETRIES`].
    pub retries: Counter,
    /// See [`HANDLER_SECONDS`].
    pub handler_seconds: Histogram,
    /// See [`IN_FLIGHT`].
    pub in_flight: Gauge,
    /// See [`CONCURRENCY`].
    pub concurrency: Gauge,
    /// See [`SCALE_CHANGES`], direction up.
    pub scaled_up: Counter,
    /// See [`SCALE_CHANGES`], direction down.
    pub scaled_down: Counter,
    /// See [`PAUSED_PARTITIONS`].
    pub paused: Gauge,
    /// See [`COMMITS`].
    pub commits: Counter,
    /// See [`COMMIT_FAILURES`].
    pub commit_failures: Counter,
    /// See [`COMMIT_SECONDS`].
    pub commit_seconds: Histogram,
    function: Arc<str>,
}

impl FunctionMetrics {
    /// Registers the handles of `function`.
    pub fn new(function: &Arc<str>) -> Self {
        let f = function.to_string();
        Self {
            events_in: counter!(EVENTS_IN, "function" => f.clone()),
            handled: counter!(EVENTS_HANDLED, "function" => f.clone()),
            out: counter!(EVENTS_OUT, "function" => f.clone()),
            failed: counter!(EVENTS_FAILED, "function" => f.clone()),
            dead_lettered: counter!(EVENTS_DEAD_LETTERED, "function" => f.clone()),
            dead_letters_reduced: counter!(DEAD_LETTERS_REDUCED, "function" => f.clone()),
            retries: counter!(RETRIES, "function" => f.clone()),
            handler_seconds: histogram!(HANDLER_SECONDS, "function" => f.clone()),
            in_flight: gauge!(IN_FLIGHT, "function" => f.clone()),
            concurrency: gauge!(CONCURRENCY, "function" => f.clone()),
            scaled_up: counter!(SCALE_CHANGES, "function" => f.clone(), "direction" => "up"),
            scaled_down: counter!(SCALE_CHANGES, "function" => f.clone(), "direction" => "down"),
            paused: gauge!(PAUSED_PARTITIONS, "function" => f.clone()),
            commits: counter!(COMMITS, "function" => f.clone()),
            commit_failures: counter!(COMMIT_FAILURES, "function" => f.clone()),
            commit_seconds: histogram!(COMMIT_SECONDS, "function" => f),
            function: function.clone(),
        }
    }

    /// Registers the per-partition gauges of `partition` of `stream`
    /// (once per partition: the handles are kept with the partition).
    pub fn partition_gauges(&self, stream: &str, partition: u32) -> PartitionGauges {
        let labels = [
            ("function", self.function.to_string()),
            ("stream", stream.to_owned()),
            ("partition", partition.to_string()),
        ];
        PartitionGauges {
            uncommitted: gauge!(PARTITION_UNCOMMITTED, &labels),
            lag_seconds: gauge!(PARTITION_LAG_SECONDS, &labels),
            lag_events: None,
            labels,
        }
    }
}

/// The handles of one partition's gauges.
pub struct PartitionGauges {
    /// See [`PARTITION_UNCOMMITTED`].
    pub uncommitted: Gauge,
    /// See [`PARTITION_LAG_SECONDS`].
    pub lag_seconds: Gauge,
    /// See [`PARTITION_LAG_EVENTS`]; registered once the source first
    /// knows its lag, so a source that never does exports none.
    lag_events: Option<Gauge>,
    labels: [(&'static str, String); 3],
}

impl PartitionGauges {
    /// See [`PARTITION_LAG_EVENTS`].
    pub fn lag_events(&mut self) -> &Gauge {
        let labels = &self.labels;
        self.lag_events
            .get_or_insert_with(|| gauge!(PARTITION_LAG_EVENTS, labels))
    }
}
