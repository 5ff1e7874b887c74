//! JSON ↔ Avro mapping and inline-schema codecs, offline.

use bytes::Bytes;
use serde_json::{json, Value as Json};

use super::{FormatSpec, SchemaError};

const EVERYTHING: &str = r#"{
  "type": "record", "name": "Everything", "namespace": "test",
  "fields": [
    {"name": "n", "type": "null"},
    {"name": "b", "type": "boolean"},
    {"name": "i", "type": "int"},
    {"name": "l", "type": "long"},
    {"name": "f", "type": "float"},
    {"name": "d", "type": "double"},
    {"name": "s", "type": "string"},
    {"name": "raw", "type": "bytes"},
    {"name": "fx", "type": {"type": "fixed", "name": "Four", "size": 4}},
    {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}},
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "counts", "type": {"type": "map", "values": "long"}},
    {"name": "maybe", "type": ["null", "string"]},
    {"name": "either", "type": ["int", "string"]},
    {"name": "inner", "type": {"type": "record", "name": "Inner",
      "fields": [{"name": "x", "type": "int"}, {"name": "again", "type": ["null", "Inner"]}]}},
    {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
    {"name": "big", "type": {"type": "fixed", "name": "Dec8", "size": 8, "logicalType": "decimal", "precision": 18, "scale": 4}},
    {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
    {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "at_us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    {"name": "tod", "type": {"type": "int", "logicalType": "time-millis"}},
    {"name": "span", "type": {"type": "fixed", "name": "Dur", "size": 12, "logicalType": "duration"}},
    {"name": "nested_colors", "type": {"type": "array", "items": "Color"}}
  ]
}"#;

fn everything_value() -> Json {
    json!({
        "n": null,
        "b": true,
        "i": -42,
        "l": 9_007_199_254_740_993_i64,
        "f": 1.5,
        "d": 0.1,
        "s": "quote \" backslash \\ newline \n tab \t ctrl \u{1} é ☃",
        "raw": "AAEC/w==",
        "fx": "3q2+7w==",
        "color": "GREEN",
        "tags": ["a", "b"],
        "counts": {"x": 1, "y": -2},
        "maybe": "here",
        "either": "text",
        "inner": {"x": 1, "again": {"x": 2, "again": null}},
        "price": "-12.30",
        "big": "123456.7890",
        "id": "550e8400-e29b-41d4-a716-446655440000",
        "day": 19_000,
        "at": 1_700_000_000_123_i64,
        "at_us": 1_700_000_000_123_456_i64,
        "tod": 3_600_000,
        "span": {"months": 1, "days": 2, "millis": 3},
        "nested_colors": ["RED", "RED", "GREEN"]
    })
}

async fn encode(spec: &FormatSpec, json: &Json) -> Result<Bytes, super::EncodeError> {
    spec.encoder().encode(&Bytes::from(json.to_string())).await
}

async fn decode(spec: &FormatSpec, payload: &Bytes) -> Result<Json, super::DecodeError> {
    let decoded = spec.decoder().decode(payload).await?;
    assert_eq!(decoded.schema_id, None);
    Ok(serde_json::from_slice(&decoded.payload).expect("decoder output is JSON"))
}

#[tokio::test]
async fn every_type_round_trips_through_plain_json() {
    let spec = FormatSpec::avro(EVERYTHING, None).expect("schema parses");
    let value = everything_value();
    let avro = encode(&spec, &value).await.expect("encodes");
    assert_eq!(decode(&spec, &avro).await.expect("decodes"), value);
}

#[tokio::test]
async fn decoded_records_keep_schema_field_order() {
    let spec = FormatSpec::avro(EVERYTHING, None).expect("schema parses");
    let avro = encode(&spec, &everything_value()).await.expect("encodes");
    let decoded = spec.decoder().decode(&avro).await.expect("decodes");
    let text = String::from_utf8(decoded.payload.to_vec()).expect("utf-8");
    let order: Vec<usize> = ["\"n\":", "\"b\":", "\"i\":", "\"nested_colors\":"]
        .iter()
        .map(|k| text.find(k).expect("field present"))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    // Unions are untagged: no {"string": ...} wrapper.
    assert!(text.contains(r#""maybe":"here""#), "{text}");
}

#[tokio::test]
async fn floats_that_json_cannot_hold_are_strings() {
    let schema = r#"{"type":"record","name":"F","fields":[{"name":"a","type":"double"},{"name":"b","type":"float"},{"name":"c","type":"double"}]}"#;
    let spec = FormatSpec::avro(schema, None).expect("schema");
    let value = json!({"a": "NaN", "b": "-Infinity", "c": "Infinity"});
    let avro = encode(&spec, &value).await.expect("encodes");
    assert_eq!(decode(&spec, &avro).await.expect("decodes"), value);
    let big = json!({"a": 1e300, "b": 0.25, "c": -2.5e-300});
    let avro = encode(&spec, &big).await.expect("encodes");
    assert_eq!(decode(&spec, &avro).await.expect("decodes"), big);
}

#[tokio::test]
async fn missing_fields_take_defaults_or_null() {
    let schema = r#"{"type":"record","name":"D","fields":[
        {"name":"id","type":"long"},
        {"name":"note","type":["null","string"]},
        {"name":"level","type":"string","default":"info"},
        {"name":"blob","type":"bytes","default":"\u00ff"},
        {"name":"opt","type":["string","null"],"default":"x"}]}"#;
    let spec = FormatSpec::avro(schema, None).expect("schema");
    let avro = encode(&spec, &json!({"id": 7})).await.expect("encodes");
    assert_eq!(
        decode(&spec, &avro).await.expect("decodes"),
        json!({"id": 7, "note": null, "level": "info", "blob": "/w==", "opt": "x"})
    );
}

#[tokio::test]
async fn encoding_errors_name_the_field() {
    let schema = r#"{"type":"record","name":"Order","fields":[
        {"name":"id","type":"long"},
        {"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID"]}},
        {"name":"items","type":{"type":"array","items":{"type":"record","name":"Item","fields":[
            {"name":"sku","type":"string"},{"name":"qty","type":"int"}]}}},
        {"name":"meta","type":{"type":"map","values":"int"}},
        {"name":"total","type":{"type":"bytes","logicalType":"decimal","precision":6,"scale":2}},
        {"name":"ref","type":["null","long"]}]}"#;
    let spec = FormatSpec::avro(schema, None).expect("schema");
    let good = json!({"id": 1, "status": "NEW", "items": [{"sku": "a", "qty": 1}], "meta": {}, "total": "1.00", "ref": null});
    encode(&spec, &good).await.expect("the good one encodes");

    let cases: Vec<(Json, &str, &str)> = vec![
        (json!({"id": "1"}), "id", "expected a long"),
        (
            json!({"status": "LOST"}),
            "status",
            "`LOST` is not a symbol of enum `Status` (NEW, PAID)",
        ),
        (
            json!({"items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 3_000_000_000_i64}]}),
            "items[1].qty",
            "expected an int",
        ),
        (json!({"items": [{"sku": "a"}]}), "items[0].qty", "missing"),
        (
            json!({"items": [{"sku": "a", "qty": 1, "colour": "red"}]}),
            "items[0].colour",
            "has no such field",
        ),
        (
            json!({"meta": {"k": "v"}}),
            "meta[\"k\"]",
            "expected an int",
        ),
        (json!({"total": "1.234"}), "total", "scale is 2"),
        (json!({"total": "12345.6"}), "total", "precision is 6"),
        (json!({"ref": "x"}), "ref", "expected a long"),
    ];
    for (patch, field, message) in cases {
        let mut value = good.clone();
        for (k, v) in patch.as_object().expect("object") {
            value[k] = v.clone();
        }
        let err = encode(&spec, &value).await.expect_err("must not encode");
        assert!(!err.retryable);
        assert_eq!(err.field.as_deref(), Some(field), "{err}");
        assert!(err.message.contains(message), "{err}");
        assert!(err.message.contains(&format!("field `{field}`")), "{err}");
    }
    let err = encode(&spec, &json!([1])).await.expect_err("not a record");
    assert_eq!(err.field, None);
    assert!(
        err.message.contains("expected an object (record `Order`)"),
        "{err}"
    );
    let err = spec
        .encoder()
        .encode(&Bytes::from_static(b"{oops"))
        .await
        .expect_err("not JSON");
    assert!(
        err.message.starts_with("output payload is not JSON"),
        "{err}"
    );
}

#[tokio::test]
async fn unions_pick_the_first_branch_that_fits() {
    let schema = r#"{"type":"record","name":"U","fields":[
        {"name":"a","type":["int","long","double","string"]},
        {"name":"b","type":["null",{"type":"record","name":"P","fields":[{"name":"x","type":"int"}]},
                              {"type":"record","name":"Q","fields":[{"name":"y","type":"string"}]}]}]}"#;
    let spec = FormatSpec::avro(schema, None).expect("schema");
    for value in [
        json!({"a": 1, "b": {"x": 1}}),
        json!({"a": 5_000_000_000_i64, "b": {"y": "q"}}),
        json!({"a": 2.5, "b": null}),
        json!({"a": "s", "b": null}),
    ] {
        let avro = encode(&spec, &value).await.expect("encodes");
        assert_eq!(decode(&spec, &avro).await.expect("decodes"), value);
    }
    let err = encode(&spec, &json!({"a": true, "b": null}))
        .await
        .expect_err("no branch");
    assert!(
        err.message
            .contains("matches no branch of the union [int, long, double, string]"),
        "{err}"
    );
}

