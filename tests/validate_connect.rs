//! `spate validate --connect` against every connector that has a target:
//! closed ports are reported at the input or output that names them, with
//! the address, within seconds; missing topics and streams are reported;
//! the same file against running brokers (Tansu for Kafka, NATS with
//! JetStream, Mosquitto) passes.

use spate_testsupport::iot as iot_common;
use spate_testsupport::kafka::blocking as kafka_common;
use spate_testsupport::nats as nats_common;
use spate_testsupport::process::free_port;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

fn validate_connect(file: &Path) -> (Output, Duration) {
    let started = Instant::now();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_spate"))
        .args(["validate", "--connect"])
        .arg(file)
        .env("SPATE_LOG", "warn")
        .output()
        .expect("spate runs");
    (output, started.elapsed())
}

/// Kafka in, Kafka out; NATS in, NATS out; JetStream in, JetStream out;
/// MQTT in, MQTT out with a PostgreSQL dead letter. Line numbers matter
/// to the tests.
fn pipeline(kafka: &str, nats: &str, mqtt: &str, postgres: &str, names: &Names) -> String {
    let Names {
        topic,
        stream,
        subject,
    } = names;
    format!(
        r#"functions:
  - name: k
    input: {{type: kafka, bootstrap_servers: '{kafka}', topics: [{topic}], group_id: g}}
    handler: passthrough
    outputs:
      - {{type: kafka, bootstrap_servers: '{kafka}', topic: {topic}}}
    dead_letter: {{type: file, path: dead.jsonl}}
  - name: n
    input: {{type: nats, url: '{nats}', subject: {subject}.in}}
    handler: passthrough
    outputs:
      - {{type: nats, url: '{nats}', subject: {subject}.out}}
    dead_letter: {{type: file, path: dead.jsonl}}
    delivery: at_most_once
  - name: j
    input: {{type: jetstream, url: '{nats}', stream: {stream}, durable: d}}
    handler: passthrough
    outputs:
      - {{type: jetstream, url: '{nats}', subject: {subject}.js}}
    dead_letter: {{type: file, path: dead.jsonl}}
  - name: m
    input: {{type: mqtt, url: '{mqtt}', topics: [t/#], client_id: validate-check}}
    handler: passthrough
    outputs:
      - {{type: mqtt, url: '{mqtt}', topic: u}}
    dead_letter: {{type: postgres, url: '{postgres}', table: t, columns: {{a: /a}}}}
"#
    )
}

struct Names {
    topic: String,
    stream: String,
    subject: String,
}

fn unique_names() -> Names {
    let id = std::process::id();
    Names {
        topic: format!("validate-{id}"),
        stream: format!("VALIDATE_{id}"),
        subject: format!("validate.{id}"),
    }
}

#[test]
fn every_unreachable_target_is_reported_at_its_place_with_its_address_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let kafka = format!("127.0.0.1:{port}");
    let nats = format!("nats://127.0.0.1:{port}");
    let mqtt = format!("mqtt://127.0.0.1:{port}");
    let postgres = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let file = dir.path().join("closed.yaml");
    std::fs::write(
        &file,
        pipeline(&kafka, &nats, &mqtt, &postgres, &unique_names()),
    )
    .unwrap();
    let (output, took) = validate_connect(&file);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}: {stderr}");
    let file = file.display();
    let expected = [
        (3, 12, "function `k`: input `kafka`", kafka.as_str()),
        (6, 9, "function `k`: output `kafka`", &kafka),
        (9, 12, "function `n`: input `nats`", &nats),
        (12, 9, "function `n`: output `nats`", &nats),
        (16, 12, "function `j`: input `jetstream`", &nats),
        (19, 9, "function `j`: output `jetstream`", &nats),
        (22, 12, "function `m`: input `mqtt`", &mqtt),
        (25, 9, "function `m`: output `mqtt`", &mqtt),
        (26, 18, "function `m`: dead letter `postgres`", &postgres),
    ];
    for (line, column, what, address) in expected {
        let address = address.trim_start_matches("postgres://");
        let found = stderr.lines().any(|l| {
            l.starts_with(&format!("{file}:{line}:{column}: {what}")) && l.contains(address)
        });
        assert!(
            found,
            "no `{file}:{line}:{column}: {what}` naming `{address}` in:\n{stderr}"
        );
    }
}

#[test]
fn running_brokers_pass_and_a_missing_topic_or_stream_does_not() {
    let names = unique_names();
    let tansu = kafka_common::Tansu::start();
    tansu.create_topic(&names.topic, 1);
    let nats = nats_common::server();
    let mosquitto = iot_common::broker();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Without the stream and the table: what is missing is named.
    let postgres = format!("postgres://postgres@127.0.0.1:{}/postgres", free_port());
    // The pipeline file `file` naming `names` on these brokers.
    let write = |file: &str, names: &Names| {
        let path = dir.path().join(file);
        let text = pipeline(
            &tansu.bootstrap,
            &nats.url,
            &mosquitto.url,
            &postgres,
            names,
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let absent = Names {
        topic: format!("{}-absent", names.topic),
        ..unique_names()
    };
    let missing = write("missing.yaml", &absent);
    let (output, _) = validate_connect(&missing);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let file = missing.display();
    for (line, column, what) in [
        (3, 12, format!("no topic `{}`", absent.topic)),
        (6, 9, format!("no topic `{}`", absent.topic)),
        (16, 12, format!("no stream `{}`", absent.stream)),
        (19, 9, format!("captures subject `{}.js`", absent.subject)),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&format!("{file}:{line}:{column}: ")) && l.contains(&what)),
            "no `{what}` at {line}:{column} in:\n{stderr}"
        );
    }
    // With the stream in place, only the unreachable database is left.
    runtime.block_on(async {
        let client = nats.client().await;
        nats_common::create_stream(&client, &names.stream, &[format!("{}.js", names.subject)])
            .await;
    });
    let present = write("present.yaml", &names);
    let (output, _) = validate_connect(&present);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with(&present.display().to_string()))
        .collect();
    assert_eq!(problems.len(), 1, "{stderr}");
    assert!(problems[0].contains("dead letter `postgres`"), "{stderr}");
    runtime.block_on(async {
        let client = nats.client().await;
        nats_common::delete_stream(&client, &names.stream).await;
    });
}

