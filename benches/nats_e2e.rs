//! NATS → `passthrough` handler → NATS, end to end on a real nats-server
//! (the one at `NATS_URL` / `127.0.0.1:4222` if it answers, else
//! `nats-server -js` started here on a free port with a temporary store),
//! spate beside a raw async-nats loop doing the same work on the same
//! server and data, in the same run.
//!
//! Cases (spate runs in-process: `Runtime::load` + `Runtime::run` on the
//! generated pipeline — `handler: passthrough`, `ordering: partition`,
//! `concurrency: {min: 4, max: 64}`, `max_in_flight` events from
//! `SPATE_BENCH_MAX_IN_FLIGHT`, `metrics_address: off` — in a tokio runtime
//! of its own; each raw loop runs in a tokio runtime of its own too):
//! - `jetstream-alo`: a JetStream stream preloaded with `EVENTS` messages of
//!   `PAYLOAD` bytes → output stream, `delivery: at_least_once`
//!   (`commit_interval: 100ms`, `max_ack_pending` the larger of 10,000 and
//!   the in-flight bound plus a batch). Raw floor: a durable pull consumer
//!   fetching batches of [`FETCH_BATCH`] (the engine's read batch),
//!   publishing each message to the output subject and acking each input
//!   once its publish ack arrived, with at most `SPATE_BENCH_MAX_IN_FLIGHT`
//!   inputs between fetch and ack.
//! - `jetstream-eos`: the same with `delivery: exactly_once`
//!   (`transaction_interval: 100ms`, `transaction_max_events` at its
//!   default of 10,000: outputs carry `Nats-Msg-Id`, inputs are double-acked
//!   after the publish acks). Raw floor: the same loop with a
//!   `Nats-Msg-Id` on every publish and `double_ack` on the input.
//! - `core`: core NATS subject → core NATS subject (`delivery:
//!   at_most_once`). The output subscriber and the worker start first; probe
//!   messages go in until one comes out (probes are not counted); then
//!   `EVENTS` messages are published at full speed. Raw floor: a subscriber
//!   that republishes every message to the output subject.
//!
//! What is timed: JetStream cases, from the moment the input stream holds
//! every message (the worker, spate or raw, is started then, so its connect
//! and consumer creation, a few milliseconds, count) until the output
//! stream, polled every 5 ms, holds `EVENTS` messages. Core, from the first
//! data publish until the output subscriber counted the last output that
//! arrived; if fewer than `EVENTS` arrive (core NATS is at-most-once: a
//! subscriber that falls behind by the client's 65,536-message buffer
//! loses messages) the case reports the loss once no output came for 5 s,
//! and its rate counts only the delivered messages.
//!
//! Checked after every JetStream case, once the worker stopped: the output
//! stream holds exactly `EVENTS` messages (exactly-once: no duplicates; an
//! at-least-once surplus is reported, a shortfall fails), the dead-letter
//! stream is empty, and the input's durable consumer has nothing pending
//! and nothing awaiting an ack (allowing 5 s for the last acks, which are
//! fire-and-forget at-least-once, to reach the server). Every stream is
//! deleted after its case.
//!
//! Run: `cargo bench --bench nats_e2e`. `SPATE_BENCH_EVENTS` (100,000),
//! `SPATE_BENCH_REPEAT` (3) and `SPATE_BENCH_MAX_IN_FLIGHT` (spate's
//! per-partition bound and the raw loops' window, 5,000) override the
//! defaults; `SPATE_BENCH_CASES=spate/jetstream-alo,raw/core` runs only
//! those cases (to profile). Prints a table with medians and the ratios
//! spate/raw.

use spate_testsupport::bench::{env_usize, median, nats_setup, raw_nats, selected_cases};
use spate_testsupport::nats as nats_common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use nats_setup::{js_publish, output_subscriber, Delivery, Names};

