//! NATS connectors: core NATS subjects (`nats`) and JetStream streams
//! (`jetstream`), built on `async-nats`.
//!
//! | kind | source | sink | positions | capabilities (source / sink) |
//! | --- | --- | --- | --- | --- |
//! | [`nats`](mod@core) | subscription (wildcards, optional queue group), one partition, offset = per-session counter | publish + flush | none | `{false, false}` / `{false, false}` |
//! | [`jetstream`] | durable pull consumers, explicit acks on commit; one shared partition, or N subject partitions leased to one process each; offset = stream sequence | publish, resolves on the publish ack | the consumer's ack state on the server | `{true, true}` / `{true, false}` (exactly-once by `Nats-Msg-Id`, see [`jetstream::exactly_once`]) |
//!
//! Connection settings (`url`, `user`/`password`, `token`, `nkey_seed`,
//! `creds_file`, TLS files, `connect_timeout`) are the same for every kind;
//! see [`connection`].
//!
//! # Events and records
//!
//! NATS messages carry a subject, headers and a payload. A record's key is
//! written as the header [`KEY_HEADER`] (`spate-key`) and read back from it
//! into [`Event::key`](spate_connector::Event::key) (the header is kept on
//! the event too). All other headers travel both ways unchanged, with
//! repeated names kept in order; NATS does not keep the relative order of
//! *different* header names, so neither can spate. Header names and values
//! must be UTF-8 text without line breaks (a NATS rule); a record that breaks
//! it is rejected, not silently altered. Every event also gets the header
//! [`SUBJECT_HEADER`] (`spate-nats-subject`) with the subject it was
//! published on, which matters when a source subscribes with wildcards.
//!
//! Every factory reads its settings through the contract's
//! [`ConfigReader`]: the keys it asks for are its schema, every problem is
//! recorded, and an invalid configuration makes the factory return `None`
//! without network I/O (TLS files are checked to exist).

#![warn(missing_docs)]

use std::sync::Arc;

use bytes::Bytes;
use spate_connector::{ConfigReader, ConnectorFactory, Headers};

pub mod connection;
pub mod core;
pub mod jetstream;

pub use crate::core::NatsFactory;
pub use crate::jetstream::JetStreamFactory;

/// Header carrying a record's key.
pub const KEY_HEADER: &str = "spate-key";
/// Header added to every event with the subject the message was published on.
pub const SUBJECT_HEADER: &str = "spate-nats-subject";

/// Every connector family of this crate.
pub fn connectors() -> Vec<Arc<dyn ConnectorFactory>> {
    vec![Arc::new(NatsFactory), Arc::new(JetStreamFactory)]
}

/// How many configuration problems were recorded so far.
fn error_mark(config: &ConfigReader<'_>) -> usize {
    config.errors().borrow().len()
}

/// True when problems were recorded since `mark` was taken.
fn has_new_errors(config: &ConfigReader<'_>, mark: usize) -> bool {
    config.errors().borrow().len() > mark
}

