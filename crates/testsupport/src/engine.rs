//! Helpers of the engine tests (feature `engine`): plans over the in-memory
//! test kit (exactly-once ones too), runs killed at a random moment, gates
//! that hold handlers until the test lets them go, polling waits, and
//! handlers loaded from pipeline text with the events they are called on.
//!
//! Guarantees: [`crash_at_random`] returns only once nothing of the killed
//! run can still happen; [`wait_for`] fails the test after 10 s instead of
//! hanging it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use spate::engine::{
    run_function, EngineError, EngineOptions, FunctionPlan, FunctionReport, NamedSink,
    ProcessBudget, ScalerTuning,
};
use spate::handler::Handler;
use spate::pipeline::{
    self, ConcurrencySpec, Delivery, Environment, InFlightLimits, Ordering, PipelineSpec,
    RetryPolicy, RunPolicy, TransactionPolicy,
};
use spate::{Event, Headers, Registry};
use spate_connector::testkit::{MemoryLog, MemorySink};
use spate_connector::Position;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A plan with test-friendly defaults: fast retries, short intervals.
pub fn plan(
    log: &MemoryLog,
    handler: Arc<dyn Handler>,
    ordering: Ordering,
    out: &MemorySink,
    dlq: &MemorySink,
) -> FunctionPlan {
    FunctionPlan {
        pipeline: Arc::from("test-pipeline"),
        name: Arc::from("test-fn"),
        handler,
        sources: vec![Box::new(log.source())],
        outputs: vec![NamedSink {
            name: Arc::from("out"),
            sink: Arc::new(out.clone()),
            encoder: None,
        }],
        dead_letter: Arc::new(dlq.clone()),
        decoders: Vec::new(),
        policy: RunPolicy {
            delivery: Delivery::AtLeastOnce,
            ordering,
            concurrency: ConcurrencySpec { min: 0, max: 16 },
            retry: RetryPolicy {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(5),
                timeout: Duration::from_secs(10),
            },
            max_in_flight: InFlightLimits {
                events: 10_000,
                bytes: 64 << 20,
            },
            commit_interval: Duration::from_millis(20),
            drain_timeout: Duration::from_secs(10),
            transaction: spate::pipeline::TransactionPolicy::default(),
        },
        session_host: spate::engine::SessionHost::Source,
    }
}

/// Makes `plan` exactly-once, with a transaction every 10 ms or 50 events.
pub fn exactly_once(mut plan: FunctionPlan) -> FunctionPlan {
    plan.policy.delivery = Delivery::ExactlyOnce;
    plan.policy.transaction = TransactionPolicy {
        interval: Duration::from_millis(10),
        max_events: 50,
    };
    plan
}

/// A one-partition log `stream` holding `count` events whose payloads are
/// their numbers (`"0"`, `"1"`, …), event `n` keyed by `key(n)`.
pub fn numbered_log(stream: &str, count: u64, key: impl Fn(u64) -> Option<String>) -> MemoryLog {
    let log = MemoryLog::new(stream, 1);
    for n in 0..count {
        log.append(0, key(n).as_deref(), format!("{n}"));
    }
    log
}

/// An output sink `out` and a dead-letter sink `dlq`.
pub fn sinks() -> (MemorySink, MemorySink) {
    (MemorySink::new("out"), MemorySink::new("dlq"))
}

/// [`sinks`] attached to `log`, so that the transactions of its
/// exactly-once session write them.
pub fn attached_sinks(log: &MemoryLog) -> (MemorySink, MemorySink) {
    let (out, dlq) = sinks();
    log.attach(&out);
    log.attach(&dlq);
    (out, dlq)
}

/// Runs `plan` with [`options`] until its input ends; panics if the run
/// fails.
pub async fn run_to_end(plan: FunctionPlan) -> FunctionReport {
    run_function(plan, options(), CancellationToken::new())
        .await
        .expect("the run succeeds")
}

/// A function running in the background until [`Running::stop`].
pub struct Running {
    /// Stops the run (its drain starts) when cancelled.
    pub shutdown: CancellationToken,
    /// The run itself.
    pub run: JoinHandle<Result<FunctionReport, EngineError>>,
}

impl Running {
    /// Starts running `plan` with `options`.
    pub fn start(plan: FunctionPlan, options: EngineOptions) -> Self {
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(run_function(plan, options, shutdown.clone()));
        Self { shutdown, run }
    }

