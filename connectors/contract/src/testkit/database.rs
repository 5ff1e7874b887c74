//! An in-memory database for testing the database half of `exactly_once`:
//! [`MemoryTable`] sinks whose session ([`MemoryDatabaseSession`]) commits
//! rows, source positions and handler state in one step, fences a session
//! whose positions another one moved, and loses everything uncommitted when
//! it is dropped (a crash). Commit failures and rows the sink refuses can be
//! injected.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::SinkError;
use crate::event::Record;
use crate::sink::{SessionOwner, Sink};
use crate::source::{CommitPosition, StoredPosition};
use crate::state::{StateChange, StateEntry};
use crate::transaction::{TransactionError, TransactionSession, TransactionalTarget};

/// The connector kind memory tables report in their transactional target.
const KIND: &str = "memorydb";

type OwnerKey = (String, String, String);

#[derive(Default)]
struct DatabaseState {
    tables: BTreeMap<String, Vec<Record>>,
    positions: BTreeMap<OwnerKey, BTreeMap<String, u64>>,
    state: BTreeMap<OwnerKey, BTreeMap<(String, Bytes), Bytes>>,
    commits: u64,
    failing: u32,
    /// Payload text that makes `check` (and a non-transactional write)
    /// refuse a record.
    refuse: Option<String>,
}

/// A shared in-memory database; clone it freely.
#[derive(Clone, Default)]
pub struct MemoryDatabase {
    state: Arc<Mutex<DatabaseState>>,
}

fn owner_key(owner: &SessionOwner) -> OwnerKey {
    (
        owner.pipeline.clone(),
        owner.function.clone(),
        owner.source.clone(),
    )
}

impl MemoryDatabase {
    /// An empty database.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, DatabaseState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A sink writing to table `name`.
    pub fn table(&self, name: &str) -> MemoryTable {
        self.lock().tables.entry(name.to_owned()).or_default();
        MemoryTable {
            database: self.clone(),
            table: name.to_owned(),
            name: format!("{KIND}:{name}"),
        }
    }

    /// The committed rows of a table, in commit order.
    pub fn rows(&self, table: &str) -> Vec<Record> {
        self.lock().tables.get(table).cloned().unwrap_or_default()
    }

    /// The stored positions of one source of one function.
    pub fn positions(&self, owner: &SessionOwner) -> BTreeMap<String, u64> {
        self.lock()
            .positions
            .get(&owner_key(owner))
            .cloned()
            .unwrap_or_default()
    }

    /// The stored handler state of one function's source: (partition, key)
    /// to value.
    pub fn state_of(&self, owner: &SessionOwner) -> BTreeMap<(String, Bytes), Bytes> {
        self.lock()
            .state
            .get(&owner_key(owner))
            .cloned()
            .unwrap_or_default()
    }

    /// Transactions committed so far.
    pub fn commits(&self) -> u64 {
        self.lock().commits
    }

    /// Makes the next `count` commits fail (abortably).
    pub fn fail_commits(&self, count: u32) {
        self.lock().failing = count;
    }

    /// Makes every table refuse records whose payload contains `text`.
    pub fn refuse_payloads_containing(&self, text: &str) {
        self.lock().refuse = Some(text.to_owned());
    }

    /// Stores a position as another process would have.
    pub fn store_position(&self, owner: &SessionOwner, partition: &str, next_offset: u64) {
        self.lock()
            .positions
            .entry(owner_key(owner))
            .or_default()
            .insert(partition.to_owned(), next_offset);
    }
}

/// A table of a [`MemoryDatabase`] as a sink.
#[derive(Clone)]
pub struct MemoryTable {
    database: MemoryDatabase,
    table: String,
    name: String,
}

impl MemoryTable {
    fn refusal(&self, record: &Record) -> Option<String> {
        let state = self.database.lock();
        let text = state.refuse.as_deref()?;
        String::from_utf8_lossy(&record.payload)
            .contains(text)
            .then(|| format!("the payload contains `{text}` (injected refusal)"))
    }
}

