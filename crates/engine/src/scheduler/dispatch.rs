//! Lanes and dispatch: hands runs of runnable items to handler tasks (or,
//! for a CPU-only handler of small cost, runs them on the scheduler's own
//! task), scales the task pool, and takes completions back — releasing a
//! lane the moment its order no longer binds, and never finishing an event
//! of a partition that was let go.

use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::partition::PartitionState;
use super::Scheduler;
use crate::events::{ConcurrencyScaledUp, DeadLetterUnwritable, EventFinished, EventsAbandoned};
use crate::policy::Ordering;
use crate::scaler::{self, Load};
use crate::work::{Accepted, Completion, Outcome, PartKey, Run, RunReport, Verdict, WorkItem};
use crate::worker::{self, RUN_TIME_SLICE};
use crate::EngineError;

/// Most items handed over in one run.
const MAX_RUN: usize = 512;

/// A CPU-only handler whose mean cost per event is at most this runs on
/// the scheduler's task; above it, events go to the task pool, where
/// several run at once.
const INLINE_COST_LIMIT: Duration = Duration::from_micros(100);

/// What became of an item's lane when its completion was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LaneFate {
    /// The lane may move on.
    Release,
    /// The item still holds it (parked for a retry), or it no longer
    /// matters (the partition is draining or gone).
    Hold,
}

impl Scheduler {
    /// Hands runnable items on: runs them here when the handler is CPU-only
    /// and cheap, else sends them to tasks and scales the pool.
    pub(super) async fn dispatch(&mut self) {
        if self.runs_inline() {
            if !self.lanes.ready.is_empty() {
                self.dispatch_inline().await;
            }
        } else {
            self.dispatch_to_tasks();
        }
    }

    /// Whether runs are run on this task (see [`INLINE_COST_LIMIT`]).
    pub(super) fn runs_inline(&self) -> bool {
        self.cpu_only_handler
            && self
                .latency
                .get()
                .is_none_or(|mean| mean <= INLINE_COST_LIMIT)
    }

    /// Runs ready runs on this task for up to one time slice.
    ///
    /// While a run waits (a sink's `send` may wait for room that only
    /// resolving earlier writes frees, as a JetStream context's
    /// acknowledgement permits), the pending acknowledgements are driven
    /// too: waiting on them from the task that alone polls them would
    /// never end.
    async fn dispatch_inline(&mut self) {
        let started = Instant::now();
        let mut acknowledged = Vec::new();
        while let Some(run) = self.next_run(MAX_RUN) {
            self.count_running(&run);
            let drains = self.shared.drains.load(AtomicOrdering::Acquire);
            let shared = self.shared.clone();
            let mut processing =
                std::pin::pin!(worker::process_run(&shared, Run { items: run, drains }));
            let report = loop {
                tokio::select! {
                    biased;
                    report = &mut processing => break report,
                    Some(completions) = self.acks.next(), if !self.acks.is_empty() => {
                        acknowledged.push(completions);
                    }
                }
            };
            self.on_run_report(report);
            for completions in acknowledged.drain(..) {
                self.on_acknowledged(completions);
            }
            if started.elapsed() >= RUN_TIME_SLICE {
                break;
            }
        }
        self.after_completions().await;
    }

    /// Sends runs to tasks while the hand-off has room, and scales the pool.
    fn dispatch_to_tasks(&mut self) {
        let slots = (self.work_tx.capacity().unwrap_or(1)).saturating_sub(self.work_tx.len());
        let runs = if self.ordering == Ordering::None {
            self.dealt_runs(slots)
        } else {
            (0..slots).map_while(|_| self.next_run(MAX_RUN)).collect()
        };
        let drains = self.shared.drains.load(AtomicOrdering::Acquire);
        for items in runs {
            self.count_running(&items);
            if let Err(
                async_channel::TrySendError::Full(run) | async_channel::TrySendError::Closed(run),
            ) = self.work_tx.try_send(Run { items, drains })
            {
                self.uncount_running(&run.items);
                self.give_back(run.items, false);
            }
        }
        self.scale();
    }

    /// Without lanes: up to `slots` runs dealt round-robin from the ready
    /// items, so that every task can have one and the events in flight at
    /// any moment are the earliest ones (a drain then leaves a finished
    /// prefix, as when events are handed over one by one).
    fn dealt_runs(&mut self, slots: usize) -> Vec<Vec<WorkItem>> {
        let ready = self.lanes.ready.len();
        let share = ready.div_ceil(self.max_tasks).clamp(1, MAX_RUN);
        let take = ready.min(share * slots);
        let count = take.div_ceil(share);
        let mut runs: Vec<Vec<WorkItem>> = (0..count).map(|_| Vec::with_capacity(share)).collect();
        for (i, item) in self.lanes.ready.drain(..take).enumerate() {
            runs[i % count].push(item);
        }
        runs
    }

