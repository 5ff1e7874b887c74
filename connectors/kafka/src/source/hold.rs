//! Holding fetched events until the engine takes them (rule 3 of the
//! source): events are filed per partition in offset order (repeats and
//! what lies below a stored position dropped), handed out one partition
//! after the other in turn, and fetching is paused in librdkafka only while
//! a partition holds [`HOLD_BYTES`], resumed once it drained to half.

use std::collections::VecDeque;

use rdkafka::consumer::Consumer;
use rdkafka::Offset;
use spate_connector::{Event, PartitionId};

use super::{KafkaSource, HOLD_BYTES};

impl KafkaSource {
    /// Files one fetched event under its partition, or drops it (a partition
    /// not assigned, a seek under way, below the stored position, or not
    /// above the last offset taken in).
    pub(super) fn hold(&mut self, event: Event) {
        let id = event.position.partition;
        if !self.assigned.contains(&id) {
            tracing::debug!(source = %self.name, partition = id, "event of a partition not assigned dropped");
            return;
        }
        let offset = event.position.offset;
        if self.seeking.contains_key(&id)
            || self.floor.get(&id).is_some_and(|floor| offset < *floor)
        {
            tracing::debug!(source = %self.name, partition = id, offset, "message below the stored position dropped");
            return;
        }
        if self
            .last_offset
            .get(&id)
            .is_some_and(|last| offset <= *last)
        {
            tracing::debug!(source = %self.name, partition = id, offset, "repeated message dropped");
            return;
        }
        self.last_offset.insert(id, offset);
        let held = self.held_bytes.entry(id).or_default();
        *held += event.byte_len();
        let full = *held >= HOLD_BYTES;
        self.queues.entry(id).or_default().push_back(event);
        if full && !self.fetch_paused.contains(&id) {
            self.set_fetching(&[id], false);
        }
    }

    /// Up to `max` events of unpaused partitions, one partition after the
    /// other in turn.
    pub(super) fn take_events(&mut self, max: usize) -> Vec<Event> {
        let mut batch = Vec::new();
        let ready: Vec<PartitionId> = self
            .queues
            .iter()
            .filter(|(id, q)| !q.is_empty() && !self.paused.contains(id))
            .map(|(id, _)| *id)
            .collect();
        if ready.is_empty() {
            return batch;
        }
        // Start after the partition that started last time, for fairness.
        let start = ready.iter().position(|id| *id >= self.cursor).unwrap_or(0);
        let order: Vec<PartitionId> = ready[start..]
            .iter()
            .chain(&ready[..start])
            .copied()
            .collect();
        self.cursor = order[0].wrapping_add(1);
        let mut progressed = true;
        while batch.len() < max && progressed {
            progressed = false;
            for id in &order {
                if batch.len() >= max {
                    break;
                }
                if let Some(event) = self.queues.get_mut(id).and_then(VecDeque::pop_front) {
                    batch.push(event);
                    progressed = true;
                }
            }
        }
        self.queues.retain(|_, q| !q.is_empty());
        for event in &batch {
            let id = event.position.partition;
            self.handed.insert(id, event.position.offset + 1);
            if let Some(held) = self.held_bytes.get_mut(&id) {
                *held = held.saturating_sub(event.byte_len());
            }
        }
        let drained: Vec<PartitionId> = self
            .fetch_paused
            .iter()
            .copied()
            .filter(|id| self.held_bytes.get(id).copied().unwrap_or(0) <= HOLD_BYTES / 2)
            .collect();
        if !drained.is_empty() {
            self.set_fetching(&drained, true);
        }
        batch
    }

    /// Pauses or resumes fetching these partitions in librdkafka. A failure
    /// is logged: events then keep arriving (and wait in the source), or
    /// fetching stays paused until the next drain.
    fn set_fetching(&mut self, ids: &[PartitionId], fetch: bool) {
        let Some(consumer) = self.consumer.clone() else {
            return;
        };
        let tpl = self.partition_list(ids);
        let result = match fetch {
            true => consumer.resume(&tpl),
            false => consumer.pause(&tpl),
        };
        match result {
            Ok(()) => {
                for id in ids {
                    match fetch {
                        true => self.fetch_paused.remove(id),
                        false => self.fetch_paused.insert(*id),
                    };
                }
            }
            Err(e) => {
                tracing::warn!(source = %self.name, partitions = ?ids, fetch, error = %e, "changing fetching in librdkafka failed");
            }
        }
    }

    fn partition_list(&self, ids: &[PartitionId]) -> rdkafka::TopicPartitionList {
        let interner = self.shared.interner();
        interner.list(ids.iter().map(|id| (*id, Offset::Invalid))).0
    }
}