/// Under `exactly_once`, JetStream → JetStream: the output stream must
/// de-duplicate for at least twice the input's redelivery time, which `run`
/// checks before its first publish; `validate --connect` checks it too, at
/// the input, naming both durations, and passes once the window is long
/// enough.
#[test]
fn an_exactly_once_output_stream_that_forgets_ids_too_soon_is_refused_at_the_input() {
    use async_nats::jetstream::{self, stream};
    let nats = nats_common::server();
    let (input, output) = (nats_common::unique("EOSIN"), nats_common::unique("EOSOUT"));
    let subject = nats_common::unique("eos");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let context = runtime.block_on(async { jetstream::new(nats.client().await) });
    let out_config = |window: Duration| stream::Config {
        name: output.clone(),
        subjects: vec![format!("{subject}.out")],
        duplicate_window: window,
        ..Default::default()
    };
    runtime.block_on(async {
        nats_common::create_stream(&nats.client().await, &input, &[format!("{subject}.in")]).await;
        context
            .create_stream(out_config(Duration::from_secs(10)))
            .await
            .expect("output stream");
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("eos.yaml");
    let url = &nats.url;
    std::fs::write(
        &file,
        format!(
            r#"functions:
  - name: eos
    input: {{type: jetstream, url: '{url}', stream: {input}, durable: d, ack_wait: 30s}}
    handler: passthrough
    outputs:
      - {{type: jetstream, url: '{url}', subject: {subject}.out}}
    dead_letter: {{type: jetstream, url: '{url}', subject: {subject}.out}}
    delivery: exactly_once
"#
        ),
    )
    .unwrap();
    let (refused, _) = validate_connect(&file);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&format!("{}:3:12: ", file.display()))
                && l.contains(&format!("stream `{output}`"))
                && l.contains("de-duplicates for 10s")
                && l.contains("needs at least 60s")),
        "{stderr}"
    );
    runtime.block_on(async {
        context
            .update_stream(out_config(Duration::from_secs(120)))
            .await
            .expect("window raised");
    });
    let (passed, _) = validate_connect(&file);
    assert!(
        passed.status.success(),
        "{}",
        String::from_utf8_lossy(&passed.stderr)
    );
    runtime.block_on(async {
        let client = nats.client().await;
        nats_common::delete_stream(&client, &input).await;
        nats_common::delete_stream(&client, &output).await;
    });
}
