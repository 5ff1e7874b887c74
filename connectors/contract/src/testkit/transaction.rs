//! Transactions over a [`MemoryLog`](super::MemoryLog): records written into
//! a [`MemoryTransaction`] reach their attached [`MemorySink`]s only when it
//! commits, in the same step as the log's committed positions; an abort or a
//! dropped session (a crash) leaves no trace. Commit failures, fencing and
//! commits held in flight can be injected.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::{MemoryLog, MemorySink};
use crate::event::Record;
use crate::source::{CommitPosition, StoredPosition};
use crate::transaction::{TransactionError, TransactionSession, TransactionalTarget};

/// The log's transaction bookkeeping.
#[derive(Default)]
pub(super) struct TransactionState {
    /// Sinks a transaction may write to, by sink name.
    sinks: BTreeMap<String, MemorySink>,
    /// Commits still to fail with an abortable error.
    failing: u32,
    /// Sessions opened before this number are fenced.
    fenced_below: u64,
    opened: u64,
    commits: u64,
    aborts: u64,
    /// While set, each commit waits for a permit before it lands.
    hold: Option<Arc<Semaphore>>,
    /// Commits that reached the hold.
    held: u64,
}

impl MemoryLog {
    /// Lets transactions of this log write to `sink`.
    pub fn attach(&self, sink: &MemorySink) {
        self.state()
            .transactions
            .sinks
            .insert(sink.name.to_string(), sink.clone());
    }

    /// Makes the next `count` transaction commits fail (abortably).
    pub fn fail_transactions(&self, count: u32) {
        self.state().transactions.failing = count;
    }

    /// Fences every session opened so far, as a newer instance with the
    /// same identity would.
    pub fn fence(&self) {
        let mut state = self.state();
        state.transactions.fenced_below = state.transactions.opened;
    }

    /// Holds every commit from now on in flight, before it lands, until
    /// [`MemoryLog::release_commits`]: a commit a crash can catch midway.
    pub fn hold_commits(&self) {
        self.state().transactions.hold = Some(Arc::new(Semaphore::new(0)));
    }

    /// Lets held commits (and every later one) land.
    pub fn release_commits(&self) {
        if let Some(hold) = self.state().transactions.hold.take() {
            hold.add_permits(Semaphore::MAX_PERMITS / 2);
        }
    }

    /// Commits that have reached the hold of [`MemoryLog::hold_commits`].
    pub fn held_commits(&self) -> u64 {
        self.state().transactions.held
    }

    /// Transactions committed and aborted so far.
    pub fn transaction_counts(&self) -> (u64, u64) {
        let state = self.state();
        (state.transactions.commits, state.transactions.aborts)
    }
}

/// A transaction session of a [`MemoryLog`]'s source.
pub struct MemoryTransaction {
    log: MemoryLog,
    name: String,
    serial: u64,
    pending: Vec<(String, Record)>,
}

impl MemoryTransaction {
    pub(super) fn open(log: MemoryLog) -> Self {
        let serial = {
            let mut state = log.state();
            state.transactions.opened += 1;
            state.transactions.opened
        };
        Self {
            name: format!("memory:{}#{serial}", log.shared.stream),
            log,
            serial,
            pending: Vec::new(),
        }
    }

    fn check_fenced(&self) -> Result<(), TransactionError> {
        if self.serial <= self.log.state().transactions.fenced_below {
            return Err(TransactionError::Fatal {
                session: self.name.clone(),
                message: "fenced by a newer session (injected)".to_owned(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl TransactionSession for MemoryTransaction {
    fn name(&self) -> &str {
        &self.name
    }

    fn accepts(&self, target: &TransactionalTarget) -> Result<(), String> {
        if target.kind != "memory" {
            return Err(format!(
                "a memory transaction cannot write to `{}`",
                target.kind
            ));
        }
        if !self
            .log
            .state()
            .transactions
            .sinks
            .contains_key(&target.destination)
        {
            return Err(format!(
                "sink `{}` is not attached to the log",
                target.destination
            ));
        }
        Ok(())
    }

    async fn write(
        &mut self,
        target: &TransactionalTarget,
        record: Record,
    ) -> Result<(), TransactionError> {
        self.check_fenced()?;
        self.pending.push((target.destination.clone(), record));
        Ok(())
    }

    async fn commit(
        &mut self,
        positions: &[CommitPosition],
        _stored: &[StoredPosition],
    ) -> Result<(), TransactionError> {
        let hold = {
            let mut state = self.log.state();
            let hold = state.transactions.hold.clone();
            if hold.is_some() {
                state.transactions.held += 1;
            }
            hold
        };
        if let Some(hold) = hold {
            // Closed or released: either way the commit goes on.
            let _ = hold.acquire().await;
        }
        self.check_fenced()?;
        let mut state = self.log.state();
        if state.transactions.failing > 0 {
            state.transactions.failing -= 1;
            return Err(TransactionError::Abortable {
                session: self.name.clone(),
                message: "commit failed (injected)".to_owned(),
            });
        }
        let mut by_sink: BTreeMap<String, Vec<Record>> = BTreeMap::new();
        for (sink, record) in self.pending.drain(..) {
            by_sink.entry(sink).or_default().push(record);
        }
        for (name, records) in by_sink {
            if let Some(sink) = state.transactions.sinks.get(&name) {
                sink.append_committed(records);
            }
        }
        state.advance("transaction", positions);
        if !positions.is_empty() {
            state.commit_log.push(positions.to_vec());
        }
        state.transactions.commits += 1;
        Ok(())
    }

    async fn abort(&mut self) -> Result<(), TransactionError> {
        self.check_fenced()?;
        self.pending.clear();
        self.log.state().transactions.aborts += 1;
        Ok(())
    }
}
