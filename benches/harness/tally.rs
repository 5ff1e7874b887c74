//! Record ids and produce times carried in payloads, and the tally a checker
//! keeps of what came out.
//!
//! Every input record the harness writes starts with 32 ASCII bytes: its id
//! (16 hex digits, 0-based, unique within a run) and the wall-clock time it
//! was handed to the producer (microseconds since the Unix epoch, 16 hex
//! digits), then `x` up to the payload size. Every contender forwards
//! payloads unchanged, so the checker reading the output learns, for each
//! output, which input it came from and how long it took end to end.
//!
//! Guarantees: a [`Tally`] counts every output once: as new (first time its
//! id is seen), duplicate (id seen before) or stray (no id of this run:
//! probes, or corrupt payloads); the instant the number of distinct ids
//! reached each mark is recorded by the checker itself, not by a poller.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Bytes of the id and time stamp at the start of every payload.
pub const STAMP_LEN: usize = 32;

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A payload of `size` bytes (at least [`STAMP_LEN`]) stamped with `id` and
/// the current time.
pub fn payload(id: u64, size: usize) -> Vec<u8> {
    let mut out = format!("{id:016x}{:016x}", now_us()).into_bytes();
    out.resize(size.max(STAMP_LEN), b'x');
    out
}

/// The (id, produce time in µs) a payload carries, if it is stamped.
pub fn parse(payload: &[u8]) -> Option<(u64, u64)> {
    let head = std::str::from_utf8(payload.get(..STAMP_LEN)?).ok()?;
    let id = u64::from_str_radix(&head[..16], 16).ok()?;
    let at = u64::from_str_radix(&head[16..], 16).ok()?;
    Some((id, at))
}

/// What a checker saw on a run's output.
#[derive(Debug)]
pub struct Tally {
    seen: Vec<u8>,
    /// Distinct ids seen.
    pub unique: usize,
    /// Outputs whose id was seen before.
    pub duplicates: usize,
    /// Outputs with no id of this run.
    pub strays: usize,
    /// When the first output with an id arrived.
    pub first: Option<Instant>,
    /// When the last new id arrived.
    pub last_new: Option<Instant>,
    /// Ids from this one on are latency probes: their latencies are kept.
    pub latency_from: u64,
    /// End-to-end latencies (µs) of the latency-phase records, in arrival
    /// order.
    pub latencies_us: Vec<u64>,
    marks: Vec<(usize, Option<Instant>)>,
}

impl Tally {
    /// A tally expecting ids `0..total`, keeping latencies of ids from
    /// `latency_from` on, recording when the distinct count reaches each of
    /// `marks`.
    pub fn new(total: usize, latency_from: u64, marks: &[usize]) -> Self {
        Self {
            seen: vec![0; total],
            unique: 0,
            duplicates: 0,
            strays: 0,
            first: None,
            last_new: None,
            latency_from,
            latencies_us: Vec::new(),
            marks: marks.iter().map(|m| (*m, None)).collect(),
        }
    }

    /// A shared tally.
    pub fn shared(total: usize, latency_from: u64, marks: &[usize]) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self::new(total, latency_from, marks)))
    }

    /// Counts one output payload that arrived at `at` (`at_us` on the wall
    /// clock).
    pub fn record(&mut self, payload: &[u8], at: Instant, at_us: u64) {
        let Some((id, stamp)) = parse(payload).filter(|(id, _)| (*id as usize) < self.seen.len())
        else {
            self.strays += 1;
            return;
        };
        self.first.get_or_insert(at);
        let slot = &mut self.seen[id as usize];
        if *slot > 0 {
            self.duplicates += 1;
            *slot = slot.saturating_add(1);
            return;
        }
        *slot = 1;
        self.unique += 1;
        self.last_new = Some(at);
        if id >= self.latency_from {
            self.latencies_us.push(at_us.saturating_sub(stamp));
        }
        for (mark, reached) in &mut self.marks {
            if reached.is_none() && self.unique >= *mark {
                *reached = Some(at);
            }
        }
    }

    /// When the distinct count reached `mark` (one of the marks given).
    pub fn reached(&self, mark: usize) -> Option<Instant> {
        self.marks
            .iter()
            .find(|(m, _)| *m == mark)
            .and_then(|(_, r)| *r)
    }
}

/// The median (upper median for an even count); 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The `q`-quantile (0..=1, nearest rank) of latencies in µs, as ms.
pub fn quantile_ms(latencies_us: &[u64], q: f64) -> f64 {
    if latencies_us.is_empty() {
        return f64::NAN;
    }
    let mut v = latencies_us.to_vec();
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1] as f64 / 1000.0
}