#[tokio::test]
async fn corrupt_datums_are_permanent_errors() {
    let spec = FormatSpec::avro(EVERYTHING, None).expect("schema");
    let avro = encode(&spec, &everything_value()).await.expect("encodes");
    let truncated = avro.slice(..avro.len() - 3);
    let err = spec
        .decoder()
        .decode(&truncated)
        .await
        .expect_err("truncated");
    assert!(!err.retryable);
    assert!(err.message.starts_with("not a valid Avro datum"), "{err}");
    let mut longer = avro.to_vec();
    longer.extend_from_slice(b"xyz");
    let err = spec
        .decoder()
        .decode(&Bytes::from(longer))
        .await
        .expect_err("trailing");
    assert!(err.message.contains("3 bytes left over"), "{err}");
}

const V1: &str = r#"{"type":"record","name":"User","fields":[
    {"name":"id","type":"long"},{"name":"name","type":"string"},{"name":"legacy","type":"int"}]}"#;
const V2: &str = r#"{"type":"record","name":"User","fields":[
    {"name":"id","type":"long"},{"name":"name","type":"string"},
    {"name":"email","type":["null","string"],"default":null},
    {"name":"tier","type":"string","default":"free"}]}"#;

#[tokio::test]
async fn reader_schema_resolves_added_and_removed_fields() {
    let writer = FormatSpec::avro(V1, None).expect("v1");
    let avro = encode(&writer, &json!({"id": 1, "name": "ann", "legacy": 9}))
        .await
        .expect("v1 encodes");
    let reader = FormatSpec::avro(V1, Some(V2)).expect("v2 reads v1");
    assert_eq!(
        decode(&reader, &avro).await.expect("resolves"),
        json!({"id": 1, "name": "ann", "email": null, "tier": "free"})
    );
}

