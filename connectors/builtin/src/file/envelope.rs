//! The JSON Lines envelope: one record per line, one JSON object per record.
//! Shared by the `file` source and sink and the `stdout` sink's `envelope`
//! format, so what one writes the other reads back.
//!
//! ```text
//! {"key":"device-7","payload":{"t":21.5},"headers":{"trace":"abc"},"timestamp_ms":1700000000000}
//! ```
//!
//! | field | meaning |
//! | --- | --- |
//! | `key` | the key as UTF-8 text (optional); `key_base64` for a binary key |
//! | `payload` | a JSON string stands for its UTF-8 bytes; any other JSON value for its compact JSON text |
//! | `payload_base64` | instead of `payload`, for bytes that are not UTF-8 |
//! | `headers` | object of name → string, or name → `{"base64": "…"}` for binary values; order is kept and names may repeat |
//! | `timestamp_ms` | event time in milliseconds since the Unix epoch (optional) |
//!
//! Exactly one of `payload` / `payload_base64` is required; other fields are
//! refused, so a file of plain JSON objects is reported rather than silently
//! misread (read such files with `layout: raw`).
//!
//! [`encode`] is lossless: decoding what it wrote gives back the same key,
//! payload bytes, headers and timestamp. A payload is written inline as JSON
//! only when it is already compact JSON (and not a bare JSON string, which
//! would lose its quotes), so inline payloads come back byte for byte.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use spate_connector::{Headers, Record};
use thiserror::Error;

/// Nesting deeper than this is written as a string rather than inline JSON,
/// so the line stays within the JSON parser's recursion limit when read back.
const MAX_INLINE_DEPTH: usize = 100;

/// Why a line is not a valid envelope.
#[derive(Debug, Error)]
pub enum EnvelopeError {
    /// The line is not JSON, or not an object of the envelope's fields.
    #[error("not a valid envelope: {0}")]
    Json(#[from] serde_json::Error),
    /// Neither `payload` nor `payload_base64` is given.
    #[error("missing `payload` (or `payload_base64`)")]
    MissingPayload,
    /// Two fields that exclude each other are both given.
    #[error("both `{0}` and `{1}` are given; use one of them")]
    Conflict(&'static str, &'static str),
    /// A `*_base64` field does not hold base64.
    #[error("`{field}` is not valid base64: {source}")]
    Base64 {
        /// The field.
        field: &'static str,
        /// The decoder's complaint.
        #[source]
        source: base64::DecodeError,
    },
}

impl EnvelopeError {
    /// True when the line looks like plain JSON rather than an envelope, in
    /// which case `layout: raw` is probably what the user meant.
    pub fn suggests_raw_format(&self) -> bool {
        match self {
            Self::MissingPayload => true,
            Self::Json(e) => e.to_string().starts_with("unknown field"),
            _ => false,
        }
    }
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an envelope object with `payload` or `payload_base64`"
)]
struct Wire {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    key_base64: Option<String>,
    #[serde(default, deserialize_with = "present")]
    payload: Option<Box<RawValue>>,
    #[serde(default)]
    payload_base64: Option<String>,
    #[serde(default)]
    headers: Option<WireHeaders>,
    #[serde(default)]
    timestamp_ms: Option<i64>,
}

/// Reads a field that is present as `Some`, even when it is `null` (a `null`
/// payload is the four bytes `null`, not a missing payload).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// Headers in file order, repeated names kept.
struct WireHeaders(Headers);

impl<'de> Deserialize<'de> for WireHeaders {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct HeadersVisitor;

        impl<'de> Visitor<'de> for HeadersVisitor {
            type Value = WireHeaders;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of header name → string or {\"base64\": \"…\"}")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireHeaders, A::Error> {
                let mut headers = Headers::new();
                while let Some((name, value)) = map.next_entry::<String, serde_json::Value>()? {
                    let bytes = match value {
                        serde_json::Value::String(text) => Bytes::from(text),
                        serde_json::Value::Object(object) => match object.get("base64") {
                            Some(serde_json::Value::String(b64)) if object.len() == 1 => {
                                BASE64.decode(b64).map(Bytes::from).map_err(|e| {
                                    de::Error::custom(format!(
                                        "header `{name}` is not valid base64: {e}"
                                    ))
                                })?
                            }
                            _ => return Err(header_type_error(&name)),
                        },
                        _ => return Err(header_type_error(&name)),
                    };
                    headers.push(name, bytes);
                }
                Ok(WireHeaders(headers))
            }
        }

