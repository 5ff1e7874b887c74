//! Backpressure, drains and commits: pausing partitions at their bound,
//! draining revoked partitions and everything at shutdown, and committing
//! finished positions — never past an unfinished event.

use std::collections::BTreeMap;
use std::time::Instant;

use spate_connector::{CommitPosition, PartitionId};
use tracing::{debug, info, warn};

use super::partition::DrainReason;
use super::{now_ms, Scheduler};
use crate::policy::Delivery;
use crate::work::PartKey;

impl Scheduler {
    /// How many events each source may be asked for now: `max_batch`, cut
    /// to the room left under the in-flight bounds of its partitions that
    /// are taking events in and of the process, so a source that fetches
    /// what it is asked for (a JetStream pull) never fetches past the
    /// bound. At least 1, so assignments and revocations still come through.
    pub(super) fn intake_room(&self) -> Vec<usize> {
        let max_batch = self.options.max_batch;
        let process = self.options.budget.event_room();
        let mut rooms: Vec<Option<usize>> = vec![None; self.sources.len()];
        for (key, part) in &self.partitions {
            let room = rooms.get_mut(key.input).and_then(|r| {
                r.get_or_insert(0);
                r.as_mut()
            });
            if let Some(room) = room {
                if !part.paused && part.draining.is_none() {
                    *room += self.limits.events.saturating_sub(part.watermark.span());
                }
            }
        }
        rooms
            .into_iter()
            .map(|room| room.unwrap_or(max_batch).min(max_batch).min(process).max(1))
            .collect()
    }

    /// Pauses partitions past their bound (or all, past the process bound)
    /// and resumes those drained to half.
    pub(super) fn apply_backpressure(&mut self) {
        let process_full = self.options.budget.is_full();
        let process_room = self.options.budget.has_room();
        let mut changes: BTreeMap<usize, (Vec<PartitionId>, Vec<PartitionId>)> = BTreeMap::new();
        for (key, part) in &mut self.partitions {
            if part.draining.is_some() {
                continue;
            }
            if !part.paused && (process_full || part.is_full(&self.limits)) {
                part.paused = true;
                changes.entry(key.input).or_default().0.push(key.partition);
            } else if part.paused && process_room && part.has_room(&self.limits) {
                part.paused = false;
                changes.entry(key.input).or_default().1.push(key.partition);
            }
        }
        for (input, (pause, resume)) in changes {
            let source = &mut self.sources[input].source;
            if !pause.is_empty() {
                debug!(function = %self.shared.name, partitions = ?pause, "pausing partitions at the in-flight bound");
                if let Err(error) = source.pause(&pause) {
                    warn!(function = %self.shared.name, %error, "pause failed");
                }
            }
            if !resume.is_empty() {
                debug!(function = %self.shared.name, partitions = ?resume, "resuming drained partitions");
                if let Err(error) = source.resume(&resume) {
                    warn!(function = %self.shared.name, %error, "resume failed");
                }
            }
        }
        let paused = self.partitions.values().filter(|p| p.paused).count();
        self.shared.metrics.paused.set(paused as f64);
    }

    /// Marks partitions as draining: their not-yet-started items are
    /// dropped (left uncommitted for the next owner) and running ones get
    /// until the drain deadline.
    pub(super) fn begin_drain(&mut self, keys: &[PartKey], reason: DrainReason) {
        let deadline = Instant::now() + self.drain_timeout;
        for key in keys {
            if let Some(part) = self.partitions.get_mut(key) {
                part.draining = Some((deadline, reason));
            }
        }
        let partitions = &self.partitions;
        let removed = self
            .lanes
            .remove_partitions(&|key| partitions.get(key).is_some_and(|p| p.draining.is_some()));
        for item in &removed {
            self.abandon(item);
        }
    }

    pub(super) fn begin_stop(&mut self) {
        self.stopping = true;
        for input in 0..self.sources.len() {
            self.mark_ready(input, false);
        }
        let keys: Vec<PartKey> = self.partitions.keys().copied().collect();
        self.begin_drain(&keys, DrainReason::Shutdown);
        self.parked.clear();
    }

    /// Commits and lets go of partitions whose drain is over (nothing
    /// running, or the deadline passed).
    pub(super) async fn finish_drains(&mut self) {
        let now = Instant::now();
        let mut done: Vec<PartKey> = self
            .partitions
            .iter()
            .filter(|(_, p)| {
                p.draining
                    .is_some_and(|(deadline, _)| p.running == 0 || now >= deadline)
            })
            .map(|(k, _)| *k)
            .collect();
        if done.is_empty() {
            return;
        }
        done.sort();
        self.commit(Some(&done)).await;
        let mut released: BTreeMap<usize, Vec<PartitionId>> = BTreeMap::new();
        for key in done {
            let Some(part) = self.partitions.remove(&key) else {
                continue;
            };
            if part.running > 0 {
                warn!(
                    function = %self.shared.name,
                    partition = key.partition,
                    running = part.running,
                    "drain deadline passed with events still running; they stay uncommitted and will be redelivered"
                );
            }
            self.forget(key, &part);
            if matches!(part.draining, Some((_, DrainReason::Revoked))) {
                released.entry(key.input).or_default().push(key.partition);
            }
        }
        for (input, parts) in released {
            let source = &mut self.sources[input].source;
            if let Err(error) = source.release(&parts).await {
                warn!(function = %self.shared.name, %error, "releasing revoked partitions failed");
            } else {
                info!(function = %self.shared.name, partitions = ?parts, "revoked partitions drained, committed and released");
            }
        }
    }

    /// Commits finished positions of `only` (or of every partition). Under
    /// `exactly_once` it commits the open transaction, with every
    /// partition's position; `only` are then the partitions about to be
    /// released.
    pub(super) async fn commit(&mut self, only: Option<&[PartKey]>) {
        self.last_commit = Instant::now();
        if self.transactions.is_some() {
            match only {
                // Periodic and early commits run in the background.
                None => self.start_transaction_commit_now().await,
                // Before partitions are let go their commit must be done.
                Some(releasing) => {
                    self.commit_transaction(releasing).await;
                }
            }
            return;
        }
        for input in 0..self.sources.len() {
            let mut positions = Vec::new();
            for (key, part) in &self.partitions {
                if key.input != input || only.is_some_and(|o| !o.contains(key)) {
                    continue;
                }
                let position = match self.delivery {
                    Delivery::AtMostOnce => part.watermark.received_position(),
                    _ => part.watermark.committable(),
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
            match source.commit(&positions).await {
                Ok(()) => {
                    self.commit_failing = false;
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
                    self.commit_failing = true;
                    self.shared.metrics.commit_failures.increment(1);
                    warn!(function = %self.shared.name, source = source.name(), %error, "commit failed; will try again");
                }
            }
        }
    }

    pub(super) fn export_partition_metrics(&self) {
        let now = now_ms();
        for (key, part) in &self.partitions {
            let slot = &self.sources[key.input];
            let age = part
                .watermark
                .oldest_unfinished_timestamp_ms()
                .map_or(0.0, |t| (now - t).max(0) as f64 / 1e3);
            self.shared.metrics.partition(
                &self.shared.source_names[key.input],
                key.partition,
                part.watermark.span(),
                slot.source.lag(key.partition),
                age,
            );
        }
    }
}
