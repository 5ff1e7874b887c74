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

use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use bytes::Bytes;
use spate_connector::{
    dead_letter, CommitPosition, PartitionId, Record, SessionOwner, Sink, Source, StateChange,
    TransactionError, TransactionSession, TransactionalTarget,
};
use tracing::{debug, error, info, warn};

use super::Scheduler;
use crate::engine::work::{Destination, PartKey, WorkItem};
use crate::engine::{backoff, EngineError, NamedSink, SessionHost};

/// A record written into the open transaction, kept until it commits.
struct Written {
    part: PartKey,
    epoch: u64,
    destination: Destination,
    record: Record,
    /// The in-flight bytes its event held (on the event's first record).
    bytes: u64,
    /// True on the event's first record: counts the event once.
    first_of_event: bool,
    /// For a state change: the partition's stable name.
    state_partition: Option<String>,
}

/// The exactly-once state of a function.
pub(super) struct Transactions {
    session: Box<dyn TransactionSession>,
    /// The session stores the source's positions itself (a database's):
    /// the source resumes from them, and handler state commits with them.
    resumes: bool,
    outputs: Vec<TransactionalTarget>,
    dead_letter: TransactionalTarget,
    open: Vec<Written>,
    /// Events whose records are in `open`.
    open_events: usize,
    /// The open transaction was aborted: write `open` again first.
    needs_replay: bool,
    interval: Duration,
    max_events: usize,
    failures: u32,
    retry_at: Option<Instant>,
    last_commit: Instant,
    /// The session can never commit again.
    dead: bool,
}

fn target_of(sink: &dyn Sink, role: &str) -> Result<TransactionalTarget, String> {
    sink.transactional_target().ok_or_else(|| {
        format!(
            "{role} `{}` cannot write inside a transaction, so `exactly_once` cannot cover it",
            sink.name()
        )
    })
}

impl Transactions {
    /// Opens the session — the source's, or under [`SessionHost::Sink`]
    /// the first output's (else the dead-letter sink's), which stores the
    /// source's positions itself — and checks that it accepts every output
    /// and the dead-letter sink. A sink's session then hands the source the
    /// positions stored so far.
    pub(super) async fn open(
        source: &mut dyn Source,
        outputs: &[NamedSink],
        dead_letter: &dyn Sink,
        host: SessionHost,
        owner: SessionOwner,
        interval: Duration,
        max_events: usize,
    ) -> Result<Self, String> {
        let mut targets = Vec::with_capacity(outputs.len());
        for output in outputs {
            targets.push(target_of(
                &*output.sink,
                &format!("output `{}`:", output.name),
            )?);
        }
        let dead_letter_target = target_of(dead_letter, "the dead-letter sink")?;
        let mut session = match host {
            SessionHost::Source => source
                .begin_exactly_once()
                .await
                .map_err(|e| format!("opening the exactly-once session failed: {e}"))?,
            SessionHost::Sink => {
                let sink = outputs.first().map_or(dead_letter, |o| &*o.sink);
                sink.begin_exactly_once(&owner).await.map_err(|e| {
                    format!(
                        "opening the exactly-once session in `{}` failed: {e}",
                        sink.name()
                    )
                })?
            }
        };
        for target in targets.iter().chain(std::iter::once(&dead_letter_target)) {
            session.accepts(target).map_err(|why| {
                format!(
                    "`{}` cannot commit records to {}:{} together with its positions: {why}",
                    session.name(),
                    target.kind,
                    target.destination
                )
            })?;
        }
        let resumes = host == SessionHost::Sink;
        if resumes {
            let positions = session
                .load_positions()
                .await
                .map_err(|e| format!("reading the stored positions failed: {e}"))?;
            info!(
                session = session.name(),
                positions = positions.len(),
                "resuming from the positions stored with the records"
            );
            source.resume_from(&positions).map_err(|e| e.to_string())?;
        }
        info!(session = session.name(), "exactly-once session open");
        Ok(Self {
            session,
            resumes,
            outputs: targets,
            dead_letter: dead_letter_target,
            open: Vec::new(),
            open_events: 0,
            needs_replay: false,
            interval,
            max_events: max_events.max(1),
            failures: 0,
            retry_at: None,
            last_commit: Instant::now(),
            dead: false,
        })
    }

    /// False while the session is dead or backing off after a failure.
    pub(super) fn can_commit_now(&self) -> bool {
        !self.dead && self.retry_at.is_none_or(|at| Instant::now() >= at)
    }

    /// Writes one remembered record (or state change) into the session.
    async fn send(&mut self, written: &Written) -> Result<(), TransactionError> {
        match written.destination {
            Destination::State { delete } => {
                let change = StateChange {
                    key: written.record.key.clone().unwrap_or_default(),
                    value: (!delete).then(|| written.record.payload.clone()),
                };
                let partition = written.state_partition.as_deref().unwrap_or_default();
                self.session.write_state(partition, change).await
            }
            destination => {
                let target = self.target(destination).clone();
                self.session.write(&target, written.record.clone()).await
            }
        }
    }

