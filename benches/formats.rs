//! Payload format cost per event: what decoding before the handler and
//! encoding after it add.
//!
//! - `avro_decode/<size>`: Avro binary datum → JSON bytes (inline schema).
//! - `avro_decode_registry/<size>`: the same in the Confluent wire format,
//!   schema already cached by id (the steady state; the first event's fetch
//!   is outside the timed loop). The registry is a two-route server on
//!   127.0.0.1 started by the bench.
//! - `avro_decode_evolved/small`: with a reader schema (schema resolution).
//! - `avro_encode/<size>`: handler JSON → Avro datum.
//! - `avro_encode_registry/<size>`: the same in the wire format, the
//!   subject's id already registered and cached.
//! - `json_validate/<size>`: `format: json` decoding (one validating scan).
//!
//! `small` is a 5-field record (~60 bytes of JSON); `1kb` a record with
//! strings, a nested record, an array and a map, ~1 KB of JSON. Results are
//! per event (`Throughput::Elements(1)`): criterion's time is ns/event.
//!
//! Run: `cargo bench --bench formats` (about a minute on 2 cores).

use std::time::Duration;

use axum::extract::Path;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use spate::format::{confluent_frame, FormatSpec, RegistryConfig, RegistryOptions, SchemaRegistry};
use spate_testsupport::http::serve;

const SMALL: &str = r#"{"type":"record","name":"Reading","fields":[
  {"name":"device","type":"string"},{"name":"seq","type":"long"},
  {"name":"temp","type":"double"},{"name":"ok","type":"boolean"},
  {"name":"note","type":["null","string"],"default":null}]}"#;

const SMALL_V2: &str = r#"{"type":"record","name":"Reading","fields":[
  {"name":"device","type":"string"},{"name":"seq","type":"long"},
  {"name":"temp","type":"double"},{"name":"ok","type":"boolean"},
  {"name":"unit","type":"string","default":"C"}]}"#;

const LARGE: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
  {"name":"id","type":"long"},{"name":"customer","type":"string"},
  {"name":"email","type":["null","string"]},{"name":"created","type":{"type":"long","logicalType":"timestamp-millis"}},
  {"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID","SHIPPED"]}},
  {"name":"total","type":{"type":"bytes","logicalType":"decimal","precision":12,"scale":2}},
  {"name":"address","type":{"type":"record","name":"Address","fields":[
    {"name":"street","type":"string"},{"name":"city","type":"string"},
    {"name":"zip","type":"string"},{"name":"country","type":"string"}]}},
  {"name":"items","type":{"type":"array","items":{"type":"record","name":"Item","fields":[
    {"name":"sku","type":"string"},{"name":"qty","type":"int"},{"name":"price","type":"double"},
    {"name":"title","type":"string"}]}}},
  {"name":"attributes","type":{"type":"map","values":"string"}},
  {"name":"comment","type":["null","string"],"default":null}]}"#;

fn small_json() -> Bytes {
    Bytes::from(
        json!({"device": "sensor-0042", "seq": 123_456, "temp": 21.5, "ok": true, "note": null})
            .to_string(),
    )
}

fn large_json() -> Bytes {
    let items: Vec<_> = (0..6)
        .map(|i| json!({"sku": format!("SKU-{i:06}"), "qty": i + 1, "price": 9.99 + f64::from(i), "title": format!("A fairly descriptive product title number {i}")}))
        .collect();
    let attributes: serde_json::Map<String, serde_json::Value> = (0..6)
        .map(|i| {
            (
                format!("attribute-{i}"),
                json!(format!("value of attribute {i}")),
            )
        })
        .collect();
    Bytes::from(
        json!({
            "id": 9_876_543_210_i64, "customer": "Ada Lovelace", "email": "ada@example.com",
            "created": 1_700_000_000_000_i64, "status": "PAID", "total": "1234.56",
            "address": {"street": "12 Analytical Engine Road", "city": "London", "zip": "EC1A 1BB", "country": "GB"},
            "items": items, "attributes": attributes, "comment": "Please leave the parcel with the neighbour if nobody answers."
        })
        .to_string(),
    )
}

/// Serves `GET /schemas/ids/{id}` for the two schemas (ids 1 and 2) and
/// registration under `small-value` (id 1) or any other subject (id 2).
fn start_registry(rt: &tokio::runtime::Runtime) -> String {
    rt.block_on(async {
        let router = Router::new()
            .route(
                "/schemas/ids/{id}",
                get(|Path(id): Path<u32>| async move {
                    let schema = if id == 1 { SMALL } else { LARGE };
                    json!({ "schema": schema }).to_string()
                }),
            )
            .route(
                "/subjects/{subject}/versions",
                post(|Path(subject): Path<String>| async move {
                    let id = if subject == "small-value" { 1 } else { 2 };
                    json!({ "id": id }).to_string()
                }),
            );
        format!("http://{}", serve(router).await)
    })
}

fn formats(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let url = start_registry(&rt);
    let registry =
        std::sync::Arc::new(SchemaRegistry::new(RegistryConfig::new(url)).expect("client"));
    let wire =
        FormatSpec::avro_registry(registry.clone(), RegistryOptions::default()).expect("spec");

    let mut group = c.benchmark_group("formats");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));

    for (size, schema, json, id) in [
        ("small", SMALL, small_json(), 1u32),
        ("1kb", LARGE, large_json(), 2),
    ] {
        let spec = FormatSpec::avro(schema, None).expect("schema");
        let encoder = spec.encoder();
        let decoder = spec.decoder();
        let datum = rt.block_on(encoder.encode(&json)).expect("encodes");
        let framed = confluent_frame(id, &datum);
        let wire_decoder = wire.decoder();
        rt.block_on(wire_decoder.decode(&framed))
            .expect("first decode fetches the schema");
        eprintln!(
            "{size}: {} bytes of JSON, {} bytes of Avro",
            json.len(),
            datum.len()
        );

        group.bench_function(format!("avro_decode/{size}"), |b| {
            b.to_async(&rt).iter(|| decoder.decode(&datum))
        });
        group.bench_function(format!("avro_decode_registry/{size}"), |b| {
            b.to_async(&rt).iter(|| wire_decoder.decode(&framed))
        });
        group.bench_function(format!("avro_encode/{size}"), |b| {
            b.to_async(&rt).iter(|| encoder.encode(&json))
        });
        let options = RegistryOptions {
            subject: Some(format!("{size}-value")),
            schema: Some(schema.to_owned()),
            ..RegistryOptions::default()
        };
        let wire_encoder = FormatSpec::avro_registry(registry.clone(), options)
            .expect("spec")
            .encoder();
        rt.block_on(wire_encoder.encode(&json))
            .expect("first encode registers");
        group.bench_function(format!("avro_encode_registry/{size}"), |b| {
            b.to_async(&rt).iter(|| wire_encoder.encode(&json))
        });
        let json_decoder = FormatSpec::json().decoder();
        group.bench_function(format!("json_validate/{size}"), |b| {
            b.to_async(&rt).iter(|| json_decoder.decode(&json))
        });
        if size == "small" {
            let evolved = FormatSpec::avro(SMALL, Some(SMALL_V2))
                .expect("evolves")
                .decoder();
            group.bench_function("avro_decode_evolved/small", |b| {
                b.to_async(&rt).iter(|| evolved.decode(&datum))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, formats);
criterion_main!(benches);
