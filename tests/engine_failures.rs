//! Failures: retries with backoff then a dead letter carrying its
//! provenance; a dead letter that cannot be written holds the commit; output
//! writes must be acknowledged; panics, timeouts and decode errors end as
//! dead letters with their reason.

use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use spate::handler::{Context, Handler, HandlerError, Output};
use spate::pipeline::Ordering;
use spate::Event;
use spate_connector::dead_letter as dl;
use spate_connector::testkit::MemoryLog;
use spate_testsupport::engine::{
    numbered_log, options, payload_number, plan, run_to_end, sinks, wait_for, Running,
};

/// Fails events whose number is in `bad` the way `mode` says; passes others.
struct Faulty {
    bad: Vec<u64>,
    mode: &'static str,
    calls: AtomicU32,
}

impl Faulty {
    fn new(bad: &[u64], mode: &'static str) -> Arc<Self> {
        Arc::new(Self {
            bad: bad.to_vec(),
            mode,
            calls: AtomicU32::new(0),
        })
    }
}

#[async_trait]
impl Handler for Faulty {
    async fn handle(&self, event: Event, ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        let n = payload_number(&event.payload);
        if !self.bad.contains(&n) {
            return Ok(vec![Output::from_event(&event, event.payload.clone())]);
        }
        self.calls.fetch_add(1, AtomicOrdering::SeqCst);
        match self.mode {
            "retryable" => Err(HandlerError::retryable(format!(
                "dependency down (attempt {})",
                ctx.attempt
            ))),
            "permanent" => Err(HandlerError::permanent("reading out of range")),
            "panic" => panic!("bad reading {n}"),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(vec![])
            }
            "recovers" if ctx.attempt < 3 => Err(HandlerError::retryable("flaky")),
            "recovers" => Ok(vec![Output::new(format!("recovered {n}"))]),
            "misroute" => Ok(vec![Output::new("x").to("nowhere")]),
            other => unreachable!("mode {other}"),
        }
    }
}

fn log_with(count: u64) -> MemoryLog {
    let log = MemoryLog::new("telemetry", 1);
    for n in 0..count {
        log.append(0, Some(&format!("device-{}", n % 4)), format!("{n}"));
    }
    log.end();
    log
}

