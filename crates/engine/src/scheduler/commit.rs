//! The committer: how a function's finished work becomes durable, chosen
//! once when the function starts from its `delivery` and never tested again.
//!
//! - [`Committer::Plain`] commits positions to the source: `at_most_once`
//!   each batch's positions on receipt, before the handler runs;
//!   `at_least_once` the positions below which every event finished, on the
//!   commit interval, early once everything read finished, and before a
//!   partition is let go. A position is never committed past an unfinished
//!   event, and a failed commit is tried again on the next interval.
//! - [`Committer::Transactional`] (`exactly_once`) commits outputs, dead
//!   letters and positions in one transaction of the input's connector (see
//!   `transact`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use spate_connector::{CommitPosition, PartitionId};

use super::intake::SourceSlot;
use super::partition::PartitionState;
use super::transact::{Committed, Transactions};
use super::Scheduler;
use crate::budget::ProcessBudget;
use crate::events::{CommitFailed, CommitSucceeded};
use crate::policy::Delivery;
use crate::work::PartKey;
use crate::worker::FunctionShared;
use crate::EngineError;

/// A plain (not transactional) committer's settings and state.
pub(super) struct Plain {
    /// `at_most_once`: positions are committed as they are received.
    on_receipt: bool,
    /// The last commit failed: no early commits until one on the interval
    /// succeeds.
    failing: bool,
}

/// The scheduler's state a commit works with besides the committer,
/// borrowed apart from it (see [`Scheduler::split`]).
pub(super) struct Parts<'a> {
    /// Every partition the function holds.
    pub(super) partitions: &'a mut HashMap<PartKey, PartitionState>,
    /// The function's inputs (one under `exactly_once`).
    pub(super) sources: &'a mut [SourceSlot],
    /// The function's name, handler, metrics and tally.
    pub(super) shared: &'a FunctionShared,
    /// The process-wide in-flight budget.
    pub(super) budget: &'a ProcessBudget,
}

/// How a function commits: the one place its delivery mode is decided.
pub(super) enum Committer {
    /// `at_most_once` or `at_least_once`: positions, to the source.
    Plain(Plain),
    /// `exactly_once`: records and positions in one transaction.
    Transactional(Box<Transactions>),
}

impl Committer {
    /// The plain committer of `delivery`; `exactly_once` becomes
    /// transactional once its session opened (see
    /// [`Scheduler::open_committer`]).
    pub(super) fn plain(delivery: Delivery) -> Self {
        Self::Plain(Plain {
            on_receipt: delivery == Delivery::AtMostOnce,
            failing: false,
        })
    }

    /// How often the scheduler's housekeeping must run for this committer.
    pub(super) fn tick_every(&self, commit_interval: Duration, transaction: Duration) -> Duration {
        let every = commit_interval.min(Duration::from_millis(100));
        match self {
            Self::Plain(_) => every,
            Self::Transactional(_) => every.min(transaction),
        }
    }

    /// Whether a commit runs in the background now.
    pub(super) fn is_committing(&self) -> bool {
        matches!(self, Self::Transactional(tx) if tx.committing.is_some())
    }

    /// Whether a commit may happen before the interval once everything
    /// read is finished.
    pub(super) fn allows_early_commit(&self) -> bool {
        match self {
            Self::Plain(plain) => !plain.on_receipt && !plain.failing,
            Self::Transactional(tx) => tx.can_commit_now(),
        }
    }

    /// Whether positions are committed as each batch is received.
    pub(super) fn commits_on_receipt(&self) -> bool {
        matches!(self, Self::Plain(plain) if plain.on_receipt)
    }

    /// The outcome of the commit running in the background, once it ends;
    /// pending forever when none runs. Cancel safe: the commit keeps
    /// running.
    pub(super) async fn outcome(&mut self) -> Option<Committed> {
        match self {
            Self::Transactional(tx) => match tx.outcome_if_running().await {
                Some(outcome) => outcome,
                None => std::future::pending().await,
            },
            Self::Plain(_) => std::future::pending().await,
        }
    }

    /// Commits finished positions of `only` (or of every partition). Under
    /// `exactly_once` it commits the open transaction, with every
    /// partition's position; `only` are then the partitions about to be
    /// released.
    async fn commit(&mut self, parts: &mut Parts<'_>, only: Option<&[PartKey]>) {
        match (self, only) {
            (Self::Plain(plain), _) => plain.commit(parts, only).await,
            // Periodic and early commits run in the background.
            (Self::Transactional(tx), None) => tx.start_commit_now(parts).await,
            // Before partitions are let go their commit must be done.
            (Self::Transactional(tx), Some(releasing)) => {
                tx.commit(parts, releasing).await;
            }
        }
    }

    /// Under `exactly_once`, writes what the watermarks passed into the
    /// transaction; a plain committer has nothing to write.
    async fn write_ready(&mut self, parts: &mut Parts<'_>) {
        if let Self::Transactional(tx) = self {
            tx.write_ready(parts).await;
        }
    }

    /// Under `exactly_once`, starts the transaction's commit when it is due;
    /// a plain committer waits for its interval.
    async fn commit_if_due(&mut self, parts: &mut Parts<'_>) {
        if let Self::Transactional(tx) = self {
            if tx.due() {
                tx.start_commit_now(parts).await;
            }
        }
    }

    /// The error that stopped the exactly-once session, once.
    fn take_fatal(&mut self) -> Option<EngineError> {
        match self {
            Self::Transactional(tx) => tx.take_fatal(),
            Self::Plain(_) => None,
        }
    }
}

