//! A unit of work as it moves between the scheduler and handler tasks, and
//! what a handler task reports back.

use std::time::Duration;

use bytes::Bytes;
use spate_connector::{Event, PartitionId, PendingWrite, Record, StateChange};

use spate_connector::Output;

/// A partition of one of a function's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartKey {
    /// Index of the input in the function's `inputs`.
    pub input: usize,
    /// The source's partition.
    pub partition: PartitionId,
}

/// The ordering unit an event belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LaneKey {
    /// `ordering: partition`: the whole partition.
    Partition(PartKey),
    /// `ordering: key`: one key of a partition (`None` for keyless events,
    /// which keep their partition order among themselves).
    Key(PartKey, Option<Bytes>),
}

/// What is left to do for an event.
#[derive(Debug)]
pub enum Stage {
    /// Run the handler (again).
    Handle,
    /// The handler returned these outputs; route and encode them (again,
    /// after an encoder could not reach its schema registry), without
    /// running the handler twice.
    Route(Vec<Output>),
    /// Write these outputs: (index into the function's outputs, record).
    Emit(Vec<(usize, Record)>),
    /// Write this dead letter.
    DeadLetter(Record),
}

/// Why an event failed, kept for its dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Dead-letter reason word (see `spate_connector::dead_letter::REASON`).
    pub reason: &'static str,
    /// The error message.
    pub message: String,
    /// First failure, ms since the epoch.
    pub first_ms: i64,
    /// Last failure, ms since the epoch.
    pub last_ms: i64,
}

/// One event and its progress.
#[derive(Debug)]
pub struct WorkItem {
    /// The event as read.
    pub event: Event,
    /// Its partition.
    pub part: PartKey,
    /// The assignment generation of that partition when it was read; work of
    /// an older generation no longer counts.
    pub epoch: u64,
    /// Its lane, if the ordering mode has lanes.
    pub lane: Option<LaneKey>,
    /// Bytes counted against the in-flight bound.
    pub bytes: u64,
    /// What is left to do.
    pub stage: Stage,
    /// Handler attempts made.
    pub attempts: u32,
    /// Failed output / dead-letter writes in a row, for their backoff.
    pub write_failures: u32,
    /// The failure history, once it failed.
    pub failure: Option<Failure>,
    /// State changes the handler's successful call recorded; under
    /// `exactly_once` they commit with the event (see
    /// [`spate_connector::HandlerState`]).
    pub state_changes: Vec<StateChange>,
}

/// How an event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The handler succeeded and this many output records were acknowledged.
    Handled {
        /// Output records written.
        outputs: usize,
    },
    /// The event's dead letter was acknowledged.
    DeadLettered,
}

/// Output writes a sink accepted in order and has not acknowledged yet:
/// (index into the function's outputs, the record, its pending ack).
pub struct Accepted(pub Vec<(usize, Record, PendingWrite)>);

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Accepted({} writes)", self.0.len())
    }
}

/// What a handler task reports for one item.
#[derive(Debug)]
pub enum Verdict {
    /// Finished: the offset may be committed.
    Finished(Outcome),
    /// Try the item's stage again after this delay.
    RetryAfter(Duration),
    /// The handler is done and every output was accepted in order: the
    /// item's lane may move on, but the item finishes only once these
    /// writes are acknowledged.
    Written(Accepted),
    /// The item's dead letter cannot be written even in reduced form: the
    /// function stops with this message; the item stays unfinished.
    Unwritable(String),
}

/// Where a staged record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The function's output of this index.
    Output(usize),
    /// The function's dead-letter sink.
    DeadLetter,
    /// The handler's state of the event's partition: the record's key is
    /// the state key, its payload the new state (`delete`: removed).
    State {
        /// The key's state was removed.
        delete: bool,
    },
}

/// A handler task's report.
#[derive(Debug)]
pub struct Completion {
    /// The item, with its stage and counters updated.
    pub item: WorkItem,
    /// What happened.
    pub verdict: Verdict,
    /// Under `exactly_once`, the records of a finished event, which the
    /// scheduler writes into a transaction once the watermark passes the
    /// event; empty otherwise.
    pub staged: Vec<(Destination, Record)>,
    /// How long the task was occupied with the item this round (handler
    /// plus output and dead-letter writes): what the scaler plans with.
    pub service_time: Duration,
}

/// Consecutive runnable items handed to one task together (see
/// [`RunReport`]).
#[derive(Debug)]
pub struct Run {
    /// The items, in the order they run.
    pub items: Vec<WorkItem>,
    /// The function's drain count when the run was handed over
    /// (`FunctionShared::drains`): once it moved, no further item of the
    /// run starts.
    pub drains: u64,
}

/// What a handler task reports for one run: the completions of the items
/// it ran, in run order, and the items it gave back without running them.
///
/// A run of a lane (`ordering: partition` or `key`) stops at the first item
/// that has to wait for a retry (or cannot be dead-lettered): the items
/// behind it in the run are given back untouched, to wait in their lane
/// behind it. A run also stops once it has held its task for a time slice,
/// so one partition's run never holds back a drain or another partition
/// for long.
#[derive(Debug, Default)]
pub struct RunReport {
    /// One completion per item run, in run order.
    pub completions: Vec<Completion>,
    /// Items given back, in run order, not started.
    pub returned: Vec<WorkItem>,
}
