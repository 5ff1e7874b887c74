//! The engine's policy vocabulary: how a function is run — its delivery
//! promise, ordering unit, concurrency and in-flight bounds, retries and
//! transaction cuts. The pipeline loader fills these in (defaults applied
//! there, from its limits table); the engine takes them as they are.

use std::time::Duration;

/// The delivery promise of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Commit only what is finished (the default).
    AtLeastOnce,
    /// Outputs and source positions commit atomically.
    ExactlyOnce,
    /// Commit on receipt.
    AtMostOnce,
}

/// The ordering unit within a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ordering {
    /// One event of a partition at a time.
    Partition,
    /// One event of each key at a time; keys run in parallel.
    Key,
    /// No ordering; every event runs as soon as a task is free.
    None,
}

/// Bounds on events held by the engine (read but not finished).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlightLimits {
    /// Most events.
    pub events: usize,
    /// Most bytes (key + payload + headers).
    pub bytes: u64,
}

/// How handler concurrency may move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcurrencySpec {
    /// Fewest handler tasks (0 lets an idle function hold none).
    pub min: usize,
    /// Most handler tasks.
    pub max: usize,
}

/// Retry policy for handler failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Backoff before the second attempt.
    pub initial_backoff: Duration,
    /// Backoff never grows past this.
    pub max_backoff: Duration,
    /// Each attempt is cut off after this long (a retryable failure).
    pub timeout: Duration,
}

/// How a function is run: the settings the engine applies, read from the
/// pipeline file (defaults applied there) and handed to the engine as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunPolicy {
    /// The delivery promise.
    pub delivery: Delivery,
    /// The ordering unit.
    pub ordering: Ordering,
    /// Handler task bounds.
    pub concurrency: ConcurrencySpec,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Per-partition in-flight bound.
    pub max_in_flight: InFlightLimits,
    /// How often finished positions are committed.
    pub commit_interval: Duration,
    /// How long revoke and shutdown wait for running events.
    pub drain_timeout: Duration,
    /// How `exactly_once` transactions are cut.
    pub transaction: TransactionPolicy,
}

/// When an `exactly_once` transaction commits: after `interval`, or once it
/// holds `max_events` events, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionPolicy {
    /// `transaction_interval`.
    pub interval: Duration,
    /// `transaction_max_events`.
    pub max_events: usize,
}

impl TransactionPolicy {
    /// The defaults (the pipeline file's limits table reads them from
    /// here): commit at least every 100 ms and at most 10,000 events at once.
    pub const DEFAULT: Self = Self {
        interval: Duration::from_millis(100),
        max_events: 10_000,
    };
}

impl Default for TransactionPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}
