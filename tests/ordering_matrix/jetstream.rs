//! JetStream rows, each on a nats-server of the test's own (so the broker
//! restart is the test's to do): a shared durable (one partition, a work
//! queue over every process) and subject partitions (4 partitions by a
//! hash of the key in the subject, each leased to one process).
//!
//! The subject-partition rows check that order survives kill -9, which
//! holds thanks to the takeover from the ack floor (issue 19).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::HeaderMap;

use super::check::{Order, Promise};
use super::harness::{self, Publish, Row};
use super::recorder::Recorder;
use crate::nats_common::{create_stream, start_own, start_own_with_config, stream_messages};

const KEYS: u64 = 64;
const PARTITIONS: u32 = 4;

/// Where a row's source is.
enum Layout {
    /// One durable read by every process.
    Shared,
    /// `partitions: 4` over `pord.<p>.<key>`.
    Partitions,
}

struct Setup {
    layout: Layout,
    delivery: &'static str,
    ordering: &'static str,
}

fn input_yaml(url: &str, layout: &Layout) -> String {
    let common = format!(
        "type: jetstream\nurl: {url}\nstream: IN\ndurable: matrix\nack_wait: 3s\nfetch_wait: 300ms"
    );
    match layout {
        Layout::Shared => common,
        Layout::Partitions => format!(
            "{common}\npartitions: {PARTITIONS}\npartition_subject: \"pord.{{partition}}.*\"\n\
             key_token: 3\nlease_ttl: 2s"
        ),
    }
}

fn pipeline(url: &str, recorder: &Recorder, setup: &Setup) -> String {
    let exactly_once = setup.delivery == "exactly_once";
    let (outputs, timing) = if exactly_once {
        (
            format!("outputs: [{{type: jetstream, url: {url}, subject: out.matrix}}]\n"),
            "transaction_interval: 50ms",
        )
    } else {
        (String::new(), "commit_interval: 50ms")
    };
    let rest = format!(
        "{outputs}dead_letter: {{type: jetstream, url: {url}, subject: dead.matrix}}\n\
         delivery: {}\nordering: {}\n{timing}",
        setup.delivery, setup.ordering,
    );
    harness::pipeline_yaml(recorder, &input_yaml(url, &setup.layout), &rest)
}

fn subject(layout: &Layout, n: u64) -> String {
    match layout {
        Layout::Shared => "in.matrix".to_owned(),
        Layout::Partitions => format!("ord.{}", harness::key_and_seq(n, KEYS).0),
    }
}

