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

use std::time::{Duration, Instant};

use spate_connector::CommitPosition;
use tracing::warn;

use super::transact::Transactions;
use super::Scheduler;
use crate::policy::Delivery;
use crate::work::PartKey;
use crate::EngineError;

/// A plain (not transactional) committer's settings and state.
pub(super) struct Plain {
    /// `at_most_once`: positions are committed as they are received.
    on_receipt: bool,
    /// The last commit failed: no early commits until one on the interval
    /// succeeds.
    failing: bool,
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

    /// The open transaction session, under `exactly_once`.
    pub(super) fn transactions(&self) -> Option<&Transactions> {
        match self {
            Self::Transactional(tx) => Some(tx),
            Self::Plain(_) => None,
        }
    }

    /// The open transaction session, under `exactly_once`.
    pub(super) fn transactions_mut(&mut self) -> Option<&mut Transactions> {
        match self {
            Self::Transactional(tx) => Some(tx),
            Self::Plain(_) => None,
        }
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
        self.transactions()
            .is_some_and(|tx| tx.committing.is_some())
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
}

impl Scheduler {
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

    /// Commits finished positions of `only` (or of every partition). Under
    /// `exactly_once` it commits the open transaction, with every
    /// partition's position; `only` are then the partitions about to be
    /// released.
    pub(super) async fn commit(&mut self, only: Option<&[PartKey]>) {
        self.last_commit = Instant::now();
        match (&self.committer, only) {
            (Committer::Plain(_), _) => self.commit_plain(only).await,
            // Periodic and early commits run in the background.
            (Committer::Transactional(_), None) => self.start_transaction_commit_now().await,
            // Before partitions are let go their commit must be done.
            (Committer::Transactional(_), Some(releasing)) => {
                self.commit_transaction(releasing).await;
            }
        }
    }

    /// After completions: under `exactly_once`, writes what the
    /// watermarks passed into the transaction and starts its commit when
    /// due. A plain committer waits for its interval.
    pub(super) async fn commit_after_completions(&mut self) {
        if let Committer::Transactional(_) = self.committer {
            self.write_ready().await;
            if self.transaction_due() {
                self.start_transaction_commit_now().await;
            }
        }
    }

    /// Housekeeping's commit: on the interval (plain), or when the
    /// transaction is due (transactional).
    pub(super) async fn commit_on_tick(&mut self) {
        match self.committer {
            Committer::Transactional(_) => {
                if self.transaction_due() {
                    self.start_transaction_commit_now().await;
                }
                if self.last_commit.elapsed() >= self.commit_interval {
                    self.last_commit = Instant::now();
                    self.export_partition_metrics();
                }
            }
            Committer::Plain(_) => {
                if self.last_commit.elapsed() >= self.commit_interval {
                    self.commit(None).await;
                    self.export_partition_metrics();
                }
            }
        }
    }

    /// The last commit, once everything is drained.
    pub(super) async fn final_commit(&mut self) {
        match self.committer {
            Committer::Transactional(_) => self.final_transaction().await,
            Committer::Plain(_) => self.commit(None).await,
        }
    }

    /// Commits each input's positions to its source: what was received
    /// (`at_most_once`) or what finished (`at_least_once`).
    async fn commit_plain(&mut self, only: Option<&[PartKey]>) {
        let on_receipt = self.committer.commits_on_receipt();
        for input in 0..self.sources.len() {
            let mut positions = Vec::new();
            for (key, part) in &self.partitions {
                if key.input != input || only.is_some_and(|o| !o.contains(key)) {
                    continue;
                }
                let position = if on_receipt {
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
            let source = &mut self.sources[input].source;
            let result = source.commit(&positions).await;
            if let Committer::Plain(plain) = &mut self.committer {
                plain.failing = result.is_err();
            }
            match result {
                Ok(()) => {
                    self.shared.metrics.commits.increment(1);
                    self.shared
                        .metrics
                        .commit_seconds
                        .record(started.elapsed().as_secs_f64());
                    for position in positions {
                        let key = PartKey {
                            input,
                            partition: position.partition,
                        };
                        if let Some(part) = self.partitions.get_mut(&key) {
                            part.committed = Some(position.next_offset);
                        }
                    }
                }
                Err(error) => {
                    self.shared.metrics.commit_failures.increment(1);
                    let source = &self.sources[input].source;
                    warn!(function = %self.shared.name, source = source.name(), %error, "commit failed; will try again");
                }
            }
        }
    }
}
