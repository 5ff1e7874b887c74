//! What the scheduler keeps per partition: its watermark, what is in
//! flight, its pause and drain state, and (under `exactly_once`) the records
//! of finished events waiting for the watermark to pass them.

use std::collections::BTreeMap;
use std::time::Instant;

use spate_connector::Record;

use crate::metrics::PartitionGauges;
use crate::policy::InFlightLimits;
use crate::watermark::Watermark;
use crate::work::Destination;

/// Why a partition is being drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DrainReason {
    Revoked,
    Shutdown,
}

pub(super) struct PartitionState {
    pub(super) epoch: u64,
    pub(super) watermark: Watermark,
    /// Items admitted and not finished or abandoned.
    pub(super) unfinished: usize,
    /// Items handed to handler tasks and not reported back.
    pub(super) running: usize,
    /// Bytes of unfinished items, and of finished ones whose staged records
    /// have not committed yet (`exactly_once`).
    pub(super) bytes: u64,
    pub(super) paused: bool,
    pub(super) committed: Option<u64>,
    pub(super) draining: Option<(Instant, DrainReason)>,
    /// `exactly_once`: records of finished events by offset, waiting for
    /// the watermark to pass them, with the bytes each event held.
    pub(super) staged: BTreeMap<u64, (Vec<(Destination, Record)>, u64)>,
    /// Its lag gauges, registered when first taken.
    pub(super) gauges: Option<PartitionGauges>,
}

impl PartitionState {
    pub(super) fn new(epoch: u64) -> Self {
        Self {
            epoch,
            watermark: Watermark::new(),
            unfinished: 0,
            running: 0,
            bytes: 0,
            paused: false,
            committed: None,
            draining: None,
            staged: BTreeMap::new(),
            gauges: None,
        }
    }

    /// `exactly_once`: keeps a finished event's records until the
    /// watermark passes it, with the bytes the event held.
    pub(super) fn stage(&mut self, offset: u64, records: Vec<(Destination, Record)>, bytes: u64) {
        self.staged.insert(offset, (records, bytes));
    }

    pub(super) fn is_full(&self, limits: &InFlightLimits) -> bool {
        self.watermark.span() >= limits.events || self.bytes >= limits.bytes
    }

    pub(super) fn has_room(&self, limits: &InFlightLimits) -> bool {
        self.watermark.span() <= limits.events / 2 && self.bytes <= limits.bytes / 2
    }
}
