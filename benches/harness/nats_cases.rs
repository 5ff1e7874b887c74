//! Scenario 2: JetStream → no-op → JetStream (at-least-once, exactly-once)
//! and core NATS → core NATS, spate beside the raw async-nats loops, on the
//! nats-server at `NATS_URL` / 127.0.0.1:4222 if one answers, else one
//! started here (`connectors/nats/tests/common`).
//!
//! JetStream run: fresh input, output and dead-letter streams; the input is
//! preloaded with `events` stamped messages; an ordered consumer on the
//! output stream is the checker; throughput from the first output to the
//! output completing the preloaded ids; then a paced latency phase. Checked:
//! every id came out; exactly-once: no id twice and the output stream holds
//! exactly one message per input; the input's durable has nothing pending
//! and nothing awaiting an ack; no dead letters.
//!
//! Core run: the checker subscribes to the output subject, the contender
//! starts, probes go in until one comes out (probes are not counted); then
//! `events` stamped messages are published with at most [`CORE_WINDOW`]
//! outstanding (published, not yet seen at the output), so neither
//! contender's subscription buffer can overflow. Core NATS is at-most-once:
//! a lost message fails the run (it would be a real loss under flow
//! control).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use bytes::Bytes;
use futures::StreamExt;

use super::nats_setup::{js_publish, output_subscriber, Delivery, Names};
use super::proc::Contender;
use super::raw_nats::FETCH_BATCH;
use super::report::{Row, Run};
use super::tally::{self, Tally};
use super::{await_first, run_rounds, throughput_run, unique, wait_progress, Case, Ctx};
use crate::nats_common;

/// Most core messages outstanding at once.
pub const CORE_WINDOW: usize = 10_000;
const PAYLOAD: usize = 128;
const IN_FLIGHT: usize = 5_000;

/// The names of the case `slug`.
fn case_names(slug: &str) -> Names {
    Names::from_tag(&unique(slug).replace('-', "_"))
}

fn max_ack_pending() -> usize {
    (IN_FLIGHT + FETCH_BATCH).max(10_000)
}

/// Writes the spate pipeline of a case and returns its path.
fn spate_pipeline(ctx: &Ctx, url: &str, names: &Names, flavour: &str) -> String {
    let delivery = match flavour {
        "core" => Delivery::Core,
        "eos" => Delivery::ExactlyOnce,
        _ => Delivery::AtLeastOnce,
    };
    let text =
        super::nats_setup::spate_pipeline(url, names, delivery, IN_FLIGHT, max_ack_pending());
    let path = ctx.file(&format!("{}.yaml", names.durable));
    std::fs::write(&path, text).expect("pipeline written");
    path.display().to_string()
}

/// Publishes stamped messages `first..first+count` to a JetStream subject,
/// at `rate` per second (or as fast as acks allow with `None`).
async fn publish_stamped(
    client: &async_nats::Client,
    subject: &str,
    first: u64,
    count: u64,
    rate: Option<f64>,
) {
    js_publish(client, subject, count, rate, |i| {
        Bytes::from(tally::payload(first + i, PAYLOAD))
    })
    .await;
}

async fn stream_len(js: &jetstream::Context, stream: &str) -> usize {
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.map_or(0, |i| i.state.messages as usize),
        Err(_) => 0,
    }
}

fn record_into(tally: &Mutex<Tally>, payload: &[u8]) {
    let (at, at_us) = (Instant::now(), tally::now_us());
    tally.lock().expect("tally").record(payload, at, at_us);
}