    fn target(&self, destination: Destination) -> &TransactionalTarget {
        match destination {
            Destination::Output(index) => &self.outputs[index],
            Destination::DeadLetter | Destination::State { .. } => &self.dead_letter,
        }
    }

    /// Writes a record into the open transaction; remembers it either way.
    async fn write(&mut self, written: Written) -> Result<(), TransactionError> {
        let result = if self.needs_replay {
            Ok(()) // the whole of `open` is written again before the commit
        } else {
            self.send(&written).await
        };
        if written.first_of_event {
            self.open_events += 1;
        }
        self.open.push(written);
        result
    }

    /// Writes everything in `open` again into a fresh transaction.
    async fn replay(&mut self) -> Result<(), TransactionError> {
        debug!(
            session = self.session.name(),
            records = self.open.len(),
            "writing the aborted transaction's records again"
        );
        let open = std::mem::take(&mut self.open);
        let mut result = Ok(());
        for written in &open {
            result = self.send(written).await;
            if result.is_err() {
                break;
            }
        }
        self.open = open;
        result?;
        self.needs_replay = false;
        Ok(())
    }
}

impl Scheduler {
    /// Opens the exactly-once session if the function asked for it.
    pub async fn open_transactions(&mut self) -> Result<(), EngineError> {
        if self.delivery != crate::pipeline::Delivery::ExactlyOnce {
            return Ok(());
        }
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
        if self.shared.handler.state().is_some() && !transactions.session.stores_state() {
            return Err(EngineError::Plan {
                function,
                message: format!(
                    "the handler keeps state between events, and under `exactly_once` that state must commit with the positions, but `{}` cannot store it: write this function's outputs to a database that stores positions (postgres), or use `delivery: at_least_once` (state kept in memory, rebuilt from nothing after a restart)",
                    transactions.session.name()
                ),
            });
        }
        self.transactions = Some(transactions);
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
        let Some(tx) = self.transactions.as_mut().filter(|tx| tx.resumes) else {
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
                let positions = tx.session.load_positions().await?;
                let entries = match wants_state {
                    true => tx.session.load_state(&names).await?,
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
        if self.transactions.as_ref().is_none_or(|tx| tx.dead) {
            return;
        }
        for written in self.take_ready() {
            let Some(tx) = self.transactions.as_mut() else {
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
        self.transactions.as_ref().is_some_and(|tx| {
            !tx.dead
                && tx.retry_at.is_none_or(|at| Instant::now() >= at)
                && (tx.last_commit.elapsed() >= tx.interval || tx.open_events >= tx.max_events)
        })
    }

    /// Commits the open transaction with every partition's watermark.
    /// `releasing` are partitions about to be let go: if the commit fails,
    /// their records are dropped (their next owner redoes them) instead of
    /// being kept for the next transaction. Returns true on success.
    pub(super) async fn commit_transaction(&mut self, releasing: &[PartKey]) -> bool {
        self.write_ready().await;
        let Some(tx) = self.transactions.as_mut() else {
            return false;
        };
        if tx.dead {
            return false;
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
            return true;
        }
        let commit: Vec<CommitPosition> = positions
            .iter()
            .map(|(key, next_offset)| CommitPosition {
                partition: key.partition,
                next_offset: *next_offset,
            })
            .collect();
        let stored = self.sources[0].source.positions_to_store(&commit);
        let started = Instant::now();
        let result = match tx.needs_replay {
            true => tx.replay().await,
            false => Ok(()),
        };
        let result = match result {
            Ok(()) => tx.session.commit(&commit, &stored).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => {
                // The records are durable; now the source's own side of the
                // positions (a no-op where the transaction stored them).
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
                self.abort_transaction(releasing).await;
                false
            }
        }
    }

    fn on_transaction_committed(&mut self, positions: &[(PartKey, u64)], took: Duration) {
        let Some(tx) = self.transactions.as_mut() else {
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
        let Some(tx) = self.transactions.as_mut() else {
            return;
        };
        if error.is_abortable() {
            warn!(function = %self.shared.name, session = tx.session.name(), %error, during, "transaction failed; aborting it and writing its records again");
            return;
        }
        error!(function = %self.shared.name, session = tx.session.name(), %error, during, "exactly-once session lost; stopping the function without committing");
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
        let Some(tx) = self.transactions.as_mut() else {
            return;
        };
        if tx.dead {
            return;
        }
        if let Err(error) = tx.session.abort().await {
            self.on_transaction_error(error, "abort");
        }
        let Some(tx) = self.transactions.as_mut() else {
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
            let Some(tx) = self.transactions.as_ref() else {
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
