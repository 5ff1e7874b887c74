//! Helpers of the engine tests (feature `engine`): plans over the in-memory
//! test kit (exactly-once ones too), runs killed at a random moment, gates
//! that hold handlers until the test lets them go, and polling waits.
//!
//! Guarantees: [`crash_at_random`] returns only once nothing of the killed
//! run can still happen; [`wait_for`] fails the test after 10 s instead of
//! hanging it.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use spate::engine::{
    run_function, EngineOptions, FunctionPlan, NamedSink, ProcessBudget, ScalerTuning,
};
use spate::handler::Handler;
use spate::pipeline::{
    ConcurrencySpec, Delivery, InFlightLimits, Ordering, RetryPolicy, RunPolicy, TransactionPolicy,
};
use spate_connector::testkit::{MemoryLog, MemorySink};
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

/// An output sink `out` and a dead-letter sink `dlq` attached to `log`, so
/// that the transactions of its exactly-once session write them.
pub fn attached_sinks(log: &MemoryLog) -> (MemorySink, MemorySink) {
    let (out, dlq) = (MemorySink::new("out"), MemorySink::new("dlq"));
    log.attach(&out);
    log.attach(&dlq);
    (out, dlq)
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
