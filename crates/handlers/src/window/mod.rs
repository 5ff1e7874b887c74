//! The `window` built-in: aggregates events per key over tumbling or
//! sliding event-time windows, with no code, and keeps its state so that
//! `exactly_once` counts each event exactly once across restarts.
//!
//! ```yaml
//! handler:
//!   name: window
//!   key: /device              # JSON pointer into the payload; `$key` = the event's key (default)
//!   time: /ts                 # epoch ms (integer) or RFC 3339 string; `$timestamp` = the event's timestamp (default)
//!   size: 1m                  # window length
//!   slide: 15s                # optional: a window starts every 15s (sliding); default = size (tumbling)
//!   allowed_lateness: 30s     # default 0s
//!   emit: on_close            # on_close (default) | on_update
//!   aggregates:               # output field -> aggregate, in this order in the output
//!     readings: count
//!     temperature_sum: {sum: /temperature}
//!     temperature_min: {min: /temperature}
//!     temperature_max: {max: /temperature}
//!     temperature_avg: {avg: /temperature}
//!     temperature_last: {last: /temperature}
//! ```
//!
//! # Windows
//!
//! - Windows are aligned to the Unix epoch: an event at time `t` belongs
//!   to every window `[s, s + size)` with `s` a multiple of `slide` and
//!   `s <= t < s + size` — one window when tumbling, `size / slide` when
//!   sliding. `size` must be a whole number of `slide`s (at most
//!   1,000 windows per event); durations are whole milliseconds, at most
//!   100 years, and `size` and `slide` are above zero.
//! - Event times are milliseconds since the epoch, UTC, between the years
//!   0001 and 9999. From the payload, an integer is epoch milliseconds
//!   and a string is an RFC 3339 time (`2024-05-01T12:00:00.250+02:00`;
//!   digits past the millisecond are dropped, leap seconds are refused).
//!
//! # Event time is per key
//!
//! State is kept per (input, partition, key). A key's state holds the
//! highest event time of its accepted events (`max_time`) and its open
//! windows. A window `[s, e)` of a key is **closed** once that key's
//! `max_time - allowed_lateness >= e`. Each key has its own clock on
//! purpose: IoT devices buffer readings and upload them late, and one
//! device's clock must not close another device's windows. It follows
//! that a key that goes quiet keeps its last windows open: with
//! `emit: on_close`, they are written only when that key sends again (a
//! reading far enough past them). A reading with a wild future time (a
//! device whose clock jumped years ahead) closes that key's windows up to
//! that time, and the key's later, correct readings are then late: filter
//! such readings out before the window if devices can send them.
//!
//! # Each event
//!
//! - An event is added to each of its windows that is still open. If none
//!   is open, the event is **late**: it is refused with a permanent error
//!   (dead-lettered with `spate-dlq-reason: late`) naming its time, the
//!   window and when it closed, and nothing changes. With sliding windows
//!   an event whose older windows have closed is counted in the open ones
//!   only.
//! - An event is **invalid** (`spate-dlq-reason: invalid`, nothing
//!   changes) when the handler needs its payload as JSON (a `key` or `time`
//!   pointer, or an aggregate with a field) and it is not JSON; when the
//!   key is missing or `null` (or not a string or number; `$key` with an
//!   event that has no key); when the time is missing, not an integer or
//!   RFC 3339 string, or out of range; or when an aggregated field is
//!   missing, or is not a number for `sum`, `min`, `max` and `avg`. `last`
//!   takes any JSON value, `null` included. The message names the field and
//!   what was found.
//! - `emit: on_close`: when an event moves its key's `max_time` so that
//!   windows close, one output per closed window, oldest first; each window
//!   is written once and then dropped from the state.
//! - `emit: on_update`: every accepted event writes the current value of
//!   each window it was added to, oldest first, so an upsert into a table
//!   keyed by (key, window_start) always holds the current value. Closed
//!   windows are dropped without an output.
//!
//! # Outputs
//!
//! One JSON object per window:
//! `{"key": "d-1", "window_start": 1700000040000, "window_end":
//! 1700000100000, <aggregates in declared order>}`. The record's key is the
//! event key's bytes (with a pointer, the key's text: a number key `17` is
//! `"17"`), its timestamp is `window_end`, and it has no headers.
//!
//! - `count`: events in the window.
//! - `sum`, `min`, `max`: integers while every value added was an integer
//!   (and a sum fits an `i64`), else floats.
//! - `avg`: `sum / count`, always a float.
//! - `last`: the value in the window's event with the greatest event time;
//!   on a tie, the later event's.
//!
//! A float that overflows (a sum past `1.8e308`) is written as `null`.
//!
//! # State and exactly-once
//!
//! The handler exposes its state ([`Handler::state`], see
//! [`HandlerState`]). After every accepted event it records its key's whole
//! new state with [`Context::put_state`] (the format is in [`codec`]); an
//! event that fails records nothing. A key's state stays after its windows
//! have closed (its `max_time` decides what is late), so memory grows with
//! the number of distinct keys and their open windows, at most
//! `(size + allowed_lateness) / slide + 1` each.
//!
//! The keys are bounded: a partition keeps state for at most `max_keys`
//! keys (default [`config::DEFAULT_MAX_KEYS`], at most
//! [`config::MAX_MAX_KEYS`]), so a stream of ever new keys costs outputs,
//! never unbounded memory. When a new key arrives at the bound, the eighth
//! of the keys silent longest (lowest event time) are evicted: under
//! `on_close` their open windows are written then, as if their next
//! reading had come, and their stored state is removed. An evicted key
//! that speaks again starts with no windows, so a reading of it older than
//! what was written opens a window again instead of being refused as late. `restore` replaces a
//! partition's keys with the committed ones, and an entry written under
//! another `size`, `slide` or list of aggregates (or corrupt) is skipped
//! with an error in the log: that key starts again with no windows. Changing
//! `allowed_lateness`, `emit` or the output field names keeps the state.
//!
//! The outputs depend only on the state and the key's events in order, so
//! the function runs with `ordering: key` (or `partition`); the engine
//! refuses `ordering: none` for a handler that keeps state.

