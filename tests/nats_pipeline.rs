//! The `spate` binary on a real nats-server with JetStream: kill -9 at 20
//! points then a restart, under exactly-once (the output stream, read whole,
//! holds each expected output exactly once) and at-least-once (every input
//! has its output), with poison events in a dead-letter stream.
//!
//! Exactly-once here is JetStream's: outputs are published with
//! `Nats-Msg-Id` = the engine's stable record id and the input is
//! double-acked only after the publish acks, so a redelivered input's
//! outputs are dropped by the output stream's duplicate window.

use spate_testsupport::nats as nats_common;
use spate_testsupport::nats::{order_of, JetStreamPipeline};
use spate_testsupport::orders::{assert_each_order_once, assert_none_lost};

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use nats_common::{create_stream, server, stream_messages, unique};
use rand::Rng;

const ORDERS: usize = 3000;

fn is_poison(order: usize) -> bool {
    order % 250 == 3
}

struct Setup {
    input_stream: String,
    output_stream: String,
    dead_stream: String,
    pipeline: String,
    _dir: tempfile::TempDir,
}

async fn setup(client: &async_nats::Client, url: &str, delivery: &str) -> Setup {
    let tag = unique(delivery);
    let (input_stream, output_stream, dead_stream) = (
        format!("IN_{tag}"),
        format!("OUT_{tag}"),
        format!("DEAD_{tag}"),
    );
    create_stream(client, &input_stream, &[format!("in.{tag}")]).await;
    create_stream(client, &output_stream, &[format!("out.{tag}")]).await;
    create_stream(client, &dead_stream, &[format!("dead.{tag}")]).await;
    let js = jetstream::new(client.clone());
    let mut acks = Vec::with_capacity(ORDERS);
    for order in 0..ORDERS {
        let payload = if is_poison(order) {
            format!("not json {order}")
        } else {
            format!(r#"{{"order":{order},"amount":{}}}"#, order % 40)
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("spate-key", format!("customer-{}", order % 29).as_str());
        acks.push(
            js.publish_with_headers(format!("in.{tag}"), headers, payload.into())
                .await
                .expect("publish"),
        );
    }
    for ack in acks {
        ack.await.expect("input stored");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let text = JetStreamPipeline {
        url,
        stream: &input_stream,
        durable: &format!("orders-{tag}"),
        input_extra: "",
        ack_wait: "2s",
        fetch_wait: "500ms",
        handler: "{name: filter, field: amount, gte: 0}",
        output_subject: &format!("out.{tag}"),
        dead_subject: &format!("dead.{tag}"),
        delivery,
        ordering: "key",
        concurrency_max: 16,
        drain_timeout: "2s",
        extra: "",
    }
    .yaml();
    let pipeline = dir.path().join("pipeline.yaml");
    std::fs::write(&pipeline, text).expect("pipeline written");
    Setup {
        input_stream,
        output_stream,
        dead_stream,
        pipeline: pipeline.to_string_lossy().into_owned(),
        _dir: dir,
    }
}

fn start(pipeline: &str, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_spate"))
        .args(["run", pipeline])
        .env("SPATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("spate starts")
}

/// Every message of a stream: (order number from the payload or the
/// dead-letter payload, record id header).
async fn read_stream(client: &async_nats::Client, stream: &str) -> Vec<(usize, Option<String>)> {
    stream_messages(client, stream)
        .await
        .into_iter()
        .map(|message| {
            let order = order_of(&message.payload);
            let id = message
                .headers
                .as_ref()
                .and_then(|h| h.get("spate-record-id"))
                .map(|v| v.as_str().to_owned());
            (order, id)
        })
        .collect()
}

/// Orders that have not yet reached where they belong: valid ones without an
/// output, poison ones without a dead letter.
async fn missing_orders(setup: &Setup, client: &async_nats::Client) -> Vec<usize> {
    let outputs = counts(&read_stream(client, &setup.output_stream).await);
    let dead = counts(&read_stream(client, &setup.dead_stream).await);
    (0..ORDERS)
        .filter(|order| {
            let arrived = if is_poison(*order) { &dead } else { &outputs };
            !arrived.contains_key(order)
        })
        .collect()
}

async fn run_with_kills(setup: &Setup, client: &async_nats::Client, kills: usize) {
    let mut rng = rand::rng();
    let dir = tempfile::tempdir().expect("log dir");
    for round in 0..kills {
        let mut child = start(&setup.pipeline, &dir.path().join(format!("{round}.log")));
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..700))).await;
        child.kill().expect("kill -9");
        child.wait().expect("reaped");
    }
    let child = start(&setup.pipeline, &dir.path().join("final.log"));
    // Wait for every order to be covered, not for a message count: under
    // at-least-once a redelivered order's second output would make the count
    // reach the total while some other order is still in flight, and the
    // SIGTERM below would then leave it for a run that never comes.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let missing = missing_orders(setup, client).await;
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} orders have neither output nor dead letter after the last restart, first {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    spate_testsupport::spate_process::sigterm_when_handled(child.id());
    let mut child = child;
    let exit = child.wait().expect("spate exits");
    assert!(exit.success(), "SIGTERM ends the run cleanly: {exit}");
}

fn counts(records: &[(usize, Option<String>)]) -> BTreeMap<usize, usize> {
    let mut counts = BTreeMap::new();
    for (order, _) in records {
        *counts.entry(*order).or_insert(0) += 1;
    }
    counts
}

/// Runs the pipeline under `delivery` through twenty kills; the server
/// (running on, for the reads), its client and the setup.
async fn killed_twenty_times(delivery: &str) -> (nats_common::Server, async_nats::Client, Setup) {
    let server = server();
    let client = server.client().await;
    let setup = setup(&client, &server.url, delivery).await;
    run_with_kills(&setup, &client, 20).await;
    (server, client, setup)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_holds_each_output_once_across_twenty_kills() {
    let (_server, client, setup) = killed_twenty_times("exactly_once").await;
    // Let any late redelivery show up before reading everything.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let outputs = read_stream(&client, &setup.output_stream).await;
    let dead = read_stream(&client, &setup.dead_stream).await;
    let (output_counts, dead_counts) = (counts(&outputs), counts(&dead));
    assert_each_order_once(0..ORDERS, is_poison, &output_counts, &dead_counts);
    for (order, id) in &outputs {
        let id = id.as_deref().expect("every output carries its record id");
        assert!(
            id.starts_with(&format!("{}/0/", setup.input_stream)) && id.ends_with("/0"),
            "order {order}: {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_loses_nothing_across_twenty_kills() {
    let (_server, client, setup) = killed_twenty_times("at_least_once").await;
    let outputs = counts(&read_stream(&client, &setup.output_stream).await);
    let dead = counts(&read_stream(&client, &setup.dead_stream).await);
    assert_none_lost(
        0..ORDERS,
        is_poison,
        |order| outputs.contains_key(&order),
        |order| dead.contains_key(&order),
    );
}
