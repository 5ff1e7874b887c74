//! What one call sends: the body (`payload` or the `event` envelope) and the
//! `spate-*` request headers.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::value::RawValue;
use spate_connector::Event;

use crate::Context;

/// Prefix of the request headers that carry the event's own headers in
/// `body: payload` mode.
pub(super) const EVENT_HEADER_PREFIX: &str = "spate-h-";

/// A header value that survives HTTP unchanged: printable ASCII, no
/// leading or trailing blank (servers trim those).
pub(super) fn plain_value(bytes: &[u8]) -> Option<HeaderValue> {
    let printable = bytes.iter().all(|b| (0x20..0x7f).contains(b));
    let trimmed =
        bytes.first().is_none_or(|b| *b != b' ') && bytes.last().is_none_or(|b| *b != b' ');
    if printable && trimmed {
        HeaderValue::from_bytes(bytes).ok()
    } else {
        None
    }
}

/// The headers every call carries: which event (stream, partition, offset
/// — stable across retries and redeliveries, so a function can
/// de-duplicate), which function and which attempt.
pub(super) fn identity_headers(event: &Event, ctx: &Context, headers: &mut HeaderMap) {
    if let Some(stream) = plain_value(event.position.stream.as_bytes()) {
        headers.insert(HeaderName::from_static("spate-stream"), stream);
    }
    headers.insert(
        HeaderName::from_static("spate-partition"),
        HeaderValue::from(event.position.partition),
    );
    headers.insert(
        HeaderName::from_static("spate-offset"),
        HeaderValue::from(event.position.offset),
    );
    if let Some(function) = plain_value(ctx.function.as_bytes()) {
        headers.insert(HeaderName::from_static("spate-function"), function);
    }
    headers.insert(
        HeaderName::from_static("spate-attempt"),
        HeaderValue::from(ctx.attempt),
    );
}

/// The event's key, timestamp and headers as request headers (`body:
/// payload` mode). Returns the names of event headers that could not be
/// carried (their value is not plain printable ASCII, or their name is not
/// a valid header name); `spate-skipped-headers` tells the function how
/// many there were.
pub(super) fn metadata_headers(event: &Event, headers: &mut HeaderMap) -> Vec<String> {
    if let Some(key) = &event.key {
        match plain_value(key) {
            Some(value) => {
                headers.insert(HeaderName::from_static("spate-key"), value);
            }
            None => {
                if let Ok(value) = HeaderValue::from_str(&BASE64.encode(key)) {
                    headers.insert(HeaderName::from_static("spate-key-base64"), value);
                }
            }
        }
    }
    if let Some(ms) = event.timestamp_ms {
        headers.insert(
            HeaderName::from_static("spate-timestamp-ms"),
            HeaderValue::from(ms),
        );
    }
    let mut skipped = Vec::new();
    for (name, value) in event.headers.iter() {
        let mapped = format!("{EVENT_HEADER_PREFIX}{}", name.to_ascii_lowercase());
        match (
            HeaderName::from_bytes(mapped.as_bytes()),
            plain_value(value),
        ) {
            (Ok(name), Some(value)) => {
                headers.append(name, value);
            }
            _ => skipped.push(name.to_owned()),
        }
    }
    if !skipped.is_empty() {
        headers.insert(
            HeaderName::from_static("spate-skipped-headers"),
            HeaderValue::from(skipped.len() as u64),
        );
    }
    skipped
}

/// True when `bytes` is one JSON document.
pub(super) fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<&RawValue>(bytes).is_ok()
}

#[derive(Serialize)]
struct HeaderEntry<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
}

/// The `body: event` envelope.
#[derive(Serialize)]
struct Envelope<'a> {
    function: &'a str,
    attempt: u32,
    stream: &'a str,
    partition: u32,
    offset: u64,
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_base64: Option<String>,
    timestamp_ms: Option<i64>,
    headers: Vec<HeaderEntry<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
}

/// Text as is when it is UTF-8, else base64 (for the envelope).
fn text_or_base64(bytes: &[u8]) -> (Option<&str>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Some(text), None),
        Err(_) => (None, Some(BASE64.encode(bytes))),
    }
}