    /// The next run: a ready item and, if it has a lane, up to `max - 1`
    /// items waiting behind it in that lane; without a lane, up to `max`
    /// ready items without one.
    fn next_run(&mut self, max: usize) -> Option<Vec<WorkItem>> {
        let head = self.lanes.ready.pop_front()?;
        let lane = head.lane.clone();
        let mut run = Vec::with_capacity(max.min(self.lanes.ready.len() + 16));
        run.push(head);
        match lane {
            Some(lane) => self.lanes.take_following(&lane, max - 1, &mut run),
            None => {
                while run.len() < max && self.lanes.ready.front().is_some_and(|i| i.lane.is_none())
                {
                    run.extend(self.lanes.ready.pop_front());
                }
            }
        }
        Some(run)
    }

    /// Counts a run's items as running in their partitions (items of
    /// partitions let go are not).
    fn count_running(&mut self, run: &[WorkItem]) {
        for (key, epoch, n) in partition_spans(run) {
            if let Some(part) = self.live_part(key, epoch) {
                part.running += n;
            }
        }
    }

    /// Undoes [`Self::count_running`] for a run that was not handed over.
    fn uncount_running(&mut self, run: &[WorkItem]) {
        for (key, epoch, n) in partition_spans(run) {
            if let Some(part) = self.live_part(key, epoch) {
                part.running = part.running.saturating_sub(n);
            }
        }
    }

    fn live_part(&mut self, key: PartKey, epoch: u64) -> Option<&mut PartitionState> {
        self.partitions.get_mut(&key).filter(|p| p.epoch == epoch)
    }

    /// Puts not-started items back: the first becomes runnable again (at
    /// the front, keeping its turn) unless `lane_held` (an item of the run
    /// is parked for a retry and holds the lane), the rest wait in their
    /// lane; items of partitions that are draining or gone are abandoned.
    fn give_back(&mut self, items: Vec<WorkItem>, lane_held: bool) {
        let mut keep = Vec::with_capacity(items.len());
        for item in items {
            let live = !self.stopping
                && self
                    .partitions
                    .get(&item.part)
                    .is_some_and(|p| p.epoch == item.epoch && p.draining.is_none());
            if live {
                keep.push(item);
            } else {
                self.abandon(&item);
            }
        }
        let Some(lane) = keep.first().and_then(|i| i.lane.clone()) else {
            for item in keep.into_iter().rev() {
                self.lanes.ready.push_front(item);
            }
            return;
        };
        let mut keep = keep.into_iter();
        if !lane_held {
            if let Some(first) = keep.next() {
                self.lanes.ready.push_front(first);
            }
        }
        self.lanes.put_back(&lane, keep.collect());
    }