pub mod codec;
pub mod config;
pub mod reading;
pub mod state;
pub mod time;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use spate_connector::{ConfigReader, Event, PartitionId};

use super::{Context, Handler, HandlerError, HandlerFactory, HandlerState, Output};
use config::{Emit, Settings};
use reading::Reading;
use state::{KeyState, Late, Window};
use time::{Millis, Rfc3339};

/// Keys' states of one partition of one input.
#[derive(Default)]
struct PartitionState {
    keys: HashMap<Bytes, KeyState>,
}

impl PartitionState {
    /// Makes room for a new key when the partition holds `max_keys`: takes
    /// out the eighth of the keys that have been silent longest (lowest
    /// event time) and returns them with their states. One search serves
    /// the next `max_keys / 8` new keys, so the cost per event stays small.
    fn make_room(&mut self, max_keys: usize) -> Vec<(Bytes, KeyState)> {
        if self.keys.len() < max_keys {
            return Vec::new();
        }
        let count = (max_keys / 8).max(1).min(self.keys.len());
        let mut by_time: Vec<(i64, Bytes)> = self
            .keys
            .iter()
            .map(|(key, state)| (state.max_time, key.clone()))
            .collect();
        by_time.select_nth_unstable(count - 1);
        by_time.truncate(count);
        by_time
            .into_iter()
            .filter_map(|(_, key)| self.keys.remove_entry(&key))
            .collect()
    }
}

/// The configured `window` handler.
pub struct WindowHandler {
    settings: Settings,
    partitions: Mutex<HashMap<(usize, PartitionId), PartitionState>>,
}

impl WindowHandler {
    /// A handler with these settings and no state.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            partitions: Mutex::new(HashMap::new()),
        }
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn partitions(&self) -> MutexGuard<'_, HashMap<(usize, PartitionId), PartitionState>> {
        self.partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The output for one window of a key.
    fn output(&self, key: &Bytes, key_text: &str, start: i64, window: &Window) -> Output {
        let end = start + self.settings.size_ms;
        let mut json = String::with_capacity(96);
        json.push_str("{\"key\":");
        json.push_str(&Value::String(key_text.to_owned()).to_string());
        let _ = write!(json, ",\"window_start\":{start},\"window_end\":{end}");
        window.write_fields(&self.settings, &mut json);
        json.push('}');
        let mut output = Output::new(json).with_key(key.clone());
        output.record.timestamp_ms = Some(end);
        output
    }

    fn late(&self, reading: &Reading, late: &Late) -> HandlerError {
        let lateness = self.settings.lateness_ms;
        let start = late.window_start;
        let end = start + self.settings.size_ms;
        HandlerError::permanent(format!(
            "window: late event for key `{}`: event time {} ({}), window [{start}, {end}) closed at {} ({}), allowed lateness {}; the key's event time is {} ({})",
            reading.key_text,
            late.time,
            Rfc3339(late.time),
            end + lateness,
            Rfc3339(end + lateness),
            Millis(lateness),
            late.max_time,
            Rfc3339(late.max_time),
        ))
        .with_reason("late")
    }
}

