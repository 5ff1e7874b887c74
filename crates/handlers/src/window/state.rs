//! One key's window state: its highest event time and its open windows
//! with their accumulators, and the one operation that changes it, adding
//! a reading.
//!
//! Adding is all-or-nothing: a late reading is refused before anything
//! changes, and once it is accepted nothing can fail. The result depends
//! only on the state and the reading, so replaying a key's events in order
//! over its restored state gives the same windows and outputs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::config::{AggregateKind, Settings};
use super::time::window_starts;

/// A number as aggregated: integers stay exact while they fit an `i64`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// A whole number.
    Int(i64),
    /// Any other number, or an integer sum that overflowed.
    Float(f64),
}

impl Num {
    /// The JSON number's value (integers beyond `i64` become floats).
    pub fn from_json(number: &serde_json::Number) -> Self {
        match number.as_i64() {
            Some(i) => Self::Int(i),
            None => Self::Float(number.as_f64().unwrap_or(f64::NAN)),
        }
    }

    /// As a float.
    pub fn as_f64(self) -> f64 {
        match self {
            Self::Int(i) => i as f64,
            Self::Float(f) => f,
        }
    }

    fn plus(self, other: Self) -> Self {
        match (self, other) {
            (Self::Int(a), Self::Int(b)) => match a.checked_add(b) {
                Some(sum) => Self::Int(sum),
                None => Self::Float(a as f64 + b as f64),
            },
            (a, b) => Self::Float(a.as_f64() + b.as_f64()),
        }
    }

    /// The smaller (`min`) or larger of the two; a float in either makes
    /// the result a float.
    fn pick(self, other: Self, min: bool) -> Self {
        match (self, other) {
            (Self::Int(a), Self::Int(b)) => Self::Int(if min { a.min(b) } else { a.max(b) }),
            (a, b) => {
                let (a, b) = (a.as_f64(), b.as_f64());
                Self::Float(if min { a.min(b) } else { a.max(b) })
            }
        }
    }

    /// Writes the number as JSON (`null` for a float that overflowed).
    pub fn write_json(self, out: &mut String) {
        match self {
            Self::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Self::Float(f) => match serde_json::Number::from_f64(f) {
                Some(n) => {
                    let _ = write!(out, "{n}");
                }
                None => out.push_str("null"),
            },
        }
    }
}

/// One aggregate's running value in one window.
#[derive(Debug, Clone, PartialEq)]
pub enum Acc {
    /// `count`: the window's event count is the value.
    Count,
    /// `sum`.
    Sum(Num),
    /// `min`; `None` before the first value.
    Min(Option<Num>),
    /// `max`; `None` before the first value.
    Max(Option<Num>),
    /// `avg`: the sum; the window's event count divides it.
    Avg(Num),
    /// `last`: the event time and value of the latest event so far.
    Last(Option<(i64, Value)>),
}

impl Acc {
    /// The empty accumulator of an aggregate.
    pub fn empty(kind: AggregateKind) -> Self {
        match kind {
            AggregateKind::Count => Self::Count,
            AggregateKind::Sum => Self::Sum(Num::Int(0)),
            AggregateKind::Min => Self::Min(None),
            AggregateKind::Max => Self::Max(None),
            AggregateKind::Avg => Self::Avg(Num::Int(0)),
            AggregateKind::Last => Self::Last(None),
        }
    }

    /// The aggregate this accumulator belongs to.
    pub fn kind(&self) -> AggregateKind {
        match self {
            Self::Count => AggregateKind::Count,
            Self::Sum(_) => AggregateKind::Sum,
            Self::Min(_) => AggregateKind::Min,
            Self::Max(_) => AggregateKind::Max,
            Self::Avg(_) => AggregateKind::Avg,
            Self::Last(_) => AggregateKind::Last,
        }
    }

    fn add(&mut self, time: i64, value: &Input) {
        match (self, value) {
            (Self::Sum(sum) | Self::Avg(sum), Input::Number(n)) => *sum = sum.plus(*n),
            (Self::Min(current), Input::Number(n)) => {
                *current = Some(current.map_or(*n, |c| c.pick(*n, true)));
            }
            (Self::Max(current), Input::Number(n)) => {
                *current = Some(current.map_or(*n, |c| c.pick(*n, false)));
            }
            // The greatest event time wins; on a tie, the later event.
            (Self::Last(current), Input::Any(v))
                if current.as_ref().is_none_or(|(t, _)| time >= *t) =>
            {
                *current = Some((time, v.clone()));
            }
            _ => {}
        }
    }
}