fn jetstream_run(
    ctx: &Ctx,
    rt: &tokio::runtime::Runtime,
    client: &async_nats::Client,
    url: &str,
    who: &str,
    flavour: &str,
) -> Result<Run, String> {
    let slug = format!("s2-{who}-{flavour}");
    let names = case_names(&slug);
    let _runtime = rt.enter();
    let js = jetstream::new(client.clone());
    let (n, m) = (ctx.config.events, ctx.config.latency_events);
    let total = (n + m) as usize;
    rt.block_on(async {
        names.create_streams(client).await;
        publish_stamped(client, &names.input, 0, n, None).await;
    });
    let tally = Tally::shared(total, n, &[n as usize, total]);
    let checker = {
        let (js, tally, stream) = (js.clone(), tally.clone(), names.output_stream.clone());
        rt.spawn(async move {
            let consumer = js
                .get_stream(&stream)
                .await
                .expect("output stream")
                .create_consumer(pull::OrderedConfig::default())
                .await
                .expect("checker consumer");
            let mut messages = consumer.messages().await.expect("checker messages");
            while let Some(message) = messages.next().await {
                record_into(&tally, &message.expect("checker message").payload);
            }
        })
    };
    let eos = flavour == "eos";
    let command = if who == "raw" {
        let window = IN_FLIGHT.to_string();
        let pending = max_ack_pending().to_string();
        let mode = if eos { "eos" } else { "alo" };
        ctx.child(&[
            "raw-jetstream",
            url,
            &names.input_stream,
            &names.durable,
            &names.output,
            mode,
            &window,
            &pending,
        ])
    } else {
        ctx.child(&["spate", &spate_pipeline(ctx, url, &names, flavour)])
    };
    let log = ctx.file(&format!("{}.log", names.durable));
    let mut contender = Contender::spawn(&slug, command, &log);
    let unique_now = || tally.lock().expect("tally").unique;
    await_first(
        &slug,
        Duration::from_secs(60),
        &mut || unique_now() > 0,
        &mut || contender.assert_alive(),
    )?;
    let stall = Duration::from_secs(30);
    let check = &mut || contender.assert_alive();
    wait_progress(
        &slug,
        stall,
        &unique_now,
        &|| unique_now() >= n as usize,
        check,
    )?;
    rt.block_on(publish_stamped(
        client,
        &names.input,
        n,
        m,
        Some(ctx.config.latency_rate),
    ));
    wait_progress(&slug, stall, &unique_now, &|| unique_now() >= total, check)?;
    // Every input consumed and acked (acks are fire-and-forget: allow 10 s).
    let settled = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info = match js
                .get_consumer_from_stream::<pull::Config, _, _>(&names.durable, &names.input_stream)
                .await
            {
                Ok(mut consumer) => consumer.info().await.ok().cloned(),
                Err(_) => None,
            };
            let state = info.map(|i| (i.num_pending, i.num_ack_pending));
            if state == Some((0, 0)) || Instant::now() > deadline {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let stopped = contender.stop(Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    checker.abort();
    let (outputs, dead) = rt.block_on(async {
        (
            stream_len(&js, &names.output_stream).await,
            stream_len(&js, &names.dead_stream).await,
        )
    });
    rt.block_on(names.delete_streams(client));
    let tally = tally.lock().expect("tally");
    if settled != Some((0, 0)) {
        return Err(format!(
            "{slug}: input consumer not settled: {settled:?} (pending, awaiting ack)"
        ));
    }
    if dead > 0 {
        return Err(format!("{slug}: {dead} dead letters"));
    }
    if eos && (tally.duplicates > 0 || outputs != total) {
        return Err(format!(
            "{slug}: exactly-once broken: {outputs} outputs for {total} inputs, {} duplicate ids",
            tally.duplicates
        ));
    }
    finish(&tally, &stopped, n, outputs.saturating_sub(total), 0)
}

/// The figures of a verified run; an output-stream surplus counts as
/// duplicates.
fn finish(
    tally: &Tally,
    stopped: &super::proc::Stopped,
    n: u64,
    surplus: usize,
    lost: usize,
) -> Result<Run, String> {
    let duplicates = tally.duplicates.max(surplus);
    let note = if duplicates > 0 {
        format!("{duplicates} duplicates")
    } else {
        String::new()
    };
    throughput_run(tally, stopped, n, duplicates, lost, note)
}

fn core_run(ctx: &Ctx, rt: &tokio::runtime::Runtime, url: &str, who: &str) -> Result<Run, String> {
    let slug = format!("s2-{who}-core");
    let names = case_names(&slug);
    let _runtime = rt.enter();
    let (n, m) = (ctx.config.events, ctx.config.latency_events);
    let total = (n + m) as usize;
    let tally = Tally::shared(total, n, &[n as usize, total]);
    let (publisher, checker) = rt.block_on(async {
        let (counter, mut outputs) = output_subscriber(url, &names.output).await;
        let tally = tally.clone();
        let checker = tokio::spawn(async move {
            let _keep = counter;
            while let Some(message) = outputs.next().await {
                record_into(&tally, &message.payload);
            }
        });
        let publisher = async_nats::connect(url).await.expect("publisher connects");
        (publisher, checker)
    });
    let command = if who == "raw" {
        ctx.child(&["raw-core", url, &names.input, &names.output])
    } else {
        ctx.child(&["spate", &spate_pipeline(ctx, url, &names, "core")])
    };
    let log = ctx.file(&format!("{}.log", names.durable));
    let mut contender = Contender::spawn(&slug, command, &log);
    let subject = async_nats::Subject::from(names.input.as_str());
    let strays = || tally.lock().expect("tally").strays;
    let deadline = Instant::now() + Duration::from_secs(30);
    while strays() == 0 {
        contender.assert_alive();
        if Instant::now() > deadline {
            return Err(format!("{slug}: the contender never answered a probe"));
        }
        rt.block_on(async {
            publisher
                .publish(subject.clone(), Bytes::from_static(b"probe"))
                .await
                .expect("probe");
            publisher.flush().await.expect("probe flushed");
        });
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let unique_now = || tally.lock().expect("tally").unique;
    rt.block_on(async {
        let mut id = 0u64;
        while id < n {
            if (id as usize).saturating_sub(unique_now()) >= CORE_WINDOW {
                publisher.flush().await.expect("flushed");
                tokio::time::sleep(Duration::from_micros(200)).await;
                continue;
            }
            let payload = Bytes::from(tally::payload(id, PAYLOAD));
            publisher
                .publish(subject.clone(), payload)
                .await
                .expect("published");
            id += 1;
        }
        publisher.flush().await.expect("flushed");
        let start = Instant::now();
        for id in n..n + m {
            let due = start + Duration::from_secs_f64((id - n) as f64 / ctx.config.latency_rate);
            tokio::time::sleep_until(due.into()).await;
            let payload = Bytes::from(tally::payload(id, PAYLOAD));
            publisher
                .publish(subject.clone(), payload)
                .await
                .expect("published");
            publisher.flush().await.expect("flushed");
        }
    });
    let quiet = Duration::from_secs(5);
    let waited = wait_progress(
        &slug,
        quiet,
        &unique_now,
        &|| unique_now() >= total,
        &mut || contender.assert_alive(),
    );
    let stopped = contender.stop(Duration::from_secs(30));
    checker.abort();
    let tally = tally.lock().expect("tally");
    let lost = total - tally.unique;
    if waited.is_err() || lost > 0 {
        return Err(format!(
            "{slug}: {lost} of {total} messages lost (at-most-once)"
        ));
    }
    finish(&tally, &stopped, n, 0, lost)
}

/// Scenario 2: rows in table order, and the server's version and URL.
pub fn scenario_2(ctx: &Ctx) -> (Vec<Row>, String) {
    let server = nats_common::server();
    let url = server.url.clone();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let client = rt
        .block_on(async_nats::connect(&url))
        .expect("bench client connects");
    let version = format!("{} at {url}", client.server_info().version);
    let mut cases: Vec<Case> = Vec::new();
    for (flavour, guarantee) in [
        ("alo", "at-least-once"),
        ("eos", "exactly-once"),
        ("core", "at-most-once"),
    ] {
        let scenario = if flavour == "core" {
            "2 core NATS"
        } else {
            "2 JetStream"
        };
        for (who, label) in [("raw", "raw async-nats"), ("spate", "spate")] {
            if !ctx.config.runs(who) {
                continue;
            }
            let (rt, client, url) = (&rt, &client, &url);
            cases.push((
                Row::new(scenario, label, guarantee),
                Box::new(move |_round| {
                    if flavour == "core" {
                        core_run(ctx, rt, url, who)
                    } else {
                        jetstream_run(ctx, rt, client, url, who, flavour)
                    }
                }),
            ));
        }
    }
    run_rounds(&mut cases, ctx.config.repeat);
    let rows = cases.into_iter().map(|(row, _)| row).collect();
    drop(server);
    (rows, version)
}
