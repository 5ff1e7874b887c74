//! Intake: reading the sources, admitting their events into partitions and
//! lanes, and holding them back. A partition is paused at the source once
//! it reaches its in-flight bound and resumed once drained to half; a
//! source is never asked for more than the room left under those bounds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use spate_connector::{Event, PartitionId, Source, SourceError, SourceMessage};
use tracing::info_span;

use super::partition::{DrainReason, PartitionState};
use super::Scheduler;
use crate::backoff;
use crate::events::{
    EventLeftForNextOwner, EventsRead, PartitionsAssigned, PartitionsPaused, PartitionsResumed,
    PartitionsRevoked, PausedPartitions, SourceEnded, SourceFailed, SourceReadFailed,
    SourceRecovered,
};
use crate::policy::Ordering;
use crate::work::{LaneKey, PartKey, Stage, WorkItem};
use crate::EngineError;

/// A source and its read state.
pub(super) struct SourceSlot {
    pub(super) source: Box<dyn Source>,
    /// False once the source said `End`.
    pub(super) open: bool,
    pub(super) failures: u32,
    pub(super) retry_at: Option<tokio::time::Instant>,
}

/// Waits for the first source with something to say; source `i` is asked
/// for at most `maxes[i]` events.
pub(super) async fn next_message(
    sources: &mut [SourceSlot],
    maxes: &[usize],
) -> (usize, Result<SourceMessage, SourceError>) {
    let waits = sources
        .iter_mut()
        .enumerate()
        .filter(|(_, s)| s.open)
        .map(|(i, slot)| {
            let max = maxes.get(i).copied().unwrap_or(1);
            Box::pin(async move {
                if let Some(at) = slot.retry_at {
                    tokio::time::sleep_until(at).await;
                }
                (i, slot.source.next(max).await)
            })
        });
    futures::future::select_all(waits).await.0
}

impl Scheduler {
    /// Acts on what source `index` said.
    pub(super) async fn on_message(
        &mut self,
        index: usize,
        message: Result<SourceMessage, SourceError>,
    ) -> Result<(), EngineError> {
        match message {
            Err(error) => self.on_read_error(index, error),
            Ok(SourceMessage::Events(events)) => self.on_events(index, events).await?,
            Ok(SourceMessage::Assigned(parts)) => self.on_assigned(index, parts).await?,
            Ok(SourceMessage::Revoked(parts)) => self.on_revoked(index, &parts).await,
            Ok(SourceMessage::End) => {
                let slot = &mut self.sources[index];
                SourceEnded.emit(self.shared.scope.connector(slot.source.name()));
                slot.open = false;
                self.mark_ready(index, true);
            }
        }
        Ok(())
    }

    /// A failed read: retried with backoff, or the function stops.
    fn on_read_error(&mut self, index: usize, error: SourceError) {
        match error {
            error if error.is_retryable() => {
                self.options.readiness.failed(self.readiness_key(index));
                let slot = &mut self.sources[index];
                slot.failures += 1;
                let delay = backoff::delay(
                    Duration::from_millis(100),
                    Duration::from_secs(5),
                    slot.failures,
                );
                slot.retry_at = Some(tokio::time::Instant::now() + delay);
                // Warns once per outage; the retries are quiet until it recovers.
                SourceReadFailed {
                    error: &error,
                    retry_in: delay,
                    failures: slot.failures,
                }
                .emit(self.shared.scope.connector(slot.source.name()));
            }
            error => {
                let slot = &self.sources[index];
                SourceFailed(&error).emit(self.shared.scope.connector(slot.source.name()));
                self.fatal = Some(EngineError::Source {
                    function: self.shared.scope.name.to_string(),
                    source: error,
                });
                self.begin_stop();
            }
        }
    }

    /// A batch of events: admitted, then (at-most-once) committed.
    async fn on_events(&mut self, index: usize, events: Vec<Event>) -> Result<(), EngineError> {
        let slot = &mut self.sources[index];
        let recovered = slot.failures > 0;
        if recovered {
            SourceRecovered {
                failures: slot.failures,
            }
            .emit(self.shared.scope.connector(slot.source.name()));
        }
        slot.failures = 0;
        slot.retry_at = None;
        if recovered {
            self.mark_ready(index, true);
        }
        self.last_activity = tokio::time::Instant::now();
        let span = info_span!("batch", function = %self.shared.scope.name, events = events.len());
        let _entered = span.enter();
        let mut admitted = 0;
        let mut broken = Ok(());
        for event in events {
            match self.admit(index, event) {
                Ok(taken) => admitted += u64::from(taken),
                Err(error) => {
                    broken = Err(error);
                    break;
                }
            }
        }
        EventsRead {
            read: &mut self.events_in,
            count: admitted,
        }
        .emit(&self.shared.scope);
        drop(_entered);
        broken?;
        if self.committer.commits_on_receipt() {
            self.commit(None).await;
        }
        self.apply_backpressure();
        Ok(())
    }

