//! Payload formats in the engine: an input's Avro payloads reach the
//! handler as JSON and outputs are encoded back; a payload that cannot be
//! decoded is dead-lettered at once with the decode error, its original
//! bytes and no handler call; an output that does not fit its schema is
//! dead-lettered naming the field; a schema registry that cannot be
//! reached is retried, never taken for a bad payload.

use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use spate::format::registry::RegistryConfig;
use spate::format::{confluent_frame, FormatSpec, RegistryOptions, SchemaRegistry};
use spate::handler::{Context, Handler, HandlerError, Output};
use spate::pipeline::Ordering;
use spate::Event;
use spate_connector::dead_letter as dl;
use spate_connector::testkit::{MemoryLog, MemorySink};
use spate_testsupport::engine::{plan, run_to_end};

const ORDER: &str = r#"{"type": "record", "name": "Order", "fields": [
    {"name": "id", "type": "long"},
    {"name": "amount", "type": "double"},
    {"name": "note", "type": ["null", "string"], "default": null}
]}"#;

const SCORED: &str = r#"{"type": "record", "name": "Scored", "fields": [
    {"name": "id", "type": "long"},
    {"name": "score", "type": "string"}
]}"#;

/// Sees JSON orders; answers `{"id", "score"}`, or a field the output
/// schema lacks for order 13.
struct Score {
    calls: AtomicU32,
}

#[async_trait]
impl Handler for Score {
    async fn handle(&self, event: Event, _ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        self.calls.fetch_add(1, AtomicOrdering::SeqCst);
        let order: serde_json::Value = serde_json::from_slice(&event.payload)
            .map_err(|e| HandlerError::permanent(format!("handler got no JSON: {e}")))?;
        let id = order["id"].as_i64().unwrap_or(-1);
        let score = if order["amount"].as_f64().unwrap_or(0.0) > 100.0 {
            "high"
        } else {
            "low"
        };
        let out = if id == 13 {
            serde_json::json!({"id": id, "score": score, "unlucky": true})
        } else {
            serde_json::json!({"id": id, "score": score})
        };
        Ok(vec![Output::from_event(&event, out.to_string())])
    }
}

/// An order as Avro of `ORDER`, written through the library's own encoder.
async fn avro_order(id: i64, amount: f64) -> Vec<u8> {
    let json = serde_json::json!({"id": id, "amount": amount}).to_string();
    FormatSpec::avro(ORDER, None)
        .unwrap()
        .encoder()
        .encode(&Bytes::from(json))
        .await
        .unwrap()
        .to_vec()
}

/// An output read back as JSON through the library's decoder for `SCORED`.
async fn scored(payload: &Bytes) -> (i64, String) {
    let decoded = FormatSpec::avro(SCORED, None)
        .unwrap()
        .decoder()
        .decode(payload)
        .await
        .expect("outputs are Avro of the output schema");
    let value: serde_json::Value = serde_json::from_slice(&decoded.payload).unwrap();
    (
        value["id"].as_i64().unwrap(),
        value["score"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_in_json_to_the_handler_avro_out_and_bad_payloads_dead_lettered() {
    let log = MemoryLog::new("orders", 1);
    for id in 0..20 {
        let payload = if id == 7 {
            b"\x02garbage that is not an order".to_vec()
        } else {
            avro_order(id, id as f64 * 10.0).await
        };
        log.append(0, Some(&format!("c{id}")), payload);
    }
    log.end();
    let handler = Arc::new(Score {
        calls: AtomicU32::new(0),
    });
    let (out, dlq) = (MemorySink::new("out"), MemorySink::new("dlq"));
    let mut plan = plan(&log, handler.clone(), Ordering::Key, &out, &dlq);
    plan.decoders = vec![Some(FormatSpec::avro(ORDER, None).unwrap().decoder())];
    plan.outputs[0].encoder = Some(FormatSpec::avro(SCORED, None).unwrap().encoder());
    let report = run_to_end(plan).await;

    // 18 scored orders, each Avro of the output schema.
    let mut outputs = Vec::new();
    for record in out.records() {
        outputs.push(scored(&record.payload).await);
    }
    outputs.sort();
    let expected: Vec<(i64, String)> = (0..20)
        .filter(|id| *id != 7 && *id != 13)
        .map(|id| (id, if id * 10 > 100 { "high" } else { "low" }.to_owned()))
        .collect();
    assert_eq!(outputs, expected);

    let letters = dlq.records();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(report.dead_lettered, 2);
    let undecodable = letters
        .iter()
        .find(|l| l.headers.get_str(dl::OFFSET) == Some("7"))
        .expect("order 7's dead letter");
    assert_eq!(
        undecodable.headers.get_str(dl::REASON),
        Some("decode-error")
    );
    assert!(undecodable.headers.get_str(dl::DECODE_ERROR).is_some());
    assert_eq!(
        undecodable.payload,
        Bytes::from_static(b"\x02garbage that is not an order"),
        "the dead letter keeps the bytes as they came"
    );
    assert_eq!(undecodable.headers.get_str(dl::ATTEMPTS), Some("1"));
    let unfit = letters
        .iter()
        .find(|l| l.headers.get_str(dl::OFFSET) == Some("13"))
        .expect("order 13's dead letter");
    assert_eq!(unfit.headers.get_str(dl::REASON), Some("encode-error"));
    let error = unfit.headers.get_str(dl::ERROR).unwrap();
    assert!(error.contains("unlucky"), "names the field: {error}");
    assert_eq!(unfit.payload, Bytes::from(avro_order(13, 130.0).await));
    // Order 7 never reached the handler.
    assert_eq!(handler.calls.load(AtomicOrdering::SeqCst), 19);
    assert_eq!(log.committed(0), Some(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_cannot_be_reached_is_retried_not_taken_for_a_bad_payload() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let registry = Arc::new(
        SchemaRegistry::new(RegistryConfig {
            url: format!("http://127.0.0.1:{port}"),
            username: None,
            password: None,
            timeout: Duration::from_millis(500),
        })
        .unwrap(),
    );
    let format = FormatSpec::avro_registry(registry, RegistryOptions::default()).unwrap();
    let log = MemoryLog::new("orders", 1);
    log.append(
        0,
        Some("c1"),
        confluent_frame(42, &avro_order(1, 5.0).await).to_vec(),
    );
    log.end();
    let handler = Arc::new(Score {
        calls: AtomicU32::new(0),
    });
    let (out, dlq) = (MemorySink::new("out"), MemorySink::new("dlq"));
    let mut plan = plan(&log, handler.clone(), Ordering::Key, &out, &dlq);
    plan.decoders = vec![Some(format.decoder())];
    let report = run_to_end(plan).await;
    // Retried to max_attempts (3 in the test plan), then dead-lettered as
    // a decode error that was retryable: no schema id was ever read, so
    // the dead letter does not claim the payload is corrupt.
    assert_eq!(report.retries, 2);
    let letters = dlq.records();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].headers.get_str(dl::REASON), Some("decode-error"));
    assert_eq!(letters[0].headers.get_str(dl::ATTEMPTS), Some("3"));
    assert_eq!(letters[0].headers.get_str(dl::DECODE_ERROR), None);
    assert_eq!(handler.calls.load(AtomicOrdering::SeqCst), 0);
}
