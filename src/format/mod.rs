//! Payload formats of inputs and outputs: raw bytes, JSON, and Avro — with
//! an inline schema, or in the Confluent Schema Registry wire format.
//!
//! Handlers always see JSON (or, with `format: raw`, the bytes as they came).
//! An input's [`PayloadDecoder`] turns a payload into JSON bytes before the
//! handler runs; an output's [`PayloadEncoder`] turns the handler's JSON
//! output into the output's format.
//!
//! # Pipeline-file keys
//!
//! Read by [`read_format`] from an input's or output's own mapping:
//!
//! ```yaml
//! format: avro                 # raw (default) | json | avro
//! schema: |                    # Avro only: the writer schema, inline JSON
//!   {"type": "record", "name": "Order", "fields": [...]}
//! # schema_file: schemas/order.avsc   (instead of `schema`; relative to the working directory)
//! reader_schema: ...           # inputs only: decode into this schema (evolution)
//! # reader_schema_file: ...
//! schema_registry:             # Confluent wire format instead of a bare datum
//!   url: https://registry.example:8081
//!   username: ${SR_KEY}        # both or neither (HTTP basic auth)
//!   password: ${SR_SECRET}
//!   subject: orders-value      # outputs only, required there
//!   auto_register: true        # outputs: register `schema` (default) or only look it up
//!   timeout: 10s               # per registry request
//! ```
//!
//! `schema` may also be written as a YAML mapping; it is read as the JSON it
//! spells. With `schema_registry`, an input takes the writer schema from
//! each payload's schema id (so `schema` is not allowed there); an output
//! registers `schema` under `subject` (or looks it up with
//! `auto_register: false`), or, without `schema`, encodes with the
//! subject's latest version as of its first event.
//!
//! # Guarantees
//!
//! - Every schema, URL and credential pair, and an inline writer schema's
//!   pairing with `reader_schema`, is checked when the file is loaded, with
//!   the error at the key. Nothing contacts the registry at load time.
//! - A payload that cannot be decoded is a [`DecodeError`] with
//!   `retryable: false` and the schema id when one was read: the engine
//!   dead-letters it with [`DecodeError::dead_letter_headers`] and never
//!   retries it. Only a registry that cannot be reached or is not answering
//!   as one (connection refused, timeout, HTTP 5xx, 401/403, 408, 429, a 404
//!   without a registry error code) makes an error retryable.
//! - Encoding errors name the field that does not fit the schema.
//! - The registry password never appears in `Debug` output, logs or errors.
//!
//! # JSON ↔ Avro mapping
//!
//! | Avro | JSON a handler sees and writes |
//! | --- | --- |
//! | `null`, `boolean`, `string`, `int`, `long` | the same |
//! | `float`, `double` | number; NaN and ±infinity as `"NaN"`, `"Infinity"`, `"-Infinity"` |
//! | `bytes`, `fixed` | standard base64 string with padding |
//! | `enum` | the symbol |
//! | `array`, `map`, `record` | array, object (keys sorted when decoding), object (fields in schema order) |
//! | union, e.g. `["null", "string"]` | the bare value (`null` or `"x"`), never Avro-JSON's `{"string": "x"}`; encoding takes the first branch in schema order that accepts the value |
//! | `decimal` | string with exactly `scale` decimals, `"12.30"`, any precision (encoding also takes a number, and refuses more decimals than `scale`) |
//! | `big-decimal` | string |
//! | `uuid` | string |
//! | `date`, `time-*`, `timestamp-*`, `local-timestamp-*` | the stored integer (days; ms/µs/ns) |
//! | `duration` | `{"months": m, "days": d, "millis": ms}` |
//!
//! When encoding a record, a missing field takes its default, a missing
//! nullable field with no default becomes `null`, and an undeclared key is
//! an error.

pub mod avro;
pub mod avro_depth;
mod config;
mod decimal;
mod from_json;
mod json;
pub mod registry;
#[cfg(test)]
mod tests;
mod to_json;

use std::fmt;
use std::sync::Arc;

pub use avro::confluent_frame;
pub use config::read_format;
pub use registry::{RegistryConfig, RegistryError, RegistrySchema, SchemaRegistry};

pub use spate_connector::codec::{
    DecodeError, Decoded, EncodeError, PayloadDecoder, PayloadEncoder, SCHEMA_ID_HEADER,
};

use avro::{AvroSchema, InlineDecoder, InlineEncoder, RegistryDecoder, RegistryEncoder};

/// Whether a format is read for an input (decoding) or an output
/// (encoding); some keys belong to one side only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatRole {
    /// An input: payloads are decoded before the handler.
    Input,
    /// An output: handler results are encoded.
    Output,
}

/// An Avro schema that does not parse, or a reader schema that cannot read
/// what the writer schema wrote; the text is apache-avro's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(pub String);

/// A format as written in a pipeline file, validated. Cloning is cheap;
/// clones share their registry client and its caches.
#[derive(Clone)]
pub struct FormatSpec {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Raw,
    Json,
    Avro {
        writer: Arc<AvroSchema>,
        reader: Option<Arc<AvroSchema>>,
    },
    Registry(Arc<RegistryFormat>),
}

