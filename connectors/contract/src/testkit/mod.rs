//! An in-memory partitioned log with a [`Source`] and a [`Sink`] over it, for
//! testing engines and handlers without a broker.
//!
//! The log behaves like a small Kafka: events are appended per partition with
//! increasing offsets, a consumer session starts each partition at its last
//! committed position, pause/resume/revoke/release follow the contract, and
//! every commit, pause and release is recorded so tests can assert on them.
//! Failures can be switched on to exercise the engine's error paths.
//!
//! The log can also be the input of an `exactly_once` function: its source
//! opens a [`MemoryTransaction`] that commits records to attached
//! [`MemorySink`]s together with the log's committed positions, all at once
//! (see [`MemoryTransaction`]).

pub mod conformance;
mod database;
mod helpers;
mod sink;
mod transaction;

pub use crate::config::config_map;
pub use database::{MemoryDatabase, MemoryDatabaseSession, MemoryTable};
pub use helpers::{next_before, next_within, read_events, read_sink_config, read_source_config};
pub use sink::MemorySink;
pub use transaction::MemoryTransaction;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;

use crate::error::SourceError;
use crate::event::{Event, Headers, PartitionId, Position};
use crate::source::{CommitPosition, Source, SourceMessage, StoredPosition};
use crate::transaction::TransactionSession;

#[derive(Default)]
struct LogState {
    partitions: BTreeMap<PartitionId, Vec<Event>>,
    committed: BTreeMap<PartitionId, u64>,
    commit_log: Vec<Vec<CommitPosition>>,
    pause_log: Vec<(PartitionId, bool)>,
    released: Vec<PartitionId>,
    /// (partition, offset, committed position of the partition then).
    dead_lettered: Vec<(PartitionId, u64, Option<u64>)>,
    control: VecDeque<SourceMessage>,
    /// Read cursor (index into the partition's events) per assigned partition.
    cursors: BTreeMap<PartitionId, usize>,
    paused: BTreeSet<PartitionId>,
    ended: bool,
    fail_commits: bool,
    closed: bool,
    /// Every `resume_from` call's positions, in order.
    resume_log: Vec<Vec<StoredPosition>>,
    transactions: transaction::TransactionState,
}

impl LogState {
    /// Moves the committed positions to `positions`; `what` moving one
    /// backwards is a bug of the caller's.
    fn advance(&mut self, what: &str, positions: &[CommitPosition]) {
        for position in positions {
            let entry = self.committed.entry(position.partition).or_insert(0);
            assert!(
                position.next_offset >= *entry,
                "{what} moved partition {} backwards: {} -> {}",
                position.partition,
                entry,
                position.next_offset
            );
            *entry = position.next_offset;
        }
    }
}

struct Shared {
    stream: Arc<str>,
    state: Mutex<LogState>,
    wake: Notify,
}

/// A shared in-memory partitioned log; clone it freely.
#[derive(Clone)]
pub struct MemoryLog {
    shared: Arc<Shared>,
}

