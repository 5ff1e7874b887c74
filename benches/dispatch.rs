//! Dispatch cost per event: what the engine adds on top of reading events and
//! calling the handler.
//!
//! Every case reads the same `EVENTS` events (4 partitions, 64-byte
//! payloads) from a fresh in-memory log that has been ended, so
//! `run_function` returns once all of them are finished and committed. The
//! log is built outside the timed section. Results are per event
//! (`Throughput::Elements`), so criterion prints events/s.
//!
//! - `floor/*`: no engine. Drain the source's batches and call the handler
//!   inline (and write its output, for `floor/one_output`): the raw work any
//!   consumer loop has to do. The engine cases divide by this.
//! - `engine/<ordering>/<keys>/no_output`: the handler returns no output.
//! - `engine/<ordering>/<keys>/one_output`: the handler returns one output
//!   that goes to a `MemorySink` (the realistic path), on the handler
//!   tasks.
//! - `engine/<ordering>/<keys>/one_output_cpu_only`: the same handler
//!   declared CPU-only (as the built-ins are), which the engine runs on the
//!   scheduler's task: its floor is `floor/one_output`.
//!
//! No metrics recorder is installed unless `SPATE_BENCH_PROMETHEUS=1`, in
//! which case the Prometheus recorder is installed first (as `spate run`
//! does), so the per-event metric updates cost what they cost in production.
//!
//! `run_function` is spawned onto the runtime, as `Runtime::run` does.
//! Awaiting it directly inside `block_on` puts the scheduler on the
//! blocked thread, and every completion then has to wake that thread
//! (a futex wake per event): measured 3–5× slower, which is a property of
//! the harness, not of the engine.
//!
//! Run: `cargo bench --bench dispatch` (about 2 minutes on 2 cores). To
//! profile one case: build with `cargo bench --no-run`, then run the bench
//! binary under a profiler with `--bench --profile-time 3 '<case>$'`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use spate::engine::{run_function, EngineOptions, FunctionPlan, ProcessBudget};
use spate::handler::{Context, Handler, HandlerError, Output};
use spate::pipeline::{
    ConcurrencySpec, Delivery, InFlightLimits, Ordering, RetryPolicy, RunPolicy,
};
use spate::Event;
use spate_connector::testkit::{MemoryLog, MemorySink};
use spate_connector::{Source, SourceMessage};
use tokio_util::sync::CancellationToken;

/// Events per timed run.
const EVENTS: u64 = 20_000;
/// Partitions of the log.
const PARTITIONS: u32 = 4;
/// Events asked of the source at once (the engine's default).
const MAX_BATCH: usize = 512;

/// Returns no output.
struct NoOutput;

#[async_trait]
impl Handler for NoOutput {
    async fn handle(&self, _event: Event, _ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        Ok(vec![])
    }
}

/// Returns one output carrying the event's payload, key and headers.
struct OneOutput;

#[async_trait]
impl Handler for OneOutput {
    async fn handle(&self, event: Event, _ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        let payload = event.payload.clone();
        Ok(vec![Output::from_event(&event, payload)])
    }
}

/// [`OneOutput`] declared CPU-only: the engine may run it on the
/// scheduler's task, with no hand-off to a handler task.
struct OneOutputCpuOnly;

#[async_trait]
impl Handler for OneOutputCpuOnly {
    async fn handle(&self, event: Event, ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        OneOutput.handle(event, ctx).await
    }

    fn is_cpu_only(&self) -> bool {
        true
    }
}

#[derive(Clone, Copy)]
enum Kind {
    NoOutput,
    OneOutput,
    OneOutputCpuOnly,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::NoOutput => "no_output",
            Kind::OneOutput => "one_output",
            Kind::OneOutputCpuOnly => "one_output_cpu_only",
        }
    }

    fn handler(self) -> Arc<dyn Handler> {
        match self {
            Kind::NoOutput => Arc::new(NoOutput),
            Kind::OneOutput => Arc::new(OneOutput),
            Kind::OneOutputCpuOnly => Arc::new(OneOutputCpuOnly),
        }
    }
}

/// A log of `EVENTS` events over `PARTITIONS` partitions with `keys`
/// distinct keys, already ended.
fn filled_log(keys: u64) -> MemoryLog {
    let log = MemoryLog::new("bench", PARTITIONS);
    let payload = Bytes::from(vec![b'x'; 64]);
    let names: Vec<String> = (0..keys).map(|k| format!("key-{k}")).collect();
    for i in 0..EVENTS {
        let key = &names[(i % keys) as usize];
        log.append(
            (i % u64::from(PARTITIONS)) as u32,
            Some(key),
            payload.clone(),
        );
    }
    log.end();
    log
}

