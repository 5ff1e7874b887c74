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
use tokio::sync::oneshot;

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
