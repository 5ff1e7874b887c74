//! Handler tasks: take a run of work items, run their stages, report back.
//!
//! A task takes a run of events (see [`RunReport`]) and runs them one at a
//! time, in order: the handler attempt (with its timeout;
//! a panic is caught and becomes a permanent failure), then the writes of
//! its outputs, then, if it failed for good, its dead letter. A write is
//! finished only when the sink acknowledged it. Anything that must wait for a
//! retry goes back to the scheduler with a delay, so a backing-off event
//! holds no task — only its own lane.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use spate_connector::{dead_letter, Record, Sink};

use super::work::{Completion, Failure, Outcome, Run, RunReport, Stage, Verdict, WorkItem};
use crate::events::{
    AttemptFailed, ConcurrencyScaledDown, EventHandled, HandlerRan, HandlerTaskEnded,
    RetryScheduled, Scope,
};
use crate::policy::RetryPolicy;
use crate::stage::{self, Failed, Next};
use spate_connector::{Context, Handler, Output};
use spate_connector::{PayloadDecoder, PayloadEncoder};

mod write;

pub use crate::stage::{panic_message, resolve_outputs};
pub(crate) use write::retry_write;
pub use write::{await_acks, await_run_acks, Writer};

/// A named output sink.
#[derive(Clone)]
pub struct NamedSink {
    /// The output name handlers route to.
    pub name: Arc<str>,
    /// The sink.
    pub sink: Arc<dyn Sink>,
    /// Encodes the handler's (JSON) outputs into the output's format;
    /// `None` writes them as they are.
    pub encoder: Option<Arc<dyn PayloadEncoder>>,
}

impl NamedSink {
    /// An output that writes records as the handler made them.
    pub fn new(name: impl Into<Arc<str>>, sink: Arc<dyn Sink>) -> Self {
        Self {
            name: name.into(),
            sink,
            encoder: None,
        }
    }
}

/// Counters a function reports when it ends.
#[derive(Debug, Default)]
pub struct Tally {
    /// Events finished by the handler.
    pub handled: AtomicU64,
    /// Output records acknowledged.
    pub outputs: AtomicU64,
    /// Events dead-lettered.
    pub dead_lettered: AtomicU64,
    /// Retries scheduled.
    pub retries: AtomicU64,
}

/// Handler-task pool bookkeeping shared with the scheduler.
#[derive(Debug, Default)]
pub struct Pool {
    /// Tasks alive.
    pub alive: AtomicUsize,
    /// Tasks running an item.
    pub busy: AtomicUsize,
}

