//! Records a sink rejects for good: a dead letter too large for the
//! dead-letter sink is written once more without its payload (size, SHA-256
//! and why in its headers) and the partition moves on; an output too large
//! for its sink dead-letters its event as `output-rejected` (under
//! `exactly_once` none of that event's records is committed); a reduced dead
//! letter rejected too stops the function with an error naming the sink;
//! transient failures are still retried until they succeed.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use spate::engine::{run_function, EngineError, FunctionPlan, FunctionReport, NamedSink};
use spate::handler::{Context, Handler, HandlerError, Output};
use spate::pipeline::Ordering;
use spate::{Event, Record};
use spate_connector::dead_letter as dl;
use spate_connector::testkit::{MemoryLog, MemorySink};
use spate_connector::{Sink, SinkError};
use spate_testsupport::engine::{
    attached_sinks, exactly_once, options, plan, sinks, wait_for, Running,
};
use tokio_util::sync::CancellationToken;

/// The payload of the poison event: larger than the sinks' 1,000 bytes.
fn poison() -> Vec<u8> {
    let mut payload = b"poison:".to_vec();
    payload.resize(4_000, b'x');
    payload
}

/// Fails events whose payload starts with `poison` for good when `fail` is
/// set; otherwise (and for every other event) echoes the payload.
struct Echo {
    fail_poison: bool,
}

#[async_trait]
impl Handler for Echo {
    async fn handle(&self, event: Event, _ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        if self.fail_poison && event.payload.starts_with(b"poison") {
            return Err(HandlerError::permanent("not a reading"));
        }
        Ok(vec![Output::from_event(&event, event.payload.clone())])
    }
}

/// Events 0..10 with the poison one at offset 4.
fn log_with_poison() -> MemoryLog {
    let log = MemoryLog::new("telemetry", 1);
    for n in 0..10u64 {
        let payload = if n == 4 {
            poison()
        } else {
            n.to_string().into_bytes()
        };
        log.append(0, Some(&format!("device-{n}")), payload);
    }
    log
}

/// [`log_with_poison`], ended, with [`attached_sinks`] (for runs to its
/// end, either delivery).
fn ended_poison_log() -> (MemoryLog, MemorySink, MemorySink) {
    let log = log_with_poison();
    log.end();
    let (out, dlq) = attached_sinks(&log);
    (log, out, dlq)
}

