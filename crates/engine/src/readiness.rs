//! Which sources are ready to deliver: the state `/health/ready` reports.
//!
//! A source is *ready* once it told the engine it owns its partitions
//! ([`SourceMessage::Assigned`](spate_connector::SourceMessage::Assigned),
//! which every connector sends only once connected and, where it applies,
//! assigned: a Kafka group assignment, a JetStream partition lease, an MQTT
//! SUBACK, a core-NATS subscription, a file or generator opened). Until its
//! connector is built (a broker that cannot be reached at the start is
//! retried) it is not ready.
//!
//! A source that loses its broker later is not ready from its first failed
//! read until it delivers again, or until [`FAILURE_HOLD`] passed without
//! another failed read: a quiet source cannot tell recovery from silence,
//! and connectors report failures while the broker stays away (librdkafka
//! once per reconnect attempt), so a source still cut off keeps renewing
//! the hold. Liveness never depends on it. A source whose function stopped
//! is not ready; one that ended (a file read to its end) is, since nothing
//! is wrong with it.
//!
//! # Guarantees
//!
//! - **Nothing is ready before it is expected.** [`Readiness::is_ready`] is
//!   false while no source is registered, so a process that has not built
//!   its connectors yet is never reported ready.
//! - **Clones share one board**: the engine writes, the endpoint reads.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long after a failed read a source counts as not ready, unless it
/// delivers again sooner.
pub const FAILURE_HOLD: Duration = Duration::from_secs(15);

/// One source's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Ready,
    FailedAt(Instant),
}

impl State {
    fn is_ready(self) -> bool {
        match self {
            Self::Waiting => false,
            Self::Ready => true,
            Self::FailedAt(at) => at.elapsed() >= FAILURE_HOLD,
        }
    }
}

/// One source of one function.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourceKey {
    /// The pipeline (file name without extension).
    pub pipeline: Arc<str>,
    /// The function.
    pub function: Arc<str>,
    /// The input's index in the function's `inputs`.
    pub input: usize,
}

impl std::fmt::Display for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} input {}",
            self.pipeline, self.function, self.input
        )
    }
}

/// The readiness of every source of a run; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    sources: Arc<Mutex<BTreeMap<SourceKey, State>>>,
}

impl Readiness {
    /// An empty board (not ready).
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a source as not ready yet (before its connector is built).
    pub fn expect(&self, key: SourceKey) {
        self.lock().entry(key).or_insert(State::Waiting);
    }

    /// Records whether a source is ready.
    pub fn set(&self, key: SourceKey, ready: bool) {
        let state = if ready { State::Ready } else { State::Waiting };
        self.lock().insert(key, state);
    }

    /// Records a failed read: not ready for [`FAILURE_HOLD`] from now,
    /// unless [`set`](Self::set) says otherwise sooner.
    pub fn failed(&self, key: SourceKey) {
        self.lock().insert(key, State::FailedAt(Instant::now()));
    }

    /// True when at least one source is registered and every one is ready.
    pub fn is_ready(&self) -> bool {
        let sources = self.lock();
        !sources.is_empty() && sources.values().all(|state| state.is_ready())
    }

    /// The sources not ready, in order.
    pub fn waiting(&self) -> Vec<SourceKey> {
        self.lock()
            .iter()
            .filter(|(_, state)| !state.is_ready())
            .map(|(key, _)| key.clone())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<SourceKey, State>> {
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(input: usize) -> SourceKey {
        SourceKey {
            pipeline: Arc::from("p"),
            function: Arc::from("f"),
            input,
        }
    }

    #[test]
    fn an_empty_board_is_not_ready_and_one_waiting_source_holds_it_back() {
        let board = Readiness::new();
        assert!(!board.is_ready());
        board.expect(key(0));
        board.expect(key(1));
        board.set(key(0), true);
        assert!(!board.is_ready());
        assert_eq!(board.waiting(), vec![key(1)]);
        board.set(key(1), true);
        assert!(board.is_ready());
        board.expect(key(1));
        assert!(board.is_ready(), "expecting again does not reset");
        board.set(key(0), false);
        assert!(!board.is_ready());
    }

    #[test]
    fn a_failed_read_holds_readiness_back_until_the_source_delivers_again() {
        let board = Readiness::new();
        board.set(key(0), true);
        board.failed(key(0));
        assert!(!board.is_ready());
        assert_eq!(board.waiting(), vec![key(0)]);
        board.set(key(0), true);
        assert!(board.is_ready());
    }
}