/// What every handler task of one function shares.
pub struct FunctionShared {
    /// The function's name, metric handles and tally, for its events.
    pub scope: Scope,
    /// The handler.
    pub handler: Arc<dyn Handler>,
    /// Declared outputs.
    pub outputs: Vec<NamedSink>,
    /// The outputs' names, in `outputs` order.
    pub output_names: Vec<Arc<str>>,
    /// Per input: decodes payloads before the handler (`None`: as they are).
    pub decoders: Vec<Option<Arc<dyn PayloadDecoder>>>,
    /// The dead-letter sink.
    pub dead_letter: Arc<dyn Sink>,
    /// Name of the source of each input, for dead-letter headers.
    pub source_names: Vec<String>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// How outputs and dead letters are written: to their sinks, or
    /// (`exactly_once`) staged in the completion for the scheduler to write
    /// into a transaction. Chosen once, when the function starts.
    pub writer: Writer,
    /// Fewest tasks.
    pub min_tasks: usize,
    /// Idle time after which a task retires.
    pub idle_retire_after: Duration,
    /// Pool bookkeeping.
    pub pool: Pool,
    /// Bumped by the scheduler when it begins to drain partitions: a run
    /// that sees it move stops before its next item and gives the rest
    /// back, so the items queued behind a running one are left to the
    /// partition's next owner, as they would be in their lane.
    pub drains: AtomicU64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs until the work channel closes or the task retires for idleness.
pub async fn run_task(
    shared: Arc<FunctionShared>,
    work: async_channel::Receiver<Run>,
    done: tokio::sync::mpsc::Sender<RunReport>,
) {
    loop {
        // A run already waiting is taken without arming the idle timer:
        // under load that saves a timer entry and a clock read per run.
        let received = match work.try_recv() {
            Ok(run) => Ok(Ok(run)),
            Err(async_channel::TryRecvError::Closed) => break,
            Err(async_channel::TryRecvError::Empty) => {
                tokio::time::timeout(shared.idle_retire_after, work.recv()).await
            }
        };
        let run = match received {
            Ok(Ok(run)) => run,
            Ok(Err(_closed)) => break,
            Err(_idle) => {
                if try_retire(&shared) {
                    ConcurrencyScaledDown {
                        tasks: shared.pool.alive.load(AtomicOrdering::Relaxed),
                        idle_for: shared.idle_retire_after,
                    }
                    .emit(&shared.scope);
                    return;
                }
                continue;
            }
        };
        shared.pool.busy.fetch_add(1, AtomicOrdering::Relaxed);
        let report = process_run(&shared, run).await;
        shared.pool.busy.fetch_sub(1, AtomicOrdering::Relaxed);
        if done.send(report).await.is_err() {
            break;
        }
    }
    shared.pool.alive.fetch_sub(1, AtomicOrdering::Relaxed);
    HandlerTaskEnded.emit(&shared.scope);
}

/// How long a run may hold its task before the rest of it is given back.
pub const RUN_TIME_SLICE: Duration = Duration::from_millis(10);

/// Runs the items of a run in order (see [`RunReport`] for where a run
/// stops early and what it gives back).
pub async fn process_run(shared: &FunctionShared, run: Run) -> RunReport {
    let started = Instant::now();
    let mut report = RunReport {
        completions: Vec::with_capacity(run.items.len()),
        returned: Vec::new(),
    };
    let mut items = run.items.into_iter();
    while shared.drains.load(AtomicOrdering::Acquire) == run.drains {
        let Some(item) = items.next() else {
            break;
        };
        let in_lane = item.lane.is_some();
        let completion = process(shared, item).await;
        let stop = match completion.verdict {
            Verdict::Unwritable(_) => true,
            Verdict::RetryAfter(_) => in_lane,
            Verdict::Finished(_) | Verdict::Written(_) => false,
        };
        report.completions.push(completion);
        if stop || started.elapsed() >= RUN_TIME_SLICE {
            break;
        }
    }
    report.returned.extend(items);
    report
}

/// Retires this task if more than `min` remain (the caller emits
/// [`ConcurrencyScaledDown`]).
fn try_retire(shared: &FunctionShared) -> bool {
    shared
        .pool
        .alive
        .fetch_update(AtomicOrdering::AcqRel, AtomicOrdering::Acquire, |alive| {
            (alive > shared.min_tasks).then(|| alive - 1)
        })
        .is_ok()
}

/// Runs an item's stages until it finishes or must wait for a retry.
pub async fn process(shared: &FunctionShared, mut item: WorkItem) -> Completion {
    let started = Instant::now();
    let mut writes = shared.writer.begin();
    loop {
        let stage = std::mem::replace(&mut item.stage, Stage::Handle);
        let verdict = match stage {
            Stage::Handle => handle(shared, &mut item).await,
            Stage::Route(outputs) => {
                item.attempts += 1;
                route(shared, &mut item, outputs).await
            }
            Stage::Emit(pending) => writes.emit(shared, &mut item, pending).await,
            Stage::DeadLetter(record) => writes.dead_letter(shared, &mut item, record).await,
        };
        match verdict {
            Some(verdict) => {
                count_retry(shared, &verdict);
                let staged = writes.finish(&mut item, &verdict);
                return Completion {
                    item,
                    verdict,
                    staged,
                    service_time: started.elapsed(),
                };
            }
            None => continue, // moved on to the next stage
        }
    }
}

/// Counts a retry, when `verdict` is one.
fn count_retry(shared: &FunctionShared, verdict: &Verdict) {
    if let Verdict::RetryAfter(_) = verdict {
        RetryScheduled.emit(&shared.scope);
    }
}

/// Runs the handler once (the decode and handle stages). Returns `None`
/// when the item moved to another stage to run now.
async fn handle(shared: &FunctionShared, item: &mut WorkItem) -> Option<Verdict> {
    if let Some(failed) = stage::carried_decode_error(&item.event) {
        return fail(shared, item, failed);
    }
    item.attempts += 1;
    let ctx = Context::new(shared.scope.name.clone(), item.attempts).with_input(item.part.input);
    // The handler sees the decoded payload; the item keeps the original, so
    // a dead letter carries the bytes as they came.
    let mut event = item.event.clone();
    if let Some(decoder) = shared
        .decoders
        .get(item.part.input)
        .and_then(Option::as_ref)
    {
        if let Err(error) = stage::decode(&**decoder, &mut event).await {
            if !error.retryable {
                for (name, value) in error.dead_letter_headers() {
                    item.event.headers.set(name, value);
                }
            }
            return fail(shared, item, Failed::decode(error));
        }
    }
    let started = Instant::now();
    let result = stage::call_handler(&*shared.handler, event, &ctx, shared.retry.timeout).await;
    HandlerRan {
        elapsed: started.elapsed(),
    }
    .emit(&shared.scope);
    match result {
        Ok(outputs) => {
            item.state_changes = ctx.take_state_changes();
            route(shared, item, outputs).await
        }
        Err(failed) => fail(shared, item, failed),
    }
}

/// Resolves outputs to sinks and encodes them in each output's format;
/// moves the item to `Emit` (or finishes it when there is nothing to
/// write). An output that does not fit its format fails the attempt:
/// retryably when the schema registry is away, else to the dead letter.
async fn route(
    shared: &FunctionShared,
    item: &mut WorkItem,
    outputs: Vec<Output>,
) -> Option<Verdict> {
    // Kept only where an encoder may ask for a retry of the encoding.
    let kept = shared
        .outputs
        .iter()
        .any(|o| o.encoder.is_some())
        .then(|| outputs.clone());
    let mut pending = match stage::route(&shared.output_names, outputs) {
        Ok(pending) => pending,
        Err(failed) => return fail(shared, item, failed),
    };
    let encoder = |index: usize| shared.outputs.get(index).and_then(|o| o.encoder.as_deref());
    if let Err(failed) = stage::encode(&shared.output_names, encoder, &mut pending).await {
        let verdict = fail(shared, item, failed);
        if matches!(item.stage, Stage::Handle) {
            // Retry the encoding, not the handler: it succeeded, and a
            // stateful handler must not see the event twice.
            item.stage = Stage::Route(kept.unwrap_or_default());
        }
        return verdict;
    }
    if pending.is_empty() {
        return Some(finished_handled(shared, 0));
    }
    item.stage = Stage::Emit(pending);
    None
}

fn finished_handled(shared: &FunctionShared, outputs: usize) -> Verdict {
    EventHandled.emit(&shared.scope);
    Verdict::Finished(Outcome::Handled { outputs })
}

/// Records a failed attempt; schedules a retry or moves the item to its
/// dead letter (see [`stage::next`]).
pub(crate) fn fail(
    shared: &FunctionShared,
    item: &mut WorkItem,
    failed: Failed,
) -> Option<Verdict> {
    let next = stage::next(&failed, item.attempts, &shared.retry);
    let now = now_ms();
    let failure = item.failure.get_or_insert(Failure {
        reason: failed.reason,
        message: String::new(),
        first_ms: now,
        last_ms: now,
    });
    failure.reason = failed.reason;
    failure.message = failed.message;
    failure.last_ms = now;
    AttemptFailed {
        attempt: item.attempts,
        error: &failure.message,
        retrying: matches!(next, Next::Retry(_)),
    }
    .emit(&shared.scope);
    match next {
        Next::Retry(delay) => {
            item.stage = Stage::Handle;
            Some(Verdict::RetryAfter(delay))
        }
        Next::DeadLetter => {
            item.stage = Stage::DeadLetter(dead_letter_record(shared, item));
            None
        }
    }
}

/// The dead letter of an item: the original event plus provenance headers.
pub fn dead_letter_record(shared: &FunctionShared, item: &WorkItem) -> Record {
    let event = &item.event;
    let mut headers = event.headers.clone();
    headers.set(dead_letter::FUNCTION, shared.scope.name.to_string());
    let source = shared
        .source_names
        .get(item.part.input)
        .cloned()
        .unwrap_or_default();
    headers.set(dead_letter::SOURCE, source);
    headers.set(dead_letter::STREAM, event.position.stream.to_string());
    headers.set(dead_letter::PARTITION, event.position.partition.to_string());
    headers.set(dead_letter::OFFSET, event.position.offset.to_string());
    if let Some(key) = &event.key {
        headers.set(dead_letter::KEY, key.clone());
    }
    headers.set(dead_letter::ATTEMPTS, item.attempts.to_string());
    if let Some(failure) = &item.failure {
        headers.set(dead_letter::REASON, failure.reason);
        headers.set(dead_letter::ERROR, failure.message.clone());
        headers.set(dead_letter::FIRST_FAILURE_MS, failure.first_ms.to_string());
        headers.set(dead_letter::LAST_FAILURE_MS, failure.last_ms.to_string());
    }
    Record {
        key: event.key.clone(),
        payload: event.payload.clone(),
        headers,
        timestamp_ms: event.timestamp_ms,
    }
}
