//! Turning a record into a row: each mapped field read from the record and
//! checked against its column's type (integer range, number, boolean, UUID,
//! varchar length, JSON, …) before anything is sent, so a value that can
//! never be written is refused with a message naming the column.

use serde_json::Value;
use spate_connector::{Record, RECORD_ID_HEADER};

use super::{ColumnKind, Row, TableColumn, TablePlan};
use crate::config::FieldSource;

impl TablePlan {
    /// The record as a row, or why it can never be written (a dead letter).
    pub fn row(&self, record: &Record) -> Result<Row, String> {
        let mut payload: Option<Result<Value, String>> = None;
        let mut row = Vec::with_capacity(self.columns.len());
        for planned in &self.columns {
            let column = &planned.column;
            let value = match &planned.mapping.source {
                FieldSource::Pointer(pointer) => {
                    let doc = payload.get_or_insert_with(|| {
                        serde_json::from_slice::<Value>(&record.payload)
                            .map_err(|e| format!("the payload is not JSON: {e}"))
                    });
                    let doc = doc.as_ref().map_err(Clone::clone)?;
                    match doc.pointer(pointer) {
                        None | Some(Value::Null) => None,
                        Some(v) => Some(json_text(v, column).map_err(|why| {
                            format!(
                                "{pointer} = {} does not fit column `{}` ({}): {why}",
                                short(v),
                                column.name,
                                column.sql_type
                            )
                        })?),
                    }
                }
                FieldSource::Timestamp => record.timestamp_ms.map(|ms| match column.kind {
                    ColumnKind::Timestamp { tz } => epoch_ms_text(ms, tz),
                    ColumnKind::Date => epoch_ms_text(ms, false)[..10].to_owned(),
                    _ => ms.to_string(),
                }),
                FieldSource::Payload => Some(match column.kind {
                    ColumnKind::Bytea => hex_bytea(&record.payload),
                    ColumnKind::Json => {
                        serde_json::from_slice::<Value>(&record.payload)
                            .map_err(|e| format!("the payload is not JSON: {e}"))?;
                        utf8(&record.payload, "the payload")?
                    }
                    _ => utf8(&record.payload, "the payload")?,
                }),
                FieldSource::Key => match &record.key {
                    None => None,
                    Some(key) if column.kind == ColumnKind::Bytea => Some(hex_bytea(key)),
                    Some(key) => {
                        let text = utf8(key, "the record key")?;
                        Some(json_text(&Value::String(text), column).map_err(|why| {
                            format!(
                                "the record key does not fit column `{}`: {why}",
                                column.name
                            )
                        })?)
                    }
                },
                FieldSource::RecordId | FieldSource::Header(_) => {
                    let name = match &planned.mapping.source {
                        FieldSource::Header(name) => name.as_str(),
                        _ => RECORD_ID_HEADER,
                    };
                    match record.headers.get(name) {
                        None => None,
                        Some(v) if column.kind == ColumnKind::Bytea => Some(hex_bytea(v)),
                        Some(v) => {
                            let text = utf8(v, &format!("header `{name}`"))?;
                            Some(json_text(&Value::String(text), column).map_err(|why| {
                                format!(
                                    "header `{name}` does not fit column `{}`: {why}",
                                    column.name
                                )
                            })?)
                        }
                    }
                }
            };
            if value.is_none() && column.not_null && column.default.is_none() {
                return Err(format!(
                    "column `{}` is NOT NULL but `{}` is missing or null",
                    column.name,
                    planned.mapping.source.describe()
                ));
            }
            row.push(value);
        }
        Ok(row)
    }

    /// The key values of a row (for de-duplicating a batch before an upsert).
    pub fn key_of<'r>(&self, row: &'r Row) -> Vec<Option<&'r str>> {
        self.key.iter().map(|&i| row[i].as_deref()).collect()
    }
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, String> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| format!("{what} is not UTF-8 text"))
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

fn hex_bytea(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 + bytes.len() * 2);
    out.push_str("\\x");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A JSON value as the text the column's type accepts, or why it does not