#[test]
fn incompatible_or_invalid_schemas_are_refused() {
    let no_default = r#"{"type":"record","name":"User","fields":[{"name":"id","type":"long"},{"name":"new","type":"int"}]}"#;
    let SchemaError(message) = FormatSpec::avro(V1, Some(no_default)).expect_err("no default");
    assert!(message.contains("reader schema cannot read"), "{message}");
    assert!(FormatSpec::avro(r#"{"type":"recrod"}"#, None).is_err());
    assert!(FormatSpec::avro("not json", None).is_err());
}

/// A zig-zag varint, as Avro writes `long`s and block counts.
fn varint(n: i64) -> Vec<u8> {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_recursive_schema_a_datum_nesting_past_the_bound_is_a_decode_error() {
    use super::avro_depth::MAX_AVRO_DEPTH;
    let linked = r#"{"type":"record","name":"Node","fields":[
        {"name":"next","type":["null","Node"]}]}"#;
    let spec = FormatSpec::avro(linked, None).expect("recursive schemas are fine");
    // `levels` records, one inside the other: each `02` picks the `Node`
    // branch (one byte, one more level), the final `00` the `null`.
    let nested = |levels: usize| {
        let mut payload = vec![2u8; levels - 1];
        payload.push(0);
        Bytes::from(payload)
    };
    let decoder = spec.decoder();
    // On a worker thread (a small stack), as the engine decodes.
    let at_limit = tokio::spawn({
        let decoder = decoder.clone();
        async move {
            decoder
                .decode(&nested(MAX_AVRO_DEPTH))
                .await
                .map(|d| d.payload.len())
        }
    });
    let at_limit = at_limit.await;
    assert!(
        matches!(at_limit, Ok(Ok(_))),
        "the deepest accepted datum decodes: {at_limit:?}"
    );
    for levels in [MAX_AVRO_DEPTH + 1, 1_000_000] {
        let err = decoder.decode(&nested(levels)).await.expect_err("too deep");
        assert!(!err.retryable);
        assert_eq!(
            err.message,
            format!("not a valid Avro datum: the datum nests deeper than {MAX_AVRO_DEPTH} levels")
        );
    }
}

#[tokio::test]
async fn a_block_count_that_would_allocate_past_the_bound_is_a_decode_error() {
    // Five million nulls cost one varint in the payload, and far more than
    // `MAX_AVRO_ALLOCATION` of decoded values (under apache-avro's own
    // 512 MiB default they were allocated).
    let spec = FormatSpec::avro(r#"{"type":"array","items":"null"}"#, None).expect("schema");
    let mut payload = varint(5_000_000);
    payload.push(0);
    let err = spec
        .decoder()
        .decode(&Bytes::from(payload))
        .await
        .expect_err("refused");
    assert!(!err.retryable);
    assert!(err.message.contains("allocat"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_format_checks_deep_payloads_without_recursing() {
    // serde_json skips a value without recursion, so a million levels on a
    // worker thread's small stack is an answer, not a stack overflow.
    let decoder = FormatSpec::json().decoder();
    let deep = Bytes::from(format!(
        "{}{}",
        "[".repeat(1_000_000),
        "]".repeat(1_000_000)
    ));
    let checked = tokio::spawn(async move { decoder.decode(&deep).await.map(|d| d.payload.len()) });
    assert!(matches!(checked.await, Ok(Ok(2_000_000))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_output_encodes_under_a_recursive_schema_on_a_worker_thread() {
    let linked = r#"{"type":"record","name":"Node","fields":[
        {"name":"next","type":["null","Node"]}]}"#;
    let spec = FormatSpec::avro(linked, None).expect("schema");
    // 120 levels of JSON (under serde_json's 128) through the converter and
    // the writer, which recurse once per level.
    let mut json = Json::Null;
    for _ in 0..120 {
        json = json!({"next": json});
    }
    let text = Bytes::from(json.to_string());
    let encoder = spec.encoder();
    let encoded = tokio::spawn(async move { encoder.encode(&text).await.map(|b| b.len()) });
    let encoded = encoded.await;
    assert!(matches!(encoded, Ok(Ok(120))), "{encoded:?}");
}
