//! JSON → Avro values, driven by the schema (the encoding half of the
//! mapping in the [module docs](super)).
//!
//! Guarantees: a value converts only if every part of it fits the schema,
//! and then apache-avro can write it; otherwise the [`Mismatch`] names the
//! place (`items[2].sku`) and what was expected. A missing record field
//! takes its schema default (or `null` if nullable); an undeclared key is
//! an error, so a misspelt field is not silently dropped. Unions take the
//! first branch, in schema order, that accepts the value.

use std::borrow::Cow;
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
use super::integral::Integral;
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

/// What every level of a conversion needs besides the value and its
/// schema: the schema's named types, and where the JSON comes from.
#[derive(Clone, Copy)]
struct Cx<'n> {
    names: &'n Names,
    origin: Origin,
}

/// Converts a JSON value into the Avro value `schema` describes.
pub(crate) fn json_to_avro(json: &Json, schema: &Schema, names: &Names) -> Result<Value, Mismatch> {
    let cx = Cx {
        names,
        origin: Origin::Payload,
    };
    convert(json, schema, cx)
}

fn convert(json: &Json, schema: &Schema, cx: Cx<'_>) -> Result<Value, Mismatch> {
    match schema {
        Schema::Ref { name } => convert(json, named(cx.names, name).map_err(Mismatch::new)?, cx),
        Schema::Null => json
            .is_null()
            .then_some(Value::Null)
            .ok_or_else(|| expected(json, "null")),
        Schema::Boolean => json
            .as_bool()
            .map(Value::Boolean)
            .ok_or_else(|| expected(json, "a boolean")),
        Schema::Float => float(json)
            .map(|f| Value::Float(f as f32))
            .ok_or_else(|| expected(json, "a number (float)")),
        Schema::Double => float(json)
            .map(Value::Double)
            .ok_or_else(|| expected(json, "a number (double)")),
        Schema::String => json
            .as_str()
            .map(|s| Value::String(s.to_owned()))
            .ok_or_else(|| expected(json, "a string")),
        Schema::Bytes => bytes(json, cx.origin).map(Value::Bytes),
        Schema::Fixed(fixed) => convert_fixed(json, fixed, cx.origin),
        Schema::Enum(e) => convert_enum(json, e),
        Schema::Array(array) => convert_array(json, array, cx),
        Schema::Map(map) => convert_map(json, map, cx),
        Schema::Union(union) => convert_union(json, union, cx),
        Schema::Record(record) => convert_record(json, record, cx),
        Schema::Decimal(d) => convert_decimal(json, d),
        Schema::BigDecimal => convert_big_decimal(json),
        Schema::Uuid(_) => {
            let text = json
                .as_str()
                .ok_or_else(|| expected(json, "a UUID string"))?;
            Uuid::parse_str(text)
                .map(Value::Uuid)
                .map_err(|e| Mismatch::new(format!("`{text}` is not a UUID: {e}")))
        }
        Schema::Duration(_) => convert_duration(json),
        other => match Integral::of(other) {
            Some(integral) => integral
                .value(json.as_i64())
                .map_err(|what| expected(json, &what)),
            None => Err(Mismatch::new(format!(
                "schema type {} is not supported",
                schema_kind(other)
            ))),
        },
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
fn convert_enum(json: &Json, e: &EnumSchema) -> Result<Value, Mismatch> {
    let symbol = json
        .as_str()
        .ok_or_else(|| expected(json, "a string (enum symbol)"))?;
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
fn convert_array(json: &Json, array: &ArraySchema, cx: Cx<'_>) -> Result<Value, Mismatch> {
    let items = json.as_array().ok_or_else(|| expected(json, "an array"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| convert(item, &array.items, cx).map_err(|m| m.at(format!("[{i}]"))))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// A `map`, entry by entry.
fn convert_map(json: &Json, map: &MapSchema, cx: Cx<'_>) -> Result<Value, Mismatch> {
    let object = json
        .as_object()
        .ok_or_else(|| expected(json, "an object (map)"))?;
    let mut out = HashMap::with_capacity(object.len());
    for (key, item) in object {
        let value =
            convert(item, &map.types, cx).map_err(|m| m.at(format!("[{}]", quoted(key))))?;
        out.insert(key.clone(), value);
    }
    Ok(Value::Map(out))
}

/// A `decimal`: a string (or number) with at most `scale` decimals.
fn convert_decimal(json: &Json, d: &DecimalSchema) -> Result<Value, Mismatch> {
    let text = decimal_text(json)?;
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
fn convert_big_decimal(json: &Json) -> Result<Value, Mismatch> {
    let text = decimal_text(json)?;
    text.parse::<apache_avro::BigDecimal>()
        .map(Value::BigDecimal)
        .map_err(|_| Mismatch::new(format!("`{text}` is not a decimal number")))
}

/// The text of a decimal written as a string or a number.
fn decimal_text<'j>(json: &'j Json) -> Result<Cow<'j, str>, Mismatch> {
    match json {
        Json::String(s) => Ok(Cow::Borrowed(s)),
        Json::Number(n) => Ok(Cow::Owned(n.to_string())),
        _ => Err(expected(json, "a decimal string such as \"12.34\"")),
    }
}

/// A `duration`: `{"months": m, "days": d, "millis": ms}`.
fn convert_duration(json: &Json) -> Result<Value, Mismatch> {
    let part = |key: &str| -> Result<u32, Mismatch> {
        json.get(key)
            .and_then(Json::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| expected(json, r#"a duration {"months": m, "days": d, "millis": ms}"#))
    };
    Ok(Value::Duration(Duration::new(
        Months::new(part("months")?),
        Days::new(part("days")?),
        Millis::new(part("millis")?),
    )))
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
    let text = json
        .as_str()
        .ok_or_else(|| expected(json, "a base64 string (bytes)"))?;
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

fn convert_union(json: &Json, union: &UnionSchema, cx: Cx<'_>) -> Result<Value, Mismatch> {
    let variants = union.variants();
    for (index, branch) in variants.iter().enumerate() {
        if !could_match(json, branch, cx.names) {
            continue;
        }
        if let Ok(value) = convert(json, branch, cx) {
            return Ok(Value::Union(index as u32, Box::new(value)));
        }
    }
    // No branch fits: the error path, where the cost of asking every
    // branch why not does not matter.
    let non_null: Vec<_> = variants
        .iter()
        .filter(|branch| !matches!(branch, Schema::Null))
        .filter_map(|branch| convert(json, branch, cx).err().map(|m| (branch, m)))
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
        Json::Number(_) => {
            Integral::of(schema).is_some()
                || matches!(
                    schema,
                    Schema::Float | Schema::Double | Schema::Decimal(_) | Schema::BigDecimal
                )
        }
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

fn convert_record(json: &Json, record: &RecordSchema, cx: Cx<'_>) -> Result<Value, Mismatch> {
    let object = json
        .as_object()
        .ok_or_else(|| expected(json, &format!("an object (record `{}`)", record.name)))?;
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
            (Some(value), _) => convert(value, &field.schema, cx),
            (None, Some(default)) => convert(
                default,
                &field.schema,
                Cx {
                    origin: Origin::Default,
                    ..cx
                },
            ),
            (None, None) if is_nullable(&field.schema) => convert(&Json::Null, &field.schema, cx),
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

/// `expected {what}, found {json described}`.
fn expected(json: &Json, what: &str) -> Mismatch {
    Mismatch::new(format!("expected {what}, found {}", describe(json)))
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
