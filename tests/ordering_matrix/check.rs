//! What a row's calls show, per key (and per partition): events lost,
//! copies, events handled after a newer one of their key (or partition)
//! that were not copies, and calls of one key that ran at once; and from
//! the kill times, how long each killed process's partitions waited for
//! their next handled event and how many events each kill handed out again.

use std::collections::{BTreeMap, BTreeSet};

use super::recorder::Call;

/// What a row's contract promises, i.e. what its check asserts.
#[derive(Debug, Clone, Copy)]
pub struct Promise {
    /// Every published event is handled.
    pub lossless: bool,
    /// An event may be handled more than once.
    pub copies: bool,
    /// The order checked: each key's, each partition's, or none.
    pub order: Order,
    /// Two calls of one key never run at once (across processes too).
    pub exclusive: bool,
}

/// The ordering unit a row checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Each key's events in publish order.
    Key,
    /// Each partition's events in publish order (and so each key's).
    Partition,
    /// No order is promised (the figures are still reported).
    None,
}

/// The figures of one run.
#[derive(Debug, Default)]
pub struct Report {
    /// Events published.
    pub published: usize,
    /// Distinct events handled.
    pub handled: usize,
    /// Published events never handled.
    pub lost: Vec<u64>,
    /// Handlings beyond an event's first.
    pub copies: usize,
    /// (unit, newer n seen before, n) for each first handling of an event
    /// after a newer event of its key (or partition).
    pub out_of_order: Vec<(String, u64, u64)>,
    /// (key, n, n) of calls of one key that overlapped in time.
    pub overlaps: Vec<(String, u64, u64)>,
    /// Calls answered 503 (each retried).
    pub failed_calls: usize,
}

impl Report {
    /// One line for the log and the results table.
    pub fn line(&self) -> String {
        format!(
            "published {}, handled {}, lost {}, copies {}, out of order {}, overlapping {}, 503s {}",
            self.published,
            self.handled,
            self.lost.len(),
            self.copies,
            self.out_of_order.len(),
            self.overlaps.len(),
            self.failed_calls
        )
    }

    /// Panics with the first examples of whatever `promise` rules out.
    pub fn assert_keeps(&self, row: &str, seed: u64, promise: Promise) {
        let replay = format!("row {row}, SPATE_MATRIX_SEED={seed}: {}", self.line());
        if promise.lossless {
            assert!(
                self.lost.is_empty(),
                "{replay}\nlost events (n): {:?}",
                &self.lost[..self.lost.len().min(20)]
            );
        }
        if !promise.copies {
            assert_eq!(self.copies, 0, "{replay}\nno event may be handled twice");
        }
        if promise.order != Order::None {
            assert!(
                self.out_of_order.is_empty(),
                "{replay}\nhandled after a newer one ({:?} unit, newer, older): {:?}",
                promise.order,
                &self.out_of_order[..self.out_of_order.len().min(20)]
            );
        }
        if promise.exclusive {
            assert!(
                self.overlaps.is_empty(),
                "{replay}\ntwo calls of one key at once (key, n, n): {:?}",
                &self.overlaps[..self.overlaps.len().min(20)]
            );
        }
    }
}

/// Analyses `calls` against `published` events (numbered `0..published`).
/// The ordering unit is the call's `spate-partition` for
/// [`Order::Partition`], else its key.
pub fn analyse(calls: &[Call], published: u64, order: Order) -> Report {
    let mut report = Report {
        published: published as usize,
        failed_calls: calls.iter().filter(|c| !c.ok).count(),
        ..Report::default()
    };
    let mut handled: Vec<&Call> = calls.iter().filter(|c| c.ok).collect();
    handled.sort_by_key(|c| (c.start, c.n));
    let mut seen = BTreeSet::new();
    let mut newest: BTreeMap<String, u64> = BTreeMap::new();
    for call in &handled {
        if !seen.insert(call.n) {
            report.copies += 1;
            continue;
        }
        let name = match order {
            Order::Partition => format!("partition {}", call.partition),
            Order::Key | Order::None => call.key.clone(),
        };
        let last = newest.entry(name.clone()).or_insert(call.n);
        if *last > call.n {
            report.out_of_order.push((name, *last, call.n));
        } else {
            *last = call.n;
        }
    }
    report.handled = seen.len();
    report.lost = (0..published).filter(|n| !seen.contains(n)).collect();
    report.overlaps = overlaps(calls);
    report
}