/// The JSON envelope of `body: event`: every field of the event, the
/// payload as JSON when it is JSON (kept byte for byte) and as
/// `payload_base64` otherwise.
pub(super) fn envelope(event: &Event, ctx: &Context) -> Bytes {
    let (key, key_base64) = match &event.key {
        Some(key) => text_or_base64(key),
        None => (None, None),
    };
    let headers = event
        .headers
        .iter()
        .map(|(name, value)| {
            let (value, value_base64) = text_or_base64(value);
            HeaderEntry {
                name,
                value,
                value_base64,
            }
        })
        .collect();
    let payload = serde_json::from_slice::<&RawValue>(&event.payload).ok();
    let payload_base64 = payload.is_none().then(|| BASE64.encode(&event.payload));
    let envelope = Envelope {
        function: &ctx.function,
        attempt: ctx.attempt,
        stream: &event.position.stream,
        partition: event.position.partition,
        offset: event.position.offset,
        key,
        key_base64,
        timestamp_ms: event.timestamp_ms,
        headers,
        payload,
        payload_base64,
    };
    // Serializing borrowed strings, numbers and already valid JSON into a
    // Vec cannot fail.
    Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{json, Value};
    use spate_connector::Headers;

    use super::*;

    fn event(key: Option<&[u8]>, payload: &[u8], headers: &[(&str, &[u8])]) -> Event {
        let mut h = Headers::new();
        for (name, value) in headers {
            h.push(*name, Bytes::copy_from_slice(value));
        }
        Event {
            key: key.map(Bytes::copy_from_slice),
            headers: h,
            timestamp_ms: Some(1_700_000_000_123),
            ..crate::testing::event("orders", 3, 42, payload)
        }
    }

    fn ctx() -> Context {
        Context::new(Arc::from("score-orders"), 2)
    }

    #[test]
    fn payload_mode_maps_metadata_to_headers_and_counts_what_it_skips() {
        let e = event(
            Some(b"order-7"),
            b"{}",
            &[
                ("traceparent", b"00-abc-def-01"),
                ("Tenant", b"acme"),
                ("tenant", b"second"),
                ("binary", b"\x00\xff"),
                ("bad name", b"x"),
            ],
        );
        let mut headers = HeaderMap::new();
        identity_headers(&e, &ctx(), &mut headers);
        let skipped = metadata_headers(&e, &mut headers);
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        assert_eq!(get("spate-stream"), Some("orders"));
        assert_eq!(get("spate-partition"), Some("3"));
        assert_eq!(get("spate-offset"), Some("42"));
        assert_eq!(get("spate-function"), Some("score-orders"));
        assert_eq!(get("spate-attempt"), Some("2"));
        assert_eq!(get("spate-key"), Some("order-7"));
        assert_eq!(get("spate-timestamp-ms"), Some("1700000000123"));
        assert_eq!(get("spate-h-traceparent"), Some("00-abc-def-01"));
        let tenants: Vec<&str> = headers
            .get_all("spate-h-tenant")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(tenants, ["acme", "second"]);
        assert_eq!(skipped, ["binary", "bad name"]);
        assert_eq!(get("spate-skipped-headers"), Some("2"));
    }

    #[test]
    fn a_key_that_is_not_plain_text_goes_as_base64() {
        let e = event(Some(b" padded\n"), b"x", &[]);
        let mut headers = HeaderMap::new();
        metadata_headers(&e, &mut headers);
        assert!(headers.get("spate-key").is_none());
        assert_eq!(
            headers
                .get("spate-key-base64")
                .and_then(|v| v.to_str().ok()),
            Some("IHBhZGRlZAo=")
        );
        assert!(headers.get("spate-skipped-headers").is_none());
    }

    #[test]
    fn the_envelope_keeps_json_payloads_as_json_and_others_as_base64() {
        let e = event(
            Some(b"order-7"),
            br#"{"amount": 12.50, "big": 123456789012345678901234567890}"#,
            &[("tenant", b"acme"), ("blob", b"\xff")],
        );
        let body = envelope(&e, &ctx());
        let text = std::str::from_utf8(&body).unwrap();
        assert!(
            text.contains(r#""payload":{"amount": 12.50, "big": 123456789012345678901234567890}"#),
            "payload not kept byte for byte: {text}"
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["function"], "score-orders");
        assert_eq!(v["attempt"], 2);
        assert_eq!(v["stream"], "orders");
        assert_eq!(v["partition"], 3);
        assert_eq!(v["offset"], 42);
        assert_eq!(v["key"], "order-7");
        assert_eq!(v["timestamp_ms"], 1_700_000_000_123_i64);
        assert_eq!(
            v["headers"],
            json!([{"name": "tenant", "value": "acme"}, {"name": "blob", "value_base64": "/w=="}])
        );
        assert!(v.get("payload_base64").is_none());

        let raw = event(None, b"\x01not json", &[]);
        let v: Value = serde_json::from_slice(&envelope(&raw, &ctx())).unwrap();
        assert_eq!(v["key"], Value::Null);
        assert!(v.get("payload").is_none());
        assert_eq!(v["payload_base64"], "AW5vdCBqc29u");
    }

    #[test]
    fn plain_values_are_printable_ascii_without_outer_blanks() {
        assert!(plain_value(b"a b").is_some());
        assert!(plain_value(b"").is_some());
        assert!(plain_value(b" a").is_none());
        assert!(plain_value(b"caf\xc3\xa9").is_none());
        assert!(plain_value(b"a\r\nb").is_none());
        assert!(is_json(b" [1, 2] "));
        assert!(!is_json(b"hello"));
    }
}
