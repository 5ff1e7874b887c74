//! Recorded events and expected results for `spate test`, read from JSON
//! Lines files or from a pipeline file's `tests:` block (both go through
//! JSON values, so the two forms are the same).
//!
//! A sample is either an envelope, an object whose keys are all among
//! `payload` / `payload_text` / `payload_base64` (exactly one of these),
//! `key`, `headers` (a map of strings) and `timestamp_ms`, or any other JSON
//! value, which is then the payload itself. `payload` is written as JSON
//! text; `payload_text` is taken as UTF-8 bytes as is, so a test can feed
//! a payload that is not JSON.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value;
use spate_connector::{Event, Headers, Position};

/// The stream name recorded events carry (`spate-dlq-stream` of their dead
/// letters).
pub const SAMPLE_STREAM: &str = "spate-test";

const ENVELOPE_KEYS: &[&str] = &[
    "payload",
    "payload_text",
    "payload_base64",
    "key",
    "headers",
    "timestamp_ms",
];

/// Why a sample or an expectation could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SampleError(pub String);

/// Reads one sample into the event a source would have delivered at
/// `offset` of partition 0.
pub fn sample_event(value: &Value, offset: u64) -> Result<Event, SampleError> {
    let position = Position {
        stream: Arc::from(SAMPLE_STREAM),
        partition: 0,
        offset,
    };
    let envelope = value.as_object().filter(|map| {
        map.keys().all(|k| ENVELOPE_KEYS.contains(&k.as_str()))
            && ["payload", "payload_text", "payload_base64"]
                .iter()
                .any(|k| map.contains_key(*k))
    });
    let Some(map) = envelope else {
        return Ok(Event {
            key: None,
            payload: Bytes::from(value.to_string()),
            headers: Headers::new(),
            timestamp_ms: None,
            position,
        });
    };
    let payloads: Vec<&str> = ["payload", "payload_text", "payload_base64"]
        .into_iter()
        .filter(|k| map.contains_key(*k))
        .collect();
    if payloads.len() > 1 {
        return Err(SampleError(format!(
            "give one of `payload`, `payload_text` and `payload_base64`, not {}",
            payloads.join(" and ")
        )));
    }
    let payload = if let Some(value) = map.get("payload") {
        Bytes::from(value.to_string())
    } else if let Some(text) = map.get("payload_text") {
        Bytes::from(
            text.as_str()
                .ok_or_else(|| SampleError("`payload_text` must be a string".to_owned()))?
                .to_owned(),
        )
    } else {
        let text = map
            .get("payload_base64")
            .and_then(Value::as_str)
            .ok_or_else(|| SampleError("`payload_base64` must be a string".to_owned()))?;
        Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| SampleError(format!("`payload_base64` is not base64: {e}")))?,
        )
    };
    let key = match map.get("key") {
        None | Some(Value::Null) => None,
        Some(Value::String(key)) => Some(Bytes::from(key.clone())),
        Some(other) => Some(Bytes::from(other.to_string())),
    };
    let mut headers = Headers::new();
    match map.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(entries)) => {
            for (name, value) in entries {
                let text = match value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                headers.push(name.clone(), Bytes::from(text));
            }
        }
        Some(_) => {
            return Err(SampleError(
                "`headers` must be a map of header names to strings".to_owned(),
            ))
        }
    }
    let timestamp_ms = match map.get("timestamp_ms") {
        None | Some(Value::Null) => None,
        Some(value) => Some(value.as_i64().ok_or_else(|| {
            SampleError("`timestamp_ms` must be an integer (milliseconds since 1970)".to_owned())
        })?),
    };
    Ok(Event {
        key,
        payload,
        headers,
        timestamp_ms,
        position,
    })
}

/// One expected output: where to (`None`: every declared output) and what.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedOutput {
    /// `to:`, the output name the handler routes to.
    pub to: Option<String>,
    /// The payload: compared as JSON when both sides parse as JSON.
    pub payload: Bytes,
    /// `key:`, checked when given.
    pub key: Option<Bytes>,
}

/// What one event should come to.
#[derive(Debug, Clone, PartialEq)]
pub enum Expectation {
    /// These outputs, in order (empty: the event is dropped).
    Outputs(Vec<ExpectedOutput>),
    /// A dead letter; `reason` and a fragment of the error checked when
    /// given.
    DeadLetter {
        /// `reason:` (`handler-error`, `decode-error`, `timeout`, ...).
        reason: Option<String>,
        /// `error_contains:`.
        error_contains: Option<String>,
    },
}

