//! Backpressure on a real Kafka-protocol broker (Tansu): a handler much
//! slower than the input makes the engine pause the Kafka partitions at the
//! in-flight bound, memory stays well below the topic's size while a topic
//! hundreds of times larger than the bound is worked through, and every
//! event is read and handled exactly once, and committed.
//!
//! This test installs a process-wide metrics recorder, so it lives in its
//! own test binary.

use spate_testsupport::kafka::blocking as kafka_common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kafka_common::Tansu;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use spate::handler::{Context, HandlerError, Output};
use spate::Event;
use tokio_util::sync::CancellationToken;

const EVENTS: usize = 16_000;
const PAYLOAD: usize = 4096;

fn gauge(snapshotter: &Snapshotter, name: &str) -> f64 {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, _, _, _)| key.key().name() == name)
        .filter_map(|(_, _, _, value)| match value {
            DebugValue::Gauge(v) => Some(v.into_inner()),
            _ => None,
        })
        .sum()
}

/// Resident set size of this process, in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

static HANDLED: AtomicU64 = AtomicU64::new(0);

async fn slow(_event: Event, _ctx: &Context) -> Result<Vec<Output>, HandlerError> {
    tokio::time::sleep(Duration::from_millis(1)).await;
    HANDLED.fetch_add(1, Ordering::SeqCst);
    Ok(vec![])
}

#[test]
fn a_slow_handler_pauses_partitions_and_memory_stays_flat() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("first recorder of this binary");

    let broker = Tansu::start();
    broker.create_topic("bp-in", 2);
    broker.create_topic("bp-out", 1);
    broker.create_topic("bp-dead", 1);
    let payload = vec![b'r'; PAYLOAD];
    let records: Vec<(String, Vec<u8>)> = (0..EVENTS)
        .map(|i| (format!("device-{}", i % 50), payload.clone()))
        .collect();
    broker.produce("bp-in", 2, &records);

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bp.yaml");
    std::fs::write(
        &file,
        format!(
            r#"settings:
  metrics_address: off
functions:
  - name: slow-sink
    input:
      type: kafka
      bootstrap_servers: {b}
      topics: [bp-in]
      group_id: bp-group
      session_timeout: 6s
    handler: slow
    outputs: [{{type: kafka, bootstrap_servers: {b}, topic: bp-out}}]
    dead_letter: {{type: kafka, bootstrap_servers: {b}, topic: bp-dead}}
    ordering: key
    concurrency: {{min: 1, max: 8}}
    max_in_flight: {{events: 200, bytes: 256KiB}}
    commit_interval: 200ms
"#,
            b = broker.bootstrap
        ),
    )
    .expect("pipeline written");

    let mut runtime = spate::runtime::Runtime::new();
    runtime.registry_mut().register("slow", slow);
    let specs = runtime.load(&[&file]).expect("pipeline loads");
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let tokio_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let run = tokio_runtime.spawn(async move { runtime.run(specs, stop).await });

    let before_run = rss_bytes();
    let started = Instant::now();
    let (mut peak_rss, mut peak_paused) = (0u64, 0.0f64);
    let deadline = Instant::now() + Duration::from_secs(240);
    while (HANDLED.load(Ordering::SeqCst) as usize) < EVENTS {
        let handled = HANDLED.load(Ordering::SeqCst);
        assert!(
            Instant::now() < deadline,
            "only {handled} of {EVENTS} handled"
        );
        peak_rss = peak_rss.max(rss_bytes());
        peak_paused = peak_paused.max(gauge(&snapshotter, spate::observability::PAUSED_PARTITIONS));
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    let reports = tokio_runtime
        .block_on(run)
        .expect("no panic")
        .expect("run ends cleanly");
    let growth = peak_rss.saturating_sub(before_run);
    let topic_bytes = (EVENTS * PAYLOAD) as u64;
    eprintln!(
        "handled {EVENTS} events ({} MiB) in {elapsed:?}; RSS {} MiB before the run, peak {} MiB; peak paused partitions {peak_paused}",
        topic_bytes >> 20,
        before_run >> 20,
        peak_rss >> 20
    );
    assert!(
        peak_paused >= 1.0,
        "the slow handler never made the engine pause a partition"
    );
    // Without pausing, librdkafka prefetches the whole topic (its queue holds
    // up to 64 MiB by default) or the source holds it: growth would be the
    // topic's size or more. With pausing it is librdkafka's and the
    // allocator's working set plus the source's hold (2 MiB a partition):
    // about 25 MiB here.
    assert!(
        growth < topic_bytes * 3 / 4,
        "RSS grew by {} MiB while reading a {} MiB topic",
        growth >> 20,
        topic_bytes >> 20
    );
    assert_eq!(
        reports[0].events_in as usize, EVENTS,
        "each event read once"
    );
    assert_eq!(
        reports[0].handled as usize, EVENTS,
        "each event handled once"
    );
    let committed: i64 = broker.committed("bp-group", "bp-in", 2).values().sum();
    assert_eq!(
        committed as usize, EVENTS,
        "every offset committed at shutdown"
    );
}
