//! The per-function scheduler: one task that owns all of a function's
//! bookkeeping (partitions, lanes, watermarks, retries) so none of it needs a
//! lock. Handler tasks only see work items and send back completions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

mod commit;
mod dispatch;
mod drain;
mod intake;
mod partition;
mod transact;

use commit::Committer;
use intake::{next_message, SourceSlot};

use partition::PartitionState;

use super::lanes::Lanes;
use super::scaler::LatencyMean;
use super::work::{Completion, PartKey, Run, RunReport, WorkItem};
use super::worker::{FunctionShared, Pool, Writer};
use super::{EngineError, EngineOptions, FunctionPlan, FunctionReport, SessionHost};
use crate::events::{
    DeadLetterFlushFailed, FunctionStarted, FunctionStopped, FunctionStopping, OutputFlushFailed,
    Scope, SourceCloseFailed,
};
use crate::policy::{InFlightLimits, Ordering, TransactionPolicy};

/// The scheduler of one function.
pub struct Scheduler {
    shared: Arc<FunctionShared>,
    pipeline: Arc<str>,
    session_host: SessionHost,
    sources: Vec<SourceSlot>,
    ordering: Ordering,
    max_tasks: usize,
    limits: InFlightLimits,
    commit_interval: Duration,
    drain_timeout: Duration,
    options: EngineOptions,
    partitions: HashMap<PartKey, PartitionState>,
    lanes: Lanes,
    parked: DelayQueue<WorkItem>,
    work_tx: async_channel::Sender<Run>,
    work_rx: async_channel::Receiver<Run>,
    done_tx: mpsc::Sender<RunReport>,
    done_rx: mpsc::Receiver<RunReport>,
    /// Runs of items whose lane moved on while their output writes await
    /// the sinks' acknowledgements (at-least-once and at-most-once):
    /// polled here rather than spawned, so a run costs no task and no
    /// channel hop for its acks.
    acks: FuturesUnordered<BoxFuture<'static, Vec<Completion>>>,
    /// The handler only computes (see `Handler::is_cpu_only`): cheap runs
    /// of it run on this task, with no hand-off.
    cpu_only_handler: bool,
    latency: LatencyMean,
    /// Since when every task has been busy with no event finishing.
    all_busy_since: Option<Instant>,
    next_epoch: u64,
    stopping: bool,
    fatal: Option<EngineError>,
    /// `exactly_once` settings.
    transaction: TransactionPolicy,
    /// How finished work is committed (chosen once, from `delivery`).
    committer: Committer,
    events_in: u64,
    last_commit: Instant,
    /// When an event was last admitted or finished: an early commit waits
    /// for [`IDLE_COMMIT_DELAY`] of quiet after it.
    last_activity: tokio::time::Instant,
    started: Instant,
}

