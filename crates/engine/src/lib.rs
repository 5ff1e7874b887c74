//! The partitioned dispatch engine: runs one function over its sources.
//!
//! # What it guarantees
//!
//! - **Order.** With `ordering: partition` a partition's events run one at a
//!   time in offset order; with `key`, one event per key at a time in offset
//!   order while other keys of the partition run in parallel; with `none`,
//!   events run as tasks are free. A retrying event holds back only its own
//!   lane (see [`work::LaneKey`]).
//! - **Bounded memory.** Per partition, the span from the first unfinished
//!   event to the last one read is bounded in events, and the unfinished
//!   events in bytes; past either bound the partition is paused at the source
//!   and resumed once it drained to half. A process-wide budget does the same
//!   over every function. Every queue inside is bounded by those limits.
//! - **Commits never skip.** A position is committed only when every event
//!   below it is finished — handled with all outputs acknowledged, or
//!   dead-lettered with the dead letter acknowledged — whatever order events
//!   finished in. Commits happen every `commit_interval`, after draining a
//!   revoked partition, and at shutdown.
//! - **Nothing is dropped.** An event ends as handled or as a dead letter.
//!   Output and dead-letter writes that fail transiently
//!   ([`SinkError::Unavailable`](spate_connector::SinkError)) are retried
//!   with backoff for as long as it takes; the partition's position waits
//!   for them. A record a sink rejects for good (`Rejected`) is never
//!   retried as it is: a rejected output dead-letters its event
//!   (`output-rejected`); a rejected dead letter is written once more
//!   without its payload (see [`dead_letter`]); a reduced dead letter
//!   rejected too stops the function with an error naming the dead-letter
//!   sink, and the event stays uncommitted, to be read again once the
//!   sink's setting is fixed.
//!
//! `at_most_once` commits each batch's positions on receipt, before the
//! handler runs. `exactly_once` commits outputs, dead letters and positions
//! in one transaction of the input's connector (see
//! `scheduler/transact.rs` for how out-of-order completion is kept out of
//! it); the pipeline loader rejects it for every connector that cannot.

pub mod backoff;
pub mod budget;
pub mod dead_letter;
pub mod events;
mod lanes;
pub mod metrics;
pub mod policy;
pub mod readiness;
pub mod scaler;
mod scheduler;
pub mod stage;
pub mod watermark;
pub mod work;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use spate_connector::{Sink, Source, SourceError};
use tokio_util::sync::CancellationToken;

pub use budget::ProcessBudget;
pub use policy::{
    ConcurrencySpec, Delivery, InFlightLimits, Ordering, RetryPolicy, RunPolicy, TransactionPolicy,
};
pub use scaler::ScalerTuning;
pub use worker::NamedSink;

use spate_connector::Handler;

/// Who opens a function's exactly-once session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SessionHost {
    /// Its input's source, whose broker keeps the positions (a Kafka
    /// transaction, JetStream de-duplication).
    #[default]
    Source,
    /// Its first output's sink (else its dead-letter sink), which stores
    /// the source's positions and handler state itself, in the same
    /// transactions as its records (a database); the source resumes from
    /// them.
    Sink,
}

/// Everything needed to run one function, with its connectors built.
pub struct FunctionPlan {
    /// The pipeline it belongs to (its file's name without `.yaml`): with
    /// `name`, the key a database session stores positions under.
    pub pipeline: Arc<str>,
    /// The function's name.
    pub name: Arc<str>,
    /// The handler.
    pub handler: Arc<dyn Handler>,
    /// Its sources, in input order.
    pub sources: Vec<Box<dyn Source>>,
    /// Its outputs.
    pub outputs: Vec<NamedSink>,
    /// Per input (same order as `sources`): decodes payloads before the
    /// handler. Empty, or `None` for an input: payloads as they came.
    pub decoders: Vec<Option<Arc<dyn spate_connector::PayloadDecoder>>>,
    /// Its dead-letter sink.
    pub dead_letter: Arc<dyn Sink>,
    /// How it is run.
    pub policy: RunPolicy,
    /// Who opens the exactly-once session (`delivery: exactly_once` only).
    pub session_host: SessionHost,
}

/// Engine settings that are not part of a pipeline file.
#[derive(Clone)]
pub struct EngineOptions {
    /// Most events asked of a source at once.
    pub max_batch: usize,
    /// The concurrency control rule's tuning.
    pub scaler: ScalerTuning,
    /// The process-wide in-flight budget, shared by every function.
    pub budget: Arc<ProcessBudget>,
    /// Where every source's readiness is recorded (read by
    /// `/health/ready`).
    pub readiness: readiness::Readiness,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_batch: 512,
            scaler: ScalerTuning::default(),
            budget: Arc::new(ProcessBudget::new(InFlightLimits {
                events: 100_000,
                bytes: 256 << 20,
            })),
            readiness: readiness::Readiness::new(),
        }
    }
}

/// What a function did, reported when it ends.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionReport {
    /// The function's name.
    pub function: String,
    /// Events read.
    pub events_in: u64,
    /// Events the handler finished.
    pub handled: u64,
    /// Output records acknowledged.
    pub outputs: u64,
    /// Events dead-lettered.
    pub dead_lettered: u64,
    /// Retries scheduled.
    pub retries: u64,
    /// Wall time from start to end.
    pub elapsed: Duration,
}

/// Why a function stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A source failed in a way retrying cannot fix.
    #[error("function `{function}`: source failed: {source}")]
    Source {
        /// The function.
        function: String,
        /// The error.
        #[source]
        source: SourceError,
    },
    /// A source broke the contract (offsets not increasing).
    #[error("function `{function}`: source `{source_name}` partition {partition}: {error}")]
    Contract {
        /// The function.
        function: String,
        /// The source.
        source_name: String,
        /// The partition.
        partition: u32,
        /// What was wrong.
        error: watermark::WatermarkError,
    },
    /// The exactly-once session failed for good (fenced by another
    /// process, or refused by the broker).
    #[error("function `{function}`: {source}")]
    Transaction {
        /// The function.
        function: String,
        /// The error.
        #[source]
        source: spate_connector::TransactionError,
    },
    /// The dead-letter sink rejected an event's dead letter for good even
    /// without its payload: the event can neither be written nor dropped
    /// silently, so the function stops (its position stays before it).
    #[error("function `{function}`: {message}")]
    DeadLetterRejected {
        /// The function.
        function: String,
        /// What was refused, by which dead-letter sink, and why (naming the
        /// setting to change).
        message: String,
    },
    /// The plan cannot run.
    #[error("function `{function}`: {message}")]
    Plan {
        /// The function.
        function: String,
        /// Why.
        message: String,
    },
}

/// Runs a function until its sources end (finite sources) or `shutdown` is
/// cancelled; either way it drains, commits and closes before returning.
pub async fn run_function(
    plan: FunctionPlan,
    options: EngineOptions,
    shutdown: CancellationToken,
) -> Result<FunctionReport, EngineError> {
    let delivery = plan.policy.delivery;
    let mut scheduler = scheduler::Scheduler::start(plan, options)?;
    scheduler.open_committer(delivery).await?;
    scheduler.run(shutdown).await
}
