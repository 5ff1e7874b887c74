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
//! Read by [`read_format`] from an input's or output's own mapping (each
//! format through its [`FormatFactory`]; [`formats()`] lists them in the
//! order the binary registers them):
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
mod integral;
mod json;
pub mod registry;
#[cfg(test)]
mod tests;
mod to_json;

use std::fmt;
use std::sync::Arc;

pub use avro::confluent_frame;
pub use config::{AvroFactory, JsonFactory, RawFactory};
pub use registry::{RegistryConfig, RegistryError, RegistrySchema, SchemaRegistry};

pub use spate_connector::codec::{
    DecodeError, Decoded, EncodeError, PayloadDecoder, PayloadEncoder, SCHEMA_ID_HEADER,
};
use spate_connector::format::RawFormat;
pub use spate_connector::format::{Format, FormatFactory, FormatRole};
use spate_connector::ConfigReader;

use avro::{AvroDecoder, AvroSchema, InlineEncoder, RegistryEncoder, WriterSchema};

/// Every format this crate provides, in the order error messages list
/// them: `raw`, `json`, `avro`.
pub fn formats() -> Vec<Arc<dyn FormatFactory>> {
    vec![
        Arc::new(RawFactory),
        Arc::new(JsonFactory),
        Arc::new(AvroFactory),
    ]
}

/// Reads `format`, `schema` / `schema_file`, `reader_schema` /
/// `reader_schema_file` and `schema_registry` from a connector's mapping
/// (see the [crate docs](crate) for their meaning) with this crate's
/// [`formats()`]. `None` when something is wrong; the problems are
/// recorded in the reader's error list. Without any of these keys the
/// format is `raw`.
pub fn read_format(config: &mut ConfigReader<'_>, role: FormatRole) -> Option<FormatSpec> {
    spate_connector::format::read_format(config, role, &formats()).map(FormatSpec)
}

/// An Avro schema that does not parse, or a reader schema that cannot read
/// what the writer schema wrote; the text is apache-avro's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(pub String);

/// A format as written in a pipeline file, validated. Cloning is cheap;
/// clones share their registry client and its caches.
#[derive(Clone)]
pub struct FormatSpec(Arc<dyn Format>);

/// `format: json`: validated both ways and otherwise untouched.
#[derive(Clone, Copy)]
pub(crate) struct JsonFormat;

impl fmt::Debug for JsonFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FormatSpec::Json")
    }
}

impl Format for JsonFormat {
    fn name(&self) -> &'static str {
        "json"
    }

    fn decoder(&self) -> Arc<dyn PayloadDecoder> {
        Arc::new(json::JsonCodec)
    }

    fn encoder(&self) -> Arc<dyn PayloadEncoder> {
        Arc::new(json::JsonCodec)
    }
}

/// `format: avro`: the writer schema inline or from a registry, and
/// maybe a reader schema. Its clones share the registry client and its
/// caches.
pub(crate) struct AvroFormat {
    writer: AvroWriter,
    reader: Option<Arc<AvroSchema>>,
}

/// Where an Avro format's writer schema comes from.
enum AvroWriter {
    /// Written inline; payloads are bare datums.
    Inline(Arc<AvroSchema>),
    /// A schema registry; payloads are in the Confluent wire format.
    Registry {
        registry: Arc<SchemaRegistry>,
        subject: Option<String>,
        schema: Option<Arc<AvroSchema>>,
        auto_register: bool,
        /// One encoder per spec, so its (subject → id) lookup happens once.
        encoder: std::sync::OnceLock<Arc<RegistryEncoder>>,
    },
}

impl AvroFormat {
    /// With an inline writer schema.
    pub(crate) fn inline(writer: AvroSchema, reader: Option<AvroSchema>) -> Self {
        Self {
            writer: AvroWriter::Inline(Arc::new(writer)),
            reader: reader.map(Arc::new),
        }
    }

    /// Through `registry`; see [`RegistryOptions`] for the rest.
    pub(crate) fn registry(
        registry: Arc<SchemaRegistry>,
        subject: Option<String>,
        schema: Option<AvroSchema>,
        reader: Option<AvroSchema>,
        auto_register: bool,
    ) -> Self {
        Self {
            writer: AvroWriter::Registry {
                registry,
                subject,
                schema: schema.map(Arc::new),
                auto_register,
                encoder: std::sync::OnceLock::new(),
            },
            reader: reader.map(Arc::new),
        }
    }
}