    /// Partitions assigned: each starts afresh (a partition given back
    /// while still draining ends that drain first).
    async fn on_assigned(
        &mut self,
        index: usize,
        parts: Vec<PartitionId>,
    ) -> Result<(), EngineError> {
        let slot = &mut self.sources[index];
        PartitionsAssigned { partitions: &parts }
            .emit(self.shared.scope.connector(slot.source.name()));
        slot.failures = 0;
        self.mark_ready(index, true);
        // A partition given back while still draining: end that drain
        // now (commit what finished, release) before starting afresh.
        let now = Instant::now();
        let mut cut_short = false;
        for partition in &parts {
            let key = PartKey {
                input: index,
                partition: *partition,
            };
            if let Some((deadline, _)) = self
                .partitions
                .get_mut(&key)
                .and_then(|p| p.draining.as_mut())
            {
                *deadline = now;
                cut_short = true;
            }
        }
        if cut_short {
            self.finish_drains().await;
        }
        for partition in &parts {
            let key = PartKey {
                input: index,
                partition: *partition,
            };
            self.next_epoch += 1;
            if let Some(old) = self
                .partitions
                .insert(key, PartitionState::new(self.next_epoch))
            {
                self.forget(key, &old);
            }
        }
        self.resume_assigned(index, &parts).await
    }

    /// Partitions revoked: drained, committed and released.
    async fn on_revoked(&mut self, index: usize, parts: &[PartitionId]) {
        let slot = &self.sources[index];
        PartitionsRevoked { partitions: parts }
            .emit(self.shared.scope.connector(slot.source.name()));
        let keys: Vec<PartKey> = parts
            .iter()
            .map(|&partition| PartKey {
                input: index,
                partition,
            })
            .collect();
        self.begin_drain(&keys, DrainReason::Revoked);
        self.finish_drains().await;
    }

    /// Records on the readiness board whether source `input` delivers.
    pub(super) fn mark_ready(&self, input: usize, ready: bool) {
        self.options.readiness.set(self.readiness_key(input), ready);
    }

    pub(super) fn readiness_key(&self, input: usize) -> crate::readiness::SourceKey {
        crate::readiness::SourceKey {
            pipeline: self.pipeline.clone(),
            function: self.shared.scope.name.clone(),
            input,
        }
    }

    /// Admits one event; says whether it was (an event of a partition being
    /// drained is left for the next owner).
    pub(super) fn admit(&mut self, input: usize, event: Event) -> Result<bool, EngineError> {
        let key = PartKey {
            input,
            partition: event.position.partition,
        };
        if !self.partitions.contains_key(&key) {
            // A source without assignments (or one that skipped it): the
            // partition is ours from its first event.
            self.next_epoch += 1;
            self.partitions
                .insert(key, PartitionState::new(self.next_epoch));
        }
        let Some(part) = self.partitions.get_mut(&key) else {
            return Ok(false);
        };
        if part.draining.is_some() {
            EventLeftForNextOwner {
                partition: key.partition,
            }
            .emit(&self.shared.scope);
            return Ok(false);
        }
        part.watermark
            .receive(event.position.offset, event.timestamp_ms)
            .map_err(|error| EngineError::Contract {
                function: self.shared.scope.name.to_string(),
                source_name: self.shared.source_names[input].clone(),
                partition: key.partition,
                error,
            })?;
        let bytes = event.byte_len() as u64;
        part.unfinished += 1;
        part.bytes += bytes;
        self.options.budget.add(bytes);
        let lane = match self.ordering {
            Ordering::Partition => Some(LaneKey::Partition(key)),
            Ordering::Key => Some(LaneKey::Key(key, event.key.clone())),
            Ordering::None => None,
        };
        self.lanes.admit(WorkItem {
            event,
            part: key,
            epoch: part.epoch,
            lane,
            bytes,
            stage: Stage::Handle,
            attempts: 0,
            write_failures: 0,
            failure: None,
            state_changes: Vec::new(),
        });
        Ok(true)
    }

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
            let scope = &self.shared.scope;
            if !pause.is_empty() {
                let result = source.pause(&pause);
                let error = result.as_ref().err().map(|e| e as &dyn std::fmt::Display);
                PartitionsPaused {
                    partitions: &pause,
                    error,
                }
                .emit(scope);
            }
            if !resume.is_empty() {
                let result = source.resume(&resume);
                let error = result.as_ref().err().map(|e| e as &dyn std::fmt::Display);
                PartitionsResumed {
                    partitions: &resume,
                    error,
                }
                .emit(scope);
            }
        }
        PausedPartitions {
            paused: self.partitions.values().filter(|p| p.paused).count(),
        }
        .emit(&self.shared.scope);
    }
}
