//! The `generate` source: hands out [`Telemetry`] events partition by
//! partition, paced and resumable.
//!
//! Guarantees, in terms of the contract's delivery rules:
//! 1. reading never moves a committed position; [`Source::commit`] records
//!    positions in memory (shared with later sources of the same builder)
//!    and, with a `state_file`, atomically on disk;
//! 2. each partition's offsets run 0, 1, 2, … without gaps, in order;
//! 3. a paused partition yields nothing until resumed;
//! 4. every partition is owned for the whole session: the first `next`
//!    returns `Assigned(all partitions)` and nothing is ever revoked;
//! 5. `next` is cancel safe: it only waits *before* taking events, and the
//!    batch is taken without awaiting, so a dropped `next` loses nothing.
//!
//! Pacing: partition `p`'s `k`-th event of the session is due at
//! `start + (k × partitions + p) / rate` seconds, computed from the session's
//! start instant so the pace never drifts. A partition that was paused is
//! behind schedule when resumed and catches up at full speed, like a broker
//! backlog would.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use spate_connector::{CommitPosition, PartitionId, Source, SourceError, SourceMessage};
use tokio::time::Instant;

use super::telemetry::Telemetry;
use super::GenerateState;
use crate::state::StateFile;

/// Longest pacing delay computed, in seconds (ten years).
const MAX_WAIT_SECS: f64 = 10.0 * 365.0 * 86_400.0;

/// Committed positions (next offset per partition), shared between a
/// builder and the sources it builds.
pub(crate) type Positions = Arc<Mutex<BTreeMap<PartitionId, u64>>>;

pub(crate) fn lock(positions: &Positions) -> MutexGuard<'_, BTreeMap<PartitionId, u64>> {
    positions.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Clone, Copy)]
struct Cursor {
    /// Next offset to hand out.
    next: u64,
    /// Offset this session started at (pacing counts from here).
    first: u64,
    /// Exclusive end when `count` is set.
    end: Option<u64>,
    paused: bool,
}

impl Cursor {
    fn exhausted(&self) -> bool {
        self.end.is_some_and(|end| self.next >= end)
    }
}

/// Generates synthetic telemetry; see the [module docs](self).
pub struct GenerateSource {
    name: String,
    telemetry: Telemetry,
    rate: f64,
    cursors: Vec<Cursor>,
    started: Option<Instant>,
    assigned: bool,
    committed: Positions,
    state_file: Option<StateFile>,
}

impl GenerateSource {
    /// A session starting each partition at its position in `committed`
    /// (0 when absent), ending after `count` events in all if set.
    pub(crate) fn new(
        telemetry: Telemetry,
        count: Option<u64>,
        committed: Positions,
        state_file: Option<StateFile>,
    ) -> Self {
        let partitions = u64::from(telemetry.partitions);
        let start = lock(&committed).clone();
        let cursors = (0..telemetry.partitions)
            .map(|p| {
                let next = start.get(&p).copied().unwrap_or(0);
                // Events g = offset × partitions + p with g < count.
                let end = count.map(|c| (c.saturating_sub(u64::from(p))).div_ceil(partitions));
                Cursor {
                    next,
                    first: next,
                    end,
                    paused: false,
                }
            })
            .collect();
        Self {
            name: format!("generate:{}", telemetry.stream),
            rate: telemetry.rate,
            telemetry,
            cursors,
            started: None,
            assigned: false,
            committed,
            state_file,
        }
    }

    /// Pacing rank of a partition's next event within this session.
    fn rank(&self, partition: usize) -> u64 {
        let cursor = &self.cursors[partition];
        (cursor.next - cursor.first)
            .saturating_mul(u64::from(self.telemetry.partitions))
            .saturating_add(partition as u64)
    }

    /// When the event of pacing rank `rank` is due.
    fn due(&self, started: Instant, rank: u64) -> Instant {
        if self.rate <= 0.0 {
            return started;
        }
        // Capped so the addition cannot overflow; a due time ten years out
        // is as good as never for a running process.
        let secs = (rank as f64 / self.rate).min(MAX_WAIT_SECS);
        started + Duration::from_secs_f64(secs)
    }

