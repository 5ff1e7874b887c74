//! The handler-concurrency control rule.
//!
//! Each function runs between `min` and `max` handler tasks. The rule, in
//! words:
//!
//! - **Up.** When runnable events wait (the *backlog*: events whose lane is
//!   free but no task has taken them) and every task is busy, estimate the
//!   time the backlog needs with the current tasks from the observed service
//!   time — handler plus the acknowledgement of its outputs, what actually
//!   occupies a task — as an exponentially weighted mean:
//!   `backlog × latency / tasks`.
//!   If that exceeds the target queueing delay, add the tasks needed to bring
//!   it under the target (Little's law: `backlog × latency / target`), at
//!   least one, at most up to `max`. With no task at all, one starts at once.
//!   Only runnable events count, so a single hot key never scales a function
//!   that could not run it in parallel anyway. The latency used is the
//!   larger of the mean and the time every task has been busy with no event
//!   finishing: a handler stuck on a slow dependency produces no samples, yet
//!   is exactly when more tasks help the other lanes.
//! - **Down.** A task that found no work for the idle period retires, as
//!   long as more than `min` remain. With `min: 0` an idle function holds no
//!   task at all.
//!
//! Each change is logged with its reason and exported as the
//! `spate_handler_concurrency` gauge.

use std::time::Duration;

/// Tuning of the control rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalerTuning {
    /// Queueing delay above which more tasks are added.
    pub target_queue_delay: Duration,
    /// A task idle this long retires (down to `min`).
    pub idle_retire_after: Duration,
}

impl Default for ScalerTuning {
    fn default() -> Self {
        Self {
            target_queue_delay: Duration::from_millis(5),
            idle_retire_after: Duration::from_secs(1),
        }
    }
}

/// What the scheduler knows when it decides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Runnable events no task has taken yet.
    pub backlog: usize,
    /// Tasks alive.
    pub tasks: usize,
    /// Tasks running an event now.
    pub busy: usize,
    /// Mean handler latency, if any event finished yet.
    pub latency: Option<Duration>,
}

/// A decision to add tasks, with its reason.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleUp {
    /// How many tasks to add.
    pub add: usize,
    /// Why, for logs.
    pub reason: String,
}

/// Applies the "up" half of the rule.
pub fn scale_up(load: Load, max: usize, tuning: &ScalerTuning) -> Option<ScaleUp> {
    if load.backlog == 0 || load.tasks >= max {
        return None;
    }
    if load.tasks == 0 {
        return Some(ScaleUp {
            add: 1,
            reason: format!("{} runnable events and no handler task", load.backlog),
        });
    }
    if load.busy < load.tasks {
        return None; // an idle task will take the work
    }
    // Before any latency is known, treat the backlog as worth one more task.
    let latency = load.latency.unwrap_or(tuning.target_queue_delay);
    let drain = latency.saturating_mul(load.backlog as u32) / load.tasks as u32;
    if drain <= tuning.target_queue_delay {
        return None;
    }
    let target = tuning.target_queue_delay.as_secs_f64().max(1e-6);
    let needed = (latency.as_secs_f64() * load.backlog as f64 / target).ceil() as usize;
    let add = needed.saturating_sub(load.tasks).clamp(1, max - load.tasks);
    Some(ScaleUp {
        add,
        reason: format!(
            "backlog of {} events would take {:.1} ms with {} busy tasks at {:.2} ms each (target {:.1} ms)",
            load.backlog,
            drain.as_secs_f64() * 1e3,
            load.tasks,
            latency.as_secs_f64() * 1e3,
            tuning.target_queue_delay.as_secs_f64() * 1e3
        ),
    })
}

/// Exponentially weighted mean of handler latency.
#[derive(Debug, Default, Clone, Copy)]
pub struct LatencyMean {
    mean_secs: Option<f64>,
}

impl LatencyMean {
    const WEIGHT: f64 = 0.1;

    /// Folds one observation in.
    pub fn observe(&mut self, sample: Duration) {
        let s = sample.as_secs_f64();
        self.mean_secs = Some(match self.mean_secs {
            None => s,
            Some(m) => m + Self::WEIGHT * (s - m),
        });
    }

    /// The current mean.
    pub fn get(&self) -> Option<Duration> {
        self.mean_secs.map(Duration::from_secs_f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(backlog: usize, tasks: usize, busy: usize, latency_ms: u64) -> Load {
        Load {
            backlog,
            tasks,
            busy,
            latency: Some(Duration::from_millis(latency_ms)),
        }
    }

    #[test]
    fn starts_one_task_from_zero() {
        let up = scale_up(load(3, 0, 0, 1), 8, &ScalerTuning::default()).unwrap();
        assert_eq!(up.add, 1);
    }

    #[test]
    fn slow_backlog_adds_what_littles_law_asks_capped_at_max() {
        let t = ScalerTuning::default();
        // 100 events × 1 ms / 5 ms target = 20 tasks needed, 2 alive.
        assert_eq!(scale_up(load(100, 2, 2, 1), 64, &t).unwrap().add, 18);
        assert_eq!(scale_up(load(100, 2, 2, 1), 8, &t).unwrap().add, 6);
    }

    #[test]
    fn fast_handlers_and_idle_tasks_do_not_scale() {
        let t = ScalerTuning::default();
        // 100 events × 10 µs = 1 ms < 5 ms target.
        let fast = Load {
            latency: Some(Duration::from_micros(10)),
            ..load(100, 1, 1, 0)
        };
        assert_eq!(scale_up(fast, 8, &t), None);
        assert_eq!(scale_up(load(100, 4, 3, 10), 8, &t), None, "a task is idle");
        assert_eq!(scale_up(load(0, 4, 4, 10), 8, &t), None, "no backlog");
        assert_eq!(scale_up(load(100, 8, 8, 10), 8, &t), None, "at max");
    }

    #[test]
    fn latency_mean_moves_towards_samples() {
        let mut m = LatencyMean::default();
        assert_eq!(m.get(), None);
        m.observe(Duration::from_millis(10));
        assert_eq!(m.get(), Some(Duration::from_millis(10)));
        for _ in 0..100 {
            m.observe(Duration::from_millis(1));
        }
        assert!(m.get().unwrap() < Duration::from_millis(2));
    }
}