impl Format for AvroFormat {
    fn name(&self) -> &'static str {
        "avro"
    }

    fn decoder(&self) -> Arc<dyn PayloadDecoder> {
        let writer = match &self.writer {
            AvroWriter::Inline(schema) => WriterSchema::Inline(schema.clone()),
            AvroWriter::Registry { registry, .. } => WriterSchema::Registry(registry.clone()),
        };
        Arc::new(AvroDecoder {
            writer,
            reader: self.reader.clone(),
        })
    }

    /// With a registry, every call on one format (and its clones) returns
    /// the same encoder, so the subject is registered or looked up once.
    fn encoder(&self) -> Arc<dyn PayloadEncoder> {
        match &self.writer {
            AvroWriter::Inline(schema) => Arc::new(InlineEncoder {
                schema: schema.clone(),
            }),
            AvroWriter::Registry {
                registry,
                subject,
                schema,
                auto_register,
                encoder,
            } => encoder
                .get_or_init(|| {
                    Arc::new(RegistryEncoder::new(
                        registry.clone(),
                        subject.clone(),
                        schema.clone(),
                        *auto_register,
                    ))
                })
                .clone(),
        }
    }
}

impl fmt::Debug for AvroFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.writer {
            AvroWriter::Inline(schema) => f
                .debug_struct("FormatSpec::Avro")
                .field("schema", schema)
                .field("reader_schema", &self.reader)
                .finish(),
            AvroWriter::Registry {
                registry,
                subject,
                schema,
                auto_register,
                ..
            } => f
                .debug_struct("FormatSpec::AvroRegistry")
                .field("registry", registry)
                .field("subject", subject)
                .field("schema", schema)
                .field("reader_schema", &self.reader)
                .field("auto_register", auto_register)
                .finish(),
        }
    }
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
        Self(Arc::new(RawFormat))
    }

    /// JSON, validated both ways and otherwise untouched.
    pub fn json() -> Self {
        Self(Arc::new(JsonFormat))
    }

    /// Avro datums without framing, written with `schema`; decoded into
    /// `reader_schema` when given.
    pub fn avro(schema: &str, reader_schema: Option<&str>) -> Result<Self, SchemaError> {
        let writer = AvroSchema::parse(schema)?;
        let reader = match reader_schema {
            Some(text) => {
                let reader = AvroSchema::parse(text)?;
                avro::check_compatible(&writer, &reader)?;
                Some(reader)
            }
            None => None,
        };
        Ok(Self(Arc::new(AvroFormat::inline(writer, reader))))
    }

    /// Avro in the Confluent wire format through `registry`.
    pub fn avro_registry(
        registry: Arc<SchemaRegistry>,
        options: RegistryOptions,
    ) -> Result<Self, SchemaError> {
        let parse = |text: Option<&String>| -> Result<Option<AvroSchema>, SchemaError> {
            text.map(|t| AvroSchema::parse(t)).transpose()
        };
        Ok(Self(Arc::new(AvroFormat::registry(
            registry,
            options.subject,
            parse(options.schema.as_ref())?,
            parse(options.reader_schema.as_ref())?,
            options.auto_register,
        ))))
    }

    /// `raw`, `json` or `avro`.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// True for `raw`, where decoding and encoding do nothing.
    pub fn is_raw(&self) -> bool {
        self.0.is_raw()
    }

    /// The decoder for an input of this format.
    pub fn decoder(&self) -> Arc<dyn PayloadDecoder> {
        self.0.decoder()
    }

    /// The encoder for an output of this format. Every call on one spec
    /// (and its clones) returns the same registry encoder, so the subject
    /// is registered or looked up once.
    pub fn encoder(&self) -> Arc<dyn PayloadEncoder> {
        self.0.encoder()
    }

    /// The format as the loader and the engine hold it.
    pub fn into_format(self) -> Arc<dyn Format> {
        self.0
    }
}

impl From<FormatSpec> for Arc<dyn Format> {
    fn from(spec: FormatSpec) -> Self {
        spec.0
    }
}

impl fmt::Debug for FormatSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_raw() {
            f.write_str("FormatSpec::Raw")
        } else {
            fmt::Debug::fmt(&*self.0, f)
        }
    }
}