#[async_trait]
impl Sink for MemoryTable {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&self, record: Record) -> Result<(), SinkError> {
        self.check(&record)?;
        self.database
            .lock()
            .tables
            .entry(self.table.clone())
            .or_default()
            .push(record);
        Ok(())
    }

    fn check(&self, record: &Record) -> Result<(), SinkError> {
        match self.refusal(record) {
            Some(message) => Err(SinkError::Rejected {
                sink_name: self.name.clone(),
                message,
            }),
            None => Ok(()),
        }
    }

    fn transactional_target(&self) -> Option<TransactionalTarget> {
        Some(TransactionalTarget {
            kind: KIND,
            cluster: "memory".to_owned(),
            destination: self.table.clone(),
        })
    }

    async fn begin_exactly_once(
        &self,
        owner: &SessionOwner,
    ) -> Result<Box<dyn TransactionSession>, SinkError> {
        let known = self.database.positions(owner);
        Ok(Box::new(MemoryDatabaseSession {
            database: self.database.clone(),
            name: format!("{KIND}:{}/{}", owner.function, owner.source),
            owner: owner_key(owner),
            known,
            rows: Vec::new(),
            changes: Vec::new(),
        }))
    }
}

/// A transaction session of a [`MemoryDatabase`]: rows, positions and
/// state commit together; a dropped session leaves no trace.
pub struct MemoryDatabaseSession {
    database: MemoryDatabase,
    name: String,
    owner: OwnerKey,
    /// Positions as this session last loaded or committed them.
    known: BTreeMap<String, u64>,
    rows: Vec<(String, Record)>,
    changes: Vec<(String, StateChange)>,
}

#[async_trait]
impl TransactionSession for MemoryDatabaseSession {
    fn name(&self) -> &str {
        &self.name
    }

    fn accepts(&self, target: &TransactionalTarget) -> Result<(), String> {
        if target.kind != KIND {
            return Err(format!(
                "a memory database cannot write to `{}` in its transactions",
                target.kind
            ));
        }
        Ok(())
    }

    async fn write(
        &mut self,
        target: &TransactionalTarget,
        record: Record,
    ) -> Result<(), TransactionError> {
        self.rows.push((target.destination.clone(), record));
        Ok(())
    }

    async fn commit(
        &mut self,
        _positions: &[CommitPosition],
        stored: &[StoredPosition],
    ) -> Result<(), TransactionError> {
        let mut db = self.database.lock();
        if db.failing > 0 {
            db.failing -= 1;
            return Err(TransactionError::Abortable {
                session: self.name.clone(),
                message: "commit failed (injected)".to_owned(),
            });
        }
        let current = db.positions.entry(self.owner.clone()).or_default();
        for position in stored {
            if current.get(&position.partition) != self.known.get(&position.partition) {
                return Err(TransactionError::Fatal {
                    session: self.name.clone(),
                    message: format!(
                        "partition {} was committed by another session (fenced)",
                        position.partition
                    ),
                });
            }
        }
        for position in stored {
            current.insert(position.partition.clone(), position.next_offset);
            self.known
                .insert(position.partition.clone(), position.next_offset);
        }
        for (table, record) in self.rows.drain(..) {
            db.tables.entry(table).or_default().push(record);
        }
        let state = db.state.entry(self.owner.clone()).or_default();
        for (partition, change) in self.changes.drain(..) {
            match change.value {
                Some(value) => {
                    state.insert((partition, change.key), value);
                }
                None => {
                    state.remove(&(partition, change.key));
                }
            }
        }
        db.commits += 1;
        Ok(())
    }

    async fn abort(&mut self) -> Result<(), TransactionError> {
        self.rows.clear();
        self.changes.clear();
        Ok(())
    }

    async fn load_positions(&mut self) -> Result<Vec<StoredPosition>, TransactionError> {
        let stored = self
            .database
            .lock()
            .positions
            .get(&self.owner)
            .cloned()
            .unwrap_or_default();
        self.known = stored.clone();
        Ok(StoredPosition::from_map(stored))
    }

    fn stores_state(&self) -> bool {
        true
    }

    async fn write_state(
        &mut self,
        partition: &str,
        change: StateChange,
    ) -> Result<(), TransactionError> {
        self.changes.push((partition.to_owned(), change));
        Ok(())
    }

    async fn load_state(
        &mut self,
        partitions: &[String],
    ) -> Result<Vec<StateEntry>, TransactionError> {
        let db = self.database.lock();
        Ok(db
            .state
            .get(&self.owner)
            .map(|state| {
                state
                    .iter()
                    .filter(|((partition, _), _)| partitions.contains(partition))
                    .map(|((partition, key), value)| StateEntry {
                        partition: partition.clone(),
                        key: key.clone(),
                        value: value.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}
