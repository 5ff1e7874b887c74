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
use std::time::Duration;

use bytes::Bytes;
use spate_connector::{
    dead_letter, CommitPosition, PartitionId, SessionOwner, StoredPosition, TransactionError,
};

use super::commit::Parts;
use super::{Committer, Scheduler};
use crate::events::{
    DeadLetterCause, EventDeadLettered, FinalTransactionNotCommitted, HandlerStateRestored,
    PositionsNotStored, StoredPositionsReadFailed, TransactionCommitted, TransactionFailed,
};
use crate::work::{Destination, PartKey};
use crate::{backoff, EngineError};

mod pacing;
mod session;

pub(super) use session::Committed;
pub(crate) use session::Transactions;
use session::{Committing, Written};

/// How starting a commit went.
enum Start {
    /// Nothing to commit.
    Nothing,
    /// The commit runs in the background.
    Started,
    /// It could not start (the session failed; the error is handled).
    Failed,
}

impl Scheduler {
    /// Opens the exactly-once session, making the committer
    /// transactional (`delivery: exactly_once` only: see
    /// [`Scheduler::open_committer`]).
    pub(super) async fn open_transactions(&mut self) -> Result<(), EngineError> {
        let function = self.shared.scope.name.to_string();
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
}

impl Transactions {
    /// The outcome of the commit running in the background, once it ends;
    /// `None` at once when none runs.
    pub(super) async fn outcome_if_running(&mut self) -> Option<Option<Committed>> {
        let committing = self.committing.as_mut()?;
        Some(committing.outcome(&self.name).await)
    }

