//! Lanes and dispatch: hands runnable items to handler tasks, scales the
//! task pool, and takes completions back — releasing an event's lane the
//! moment its order no longer binds, and never finishing an event of a
//! partition that was let go.

use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Instant;

use super::partition::PartitionState;
use super::Scheduler;
use crate::events::{ConcurrencyScaledUp, DeadLetterUnwritable, EventFinished, EventsAbandoned};
use crate::scaler::{self, Load};
use crate::work::{Completion, Outcome, PartKey, Verdict, WorkItem};
use crate::worker;
use crate::EngineError;

impl Scheduler {
    /// Hands runnable items to tasks and scales the pool.
    pub(super) fn dispatch(&mut self) {
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

    pub(super) fn on_completion(&mut self, completion: Completion) {
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
                DeadLetterUnwritable { message: &message }.emit(&self.shared.scope);
                self.abandon(&item);
                if self.fatal.is_none() {
                    self.fatal = Some(EngineError::DeadLetterRejected {
                        function: self.shared.scope.name.to_string(),
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
                    part.stage(item.event.position.offset, completion.staged, item.bytes);
                }
                EventFinished.emit(&self.shared.scope);
                if !draining {
                    if let Some(lane) = &item.lane {
                        self.lanes.release(lane);
                    }
                }
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
