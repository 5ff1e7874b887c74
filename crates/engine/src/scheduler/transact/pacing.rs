//! When an exactly-once transaction commits: once its interval passed or
//! it holds `max_events` events, never while a back-off after a failed
//! transaction holds it (the back-off grows with each failure in a row and
//! is reset by a commit).

use std::time::{Duration, Instant};

use crate::backoff;

/// The open transaction's commit schedule and back-off.
pub(super) struct Pacing {
    interval: Duration,
    max_events: usize,
    /// Failed transactions in a row.
    failures: u32,
    /// No commit before this, after a failure.
    retry_at: Option<Instant>,
    last_commit: Instant,
}

impl Pacing {
    /// A schedule that commits every `interval` or `max_events` events
    /// (at least one).
    pub(super) fn new(interval: Duration, max_events: usize) -> Self {
        Self {
            interval,
            max_events: max_events.max(1),
            failures: 0,
            retry_at: None,
            last_commit: Instant::now(),
        }
    }

    /// False while a back-off after a failure holds commits.
    pub(super) fn may_commit(&self) -> bool {
        self.retry_at.is_none_or(|at| Instant::now() >= at)
    }

    /// The interval passed since the last commit started, or the
    /// transaction holds `open_events` of at least `max_events`.
    pub(super) fn is_due(&self, open_events: usize) -> bool {
        self.last_commit.elapsed() >= self.interval || open_events >= self.max_events
    }

    /// A commit starts now.
    pub(super) fn started(&mut self) {
        self.last_commit = Instant::now();
    }

    /// A transaction committed: the back-off is over.
    pub(super) fn committed(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }

    /// A transaction was aborted: the next commit waits longer each time.
    pub(super) fn failed(&mut self) {
        self.failures += 1;
        let delay = backoff::delay(
            Duration::from_millis(50),
            Duration::from_secs(5),
            self.failures,
        );
        self.retry_at = Some(Instant::now() + delay);
    }
}