    /// Scales the pool up when runnable work waits for busy tasks.
    fn scale(&mut self) {
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

    pub(super) fn spawn_tasks(&mut self, count: usize, reason: &str) {
        let before = self
            .shared
            .pool
            .alive
            .fetch_add(count, AtomicOrdering::AcqRel);
        ConcurrencyScaledUp {
            from: before,
            added: count,
            reason,
        }
        .emit(&self.shared.scope);
        for _ in 0..count {
            tokio::spawn(worker::run_task(
                self.shared.clone(),
                self.work_rx.clone(),
                self.done_tx.clone(),
            ));
        }
    }

    /// Takes a run's report: its completions in order, then what it gave
    /// back; its lane is released once, at the end, if the run left it
    /// free.
    pub(super) fn on_run_report(&mut self, report: RunReport) {
        let RunReport {
            completions,
            returned,
        } = report;
        let lane = completions
            .first()
            .map(|c| &c.item)
            .or(returned.first())
            .and_then(|item| item.lane.clone());
        let mut written = Vec::new();
        let mut fate = None;
        for completion in completions {
            fate = Some(self.on_completion(completion, &mut written));
        }
        self.await_written(written);
        if !returned.is_empty() {
            // The run stopped early: behind a parked retry (which holds the
            // lane), or at its time slice or a drain (the next item takes
            // the lane, if its partition is still ours).
            for item in &returned {
                if let Some(part) = self.live_part(item.part, item.epoch) {
                    part.running = part.running.saturating_sub(1);
                }
            }
            let parked = fate == Some(LaneFate::Hold);
            self.give_back(returned, parked);
        } else if fate == Some(LaneFate::Release) {
            if let Some(lane) = lane {
                self.lanes.release(&lane);
            }
        }
    }

    /// Takes the completions of acknowledgements awaited for a run.
    pub(super) fn on_acknowledged(&mut self, completions: Vec<Completion>) {
        let mut written = Vec::new();
        for completion in completions {
            // These items gave their lane up when they were written.
            self.on_completion(completion, &mut written);
        }
        self.await_written(written);
    }

    /// Awaits the acknowledgements of a run's written items as one future.
    fn await_written(&mut self, written: Vec<(WorkItem, Accepted)>) {
        if !written.is_empty() {
            self.acks.push(Box::pin(worker::await_run_acks(
                self.shared.clone(),
                written,
            )));
        }
    }

    /// Applies one item's completion; an item whose outputs were accepted
    /// and await their acknowledgements goes to `written`. Says what became
    /// of the item's lane.
    fn on_completion(
        &mut self,
        completion: Completion,
        written: &mut Vec<(WorkItem, Accepted)>,
    ) -> LaneFate {
        // Waiting for acknowledgements occupies no task: it is not latency
        // the scaler should plan with (those completions report zero).
        if !completion.service_time.is_zero() {
            self.latency.observe(completion.service_time);
        }
        if self.all_busy_since.is_some() {
            self.all_busy_since = Some(Instant::now());
        }
        let mut item = completion.item;
        let Some(part) = self
            .partitions
            .get_mut(&item.part)
            .filter(|p| p.epoch == item.epoch)
        else {
            return LaneFate::Hold; // its partition was released; the next owner redoes it
        };
        let lane_free = if part.draining.is_none() {
            LaneFate::Release
        } else {
            LaneFate::Hold
        };
        match completion.verdict {
            Verdict::Written(accepted) => {
                // The lane moves on now; the item stays running (and its
                // offset uncommitted) until its writes are acknowledged.
                item.lane = None;
                written.push((item, accepted));
                lane_free
            }
            Verdict::Unwritable(message) => {
                part.running = part.running.saturating_sub(1);
                DeadLetterUnwritable { message: &message }.emit(&self.shared.scope);
                self.abandon(&item);
                if self.fatal.is_none() {
                    self.fatal = Some(EngineError::DeadLetterRejected {
                        function: self.shared.scope.name.to_string(),
                        message,
                    });
                }
                self.begin_stop();
                LaneFate::Hold
            }
            Verdict::RetryAfter(delay) => {
                part.running = part.running.saturating_sub(1);
                if part.draining.is_none() && !self.stopping {
                    self.parked.insert(item, delay);
                } else {
                    self.abandon(&item);
                }
                LaneFate::Hold
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
                if completion.staged.is_empty() {
                    part.bytes -= item.bytes;
                    self.options.budget.sub(1, item.bytes);
                } else {
                    // The bytes stay counted until the records commit.
                    self.options.budget.sub(1, 0);
                    part.stage(item.event.position.offset, completion.staged, item.bytes);
                }
                EventFinished.emit(&self.shared.scope);
                lane_free
            }
        }
    }

    pub(super) fn unpark(&mut self, item: WorkItem) {
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
    pub(super) fn abandon(&mut self, item: &WorkItem) {
        if let Some(part) = self
            .partitions
            .get_mut(&item.part)
            .filter(|p| p.epoch == item.epoch)
        {
            part.unfinished -= 1;
            part.bytes -= item.bytes;
            self.options.budget.sub(1, item.bytes);
            EventsAbandoned { count: 1 }.emit(&self.shared.scope);
        }
    }

    /// Releases what a dropped partition state still held in the budget,
    /// and the handler's state of that partition (its uncommitted part
    /// must not count again when the partition's events are read again).
    pub(super) fn forget(&self, key: PartKey, part: &PartitionState) {
        self.options.budget.sub(part.unfinished, part.bytes);
        EventsAbandoned {
            count: part.unfinished,
        }
        .emit(&self.shared.scope);
        if let Some(state) = self.shared.handler.state() {
            state.forget(key.input, key.partition);
        }
    }
}

/// A run's items grouped by partition, in order: (partition, epoch, count)
/// for each stretch of consecutive items of one partition.
fn partition_spans(run: &[WorkItem]) -> Vec<(PartKey, u64, usize)> {
    let mut spans: Vec<(PartKey, u64, usize)> = Vec::new();
    for item in run {
        match spans.last_mut() {
            Some((key, epoch, n)) if *key == item.part && *epoch == item.epoch => *n += 1,
            _ => spans.push((item.part, item.epoch, 1)),
        }
    }
    spans
}
