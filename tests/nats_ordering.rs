//! Ordering on JetStream subject partitions, end to end: two `spate`
//! processes share a 4-partition source (the server's subject mapping puts
//! a hash of the device token into the subject), one joins mid-stream and
//! takes half the partitions over. With `ordering: key` and `partition`,
//! every device's outputs are in input order across both processes
//! (input keeps flowing while the partitions move); with
//! `none`, every input still has exactly one output. Each process publishes
//! to its own output subject (one stream captures both), so the test also
//! sees that both did work.

use spate_testsupport::nats as nats_common;
use spate_testsupport::nats::JetStreamPipeline;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use nats_common::{create_stream, start_own_with_config, stream_len, stream_messages, unique};

const PARTITIONS: u32 = 4;
const DEVICES: usize = 40;
const ORDERS: usize = 6000;

fn mapping_config() -> String {
    format!(
        "mappings = {{\n  \"ord.*\": \"pord.{{{{partition({PARTITIONS},1)}}}}.{{{{wildcard(1)}}}}\"\n}}\n"
    )
}

fn pipeline(url: &str, tag: &str, ordering: &str) -> String {
    JetStreamPipeline {
        url,
        stream: &format!("IN_{tag}"),
        durable: &format!("orders-{tag}"),
        input_extra: &format!(
            "      partitions: {PARTITIONS}\n      partition_subject: \"pord.{{partition}}.*\"\n      key_token: 3\n      lease_ttl: 2s\n"
        ),
        ack_wait: "30s",
        fetch_wait: "300ms",
        handler: "{name: filter, field: amount, gte: 0}",
        output_subject: "${OUT_SUBJECT}",
        dead_subject: &format!("dead.{tag}"),
        delivery: "at_least_once",
        ordering,
        concurrency_max: 16,
        drain_timeout: "5s",
        extra: "",
    }
    .yaml()
}

fn start(pipeline: &Path, out_subject: &str, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_spate"))
        .arg("run")
        .arg(pipeline)
        .env("SPATE_LOG", "warn")
        .env("OUT_SUBJECT", out_subject)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("spate starts")
}

async fn publish(client: &async_nats::Client, orders: std::ops::Range<usize>) {
    let js = jetstream::new(client.clone());
    let mut acks = Vec::new();
    for order in orders {
        let payload = format!(r#"{{"order":{order},"amount":{}}}"#, order % 50);
        acks.push(
            js.publish(format!("ord.dev-{}", order % DEVICES), payload.into())
                .await
                .expect("publish"),
        );
    }
    for ack in acks {
        ack.await.expect("stored");
    }
}

async fn output_count(client: &async_nats::Client, stream: &str) -> usize {
    stream_len(client, stream).await.expect("stream exists")
}

/// The output stream in stream order: (subject, order).
async fn read_outputs(client: &async_nats::Client, stream: &str) -> Vec<(String, usize)> {
    stream_messages(client, stream)
        .await
        .into_iter()
        .map(|message| {
            let value: serde_json::Value = serde_json::from_slice(&message.payload).expect("JSON");
            (
                message.subject.to_string(),
                value["order"].as_u64().expect("order") as usize,
            )
        })
        .collect()
}

async fn wait_for_outputs(client: &async_nats::Client, stream: &str, at_least: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = output_count(client, stream).await;
        if n >= at_least {
            return;
        }
        assert!(Instant::now() < deadline, "only {n} of {at_least} outputs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the partitions' leases have two distinct owners.
async fn wait_for_two_owners(client: &async_nats::Client, durable: &str) {
    let js = jetstream::new(client.clone());
    let store = js
        .get_key_value(format!("spate-leases-{durable}"))
        .await
        .expect("lease bucket");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut owners = std::collections::BTreeSet::new();
        for p in 0..PARTITIONS {
            if let Ok(Some(owner)) = store.get(format!("p.{p}")).await {
                owners.insert(owner);
            }
        }
        if owners.len() == 2 {
            return;
        }
        assert!(Instant::now() < deadline, "the partitions never split");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn two_processes_keep_order(ordering: &str) {
    let server = start_own_with_config(&mapping_config());
    let client = server.client().await;
    let tag = unique(ordering);
    create_stream(&client, &format!("IN_{tag}"), &["pord.*.*".to_owned()]).await;
    let out_stream = format!("OUT_{tag}");
    create_stream(&client, &out_stream, &[format!("out.{tag}.*")]).await;
    create_stream(&client, &format!("DEAD_{tag}"), &[format!("dead.{tag}")]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(&file, pipeline(&server.url, &tag, ordering)).expect("pipeline");

    // Input flows at a steady rate for about three seconds, so the second
    // process joins, and partitions move, while the first is busy.
    let publisher = {
        let client = client.clone();
        tokio::spawn(async move {
            for chunk in (0..ORDERS).step_by(100) {
                publish(&client, chunk..chunk + 100).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let first = start(&file, &format!("out.{tag}.a"), &dir.path().join("a.log"));
    wait_for_outputs(&client, &out_stream, ORDERS / 8).await;
    let second = start(&file, &format!("out.{tag}.b"), &dir.path().join("b.log"));
    wait_for_two_owners(&client, &format!("orders-{tag}")).await;
    eprintln!(
        "split at {} outputs",
        output_count(&client, &out_stream).await
    );
    publisher.await.expect("publisher");
    wait_for_outputs(&client, &out_stream, ORDERS).await;
    for child in [first, second] {
        spate_testsupport::spate_process::sigterm_when_handled(child.id());
        let mut child = child;
        let exit = child.wait().expect("spate exits");
        assert!(exit.success(), "SIGTERM ends the run cleanly: {exit}");
    }

    let outputs = read_outputs(&client, &out_stream).await;
    let mut per_order = BTreeMap::new();
    let mut per_process = BTreeMap::new();
    let mut last_per_device: BTreeMap<usize, usize> = BTreeMap::new();
    let mut out_of_order = Vec::new();
    for (subject, order) in &outputs {
        *per_order.entry(*order).or_insert(0) += 1;
        *per_process.entry(subject.clone()).or_insert(0) += 1;
        let device = order % DEVICES;
        if let Some(previous) = last_per_device.insert(device, *order) {
            if previous > *order {
                out_of_order.push((device, previous, *order));
            }
        }
    }
    assert_eq!(per_order.len(), ORDERS, "every order has an output");
    assert!(
        per_order.values().all(|n| *n == 1),
        "no output twice (no kills, no redelivery)"
    );
    assert_eq!(
        per_process.len(),
        2,
        "both processes did work: {per_process:?}"
    );
    if ordering != "none" {
        assert!(
            out_of_order.is_empty(),
            "per-device order broken (device, before, after): {:?}",
            &out_of_order[..out_of_order.len().min(10)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_order_holds_across_partitions_and_a_hand_over() {
    two_processes_keep_order("key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_order_holds_across_partitions_and_a_hand_over() {
    two_processes_keep_order("partition").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unordered_processing_still_yields_each_output_once() {
    two_processes_keep_order("none").await;
}
