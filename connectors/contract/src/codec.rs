//! The codec traits: how a payload becomes what a handler sees
//! ([`PayloadDecoder`]) and how a handler's output becomes the output's
//! format ([`PayloadEncoder`]), with their typed errors. Formats implement
//! them; the engine calls them and dead-letters what they refuse.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;

/// Header a dead letter carries with the schema id of an undecodable
/// payload (when the id could be read).
pub const SCHEMA_ID_HEADER: &str = "spate-schema-id";

/// A payload after decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// JSON text (or, for `raw`, the payload untouched).
    pub payload: Bytes,
    /// The writer schema's registry id, for the Confluent wire format.
    pub schema_id: Option<u32>,
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// True only when the schema registry could not be reached: the same
    /// payload may decode later. False means dead-letter it now.
    pub retryable: bool,
    /// What went wrong, for the dead letter's header and logs.
    pub message: String,
    /// The schema id read from the payload, if it got that far.
    pub schema_id: Option<u32>,
}

impl DecodeError {
    /// A failure that will repeat: dead-letter the event.
    pub fn permanent(message: impl Into<String>, schema_id: Option<u32>) -> Self {
        Self {
            retryable: false,
            message: message.into(),
            schema_id,
        }
    }

    /// The headers a dead letter of this event carries besides the usual
    /// ones: [`crate::dead_letter::DECODE_ERROR`] with the
    /// message and, when known, [`SCHEMA_ID_HEADER`] with the id.
    pub fn dead_letter_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![(crate::dead_letter::DECODE_ERROR, self.message.clone())];
        if let Some(id) = self.schema_id {
            headers.push((SCHEMA_ID_HEADER, id.to_string()));
        }
        headers
    }
}

/// Why a handler's output could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EncodeError {
    /// True only when the schema registry could not be reached.
    pub retryable: bool,
    /// What went wrong; names the field when the JSON does not fit.
    pub message: String,
    /// The path of the offending field (`items[2].sku`), when one is at fault.
    pub field: Option<String>,
}

impl EncodeError {
    /// A failure that will repeat: dead-letter the event.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            message: message.into(),
            field: None,
        }
    }
}

/// Turns payloads into what handlers see. Cheap to share; call from any
/// number of tasks.
#[async_trait]
pub trait PayloadDecoder: Send + Sync + fmt::Debug {
    /// Decodes one payload into JSON bytes (raw: the payload itself).
    async fn decode(&self, payload: &Bytes) -> Result<Decoded, DecodeError>;
}

/// Turns a handler's JSON output into the output's format.
#[async_trait]
pub trait PayloadEncoder: Send + Sync + fmt::Debug {
    /// Encodes one JSON payload (raw: passes it through).
    async fn encode(&self, json: &Bytes) -> Result<Bytes, EncodeError>;
}
