//! Formats by name, registered like connectors: a [`FormatFactory`] reads
//! its own keys from an input's or output's mapping and returns a
//! configured [`Format`], which hands out the [`PayloadDecoder`] and
//! [`PayloadEncoder`] the engine runs.
//!
//! [`read_format`] is the one reading of the `format` key: it picks the
//! factory by kind (`raw` when the key is absent), reports a key that
//! belongs to another format at that key, and lets the chosen factory read
//! the rest. Every problem is recorded in the reader's error list, all of
//! them in one pass.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::codec::{DecodeError, Decoded, EncodeError, PayloadDecoder, PayloadEncoder};
use crate::config::ConfigReader;

/// Whether a format is read for an input (decoding) or an output
/// (encoding); some keys belong to one side only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatRole {
    /// An input: payloads are decoded before the handler.
    Input,
    /// An output: handler results are encoded.
    Output,
}

/// A format as written in a pipeline file, validated. Cheap to share.
pub trait Format: Send + Sync + fmt::Debug {
    /// The kind it was configured as (`raw`, `json`, `avro`, …).
    fn name(&self) -> &'static str;

    /// True when decoding and encoding do nothing (the engine skips them).
    fn is_raw(&self) -> bool {
        false
    }

    /// The decoder for an input of this format.
    fn decoder(&self) -> Arc<dyn PayloadDecoder>;

    /// The encoder for an output of this format.
    fn encoder(&self) -> Arc<dyn PayloadEncoder>;
}

/// A family of formats under one `format:` kind.
pub trait FormatFactory: Send + Sync {
    /// The value of `format:` that selects it.
    fn kind(&self) -> &'static str;

    /// The keys it reads besides `format` (another format's mapping may
    /// not hold them).
    fn keys(&self) -> &'static [&'static str] {
        &[]
    }

    /// Reads its keys (recording every problem in `config`) and returns
    /// the configured format, or `None` if they are invalid.
    fn configure(&self, config: &mut ConfigReader<'_>, role: FormatRole)
        -> Option<Arc<dyn Format>>;
}

/// Bytes as they are, both ways: the format of dead letters, and of inputs
/// and outputs without a `format` key.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawFormat;

impl Format for RawFormat {
    fn name(&self) -> &'static str {
        "raw"
    }

    fn is_raw(&self) -> bool {
        true
    }

    fn decoder(&self) -> Arc<dyn PayloadDecoder> {
        Arc::new(RawCodec)
    }

    fn encoder(&self) -> Arc<dyn PayloadEncoder> {
        Arc::new(RawCodec)
    }
}

/// The codec of `format: raw`: passes bytes through and never fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

#[async_trait]
impl PayloadDecoder for RawCodec {
    async fn decode(&self, payload: &Bytes) -> Result<Decoded, DecodeError> {
        Ok(Decoded {
            payload: payload.clone(),
            schema_id: None,
        })
    }
}

#[async_trait]
impl PayloadEncoder for RawCodec {
    async fn encode(&self, json: &Bytes) -> Result<Bytes, EncodeError> {
        Ok(json.clone())
    }
}

/// `` `a`, `b` or `c` ``.
fn spell_kinds(kinds: &[&'static str]) -> String {
    let quoted: Vec<String> = kinds.iter().map(|k| format!("`{k}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

/// Reads `format` and the chosen format's keys from a connector's mapping
/// with `factories` (in registration order, which is the order messages
/// list them in). `None` when something is wrong; the problems are in the
/// reader's error list. Without a `format` key the format is `raw`.
pub fn read_format(
    config: &mut ConfigReader<'_>,
    role: FormatRole,
    factories: &[Arc<dyn FormatFactory>],
) -> Option<Arc<dyn Format>> {
    let mark = config.errors().borrow().len();
    let kinds: Vec<&'static str> = factories.iter().map(|f| f.kind()).collect();
    let written = config.has("format");
    let layout = config
        .node("format")
        .and_then(|node| node.as_text())
        .filter(|text| matches!(*text, "envelope" | "payload"));
    if let Some(layout) = layout {
        config.error_at_key(
            "format",
            format!(
                "`format` is how payloads are encoded ({}), not `{layout}`",
                spell_kinds(&kinds)
            ),
            Some(format!(
                "the file and stdout connectors' line layout is `layout: {layout}`"
            )),
        );
        return None;
    }
    let kind = config.one_of("format", &kinds);
    if written && kind.is_none() {
        for key in factories.iter().flat_map(|f| f.keys()) {
            let _ = config.has(key);
        }
        return None;
    }
    let kind = kind.unwrap_or("raw");
    let chosen = factories.iter().find(|f| f.kind() == kind);
    for other in factories.iter().filter(|f| f.kind() != kind) {
        for key in other.keys() {
            let own = chosen.is_some_and(|c| c.keys().contains(key));
            if !own && config.has(key) {
                config.error_at_key(
                    key,
                    format!(
                        "`{key}` applies only to `format: {}`, and this format is `{kind}`",
                        other.kind()
                    ),
                    Some(format!(
                        "write `format: {}`, or remove `{key}`",
                        other.kind()
                    )),
                );
            }
        }
    }
    let format = match chosen {
        Some(factory) => factory.configure(config, role),
        None => Some(Arc::new(RawFormat) as Arc<dyn Format>),
    };
    if config.errors().borrow().len() > mark {
        return None;
    }
    format
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_spelled_as_a_list() {
        assert_eq!(
            spell_kinds(&["raw", "json", "avro"]),
            "`raw`, `json` or `avro`"
        );
        assert_eq!(spell_kinds(&["raw"]), "`raw`");
    }

    #[tokio::test]
    async fn raw_never_touches_bytes() {
        let payload = Bytes::from_static(b"\xff not json");
        let decoded = RawFormat.decoder().decode(&payload).await.unwrap();
        assert_eq!(decoded.payload, payload);
        assert_eq!(RawFormat.encoder().encode(&payload).await.unwrap(), payload);
    }
}