/// Publishes each event with `Nats-Msg-Id`, retrying until stored (the
/// server may be coming back from a restart), so none is stored twice.
fn publisher(client: async_nats::Client, partitioned: bool) -> Publish {
    Arc::new(move |numbers: Vec<u64>| {
        let js = jetstream::new(client.clone());
        let layout = if partitioned {
            Layout::Partitions
        } else {
            Layout::Shared
        };
        Box::pin(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            for n in numbers {
                loop {
                    let mut headers = HeaderMap::new();
                    headers.insert("spate-key", harness::key_and_seq(n, KEYS).0.as_str());
                    headers.insert("Nats-Msg-Id", format!("m{n}").as_str());
                    let sent = js
                        .publish_with_headers(
                            subject(&layout, n),
                            headers,
                            harness::payload(n, KEYS).into(),
                        )
                        .await;
                    let stored = match sent {
                        Ok(ack) => ack.await.is_ok(),
                        Err(_) => false,
                    };
                    if stored {
                        break;
                    }
                    assert!(Instant::now() < deadline, "event {n} never stored");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
    })
}

fn mapping_config() -> String {
    format!(
        "mappings = {{\n  \"ord.*\": \"pord.{{{{partition({PARTITIONS},1)}}}}.{{{{wildcard(1)}}}}\"\n}}\n"
    )
}

async fn row(name: &'static str, setup: Setup, promise: Promise) {
    let server = match setup.layout {
        Layout::Shared => start_own(),
        Layout::Partitions => start_own_with_config(&mapping_config()),
    };
    let client = server.client().await;
    let input_subjects = match setup.layout {
        Layout::Shared => vec!["in.matrix".to_owned()],
        Layout::Partitions => vec!["pord.*.*".to_owned()],
    };
    create_stream(&client, "IN", &input_subjects).await;
    create_stream(&client, "OUT", &["out.matrix".to_owned()]).await;
    create_stream(&client, "DEAD", &["dead.matrix".to_owned()]).await;
    let exactly_once = setup.delivery == "exactly_once";
    let recorder = Recorder::start(exactly_once).await;
    let dir = harness::workdir();
    let file = harness::write_pipeline(dir.path(), &pipeline(&server.url, &recorder, &setup));
    let publish = publisher(client.clone(), matches!(setup.layout, Layout::Partitions));
    // Held here too: the server outlives the run (the checks read it).
    let server = Arc::new(Mutex::new(server));
    let restart = harness::nats_restart(&server);
    let row = Row {
        name,
        promise,
        actions: harness::FULL_CHAOS,
    };
    let outcome = harness::run(&row, &recorder, &file, dir.path(), publish, Some(restart)).await;
    if exactly_once {
        outputs_exactly_once(&client, outcome.report.published as u64, promise.order).await;
    }
}

/// Under exactly-once the output stream holds every event once, and (when
/// the row keeps order) each key's outputs in publish order.
async fn outputs_exactly_once(client: &async_nats::Client, published: u64, order: Order) {
    let outputs = stream_messages(client, "OUT").await;
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    let mut newest: BTreeMap<String, u64> = BTreeMap::new();
    let mut out_of_order = Vec::new();
    for message in &outputs {
        let value: serde_json::Value =
            serde_json::from_slice(&message.payload).expect("JSON output");
        let n = value["n"].as_u64().expect("n");
        *count.entry(n).or_default() += 1;
        let key = harness::key_and_seq(n, KEYS).0;
        let last = newest.entry(key.clone()).or_insert(n);
        if *last > n {
            out_of_order.push((key, *last, n));
        }
        *last = (*last).max(n);
    }
    let copies: Vec<(&u64, &usize)> = count.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        copies.is_empty(),
        "outputs written twice (n, times): {:?}",
        &copies[..copies.len().min(20)]
    );
    assert_eq!(count.len() as u64, published, "every event has its output");
    if order != Order::None {
        assert!(
            out_of_order.is_empty(),
            "outputs out of key order: {:?}",
            &out_of_order[..out_of_order.len().min(20)]
        );
    }
}

/// A row's source layout, delivery and ordering.
const fn setup(layout: Layout, delivery: &'static str, ordering: &'static str) -> Setup {
    Setup {
        layout,
        delivery,
        ordering,
    }
}

/// What the subject-partition rows promise: nothing lost, copies allowed,
/// `order` kept, and never two calls of one key at once (a partition is
/// leased to one process).
const fn leased(order: Order) -> Promise {
    Promise {
        lossless: true,
        copies: true,
        order,
        exclusive: true,
    }
}

/// A shared durable keeps nothing of order across processes or crashes
/// (see the contract): the row proves no loss and reports the rest.
const SHARED: Promise = Promise {
    lossless: true,
    copies: true,
    order: Order::None,
    exclusive: false,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_shared_durable_loses_nothing_through_kills_scaling_and_a_server_restart() {
    let setup = setup(Layout::Shared, "at_least_once", "key");
    row("jetstream-shared/key/at_least_once", setup, SHARED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_shared_durable_writes_each_output_once_under_exactly_once() {
    let setup = setup(Layout::Shared, "exactly_once", "none");
    row("jetstream-shared/none/exactly_once", setup, SHARED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_partitions_keep_key_order_through_kills_scaling_and_a_server_restart() {
    let setup = setup(Layout::Partitions, "at_least_once", "key");
    let promise = leased(Order::Key);
    row("jetstream-partitions/key/at_least_once", setup, promise).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_partitions_keep_partition_order_through_kills_scaling_and_a_server_restart() {
    let setup = setup(Layout::Partitions, "at_least_once", "partition");
    let promise = leased(Order::Partition);
    row(
        "jetstream-partitions/partition/at_least_once",
        setup,
        promise,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_partitions_keep_key_order_and_write_each_output_once_under_exactly_once() {
    let setup = setup(Layout::Partitions, "exactly_once", "key");
    let promise = leased(Order::Key);
    row("jetstream-partitions/key/exactly_once", setup, promise).await;
}
