//! Avro payloads: bare datums with an inline schema, and the Confluent
//! Schema Registry wire format.
//!
//! The wire format is byte `0x00` (the magic byte), the writer schema's id
//! as a 4-byte big-endian integer, then the Avro binary datum. Guarantees:
//!
//! - a payload decodes only if the whole of it is one datum of the writer
//!   schema: bad magic byte, short header, truncation, and bytes left over
//!   after the datum are all permanent errors that carry the schema id
//!   once it was read;
//! - with a reader schema the datum is resolved into it (Avro schema
//!   resolution: defaults fill added fields, removed fields are skipped);
//! - only registry unavailability is retryable; an id the registry does not
//!   know is a permanent error naming the id;
//! - an output encodes with one schema id per encoder, registered or looked
//!   up on its first event and cached from then on;
//! - payload bytes cannot drive unbounded work: under a recursive schema (a
//!   named type that contains itself) a datum nesting deeper than
//!   [`MAX_AVRO_DEPTH`](super::avro_depth::MAX_AVRO_DEPTH) is a permanent decode error found before decoding
//!   (see [`super::avro_depth`]), and the memory one datum may make
//!   apache-avro allocate for its arrays, maps, strings and bytes is
//!   [`MAX_AVRO_ALLOCATION`] (block counts are checked against it before
//!   allocating).

use std::fmt;
use std::sync::Arc;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::{Names, ResolvedSchema};
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::OnceCell;

use super::avro_depth::{check_depth, recursive_type};
use super::from_json::json_to_avro;
use super::registry::{RegistryError, SchemaRegistry};
use super::to_json::avro_to_json;
use super::{DecodeError, Decoded, EncodeError, PayloadDecoder, PayloadEncoder, SchemaError};

/// The magic byte that starts every Confluent-framed payload.
pub(crate) const MAGIC_BYTE: u8 = 0;
/// Magic byte plus schema id.
pub(crate) const HEADER_LEN: usize = 5;

/// Most bytes decoding one datum may allocate for a collection, a string or
/// bytes (apache-avro's process-wide `max_allocation_bytes`, set before the
/// first schema is used).
pub const MAX_AVRO_ALLOCATION: usize = 64 << 20;

/// A parsed Avro schema, its named types by full name, and its JSON text.
pub(crate) struct AvroSchema {
    text: String,
    schema: Schema,
    names: Names,
    /// Whether a named type contains itself (datums are depth-checked).
    recursive: bool,
}

impl AvroSchema {
    /// Parses schema JSON; the error is apache-avro's message.
    pub(crate) fn parse(text: &str) -> Result<Self, SchemaError> {
        apache_avro::util::max_allocation_bytes(MAX_AVRO_ALLOCATION);
        let schema = Schema::parse_str(text).map_err(|e| SchemaError(e.to_string()))?;
        let names: Names = ResolvedSchema::new(&schema)
            .map_err(|e| SchemaError(e.to_string()))?
            .get_names()
            .iter()
            .map(|(name, named)| (name.clone(), (*named).clone()))
            .collect();
        let recursive = recursive_type(&schema, &names).is_some();
        Ok(Self {
            text: text.to_owned(),
            schema,
            names,
            recursive,
        })
    }

    pub(crate) fn schema(&self) -> &Schema {
        &self.schema
    }

    fn names(&self) -> &Names {
        &self.names
    }

    /// The schema JSON as written, for registering it.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for AvroSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.schema().name() {
            Some(name) => write!(f, "AvroSchema({name})"),
            None => write!(f, "AvroSchema({})", self.schema().canonical_form()),
        }
    }
}

/// Checks that data written with `writer` can be read as `reader`.
pub(crate) fn check_compatible(
    writer: &AvroSchema,
    reader: &AvroSchema,
) -> Result<(), SchemaError> {
    SchemaCompatibility::can_read(writer.schema(), reader.schema())
        .map(|_| ())
        .map_err(|e| {
            SchemaError(format!(
                "the reader schema cannot read the writer schema: {e}"
            ))
        })
}

/// Decodes one whole datum written with `writer` (resolved into `reader`
/// if given) into JSON text.
pub(crate) fn decode_datum(
    writer: &AvroSchema,
    reader: Option<&AvroSchema>,
    datum: &[u8],
) -> Result<String, String> {
    if !writer.recursive {
        return decode_here(writer, reader, datum);
    }
    check_depth(writer.schema(), writer.names(), datum)
        .map_err(|why| format!("not a valid Avro datum: {why}"))?;
    // apache-avro's decoder takes tens of KiB of stack per level in a debug
    // build: decode nested datums on a stack made for them.
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("spate-avro-decode".to_owned())
            .stack_size(RECURSIVE_DECODE_STACK)
            .spawn_scoped(scope, || decode_here(writer, reader, datum))
            .map_err(|e| format!("cannot start the Avro decoding thread: {e}"))?
            .join()
            .unwrap_or_else(|_| Err("the Avro decoder panicked".to_owned()))
    })
}