/// Reads an expectation: `{outputs: [...]}` or `{dead_letter: true | {reason,
/// error_contains}}`; each output `{payload | payload_text, to, key}`.
pub fn expectation(value: &Value) -> Result<Expectation, SampleError> {
    let map = value.as_object().ok_or_else(|| {
        SampleError("an expectation is `{outputs: [...]}` or `{dead_letter: ...}`".to_owned())
    })?;
    match (map.get("outputs"), map.get("dead_letter")) {
        (Some(_), Some(_)) => Err(SampleError(
            "an expectation has `outputs` or `dead_letter`, not both".to_owned(),
        )),
        (Some(outputs), None) => {
            let items = outputs
                .as_array()
                .ok_or_else(|| SampleError("`outputs` must be a list".to_owned()))?;
            items
                .iter()
                .map(expected_output)
                .collect::<Result<Vec<_>, _>>()
                .map(Expectation::Outputs)
        }
        (None, Some(Value::Bool(true))) => Ok(Expectation::DeadLetter {
            reason: None,
            error_contains: None,
        }),
        (None, Some(Value::Object(letter))) => {
            let text = |key: &str| -> Result<Option<String>, SampleError> {
                match letter.get(key) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    Some(_) => Err(SampleError(format!("`dead_letter.{key}` must be a string"))),
                }
            };
            if let Some(unknown) = letter
                .keys()
                .find(|k| !["reason", "error_contains"].contains(&k.as_str()))
            {
                return Err(SampleError(format!(
                    "unknown key `{unknown}` in `dead_letter` (known: `reason`, `error_contains`)"
                )));
            }
            Ok(Expectation::DeadLetter {
                reason: text("reason")?,
                error_contains: text("error_contains")?,
            })
        }
        (None, Some(_)) => Err(SampleError(
            "`dead_letter` is `true` or `{reason: ..., error_contains: ...}`".to_owned(),
        )),
        (None, None) => Err(SampleError(
            "an expectation is `{outputs: [...]}` or `{dead_letter: ...}`".to_owned(),
        )),
    }
}

fn expected_output(value: &Value) -> Result<ExpectedOutput, SampleError> {
    let map = value.as_object().ok_or_else(|| {
        SampleError("each expected output is `{payload: ..., to: ..., key: ...}`".to_owned())
    })?;
    if let Some(unknown) = map
        .keys()
        .find(|k| !["payload", "payload_text", "to", "key"].contains(&k.as_str()))
    {
        return Err(SampleError(format!(
            "unknown key `{unknown}` in an expected output (known: `payload`, `payload_text`, `to`, `key`)"
        )));
    }
    let payload = match (map.get("payload"), map.get("payload_text")) {
        (Some(value), None) => Bytes::from(value.to_string()),
        (None, Some(Value::String(text))) => Bytes::from(text.clone()),
        (None, Some(_)) => return Err(SampleError("`payload_text` must be a string".to_owned())),
        _ => {
            return Err(SampleError(
                "each expected output needs one of `payload` and `payload_text`".to_owned(),
            ))
        }
    };
    let text = |key: &str| match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(SampleError(format!("`{key}` must be a string"))),
    };
    Ok(ExpectedOutput {
        to: text("to")?,
        payload,
        key: text("key")?.map(Bytes::from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_plain_value_is_the_payload_and_an_envelope_is_read() {
        let event = sample_event(&json!({"temperature": 20}), 3).unwrap();
        assert_eq!(event.payload, Bytes::from(r#"{"temperature":20}"#));
        assert_eq!(event.position.offset, 3);

        let event = sample_event(
            &json!({"payload_text": "not json", "key": "d1", "headers": {"a": "b"}, "timestamp_ms": 5}),
            0,
        )
        .unwrap();
        assert_eq!(event.payload, Bytes::from("not json"));
        assert_eq!(event.key, Some(Bytes::from("d1")));
        assert_eq!(event.headers.get_str("a"), Some("b"));
        assert_eq!(event.timestamp_ms, Some(5));

        let err = sample_event(&json!({"payload": 1, "payload_text": "x"}), 0).unwrap_err();
        assert!(err.0.contains("not payload and payload_text"), "{err}");
    }

    #[test]
    fn expectations_are_read_with_clear_errors() {
        assert_eq!(
            expectation(&json!({"outputs": []})).unwrap(),
            Expectation::Outputs(vec![])
        );
        assert_eq!(
            expectation(&json!({"dead_letter": {"reason": "decode-error"}})).unwrap(),
            Expectation::DeadLetter {
                reason: Some("decode-error".to_owned()),
                error_contains: None
            }
        );
        let err = expectation(&json!({"outputs": [{"payload": 1, "too": "x"}]})).unwrap_err();
        assert!(err.0.contains("unknown key `too`"), "{err}");
        assert!(expectation(&json!({"outputs": [], "dead_letter": true})).is_err());
    }
}