#[async_trait]
impl Handler for WindowHandler {
    /// Folds events into in-memory windows: computation only.
    fn is_cpu_only(&self) -> bool {
        true
    }

    async fn handle(&self, event: Event, ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        let reading = reading::read(&self.settings, &event).map_err(|invalid| {
            HandlerError::permanent(format!("window: {invalid}")).with_reason("invalid")
        })?;
        let slot = (ctx.input, event.position.partition);
        let mut evicted = Vec::new();
        let (mut outputs, closed, stored) = {
            let mut partitions = self.partitions();
            let partition = partitions.entry(slot).or_default();
            if !partition.keys.contains_key(&reading.key) {
                evicted = partition.make_room(self.settings.max_keys);
            }
            let keys = &mut partition.keys;
            // A key's first event cannot be late, so inserting its state
            // first changes nothing when the event is refused.
            let state = keys
                .entry(reading.key.clone())
                .or_insert_with(|| KeyState::new(reading.time));
            let added = state
                .add(&self.settings, reading.time, &reading.inputs)
                .map_err(|late| self.late(&reading, &late))?;
            let updates: Vec<Output> = match self.settings.emit {
                Emit::OnClose => Vec::new(),
                Emit::OnUpdate => added
                    .updated
                    .iter()
                    .filter_map(|start| {
                        let window = state.windows.get(start)?;
                        Some(self.output(&reading.key, &reading.key_text, *start, window))
                    })
                    .collect(),
            };
            (updates, added.closed, codec::encode(&self.settings, state))
        };
        ctx.put_state(reading.key.clone(), stored);
        if self.settings.emit == Emit::OnClose {
            outputs.extend(closed.iter().map(|(start, window)| {
                self.output(&reading.key, &reading.key_text, *start, window)
            }));
        }
        for (key, state) in evicted {
            if self.settings.emit == Emit::OnClose {
                let key_text = String::from_utf8_lossy(&key).into_owned();
                outputs.extend(
                    state
                        .windows
                        .iter()
                        .map(|(start, window)| self.output(&key, &key_text, *start, window)),
                );
            }
            ctx.remove_state(key);
        }
        Ok(outputs)
    }

    fn state(&self) -> Option<&dyn HandlerState> {
        Some(self)
    }
}

impl HandlerState for WindowHandler {
    fn restore(&self, input: usize, partition: PartitionId, entries: Vec<(Bytes, Bytes)>) {
        let mut keys = PartitionState::default();
        keys.keys.reserve(entries.len());
        for (key, value) in entries {
            match codec::decode(&self.settings, &value) {
                Ok(state) => {
                    keys.keys.insert(key, state);
                }
                Err(error) => tracing::error!(
                    input,
                    partition,
                    key = %String::from_utf8_lossy(&key),
                    %error,
                    "window: a key's stored state cannot be restored; the key starts again with no windows"
                ),
            }
        }
        self.partitions().insert((input, partition), keys);
    }

    fn forget(&self, input: usize, partition: PartitionId) {
        self.partitions().remove(&(input, partition));
    }
}

/// The `window` built-in, for the registry.
pub struct WindowBuiltin;

impl HandlerFactory for WindowBuiltin {
    fn name(&self) -> &'static str {
        "window"
    }

    fn configure(&self, config: &mut ConfigReader<'_>) -> Option<Arc<dyn Handler>> {
        let settings = config::read(config)?;
        Some(Arc::new(WindowHandler::new(settings)))
    }

    fn summary(&self) -> &'static str {
        "aggregates JSON events per key over tumbling or sliding event-time windows (count, sum, min, max, avg, last)"
    }
}
