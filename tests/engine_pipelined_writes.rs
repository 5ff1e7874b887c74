//! Pipelined writes: with a sink that accepts records in order and
//! acknowledges them later, a partition's next event starts as soon as the
//! previous one's outputs are accepted — not acknowledged — while positions
//! still wait for the acknowledgements; an acknowledgement that fails is
//! written again and still holds the commit.

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use spate::engine::NamedSink;
use spate::handler::{Context, Handler, HandlerError, Output};
use spate::pipeline::Ordering;
use spate::Event;
use spate_connector::testkit::{MemoryLog, MemorySink};
use spate_connector::{PendingWrite, Record, Sink, SinkError};
use spate_testsupport::engine::{options, plan, wait_for, Running};
use tokio::sync::{oneshot, Semaphore};

/// Accepts records in order at once; each acknowledgement waits until the
/// test releases it (or fails it).
#[derive(Default)]
struct HeldAcks {
    accepted: Mutex<Vec<Record>>,
    acks: Mutex<Vec<oneshot::Sender<Result<(), SinkError>>>>,
    attempts: AtomicUsize,
}

impl HeldAcks {
    fn release_all(&self, result: impl Fn() -> Result<(), SinkError>) -> usize {
        let senders: Vec<_> = self.acks.lock().unwrap().drain(..).collect();
        let count = senders.len();
        for sender in senders {
            let _ = sender.send(result());
        }
        count
    }

    fn accepted_payloads(&self) -> Vec<String> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
            .collect()
    }
}

#[async_trait]
impl Sink for HeldAcks {
    fn name(&self) -> &str {
        "held:acks"
    }

    async fn write(&self, record: Record) -> Result<(), SinkError> {
        self.send(record).await?.await
    }

    async fn send(&self, record: Record) -> Result<PendingWrite, SinkError> {
        self.attempts.fetch_add(1, AtomicOrdering::SeqCst);
        self.accepted.lock().unwrap().push(record);
        let (tx, rx) = oneshot::channel();
        self.acks.lock().unwrap().push(tx);
        Ok(Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(SinkError::Unavailable {
                    sink_name: "held:acks".to_owned(),
                    message: "dropped".to_owned(),
                })
            })
        }))
    }
}

struct Echo;

#[async_trait]
impl Handler for Echo {
    async fn handle(&self, event: Event, _ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        Ok(vec![Output::from_event(&event, event.payload.clone())])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moves_on_when_outputs_are_accepted_and_commits_when_acknowledged() {
    let log = MemoryLog::new("readings", 1);
    for n in 0..20 {
        log.append(0, None, n.to_string());
    }
    let sink = Arc::new(HeldAcks::default());
    let (out, dlq) = (MemorySink::new("unused"), MemorySink::new("dlq"));
    let mut plan = plan(&log, Arc::new(Echo), Ordering::Partition, &out, &dlq);
    plan.outputs = vec![NamedSink {
        name: Arc::from("out"),
        sink: sink.clone(),
        encoder: None,
    }];
    let run = Running::start(plan, options());

    // Every event of the partition runs, in order, with no ack given yet.
    wait_for("all 20 outputs accepted", || {
        sink.accepted.lock().unwrap().len() == 20
    })
    .await;
    let expected: Vec<String> = (0..20).map(|n| n.to_string()).collect();
    assert_eq!(
        sink.accepted_payloads(),
        expected,
        "accepted in offset order"
    );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        log.committed(0).unwrap_or(0) == 0,
        "nothing committed before an acknowledgement"
    );

    // Acks fail once: the writes are tried again and the commit waits.
    assert_eq!(
        sink.release_all(|| Err(SinkError::Unavailable {
            sink_name: "held:acks".to_owned(),
            message: "broker away".to_owned(),
        })),
        20
    );
    wait_for("the 20 writes tried again", || {
        sink.attempts.load(AtomicOrdering::SeqCst) == 40
    })
    .await;
    assert!(
        log.committed(0).unwrap_or(0) == 0,
        "failed acknowledgements hold the commit"
    );

    assert_eq!(sink.release_all(|| Ok(())), 20);
    wait_for("everything committed", || log.committed(0) == Some(20)).await;
    let report = run.stop().await;
    assert_eq!(report.outputs, 20);
    assert_eq!(
        report.handled, 20,
        "no handler ran twice for a failed acknowledgement"
    );
}

/// Accepts a record only with one of a few permits, which its pending write
/// gives back once polled to its end (not at its first poll): like a JetStream context, whose
/// publishes wait for acknowledgement permits.
struct Permits {
    permits: Arc<Semaphore>,
    accepted: AtomicUsize,
}

#[async_trait]
impl Sink for Permits {
    fn name(&self) -> &str {
        "permits"
    }