    /// Shuts the run down and waits for it; panics if it failed.
    pub async fn stop(self) -> FunctionReport {
        self.shutdown.cancel();
        self.run
            .await
            .expect("the run's task")
            .expect("the run succeeds")
    }
}

/// Runs `plan` and, after a random 5 to 40 ms, kills it like `kill -9`:
/// the run goes on a runtime of its own, which is shut down wherever the
/// run is, open transaction, commit in flight and handler tasks all. Only
/// once that runtime's threads stopped does this return, so nothing of the
/// killed run can land after it (as nothing of a killed process can).
pub async fn crash_at_random(plan: FunctionPlan) {
    let delay = Duration::from_millis(rand::rng().random_range(5..40));
    tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the run");
        runtime.block_on(async {
            let run = tokio::spawn(run_function(plan, options(), CancellationToken::new()));
            tokio::time::sleep(delay).await;
            drop(run); // detached: the shutdown below kills it mid-flight
        });
        // Dropping the runtime drops every task at its next await and waits
        // for its worker threads: the kill.
        drop(runtime);
    })
    .await
    .expect("the crashed run's thread");
}

/// Engine options with a small batch and quick idle retirement.
pub fn options() -> EngineOptions {
    EngineOptions {
        max_batch: 8,
        scaler: ScalerTuning {
            target_queue_delay: Duration::from_millis(1),
            idle_retire_after: Duration::from_millis(200),
        },
        budget: Arc::new(ProcessBudget::new(InFlightLimits {
            events: 1_000_000,
            bytes: 1 << 30,
        })),
        ..EngineOptions::default()
    }
}

/// Polls `condition` every 5 ms for up to 10 s; panics with `what` if it
/// never holds.
pub async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Parses the `"n"` payloads the tests append.
pub fn payload_number(payload: &[u8]) -> u64 {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Holds handlers until the test opens it.
pub struct Gate(tokio::sync::Semaphore);

impl Default for Gate {
    fn default() -> Self {
        Self(tokio::sync::Semaphore::new(0))
    }
}

impl Gate {
    /// Waits for one pass (a permit is consumed).
    pub async fn pass(&self) {
        self.0.acquire().await.expect("gate never closes").forget();
    }

    /// Lets `n` waiters through.
    pub fn open(&self, n: usize) {
        self.0.add_permits(n);
    }
}

/// A one-function pipeline named `orders` reading one `generate` event,
/// whose handler is `handler` (YAML lines indented under `handler:`) and
/// whose outputs are files `out/<name>.jsonl`, one per name in `outputs`;
/// its dead letters go to `out/dead.jsonl`.
pub fn handler_pipeline(handler: &str, outputs: &[&str]) -> String {
    let handler: String = handler
        .lines()
        .map(|line| format!("      {line}\n"))
        .collect();
    let outputs: String = outputs
        .iter()
        .map(|name| format!("      - {{type: file, name: {name}, path: out/{name}.jsonl}}\n"))
        .collect();
    format!(
        "functions:\n  - name: orders\n    input: {{type: generate, count: 1}}\n    handler:\n{handler}    outputs:\n{outputs}    dead_letter: {{type: file, path: out/dead.jsonl}}\n"
    )
}

/// Loads pipeline `text`, as the file `file`, with the built-in registry and
/// `env`; the error is rendered as `spate validate` prints it.
pub fn load_pipeline(
    text: &str,
    file: &str,
    env: &dyn Environment,
) -> Result<PipelineSpec, String> {
    pipeline::load_str(text, Path::new(file), &Registry::with_builtins(), env)
        .map_err(|error| pipeline::render_load_error(&error))
}

/// The configured handler of the first function of pipeline `text`; see
/// [`load_pipeline`].
pub fn load_handler(
    text: &str,
    file: &str,
    env: &dyn Environment,
) -> Result<Arc<dyn Handler>, String> {
    load_pipeline(text, file, env).map(|mut spec| spec.functions.remove(0).handler)
}

/// An event of stream `orders` at `partition` and `offset`, stamped
/// 2023-11-14T22:13:20Z, as the handler tests call handlers with.
pub fn order_event(
    key: &str,
    payload: impl Into<Bytes>,
    headers: Headers,
    partition: u32,
    offset: u64,
) -> Event {
    Event {
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        payload: payload.into(),
        headers,
        timestamp_ms: Some(1_700_000_000_000),
        position: Position {
            stream: Arc::from("orders"),
            partition,
            offset,
        },
    }
}
