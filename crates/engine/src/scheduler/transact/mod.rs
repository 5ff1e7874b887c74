//! Exactly-once commits: a finished event's records are written into the
//! source's transaction session once its partition's watermark passes the
//! event, and each transaction commits together with the watermark
//! positions — so a committed transaction holds exactly the records of the
//! events below the positions it commits, and a crash leaves both or
//! neither.
//!
//! # Why records wait for the watermark
//!
//! Events finish out of order (key lanes, `ordering: none`, retries), but a
//! committed position covers every offset below it. If a transaction held
//! an output of offset 12 while committing position 10, a crash would
//! replay offsets 10 to 12 — and 12's output is already committed: a
//! duplicate. So a finished event's records wait in its partition until the
//! watermark passes the event. The other way to keep that rule, stopping
//! intake and draining every partition at each transaction boundary, would
//! idle every handler task for the slowest event once per
//! `transaction_interval`; waiting costs only the memory of records that
//! finished early, and that memory counts against the in-flight byte bound
//! like the events themselves (an event's bytes are released when its
//! records commit, not when its handler returns).
//!
//! # On failure
//!
//! A failed transaction is aborted, and its records — kept until the commit
//! succeeds — are written again into the next transaction, so no handler runs
//! twice because of it; meanwhile commits back off exponentially. Records of
//! partitions that were revoked in between are dropped instead: their
//! positions were not committed, so the partition's next owner reads and
//! handles those events again. A fenced session (another process took over)
//! stops the function without committing anything more.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use spate_connector::{
    dead_letter, CommitPosition, PartitionId, Record, SessionOwner, StoredPosition,
    TransactionError,
};
use tracing::{debug, error, warn};

use super::{Committer, Scheduler};
use crate::work::{Destination, PartKey, WorkItem};
use crate::{backoff, EngineError};

mod session;

pub(crate) use session::Transactions;
use session::{Committed, Committing, Written};

/// How starting a commit went.
enum Start {
    /// Nothing to commit.
    Nothing,
    /// The commit runs in the background.
    Started,
    /// It could not start (the session failed; the error is handled).
    Failed,
}

/// The outcome of the commit running in the background, once it ends;
/// `None` at once when none runs.
async fn commit_outcome_if_running(committer: &mut Committer) -> Option<Option<Committed>> {
    let tx = committer.transactions_mut()?;
    let name = tx.name.clone();
    let committing = tx.committing.as_mut()?;
    Some(committing.outcome(&name).await)
}

/// The outcome of the commit running in the background, once it ends;
/// pending forever when none runs. Cancel safe: the commit keeps running.
pub(super) async fn commit_outcome(committer: &mut Committer) -> Option<Committed> {
    let Some(tx) = committer.transactions_mut() else {
        return std::future::pending().await;
    };
    let name = tx.name.clone();
    match tx.committing.as_mut() {
        Some(committing) => committing.outcome(&name).await,
        None => std::future::pending().await,
    }
}

impl Scheduler {
    /// Opens the exactly-once session, making the committer
    /// transactional (`delivery: exactly_once` only: see
    /// [`Scheduler::open_committer`]).
    pub(super) async fn open_transactions(&mut self) -> Result<(), EngineError> {
        let function = self.shared.name.to_string();
        let [slot] = self.sources.as_mut_slice() else {
            return Err(EngineError::Plan {
                function,
                message: "`exactly_once` takes exactly one input: one transaction commits one source's positions".to_owned(),
            });
        };
        let owner = SessionOwner {
            pipeline: self.pipeline.to_string(),
            function: function.clone(),
            source: slot.source.name().to_owned(),
        };
        let transactions = Transactions::open(
            &mut *slot.source,
            &self.shared.outputs,
            &*self.shared.dead_letter,
            self.session_host,
            owner,
            self.transaction.interval,
            self.transaction.max_events,
        )
        .await
        .map_err(|message| EngineError::Plan {
            function: function.clone(),
            message,
        })?;
        let mut transactions = transactions;
        let stores_state = transactions
            .session()
            .map(|session| session.stores_state())
            .unwrap_or(false);
        if self.shared.handler.state().is_some() && !stores_state {
            return Err(EngineError::Plan {
                function,
                message: format!(
                    "the handler keeps state between events, and under `exactly_once` that state must commit with the positions, but `{}` cannot store it: write this function's outputs to a database that stores positions (postgres), or use `delivery: at_least_once` (state kept in memory, rebuilt from nothing after a restart)",
                    transactions.name
                ),
            });
        }
        self.committer = Committer::Transactional(Box::new(transactions));
        Ok(())
    }