/// How long everything read must have been finished, with no new event,
/// before the engine commits without waiting for the commit interval. A
/// source whose broker sends no more until it is acknowledged (an MQTT
/// session's in-flight window, a JetStream consumer's `max_ack_pending`)
/// would otherwise idle for the rest of each interval; under steady load a
/// source always has more, and commits stay on the interval.
const IDLE_COMMIT_DELAY: Duration = Duration::from_millis(5);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Scheduler {
    /// Checks the plan and prepares the scheduler; starts `min` tasks.
    pub fn start(plan: FunctionPlan, options: EngineOptions) -> Result<Self, EngineError> {
        let function = plan.name.to_string();
        let policy = plan.policy;
        if plan.sources.is_empty() || policy.concurrency.max == 0 {
            return Err(EngineError::Plan {
                function,
                message: "a function needs at least one input and `concurrency.max` of at least 1"
                    .to_owned(),
            });
        }
        if plan.handler.state().is_some() && policy.ordering == Ordering::None {
            return Err(EngineError::Plan {
                function,
                message: "the handler keeps state per key, and `ordering: none` would run one key's events at the same time and out of order: use `ordering: key` (keys in parallel) or `partition`".to_owned(),
            });
        }
        let cpu_only_handler = plan.handler.is_cpu_only();
        let shared = Arc::new(FunctionShared {
            scope: Scope::new(plan.name.clone()),
            handler: plan.handler,
            output_names: plan.outputs.iter().map(|o| o.name.clone()).collect(),
            decoders: plan.decoders,
            outputs: plan.outputs,
            dead_letter: plan.dead_letter,
            source_names: plan.sources.iter().map(|s| s.name().to_owned()).collect(),
            retry: policy.retry,
            writer: Writer::of(policy.delivery),
            min_tasks: policy.concurrency.min.min(policy.concurrency.max),
            idle_retire_after: options.scaler.idle_retire_after,
            pool: Pool::default(),
            drains: AtomicU64::new(0),
        });
        // The hand-off channel holds at most one run per task; everything
        // else waits in lanes, bounded by the in-flight limits.
        let (work_tx, work_rx) = async_channel::bounded(policy.concurrency.max);
        let (done_tx, done_rx) = mpsc::channel(policy.concurrency.max.max(16));
        let mut scheduler = Self {
            shared,
            pipeline: plan.pipeline,
            session_host: plan.session_host,
            sources: plan
                .sources
                .into_iter()
                .map(|source| SourceSlot {
                    source,
                    open: true,
                    failures: 0,
                    retry_at: None,
                })
                .collect(),
            ordering: policy.ordering,
            max_tasks: policy.concurrency.max,
            limits: policy.max_in_flight,
            commit_interval: policy.commit_interval,
            drain_timeout: policy.drain_timeout,
            options,
            partitions: HashMap::new(),
            lanes: Lanes::default(),
            parked: DelayQueue::new(),
            work_tx,
            work_rx,
            done_tx,
            done_rx,
            acks: FuturesUnordered::new(),
            cpu_only_handler,
            latency: LatencyMean::default(),
            all_busy_since: None,
            next_epoch: 0,
            stopping: false,
            fatal: None,
            transaction: policy.transaction,
            committer: Committer::plain(policy.delivery),
            events_in: 0,
            last_commit: Instant::now(),
            last_activity: tokio::time::Instant::now(),
            started: Instant::now(),
        };
        let min = scheduler.shared.min_tasks;
        if min > 0 {
            scheduler.spawn_tasks(min, &format!("`concurrency.min` is {min}"));
        }
        Ok(scheduler)
    }

    /// Runs until the sources end or `shutdown` fires, then drains, commits
    /// and closes.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<FunctionReport, EngineError> {
        let tick_every = self
            .committer
            .tick_every(self.commit_interval, self.transaction.interval);
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        FunctionStarted.emit(&self.shared.scope);
        loop {
            self.dispatch().await;
            if self.is_done() {
                break;
            }
            // Ready runs left over after a time slice on this task: look at
            // everything else first, then run them without waiting.
            let runnable = self.runs_inline() && !self.lanes.ready.is_empty();
            let intake = !self.stopping && self.sources.iter().any(|s| s.open);
            let maxes = self.intake_room();
            let idle_commit = self.idle_commit_at();
            let committing = self.committer.is_committing();
            tokio::select! {
                biased;
                Some(report) = self.done_rx.recv() => {
                    self.on_run_report(report);
                    self.after_completions().await;
                }
                Some(completions) = self.acks.next(), if !self.acks.is_empty() => {
                    self.on_acknowledged(completions);
                    self.after_completions().await;
                }
                Some(expired) = self.parked.next(), if !self.parked.is_empty() => {
                    self.unpark(expired.into_inner());
                }
                _ = shutdown.cancelled(), if !self.stopping => {
                    FunctionStopping.emit(&self.shared.scope);
                    self.begin_stop();
                    self.finish_drains().await;
                }
                outcome = self.committer.outcome(), if committing => {
                    self.on_commit_outcome(outcome).await;
                    self.apply_backpressure();
                    self.finish_drains().await;
                }
                _ = tick.tick() => {
                    self.housekeeping().await;
                }
                _ = tokio::time::sleep_until(idle_commit.unwrap_or_else(tokio::time::Instant::now)), if idle_commit.is_some() => {
                    self.commit(None).await;
                }
                (index, message) = next_message(&mut self.sources, &maxes), if intake => {
                    self.on_message(index, message).await?;
                }
                () = std::future::ready(()), if runnable => {}
            }
        }
        self.final_commit().await;
        self.close().await;
        if let Some(error) = self.fatal.take() {
            return Err(error);
        }
        let tally = &self.shared.scope.tally;
        Ok(FunctionReport {
            function: self.shared.scope.name.to_string(),
            events_in: self.events_in,
            handled: tally.handled.load(AtomicOrdering::Relaxed),
            outputs: tally.outputs.load(AtomicOrdering::Relaxed),
            dead_lettered: tally.dead_lettered.load(AtomicOrdering::Relaxed),
            retries: tally.retries.load(AtomicOrdering::Relaxed),
            elapsed: self.started.elapsed(),
        })
    }

    /// After a completion: takes every other completion already there,
    /// then moves the work on (exactly-once writes and commits,
    /// backpressure, drains).
    async fn after_completions(&mut self) {
        self.last_activity = tokio::time::Instant::now();
        loop {
            let mut took = false;
            while let Ok(report) = self.done_rx.try_recv() {
                self.on_run_report(report);
                took = true;
            }
            while let Some(Some(completions)) = self.acks.next().now_or_never() {
                self.on_acknowledged(completions);
                took = true;
            }
            if !took {
                break;
            }
        }
        self.commit_after_completions().await;
        self.apply_backpressure();
        self.finish_drains().await;
    }

    /// When to commit early, if now everything read is finished and
    /// something is left to commit (see [`IDLE_COMMIT_DELAY`]); `None`
    /// leaves commits to the interval.
    fn idle_commit_at(&self) -> Option<tokio::time::Instant> {
        if self.stopping || !self.committer.allows_early_commit() {
            return None;
        }
        if self.partitions.values().any(|p| p.unfinished > 0) {
            return None;
        }
        let uncommitted = self.partitions.values().any(|p| {
            p.watermark
                .committable()
                .is_some_and(|next| p.committed.is_none_or(|c| next > c))
        });
        let quiet_since = self
            .last_activity
            .max(tokio::time::Instant::from_std(self.last_commit));
        uncommitted.then_some(quiet_since + IDLE_COMMIT_DELAY)
    }

    /// Done when intake is over and nothing is left to finish: after
    /// shutdown, every partition drained; after the sources ended, every
    /// event finished.
    fn is_done(&self) -> bool {
        if self.stopping {
            return self.partitions.is_empty();
        }
        !self.sources.iter().any(|s| s.open)
            && self.partitions.values().all(|p| p.unfinished == 0)
            && self.parked.is_empty()
    }

    async fn housekeeping(&mut self) {
        self.commit_on_tick().await;
        self.apply_backpressure();
        self.finish_drains().await;
    }

    async fn close(&mut self) {
        self.work_tx.close();
        let scope = &self.shared.scope;
        for slot in &mut self.sources {
            if let Err(error) = slot.source.close().await {
                SourceCloseFailed(&error).emit(scope.connector(slot.source.name()));
            }
        }
        for output in &self.shared.outputs {
            if let Err(error) = output.sink.flush().await {
                OutputFlushFailed(&error).emit(scope.connector(&output.name));
            }
        }
        if let Err(error) = self.shared.dead_letter.flush().await {
            DeadLetterFlushFailed(&error).emit(scope);
        }
        FunctionStopped {
            events: self.events_in,
        }
        .emit(scope);
    }
}