    /// After partitions of input `input` were assigned, under a session
    /// that stores positions: hands the source every stored position (so
    /// it skips what is already committed, even what another process
    /// committed before this assignment) and gives a stateful handler the
    /// committed state of those partitions. Reading is retried for a while;
    /// if the store stays away, the function stops (nothing of those
    /// partitions was admitted, so nothing is lost).
    pub(super) async fn resume(
        &mut self,
        parts: &mut Parts<'_>,
        input: usize,
        assigned: &[PartitionId],
    ) -> Result<(), EngineError> {
        if !self.resumes {
            return Ok(());
        }
        // The session is needed here: let a commit running in the
        // background finish first.
        self.settle(parts).await;
        let scope = &parts.shared.scope;
        let function = scope.name.to_string();
        let source = &mut parts.sources[input].source;
        let names: Vec<String> = assigned.iter().map(|p| source.partition_name(*p)).collect();
        let wants_state = parts.shared.handler.state().is_some();
        let mut attempt = 0u32;
        let (positions, entries) = loop {
            attempt += 1;
            let loaded = async {
                let session = self.session()?;
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
                    StoredPositionsReadFailed {
                        error: &error,
                        retry_in: delay,
                    }
                    .emit(scope);
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
        if let Some(state) = parts.shared.handler.state() {
            let mut by_partition: BTreeMap<String, Vec<(Bytes, Bytes)>> = BTreeMap::new();
            for entry in entries {
                by_partition
                    .entry(entry.partition)
                    .or_default()
                    .push((entry.key, entry.value));
            }
            for (partition, name) in assigned.iter().zip(&names) {
                let entries = by_partition.remove(name).unwrap_or_default();
                HandlerStateRestored {
                    partition: name,
                    keys: entries.len(),
                }
                .emit(scope);
                state.restore(input, *partition, entries);
            }
        }
        Ok(())
    }

    /// The error that killed the session, once.
    pub(super) fn take_fatal(&mut self) -> Option<EngineError> {
        self.fatal.take()
    }

    /// Writes the records of every event the watermark has passed into the
    /// open transaction, in offset order per partition.
    pub(super) async fn write_ready(&mut self, parts: &mut Parts<'_>) {
        // While a commit runs the session is away: the records wait in
        // their partitions for the next transaction.
        if self.dead || self.committing.is_some() {
            return;
        }
        for written in take_ready(parts) {
            if self.dead {
                return;
            }
            if let Err(error) = self.write(written).await {
                self.on_error(parts, error, "write");
                self.abort(parts, &[]).await;
            }
        }
    }

    /// True when the open transaction should commit now: its interval
    /// passed (and no back-off holds it) or it holds `max_events` events.
    pub(super) fn due(&self) -> bool {
        self.can_commit_now() && self.pacing.is_due(self.open_events)
    }

    /// Commits the open transaction with every partition's watermark and
    /// waits for the outcome (after any commit already running).
    /// `releasing` are partitions about to be let go: if the commit fails,
    /// their records are dropped (their next owner redoes them) instead of
    /// being kept for the next transaction. Returns true on success.
    pub(super) async fn commit(&mut self, parts: &mut Parts<'_>, releasing: &[PartKey]) -> bool {
        self.settle(parts).await;
        match self.start_commit(parts, releasing).await {
            Start::Nothing => true,
            Start::Failed => false,
            Start::Started => self.settle(parts).await.unwrap_or(false),
        }
    }

    /// Starts committing the open transaction in the background, unless a
    /// commit runs already; its outcome is taken in by
    /// [`Transactions::on_outcome`] (from the run loop) or
    /// [`Transactions::settle`].
    pub(super) async fn start_commit_now(&mut self, parts: &mut Parts<'_>) {
        if self.committing.is_none() {
            self.start_commit(parts, &[]).await;
        }
    }

    async fn start_commit(&mut self, parts: &mut Parts<'_>, releasing: &[PartKey]) -> Start {
        self.write_ready(parts).await;
        if self.dead || self.committing.is_some() {
            return Start::Failed;
        }
        self.pacing.started();
        let mut positions = Vec::new();
        for (key, part) in parts.partitions.iter() {
            if let Some(next_offset) = part
                .watermark
                .committable()
                .filter(|p| part.committed.is_none_or(|c| *p > c))
            {
                positions.push((*key, next_offset));
            }
        }
        positions.sort();
        if positions.is_empty() && self.open.is_empty() {
            return Start::Nothing;
        }
        let commit: Vec<CommitPosition> = positions
            .iter()
            .map(|(key, next_offset)| CommitPosition {
                partition: key.partition,
                next_offset: *next_offset,
            })
            .collect();
        let stored = parts.sources[0].source.positions_to_store(&commit);
        let started = match self.needs_replay {
            true => self.replay().await,
            false => Ok(()),
        }
        .and_then(|()| self.spawn_commit(positions, commit, stored, releasing.to_vec()));
        match started {
            Ok(()) => Start::Started,
            Err(error) => {
                self.on_error(parts, error, "commit");
                self.abort(parts, releasing).await;
                Start::Failed
            }
        }
    }

    /// Waits for the commit running in the background, if one is, and takes
    /// its outcome in; `Some(true)` when it committed.
    async fn settle(&mut self, parts: &mut Parts<'_>) -> Option<bool> {
        let outcome = self.outcome_if_running().await?;
        Some(self.on_outcome(parts, outcome).await)
    }

    /// Takes in the outcome of the commit that ran in the background: the
    /// session comes back; on success the source's side of the positions
    /// follows (a no-op where the transaction stored them), on failure the
    /// transaction is aborted and its records kept for the next one.
    pub(super) async fn on_outcome(
        &mut self,
        parts: &mut Parts<'_>,
        outcome: Option<Committed>,
    ) -> bool {
        let Some(committing) = self.committing.take() else {
            return false;
        };
        let Some((session, result)) = outcome else {
            let error = TransactionError::Fatal {
                session: self.name.clone(),
                message: "the commit task failed; the session is lost".to_owned(),
            };
            self.on_error(parts, error, "commit");
            return false;
        };
        self.restore(session);
        let Committing {
            positions,
            commit,
            releasing,
            started,
            ..
        } = committing;
        match result {
            Ok(()) => {
                let source = &mut parts.sources[0].source;
                match source.commit(&commit).await {
                    Ok(()) => {
                        self.on_committed(parts, &positions, started.elapsed());
                        true
                    }
                    Err(error) => {
                        PositionsNotStored(&error)
                            .emit(parts.shared.scope.connector(source.name()));
                        self.on_committed(parts, &[], started.elapsed());
                        false
                    }
                }
            }
            Err(error) => {
                self.on_error(parts, error, "commit");
                self.abort(parts, &releasing).await;
                false
            }
        }
    }

    fn on_committed(
        &mut self,
        parts: &mut Parts<'_>,
        positions: &[(PartKey, u64)],
        took: Duration,
    ) {
        let shared = parts.shared;
        let scope = &shared.scope;
        let (mut outputs, mut released_bytes) = (0u64, 0u64);
        for written in self.open.drain(..) {
            match written.destination {
                Destination::State { .. } => {}
                Destination::Output(_) => outputs += 1,
                Destination::DeadLetter => {
                    // The dead letter's own headers say which event it is.
                    let header = |name| written.record.headers.get_str(name).unwrap_or("");
                    EventDeadLettered {
                        stream: header(dead_letter::STREAM),
                        partition: written.part.partition,
                        offset: header(dead_letter::OFFSET).parse().unwrap_or_default(),
                        cause: Some(DeadLetterCause {
                            reason: header(dead_letter::REASON),
                            error: header(dead_letter::ERROR),
                        }),
                    }
                    .emit(scope);
                }
            }
            if written.bytes > 0 {
                if let Some(part) = parts
                    .partitions
                    .get_mut(&written.part)
                    .filter(|p| p.epoch == written.epoch)
                {
                    part.bytes -= written.bytes;
                    released_bytes += written.bytes;
                }
            }
        }
        self.open_events = 0;
        self.pacing.committed();
        parts.budget.sub(0, released_bytes);
        TransactionCommitted {
            elapsed: took,
            outputs,
        }
        .emit(scope);
        for (key, next_offset) in positions {
            if let Some(part) = parts.partitions.get_mut(key) {
                part.committed = Some(*next_offset);
            }
        }
    }

    /// Logs a transaction error; a fatal one kills the session and leaves
    /// the error for the scheduler, which stops the function (see
    /// `Scheduler::stop_if_fatal`).
    fn on_error(&mut self, parts: &Parts<'_>, error: TransactionError, during: &str) {
        let shared = parts.shared;
        let fatal = !error.is_abortable();
        TransactionFailed {
            error: &error,
            during,
            fatal,
        }
        .emit(shared.scope.connector(&self.name));
        if !fatal {
            return;
        }
        self.dead = true;
        if self.fatal.is_none() {
            self.fatal = Some(EngineError::Transaction {
                function: shared.scope.name.to_string(),
                source: error,
            });
        }
    }

    /// Aborts the open transaction, drops records of partitions that are
    /// gone or being let go, and schedules the next attempt.
    async fn abort(&mut self, parts: &mut Parts<'_>, releasing: &[PartKey]) {
        if self.dead {
            return;
        }
        let aborted = match self.session() {
            Ok(session) => session.abort().await,
            Err(error) => Err(error),
        };
        if let Err(error) = aborted {
            self.on_error(parts, error, "abort");
        }
        if self.dead {
            return;
        }
        // Records stay for the next transaction unless their partition's
        // position can never be committed here again (gone, re-assigned, or
        // about to be released): then its next owner redoes those events.
        let partitions = &*parts.partitions;
        self.open.retain(|w| {
            !releasing.contains(&w.part)
                && partitions.get(&w.part).is_some_and(|p| p.epoch == w.epoch)
        });
        self.open_events = self.open.iter().filter(|w| w.first_of_event).count();
        self.needs_replay = !self.open.is_empty();
        self.pacing.failed();
    }

    /// The last commit at shutdown: tries a few times before giving up
    /// (what is not committed is handled again after a restart).
    pub(super) async fn final_commit(&mut self, parts: &mut Parts<'_>) {
        for attempt in 1..=5u32 {
            if self.commit(parts, &[]).await {
                return;
            }
            if self.dead {
                return;
            }
            tokio::time::sleep(backoff::delay(
                Duration::from_millis(50),
                Duration::from_secs(2),
                attempt,
            ))
            .await;
        }
        FinalTransactionNotCommitted.emit(&parts.shared.scope);
    }
}

/// Takes the staged records below each partition's watermark.
fn take_ready(parts: &mut Parts<'_>) -> Vec<Written> {
    let mut keys: Vec<PartKey> = parts.partitions.keys().copied().collect();
    keys.sort();
    let mut ready = Vec::new();
    for key in keys {
        let Some(part) = parts.partitions.get_mut(&key) else {
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
                let state_partition = matches!(destination, Destination::State { .. }).then(|| {
                    state_partition
                        .get_or_insert_with(|| {
                            parts.sources[key.input]
                                .source
                                .partition_name(key.partition)
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