    /// After partitions of input `input` were assigned, under a session
    /// that stores positions: hands the source every stored position (so
    /// it skips what is already committed, even what another process
    /// committed before this assignment) and gives a stateful handler the
    /// committed state of those partitions. Reading is retried for a while;
    /// if the store stays away, the function stops (nothing of those
    /// partitions was admitted, so nothing is lost).
    pub(super) async fn resume_assigned(
        &mut self,
        input: usize,
        parts: &[PartitionId],
    ) -> Result<(), EngineError> {
        if !self.committer.transactions().is_some_and(|tx| tx.resumes) {
            return Ok(());
        }
        // The session is needed here: let a commit running in the
        // background finish first.
        self.settle_transaction_commit().await;
        let Some(tx) = self.committer.transactions_mut() else {
            return Ok(());
        };
        let function = self.shared.name.to_string();
        let source = &mut self.sources[input].source;
        let names: Vec<String> = parts.iter().map(|p| source.partition_name(*p)).collect();
        let wants_state = self.shared.handler.state().is_some();
        let mut attempt = 0u32;
        let (positions, entries) = loop {
            attempt += 1;
            let loaded = async {
                let session = tx.session()?;
                let positions: Vec<StoredPosition> = session.load_positions().await?;
                let entries = match wants_state {
                    true => session.load_state(&names).await?,
                    false => Vec::new(),
                };
                Ok::<_, TransactionError>((positions, entries))
            }
            .await;
            match loaded {
                Ok(loaded) => break loaded,
                Err(error) if error.is_abortable() && attempt < 10 => {
                    let delay =
                        backoff::delay(Duration::from_millis(200), Duration::from_secs(5), attempt);
                    warn!(function = %function, %error, retry_in = ?delay, "reading stored positions for assigned partitions failed");
                    tokio::time::sleep(delay).await;
                }
                Err(error) => {
                    return Err(EngineError::Transaction {
                        function,
                        source: error,
                    })
                }
            }
        };
        source
            .resume_from(&positions)
            .map_err(|error| EngineError::Source {
                function: function.clone(),
                source: error,
            })?;
        if let Some(state) = self.shared.handler.state() {
            let mut by_partition: BTreeMap<String, Vec<(Bytes, Bytes)>> = BTreeMap::new();
            for entry in entries {
                by_partition
                    .entry(entry.partition)
                    .or_default()
                    .push((entry.key, entry.value));
            }
            for (partition, name) in parts.iter().zip(&names) {
                let entries = by_partition.remove(name).unwrap_or_default();
                debug!(function = %function, partition = %name, keys = entries.len(), "handler state restored");
                state.restore(input, *partition, entries);
            }
        }
        Ok(())
    }

    /// Keeps a finished event's records until the watermark passes it.
    pub(super) fn stage(&mut self, item: &WorkItem, staged: Vec<(Destination, Record)>) {
        if let Some(part) = self
            .partitions
            .get_mut(&item.part)
            .filter(|p| p.epoch == item.epoch)
        {
            part.staged
                .insert(item.event.position.offset, (staged, item.bytes));
        }
    }

    /// Writes the records of every event the watermark has passed into the
    /// open transaction, in offset order per partition.
    pub(super) async fn write_ready(&mut self) {
        // While a commit runs the session is away: the records wait in
        // their partitions for the next transaction.
        if self
            .committer
            .transactions()
            .is_none_or(|tx| tx.dead || tx.committing.is_some())
        {
            return;
        }
        for written in self.take_ready() {
            let Some(tx) = self.committer.transactions_mut() else {
                return;
            };
            if tx.dead {
                return;
            }
            if let Err(error) = tx.write(written).await {
                self.on_transaction_error(error, "write");
                self.abort_transaction(&[]).await;
            }
        }
    }

    /// Takes the staged records below each partition's watermark.
    fn take_ready(&mut self) -> Vec<Written> {
        let mut keys: Vec<PartKey> = self.partitions.keys().copied().collect();
        keys.sort();
        let mut ready = Vec::new();
        for key in keys {
            let Some(part) = self.partitions.get_mut(&key) else {
                continue;
            };
            let Some(below) = part.watermark.committable() else {
                continue;
            };
            let later = part.staged.split_off(&below);
            let passed = std::mem::replace(&mut part.staged, later);
            let mut state_partition = None;
            for (_offset, (records, bytes)) in passed {
                for (index, (destination, record)) in records.into_iter().enumerate() {
                    let state_partition =
                        matches!(destination, Destination::State { .. }).then(|| {
                            state_partition
                                .get_or_insert_with(|| {
                                    self.sources[key.input].source.partition_name(key.partition)
                                })
                                .clone()
                        });
                    ready.push(Written {
                        part: key,
                        epoch: part.epoch,
                        destination,
                        record,
                        bytes: if index == 0 { bytes } else { 0 },
                        first_of_event: index == 0,
                        state_partition,
                    });
                }
            }
        }
        ready
    }

