//! Lanes: the ordering units of a function and the runnable queue.
//!
//! Invariant: at most one item of a lane is outside its lane queue (ready,
//! running, or parked for a retry) — or one run of its consecutive items,
//! handed to a task together (see [`Lanes::take_following`]). A lane's entry exists exactly while it
//! has such an item; its queue holds the items waiting behind it, in offset
//! order. Items without a lane (`ordering: none`) go straight to `ready`.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use super::work::{LaneKey, PartKey, WorkItem};

/// Lane queues and the runnable queue.
#[derive(Default)]
pub struct Lanes {
    waiting: HashMap<LaneKey, VecDeque<WorkItem>>,
    /// Items whose lane is free, in arrival order, waiting for a task.
    pub ready: VecDeque<WorkItem>,
}

impl Lanes {
    /// Queues a newly read item behind its lane, or makes it runnable.
    pub fn admit(&mut self, item: WorkItem) {
        let Some(lane) = &item.lane else {
            self.ready.push_back(item);
            return;
        };
        match self.waiting.entry(lane.clone()) {
            Entry::Occupied(mut queue) => queue.get_mut().push_back(item),
            Entry::Vacant(slot) => {
                slot.insert(VecDeque::new());
                self.ready.push_back(item);
            }
        }
    }

    /// The lane's running item finished: its next item becomes runnable.
    pub fn release(&mut self, lane: &LaneKey) {
        if let Some(queue) = self.waiting.get_mut(lane) {
            match queue.pop_front() {
                Some(next) => self.ready.push_back(next),
                None => {
                    self.waiting.remove(lane);
                }
            }
        }
    }

    /// Moves up to `max` items waiting in `lane` behind its runnable item
    /// into `run`, in order. The lane stays held (by the run) until
    /// [`Lanes::release`].
    pub fn take_following(&mut self, lane: &LaneKey, max: usize, run: &mut Vec<WorkItem>) {
        if let Some(queue) = self.waiting.get_mut(lane) {
            let take = queue.len().min(max);
            run.extend(queue.drain(..take));
        }
    }

    /// Puts items of a run that were not started back at the head of their
    /// lane, in order, ahead of the items that came since.
    pub fn put_back(&mut self, lane: &LaneKey, items: Vec<WorkItem>) {
        let queue = self.waiting.entry(lane.clone()).or_default();
        for item in items.into_iter().rev() {
            queue.push_front(item);
        }
    }

    /// Removes every item of `parts` that has not started (ready or waiting
    /// in a lane) and forgets their lanes; returns the removed items.
    pub fn remove_partitions(&mut self, parts: &dyn Fn(&PartKey) -> bool) -> Vec<WorkItem> {
        let mut removed = Vec::new();
        let mut kept = VecDeque::with_capacity(self.ready.len());
        for item in self.ready.drain(..) {
            if parts(&item.part) {
                removed.push(item);
            } else {
                kept.push_back(item);
            }
        }
        self.ready = kept;
        self.waiting.retain(|lane, queue| {
            let part = match lane {
                LaneKey::Partition(p) | LaneKey::Key(p, _) => p,
            };
            if parts(part) {
                removed.extend(queue.drain(..));
                false
            } else {
                true
            }
        });
        removed
    }
}
