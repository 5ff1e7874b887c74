//! JSON → Avro values, driven by the schema (the encoding half of the
//! mapping in the [module docs](super)).
//!
//! Guarantees: a value converts only if every part of it fits the schema,
//! and then apache-avro can write it; otherwise the [`Mismatch`] names the
//! place (`items[2].sku`) and what was expected. A missing record field
//! takes its schema default (or `null` if nullable); an undeclared key is
//! an error, so a misspelt field is not silently dropped. Unions take the
//! first branch, in schema order, that accepts the value.

use std::collections::HashMap;

use apache_avro::schema::{
    ArraySchema, DecimalSchema, EnumSchema, FixedSchema, InnerDecimalSchema, MapSchema, Names,
    RecordSchema, UnionSchema,
};
use apache_avro::types::Value;
use apache_avro::{Days, Duration, Millis, Months, Schema, Uuid};
use base64::Engine as _;
use serde_json::Value as Json;

use super::decimal;
use super::to_json::{named, schema_kind, write_string, BASE64};

/// Why a JSON value does not fit the schema, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mismatch {
    /// Path segments, innermost first (each level adds its own on the way out).
    path: Vec<String>,
    /// What is wrong.
    pub(crate) message: String,
}

impl Mismatch {
    fn new(message: impl Into<String>) -> Self {
        Self {
            path: Vec::new(),
            message: message.into(),
        }
    }

    fn at(mut self, segment: String) -> Self {
        self.path.push(segment);
        self
    }

    /// `items[2].sku`, or empty at the root.
    pub(crate) fn path(&self) -> String {
        let mut out = String::new();
        for segment in self.path.iter().rev() {
            if !segment.starts_with('[') && !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
        out
    }
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path();
        if path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "field `{path}`: {}", self.message)
        }
    }
}

/// Where a JSON value comes from: a payload, or a field default written
/// in the schema (where `bytes` are ISO-8859-1 strings, per the Avro spec).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Payload,
    Default,
}

/// Converts a JSON value into the Avro value `schema` describes.
pub(crate) fn json_to_avro(json: &Json, schema: &Schema, names: &Names) -> Result<Value, Mismatch> {
    convert(json, schema, names, Origin::Payload)
}

