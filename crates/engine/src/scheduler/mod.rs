//! The per-function scheduler: one task that owns all of a function's
//! bookkeeping (partitions, lanes, watermarks, retries) so none of it needs a
//! lock. Handler tasks only see work items and send back completions.

use std::collections::HashMap;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use spate_connector::{Event, Source, SourceError, SourceMessage};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;
use tracing::{debug, error, info, info_span, warn};

mod drain;
mod partition;
mod transact;

use partition::{DrainReason, PartitionState};
use transact::Transactions;

use super::lanes::Lanes;
use super::scaler::{self, LatencyMean, Load};
use super::work::{Completion, LaneKey, Outcome, PartKey, Stage, Verdict, WorkItem};
use super::worker::{self, FunctionShared, Pool, Tally};
use super::{backoff, EngineError, EngineOptions, FunctionPlan, FunctionReport, SessionHost};
use crate::metrics::FunctionMetrics;
use crate::policy::{Delivery, InFlightLimits, Ordering, TransactionPolicy};

struct SourceSlot {
    source: Box<dyn Source>,
    /// False once the source said `End`.
    open: bool,
    failures: u32,
    retry_at: Option<tokio::time::Instant>,
}

/// The scheduler of one function.
pub struct Scheduler {
    shared: Arc<FunctionShared>,
    pipeline: Arc<str>,
    session_host: SessionHost,
    sources: Vec<SourceSlot>,
    delivery: Delivery,
    ordering: Ordering,
    max_tasks: usize,
    limits: InFlightLimits,
    commit_interval: Duration,
    drain_timeout: Duration,
    options: EngineOptions,
    partitions: HashMap<PartKey, PartitionState>,
    lanes: Lanes,
    parked: DelayQueue<WorkItem>,
    work_tx: async_channel::Sender<WorkItem>,
    work_rx: async_channel::Receiver<WorkItem>,
    done_tx: mpsc::Sender<Completion>,
    done_rx: mpsc::Receiver<Completion>,
    /// Items whose lane moved on while their output writes await the
    /// sinks' acknowledgements (at-least-once and at-most-once): polled
    /// here rather than spawned, so an event costs no task and no channel
    /// hop for its acks.
    acks: FuturesUnordered<BoxFuture<'static, Completion>>,
    latency: LatencyMean,
    /// Since when every task has been busy with no event finishing.
    all_busy_since: Option<Instant>,
    next_epoch: u64,
    stopping: bool,
    fatal: Option<EngineError>,
    /// `exactly_once` settings, and its session once open.
    transaction: TransactionPolicy,
    transactions: Option<Transactions>,
    events_in: u64,
    last_commit: Instant,
    /// When an event was last admitted or finished: an early commit waits
    /// for [`IDLE_COMMIT_DELAY`] of quiet after it.
    last_activity: tokio::time::Instant,
    /// The last plain (not transactional) commit failed: no early commits
    /// until one on the interval succeeds.
    commit_failing: bool,
    started: Instant,
}

/// How long everything read must have been finished, with no new event,
/// before the engine commits without waiting for the commit interval. A
/// source whose broker sends no more until it is acknowledged (an MQTT
/// session's in-flight window, a JetStream consumer's `max_ack_pending`)
/// would otherwise idle for the rest of each interval; under steady load a
/// source always has more, and commits stay on the interval.
const IDLE_COMMIT_DELAY: Duration = Duration::from_millis(5);