impl MemoryLog {
    /// An empty log named `stream` with `partitions` partitions.
    pub fn new(stream: &str, partitions: u32) -> Self {
        let mut state = LogState::default();
        for p in 0..partitions {
            state.partitions.insert(p, Vec::new());
        }
        Self {
            shared: Arc::new(Shared {
                stream: Arc::from(stream),
                state: Mutex::new(state),
                wake: Notify::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, LogState> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends an event and returns its offset (offsets start at 0 and leave
    /// no gaps).
    pub fn append(
        &self,
        partition: PartitionId,
        key: Option<&str>,
        payload: impl Into<Bytes>,
    ) -> u64 {
        let mut state = self.state();
        let events = state.partitions.entry(partition).or_default();
        let offset = events.len() as u64;
        events.push(Event {
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            payload: payload.into(),
            headers: Headers::new(),
            timestamp_ms: Some(1_700_000_000_000 + offset as i64),
            position: Position {
                stream: self.shared.stream.clone(),
                partition,
                offset,
            },
        });
        drop(state);
        self.shared.wake.notify_one();
        offset
    }

    /// Opens a consumer session: it is first told that every partition is
    /// assigned, and reads each from its committed position.
    pub fn source(&self) -> MemorySource {
        let mut state = self.state();
        let parts: Vec<PartitionId> = state.partitions.keys().copied().collect();
        state.cursors.clear();
        state.paused.clear();
        state.closed = false;
        state.control.clear();
        state
            .control
            .push_back(SourceMessage::Assigned(parts.clone()));
        for p in parts {
            let start = state.committed.get(&p).copied().unwrap_or(0) as usize;
            state.cursors.insert(p, start);
        }
        MemorySource {
            log: self.clone(),
            name: format!("memory:{}", self.shared.stream),
        }
    }

    /// Once every appended event has been read, the source returns
    /// [`SourceMessage::End`].
    pub fn end(&self) {
        self.state().ended = true;
        self.shared.wake.notify_one();
    }

    /// Takes partitions away from the current session, as a rebalance would.
    pub fn revoke(&self, partitions: &[PartitionId]) {
        let mut state = self.state();
        for p in partitions {
            state.cursors.remove(p);
        }
        state
            .control
            .push_back(SourceMessage::Revoked(partitions.to_vec()));
        drop(state);
        self.shared.wake.notify_one();
    }

    /// Gives partitions (back) to the current session, from their committed
    /// positions.
    pub fn assign(&self, partitions: &[PartitionId]) {
        let mut state = self.state();
        for p in partitions {
            let start = state.committed.get(p).copied().unwrap_or(0) as usize;
            state.cursors.insert(*p, start);
        }
        state
            .control
            .push_back(SourceMessage::Assigned(partitions.to_vec()));
        drop(state);
        self.shared.wake.notify_one();
    }

    /// The committed position of a partition (next offset to read).
    pub fn committed(&self, partition: PartitionId) -> Option<u64> {
        self.state().committed.get(&partition).copied()
    }

    /// Every commit call, in order.
    pub fn commit_log(&self) -> Vec<Vec<CommitPosition>> {
        self.state().commit_log.clone()
    }

    /// Every pause (`true`) and resume (`false`) call, in order.
    pub fn pause_log(&self) -> Vec<(PartitionId, bool)> {
        self.state().pause_log.clone()
    }

    /// Partitions currently paused.
    pub fn paused(&self) -> BTreeSet<PartitionId> {
        self.state().paused.clone()
    }

    /// Partitions released after a revoke, in order.
    pub fn released(&self) -> Vec<PartitionId> {
        self.state().released.clone()
    }

    /// Events the engine reported dead-lettered, in order: (partition,
    /// offset, the partition's committed position at the time).
    pub fn dead_lettered(&self) -> Vec<(PartitionId, u64, Option<u64>)> {
        self.state().dead_lettered.clone()
    }

    /// Every position list the engine resumed the source from, in order.
    pub fn resume_log(&self) -> Vec<Vec<StoredPosition>> {
        self.state().resume_log.clone()
    }

    /// Whether the last session was closed.
    pub fn closed(&self) -> bool {
        self.state().closed
    }

    /// Makes every commit fail (retryably) while `fail` is true.
    pub fn fail_commits(&self, fail: bool) {
        self.state().fail_commits = fail;
    }

    /// Events not yet read by the current session, over all partitions.
    pub fn unread(&self) -> usize {
        let state = self.state();
        state
            .cursors
            .iter()
            .map(|(p, c)| {
                state
                    .partitions
                    .get(p)
                    .map_or(0, |e| e.len().saturating_sub(*c))
            })
            .sum()
    }
}

/// A consumer session over a [`MemoryLog`].
pub struct MemorySource {
    log: MemoryLog,
    name: String,
}

impl MemorySource {
    fn poll_once(&self, max_events: usize) -> Option<SourceMessage> {
        let mut state = self.log.state();
        if let Some(message) = state.control.pop_front() {
            return Some(message);
        }
        let mut batch = Vec::new();
        let LogState {
            partitions,
            cursors,
            paused,
            ..
        } = &mut *state;
        // Round-robin one event per partition at a time, like a fetcher that
        // interleaves partitions; order within a partition is kept.
        let mut progressed = true;
        while batch.len() < max_events && progressed {
            progressed = false;
            for (p, cursor) in cursors.iter_mut() {
                if paused.contains(p) || batch.len() >= max_events {
                    continue;
                }
                if let Some(event) = partitions.get(p).and_then(|e| e.get(*cursor)) {
                    batch.push(event.clone());
                    *cursor += 1;
                    progressed = true;
                }
            }
        }
        if !batch.is_empty() {
            return Some(SourceMessage::Events(batch));
        }
        let all_read = state
            .cursors
            .iter()
            .all(|(p, c)| state.partitions.get(p).is_none_or(|e| *c >= e.len()));
        if state.ended && all_read {
            return Some(SourceMessage::End);
        }
        None
    }
}

#[async_trait]
impl Source for MemorySource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn next(&mut self, max_events: usize) -> Result<SourceMessage, SourceError> {
        loop {
            let woken = self.log.shared.wake.notified();
            if let Some(message) = self.poll_once(max_events.max(1)) {
                return Ok(message);
            }
            // A wake-up may have been missed between the check and here;
            // re-check at least every few milliseconds.
            let _ = tokio::time::timeout(Duration::from_millis(5), woken).await;
        }
    }

    fn pause(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError> {
        let mut state = self.log.state();
        for p in partitions {
            state.paused.insert(*p);
            state.pause_log.push((*p, true));
        }
        Ok(())
    }

    fn resume(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError> {
        let mut state = self.log.state();
        for p in partitions {
            state.paused.remove(p);
            state.pause_log.push((*p, false));
        }
        drop(state);
        self.log.shared.wake.notify_one();
        Ok(())
    }

    async fn commit(&mut self, positions: &[CommitPosition]) -> Result<(), SourceError> {
        let mut state = self.log.state();
        if state.fail_commits {
            return Err(SourceError::Unavailable {
                source_name: self.name.clone(),
                message: "commit failed (injected)".to_owned(),
            });
        }
        state.advance("commit", positions);
        state.commit_log.push(positions.to_vec());
        Ok(())
    }

    fn dead_lettered(&mut self, partition: PartitionId, offset: u64) {
        let mut state = self.log.state();
        let committed = state.committed.get(&partition).copied();
        state.dead_lettered.push((partition, offset, committed));
    }

    async fn release(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError> {
        self.log.state().released.extend_from_slice(partitions);
        Ok(())
    }

    async fn begin_exactly_once(&mut self) -> Result<Box<dyn TransactionSession>, SourceError> {
        Ok(Box::new(MemoryTransaction::open(self.log.clone())))
    }

    /// Moves each assigned partition's read cursor up to its stored
    /// position (never back), as a resumable source skips what a database
    /// already holds.
    fn resume_from(&mut self, positions: &[StoredPosition]) -> Result<(), SourceError> {
        let mut state = self.log.state();
        state.resume_log.push(positions.to_vec());
        for position in positions {
            let Ok(partition) = position.partition.parse::<PartitionId>() else {
                return Err(SourceError::Fatal {
                    source_name: self.name.clone(),
                    message: format!("no partition named `{}`", position.partition),
                });
            };
            if let Some(cursor) = state.cursors.get_mut(&partition) {
                *cursor = (*cursor).max(position.next_offset as usize);
            }
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<(), SourceError> {
        self.log.state().closed = true;
        Ok(())
    }
}