    /// The unpaused, unexhausted partition whose next event comes first.
    fn first_candidate(&self) -> Option<usize> {
        (0..self.cursors.len())
            .filter(|p| !self.cursors[*p].paused && !self.cursors[*p].exhausted())
            .min_by_key(|p| self.rank(*p))
    }

    fn unavailable(&self, message: String) -> SourceError {
        SourceError::Unavailable {
            source_name: self.name.clone(),
            message,
        }
    }
}

#[async_trait]
impl Source for GenerateSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn next(&mut self, max_events: usize) -> Result<SourceMessage, SourceError> {
        if let Some(assigned) = SourceMessage::assign_once(&mut self.assigned, || {
            (0..self.telemetry.partitions).collect()
        }) {
            return Ok(assigned);
        }
        let max = max_events.max(1);
        let started = *self.started.get_or_insert_with(Instant::now);
        loop {
            if self.cursors.iter().all(Cursor::exhausted) {
                return Ok(SourceMessage::End);
            }
            let Some(first) = self.first_candidate() else {
                // Everything left is paused; only `resume` (which needs this
                // future dropped) can change that.
                std::future::pending::<()>().await;
                continue;
            };
            let due = self.due(started, self.rank(first));
            let now = Instant::now();
            if due > now {
                // Cancel safe: nothing has been taken yet.
                tokio::time::sleep_until(due).await;
                continue;
            }
            // Take every due event, in pacing order, without awaiting.
            let mut events = Vec::with_capacity(max.min(1024));
            while events.len() < max {
                let Some(p) = self.first_candidate() else {
                    break;
                };
                if self.due(started, self.rank(p)) > now {
                    break;
                }
                let cursor = &mut self.cursors[p];
                let offset = cursor.next;
                cursor.next += 1;
                events.push(self.telemetry.event(p as PartitionId, offset));
            }
            return Ok(SourceMessage::Events(events));
        }
    }

    fn pause(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError> {
        for p in partitions {
            if let Some(cursor) = self.cursors.get_mut(*p as usize) {
                cursor.paused = true;
            }
        }
        Ok(())
    }

    fn resume(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError> {
        for p in partitions {
            if let Some(cursor) = self.cursors.get_mut(*p as usize) {
                cursor.paused = false;
            }
        }
        Ok(())
    }

    async fn commit(&mut self, positions: &[CommitPosition]) -> Result<(), SourceError> {
        let snapshot = {
            let mut committed = lock(&self.committed);
            for position in positions {
                if position.partition < self.telemetry.partitions {
                    committed.insert(position.partition, position.next_offset);
                } else {
                    tracing::warn!(source = %self.name, partition = position.partition, "commit for a partition this source does not have");
                }
            }
            committed.clone()
        };
        if let Some(state) = &self.state_file {
            let content = GenerateState {
                next_offsets: snapshot,
            };
            if let Err(e) = state.store(&content).await {
                return Err(self.unavailable(e.to_string()));
            }
        }
        Ok(())
    }

    fn lag(&self, partition: PartitionId) -> Option<u64> {
        let cursor = self.cursors.get(partition as usize)?;
        if self.rate <= 0.0 {
            return cursor.end.map(|end| end.saturating_sub(cursor.next));
        }
        // Events due by now (ranks 0..=k of this partition) not yet handed out.
        let Some(started) = self.started else {
            return Some(0);
        };
        let ranks = (started.elapsed().as_secs_f64() * self.rate) as u64;
        let p = u64::from(partition);
        let partitions = u64::from(self.telemetry.partitions);
        let due = if ranks < p {
            0
        } else {
            (ranks - p) / partitions + 1
        };
        let mut due_offset = cursor.first.saturating_add(due);
        if let Some(end) = cursor.end {
            due_offset = due_offset.min(end);
        }
        Some(due_offset.saturating_sub(cursor.next))
    }
}