        d.deserialize_map(HeadersVisitor)
    }
}

fn header_type_error<E: de::Error>(name: &str) -> E {
    E::custom(format!(
        "header `{name}` must be a string or {{\"base64\": \"…\"}}"
    ))
}

/// Reads one envelope line (without its line ending).
pub fn decode(line: &[u8]) -> Result<Record, EnvelopeError> {
    let wire: Wire = serde_json::from_slice(line)?;
    let key = match (wire.key, wire.key_base64) {
        (Some(_), Some(_)) => return Err(EnvelopeError::Conflict("key", "key_base64")),
        (Some(key), None) => Some(Bytes::from(key)),
        (None, Some(b64)) => Some(from_base64("key_base64", &b64)?),
        (None, None) => None,
    };
    let payload = match (wire.payload, wire.payload_base64) {
        (Some(_), Some(_)) => return Err(EnvelopeError::Conflict("payload", "payload_base64")),
        (Some(raw), None) => payload_from_json(raw.get())?,
        (None, Some(b64)) => from_base64("payload_base64", &b64)?,
        (None, None) => return Err(EnvelopeError::MissingPayload),
    };
    Ok(Record {
        key,
        payload,
        headers: wire.headers.map(|h| h.0).unwrap_or_default(),
        timestamp_ms: wire.timestamp_ms,
    })
}

fn from_base64(field: &'static str, text: &str) -> Result<Bytes, EnvelopeError> {
    BASE64
        .decode(text)
        .map(Bytes::from)
        .map_err(|source| EnvelopeError::Base64 { field, source })
}

/// A JSON string stands for its text; any other value for its compact text.
fn payload_from_json(raw: &str) -> Result<Bytes, EnvelopeError> {
    if raw.starts_with('"') {
        let text: String = serde_json::from_str(raw)?;
        Ok(Bytes::from(text))
    } else {
        Ok(Bytes::from(minify(raw)))
    }
}

/// Removes whitespace outside strings from valid JSON text.
fn minify(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// True when `text` has no whitespace outside strings and nests no deeper
/// than [`MAX_INLINE_DEPTH`] (assuming it is JSON; validity is checked apart).
fn is_compact(text: &str) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    let mut depth = 0usize;
    for b in text.bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => return false,
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_INLINE_DEPTH {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// True when the payload can be written inline as a JSON value and read
/// back byte for byte.
fn inline_json(text: &str) -> bool {
    !text.is_empty()
        && !text.starts_with('"')
        && is_compact(text)
        && serde_json::from_str::<de::IgnoredAny>(text).is_ok()
}

/// Appends `text` as a JSON string literal.
fn push_json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let mut start = 0;
    for (i, b) in text.bytes().enumerate() {
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            _ if b < 0x20 => None,
            _ => continue,
        };
        out.extend_from_slice(&text.as_bytes()[start..i]);
        match escape {
            Some(seq) => out.extend_from_slice(seq),
            None => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
        }
        start = i + 1;
    }
    out.extend_from_slice(&text.as_bytes()[start..]);
    out.push(b'"');
}

fn push_field(out: &mut Vec<u8>, first: &mut bool, name: &str) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    push_json_string(out, name);
    out.push(b':');
}

