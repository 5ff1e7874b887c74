//! The contender side of the comparison: `compare child <kind> …` runs one
//! Rust contender in this process, so the harness can measure it as a
//! process of its own, exactly as it measures the Python peers.
//!
//! Kinds:
//! - `spate <pipeline.yaml>`: `spate::runtime::Runtime` (the library
//!   `spate run` uses) with the built-in handlers and `bench-sleep`
//!   registered; graceful stop on SIGTERM (drain, commit).
//! - `raw-kafka <bootstrap> <group> <input> <output> <alo|eos>
//!   <session_ms> <fetch_wait_ms>`: [`super::raw_kafka::raw_loop`].
//! - `raw-jetstream <url> <stream> <durable> <output> <alo|eos> <window>
//!   <max_ack_pending>` and `raw-core <url> <input> <output>`: the loops of
//!   [`super::raw_nats`].
//! - `plain-demo <count> <output> <dead_letters>`: the demo's work with no
//!   engine, [`super::demo_cases::plain_loop`]; then waits for SIGTERM.
//!
//! With `SPATE_BENCH_HOLD` set, `spate` too waits for SIGTERM after its
//! pipeline ends (a bounded source), so the harness samples it past the end.
//!
//! `bench-sleep` awaits `SPATE_BENCH_SLEEP_US` microseconds
//! (`tokio::time::sleep`) and forwards the event unchanged; with
//! `SPATE_BENCH_SLEEP_UNTIL_US` set (wall clock, µs since the epoch) it only
//! sleeps before that moment and is a pass-through after it. On exit the
//! child prints `bench-sleep: calls=N mean_us=M` (the time the awaits
//! really took) for the harness to read.
//!
//! Guarantees: every kind stops on SIGTERM after finishing what it started
//! (spate: drain and commit; raw loops: see their modules) and exits 0.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{demo_cases, raw_kafka, raw_nats, tally};

static SLEEP_CALLS: AtomicU64 = AtomicU64::new(0);
static SLEEP_TOTAL_US: AtomicU64 = AtomicU64::new(0);

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

async fn bench_sleep(
    event: spate::Event,
    _ctx: &spate::handler::Context,
) -> Result<Vec<spate::handler::Output>, spate::handler::HandlerError> {
    let sleep_us = env_u64("SPATE_BENCH_SLEEP_US").unwrap_or(0);
    let until = env_u64("SPATE_BENCH_SLEEP_UNTIL_US");
    if sleep_us > 0 && until.is_none_or(|u| tally::now_us() < u) {
        let start = Instant::now();
        tokio::time::sleep(Duration::from_micros(sleep_us)).await;
        SLEEP_CALLS.fetch_add(1, Ordering::Relaxed);
        SLEEP_TOTAL_US.fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
    Ok(vec![spate::handler::Output::from_event(
        &event,
        event.payload.clone(),
    )])
}

/// A token cancelled on SIGTERM or SIGINT (needs a running tokio runtime).
fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        cancel.cancel();
    });
    token
}

fn arg<'a>(args: &'a [String], index: usize, what: &str) -> &'a str {
    args.get(index)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("compare child: missing argument {index} ({what})"))
}

/// Runs the child named by `args` (everything after `child`).
pub fn main(args: &[String]) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let kind = arg(args, 0, "kind");
    match kind {
        "spate" => {
            let path = arg(args, 1, "pipeline").to_owned();
            runtime.block_on(async move {
                let mut spate = spate::runtime::Runtime::new();
                spate.registry_mut().register("bench-sleep", bench_sleep);
                let specs = spate
                    .load(&[path])
                    .unwrap_or_else(|e| panic!("bench pipeline invalid:\n{e}"));
                let stop = on_signal();
                // As `spate run` does: the metrics endpoint first, so the
                // recorder is installed before the function registers.
                let health = spate::serve::Health::new();
                let server = match specs.first().and_then(|s| s.settings.metrics_address) {
                    Some(address) => Some(
                        spate::serve::start(address, health.clone())
                            .await
                            .expect("metrics endpoint"),
                    ),
                    None => None,
                };
                health.set_ready(true);
                spate.run(specs, stop.clone()).await.expect("spate runs");
                if let Some(server) = server {
                    server.shutdown().await;
                }
                if std::env::var_os(demo_cases::HOLD_ENV).is_some() {
                    stop.cancelled().await;
                }
            });
            let calls = SLEEP_CALLS.load(Ordering::Relaxed);
            let total = SLEEP_TOTAL_US.load(Ordering::Relaxed);
            eprintln!(
                "bench-sleep: calls={calls} mean_us={}",
                total.checked_div(calls).unwrap_or(0)
            );
        }
        "raw-kafka" => {
            let stop = Arc::new(AtomicBool::new(false));
            {
                let stop = stop.clone();
                runtime.spawn(async move {
                    on_signal().cancelled().await;
                    stop.store(true, Ordering::SeqCst);
                });
            }
            let session_ms: u32 = arg(args, 6, "session_ms").parse().expect("session_ms");
            let fetch_wait_ms: u32 = arg(args, 7, "fetch_wait_ms")
                .parse()
                .expect("fetch_wait_ms");
            raw_kafka::raw_loop(
                arg(args, 1, "bootstrap"),
                arg(args, 2, "group"),
                arg(args, 3, "input"),
                arg(args, 4, "output"),
                arg(args, 5, "alo|eos") == "eos",
                (session_ms, fetch_wait_ms),
                &stop,
                &|| {},
            );
        }
        "raw-jetstream" => {
            let route = raw_nats::JetStreamRoute {
                url: arg(args, 1, "url").to_owned(),
                input_stream: arg(args, 2, "stream").to_owned(),
                durable: arg(args, 3, "durable").to_owned(),
                output: arg(args, 4, "output").to_owned(),
            };
            let eos = arg(args, 5, "alo|eos") == "eos";
            let window: usize = arg(args, 6, "window").parse().expect("window");
            let pending: usize = arg(args, 7, "max_ack_pending").parse().expect("pending");
            runtime.block_on(async move {
                let stop = on_signal();
                raw_nats::jetstream(route, window, pending, eos, None, stop).await;
            });
        }
        "raw-core" => {
            let (url, input, output) = (
                arg(args, 1, "url").to_owned(),
                arg(args, 2, "input").to_owned(),
                arg(args, 3, "output").to_owned(),
            );
            runtime.block_on(async move {
                let stop = on_signal();
                raw_nats::core(url, input, output, stop).await;
            });
        }
        "plain-demo" => {
            let count: u64 = arg(args, 1, "count").parse().expect("count");
            let (out, dead) = (arg(args, 2, "output"), arg(args, 3, "dead_letters"));
            demo_cases::plain_loop(count, out.as_ref(), dead.as_ref())
                .unwrap_or_else(|e| panic!("plain-demo: {e}"));
            runtime.block_on(on_signal().cancelled());
        }
        other => panic!("compare child: unknown kind `{other}`"),
    }
}