/// The stack of the thread that decodes a datum of a recursive schema:
/// room for [`MAX_AVRO_DEPTH`](super::avro_depth::MAX_AVRO_DEPTH) levels
/// of decoding and conversion (reserved, committed as used).
const RECURSIVE_DECODE_STACK: usize = 64 << 20;

fn decode_here(
    writer: &AvroSchema,
    reader: Option<&AvroSchema>,
    datum: &[u8],
) -> Result<String, String> {
    let datum_reader = GenericDatumReader::builder(writer.schema())
        .maybe_reader_schema(reader.map(AvroSchema::schema))
        .build()
        .map_err(|e| format!("cannot read with this schema: {e}"))?;
    let mut input = datum;
    let value = datum_reader.read_value(&mut input).map_err(|e| {
        // On the failure path only: tell a reader/writer mismatch from a
        // corrupt datum.
        match reader.map(|r| check_compatible(writer, r)) {
            Some(Err(SchemaError(why))) => why,
            _ => format!("not a valid Avro datum: {e}"),
        }
    })?;
    if !input.is_empty() {
        return Err(format!(
            "not a valid Avro datum: {} bytes left over after the datum",
            input.len()
        ));
    }
    let target = reader.unwrap_or(writer);
    let mut json = String::with_capacity(datum.len() * 2 + 16);
    avro_to_json(&value, target.schema(), target.names(), &mut json)?;
    Ok(json)
}

/// Encodes a JSON payload as a datum of `schema`, appending to `out`.
/// Under a recursive schema the JSON (at most 128 levels, `serde_json`'s
/// limit) is converted and written on a thread with a stack made for it.
pub(crate) fn encode_datum(
    schema: &AvroSchema,
    json: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    if !schema.recursive {
        return encode_here(schema, json, out);
    }
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("spate-avro-encode".to_owned())
            .stack_size(RECURSIVE_DECODE_STACK)
            .spawn_scoped(scope, || encode_here(schema, json, out))
            .map_err(|e| EncodeError {
                retryable: true,
                message: format!("cannot start the Avro encoding thread: {e}"),
                field: None,
            })?
            .join()
            .unwrap_or_else(|_| {
                Err(EncodeError::permanent(
                    "the Avro encoder panicked".to_owned(),
                ))
            })
    })
}

fn encode_here(schema: &AvroSchema, json: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let value: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| EncodeError::permanent(format!("output payload is not JSON: {e}")))?;
    let avro = json_to_avro(&value, schema.schema(), schema.names()).map_err(|m| {
        let path = m.path();
        EncodeError {
            retryable: false,
            message: format!("output does not match the Avro schema: {m}"),
            field: (!path.is_empty()).then_some(path),
        }
    })?;
    let writer = GenericDatumWriter::builder(schema.schema())
        .build()
        .map_err(|e| EncodeError::permanent(format!("cannot write with this schema: {e}")))?;
    writer
        .write_value_ref(out, &avro)
        .map(|_| ())
        .map_err(|e| EncodeError::permanent(format!("output does not match the Avro schema: {e}")))
}

/// Where a decoder finds the writer schema of a payload.
#[derive(Debug)]
pub(crate) enum WriterSchema {
    /// One inline schema: every payload is a bare datum of it.
    Inline(Arc<AvroSchema>),
    /// The registry, by the schema id in each payload's Confluent header.
    Registry(Arc<SchemaRegistry>),
}

/// `format: avro`, decoding.
#[derive(Debug)]
pub(crate) struct AvroDecoder {
    pub(crate) writer: WriterSchema,
    pub(crate) reader: Option<Arc<AvroSchema>>,
}

#[async_trait]
impl PayloadDecoder for AvroDecoder {
    async fn decode(&self, payload: &Bytes) -> Result<Decoded, DecodeError> {
        let reader = self.reader.as_deref();
        let (json, schema_id) = match &self.writer {
            WriterSchema::Inline(writer) => {
                let json = decode_datum(writer, reader, payload)
                    .map_err(|m| DecodeError::permanent(m, None))?;
                (json, None)
            }
            WriterSchema::Registry(registry) => {
                let (id, datum) = split_frame(payload)?;
                let writer = registry
                    .schema_by_id(id)
                    .await
                    .map_err(|e| decode_registry_error(e, id))?;
                let json = decode_datum(writer.schema(), reader, datum).map_err(|m| {
                    DecodeError::permanent(format!("schema id {id}: {m}"), Some(id))
                })?;
                (json, Some(id))
            }
        };
        Ok(Decoded {
            payload: Bytes::from(json),
            schema_id,
        })
    }
}