/// Appends `record` as one envelope line, newline included.
pub fn encode(record: &Record, out: &mut Vec<u8>) {
    out.push(b'{');
    let mut first = true;
    if let Some(key) = &record.key {
        match std::str::from_utf8(key) {
            Ok(text) => {
                push_field(out, &mut first, "key");
                push_json_string(out, text);
            }
            Err(_) => {
                push_field(out, &mut first, "key_base64");
                push_json_string(out, &BASE64.encode(key));
            }
        }
    }
    match std::str::from_utf8(&record.payload) {
        Ok(text) if inline_json(text) => {
            push_field(out, &mut first, "payload");
            out.extend_from_slice(text.as_bytes());
        }
        Ok(text) => {
            push_field(out, &mut first, "payload");
            push_json_string(out, text);
        }
        Err(_) => {
            push_field(out, &mut first, "payload_base64");
            push_json_string(out, &BASE64.encode(&record.payload));
        }
    }
    if !record.headers.is_empty() {
        push_field(out, &mut first, "headers");
        out.push(b'{');
        for (i, (name, value)) in record.headers.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_json_string(out, name);
            out.push(b':');
            match std::str::from_utf8(value) {
                Ok(text) => push_json_string(out, text),
                Err(_) => {
                    out.extend_from_slice(b"{\"base64\":");
                    push_json_string(out, &BASE64.encode(value));
                    out.push(b'}');
                }
            }
        }
        out.push(b'}');
    }
    if let Some(ts) = record.timestamp_ms {
        push_field(out, &mut first, "timestamp_ms");
        out.extend_from_slice(ts.to_string().as_bytes());
    }
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(record: &Record) -> (String, Record) {
        let mut line = Vec::new();
        encode(record, &mut line);
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "one line");
        let text = String::from_utf8(line.clone()).expect("envelopes are UTF-8");
        let decoded = decode(&line[..line.len() - 1]).expect("decodes");
        (text, decoded)
    }

    #[test]
    fn every_kind_of_payload_round_trips_byte_for_byte() {
        let payloads: Vec<&[u8]> = vec![
            br#"{"b":1,"a":[1.0,2e3,"x y"]}"#,
            b"{ \"pretty\": true }\n",
            b"\"quoted\"",
            b"plain text with \"quotes\", tabs\t and\nnewlines",
            b"42",
            b"null",
            b"",
            &[0, 159, 146, 150, 255],
            "unicode ✓ \u{1}".as_bytes(),
        ];
        for payload in payloads {
            let mut headers = Headers::new();
            headers.push("trace", "abc");
            headers.push("trace", "def");
            headers.push("bin", Bytes::from_static(&[0xff, 0x00]));
            let record = Record {
                key: Some(Bytes::copy_from_slice(payload)),
                payload: Bytes::copy_from_slice(payload),
                headers,
                timestamp_ms: Some(-5),
            };
            let (line, decoded) = round_trip(&record);
            assert_eq!(decoded, record, "line: {line}");
        }
    }

    #[test]
    fn compact_json_payloads_are_written_inline() {
        let (line, _) = round_trip(&Record::from_payload(r#"{"t":21.5}"#));
        assert_eq!(line, "{\"payload\":{\"t\":21.5}}\n");
        let (line, _) = round_trip(&Record::from_payload("hello"));
        assert_eq!(line, "{\"payload\":\"hello\"}\n");
    }

    #[test]
    fn hand_written_envelopes_decode() {
        let record =
            decode(br#"{"key":"k","payload": { "a" : [1, 2] },"timestamp_ms":7}"#).expect("ok");
        assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(record.payload, Bytes::from_static(br#"{"a":[1,2]}"#));
        assert_eq!(record.timestamp_ms, Some(7));
        let record = decode(br#"{"payload":null}"#).expect("ok");
        assert_eq!(record.payload, Bytes::from_static(b"null"));
        let record =
            decode(br#"{"payload_base64":"AAE=","headers":{"h":{"base64":"/w=="}}}"#).expect("ok");
        assert_eq!(record.payload, Bytes::from_static(&[0, 1]));
        assert_eq!(record.headers.get("h"), Some(&Bytes::from_static(&[0xff])));
    }

    #[test]
    fn bad_envelopes_say_why() {
        let cases: Vec<(&[u8], &str)> = vec![
            (b"not json", "not a valid envelope"),
            (b"42", "envelope object"),
            (br#"{"device":"d1"}"#, "unknown field `device`"),
            (br#"{"key":"k"}"#, "missing `payload`"),
            (
                br#"{"payload":1,"payload_base64":"AA=="}"#,
                "both `payload` and `payload_base64`",
            ),
            (
                br#"{"payload_base64":"***"}"#,
                "`payload_base64` is not valid base64",
            ),
            (
                br#"{"payload":1,"headers":{"h":3}}"#,
                "header `h` must be a string",
            ),
        ];
        for (line, expected) in cases {
            let err = decode(line).expect_err("invalid");
            assert!(
                err.to_string().contains(expected),
                "{err} should contain {expected}"
            );
        }
        assert!(decode(br#"{"device":"d1"}"#)
            .unwrap_err()
            .suggests_raw_format());
    }
}