    async fn write(&self, record: Record) -> Result<(), SinkError> {
        self.send(record).await?.await
    }

    async fn send(&self, _record: Record) -> Result<PendingWrite, SinkError> {
        let permit = self.permits.clone().acquire_owned().await;
        self.accepted.fetch_add(1, AtomicOrdering::SeqCst);
        Ok(Box::pin(async move {
            // Not acknowledged at the first poll: only whoever drives the
            // pending writes afterwards gives the permit back.
            tokio::task::yield_now().await;
            drop(permit);
            Ok(())
        }))
    }
}

/// [`Echo`], declared CPU-only: the engine runs it on its scheduler's task.
struct CpuOnlyEcho;

#[async_trait]
impl Handler for CpuOnlyEcho {
    async fn handle(&self, event: Event, ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        Echo.handle(event, ctx).await
    }

    fn is_cpu_only(&self) -> bool {
        true
    }
}

/// Runs `events` numbered events of one partition through [`CpuOnlyEcho`]
/// (on the scheduler's task) into `sink`, until every one is committed.
async fn run_inline_into(sink: Arc<dyn Sink>, events: u64) -> spate::engine::FunctionReport {
    let log = spate_testsupport::engine::numbered_log("readings", events, |_| None);
    let (out, dlq) = (MemorySink::new("unused"), MemorySink::new("dlq"));
    let mut plan = plan(&log, Arc::new(CpuOnlyEcho), Ordering::Partition, &out, &dlq);
    plan.outputs = vec![NamedSink {
        name: Arc::from("out"),
        sink,
        encoder: None,
    }];
    let run = Running::start(plan, options());
    wait_for("every event committed", || log.committed(0) == Some(events)).await;
    run.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_waiting_for_room_that_earlier_acks_free_does_not_wedge_an_inline_run() {
    // More events than permits, in runs of consecutive events of one
    // partition: a run's writes wait for permits only earlier runs'
    // acknowledgements give back, and those are driven by the same task.
    const EVENTS: u64 = 4_000;
    let sink = Arc::new(Permits {
        permits: Arc::new(Semaphore::new(600)),
        accepted: AtomicUsize::new(0),
    });
    let report = run_inline_into(sink.clone(), EVENTS).await;
    assert_eq!(report.outputs, EVENTS);
    assert_eq!(sink.accepted.load(AtomicOrdering::SeqCst), EVENTS as usize);
}

/// Each record's first acknowledgement times out (after a while, counted
/// from when it is first waited on, as a JetStream publish ack's); the
/// next try of the same record is acknowledged at once.
#[derive(Default)]
struct LostFirstAcks {
    tried: Mutex<std::collections::HashSet<bytes::Bytes>>,
    accepted: AtomicUsize,
}

#[async_trait]
impl Sink for LostFirstAcks {
    fn name(&self) -> &str {
        "lost-first-acks"
    }

    async fn write(&self, record: Record) -> Result<(), SinkError> {
        self.send(record).await?.await
    }

    async fn send(&self, record: Record) -> Result<PendingWrite, SinkError> {
        let first = self.tried.lock().unwrap().insert(record.payload.clone());
        self.accepted.fetch_add(1, AtomicOrdering::SeqCst);
        Ok(Box::pin(async move {
            if first {
                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                return Err(SinkError::Unavailable {
                    sink_name: "lost-first-acks".to_owned(),
                    message: "timed out: didn't receive ack in time".to_owned(),
                });
            }
            Ok(())
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acknowledgements_of_a_run_time_out_together_not_one_after_another() {
    // Every first ack lost, timing out 3 s after it is waited on: a run's
    // acks waited on together time out after one timeout and are written
    // again; one after another they would take one timeout per event of
    // the run, far past `wait_for`'s 10 s.
    const EVENTS: u64 = 100;
    let sink = Arc::new(LostFirstAcks::default());
    let report = run_inline_into(sink.clone(), EVENTS).await;
    assert_eq!(report.outputs, EVENTS);
    assert_eq!(
        sink.accepted.load(AtomicOrdering::SeqCst),
        2 * EVENTS as usize,
        "each record written twice: the lost try and the acknowledged one"
    );
}