fn convert(json: &Json, schema: &Schema, names: &Names, origin: Origin) -> Result<Value, Mismatch> {
    let expected = |what: &str| Mismatch::new(format!("expected {what}, found {}", describe(json)));
    match schema {
        Schema::Ref { name } => convert(
            json,
            named(names, name).map_err(Mismatch::new)?,
            names,
            origin,
        ),
        Schema::Null => json
            .is_null()
            .then_some(Value::Null)
            .ok_or_else(|| expected("null")),
        Schema::Boolean => json
            .as_bool()
            .map(Value::Boolean)
            .ok_or_else(|| expected("a boolean")),
        Schema::Int => int(json)
            .map(Value::Int)
            .ok_or_else(|| expected("an int (32-bit integer)")),
        Schema::Long => json
            .as_i64()
            .map(Value::Long)
            .ok_or_else(|| expected("a long (64-bit integer)")),
        Schema::Float => float(json)
            .map(|f| Value::Float(f as f32))
            .ok_or_else(|| expected("a number (float)")),
        Schema::Double => float(json)
            .map(Value::Double)
            .ok_or_else(|| expected("a number (double)")),
        Schema::String => json
            .as_str()
            .map(|s| Value::String(s.to_owned()))
            .ok_or_else(|| expected("a string")),
        Schema::Bytes => bytes(json, origin).map(Value::Bytes),
        Schema::Fixed(fixed) => convert_fixed(json, fixed, origin),
        Schema::Enum(e) => convert_enum(json, e, &expected),
        Schema::Array(array) => convert_array(json, array, names, origin, &expected),
        Schema::Map(map) => convert_map(json, map, names, origin, &expected),
        Schema::Union(union) => convert_union(json, union, names, origin),
        Schema::Record(record) => convert_record(json, record, names, origin),
        Schema::Decimal(d) => convert_decimal(json, d, &expected),
        Schema::BigDecimal => convert_big_decimal(json, &expected),
        Schema::Uuid(_) => {
            let text = json.as_str().ok_or_else(|| expected("a UUID string"))?;
            Uuid::parse_str(text)
                .map(Value::Uuid)
                .map_err(|e| Mismatch::new(format!("`{text}` is not a UUID: {e}")))
        }
        Schema::Date => int(json)
            .map(Value::Date)
            .ok_or_else(|| expected("an int (days since the epoch)")),
        Schema::TimeMillis => int(json)
            .map(Value::TimeMillis)
            .ok_or_else(|| expected("an int (milliseconds after midnight)")),
        Schema::TimeMicros => {
            long(json, &expected, "microseconds after midnight").map(Value::TimeMicros)
        }
        Schema::TimestampMillis => {
            long(json, &expected, "milliseconds since the epoch").map(Value::TimestampMillis)
        }
        Schema::TimestampMicros => {
            long(json, &expected, "microseconds since the epoch").map(Value::TimestampMicros)
        }
        Schema::TimestampNanos => {
            long(json, &expected, "nanoseconds since the epoch").map(Value::TimestampNanos)
        }
        Schema::LocalTimestampMillis => {
            long(json, &expected, "milliseconds since the epoch").map(Value::LocalTimestampMillis)
        }
        Schema::LocalTimestampMicros => {
            long(json, &expected, "microseconds since the epoch").map(Value::LocalTimestampMicros)
        }
        Schema::LocalTimestampNanos => {
            long(json, &expected, "nanoseconds since the epoch").map(Value::LocalTimestampNanos)
        }
        Schema::Duration(_) => convert_duration(json, &expected),
    }
}

/// A `fixed`: bytes of exactly its size.
fn convert_fixed(json: &Json, fixed: &FixedSchema, origin: Origin) -> Result<Value, Mismatch> {
    let b = bytes(json, origin)?;
    if b.len() != fixed.size {
        return Err(Mismatch::new(format!(
            "fixed `{}` holds {} bytes, found {}",
            fixed.name,
            fixed.size,
            b.len()
        )));
    }
    Ok(Value::Fixed(fixed.size, b))
}

/// An `enum`: one of its symbols.
fn convert_enum(
    json: &Json,
    e: &EnumSchema,
    expected: &dyn Fn(&str) -> Mismatch,
) -> Result<Value, Mismatch> {
    let symbol = json
        .as_str()
        .ok_or_else(|| expected("a string (enum symbol)"))?;
    match e.symbols.iter().position(|s| s == symbol) {
        Some(at) => Ok(Value::Enum(at as u32, symbol.to_owned())),
        None => Err(Mismatch::new(format!(
            "`{symbol}` is not a symbol of enum `{}` ({})",
            e.name,
            e.symbols.join(", ")
        ))),
    }
}