impl Plain {
    /// Commits each input's positions to its source: what was received
    /// (`at_most_once`) or what finished (`at_least_once`).
    async fn commit(&mut self, parts: &mut Parts<'_>, only: Option<&[PartKey]>) {
        for input in 0..parts.sources.len() {
            let mut positions = Vec::new();
            for (key, part) in parts.partitions.iter() {
                if key.input != input || only.is_some_and(|o| !o.contains(key)) {
                    continue;
                }
                let position = if self.on_receipt {
                    part.watermark.received_position()
                } else {
                    part.watermark.committable()
                };
                if let Some(next_offset) =
                    position.filter(|p| part.committed.is_none_or(|c| *p > c))
                {
                    positions.push(CommitPosition {
                        partition: key.partition,
                        next_offset,
                    });
                }
            }
            if positions.is_empty() {
                continue;
            }
            positions.sort_by_key(|p| p.partition);
            let started = Instant::now();
            let source = &mut parts.sources[input].source;
            let result = source.commit(&positions).await;
            self.failing = result.is_err();
            let scope = &parts.shared.scope;
            match result {
                Ok(()) => {
                    CommitSucceeded {
                        elapsed: started.elapsed(),
                    }
                    .emit(scope);
                    for position in positions {
                        let key = PartKey {
                            input,
                            partition: position.partition,
                        };
                        if let Some(part) = parts.partitions.get_mut(&key) {
                            part.committed = Some(position.next_offset);
                        }
                    }
                }
                Err(error) => {
                    CommitFailed(&error).emit(scope.connector(source.name()));
                }
            }
        }
    }
}

impl Scheduler {
    /// The committer, and the rest of the scheduler's state a commit works
    /// with.
    fn split(&mut self) -> (&mut Committer, Parts<'_>) {
        let parts = Parts {
            partitions: &mut self.partitions,
            sources: &mut self.sources,
            shared: &self.shared,
            budget: &self.options.budget,
        };
        (&mut self.committer, parts)
    }

    /// After the committer ran: if the exactly-once session was lost, the
    /// function stops with that error.
    fn stop_if_fatal(&mut self) {
        let Some(error) = self.committer.take_fatal() else {
            return;
        };
        if self.fatal.is_none() {
            self.fatal = Some(error);
        }
        if !self.stopping {
            self.begin_stop();
        }
    }

    /// Chooses the committer for `delivery`, once, before the function
    /// runs: under `exactly_once` this opens the transaction session.
    pub async fn open_committer(&mut self, delivery: Delivery) -> Result<(), EngineError> {
        match delivery {
            Delivery::ExactlyOnce => self.open_transactions().await,
            Delivery::AtLeastOnce | Delivery::AtMostOnce => {
                self.committer = Committer::plain(delivery);
                Ok(())
            }
        }
    }

    /// Commits finished positions of `only` (or of every partition); see
    /// [`Committer::commit`].
    pub(super) async fn commit(&mut self, only: Option<&[PartKey]>) {
        self.last_commit = Instant::now();
        let (committer, mut parts) = self.split();
        committer.commit(&mut parts, only).await;
        self.stop_if_fatal();
    }

    /// After completions: under `exactly_once`, writes what the
    /// watermarks passed into the transaction and starts its commit when
    /// due. A plain committer waits for its interval.
    pub(super) async fn commit_after_completions(&mut self) {
        let (committer, mut parts) = self.split();
        committer.write_ready(&mut parts).await;
        committer.commit_if_due(&mut parts).await;
        self.stop_if_fatal();
    }

    /// Takes in the outcome of the commit that ran in the background (see
    /// [`Transactions::on_outcome`]), then writes what waited for the
    /// session.
    pub(super) async fn on_commit_outcome(&mut self, outcome: Option<Committed>) {
        if let (Committer::Transactional(tx), mut parts) = self.split() {
            tx.on_outcome(&mut parts, outcome).await;
            tx.write_ready(&mut parts).await;
        }
        self.stop_if_fatal();
    }

    /// Housekeeping's commit: on the interval (plain), or when the
    /// transaction is due (transactional).
    pub(super) async fn commit_on_tick(&mut self) {
        let interval = self.commit_interval;
        let interval_passed = |last_commit: Instant| last_commit.elapsed() >= interval;
        match self.split() {
            (Committer::Transactional(tx), mut parts) => {
                if tx.due() {
                    tx.start_commit_now(&mut parts).await;
                }
                self.stop_if_fatal();
                if interval_passed(self.last_commit) {
                    self.last_commit = Instant::now();
                    self.export_partition_metrics();
                }
            }
            (Committer::Plain(_), _) => {
                if interval_passed(self.last_commit) {
                    self.commit(None).await;
                    self.export_partition_metrics();
                }
            }
        }
    }

    /// After partitions of input `input` were assigned: under a session
    /// that stores positions, resumes them from there (see
    /// [`Transactions::resume`]).
    pub(super) async fn resume_assigned(
        &mut self,
        input: usize,
        assigned: &[PartitionId],
    ) -> Result<(), EngineError> {
        let resumed = match self.split() {
            (Committer::Transactional(tx), mut parts) => {
                tx.resume(&mut parts, input, assigned).await
            }
            (Committer::Plain(_), _) => Ok(()),
        };
        self.stop_if_fatal();
        resumed
    }

    /// The last commit, once everything is drained.
    pub(super) async fn final_commit(&mut self) {
        match self.split() {
            (Committer::Transactional(tx), mut parts) => tx.final_commit(&mut parts).await,
            (Committer::Plain(_), _) => self.commit(None).await,
        }
        self.stop_if_fatal();
    }
}
