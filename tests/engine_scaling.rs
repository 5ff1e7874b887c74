//! Scaling: handler tasks grow under a backlog of slow events and shrink to
//! zero when idle, visible in the `spate_handler_concurrency` gauge.
//!
//! This test installs a process-wide metrics recorder, so it lives in its
//! own test binary.

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use spate::handler::{Context, Handler, HandlerError, Output};
use spate::pipeline::Ordering;
use spate::Event;
use spate_connector::testkit::MemoryLog;
use spate_testsupport::engine::{options, plan, sinks, wait_for, Running};

#[derive(Default)]
struct Slow {
    running: AtomicUsize,
    max_running: AtomicUsize,
    done: AtomicUsize,
}

#[async_trait]
impl Handler for Slow {
    async fn handle(&self, _event: Event, _ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        let now = self.running.fetch_add(1, AtomicOrdering::SeqCst) + 1;
        self.max_running.fetch_max(now, AtomicOrdering::SeqCst);
        tokio::time::sleep(Duration::from_millis(10)).await;
        self.running.fetch_sub(1, AtomicOrdering::SeqCst);
        self.done.fetch_add(1, AtomicOrdering::SeqCst);
        Ok(vec![])
    }
}

fn concurrency(snapshotter: &Snapshotter) -> Option<f64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find(|(key, _, _, _)| key.key().name() == spate::observability::CONCURRENCY)
        .and_then(|(_, _, _, value)| match value {
            DebugValue::Gauge(v) => Some(v.into_inner()),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_up_under_backlog_and_down_to_zero_when_idle() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("first recorder of this test binary");

    let log = MemoryLog::new("telemetry", 1);
    let handler = Arc::new(Slow::default());
    let (out, dlq) = sinks();
    let mut plan = plan(&log, handler.clone(), Ordering::None, &out, &dlq);
    plan.policy.concurrency.max = 32;
    let run = Running::start(plan, options());

    // Idle from the start: no task at all.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        concurrency(&snapshotter).unwrap_or(0.0),
        0.0,
        "tasks held while idle"
    );

    for n in 0..400 {
        log.append(0, None, format!("{n}"));
    }
    wait_for("the backlog to be handled", || {
        handler.done.load(AtomicOrdering::SeqCst) == 400
    })
    .await;
    let peak = handler.max_running.load(AtomicOrdering::SeqCst);
    assert!(
        peak >= 8,
        "only {peak} events ran at once under a backlog of 10 ms events"
    );
    assert!(peak <= 32, "ran {peak} at once with max 32");

    wait_for("tasks to retire when idle", || {
        concurrency(&snapshotter) == Some(0.0)
    })
    .await;

    // Work arriving again starts tasks again.
    log.append(0, None, "400");
    wait_for("the new event to be handled", || {
        handler.done.load(AtomicOrdering::SeqCst) == 401
    })
    .await;
    wait_for("commit", || log.committed(0) == Some(401)).await;
    run.stop().await;
}
