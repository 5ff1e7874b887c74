//! Avro values → JSON text, driven by the schema (the decoding half of
//! the mapping in the [module docs](super)).
//!
//! Guarantees: the output is one well-formed JSON value; records keep the
//! schema's field order and map keys are sorted, so the same datum always
//! gives the same bytes; unions are written untagged; a value that
//! apache-avro decoded with a schema never fails to convert with it.

use std::collections::HashMap;
use std::fmt::Write as _;

use apache_avro::schema::{ArraySchema, DecimalSchema, MapSchema, Name, Names, RecordSchema};
use apache_avro::types::Value;
use apache_avro::Schema;
use base64::Engine as _;

use super::decimal;

/// Standard base64 with padding, for `bytes` and `fixed`.
pub(crate) const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Looks a named type up; references are fully qualified by the parser.
pub(crate) fn named<'s>(names: &'s Names, name: &Name) -> Result<&'s Schema, String> {
    names
        .get(name)
        .ok_or_else(|| format!("the schema refers to `{name}`, which it does not define"))
}

/// Writes `value` (which conforms to `schema`) as JSON text into `out`.
pub(crate) fn avro_to_json(
    value: &Value,
    schema: &Schema,
    names: &Names,
    out: &mut String,
) -> Result<(), String> {
    if let Schema::Ref { name } = schema {
        return avro_to_json(value, named(names, name)?, names, out);
    }
    match (value, schema) {
        (Value::Union(index, inner), Schema::Union(union)) => {
            let branch = union
                .variants()
                .get(*index as usize)
                .ok_or_else(|| format!("union branch {index} does not exist"))?;
            avro_to_json(inner, branch, names, out)
        }
        (Value::Null, _) => {
            out.push_str("null");
            Ok(())
        }
        (Value::Boolean(b), _) => {
            out.push_str(if *b { "true" } else { "false" });
            Ok(())
        }
        (Value::Int(n) | Value::Date(n) | Value::TimeMillis(n), _) => write_display(out, n),
        (
            Value::Long(n)
            | Value::TimeMicros(n)
            | Value::TimestampMillis(n)
            | Value::TimestampMicros(n)
            | Value::TimestampNanos(n)
            | Value::LocalTimestampMillis(n)
            | Value::LocalTimestampMicros(n)
            | Value::LocalTimestampNanos(n),
            _,
        ) => write_display(out, n),
        (Value::Float(f), _) => write_float(out, f64::from(*f), || format!("{f:?}")),
        (Value::Double(f), _) => write_float(out, *f, || format!("{f:?}")),
        (Value::Bytes(b) | Value::Fixed(_, b), _) => {
            out.push('"');
            BASE64.encode_string(b, out);
            out.push('"');
            Ok(())
        }
        (Value::String(s) | Value::Enum(_, s), _) => {
            write_string(out, s);
            Ok(())
        }
        (Value::Array(items), Schema::Array(array)) => write_array(items, array, names, out),
        (Value::Map(entries), Schema::Map(map)) => write_map(entries, map, names, out),
        (Value::Record(fields), Schema::Record(record)) => write_record(fields, record, names, out),
        (Value::Decimal(d), Schema::Decimal(DecimalSchema { scale, .. })) => {
            let bytes = Vec::<u8>::try_from(d).map_err(|e| e.to_string())?;
            write_string(out, &decimal::to_string(&bytes, *scale));
            Ok(())
        }
        (Value::BigDecimal(d), _) => {
            write_string(out, &d.to_string());
            Ok(())
        }
        (Value::Uuid(u), _) => {
            write_string(out, &u.to_string());
            Ok(())
        }
        (Value::Duration(d), _) => {
            let _ = write!(
                out,
                r#"{{"months":{},"days":{},"millis":{}}}"#,
                u32::from(d.months()),
                u32::from(d.days()),
                u32::from(d.millis())
            );
            Ok(())
        }
        (value, schema) => Err(format!(
            "decoded value {} does not fit schema {}",
            value_kind(value),
            schema_kind(schema)
        )),
    }
}

/// An array, item by item.
fn write_array(
    items: &[Value],
    array: &ArraySchema,
    names: &Names,
    out: &mut String,
) -> Result<(), String> {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        avro_to_json(item, &array.items, names, out)?;
    }
    out.push(']');
    Ok(())
}

/// A map as an object, keys sorted.
fn write_map(
    entries: &HashMap<String, Value>,
    map: &MapSchema,
    names: &Names,
    out: &mut String,
) -> Result<(), String> {
    let mut keys: Vec<&String> = entries.keys().collect();
    keys.sort_unstable();
    out.push('{');
    for (i, key) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, key);
        out.push(':');
        avro_to_json(&entries[key], &map.types, names, out)?;
    }
    out.push('}');
    Ok(())
}

/// A record as an object, fields in schema order.
fn write_record(
    fields: &[(String, Value)],
    record: &RecordSchema,
    names: &Names,
    out: &mut String,
) -> Result<(), String> {
    out.push('{');
    for (i, (name, field_value)) in fields.iter().enumerate() {
        let field = match record.fields.get(i) {
            Some(f) if &f.name == name => f,
            _ => record
                .lookup
                .get(name)
                .and_then(|&at| record.fields.get(at))
                .ok_or_else(|| format!("record `{}` has no field `{name}`", record.name))?,
        };
        if i > 0 {
            out.push(',');
        }
        write_string(out, name);
        out.push(':');
        avro_to_json(field_value, &field.schema, names, out)?;
    }
    out.push('}');
    Ok(())
}

fn write_display(out: &mut String, n: &dyn std::fmt::Display) -> Result<(), String> {
    let _ = write!(out, "{n}");
    Ok(())
}

fn write_float(out: &mut String, f: f64, text: impl FnOnce() -> String) -> Result<(), String> {
    if f.is_nan() {
        out.push_str("\"NaN\"");
    } else if f == f64::INFINITY {
        out.push_str("\"Infinity\"");
    } else if f == f64::NEG_INFINITY {
        out.push_str("\"-Infinity\"");
    } else {
        // `{:?}` is the shortest text that reads back to the same float,
        // with an exponent for very large and very small magnitudes.
        out.push_str(&text());
    }
    Ok(())
}

/// Appends `s` as a JSON string literal.
pub(crate) fn write_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push_str(escape);
        }
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
    out.push('"');
}

fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Boolean(_) => "boolean",
        Value::Int(_) => "int",
        Value::Long(_) => "long",
        Value::Float(_) => "float",
        Value::Double(_) => "double",
        Value::Bytes(_) => "bytes",
        Value::String(_) => "string",
        Value::Fixed(..) => "fixed",
        Value::Enum(..) => "enum",
        Value::Union(..) => "union",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        Value::Record(_) => "record",
        _ => "logical value",
    }
}

pub(crate) fn schema_kind(schema: &Schema) -> String {
    match schema {
        Schema::Record(r) => format!("record {}", r.name),
        Schema::Enum(e) => format!("enum {}", e.name),
        Schema::Fixed(f) => format!("fixed {}", f.name),
        Schema::Ref { name } => name.to_string(),
        other => format!("{:?}", apache_avro::schema::SchemaKind::from(other)).to_lowercase(),
    }
}
