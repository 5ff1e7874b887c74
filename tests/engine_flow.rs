//! Flow control: pause at the in-flight bound and resume when drained; drain,
//! commit and release on revoke; drain and commit on shutdown; at-most-once
//! commits on receipt.

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use spate::engine::run_function;
use spate::engine::FunctionPlan;
use spate::handler::{Context, Handler, HandlerError, Output};
use spate::pipeline::{Delivery, InFlightLimits, Ordering};
use spate::Event;
use spate_connector::testkit::MemoryLog;
use spate_testsupport::engine::{numbered_log, options, plan, sinks, wait_for, Gate, Running};
use tokio_util::sync::CancellationToken;

/// Counts starts and finishes; events of gated partitions wait at the gate.
#[derive(Default)]
struct Held {
    gate: Gate,
    gated_partitions: Vec<u32>,
    started: AtomicUsize,
    finished: Mutex<Vec<(u32, u64)>>,
}

impl Held {
    fn all() -> Arc<Self> {
        Arc::new(Self {
            gated_partitions: (0..16).collect(),
            ..Self::default()
        })
    }
    fn finished(&self) -> usize {
        self.finished.lock().unwrap().len()
    }
}

/// A [`Held::all`] handler for `log` and the test plan running it with
/// `ordering` into fresh sinks.
fn held_plan(log: &MemoryLog, ordering: Ordering) -> (Arc<Held>, FunctionPlan) {
    let handler = Held::all();
    let (out, dlq) = sinks();
    let plan = plan(log, handler.clone(), ordering, &out, &dlq);
    (handler, plan)
}