/// `format: avro` with an inline schema, encoding.
#[derive(Debug)]
pub(crate) struct InlineEncoder {
    pub(crate) schema: Arc<AvroSchema>,
}

#[async_trait]
impl PayloadEncoder for InlineEncoder {
    async fn encode(&self, json: &Bytes) -> Result<Bytes, EncodeError> {
        let mut out = Vec::with_capacity(json.len());
        encode_datum(&self.schema, json, &mut out)?;
        Ok(Bytes::from(out))
    }
}

/// Splits a Confluent-framed payload into schema id and datum.
pub(crate) fn split_frame(payload: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    let Some((&magic, rest)) = payload.split_first() else {
        return Err(DecodeError::permanent(
            "empty payload: the Confluent wire format needs a magic byte and a 4-byte schema id",
            None,
        ));
    };
    if magic != MAGIC_BYTE {
        return Err(DecodeError::permanent(
            format!(
                "magic byte is 0x{magic:02x}, expected 0x00: not in the Confluent Schema Registry wire format"
            ),
            None,
        ));
    }
    let Some((id, datum)) = rest.split_first_chunk::<4>() else {
        return Err(DecodeError::permanent(
            format!(
                "truncated payload: {} bytes, the Confluent wire format header alone is {HEADER_LEN}",
                payload.len()
            ),
            None,
        ));
    };
    Ok((u32::from_be_bytes(*id), datum))
}

fn decode_registry_error(error: RegistryError, id: u32) -> DecodeError {
    DecodeError {
        retryable: error.is_retryable(),
        message: error.to_string(),
        schema_id: Some(id),
    }
}

fn encode_registry_error(error: RegistryError) -> EncodeError {
    EncodeError {
        retryable: error.is_retryable(),
        message: error.to_string(),
        field: None,
    }
}

/// `format: avro` with `schema_registry`, encoding.
pub(crate) struct RegistryEncoder {
    registry: Arc<SchemaRegistry>,
    subject: Option<String>,
    schema: Option<Arc<AvroSchema>>,
    auto_register: bool,
    /// The id and schema every event is written with, once known.
    target: OnceCell<(u32, Arc<AvroSchema>)>,
}

impl RegistryEncoder {
    pub(crate) fn new(
        registry: Arc<SchemaRegistry>,
        subject: Option<String>,
        schema: Option<Arc<AvroSchema>>,
        auto_register: bool,
    ) -> Self {
        Self {
            registry,
            subject,
            schema,
            auto_register,
            target: OnceCell::new(),
        }
    }

    /// Registers or looks up the schema (or takes the subject's latest);
    /// a failure leaves the cell empty so the next event tries again.
    async fn target(&self) -> Result<&(u32, Arc<AvroSchema>), EncodeError> {
        if let Some(target) = self.target.get() {
            return Ok(target);
        }
        // Boxed: the registry futures are large, and the steady state
        // (above) should not carry them in every event's future.
        Box::pin(self.target.get_or_try_init(|| async {
            let Some(subject) = self.subject.as_deref() else {
                return Err(EncodeError::permanent(
                    "encoding through the schema registry needs `schema_registry.subject`",
                ));
            };
            match &self.schema {
                Some(schema) => {
                    let id = if self.auto_register {
                        self.registry.register(subject, schema.text()).await
                    } else {
                        self.registry.lookup(subject, schema.text()).await
                    }
                    .map_err(encode_registry_error)?;
                    Ok((id, schema.clone()))
                }
                None => {
                    let latest = self
                        .registry
                        .latest(subject)
                        .await
                        .map_err(encode_registry_error)?;
                    Ok((latest.id(), latest.schema_arc()))
                }
            }
        }))
        .await
    }
}

impl fmt::Debug for RegistryEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryEncoder")
            .field("subject", &self.subject)
            .field("schema", &self.schema)
            .field("auto_register", &self.auto_register)
            .field("schema_id", &self.target.get().map(|(id, _)| *id))
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl PayloadEncoder for RegistryEncoder {
    async fn encode(&self, json: &Bytes) -> Result<Bytes, EncodeError> {
        let (id, schema) = self.target().await?;
        let mut out = Vec::with_capacity(json.len() + HEADER_LEN);
        out.push(MAGIC_BYTE);
        out.extend_from_slice(&id.to_be_bytes());
        encode_datum(schema, json, &mut out)?;
        Ok(Bytes::from(out))
    }
}

/// Frames an Avro datum in the Confluent wire format: magic byte `0x00`,
/// the schema id big-endian, the datum.
pub fn confluent_frame(schema_id: u32, datum: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(datum.len() + HEADER_LEN);
    out.put_u8(MAGIC_BYTE);
    out.put_u32(schema_id);
    out.put_slice(datum);
    out.freeze()
}