    /// True when the open transaction should commit now: its interval
    /// passed (and no back-off holds it) or it holds `max_events` events.
    pub(super) fn transaction_due(&self) -> bool {
        self.committer.transactions().is_some_and(|tx| {
            tx.can_commit_now()
                && (tx.last_commit.elapsed() >= tx.interval || tx.open_events >= tx.max_events)
        })
    }

    /// Commits the open transaction with every partition's watermark and
    /// waits for the outcome (after any commit already running).
    /// `releasing` are partitions about to be let go: if the commit fails,
    /// their records are dropped (their next owner redoes them) instead of
    /// being kept for the next transaction. Returns true on success.
    pub(super) async fn commit_transaction(&mut self, releasing: &[PartKey]) -> bool {
        self.settle_transaction_commit().await;
        match self.start_transaction_commit(releasing).await {
            Start::Nothing => true,
            Start::Failed => false,
            Start::Started => self.settle_transaction_commit().await.unwrap_or(false),
        }
    }

    /// Starts committing the open transaction in the background, unless a
    /// commit runs already; its outcome is taken in by
    /// [`Scheduler::on_commit_outcome`] (from the run loop) or
    /// [`Scheduler::settle_transaction_commit`].
    pub(super) async fn start_transaction_commit_now(&mut self) {
        if self
            .committer
            .transactions()
            .is_some_and(|tx| tx.committing.is_none())
        {
            self.start_transaction_commit(&[]).await;
        }
    }

    async fn start_transaction_commit(&mut self, releasing: &[PartKey]) -> Start {
        self.write_ready().await;
        let Some(tx) = self.committer.transactions_mut() else {
            return Start::Failed;
        };
        if tx.dead || tx.committing.is_some() {
            return Start::Failed;
        }
        tx.last_commit = Instant::now();
        let mut positions = Vec::new();
        for (key, part) in &self.partitions {
            if let Some(next_offset) = part
                .watermark
                .committable()
                .filter(|p| part.committed.is_none_or(|c| *p > c))
            {
                positions.push((*key, next_offset));
            }
        }
        positions.sort();
        if positions.is_empty() && tx.open.is_empty() {
            return Start::Nothing;
        }
        let commit: Vec<CommitPosition> = positions
            .iter()
            .map(|(key, next_offset)| CommitPosition {
                partition: key.partition,
                next_offset: *next_offset,
            })
            .collect();
        let stored = self.sources[0].source.positions_to_store(&commit);
        let started = match tx.needs_replay {
            true => tx.replay().await,
            false => Ok(()),
        }
        .and_then(|()| tx.spawn_commit(positions, commit, stored, releasing.to_vec()));
        match started {
            Ok(()) => Start::Started,
            Err(error) => {
                self.on_transaction_error(error, "commit");
                self.abort_transaction(releasing).await;
                Start::Failed
            }
        }
    }

    /// Waits for the commit running in the background, if one is, and takes
    /// its outcome in; `Some(true)` when it committed.
    pub(super) async fn settle_transaction_commit(&mut self) -> Option<bool> {
        let outcome = commit_outcome_if_running(&mut self.committer).await?;
        Some(self.on_commit_outcome(outcome).await)
    }

    /// Takes in the outcome of the commit that ran in the background: the
    /// session comes back; on success the source's side of the positions
    /// follows (a no-op where the transaction stored them), on failure the
    /// transaction is aborted and its records kept for the next one.
    pub(super) async fn on_commit_outcome(&mut self, outcome: Option<Committed>) -> bool {
        let Some(tx) = self.committer.transactions_mut() else {
            return false;
        };
        let Some(committing) = tx.committing.take() else {
            return false;
        };
        let Some((session, result)) = outcome else {
            let error = TransactionError::Fatal {
                session: tx.name.clone(),
                message: "the commit task failed; the session is lost".to_owned(),
            };
            self.on_transaction_error(error, "commit");
            return false;
        };
        tx.restore(session);
        let Committing {
            positions,
            commit,
            releasing,
            started,
            ..
        } = committing;
        match result {
            Ok(()) => {
                let source = &mut self.sources[0].source;
                match source.commit(&commit).await {
                    Ok(()) => {
                        self.on_transaction_committed(&positions, started.elapsed());
                        true
                    }
                    Err(error) => {
                        warn!(function = %self.shared.name, source = source.name(), %error, "records committed but the source could not store its positions; trying again with the next transaction");
                        self.shared.metrics.commit_failures.increment(1);
                        self.on_transaction_committed(&[], started.elapsed());
                        false
                    }
                }
            }
            Err(error) => {
                self.on_transaction_error(error, "commit");
                self.abort_transaction(&releasing).await;
                false
            }
        }
    }