const PAYLOAD: usize = 128;
use raw_nats::FETCH_BATCH;
/// Marks probe messages of the core case (data payloads are all `x`).
const PROBE: &[u8] = b"probe";
/// The longest a JetStream case may go without progress before it fails.
const STALL: Duration = Duration::from_secs(30);
/// How long the core case waits for one more output before it reports the
/// rest lost.
const CORE_QUIET: Duration = Duration::from_secs(5);

struct Settings {
    url: String,
    events: usize,
    in_flight: usize,
    dir: PathBuf,
}

impl Settings {
    /// Enough for the whole in-flight bound plus a fetch batch.
    fn max_ack_pending(&self) -> usize {
        (self.in_flight + FETCH_BATCH).max(10_000)
    }
}

/// One run of one case: events per second and events lost (core only).
#[derive(Clone, Copy)]
struct Outcome {
    rate: f64,
    lost: usize,
}

/// The names of one case's streams and subjects in round `round`.
fn case_names(case: &str, round: usize) -> Names {
    Names::from_tag(&nats_common::unique(&format!(
        "{}_{round}",
        case.replace(['/', '-'], "_")
    )))
}

/// Runs `work` on a fresh multi-thread tokio runtime in a thread of its own.
fn spawn_worker<F>(work: F) -> std::thread::JoinHandle<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .expect("worker runtime")
            .block_on(work)
    })
}

async fn join_worker(worker: std::thread::JoinHandle<()>) {
    tokio::task::spawn_blocking(move || worker.join())
        .await
        .expect("join task")
        .expect("worker finished without panicking");
}

/// Writes the pipeline file of a spate case and returns its path.
fn spate_pipeline(settings: &Settings, names: &Names, case: &str) -> PathBuf {
    let delivery = match case {
        "core" => Delivery::Core,
        "jetstream-eos" => Delivery::ExactlyOnce,
        _ => Delivery::AtLeastOnce,
    };
    let text = nats_setup::spate_pipeline(
        &settings.url,
        names,
        delivery,
        settings.in_flight,
        settings.max_ack_pending(),
    );
    let path = settings.dir.join(format!("{}.yaml", names.durable));
    std::fs::write(&path, text).expect("pipeline written");
    path
}

/// Starts spate on `pipeline`; it runs until `stop` is cancelled, then
/// drains and commits.
fn start_spate(pipeline: PathBuf, stop: CancellationToken) -> std::thread::JoinHandle<()> {
    spawn_worker(async move {
        let spate = spate::runtime::Runtime::new();
        let specs = spate.load(&[pipeline]).expect("bench pipeline loads");
        spate.run(specs, stop).await.expect("spate runs");
    })
}

/// Preloads the input stream with `events` messages of `PAYLOAD` bytes.
async fn preload(client: &async_nats::Client, subject: &str, events: usize) {
    let payload = Bytes::from(vec![b'x'; PAYLOAD]);
    js_publish(client, subject, events as u64, None, |_| payload.clone()).await;
}

async fn stream_len(js: &jetstream::Context, stream: &str) -> usize {
    js.get_stream(stream)
        .await
        .expect("stream")
        .info()
        .await
        .expect("stream info")
        .state
        .messages as usize
}