/// What one event gives each aggregate (in the settings' order).
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// `count` reads nothing.
    Nothing,
    /// `sum`, `min`, `max`, `avg` read a number.
    Number(Num),
    /// `last` reads any JSON value.
    Any(Value),
}

/// One open window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Events added.
    pub count: u64,
    /// One accumulator per aggregate, in the settings' order.
    pub accs: Vec<Acc>,
}

impl Window {
    fn empty(settings: &Settings) -> Self {
        Self {
            count: 0,
            accs: settings
                .aggregates
                .iter()
                .map(|a| Acc::empty(a.kind))
                .collect(),
        }
    }

    /// Writes the aggregates as `,"name":value` pairs, in order.
    pub fn write_fields(&self, settings: &Settings, out: &mut String) {
        for (aggregate, acc) in settings.aggregates.iter().zip(&self.accs) {
            out.push(',');
            out.push_str(&Value::String(aggregate.name.clone()).to_string());
            out.push(':');
            match acc {
                Acc::Count => {
                    let _ = write!(out, "{}", self.count);
                }
                Acc::Sum(n) | Acc::Min(Some(n)) | Acc::Max(Some(n)) => n.write_json(out),
                Acc::Avg(sum) => Num::Float(sum.as_f64() / self.count as f64).write_json(out),
                Acc::Last(Some((_, v))) => out.push_str(&v.to_string()),
                Acc::Min(None) | Acc::Max(None) | Acc::Last(None) => out.push_str("null"),
            }
        }
    }
}

/// One key's state.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyState {
    /// The highest event time of the key's accepted events.
    pub max_time: i64,
    /// Open windows by start.
    pub windows: BTreeMap<i64, Window>,
}

/// Why an event was refused: each of its windows had closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Late {
    /// The event's time.
    pub time: i64,
    /// Start of the latest window the event belongs to.
    pub window_start: i64,
    /// The key's highest event time.
    pub max_time: i64,
}

/// What adding an event did.
#[derive(Debug, Clone, PartialEq)]
pub struct Added {
    /// Starts of the windows the event was added to, oldest first.
    pub updated: Vec<i64>,
    /// Windows the event closed, oldest first, removed from the state.
    pub closed: Vec<(i64, Window)>,
}

impl KeyState {
    /// The state of a key whose first event is at `time`.
    pub fn new(time: i64) -> Self {
        Self {
            max_time: time,
            windows: BTreeMap::new(),
        }
    }

    /// Whether window `[start, start + size)` is closed: the key's event
    /// time, less the allowed lateness, has reached its end.
    pub fn is_closed(&self, settings: &Settings, start: i64) -> bool {
        self.max_time - settings.lateness_ms >= start + settings.size_ms
    }

    /// Adds an event at `time` with `inputs` to each of its open windows,
    /// then closes the windows its time closes. Changes nothing and says
    /// why if every window of the event is closed.
    pub fn add(&mut self, settings: &Settings, time: i64, inputs: &[Input]) -> Result<Added, Late> {
        let updated: Vec<i64> = window_starts(time, settings.size_ms, settings.slide_ms)
            .filter(|start| !self.is_closed(settings, *start))
            .collect();
        if updated.is_empty() {
            return Err(Late {
                time,
                window_start: time.div_euclid(settings.slide_ms) * settings.slide_ms,
                max_time: self.max_time,
            });
        }
        for start in &updated {
            let window = self
                .windows
                .entry(*start)
                .or_insert_with(|| Window::empty(settings));
            window.count += 1;
            for (acc, input) in window.accs.iter_mut().zip(inputs) {
                acc.add(time, input);
            }
        }
        self.max_time = self.max_time.max(time);
        let watermark = self.max_time - settings.lateness_ms;
        let mut closed = Vec::new();
        while let Some(entry) = self.windows.first_entry() {
            if watermark < *entry.key() + settings.size_ms {
                break;
            }
            closed.push(entry.remove_entry());
        }
        Ok(Added { updated, closed })
    }
}