/// Reads a sink's settings: `subject` (required, `hint` says what to write;
/// concrete, since a message is published to one subject, never to a
/// wildcard), the sink's own keys (`own`), then the connection. `None` when
/// any problem was recorded.
fn read_sink<T>(
    config: &mut ConfigReader<'_>,
    hint: &str,
    own: impl FnOnce(&mut ConfigReader<'_>) -> T,
) -> Option<(String, T, connection::ConnectSettings)> {
    let mark = error_mark(config);
    let subject = config.required_string("subject", Some(hint.to_owned()));
    if let Some(subject) = &subject {
        if subject.contains(['*', '>']) {
            config.error_at_key(
                "subject",
                format!("cannot publish to the wildcard subject `{subject}`"),
                Some("a sink publishes to one concrete subject".to_owned()),
            );
        }
    }
    let own = own(config);
    let connect = connection::ConnectSettings::read(config);
    if has_new_errors(config, mark) {
        return None;
    }
    Some((subject?, own, connect))
}

/// The bytes of the subject messages last came on: a source whose
/// messages share a subject copies it once, not once per message.
#[derive(Debug, Default)]
struct SubjectBytes(Bytes);

impl SubjectBytes {
    /// `subject` as shared bytes (a copy only when it changed).
    fn get(&mut self, subject: &str) -> Bytes {
        if self.0 != subject.as_bytes() {
            self.0 = Bytes::copy_from_slice(subject.as_bytes());
        }
        self.0.clone()
    }
}

/// Converts an incoming NATS message's headers and subject (as shared
/// bytes, see [`SubjectBytes`]) to event headers and key. A message
/// without headers costs one header: the subject.
fn event_headers(
    subject: Bytes,
    headers: Option<&async_nats::HeaderMap>,
) -> (Option<Bytes>, Headers) {
    let mut out = Headers::new();
    let mut key = None;
    if let Some(map) = headers.filter(|map| !map.is_empty()) {
        // HashMap order: sort names so the result is at least deterministic.
        let mut names: Vec<_> = map.iter().collect();
        names.sort_by(|a, b| {
            let a: &str = a.0.as_ref();
            let b: &str = b.0.as_ref();
            a.cmp(b)
        });
        for (name, values) in names {
            let name: &str = name.as_ref();
            for value in values {
                out.push(
                    name.to_owned(),
                    Bytes::copy_from_slice(value.as_str().as_bytes()),
                );
            }
        }
        key = out.get(KEY_HEADER).cloned();
    }
    out.push(SUBJECT_HEADER, subject);
    (key, out)
}

/// Converts a record's headers and key to a NATS header map (`None` when
/// there is nothing to write but spate's own subject header, so the message
/// goes out without headers), or says why it cannot be written.
fn nats_headers(
    key: Option<&Bytes>,
    headers: &Headers,
) -> Result<Option<async_nats::HeaderMap>, String> {
    if key.is_none() && headers.is_empty() {
        return Ok(None);
    }
    let mut map = async_nats::HeaderMap::new();
    for (name, value) in headers.iter() {
        if name == SUBJECT_HEADER || (name == KEY_HEADER && key.is_some()) {
            continue;
        }
        let header_name: async_nats::HeaderName = name
            .parse()
            .map_err(|_| format!("header name `{name}` is not a valid NATS header name"))?;
        let value = header_text(name, value)?;
        map.append(header_name, value);
    }
    if let Some(key) = key {
        map.insert(KEY_HEADER, header_text(KEY_HEADER, key)?);
    }
    // Only spate's own subject header: publish without headers at all.
    Ok((!map.is_empty()).then_some(map))
}

fn header_text<'v>(name: &str, value: &'v Bytes) -> Result<&'v str, String> {
    let text = std::str::from_utf8(value)
        .map_err(|_| format!("header `{name}` is not UTF-8 text; NATS headers are text"))?;
    if text.contains(['\r', '\n']) {
        return Err(format!(
            "header `{name}` contains a line break; NATS headers cannot"
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_key_round_trip() {
        let mut headers = Headers::new();
        headers.push("a", Bytes::from_static(b"1"));
        headers.push("a", Bytes::from_static(b"2"));
        headers.push("b", Bytes::from_static(b"x"));
        let key = Bytes::from_static(b"device-7");
        let map = nats_headers(Some(&key), &headers).unwrap().unwrap();
        let (back_key, back) = event_headers(Bytes::from_static(b"t.1"), Some(&map));
        assert_eq!(back_key, Some(key));
        let a: Vec<&Bytes> = back
            .iter()
            .filter(|(n, _)| *n == "a")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(
            a,
            vec![&Bytes::from_static(b"1"), &Bytes::from_static(b"2")]
        );
        assert_eq!(back.get_str("b"), Some("x"));
        assert_eq!(back.get_str(SUBJECT_HEADER), Some("t.1"));
    }

    #[test]
    fn only_the_subject_header_publishes_without_headers() {
        let (key, headers) = event_headers(Bytes::from_static(b"t.1"), None);
        assert_eq!(key, None);
        assert!(matches!(nats_headers(None, &headers), Ok(None)));
        let mut with_key = headers.clone();
        with_key.push(KEY_HEADER, Bytes::from_static(b"k"));
        let map = nats_headers(None, &with_key).unwrap().unwrap();
        assert_eq!(map.get(KEY_HEADER).map(|v| v.as_str()), Some("k"));
        assert!(map.get(SUBJECT_HEADER).is_none());
    }

    #[test]
    fn subject_bytes_are_copied_only_when_the_subject_changes() {
        let mut subjects = SubjectBytes::default();
        let first = subjects.get("a.b");
        let again = subjects.get("a.b");
        assert_eq!(first.as_ptr(), again.as_ptr());
        assert_eq!(subjects.get("a.c"), Bytes::from_static(b"a.c"));
    }

    #[test]
    fn binary_headers_are_rejected() {
        let mut headers = Headers::new();
        headers.push("bin", Bytes::from_static(&[0xff, 0x00]));
        assert!(nats_headers(None, &headers).is_err());
        let key = Bytes::from_static(b"a\nb");
        assert!(nats_headers(Some(&key), &Headers::new()).is_err());
    }
}
