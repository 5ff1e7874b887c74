//! The process-wide in-flight budget shared by every function.
//!
//! Each function adds what it reads and subtracts what finishes; when the
//! total reaches the bound every function pauses its partitions, and they
//! resume once the total drained to half.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::policy::InFlightLimits;

/// Events and bytes held by the whole process.
#[derive(Debug)]
pub struct ProcessBudget {
    events: AtomicUsize,
    bytes: AtomicU64,
    limits: InFlightLimits,
}

impl ProcessBudget {
    /// An empty budget with these bounds.
    pub fn new(limits: InFlightLimits) -> Self {
        Self {
            events: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            limits,
        }
    }

    /// Counts one event of `bytes` in.
    pub fn add(&self, bytes: u64) {
        self.events.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `events` events of `bytes` in total out.
    pub fn sub(&self, events: usize, bytes: u64) {
        self.events.fetch_sub(events, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// At or past either bound: pause.
    pub fn is_full(&self) -> bool {
        self.events.load(Ordering::Relaxed) >= self.limits.events
            || self.bytes.load(Ordering::Relaxed) >= self.limits.bytes
    }

    /// Drained to half of both bounds: resume.
    pub fn has_room(&self) -> bool {
        self.events.load(Ordering::Relaxed) <= self.limits.events / 2
            && self.bytes.load(Ordering::Relaxed) <= self.limits.bytes / 2
    }

    /// Events that may still be taken in before the bound.
    pub fn event_room(&self) -> usize {
        self.limits
            .events
            .saturating_sub(self.events.load(Ordering::Relaxed))
    }

    /// Events held now.
    pub fn events(&self) -> usize {
        self.events.load(Ordering::Relaxed)
    }
}