fn header<'a>(record: &'a spate::Record, name: &str) -> &'a str {
    record
        .headers
        .get_str(name)
        .unwrap_or_else(|| panic!("dead letter lacks header {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_then_dead_letters_with_every_provenance_header() {
    let log = log_with(10);
    let handler = Faulty::new(&[6], "retryable");
    let (out, dlq) = sinks();
    let report = run_to_end(plan(&log, handler.clone(), Ordering::Key, &out, &dlq)).await;
    assert_eq!(
        handler.calls.load(AtomicOrdering::SeqCst),
        3,
        "max_attempts is 3"
    );
    assert_eq!(report.dead_lettered, 1);
    assert_eq!(report.handled, 9);
    assert_eq!(report.retries, 2);
    assert_eq!(out.len(), 9);
    // The source hears of the dead letter before any commit covers the
    // event, so a broker that can (JetStream) terminates it instead of
    // acking it.
    let reported = log.dead_lettered();
    assert_eq!(reported.len(), 1, "{reported:?}");
    let (partition, offset, committed_then) = reported[0];
    assert_eq!((partition, offset), (0, 6));
    assert!(
        committed_then.is_none_or(|next| next <= 6),
        "reported after a commit covered it: {reported:?}"
    );
    let letters = dlq.records();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(
        letter.payload,
        Bytes::from_static(b"6"),
        "the original payload is kept"
    );
    assert_eq!(letter.key.as_deref(), Some(&b"device-2"[..]));
    assert_eq!(header(letter, dl::FUNCTION), "test-fn");
    assert_eq!(header(letter, dl::SOURCE), "memory:telemetry");
    assert_eq!(header(letter, dl::STREAM), "telemetry");
    assert_eq!(header(letter, dl::PARTITION), "0");
    assert_eq!(header(letter, dl::OFFSET), "6");
    assert_eq!(header(letter, dl::KEY), "device-2");
    assert_eq!(header(letter, dl::REASON), "handler-error");
    assert_eq!(header(letter, dl::ERROR), "dependency down (attempt 3)");
    assert_eq!(header(letter, dl::ATTEMPTS), "3");
    let first: i64 = header(letter, dl::FIRST_FAILURE_MS).parse().unwrap();
    let last: i64 = header(letter, dl::LAST_FAILURE_MS).parse().unwrap();
    assert!(
        first > 1_600_000_000_000 && first <= last,
        "failure times {first}..{last}"
    );
    assert_eq!(
        log.committed(0),
        Some(10),
        "a dead-lettered event is finished"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_panics_and_misroutes_are_not_retried() {
    for (mode, reason, error) in [
        ("permanent", "handler-error", "reading out of range"),
        ("panic", "panic", "handler panicked: bad reading 3"),
        (
            "misroute",
            "unknown-output",
            "handler routed an output to `nowhere`, which this function does not declare (outputs: out)",
        ),
    ] {
        let log = log_with(5);
        let handler = Faulty::new(&[3], mode);
        let (out, dlq) = sinks();
        let report = run_to_end(plan(&log, handler.clone(), Ordering::Partition, &out, &dlq)).await;
        assert_eq!(handler.calls.load(AtomicOrdering::SeqCst), 1, "{mode}: one attempt only");
        assert_eq!(report.retries, 0, "{mode}");
        let letters = dlq.records();
        assert_eq!(letters.len(), 1, "{mode}");
        assert_eq!(header(&letters[0], dl::REASON), reason);
        assert_eq!(header(&letters[0], dl::ERROR), error);
        assert_eq!(header(&letters[0], dl::ATTEMPTS), "1");
        assert_eq!(out.len(), 4, "{mode}: the other events flow");
        assert_eq!(log.committed(0), Some(5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_attempt_is_retried_then_dead_lettered() {
    let log = log_with(3);
    let handler = Faulty::new(&[1], "slow");
    let (out, dlq) = sinks();
    let mut plan = plan(&log, handler.clone(), Ordering::Key, &out, &dlq);
    plan.policy.retry.timeout = Duration::from_millis(30);
    plan.policy.retry.max_attempts = 2;
    run_to_end(plan).await;
    assert_eq!(handler.calls.load(AtomicOrdering::SeqCst), 2);
    let letters = dlq.records();
    assert_eq!(header(&letters[0], dl::REASON), "timeout");
    assert_eq!(
        header(&letters[0], dl::ERROR),
        "attempt 2 timed out after 30ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_handler_recovers_within_its_attempts() {
    let log = log_with(4);
    let handler = Faulty::new(&[2], "recovers");
    let (out, dlq) = sinks();
    let report = run_to_end(plan(&log, handler, Ordering::Key, &out, &dlq)).await;
    assert_eq!(
        (report.handled, report.dead_lettered, report.retries),
        (4, 0, 2)
    );
    assert!(dlq.is_empty());
    assert!(out
        .records()
        .iter()
        .any(|r| r.payload == Bytes::from_static(b"recovered 2")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_with_a_decode_error_go_straight_to_the_dead_letters() {
    let log = MemoryLog::new("raw", 1);
    log.append(0, None, "0");
    log.end();
    // The test kit cannot set headers on append, so build the event's twin
    // through a handler-free path: a source-side decode error header.
    let handler = Faulty::new(&[], "permanent");
    let (out, dlq) = sinks();
    let mut plan = plan(&log, handler.clone(), Ordering::Key, &out, &dlq);
    plan.sources = vec![Box::new(DecodeFailing(log.source()))];
    run_to_end(plan).await;
    assert_eq!(
        handler.calls.load(AtomicOrdering::SeqCst),
        0,
        "the handler never sees it"
    );
    let letters = dlq.records();
    assert_eq!(header(&letters[0], dl::REASON), "decode-error");
    assert_eq!(
        header(&letters[0], dl::ERROR),
        "line 1: expected value at column 1"
    );
    assert_eq!(header(&letters[0], dl::ATTEMPTS), "0");
}

/// Wraps a source and marks every event undecodable.
struct DecodeFailing(spate_connector::testkit::MemorySource);

#[async_trait]
impl spate_connector::Source for DecodeFailing {
    fn name(&self) -> &str {
        self.0.name()
    }
    async fn next(
        &mut self,
        max: usize,
    ) -> Result<spate_connector::SourceMessage, spate_connector::SourceError> {
        let mut message = self.0.next(max).await?;
        if let spate_connector::SourceMessage::Events(events) = &mut message {
            for event in events {
                event
                    .headers
                    .set(dl::DECODE_ERROR, "line 1: expected value at column 1");
            }
        }
        Ok(message)
    }
    fn pause(&mut self, p: &[u32]) -> Result<(), spate_connector::SourceError> {
        self.0.pause(p)
    }
    fn resume(&mut self, p: &[u32]) -> Result<(), spate_connector::SourceError> {
        self.0.resume(p)
    }
    async fn commit(
        &mut self,
        p: &[spate_connector::CommitPosition],
    ) -> Result<(), spate_connector::SourceError> {
        self.0.commit(p).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_dead_letter_write_holds_the_commit_until_it_succeeds() {
    let log = numbered_log("telemetry", 20, |n| Some(format!("device-{n}")));
    let handler = Faulty::new(&[5], "permanent");
    let (out, dlq) = sinks();
    dlq.set_failing(true);
    let run = Running::start(plan(&log, handler, Ordering::Key, &out, &dlq), options());
    wait_for("the other 19 events to be handled", || out.len() == 19).await;
    wait_for("the dead-letter write to be retried", || {
        dlq.attempts() >= 3
    })
    .await;
    // Commits went on for the events before the poison one, never past it.
    wait_for("commit up to the poison event", || {
        log.committed(0) == Some(5)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        log.committed(0),
        Some(5),
        "commit moved past an event whose dead letter is not written"
    );
    dlq.set_failing(false);
    wait_for("the dead letter to land", || dlq.len() == 1).await;
    wait_for("commit past it", || log.committed(0) == Some(20)).await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_must_be_acknowledged_before_the_offset_moves() {
    let log = numbered_log("telemetry", 10, |n| Some(format!("d{n}")));
    let handler = Faulty::new(&[], "permanent");
    let (out, dlq) = sinks();
    out.set_failing(true);
    let run = Running::start(plan(&log, handler, Ordering::None, &out, &dlq), options());
    wait_for("output writes to be retried", || out.attempts() >= 20).await;
    assert_eq!(
        log.committed(0).unwrap_or(0),
        0,
        "committed events whose outputs were not written"
    );
    out.set_failing(false);
    wait_for("all outputs written", || out.len() == 10).await;
    wait_for("all committed", || log.committed(0) == Some(10)).await;
    assert!(dlq.is_empty(), "a sink outage is not the event's fault");
    run.stop().await;
}