fn policy(ordering: Ordering) -> RunPolicy {
    RunPolicy {
        delivery: Delivery::AtLeastOnce,
        ordering,
        concurrency: ConcurrencySpec { min: 0, max: 8 },
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(30),
        },
        max_in_flight: InFlightLimits {
            events: 1_000_000,
            bytes: 1 << 30,
        },
        commit_interval: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(30),
        transaction: spate::pipeline::TransactionPolicy::default(),
    }
}

fn options() -> EngineOptions {
    EngineOptions {
        max_batch: MAX_BATCH,
        budget: Arc::new(ProcessBudget::new(InFlightLimits {
            events: 10_000_000,
            bytes: 4 << 30,
        })),
        ..EngineOptions::default()
    }
}

/// What a timed run leaves behind, returned so it is dropped outside the
/// timed section.
struct Leftovers {
    _log: MemoryLog,
    out: MemorySink,
    dlq: MemorySink,
}

fn engine_run(ordering: Ordering, keys: u64, kind: Kind) -> (FunctionPlan, Leftovers) {
    let log = filled_log(keys);
    let out = MemorySink::new("out");
    let dlq = MemorySink::new("dlq");
    // The tests' plan over the log, under the bench's policy and names.
    let mut plan = spate_testsupport::engine::plan(&log, kind.handler(), ordering, &out, &dlq);
    plan.pipeline = Arc::from("bench");
    plan.name = Arc::from("bench");
    plan.policy = policy(ordering);
    (
        plan,
        Leftovers {
            _log: log,
            out,
            dlq,
        },
    )
}

async fn run_engine(plan: FunctionPlan, leftovers: Leftovers, kind: Kind) -> Leftovers {
    // Spawned, as `Runtime::run` does, so the scheduler runs on a runtime
    // worker thread rather than on the thread blocked in `block_on`.
    let report = tokio::spawn(run_function(plan, options(), CancellationToken::new()))
        .await
        .expect("the function task does not panic")
        .expect("the bench function runs");
    assert_eq!(report.handled, EVENTS, "every event is handled");
    assert!(leftovers.dlq.is_empty(), "nothing is dead-lettered");
    if let Kind::OneOutput | Kind::OneOutputCpuOnly = kind {
        assert_eq!(
            leftovers.out.len() as u64,
            EVENTS,
            "every output is written"
        );
    }
    leftovers
}

/// The same raw work without the engine: read every batch, call the
/// handler inline, write its outputs.
async fn run_floor(log: MemoryLog, kind: Kind) -> (MemoryLog, MemorySink) {
    let handler = kind.handler();
    let out = MemorySink::new("out");
    let ctx = Context::new(Arc::from("bench"), 1);
    let mut source = log.source();
    let mut handled = 0u64;
    loop {
        match source.next(MAX_BATCH).await.expect("memory source reads") {
            SourceMessage::Events(events) => {
                for event in events {
                    let outputs = handler
                        .handle(event, &ctx)
                        .await
                        .expect("no-op handler succeeds");
                    for output in outputs {
                        spate_connector::Sink::write(&out, output.record)
                            .await
                            .expect("memory sink writes");
                    }
                    handled += 1;
                }
            }
            SourceMessage::End => break,
            SourceMessage::Assigned(_) | SourceMessage::Revoked(_) => {}
        }
    }
    assert_eq!(handled, EVENTS);
    (log, out)
}

fn dispatch(c: &mut Criterion) {
    if std::env::var_os("SPATE_BENCH_PROMETHEUS").is_some_and(|v| v == "1") {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("install the Prometheus recorder");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");

    let mut group = c.benchmark_group("dispatch");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));

    for kind in [Kind::NoOutput, Kind::OneOutput] {
        group.bench_function(BenchmarkId::new("floor", kind.name()), |b| {
            b.to_async(&rt).iter_batched(
                || filled_log(1_000),
                |log| async move {
                    tokio::spawn(run_floor(log, kind))
                        .await
                        .expect("the floor task does not panic")
                },
                BatchSize::PerIteration,
            );
        });
    }

    let cases: [(Ordering, &str, u64); 4] = [
        (Ordering::Key, "key/1key", 1),
        (Ordering::Key, "key/1000keys", 1_000),
        (Ordering::Partition, "partition/1000keys", 1_000),
        (Ordering::None, "none/1000keys", 1_000),
    ];
    for kind in [Kind::NoOutput, Kind::OneOutput, Kind::OneOutputCpuOnly] {
        for (ordering, name, keys) in cases {
            let id = BenchmarkId::new(format!("engine/{name}"), kind.name());
            group.bench_function(id, |b| {
                b.to_async(&rt).iter_batched(
                    || engine_run(ordering, keys, kind),
                    |(plan, leftovers)| run_engine(plan, leftovers, kind),
                    BatchSize::PerIteration,
                );
            });
        }
    }
    group.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
