//! The consumer context: librdkafka's statistics become the partitions'
//! offsets, its log lines go to tracing, and rebalances are handed over —
//! a revocation is sent to the source and blocks the callback until the
//! engine releases the partitions; an assignment is resumed in librdkafka
//! and sent to the source.

use std::sync::Arc;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;

use super::{lock, Item, PartitionOffsets, Shared};

/// The consumer context: statistics, errors and the rebalance hand-over.
pub struct SpateContext {
    shared: Arc<Shared>,
}

impl SpateContext {
    /// A context over shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl ClientContext for SpateContext {
    fn stats(&self, statistics: Statistics) {
        let interner = self.shared.interner();
        let mut found = Vec::new();
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                // librdkafka's own `consumer_lag` counts from the committed
                // offset; spate wants what is not read yet.
                let end = if self.shared.read_committed {
                    p.ls_offset
                } else {
                    p.hi_offset
                };
                // Fetched is not read: events waiting in the source count
                // as lag, so the fallback is the committed offset, not
                // librdkafka's application offset.
                let position = p.committed_offset;
                if *partition < 0 || end < 0 {
                    continue;
                }
                if let Some(id) = interner.existing(topic, *partition) {
                    let end = end as u64;
                    let position = u64::try_from(position).ok();
                    found.push((id, PartitionOffsets { end, position }));
                }
            }
        }
        drop(interner);
        lock(&self.shared.offsets).extend(found);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        crate::probe::log_librdkafka(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Consumer errors also reach the source through `poll`, which
        // reports them to the engine; log them here only for debugging.
        tracing::debug!(source = %self.shared.name, %error, reason, "librdkafka error");
    }
}

impl ConsumerContext for SpateContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        if self.shared.is_shut_down() {
            return;
        }
        let ids = self.shared.interner().ids_of(tpl);
        if ids.is_empty() {
            return;
        }
        lock(&self.shared.offsets).retain(|id, _| !ids.contains(id));
        lock(&self.shared.unreleased).extend(ids.iter().copied());
        tracing::debug!(source = %self.shared.name, partitions = ?ids, "revoking; waiting for the engine to release");
        if !self.shared.send(Item::Revoked(ids.clone())) {
            self.shared.release(&ids);
            return;
        }
        self.shared.wait_for_release(&ids);
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        if self.shared.is_shut_down() || tpl.count() == 0 {
            return;
        }
        // A partition paused in an earlier assignment stays paused in
        // librdkafka; the engine starts every assignment unpaused.
        if let Err(error) = consumer.resume(tpl) {
            tracing::debug!(source = %self.shared.name, %error, "resume of newly assigned partitions failed");
        }
        let ids = self.shared.interner().ids_of(tpl);
        self.shared.send(Item::Assigned(ids));
    }
}