/// An `array`, item by item.
fn convert_array(
    json: &Json,
    array: &ArraySchema,
    names: &Names,
    origin: Origin,
    expected: &dyn Fn(&str) -> Mismatch,
) -> Result<Value, Mismatch> {
    let items = json.as_array().ok_or_else(|| expected("an array"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            convert(item, &array.items, names, origin).map_err(|m| m.at(format!("[{i}]")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// A `map`, entry by entry.
fn convert_map(
    json: &Json,
    map: &MapSchema,
    names: &Names,
    origin: Origin,
    expected: &dyn Fn(&str) -> Mismatch,
) -> Result<Value, Mismatch> {
    let object = json
        .as_object()
        .ok_or_else(|| expected("an object (map)"))?;
    let mut out = HashMap::with_capacity(object.len());
    for (key, item) in object {
        let value = convert(item, &map.types, names, origin)
            .map_err(|m| m.at(format!("[{}]", quoted(key))))?;
        out.insert(key.clone(), value);
    }
    Ok(Value::Map(out))
}

/// A `decimal`: a string (or number) with at most `scale` decimals.
fn convert_decimal(
    json: &Json,
    d: &DecimalSchema,
    expected: &dyn Fn(&str) -> Mismatch,
) -> Result<Value, Mismatch> {
    let text = match json {
        Json::String(s) => s.clone(),
        Json::Number(n) => n.to_string(),
        _ => return Err(expected("a decimal string such as \"12.34\"")),
    };
    let bytes = decimal::from_text(&text, d.precision, d.scale).map_err(Mismatch::new)?;
    if let InnerDecimalSchema::Fixed(fixed) = &d.inner {
        if bytes.len() > fixed.size {
            return Err(Mismatch::new(format!(
                "`{text}` does not fit the decimal's {} bytes",
                fixed.size
            )));
        }
    }
    Ok(Value::Decimal(apache_avro::Decimal::from(bytes)))
}

/// A `big-decimal`: a decimal string (or number).
fn convert_big_decimal(
    json: &Json,
    expected: &dyn Fn(&str) -> Mismatch,
) -> Result<Value, Mismatch> {
    let text = match json {
        Json::String(s) => s.clone(),
        Json::Number(n) => n.to_string(),
        _ => return Err(expected("a decimal string such as \"12.34\"")),
    };
    text.parse::<apache_avro::BigDecimal>()
        .map(Value::BigDecimal)
        .map_err(|_| Mismatch::new(format!("`{text}` is not a decimal number")))
}

/// A `duration`: `{"months": m, "days": d, "millis": ms}`.
fn convert_duration(json: &Json, expected: &dyn Fn(&str) -> Mismatch) -> Result<Value, Mismatch> {
    let part = |key: &str| -> Result<u32, Mismatch> {
        json.get(key)
            .and_then(Json::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| expected(r#"a duration {"months": m, "days": d, "millis": ms}"#))
    };
    Ok(Value::Duration(Duration::new(
        Months::new(part("months")?),
        Days::new(part("days")?),
        Millis::new(part("millis")?),
    )))
}

fn int(json: &Json) -> Option<i32> {
    json.as_i64().and_then(|n| i32::try_from(n).ok())
}

fn long(json: &Json, expected: &dyn Fn(&str) -> Mismatch, unit: &str) -> Result<i64, Mismatch> {
    json.as_i64()
        .ok_or_else(|| expected(&format!("a long ({unit})")))
}

fn float(json: &Json) -> Option<f64> {
    match json {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

fn bytes(json: &Json, origin: Origin) -> Result<Vec<u8>, Mismatch> {
    let Some(text) = json.as_str() else {
        return Err(Mismatch::new(format!(
            "expected a base64 string (bytes), found {}",
            describe(json)
        )));
    };
    match origin {
        Origin::Payload => BASE64
            .decode(text)
            .map_err(|e| Mismatch::new(format!("not valid base64 (bytes): {e}"))),
        Origin::Default => text
            .chars()
            .map(|c| u8::try_from(u32::from(c)).ok())
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| Mismatch::new("a bytes default must hold only code points 0-255")),
    }
}

fn convert_union(
    json: &Json,
    union: &UnionSchema,
    names: &Names,
    origin: Origin,
) -> Result<Value, Mismatch> {
    let variants = union.variants();
    for (index, branch) in variants.iter().enumerate() {
        if !could_match(json, branch, names) {
            continue;
        }
        if let Ok(value) = convert(json, branch, names, origin) {
            return Ok(Value::Union(index as u32, Box::new(value)));
        }
    }
    // No branch fits: the error path, where the cost of asking every
    // branch why not does not matter.
    let non_null: Vec<_> = variants
        .iter()
        .filter(|branch| !matches!(branch, Schema::Null))
        .filter_map(|branch| {
            convert(json, branch, names, origin)
                .err()
                .map(|m| (branch, m))
        })
        .collect();
    match non_null.as_slice() {
        // A nullable field: say what the one real branch wanted.
        [(_, only)] => Err(only.clone()),
        _ => {
            let kinds: Vec<String> = variants.iter().map(schema_kind).collect();
            Err(Mismatch::new(format!(
                "{} matches no branch of the union [{}]",
                describe(json),
                kinds.join(", ")
            )))
        }
    }
}

/// Whether a JSON value of this kind can convert into `schema` at all, so
/// unions skip branches without building an error for each.
fn could_match(json: &Json, schema: &Schema, names: &Names) -> bool {
    let schema = match schema {
        Schema::Ref { name } => match names.get(name) {
            Some(named) => named,
            None => return true,
        },
        other => other,
    };
    match json {
        Json::Null => matches!(schema, Schema::Null),
        Json::Bool(_) => matches!(schema, Schema::Boolean),
        Json::Number(_) => matches!(
            schema,
            Schema::Int
                | Schema::Long
                | Schema::Float
                | Schema::Double
                | Schema::Decimal(_)
                | Schema::BigDecimal
                | Schema::Date
                | Schema::TimeMillis
                | Schema::TimeMicros
                | Schema::TimestampMillis
                | Schema::TimestampMicros
                | Schema::TimestampNanos
                | Schema::LocalTimestampMillis
                | Schema::LocalTimestampMicros
                | Schema::LocalTimestampNanos
        ),
        Json::String(_) => matches!(
            schema,
            Schema::String
                | Schema::Bytes
                | Schema::Fixed(_)
                | Schema::Enum(_)
                | Schema::Uuid(_)
                | Schema::Decimal(_)
                | Schema::BigDecimal
                | Schema::Float
                | Schema::Double
        ),
        Json::Array(_) => matches!(schema, Schema::Array(_)),
        Json::Object(_) => matches!(
            schema,
            Schema::Record(_) | Schema::Map(_) | Schema::Duration(_)
        ),
    }
}

fn convert_record(
    json: &Json,
    record: &RecordSchema,
    names: &Names,
    origin: Origin,
) -> Result<Value, Mismatch> {
    let Some(object) = json.as_object() else {
        return Err(Mismatch::new(format!(
            "expected an object (record `{}`), found {}",
            record.name,
            describe(json)
        )));
    };
    if let Some(unknown) = object.keys().find(|k| !record.lookup.contains_key(*k)) {
        let declared: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
        return Err(Mismatch::new(format!(
            "record `{}` has no such field (its fields: {})",
            record.name,
            declared.join(", ")
        ))
        .at(unknown.clone()));
    }
    let mut fields = Vec::with_capacity(record.fields.len());
    for field in &record.fields {
        let value = match (object.get(&field.name), &field.default) {
            (Some(value), _) => convert(value, &field.schema, names, origin),
            (None, Some(default)) => convert(default, &field.schema, names, Origin::Default),
            (None, None) if is_nullable(&field.schema) => {
                convert(&Json::Null, &field.schema, names, origin)
            }
            (None, None) => Err(Mismatch::new(format!(
                "missing (record `{}` requires it and the schema gives no default)",
                record.name
            ))),
        }
        .map_err(|m| m.at(field.name.clone()))?;
        fields.push((field.name.clone(), value));
    }
    Ok(Value::Record(fields))
}

fn is_nullable(schema: &Schema) -> bool {
    matches!(schema, Schema::Union(u) if u.variants().iter().any(|v| matches!(v, Schema::Null)))
}

fn quoted(key: &str) -> String {
    let mut out = String::new();
    write_string(&mut out, key);
    out
}

/// A short description of a JSON value for messages (no long contents).
fn describe(json: &Json) -> String {
    match json {
        Json::Null => "null".to_owned(),
        Json::Bool(b) => format!("boolean {b}"),
        Json::Number(n) => format!("number {n}"),
        Json::String(s) if s.chars().count() <= 32 => format!("string {}", quoted(s)),
        Json::String(_) => "a string".to_owned(),
        Json::Array(_) => "an array".to_owned(),
        Json::Object(_) => "an object".to_owned(),
    }
}
