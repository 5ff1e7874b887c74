//! Shared helpers for the engine tests: plans over the in-memory test kit,
//! gates that hold handlers until the test lets them go, and polling waits.

#![allow(dead_code)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spate::engine::{EngineOptions, FunctionPlan, NamedSink, ProcessBudget, ScalerTuning};
use spate::handler::Handler;
use spate::pipeline::{
    ConcurrencySpec, Delivery, InFlightLimits, Ordering, RetryPolicy, RunPolicy,
};
use spate_connector::testkit::{MemoryLog, MemorySink};

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

/// Sends SIGTERM once the process handles it (bit 15 of `SigCgt` in
/// /proc), so the signal cannot land before spate installed its handler.
pub fn sigterm_when_handled(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << 14) != 0);
        if caught {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spate never installed its SIGTERM handler"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
}
