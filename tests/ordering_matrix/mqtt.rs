//! MQTT rows on a Mosquitto of the test's own (no in-flight window, see the
//! README): `mqtt` — QoS 1, a persistent session under one client id, acked
//! on commit, so whatever a killed process had not acknowledged comes back
//! when the next one connects — and `mqtt_at_most_once` — a clean session,
//! nothing redelivered. One client id is one session, so one process at a
//! time: these rows have no scaling (a second process with the same client
//! id takes the session over from the first).

use std::sync::{Arc, Mutex};

use super::check::{Order, Promise};
use super::harness::{self, Action, Publish, Restart, Row};
use super::recorder::Recorder;
use crate::iot_common::{self, Broker, Fate, Reading};

const KEYS: u64 = 64;
const FILTER: &str = "devices/+/telemetry";

fn pipeline(broker: &Broker, recorder: &Recorder, kind: &str, dir: &std::path::Path) -> String {
    let (session, delivery) = if kind == "mqtt" {
        ("\nclient_id: spate-matrix", "at_least_once")
    } else {
        ("", "at_most_once")
    };
    let input = format!(
        "type: {kind}\nurl: {url}\ntopics: {FILTER}{session}\n\
         key_level: 2\npartitions: 4\npartition_level: 2",
        url = broker.url,
    );
    let rest = format!(
        "dead_letter: {{type: file, path: {dead}}}\n\
         delivery: {delivery}\nordering: key\ncommit_interval: 50ms",
        dead = dir.join("dead.jsonl").display(),
    );
    harness::pipeline_yaml(recorder, &input, &rest)
}

fn publisher(port: u16) -> Publish {
    Arc::new(move |numbers: Vec<u64>| {
        let readings: Vec<Reading> = numbers
            .iter()
            .map(|&n| {
                let (key, seq) = harness::key_and_seq(n, KEYS);
                Reading {
                    device: key,
                    seq: Some(seq),
                    ts: iot_common::T0,
                    temperature: 20.0,
                    payload: harness::payload(n, KEYS),
                    fate: Fate::Counted,
                }
            })
            .collect();
        Box::pin(async move { iot_common::publish(port, &readings, 0).await })
    })
}

async fn row(name: &'static str, kind: &str, promise: Promise, actions: &'static [Action]) {
    let broker = iot_common::broker_persistent();
    if kind == "mqtt" {
        broker.create_session("spate-matrix", FILTER).await;
    }
    let recorder = Recorder::start(false).await;
    let dir = harness::workdir();
    let text = pipeline(&broker, &recorder, kind, dir.path());
    let file = harness::write_pipeline(dir.path(), &text);
    let publish = publisher(broker.port);
    let broker = Arc::new(Mutex::new(broker));
    let restart: Restart = {
        let broker = broker.clone();
        Box::new(move || broker.lock().unwrap_or_else(|p| p.into_inner()).restart())
    };
    let row = Row {
        name,
        promise,
        actions,
    };
    harness::run(&row, &recorder, &file, dir.path(), publish, Some(restart)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_persistent_session_keeps_key_order_through_kills_handovers_and_a_broker_restart() {
    let promise = Promise {
        lossless: true,
        copies: true,
        order: Order::Key,
        exclusive: true,
    };
    let chaos = &[Action::Kill, Action::Handover, Action::BrokerRestart];
    row("mqtt/key/at_least_once", "mqtt", promise, chaos).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_at_most_once_keeps_key_order_and_never_copies_through_kills_and_handovers() {
    let promise = Promise {
        lossless: false,
        copies: false,
        order: Order::Key,
        exclusive: true,
    };
    row(
        "mqtt_at_most_once/key/at_most_once",
        "mqtt_at_most_once",
        promise,
        &[Action::Kill, Action::Handover],
    )
    .await;
}
