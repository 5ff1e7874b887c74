//! The `spate` binary against a real Kafka-protocol broker (Tansu): a bad
//! payload larger than the dead-letter producer's `message.max.bytes` is
//! dead-lettered in reduced form (headers kept, payload left out, its size
//! and SHA-256 in headers) and every good event after it still comes out,
//! under `at_least_once` (the write is refused) and `exactly_once` (the
//! sink's `check` refuses it before it is staged in a transaction).
//!
//! Tansu 0.6.0 enforces no topic size limit of its own, so the rejection is
//! provoked by the producer's limit: the dead-letter sink sets
//! `message.max.bytes: 1000000` (librdkafka's default) under `properties`,
//! and the poison payload is 1 MiB and a bit.

use spate_testsupport::kafka::blocking as kafka_common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kafka_common::{header, text, FilterPipeline, Tansu};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};
use rdkafka::ClientConfig;
use sha2::{Digest, Sha256};

const PARTITIONS: i32 = 2;
/// Good events per partition before and after the poison one.
const GOOD_EACH_SIDE: usize = 50;

fn poison() -> Vec<u8> {
    let mut payload = b"not json ".to_vec();
    payload.resize((1 << 20) + 4_096, b'x');
    payload
}

/// Produces `GOOD_EACH_SIDE` good orders to each partition, the poison
/// one to partition 0, then as many good ones again: returns how many good
/// orders there are.
fn load(bootstrap: &str, topic: &str) -> usize {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("message.max.bytes", "4000000")
        .create()
        .expect("producer");
    let mut order = 0;
    let send = |partition: i32, payload: Vec<u8>| {
        let key = format!("customer-{partition}");
        let mut record = BaseRecord::to(topic)
            .key(key.as_bytes())
            .payload(payload.as_slice())
            .partition(partition);
        while let Err((error, back)) = producer.send(record) {
            assert!(
                matches!(
                    error,
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull
                    )
                ),
                "{error}"
            );
            record = back;
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    for round in 0..2 {
        if round == 1 {
            send(0, poison());
        }
        for _ in 0..GOOD_EACH_SIDE {
            for partition in 0..PARTITIONS {
                send(
                    partition,
                    format!(r#"{{"order":{order},"amount":1}}"#).into_bytes(),
                );
                order += 1;
            }
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("every input record acknowledged");
    order
}

fn pipeline(dir: &Path, bootstrap: &str, names: &Names, delivery: &str) -> String {
    let Names {
        input,
        output,
        dead,
    } = names;
    let text = FilterPipeline {
        bootstrap,
        input,
        group: &format!("{input}-group"),
        transactional_id: (delivery == "exactly_once")
            .then(|| format!("{input}-eos"))
            .as_deref(),
        output,
        dead,
        dead_extra: ", properties: {message.max.bytes: 1000000}",
        delivery,
        ordering: "partition",
        concurrency_max: None,
    }
    .yaml();
    let path = dir.join("dead-letters.yaml");
    std::fs::write(&path, text).expect("pipeline written");
    path.to_string_lossy().into_owned()
}

struct Names {
    input: String,
    output: String,
    dead: String,
}

#[test]
fn a_dead_letter_over_the_producers_limit_lands_reduced_and_the_good_events_after_it_come_out() {
    run_case("at_least_once");
}

#[test]
fn under_exactly_once_too_the_dead_letter_is_committed_reduced_with_the_good_events() {
    run_case("exactly_once");
}

fn run_case(delivery: &str) {
    let broker = Tansu::start();
    let names = Names {
        input: format!("big-orders-{delivery}"),
        output: format!("big-valid-{delivery}"),
        dead: format!("big-dead-{delivery}"),
    };
    let Names {
        input,
        output,
        dead,
    } = &names;
    broker.create_topic(input, PARTITIONS);
    broker.create_topic(output, 1);
    broker.create_topic(dead, 1);
    let good = load(&broker.bootstrap, input);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = pipeline(dir.path(), &broker.bootstrap, &names, delivery);
    let log_path = dir.path().join("run.log");
    let child = Command::new(env!("CARGO_BIN_EXE_spate"))
        .args(["run", &file])
        .env("SPATE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log file"))
        .spawn()
        .expect("spate starts");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let deadline = Instant::now() + Duration::from_secs(90);
    let outputs = loop {
        let outputs = broker.read_all(output, good, Duration::from_millis(500));
        if outputs.len() >= good {
            break outputs;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {good} outputs; the run's log:\n{}",
            outputs.len(),
            log()
        );
    };
    let mut orders: Vec<u64> = outputs
        .iter()
        .map(|m| {
            let value: serde_json::Value = serde_json::from_str(&text(m)).expect("JSON output");
            value["order"].as_u64().expect("order")
        })
        .collect();
    orders.sort_unstable();
    assert_eq!(
        orders,
        (0..good as u64).collect::<Vec<_>>(),
        "every good event, before and after the poison one, exactly once"
    );

    let letters = broker.read_all(dead, 1, Duration::from_millis(500));
    assert_eq!(
        letters.len(),
        1,
        "one dead letter; the run's log:\n{}",
        log()
    );
    let letter = &letters[0];
    assert!(letter.payload.is_empty(), "the payload is left out");
    assert_eq!(letter.key.as_deref(), Some(&b"customer-0"[..]));
    assert_eq!(header(letter, "spate-dlq-reason"), Some("handler-error"));
    assert_eq!(header(letter, "spate-dlq-partition"), Some("0"));
    assert_eq!(
        header(letter, "spate-dlq-offset"),
        Some(GOOD_EACH_SIDE.to_string().as_str())
    );
    assert_eq!(
        header(letter, "spate-dlq-payload-size"),
        Some(poison().len().to_string().as_str())
    );
    let digest: String = Sha256::digest(poison())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        header(letter, "spate-dlq-payload-sha256"),
        Some(digest.as_str())
    );
    let why = header(letter, "spate-dlq-reduced").expect("why it was reduced");
    assert!(
        why.contains("producer's `message.max.bytes` (1000000 bytes)"),
        "names the setting that fixes it: {why}"
    );
    let warnings = log()
        .lines()
        .filter(|l| l.contains("writing it without its payload"))
        .count();
    assert_eq!(warnings, 1, "one warning for the event; log:\n{}", log());
    let status = {
        spate_testsupport::spate_process::sigterm_when_handled(child.id());
        let mut child = child;
        child.wait().expect("spate exits")
    };
    assert!(status.success(), "spate exits cleanly; log:\n{}", log());
}