#[async_trait]
impl Handler for Held {
    async fn handle(&self, event: Event, _ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        self.started.fetch_add(1, AtomicOrdering::SeqCst);
        if self.gated_partitions.contains(&event.position.partition) {
            self.gate.pass().await;
        }
        self.finished
            .lock()
            .unwrap()
            .push((event.position.partition, event.position.offset));
        Ok(vec![])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses_at_the_in_flight_bound_and_resumes_when_drained() {
    let log = numbered_log("telemetry", 200, |n| Some(format!("d{n}")));
    let (handler, mut plan) = held_plan(&log, Ordering::None);
    plan.policy.max_in_flight = InFlightLimits {
        events: 10,
        bytes: 1 << 20,
    };
    // A source batch far above the bound: the engine asks only for the room
    // left, so a source that fetches what it is asked for (a JetStream pull)
    // never fetches past the bound.
    let mut options = options();
    options.max_batch = 512;
    let run = Running::start(plan, options);
    wait_for("the partition to be paused", || log.paused().contains(&0)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let read = 200 - log.unread();
    assert!(read <= 10, "read {read} events with a bound of 10");
    assert!(handler.started.load(AtomicOrdering::SeqCst) <= 10);
    handler.gate.open(1_000);
    wait_for("all 200 handled", || handler.finished() == 200).await;
    wait_for("all committed", || log.committed(0) == Some(200)).await;
    let log_of_pauses = log.pause_log();
    assert!(log_of_pauses.contains(&(0, false)), "never resumed");
    assert!(
        log_of_pauses.iter().filter(|(_, paused)| *paused).count() > 1,
        "paused only once in 200 events"
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_bound_pauses_too() {
    let log = MemoryLog::new("blobs", 1);
    for n in 0..50 {
        log.append(0, None, vec![n as u8; 1000]);
    }
    let (handler, mut plan) = held_plan(&log, Ordering::None);
    plan.policy.max_in_flight = InFlightLimits {
        events: 1_000,
        bytes: 5_000,
    };
    let run = Running::start(plan, options());
    wait_for("the partition to be paused", || log.paused().contains(&0)).await;
    let read = 50 - log.unread();
    assert!(
        read <= 5 + 8,
        "read {read} KB-sized events with a 5 KB bound"
    );
    handler.gate.open(1_000);
    wait_for("all committed", || log.committed(0) == Some(50)).await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_drains_commits_then_releases_while_other_partitions_flow() {
    let log = MemoryLog::new("orders", 2);
    for n in 0..10 {
        log.append(0, Some("a"), format!("{n}"));
        log.append(1, Some("b"), format!("{n}"));
    }
    let handler = Arc::new(Held {
        gated_partitions: vec![0],
        ..Held::default()
    });
    let (out, dlq) = sinks();
    let run = Running::start(
        plan(&log, handler.clone(), Ordering::Partition, &out, &dlq),
        options(),
    );
    wait_for("partition 1 to be handled", || handler.finished() == 10).await;
    wait_for("partition 0's first event to be running", || {
        handler.started.load(AtomicOrdering::SeqCst) == 11
    })
    .await;
    log.revoke(&[0]);
    // Partition 1 keeps flowing during the drain.
    for n in 10..15 {
        log.append(1, Some("b"), format!("{n}"));
    }
    wait_for("new partition-1 events", || handler.finished() == 15).await;
    assert!(
        log.released().is_empty(),
        "released before the running event finished"
    );
    handler.gate.open(100);
    wait_for("partition 0 to be released", || log.released() == vec![0]).await;
    assert_eq!(
        log.committed(0),
        Some(1),
        "commit covers exactly the finished event"
    );
    let finished = handler.finished.lock().unwrap().clone();
    assert_eq!(
        finished.iter().filter(|(p, _)| *p == 0).collect::<Vec<_>>(),
        vec![&(0, 0)],
        "events queued behind the running one must be left to the next owner"
    );
    // The partition comes back: the next owner (us again) resumes at 1.
    log.assign(&[0]);
    wait_for("partition 0 finished after reassignment", || {
        log.committed(0) == Some(10)
    })
    .await;
    let offsets: Vec<u64> = handler
        .finished
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| *p == 0)
        .map(|(_, o)| *o)
        .collect();
    assert_eq!(
        offsets,
        (0..10).collect::<Vec<u64>>(),
        "no event lost or repeated over the hand-over"
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_intake_drains_running_events_and_commits_them() {
    let log = numbered_log("telemetry", 100, |n| Some(format!("d{n}")));
    let (handler, mut plan) = held_plan(&log, Ordering::None);
    plan.policy.concurrency.max = 4;
    let running = Running::start(plan, options());
    wait_for("four events running", || {
        handler.started.load(AtomicOrdering::SeqCst) == 4
    })
    .await;
    running.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !running.run.is_finished(),
        "returned before running events finished"
    );
    handler.gate.open(1_000);
    running.run.await.unwrap().unwrap();
    let finished = handler.finished();
    assert!(
        (4..=8).contains(&finished),
        "{finished} events ran; only those handed to tasks should"
    );
    assert_eq!(
        log.committed(0),
        Some(finished as u64),
        "commit = exactly the finished prefix"
    );
    assert!(log.closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_at_the_drain_deadline_without_committing_unfinished_work() {
    let log = numbered_log("telemetry", 5, |_| None);
    let (handler, mut plan) = held_plan(&log, Ordering::Partition);
    plan.policy.drain_timeout = Duration::from_millis(100);
    let running = Running::start(plan, options());
    wait_for("an event running", || {
        handler.started.load(AtomicOrdering::SeqCst) == 1
    })
    .await;
    running.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), running.run)
        .await
        .expect("returns at the drain deadline")
        .unwrap()
        .unwrap();
    assert_eq!(log.committed(0).unwrap_or(0), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_once_commits_on_receipt() {
    let log = numbered_log("telemetry", 5, |_| None);
    let (handler, mut plan) = held_plan(&log, Ordering::None);
    plan.policy.delivery = Delivery::AtMostOnce;
    let run = Running::start(plan, options());
    wait_for("commit before handling", || log.committed(0) == Some(5)).await;
    assert_eq!(handler.finished(), 0);
    handler.gate.open(5);
    wait_for("handled", || handler.finished() == 5).await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_commit_is_retried_and_loses_nothing() {
    let log = numbered_log("telemetry", 10, |_| None);
    log.fail_commits(true);
    let handler = Held::default();
    let handler = Arc::new(handler);
    let (out, dlq) = sinks();
    let run = Running::start(
        plan(&log, handler.clone(), Ordering::Key, &out, &dlq),
        options(),
    );
    wait_for("handled", || handler.finished() == 10).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(log.committed(0), None);
    log.fail_commits(false);
    wait_for("committed once the source accepts commits", || {
        log.committed(0) == Some(10)
    })
    .await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_wide_bound_pauses_every_function() {
    let first = MemoryLog::new("a", 2);
    let second = MemoryLog::new("b", 1);
    for n in 0..100 {
        first.append(n % 2, None, format!("{n}"));
        second.append(0, None, format!("{n}"));
    }
    let handler = Held::all();
    let options = spate_testsupport::engine::options();
    let options = spate::engine::EngineOptions {
        budget: Arc::new(spate::engine::ProcessBudget::new(InFlightLimits {
            events: 20,
            bytes: 1 << 20,
        })),
        ..options
    };
    let shutdown = CancellationToken::new();
    let mut runs = Vec::new();
    for log in [&first, &second] {
        let (out, dlq) = sinks();
        // Partition bounds far above the process bound.
        let plan = plan(log, handler.clone(), Ordering::None, &out, &dlq);
        runs.push(tokio::spawn(run_function(
            plan,
            options.clone(),
            shutdown.clone(),
        )));
    }
    wait_for("both functions paused", || {
        first.paused().len() == 2 && second.paused().contains(&0)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let read = (100 - first.unread()) + (100 - second.unread());
    // The bound, plus at most one batch (8) per partition read before the
    // pause took effect.
    assert!(
        read <= 20 + 3 * 8,
        "read {read} events with a process bound of 20"
    );
    handler.gate.open(1_000);
    wait_for("everything committed", || {
        first.committed(0) == Some(50)
            && first.committed(1) == Some(50)
            && second.committed(0) == Some(100)
    })
    .await;
    shutdown.cancel();
    for run in runs {
        run.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_reassigned_mid_drain_is_released_first_and_loses_nothing() {
    let log = numbered_log("orders", 5, |_| Some("a".to_owned()));
    let (handler, plan) = held_plan(&log, Ordering::Partition);
    let run = Running::start(plan, options());
    wait_for("the first event running", || {
        handler.started.load(AtomicOrdering::SeqCst) == 1
    })
    .await;
    log.revoke(&[0]);
    log.assign(&[0]);
    wait_for("the cut-short drain to release", || {
        log.released() == vec![0]
    })
    .await;
    handler.gate.open(100);
    wait_for("everything committed", || log.committed(0) == Some(5)).await;
    let offsets: Vec<u64> = handler
        .finished
        .lock()
        .unwrap()
        .iter()
        .map(|(_, o)| *o)
        .collect();
    // Offset 0 ran in the old assignment and again in the new one (it was
    // not committed when the drain was cut short): at-least-once.
    assert_eq!(offsets.iter().filter(|o| **o != 0).count(), 4);
    assert!((1..=2).contains(&offsets.iter().filter(|o| **o == 0).count()));
    run.stop().await;
}
