//! What the `window` handler takes from one event: its key, its event time
//! and one input per aggregate. Anything missing or of the wrong type is
//! an [`Invalid`] error that names the pointer and what was found; no
//! input can make this panic.

use bytes::Bytes;
use serde_json::Value;
use spate_connector::Event;

use super::config::{AggregateKind, KeySource, Settings, TimeSource};
use super::state::{Input, Num};
use super::time::{parse_rfc3339, MAX_TIME_MS, MIN_TIME_MS};

/// An event the handler cannot use (dead-lettered with reason `invalid`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// The parts of an event the handler aggregates.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The key's bytes (the state key and the outputs' record key).
    pub key: Bytes,
    /// The key as text, for the outputs' `key` field.
    pub key_text: String,
    /// Event time, epoch ms.
    pub time: i64,
    /// One input per aggregate, in the settings' order.
    pub inputs: Vec<Input>,
}

/// A short description of a JSON value for messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut shown: String = s.chars().take(40).collect();
            if shown.len() < s.len() {
                shown.push('…');
            }
            format!("the string {}", Value::String(shown))
        }
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

fn key_of(
    settings: &Settings,
    event: &Event,
    doc: Option<&Value>,
) -> Result<(Bytes, String), Invalid> {
    let pointer = match &settings.key {
        KeySource::EventKey => {
            let key = event.key.clone().ok_or_else(|| {
                Invalid(
                    "the event has no key (`key: $key`); name the key's field with `key: /field`"
                        .to_owned(),
                )
            })?;
            let text = String::from_utf8_lossy(&key).into_owned();
            return Ok((key, text));
        }
        KeySource::Pointer(pointer) => pointer,
    };
    let text = match doc.and_then(|d| d.pointer(pointer)) {
        None | Some(Value::Null) => {
            return Err(Invalid(format!(
                "key `{pointer}` is missing from the payload"
            )))
        }
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(Invalid(format!(
                "key `{pointer}` must be a string or a number, found {}",
                describe(other)
            )))
        }
    };
    Ok((Bytes::from(text.clone()), text))
}

fn time_of(settings: &Settings, event: &Event, doc: Option<&Value>) -> Result<i64, Invalid> {
    let in_range = |ms: i64, shown: &str| {
        if (MIN_TIME_MS..=MAX_TIME_MS).contains(&ms) {
            Ok(ms)
        } else {
            Err(Invalid(format!(
                "event time {shown} is outside the years 0001 to 9999"
            )))
        }
    };
    let pointer = match &settings.time {
        TimeSource::EventTimestamp => {
            let ms = event.timestamp_ms.ok_or_else(|| {
                Invalid("the event has no timestamp (`time: $timestamp`); name the time's field with `time: /field`".to_owned())
            })?;
            return in_range(ms, &format!("{ms} (the event's timestamp)"));
        }
        TimeSource::Pointer(pointer) => pointer,
    };
    const EXPECTED: &str = "epoch milliseconds (an integer) or an RFC 3339 string";
    match doc.and_then(|d| d.pointer(pointer)) {
        None | Some(Value::Null) => Err(Invalid(format!(
            "time `{pointer}` is missing from the payload"
        ))),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(ms) => in_range(ms, &format!("`{pointer}` = {ms}")),
            None => Err(Invalid(format!(
                "time `{pointer}` must be {EXPECTED}, found {n}"
            ))),
        },
        Some(Value::String(s)) => parse_rfc3339(s).map_err(|why| {
            Invalid(format!(
                "time `{pointer}` = {} is not an RFC 3339 time: {why}",
                Value::String(s.chars().take(40).collect())
            ))
        }),
        Some(other) => Err(Invalid(format!(
            "time `{pointer}` must be {EXPECTED}, found {}",
            describe(other)
        ))),
    }
}

/// Takes the key, time and inputs from an event.
pub fn read(settings: &Settings, event: &Event) -> Result<Reading, Invalid> {
    let doc = if settings.reads_payload() {
        Some(
            serde_json::from_slice::<Value>(&event.payload)
                .map_err(|e| Invalid(format!("the payload is not JSON: {e}")))?,
        )
    } else {
        None
    };
    let (key, key_text) = key_of(settings, event, doc.as_ref())?;
    let time = time_of(settings, event, doc.as_ref())?;
    let mut inputs = Vec::with_capacity(settings.aggregates.len());
    for aggregate in &settings.aggregates {
        let Some(pointer) = &aggregate.field else {
            inputs.push(Input::Nothing);
            continue;
        };
        let what = || {
            format!(
                "`{}` ({} of `{pointer}`)",
                aggregate.name,
                aggregate.kind.word()
            )
        };
        let value = doc
            .as_ref()
            .and_then(|d| d.pointer(pointer))
            .ok_or_else(|| {
                Invalid(format!(
                    "{}: `{pointer}` is missing from the payload",
                    what()
                ))
            })?;
        inputs.push(match (aggregate.kind, value) {
            (AggregateKind::Last, value) => Input::Any(value.clone()),
            (_, Value::Number(n)) => Input::Number(Num::from_json(n)),
            (_, other) => {
                return Err(Invalid(format!(
                    "{}: `{pointer}` must be a number, found {}",
                    what(),
                    describe(other)
                )))
            }
        });
    }
    Ok(Reading {
        key,
        key_text,
        time,
        inputs,
    })
}