fn header<'a>(record: &'a Record, name: &str) -> &'a str {
    record
        .headers
        .get_str(name)
        .unwrap_or_else(|| panic!("dead letter lacks header {name}"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Awaits a run of a finite log, failing the test if it has not ended
/// within 10 s (a record retried forever would hold it).
async fn finish<T>(run: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(10), run)
        .await
        .expect("the function ends by itself")
}

/// Runs `plan` (made exactly-once if `exactly`) until its input ends.
async fn run_to_end(plan: FunctionPlan, exactly: bool) -> FunctionReport {
    let plan = if exactly { exactly_once(plan) } else { plan };
    finish(run_function(plan, options(), CancellationToken::new()))
        .await
        .unwrap()
}

fn payloads(sink: &MemorySink) -> Vec<Bytes> {
    sink.records().into_iter().map(|r| r.payload).collect()
}

/// Checks the one dead letter `dlq` holds is the poison event's, reduced.
fn assert_reduced_poison(dlq: &MemorySink) {
    let letters = dlq.records();
    assert_eq!(letters.len(), 1, "one dead letter, written once");
    let letter = &letters[0];
    assert!(letter.payload.is_empty(), "the payload is left out");
    assert_eq!(letter.key.as_deref(), Some(&b"device-4"[..]));
    assert_eq!(header(letter, dl::REASON), "handler-error");
    assert_eq!(header(letter, dl::ERROR), "not a reading");
    assert_eq!(header(letter, dl::OFFSET), "4");
    assert_eq!(header(letter, dl::PAYLOAD_SIZE), "4000");
    assert_eq!(header(letter, dl::PAYLOAD_SHA256), sha256_hex(&poison()));
    let why = header(letter, dl::REDUCED);
    assert!(
        why.contains("memory:dlq") && why.contains("`max_payload`"),
        "the reason names the sink and the setting: {why}"
    );
}

/// The process's metrics, rendered as Prometheus text (the recorder is
/// installed by the first caller, before the function registers its
/// handles).
fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).expect("the only recorder");
        handle
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_too_large_for_its_sink_is_written_reduced_and_the_partition_moves_on() {
    let metrics = metrics();
    let log = log_with_poison();
    let (out, dlq) = sinks();
    dlq.set_max_payload(Some(1_000));
    let handler = Arc::new(Echo { fail_poison: true });
    let mut plan = plan(&log, handler, Ordering::Partition, &out, &dlq);
    plan.name = Arc::from("reducing-fn");
    let run = Running::start(plan, options());
    wait_for("the nine good events", || out.len() == 9).await;
    wait_for("the commit past the poison event", || {
        log.committed(0) == Some(10)
    })
    .await;
    assert_reduced_poison(&dlq);
    let rendered = metrics.render();
    assert!(
        rendered.contains(r#"spate_dead_letters_reduced_total{function="reducing-fn"} 1"#),
        "{rendered}"
    );
    // Later events flow too.
    log.append(0, Some("device-10"), "10");
    wait_for("an event after it", || out.len() == 10).await;
    wait_for("its commit", || log.committed(0) == Some(11)).await;
    assert_eq!(dlq.len(), 1, "no dead letter written twice");
    run.stop().await;
    let expected: Vec<Bytes> = [0, 1, 2, 3, 5, 6, 7, 8, 9, 10]
        .iter()
        .map(|n: &u64| Bytes::from(n.to_string()))
        .collect();
    assert_eq!(payloads(&out), expected, "in order, none lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_too_large_is_staged_reduced_under_exactly_once() {
    let (log, out, dlq) = ended_poison_log();
    dlq.set_max_payload(Some(1_000));
    let handler = Arc::new(Echo { fail_poison: true });
    let report = finish(run_function(
        exactly_once(plan(&log, handler, Ordering::Partition, &out, &dlq)),
        options(),
        CancellationToken::new(),
    ))
    .await
    .unwrap();
    assert_eq!((report.handled, report.dead_lettered), (9, 1));
    assert_eq!(out.len(), 9);
    assert_eq!(log.committed(0), Some(10));
    assert_reduced_poison(&dlq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_too_large_for_its_sink_dead_letters_its_event_as_output_rejected() {
    for exactly in [false, true] {
        let (log, out, dlq) = ended_poison_log();
        out.set_max_payload(Some(1_000));
        let handler = Arc::new(Echo { fail_poison: false });
        let plan = plan(&log, handler, Ordering::Partition, &out, &dlq);
        let report = run_to_end(plan, exactly).await;
        assert_eq!(report.dead_lettered, 1, "exactly_once: {exactly}");
        assert_eq!(out.len(), 9, "exactly_once: {exactly}");
        assert_eq!(log.committed(0), Some(10));
        let letters = dlq.records();
        assert_eq!(letters.len(), 1);
        let letter = &letters[0];
        assert_eq!(header(letter, dl::REASON), "output-rejected");
        assert_eq!(header(letter, dl::ATTEMPTS), "1", "not retried");
        let error = header(letter, dl::ERROR);
        assert!(
            error.contains("memory:out") && error.contains("`max_payload`"),
            "the sink's message: {error}"
        );
        assert_eq!(
            letter.payload,
            Bytes::from(poison()),
            "the dead letter keeps the event's payload"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_of_a_too_large_dead_letter_is_retried_then_written_reduced() {
    let log = log_with_poison();
    let (out, dlq) = sinks();
    dlq.set_max_payload(Some(1_000));
    dlq.set_failing(true);
    let handler = Arc::new(Echo { fail_poison: true });
    let run = Running::start(
        plan(&log, handler, Ordering::Partition, &out, &dlq),
        options(),
    );
    wait_for("the dead-letter write to be retried", || {
        dlq.attempts() >= 5
    })
    .await;
    assert!(dlq.is_empty());
    assert!(
        log.committed(0).unwrap_or(0) <= 4,
        "committed past an unwritten dead letter"
    );
    dlq.set_failing(false);
    wait_for("the commit past the poison event", || {
        log.committed(0) == Some(10)
    })
    .await;
    assert_reduced_poison(&dlq);
    run.stop().await;
}

/// A dead-letter sink that rejects every record for good.
struct RejectsAll;

#[async_trait]
impl Sink for RejectsAll {
    fn name(&self) -> &str {
        "strict:dlq"
    }

    async fn write(&self, _record: Record) -> Result<(), SinkError> {
        Err(SinkError::Rejected {
            sink_name: "strict:dlq".to_owned(),
            message: "every record breaks the schema; set `schema` right".to_owned(),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_rejected_even_reduced_stops_the_function_naming_the_sink() {
    let log = log_with_poison();
    let (out, dlq) = sinks();
    let handler = Arc::new(Echo { fail_poison: true });
    let mut plan = plan(&log, handler, Ordering::Partition, &out, &dlq);
    plan.dead_letter = Arc::new(RejectsAll);
    let ended = finish(run_function(plan, options(), CancellationToken::new())).await;
    let error = ended.expect_err("a dead letter that cannot be written is an error");
    assert!(matches!(error, EngineError::DeadLetterRejected { .. }));
    let text = error.to_string();
    assert!(
        text.contains("strict:dlq") && text.contains("`schema`") && text.contains("offset 4"),
        "{text}"
    );
    assert!(
        log.committed(0).is_none_or(|next| next <= 4),
        "the event is read again after a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_rejected_by_one_sink_is_never_half_committed_under_exactly_once() {
    // Two outputs; only the second has a size limit. Under exactly_once the
    // event's records are checked before any is staged, so the first output
    // gets none of the poison event's; under at_least_once the first one's
    // acknowledged write stands (a replay of the dead letter repeats it).
    for exactly in [true, false] {
        let (log, out, dlq) = ended_poison_log();
        let limited = MemorySink::new("limited");
        log.attach(&limited);
        limited.set_max_payload(Some(1_000));
        let handler = Arc::new(Echo { fail_poison: false });
        let mut plan = plan(&log, handler, Ordering::Partition, &out, &dlq);
        plan.outputs
            .push(NamedSink::new("limited", Arc::new(limited.clone())));
        let report = run_to_end(plan, exactly).await;
        assert_eq!(report.dead_lettered, 1, "exactly_once: {exactly}");
        assert_eq!(limited.len(), 9, "exactly_once: {exactly}");
        let poison_out = payloads(&out)
            .iter()
            .filter(|p| p.starts_with(b"poison"))
            .count();
        assert_eq!(
            poison_out,
            usize::from(!exactly),
            "exactly_once: {exactly}: the other output's record of the poison event"
        );
        assert_eq!(
            header(&dlq.records()[0], dl::REASON),
            "output-rejected",
            "exactly_once: {exactly}"
        );
    }
}