/// Waits for the first source with something to say; source `i` is asked
/// for at most `maxes[i]` events.
async fn next_message(
    sources: &mut [SourceSlot],
    maxes: &[usize],
) -> (usize, Result<SourceMessage, SourceError>) {
    let waits = sources
        .iter_mut()
        .enumerate()
        .filter(|(_, s)| s.open)
        .map(|(i, slot)| {
            let max = maxes.get(i).copied().unwrap_or(1);
            Box::pin(async move {
                if let Some(at) = slot.retry_at {
                    tokio::time::sleep_until(at).await;
                }
                (i, slot.source.next(max).await)
            })
        });
    futures::future::select_all(waits).await.0
}

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
        let metrics = FunctionMetrics::new(&plan.name);
        let shared = Arc::new(FunctionShared {
            name: plan.name.clone(),
            handler: plan.handler,
            output_names: plan.outputs.iter().map(|o| o.name.clone()).collect(),
            decoders: plan.decoders,
            outputs: plan.outputs,
            dead_letter: plan.dead_letter,
            source_names: plan.sources.iter().map(|s| s.name().to_owned()).collect(),
            retry: policy.retry,
            staging: policy.delivery == Delivery::ExactlyOnce,
            min_tasks: policy.concurrency.min.min(policy.concurrency.max),
            idle_retire_after: options.scaler.idle_retire_after,
            metrics,
            pool: Pool::default(),
            tally: Tally::default(),
        });
        // The hand-off channel holds at most one item per task; everything
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
            delivery: policy.delivery,
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
            latency: LatencyMean::default(),
            all_busy_since: None,
            next_epoch: 0,
            stopping: false,
            fatal: None,
            transaction: policy.transaction,
            transactions: None,
            events_in: 0,
            last_commit: Instant::now(),
            last_activity: tokio::time::Instant::now(),
            commit_failing: false,
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
        let mut tick_every = self.commit_interval.min(Duration::from_millis(100));
        if self.transactions.is_some() {
            tick_every = tick_every.min(self.transaction.interval);
        }
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!(function = %self.shared.name, "function started");
        loop {
            self.dispatch();
            if self.is_done() {
                break;
            }
            let intake = !self.stopping && self.sources.iter().any(|s| s.open);
            let maxes = self.intake_room();
            let idle_commit = self.idle_commit_at();
            let committing = self
                .transactions
                .as_ref()
                .is_some_and(|tx| tx.committing.is_some());
            tokio::select! {
                biased;
                Some(completion) = self.done_rx.recv() => {
                    self.on_completion(completion);
                    self.after_completions().await;
                }
                Some(completion) = self.acks.next(), if !self.acks.is_empty() => {
                    self.on_completion(completion);
                    self.after_completions().await;
                }
                Some(expired) = self.parked.next(), if !self.parked.is_empty() => {
                    self.unpark(expired.into_inner());
                }
                _ = shutdown.cancelled(), if !self.stopping => {
                    info!(function = %self.shared.name, "stopping intake, draining in-flight events");
                    self.begin_stop();
                    self.finish_drains().await;
                }
                outcome = transact::commit_outcome(&mut self.transactions), if committing => {
                    self.on_commit_outcome(outcome).await;
                    self.write_ready().await;
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
            }
        }
        if self.transactions.is_some() {
            self.final_transaction().await;
        } else {
            self.commit(None).await;
        }
        self.close().await;
        if let Some(error) = self.fatal.take() {
            return Err(error);
        }
        let tally = &self.shared.tally;
        Ok(FunctionReport {
            function: self.shared.name.to_string(),
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
            while let Ok(completion) = self.done_rx.try_recv() {
                self.on_completion(completion);
                took = true;
            }
            while let Some(Some(completion)) = self.acks.next().now_or_never() {
                self.on_completion(completion);
                took = true;
            }
            if !took {
                break;
            }
        }
        if self.transactions.is_some() {
            self.write_ready().await;
            if self.transaction_due() {
                self.start_transaction_commit_now().await;
            }
        }
        self.apply_backpressure();
        self.finish_drains().await;
    }

    /// When to commit early, if now everything read is finished and
    /// something is left to commit (see [`IDLE_COMMIT_DELAY`]); `None`
    /// leaves commits to the interval.
    fn idle_commit_at(&self) -> Option<tokio::time::Instant> {
        if self.stopping || self.delivery == Delivery::AtMostOnce || self.commit_failing {
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
        let transaction_waits = match self.transactions.as_ref() {
            None => false,
            Some(tx) => !tx.can_commit_now(),
        };
        let quiet_since = self
            .last_activity
            .max(tokio::time::Instant::from_std(self.last_commit));
        (uncommitted && !transaction_waits).then_some(quiet_since + IDLE_COMMIT_DELAY)
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

    async fn on_message(
        &mut self,
        index: usize,
        message: Result<SourceMessage, SourceError>,
    ) -> Result<(), EngineError> {
        let slot = &mut self.sources[index];
        match message {
            Err(error) if error.is_retryable() => {
                self.options.readiness.failed(self.readiness_key(index));
                let slot = &mut self.sources[index];
                slot.failures += 1;
                let delay = backoff::delay(
                    Duration::from_millis(100),
                    Duration::from_secs(5),
                    slot.failures,
                );
                slot.retry_at = Some(tokio::time::Instant::now() + delay);
                // Once per outage; the retries are quiet until it recovers.
                if slot.failures == 1 {
                    warn!(function = %self.shared.name, source = slot.source.name(), %error, "source read failed; retrying with backoff");
                } else {
                    debug!(function = %self.shared.name, source = slot.source.name(), %error, retry_in = ?delay, failures = slot.failures, "source read failed again");
                }
            }
            Err(error) => {
                error!(function = %self.shared.name, source = slot.source.name(), %error, "source failed; stopping the function");
                self.fatal = Some(EngineError::Source {
                    function: self.shared.name.to_string(),
                    source: error,
                });
                self.begin_stop();
            }
            Ok(SourceMessage::Events(events)) => {
                let recovered = slot.failures > 0;
                if recovered {
                    info!(function = %self.shared.name, source = slot.source.name(), failures = slot.failures, "source reads again");
                }
                slot.failures = 0;
                slot.retry_at = None;
                if recovered {
                    self.mark_ready(index, true);
                }
                self.last_activity = tokio::time::Instant::now();
                let span = info_span!("batch", function = %self.shared.name, events = events.len());
                let _entered = span.enter();
                for event in events {
                    self.admit(index, event)?;
                }
                drop(_entered);
                if self.delivery == Delivery::AtMostOnce {
                    self.commit(None).await;
                }
                self.apply_backpressure();
            }
            Ok(SourceMessage::Assigned(parts)) => {
                info!(function = %self.shared.name, source = slot.source.name(), partitions = ?parts, "partitions assigned");
                slot.failures = 0;
                self.mark_ready(index, true);
                // A partition given back while still draining: end that drain
                // now (commit what finished, release) before starting afresh.
                let now = Instant::now();
                let mut cut_short = false;
                for partition in &parts {
                    let key = PartKey {
                        input: index,
                        partition: *partition,
                    };
                    if let Some((deadline, _)) = self
                        .partitions
                        .get_mut(&key)
                        .and_then(|p| p.draining.as_mut())
                    {
                        *deadline = now;
                        cut_short = true;
                    }
                }
                if cut_short {
                    self.finish_drains().await;
                }
                for partition in &parts {
                    let key = PartKey {
                        input: index,
                        partition: *partition,
                    };
                    self.next_epoch += 1;
                    if let Some(old) = self
                        .partitions
                        .insert(key, PartitionState::new(self.next_epoch))
                    {
                        self.forget(key, &old);
                    }
                }
                self.resume_assigned(index, &parts).await?;
            }
            Ok(SourceMessage::Revoked(parts)) => {
                info!(function = %self.shared.name, source = slot.source.name(), partitions = ?parts, "partitions revoked; draining");
                let keys: Vec<PartKey> = parts
                    .iter()
                    .map(|&partition| PartKey {
                        input: index,
                        partition,
                    })
                    .collect();
                self.begin_drain(&keys, DrainReason::Revoked);
                self.finish_drains().await;
            }
            Ok(SourceMessage::End) => {
                debug!(function = %self.shared.name, source = slot.source.name(), "source ended");
                slot.open = false;
                self.mark_ready(index, true);
            }
        }
        Ok(())
    }

    /// Records on the readiness board whether source `input` delivers.
    fn mark_ready(&self, input: usize, ready: bool) {
        self.options.readiness.set(self.readiness_key(input), ready);
    }

    fn readiness_key(&self, input: usize) -> super::readiness::SourceKey {
        super::readiness::SourceKey {
            pipeline: self.pipeline.clone(),
            function: self.shared.name.clone(),
            input,
        }
    }

    fn admit(&mut self, input: usize, event: Event) -> Result<(), EngineError> {
        let key = PartKey {
            input,
            partition: event.position.partition,
        };
        if !self.partitions.contains_key(&key) {
            // A source without assignments (or one that skipped it): the
            // partition is ours from its first event.
            self.next_epoch += 1;
            self.partitions
                .insert(key, PartitionState::new(self.next_epoch));
        }
        let Some(part) = self.partitions.get_mut(&key) else {
            return Ok(());
        };
        if part.draining.is_some() {
            debug!(function = %self.shared.name, partition = key.partition, "event of a draining partition left for its next owner");
            return Ok(());
        }
        part.watermark
            .receive(event.position.offset, event.timestamp_ms)
            .map_err(|error| EngineError::Contract {
                function: self.shared.name.to_string(),
                source_name: self.shared.source_names[input].clone(),
                partition: key.partition,
                error,
            })?;
        let bytes = event.byte_len() as u64;
        part.unfinished += 1;
        part.bytes += bytes;
        self.options.budget.add(bytes);
        self.events_in += 1;
        self.shared.metrics.events_in.increment(1);
        self.shared.metrics.in_flight.increment(1.0);
        let lane = match self.ordering {
            Ordering::Partition => Some(LaneKey::Partition(key)),
            Ordering::Key => Some(LaneKey::Key(key, event.key.clone())),
            Ordering::None => None,
        };
        self.lanes.admit(WorkItem {
            event,
            part: key,
            epoch: part.epoch,
            lane,
            bytes,
            stage: Stage::Handle,
            attempts: 0,
            write_failures: 0,
            failure: None,
            state_changes: Vec::new(),
        });
        Ok(())
    }

    /// Hands runnable items to tasks and scales the pool.
    fn dispatch(&mut self) {
        while let Some(item) = self.lanes.ready.pop_front() {
            let (key, epoch) = (item.part, item.epoch);
            match self.work_tx.try_send(item) {
                Ok(()) => {
                    if let Some(part) = self.partitions.get_mut(&key).filter(|p| p.epoch == epoch) {
                        part.running += 1;
                    }
                }
                Err(
                    async_channel::TrySendError::Full(item)
                    | async_channel::TrySendError::Closed(item),
                ) => {
                    self.lanes.ready.push_front(item);
                    break;
                }
            }
        }
        let tasks = self.shared.pool.alive.load(AtomicOrdering::Acquire);
        let busy = self.shared.pool.busy.load(AtomicOrdering::Relaxed);
        if tasks == 0 || busy < tasks {
            self.all_busy_since = None;
        } else if self.all_busy_since.is_none() {
            self.all_busy_since = Some(Instant::now());
        }
        let stalled = self.all_busy_since.map(|since| since.elapsed());
        let latency = match (self.latency.get(), stalled) {
            (Some(mean), Some(stalled)) => Some(mean.max(stalled)),
            (mean, stalled) => mean.or(stalled),
        };
        let load = Load {
            backlog: self.lanes.ready.len() + self.work_tx.len(),
            tasks,
            busy,
            latency,
        };
        if let Some(up) = scaler::scale_up(load, self.max_tasks, &self.options.scaler) {
            self.spawn_tasks(up.add, &up.reason);
        }
    }

    fn spawn_tasks(&mut self, count: usize, reason: &str) {
        let before = self
            .shared
            .pool
            .alive
            .fetch_add(count, AtomicOrdering::AcqRel);
        self.shared.metrics.concurrency.increment(count as f64);
        self.shared.metrics.scaled_up.increment(1);
        info!(function = %self.shared.name, from = before, to = before + count, reason, "handler concurrency up");
        for _ in 0..count {
            tokio::spawn(worker::run_task(
                self.shared.clone(),
                self.work_rx.clone(),
                self.done_tx.clone(),
            ));
        }
    }

    fn on_completion(&mut self, completion: Completion) {
        // Waiting for acknowledgements occupies no task: it is not latency
        // the scaler should plan with (those completions report zero).
        if !completion.service_time.is_zero() {
            self.latency.observe(completion.service_time);
        }
        if self.all_busy_since.is_some() {
            self.all_busy_since = Some(Instant::now());
        }
        let item = completion.item;
        let Some(part) = self
            .partitions
            .get_mut(&item.part)
            .filter(|p| p.epoch == item.epoch)
        else {
            return; // its partition was released; the next owner redoes it
        };
        match completion.verdict {
            Verdict::Written(accepted) => {
                // The lane moves on now; the item stays running (and its
                // offset uncommitted) until its writes are acknowledged.
                let mut item = item;
                if let Some(lane) = item.lane.take() {
                    if part.draining.is_none() {
                        self.lanes.release(&lane);
                    }
                }
                self.acks.push(Box::pin(worker::await_acks(
                    self.shared.clone(),
                    item,
                    accepted,
                )));
            }
            Verdict::Unwritable(message) => {
                part.running = part.running.saturating_sub(1);
                error!(function = %self.shared.name, %message, "a dead letter cannot be written; stopping the function");
                self.abandon(&item);
                if self.fatal.is_none() {
                    self.fatal = Some(EngineError::DeadLetterRejected {
                        function: self.shared.name.to_string(),
                        message,
                    });
                }
                self.begin_stop();
            }
            Verdict::RetryAfter(delay) => {
                part.running = part.running.saturating_sub(1);
                if part.draining.is_none() && !self.stopping {
                    self.parked.insert(item, delay);
                } else {
                    self.abandon(&item);
                }
            }
            Verdict::Finished(outcome) => {
                part.running = part.running.saturating_sub(1);
                part.watermark.finish(item.event.position.offset);
                if matches!(outcome, Outcome::DeadLettered) {
                    self.sources[item.part.input]
                        .source
                        .dead_lettered(item.part.partition, item.event.position.offset);
                }
                part.unfinished -= 1;
                let draining = part.draining.is_some();
                if completion.staged.is_empty() {
                    part.bytes -= item.bytes;
                    self.options.budget.sub(1, item.bytes);
                } else {
                    // The bytes stay counted until the records commit.
                    self.options.budget.sub(1, 0);
                    self.stage(&item, completion.staged);
                }
                self.shared.metrics.in_flight.decrement(1.0);
                if !draining {
                    if let Some(lane) = &item.lane {
                        self.lanes.release(lane);
                    }
                }
            }
        }
    }

    fn unpark(&mut self, item: WorkItem) {
        let live = self
            .partitions
            .get(&item.part)
            .is_some_and(|p| p.epoch == item.epoch && p.draining.is_none());
        if live && !self.stopping {
            self.lanes.ready.push_back(item);
        } else {
            self.abandon(&item);
        }
    }

    /// Lets go of an item that will not finish here (its partition is being
    /// drained): it stays unfinished in the watermark, so its offset is not
    /// committed and the next owner reads it again.
    fn abandon(&mut self, item: &WorkItem) {
        if let Some(part) = self
            .partitions
            .get_mut(&item.part)
            .filter(|p| p.epoch == item.epoch)
        {
            part.unfinished -= 1;
            part.bytes -= item.bytes;
            self.options.budget.sub(1, item.bytes);
            self.shared.metrics.in_flight.decrement(1.0);
        }
    }

    /// Releases what a dropped partition state still held in the budget,
    /// and the handler's state of that partition (its uncommitted part
    /// must not count again when the partition's events are read again).
    fn forget(&self, key: PartKey, part: &PartitionState) {
        self.options.budget.sub(part.unfinished, part.bytes);
        self.shared
            .metrics
            .in_flight
            .decrement(part.unfinished as f64);
        if let Some(state) = self.shared.handler.state() {
            state.forget(key.input, key.partition);
        }
    }

    async fn housekeeping(&mut self) {
        if self.transactions.is_some() {
            if self.transaction_due() {
                self.start_transaction_commit_now().await;
            }
            if self.last_commit.elapsed() >= self.commit_interval {
                self.last_commit = Instant::now();
                self.export_partition_metrics();
            }
        } else if self.last_commit.elapsed() >= self.commit_interval {
            self.commit(None).await;
            self.export_partition_metrics();
        }
        self.apply_backpressure();
        self.finish_drains().await;
    }

    async fn close(&mut self) {
        self.work_tx.close();
        for slot in &mut self.sources {
            if let Err(error) = slot.source.close().await {
                warn!(function = %self.shared.name, source = slot.source.name(), %error, "closing source failed");
            }
        }
        for output in &self.shared.outputs {
            if let Err(error) = output.sink.flush().await {
                warn!(function = %self.shared.name, output = %output.name, %error, "flushing output failed");
            }
        }
        if let Err(error) = self.shared.dead_letter.flush().await {
            warn!(function = %self.shared.name, %error, "flushing dead-letter sink failed");
        }
        info!(function = %self.shared.name, events = self.events_in, "function stopped");
    }
}