/// Waits until the output stream holds `events` messages; returns the
/// moment it was seen.
async fn watch_output(js: &jetstream::Context, names: &Names, events: usize) -> Instant {
    let mut last = (0, Instant::now());
    loop {
        let count = stream_len(js, &names.output_stream).await;
        let now = Instant::now();
        if count >= events {
            return now;
        }
        if count > last.0 {
            last = (count, now);
        }
        assert!(
            now.duration_since(last.1) < STALL,
            "{}: stuck at {count} of {events} outputs",
            names.output_stream
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn jetstream_case(
    client: &async_nats::Client,
    settings: &Settings,
    case: &str,
    round: usize,
) -> Outcome {
    let (mode, flavour) = case.split_once('/').expect("case is mode/flavour");
    let names = Arc::new(case_names(case, round));
    let js = jetstream::new(client.clone());
    names.create_streams(client).await;
    preload(client, &names.input, settings.events).await;
    assert_eq!(
        stream_len(&js, &names.input_stream).await,
        settings.events,
        "input fully loaded"
    );
    let exactly_once = flavour == "jetstream-eos";
    let stop = CancellationToken::new();
    let start = Instant::now();
    let worker = if mode == "raw" {
        spawn_worker(raw_nats::jetstream(
            raw_nats::JetStreamRoute {
                url: settings.url.clone(),
                input_stream: names.input_stream.clone(),
                durable: names.durable.clone(),
                output: names.output.clone(),
            },
            settings.in_flight,
            settings.max_ack_pending(),
            exactly_once,
            Some(settings.events),
            stop.clone(),
        ))
    } else {
        start_spate(spate_pipeline(settings, &names, flavour), stop.clone())
    };
    let end = watch_output(&js, &names, settings.events).await;
    stop.cancel();
    join_worker(worker).await;
    let rate = settings.events as f64 / end.duration_since(start).as_secs_f64();

    let outputs = stream_len(&js, &names.output_stream).await;
    let dead = stream_len(&js, &names.dead_stream).await;
    assert_eq!(dead, 0, "{case}: dead letters");
    if exactly_once {
        assert_eq!(outputs, settings.events, "{case}: outputs (duplicates?)");
    } else if outputs != settings.events {
        assert!(outputs > settings.events, "{case}: outputs lost");
        eprintln!(
            "{case}: {} duplicate outputs (at-least-once)",
            outputs - settings.events
        );
    }
    // Acks are fire-and-forget publishes: give the server a moment to
    // apply the last ones before calling any missing.
    let settled = Instant::now() + Duration::from_secs(5);
    loop {
        let info = js
            .get_consumer_from_stream::<pull::Config, _, _>(&names.durable, &names.input_stream)
            .await
            .expect("input consumer")
            .info()
            .await
            .expect("consumer info")
            .clone();
        if (info.num_pending, info.num_ack_pending) == (0, 0) {
            break;
        }
        assert!(
            Instant::now() < settled,
            "{case}: input not fully consumed and acked: {} pending, {} awaiting an ack",
            info.num_pending,
            info.num_ack_pending
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    names.delete_streams(client).await;
    Outcome { rate, lost: 0 }
}

/// What the core case's output subscriber saw.
#[derive(Default)]
struct Counts {
    outputs: AtomicUsize,
    probe_seen: AtomicBool,
    last_output: Mutex<Option<Instant>>,
}

async fn core_case(settings: &Settings, case: &str, round: usize) -> Outcome {
    let names = Arc::new(case_names(case, round));
    // A client of its own for the counter, with room enough never to drop.
    let (_counter_client, mut outputs) = output_subscriber(&settings.url, &names.output).await;
    let counts = Arc::new(Counts::default());
    let counter = {
        let counts = counts.clone();
        tokio::spawn(async move {
            while let Some(message) = outputs.next().await {
                if message.payload.starts_with(PROBE) {
                    counts.probe_seen.store(true, Ordering::SeqCst);
                } else {
                    let now = Instant::now();
                    counts.outputs.fetch_add(1, Ordering::SeqCst);
                    *counts.last_output.lock().expect("lock") = Some(now);
                }
            }
        })
    };
    let stop = CancellationToken::new();
    let worker = if case.starts_with("raw/") {
        spawn_worker(raw_nats::core(
            settings.url.clone(),
            names.input.clone(),
            names.output.clone(),
            stop.clone(),
        ))
    } else {
        start_spate(spate_pipeline(settings, &names, "core"), stop.clone())
    };
    let publisher = async_nats::connect(&settings.url)
        .await
        .expect("publisher connects");
    let subject = async_nats::Subject::from(names.input.as_str());
    // Probe until the worker is subscribed.
    let deadline = Instant::now() + STALL;
    while !counts.probe_seen.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "{case}: the worker never answered"
        );
        publisher
            .publish(subject.clone(), Bytes::from_static(PROBE))
            .await
            .expect("probe published");
        publisher.flush().await.expect("probe flushed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let late probes drain before the clock starts.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let payload = Bytes::from(vec![b'x'; PAYLOAD]);
    let start = Instant::now();
    for _ in 0..settings.events {
        publisher
            .publish(subject.clone(), payload.clone())
            .await
            .expect("input published");
    }
    publisher.flush().await.expect("inputs flushed");
    let mut last = (0, Instant::now());
    let delivered = loop {
        let count = counts.outputs.load(Ordering::SeqCst);
        let now = Instant::now();
        if count >= settings.events {
            break count;
        }
        if count > last.0 {
            last = (count, now);
        }
        if now.duration_since(last.1) >= CORE_QUIET {
            break count;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    stop.cancel();
    join_worker(worker).await;
    counter.abort();
    let end = counts
        .last_output
        .lock()
        .expect("lock")
        .expect("an output arrived");
    let rate = delivered as f64 / end.duration_since(start).as_secs_f64();
    Outcome {
        rate,
        lost: settings.events.saturating_sub(delivered),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a listing; nothing to list.
    }
    let events = env_usize("SPATE_BENCH_EVENTS", 100_000);
    let repeat = env_usize("SPATE_BENCH_REPEAT", 3).max(1);
    let in_flight = env_usize("SPATE_BENCH_MAX_IN_FLIGHT", 5000);
    let server = nats_common::server();
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = Settings {
        url: server.url.clone(),
        events,
        in_flight,
        dir: dir.path().to_owned(),
    };
    let all = [
        "raw/jetstream-alo",
        "spate/jetstream-alo",
        "raw/jetstream-eos",
        "spate/jetstream-eos",
        "raw/core",
        "spate/core",
    ];
    // SPATE_BENCH_CASES=spate/jetstream-alo runs only that case (to profile).
    let cases = selected_cases(&all);
    // The bench's own work (loading, watching, counting, publishing) runs
    // on one thread; each worker gets a runtime of its own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("bench runtime");
    let mut outcomes: Vec<Vec<Outcome>> = vec![Vec::new(); cases.len()];
    runtime.block_on(async {
        let client = async_nats::connect(&settings.url)
            .await
            .expect("bench client connects");
        for round in 0..repeat {
            for (index, case) in cases.iter().enumerate() {
                let outcome = if case.ends_with("/core") {
                    core_case(&settings, case, round).await
                } else {
                    jetstream_case(&client, &settings, case, round).await
                };
                let lost = if outcome.lost > 0 {
                    format!(", {} of {events} lost", outcome.lost)
                } else {
                    String::new()
                };
                eprintln!("round {round} {case}: {:.0} events/s{lost}", outcome.rate);
                outcomes[index].push(outcome);
            }
        }
    });
    let medians: Vec<f64> = outcomes
        .iter()
        .map(|runs| median(&mut runs.iter().map(|o| o.rate).collect::<Vec<_>>()))
        .collect();
    println!(
        "\nNATS -> passthrough -> NATS on {}, {events} events x {PAYLOAD} B, max_in_flight {in_flight}, median of {repeat}\n",
        settings.url
    );
    println!("| case | events/s (median) | runs | lost |");
    println!("| --- | ---: | --- | ---: |");
    for ((case, median), runs) in cases.iter().zip(&medians).zip(&outcomes) {
        let rates: Vec<String> = runs.iter().map(|o| format!("{:.0}", o.rate)).collect();
        let lost: Vec<String> = runs.iter().map(|o| o.lost.to_string()).collect();
        println!(
            "| {case} | {median:.0} | {} | {} |",
            rates.join(", "),
            lost.join(", ")
        );
    }
    println!();
    for flavour in ["jetstream-alo", "jetstream-eos", "core"] {
        let find = |mode: &str| {
            cases
                .iter()
                .position(|c| *c == format!("{mode}/{flavour}"))
                .map(|i| medians[i])
        };
        if let (Some(raw), Some(spate)) = (find("raw"), find("spate")) {
            println!("{flavour}: spate / raw = {:.2}", spate / raw);
        }
    }
    drop(server);
}