    fn on_transaction_committed(&mut self, positions: &[(PartKey, u64)], took: Duration) {
        let Some(tx) = self.committer.transactions_mut() else {
            return;
        };
        let metrics = &self.shared.metrics;
        metrics.commits.increment(1);
        metrics.commit_seconds.record(took.as_secs_f64());
        let (mut outputs, mut dead_letters, mut released_bytes) = (0u64, 0u64, 0u64);
        for written in tx.open.drain(..) {
            match written.destination {
                Destination::State { .. } => {}
                Destination::Output(_) => outputs += 1,
                Destination::DeadLetter => {
                    dead_letters += 1;
                    let headers = &written.record.headers;
                    warn!(
                        function = %self.shared.name,
                        stream = headers.get_str(dead_letter::STREAM).unwrap_or(""),
                        partition = headers.get_str(dead_letter::PARTITION).unwrap_or(""),
                        offset = headers.get_str(dead_letter::OFFSET).unwrap_or(""),
                        reason = headers.get_str(dead_letter::REASON).unwrap_or(""),
                        error = headers.get_str(dead_letter::ERROR).unwrap_or(""),
                        "event dead-lettered"
                    );
                }
            }
            if written.bytes > 0 {
                if let Some(part) = self
                    .partitions
                    .get_mut(&written.part)
                    .filter(|p| p.epoch == written.epoch)
                {
                    part.bytes -= written.bytes;
                    released_bytes += written.bytes;
                }
            }
        }
        tx.open_events = 0;
        tx.failures = 0;
        tx.retry_at = None;
        self.options.budget.sub(0, released_bytes);
        metrics.out.increment(outputs);
        metrics.dead_lettered.increment(dead_letters);
        let tally = &self.shared.tally;
        tally
            .outputs
            .fetch_add(outputs, std::sync::atomic::Ordering::Relaxed);
        tally
            .dead_lettered
            .fetch_add(dead_letters, std::sync::atomic::Ordering::Relaxed);
        for (key, next_offset) in positions {
            if let Some(part) = self.partitions.get_mut(key) {
                part.committed = Some(*next_offset);
            }
        }
    }

    /// Logs a transaction error; a fatal one stops the function.
    fn on_transaction_error(&mut self, error: TransactionError, during: &str) {
        self.shared.metrics.commit_failures.increment(1);
        let Some(tx) = self.committer.transactions_mut() else {
            return;
        };
        if error.is_abortable() {
            warn!(function = %self.shared.name, session = %tx.name, %error, during, "transaction failed; aborting it and writing its records again");
            return;
        }
        error!(function = %self.shared.name, session = %tx.name, %error, during, "exactly-once session lost; stopping the function without committing");
        tx.dead = true;
        if self.fatal.is_none() {
            self.fatal = Some(EngineError::Transaction {
                function: self.shared.name.to_string(),
                source: error,
            });
        }
        if !self.stopping {
            self.begin_stop();
        }
    }

    /// Aborts the open transaction, drops records of partitions that are
    /// gone or being let go, and schedules the next attempt.
    async fn abort_transaction(&mut self, releasing: &[PartKey]) {
        let Some(tx) = self.committer.transactions_mut() else {
            return;
        };
        if tx.dead {
            return;
        }
        let aborted = match tx.session() {
            Ok(session) => session.abort().await,
            Err(error) => Err(error),
        };
        if let Err(error) = aborted {
            self.on_transaction_error(error, "abort");
        }
        let Some(tx) = self.committer.transactions_mut() else {
            return;
        };
        if tx.dead {
            return;
        }
        // Records stay for the next transaction unless their partition's
        // position can never be committed here again (gone, re-assigned, or
        // about to be released): then its next owner redoes those events.
        let partitions = &self.partitions;
        tx.open.retain(|w| {
            !releasing.contains(&w.part)
                && partitions.get(&w.part).is_some_and(|p| p.epoch == w.epoch)
        });
        tx.open_events = tx.open.iter().filter(|w| w.first_of_event).count();
        tx.needs_replay = !tx.open.is_empty();
        tx.failures += 1;
        let delay = backoff::delay(
            Duration::from_millis(50),
            Duration::from_secs(5),
            tx.failures,
        );
        tx.retry_at = Some(Instant::now() + delay);
    }

    /// The last commit at shutdown: tries a few times before giving up
    /// (what is not committed is handled again after a restart).
    pub(super) async fn final_transaction(&mut self) {
        for attempt in 1..=5u32 {
            if self.commit_transaction(&[]).await {
                return;
            }
            let Some(tx) = self.committer.transactions() else {
                return;
            };
            if tx.dead {
                return;
            }
            tokio::time::sleep(backoff::delay(
                Duration::from_millis(50),
                Duration::from_secs(2),
                attempt,
            ))
            .await;
        }
        warn!(function = %self.shared.name, "the last transaction did not commit; its events will be handled again after a restart");
    }
}
