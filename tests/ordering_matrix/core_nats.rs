//! The core NATS row: one process subscribed to a subject (no queue group)
//! of a nats-server of the test's own. Core NATS redelivers nothing, so a
//! kill or a server restart loses what was in flight or published
//! meanwhile — never a copy, and what arrives keeps each key's order.

use std::sync::{Arc, Mutex};

use async_nats::HeaderMap;

use super::check::{Order, Promise};
use super::harness::{self, Action, Publish, Row};
use super::recorder::Recorder;
use crate::nats_common::start_own;

const KEYS: u64 = 64;

fn pipeline(url: &str, recorder: &Recorder) -> String {
    harness::pipeline_yaml(
        recorder,
        &format!("type: nats\nurl: {url}\nsubject: core.matrix"),
        &format!(
            "dead_letter: {{type: nats, url: {url}, subject: dead.matrix}}\n\
             delivery: at_most_once\nordering: key\ncommit_interval: 50ms"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_nats_keeps_key_order_and_never_copies_through_kills_and_a_server_restart() {
    let server = start_own();
    let client = server.client().await;
    let recorder = Recorder::start(false).await;
    let dir = harness::workdir();
    let file = harness::write_pipeline(dir.path(), &pipeline(&server.url, &recorder));
    let publish: Publish = Arc::new(move |numbers: Vec<u64>| {
        let client = client.clone();
        Box::pin(async move {
            for n in numbers {
                let mut headers = HeaderMap::new();
                headers.insert("spate-key", harness::key_and_seq(n, KEYS).0.as_str());
                // Core NATS: what the server does not take is lost, as the
                // row allows.
                let _ = client
                    .publish_with_headers("core.matrix", headers, harness::payload(n, KEYS).into())
                    .await;
            }
            let _ = client.flush().await;
        })
    });
    // Held here too: the server outlives the run (the checks read it).
    let server = Arc::new(Mutex::new(server));
    let restart = harness::nats_restart(&server);
    let row = Row {
        name: "core-nats/key/at_most_once",
        promise: Promise {
            lossless: false,
            copies: false,
            order: Order::Key,
            exclusive: true,
        },
        actions: &[Action::Kill, Action::Handover, Action::BrokerRestart],
    };
    harness::run(&row, &recorder, &file, dir.path(), publish, Some(restart)).await;
}
