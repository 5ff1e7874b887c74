//! Drains: a revoked partition, or every partition at shutdown, is let go
//! only after its running events finished (or the drain deadline passed)
//! and its finished positions were committed; what did not finish stays
//! uncommitted for the next owner.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Instant;

use spate_connector::PartitionId;

use super::partition::DrainReason;
use super::{now_ms, Scheduler};
use crate::events::{DrainDeadlinePassed, PartitionLagMeasured, PartitionsReleased};
use crate::work::PartKey;

impl Scheduler {
    /// Marks partitions as draining: their not-yet-started items are
    /// dropped (left uncommitted for the next owner) and running ones get
    /// until the drain deadline.
    pub(super) fn begin_drain(&mut self, keys: &[PartKey], reason: DrainReason) {
        let deadline = Instant::now() + self.drain_timeout;
        // Runs in tasks stop before their next item (see `FunctionShared::drains`).
        self.shared.drains.fetch_add(1, AtomicOrdering::AcqRel);
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
                DrainDeadlinePassed {
                    partition: key.partition,
                    running: part.running,
                }
                .emit(&self.shared.scope);
            }
            self.forget(key, &part);
            if matches!(part.draining, Some((_, DrainReason::Revoked))) {
                released.entry(key.input).or_default().push(key.partition);
            }
        }
        for (input, parts) in released {
            let source = &mut self.sources[input].source;
            let result = source.release(&parts).await;
            PartitionsReleased {
                partitions: &parts,
                error: result.as_ref().err().map(|e| e as &dyn std::fmt::Display),
            }
            .emit(&self.shared.scope);
        }
    }

    /// Takes each partition's lag (see [`PartitionLagMeasured`]).
    pub(super) fn export_partition_metrics(&mut self) {
        let now = now_ms();
        for (key, part) in &mut self.partitions {
            let age_secs = part
                .watermark
                .oldest_unfinished_timestamp_ms()
                .map_or(0.0, |t| (now - t).max(0) as f64 / 1e3);
            let uncommitted = part.watermark.span();
            let gauges = part.gauges.get_or_insert_with(|| {
                let stream = &self.shared.source_names[key.input];
                self.shared
                    .scope
                    .metrics
                    .partition_gauges(stream, key.partition)
            });
            PartitionLagMeasured {
                gauges,
                uncommitted,
                lag: self.sources[key.input].source.lag(key.partition),
                age_secs,
            }
            .emit();
        }
    }
}