/// Calls (2xx or not) of one key whose time spans intersect.
fn overlaps(calls: &[Call]) -> Vec<(String, u64, u64)> {
    let mut by_key: BTreeMap<&str, Vec<&Call>> = BTreeMap::new();
    for call in calls {
        by_key.entry(&call.key).or_default().push(call);
    }
    let mut found = Vec::new();
    for (key, mut calls) in by_key {
        calls.sort_by_key(|c| c.start);
        let mut busy_until: Option<(u64, u64)> = None;
        for call in calls {
            if let Some((end, n)) = busy_until {
                if call.start < end {
                    found.push((key.to_owned(), n, call.n));
                }
            }
            if busy_until.is_none_or(|(end, _)| call.end > end) {
                busy_until = Some((call.end, call.n));
            }
        }
    }
    found
}

/// A kill -9 of the chaos schedule: who, and when (µs, recorder clock).
#[derive(Debug, Clone)]
pub struct Kill {
    /// The killed process.
    pub process: String,
    /// When.
    pub at: u64,
}

/// For each kill: per partition the killed process held (it handled the
/// partition's last event before the kill), the time (ms) until another process (or its replacement)
/// handled an event of that partition; and the events the kill handed out
/// again (handled by the killed process, then handled again after the
/// kill).
pub fn takeover(calls: &[Call], kills: &[Kill]) -> Takeover {
    let (mut waits, mut first_copy, mut redelivered) = (Vec::new(), Vec::new(), Vec::new());
    let handled: Vec<&Call> = calls.iter().filter(|c| c.ok).collect();
    for kill in kills {
        // A partition was the victim's when its last handled call before
        // the kill was the victim's.
        let mut last: BTreeMap<&str, (u64, &str)> = BTreeMap::new();
        for c in handled.iter().filter(|c| c.end <= kill.at) {
            let entry = last.entry(c.partition.as_str()).or_insert((0, ""));
            if c.end >= entry.0 {
                *entry = (c.end, c.process.as_str());
            }
        }
        let held: BTreeSet<&str> = last
            .iter()
            .filter(|(_, (_, process))| *process == kill.process)
            .map(|(partition, _)| *partition)
            .collect();
        for partition in held {
            let next = handled
                .iter()
                .filter(|c| c.partition == partition && c.start > kill.at)
                .map(|c| c.start)
                .min();
            if let Some(next) = next {
                waits.push((next - kill.at) as f64 / 1000.0);
            }
        }
        let by_victim: BTreeSet<u64> = handled
            .iter()
            .filter(|c| c.process == kill.process && c.end <= kill.at)
            .map(|c| c.n)
            .collect();
        let again: Vec<&&Call> = handled
            .iter()
            .filter(|c| c.start > kill.at && by_victim.contains(&c.n))
            .collect();
        let distinct: BTreeSet<u64> = again.iter().map(|c| c.n).collect();
        if let Some(first) = again.iter().map(|c| c.start).min() {
            first_copy.push((first - kill.at) as f64 / 1000.0);
        }
        redelivered.push(distinct.len());
    }
    Takeover {
        waits,
        first_copy,
        redelivered,
    }
}

/// What the kills of a run cost.
#[derive(Debug, Default)]
pub struct Takeover {
    /// Per kill and partition the victim held, ms until the partition's
    /// next handled event.
    pub waits: Vec<f64>,
    /// Per kill that re-delivered anything, ms until the first event the
    /// victim had handled was handled again.
    pub first_copy: Vec<f64>,
    /// Per kill, events the victim had handled that were handled again.
    pub redelivered: Vec<usize>,
}