/// fit.
fn json_text(v: &Value, column: &TableColumn) -> Result<String, String> {
    use ColumnKind as K;
    match (column.kind, v) {
        (K::Json, v) => Ok(v.to_string()),
        (K::Int { min, max }, Value::Number(n)) => {
            let i = n
                .as_i64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                        .map(|f| f as i64)
                })
                .ok_or("not a whole number in range")?;
            if i < min || i > max {
                return Err(format!("out of range {min}..={max}"));
            }
            Ok(i.to_string())
        }
        (K::Int { min, max }, Value::String(s)) => match s.trim().parse::<i64>() {
            Ok(i) if i >= min && i <= max => Ok(i.to_string()),
            Ok(_) => Err(format!("out of range {min}..={max}")),
            Err(_) => Err("not a whole number".to_owned()),
        },
        (K::Float | K::Numeric, Value::Number(n)) => Ok(n.to_string()),
        (K::Float, Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .map(|_| s.trim().to_owned())
            .map_err(|_| "not a number".to_owned()),
        (K::Numeric, Value::String(s)) => {
            let t = s.trim();
            let ok = !t.is_empty()
                && (t.eq_ignore_ascii_case("nan")
                    || t.parse::<f64>().is_ok()
                        && t.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)));
            if ok {
                Ok(t.to_owned())
            } else {
                Err("not a decimal number".to_owned())
            }
        }
        (K::Bool, Value::Bool(b)) => Ok(b.to_string()),
        (K::Bool, Value::String(s)) if s == "true" || s == "false" => Ok(s.clone()),
        (K::Text { max_chars }, v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if text.contains('\0') {
                return Err("text cannot contain NUL characters".to_owned());
            }
            if let Some(max) = max_chars {
                let n = text.chars().count();
                if n > max {
                    return Err(format!("{n} characters, at most {max} fit"));
                }
            }
            Ok(text)
        }
        (K::Uuid, Value::String(s)) => {
            if is_uuid(s) {
                Ok(s.clone())
            } else {
                Err("not a UUID".to_owned())
            }
        }
        (K::Timestamp { tz }, Value::Number(n)) => n
            .as_i64()
            .map(|ms| epoch_ms_text(ms, tz))
            .ok_or_else(|| "a number here is whole milliseconds since the epoch".to_owned()),
        (K::Date, Value::Number(n)) => n
            .as_i64()
            .map(|ms| epoch_ms_text(ms, false)[..10].to_owned())
            .ok_or_else(|| "a number here is whole milliseconds since the epoch".to_owned()),
        (K::Timestamp { .. } | K::Date, Value::String(s)) => {
            if s.trim().starts_with(|c: char| c.is_ascii_digit())
                || matches!(s.trim(), "infinity" | "-infinity" | "now" | "today")
            {
                Ok(s.clone())
            } else {
                Err("not a date/time".to_owned())
            }
        }
        (K::Bytea, Value::String(s)) => Ok(hex_bytea(s.as_bytes())),
        (K::Other, Value::String(s)) => Ok(s.clone()),
        (K::Other, v @ (Value::Number(_) | Value::Bool(_))) => Ok(v.to_string()),
        (_, v) => Err(format!("a JSON {} cannot go there", json_type(v))),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_uuid(s: &str) -> bool {
    let s = s
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(s);
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit())
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS.mmm` (UTC, `+00`
/// appended for `timestamptz`).
fn epoch_ms_text(ms: i64, tz: bool) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (h, mi, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    let text = format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}.{milli:03}");
    if tz {
        text + "+00"
    } else {
        text
    }
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(kind: ColumnKind) -> TableColumn {
        TableColumn {
            name: "c".into(),
            sql_type: "t".into(),
            kind,
            not_null: false,
            default: None,
            generated: false,
        }
    }

    #[test]
    fn epoch_millis_render_as_utc() {
        assert_eq!(epoch_ms_text(0, true), "1970-01-01 00:00:00.000+00");
        assert_eq!(
            epoch_ms_text(1_700_000_000_123, false),
            "2023-11-14 22:13:20.123"
        );
        assert_eq!(epoch_ms_text(-1, false), "1969-12-31 23:59:59.999");
    }

    #[test]
    fn values_are_checked_against_their_column() {
        let int4 = col(ColumnKind::Int {
            min: i32::MIN.into(),
            max: i32::MAX.into(),
        });
        assert_eq!(json_text(&serde_json::json!(42), &int4).unwrap(), "42");
        assert_eq!(json_text(&serde_json::json!("7"), &int4).unwrap(), "7");
        assert!(json_text(&serde_json::json!(1.5), &int4).is_err());
        assert!(json_text(&serde_json::json!(3_000_000_000i64), &int4).is_err());
        assert!(json_text(&serde_json::json!("hot"), &int4).is_err());
        let float = col(ColumnKind::Float);
        assert!(json_text(&serde_json::json!("hot"), &float).is_err());
        assert!(json_text(&serde_json::json!({"a": 1}), &float).is_err());
        let v8 = col(ColumnKind::Text { max_chars: Some(3) });
        assert!(json_text(&serde_json::json!("abcd"), &v8).is_err());
        assert_eq!(json_text(&serde_json::json!("abc"), &v8).unwrap(), "abc");
        let json = col(ColumnKind::Json);
        assert_eq!(
            json_text(&serde_json::json!({"a": [1]}), &json).unwrap(),
            r#"{"a":[1]}"#
        );
        let uuid = col(ColumnKind::Uuid);
        assert!(json_text(&serde_json::json!("not-a-uuid"), &uuid).is_err());
        assert!(json_text(
            &serde_json::json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            &uuid
        )
        .is_ok());
    }
}