/// The registry flavour of Avro, shared by a spec's clones.
struct RegistryFormat {
    registry: Arc<SchemaRegistry>,
    subject: Option<String>,
    schema: Option<Arc<AvroSchema>>,
    reader: Option<Arc<AvroSchema>>,
    auto_register: bool,
    /// One encoder per spec, so its (subject → id) lookup happens once.
    encoder: std::sync::OnceLock<Arc<RegistryEncoder>>,
}

/// What an Avro-with-registry format needs besides the registry client.
/// The default has no subject or schemas and `auto_register: true`.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// The subject outputs register under or look up (outputs only).
    pub subject: Option<String>,
    /// Writer schema for outputs; without it outputs use the subject's
    /// latest version.
    pub schema: Option<String>,
    /// Reader schema for inputs (schema evolution).
    pub reader_schema: Option<String>,
    /// Outputs register `schema` (true) or only look it up (false).
    pub auto_register: bool,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            subject: None,
            schema: None,
            reader_schema: None,
            auto_register: true,
        }
    }
}

impl FormatSpec {
    /// Bytes as they are, both ways.
    pub fn raw() -> Self {
        Self { inner: Inner::Raw }
    }

    /// JSON, validated both ways and otherwise untouched.
    pub fn json() -> Self {
        Self { inner: Inner::Json }
    }

    /// Avro datums without framing, written with `schema`; decoded into
    /// `reader_schema` when given.
    pub fn avro(schema: &str, reader_schema: Option<&str>) -> Result<Self, SchemaError> {
        let writer = Arc::new(AvroSchema::parse(schema)?);
        let reader = match reader_schema {
            Some(text) => {
                let reader = AvroSchema::parse(text)?;
                avro::check_compatible(&writer, &reader)?;
                Some(Arc::new(reader))
            }
            None => None,
        };
        Ok(Self {
            inner: Inner::Avro { writer, reader },
        })
    }

    /// Avro in the Confluent wire format through `registry`.
    pub fn avro_registry(
        registry: Arc<SchemaRegistry>,
        options: RegistryOptions,
    ) -> Result<Self, SchemaError> {
        let parse = |text: Option<&String>| -> Result<Option<Arc<AvroSchema>>, SchemaError> {
            text.map(|t| AvroSchema::parse(t).map(Arc::new)).transpose()
        };
        Ok(Self {
            inner: Inner::Registry(Arc::new(RegistryFormat {
                registry,
                subject: options.subject,
                schema: parse(options.schema.as_ref())?,
                reader: parse(options.reader_schema.as_ref())?,
                auto_register: options.auto_register,
                encoder: std::sync::OnceLock::new(),
            })),
        })
    }

    /// `raw`, `json` or `avro`.
    pub fn name(&self) -> &'static str {
        match self.inner {
            Inner::Raw => "raw",
            Inner::Json => "json",
            Inner::Avro { .. } | Inner::Registry(_) => "avro",
        }
    }

    /// True for `raw`, where decoding and encoding do nothing.
    pub fn is_raw(&self) -> bool {
        matches!(self.inner, Inner::Raw)
    }

    /// The decoder for an input of this format.
    pub fn decoder(&self) -> Arc<dyn PayloadDecoder> {
        match &self.inner {
            Inner::Raw => Arc::new(json::RawCodec),
            Inner::Json => Arc::new(json::JsonCodec),
            Inner::Avro { writer, reader } => Arc::new(InlineDecoder {
                writer: writer.clone(),
                reader: reader.clone(),
            }),
            Inner::Registry(format) => Arc::new(RegistryDecoder {
                registry: format.registry.clone(),
                reader: format.reader.clone(),
            }),
        }
    }

    /// The encoder for an output of this format. Every call on one spec
    /// (and its clones) returns the same registry encoder, so the subject
    /// is registered or looked up once.
    pub fn encoder(&self) -> Arc<dyn PayloadEncoder> {
        match &self.inner {
            Inner::Raw => Arc::new(json::RawCodec),
            Inner::Json => Arc::new(json::JsonCodec),
            Inner::Avro { writer, .. } => Arc::new(InlineEncoder {
                schema: writer.clone(),
            }),
            Inner::Registry(format) => format
                .encoder
                .get_or_init(|| {
                    Arc::new(RegistryEncoder::new(
                        format.registry.clone(),
                        format.subject.clone(),
                        format.schema.clone(),
                        format.auto_register,
                    ))
                })
                .clone(),
        }
    }
}

impl fmt::Debug for FormatSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Raw => f.write_str("FormatSpec::Raw"),
            Inner::Json => f.write_str("FormatSpec::Json"),
            Inner::Avro { writer, reader } => f
                .debug_struct("FormatSpec::Avro")
                .field("schema", writer)
                .field("reader_schema", reader)
                .finish(),
            Inner::Registry(format) => f
                .debug_struct("FormatSpec::AvroRegistry")
                .field("registry", &format.registry)
                .field("subject", &format.subject)
                .field("schema", &format.schema)
                .field("reader_schema", &format.reader)
                .field("auto_register", &format.auto_register)
                .finish(),
        }
    }
}
