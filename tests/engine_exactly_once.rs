//! `exactly_once` in the engine, over the test kit's transactional log: a
//! crash at any point loses nothing and duplicates nothing even when events
//! finish out of order; failed transactions are aborted and their records
//! written again without running handlers twice; a fenced session stops the
//! function; plans that cannot be exactly-once are refused with a reason.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use spate::engine::{run_function, EngineError, NamedSink};
use spate::handler::{Context, Handler, HandlerError, Output};
use spate::pipeline::Ordering;
use spate::Event;
use spate_connector::testkit::{MemoryLog, MemorySink};
use spate_connector::{Record, Sink, SinkError, RECORD_ID_HEADER};
use spate_testsupport::engine::{
    attached_sinks, crash_at_random, exactly_once, options, plan, run_to_end, wait_for,
};
use tokio_util::sync::CancellationToken;

/// Tags each output with its event's position after a random short delay,
/// so events finish out of order; events whose payload starts with `bad`
/// fail for good. Counts handler calls.
#[derive(Default)]
struct Tagging {
    calls: AtomicU64,
}

#[async_trait]
impl Handler for Tagging {
    async fn handle(&self, event: Event, _ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        self.calls.fetch_add(1, AtomicOrdering::SeqCst);
        let delay = rand::rng().random_range(0..1500);
        tokio::time::sleep(Duration::from_micros(delay)).await;
        if event.payload.starts_with(b"bad") {
            return Err(HandlerError::permanent("bad reading"));
        }
        let tag = format!("{}:{}", event.position.partition, event.position.offset);
        // Two outputs per event: both must commit together, once.
        Ok(vec![
            Output::from_event(&event, tag.clone()),
            Output::from_event(&event, format!("{tag}/copy")),
        ])
    }
}

fn fill(log: &MemoryLog, partitions: u32, per_partition: u64) {
    for p in 0..partitions {
        for n in 0..per_partition {
            let key = format!("k{}", n % 7);
            let payload = if n % 97 == 13 {
                format!("bad {n}")
            } else {
                n.to_string()
            };
            log.append(p, Some(&key), payload);
        }
    }
}

/// Output tags, counted.
fn tag_counts(out: &MemorySink) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for record in out.records() {
        let tag = String::from_utf8_lossy(&record.payload).into_owned();
        *counts.entry(tag).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_in_flight_dies_with_its_cancelled_function() {
    let log = MemoryLog::new("readings", 1);
    fill(&log, 1, 50);
    let (out, dlq) = attached_sinks(&log);
    log.hold_commits();
    let handler = Arc::new(Tagging::default());
    let plan = exactly_once(plan(&log, handler, Ordering::Key, &out, &dlq));
    let run = tokio::spawn(run_function(plan, options(), CancellationToken::new()));
    wait_for("a commit in flight", || log.held_commits() > 0).await;
    // The function is cancelled while its commit runs in the background:
    // the commit must go with it, or it would land behind the back of the
    // next instance's session.
    run.abort();
    let _ = run.await;
    log.release_commits();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        log.committed(0),
        None,
        "a cancelled function's commit landed"
    );
    assert_eq!(out.len(), 0, "its records reached the output");
    assert_eq!(log.transaction_counts().0, 0, "no transaction committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_at_twenty_points_lose_nothing_and_duplicate_nothing() {
    let (partitions, per_partition) = (3u32, 400u64);
    let log = MemoryLog::new("readings", partitions);
    fill(&log, partitions, per_partition);
    let (out, dlq) = attached_sinks(&log);
    for crash in 0..20 {
        let handler = Arc::new(Tagging::default());
        crash_at_random(exactly_once(plan(&log, handler, Ordering::Key, &out, &dlq))).await;
        // What is committed must be exactly the events below the positions.
        let committed: u64 = (0..partitions).map(|p| log.committed(p).unwrap_or(0)).sum();
        let expected_outputs: usize = (0..partitions)
            .flat_map(|p| (0..log.committed(p).unwrap_or(0)).map(move |o| (p, o)))
            .filter(|(_, o)| o % 97 != 13)
            .count()
            * 2;
        assert_eq!(
            out.len(),
            expected_outputs,
            "after crash {crash}: outputs do not match the {committed} committed positions"
        );
    }
    // Finally run to the end.
    log.end();
    let handler = Arc::new(Tagging::default());
    let plan = exactly_once(plan(&log, handler, Ordering::Key, &out, &dlq));
    let report = run_to_end(plan).await;
    assert!(report.events_in <= u64::from(partitions) * per_partition);
    let counts = tag_counts(&out);
    for p in 0..partitions {
        assert_eq!(log.committed(p), Some(per_partition), "partition {p}");
        for o in 0..per_partition {
            let expected = u32::from(o % 97 != 13);
            assert_eq!(
                counts.get(&format!("{p}:{o}")).copied().unwrap_or(0),
                expected,
                "output of {p}:{o}"
            );
            assert_eq!(
                counts.get(&format!("{p}:{o}/copy")).copied().unwrap_or(0),
                expected,
                "second output of {p}:{o}"
            );
        }
    }
    let bad = (0..per_partition).filter(|o| o % 97 == 13).count() * partitions as usize;
    assert_eq!(dlq.len(), bad, "each poison event is dead-lettered once");
    // Every record carries its stable id: output n of the event, or its
    // dead letter.
    for record in out.records() {
        let tag = String::from_utf8_lossy(&record.payload).into_owned();
        let (position, n) = match tag.strip_suffix("/copy") {
            Some(position) => (position.to_owned(), 1),
            None => (tag.clone(), 0),
        };
        let expected = format!("readings/{}/{n}", position.replace(':', "/"));
        assert_eq!(
            record.headers.get_str(RECORD_ID_HEADER),
            Some(expected.as_str())
        );
    }
    for record in dlq.records() {
        let id = record
            .headers
            .get_str(RECORD_ID_HEADER)
            .expect("dead letter has an id");
        assert!(
            id.starts_with("readings/") && id.ends_with("/dead-letter"),
            "{id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_of_one_partition_commit_in_offset_order() {
    let log = MemoryLog::new("readings", 1);
    fill(&log, 1, 300);
    log.end();
    let (out, dlq) = attached_sinks(&log);
    let handler = Arc::new(Tagging::default());
    let plan = exactly_once(plan(&log, handler, Ordering::None, &out, &dlq));
    run_to_end(plan).await;
    let offsets: Vec<u64> = out
        .records()
        .iter()
        .filter(|r| !r.payload.ends_with(b"/copy"))
        .map(|r| {
            let text = String::from_utf8_lossy(&r.payload).into_owned();
            text.split(':')
                .nth(1)
                .and_then(|o| o.parse().ok())
                .expect("tag")
        })
        .collect();
    let mut sorted = offsets.clone();
    sorted.sort_unstable();
    assert_eq!(
        offsets, sorted,
        "records are written as the watermark passes them"
    );
    assert_eq!(offsets.len(), (0..300u64).filter(|n| n % 97 != 13).count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_transactions_are_aborted_and_written_again_without_rerunning_handlers() {
    let log = MemoryLog::new("readings", 2);
    fill(&log, 2, 200);
    log.fail_transactions(4);
    log.end();
    let (out, dlq) = attached_sinks(&log);
    let handler = Arc::new(Tagging::default());
    let plan = exactly_once(plan(&log, handler.clone(), Ordering::Partition, &out, &dlq));
    let report = run_to_end(plan).await;
    let (_commits, aborts) = log.transaction_counts();
    assert_eq!(aborts, 4, "each failed commit is aborted once");
    assert_eq!(
        handler.calls.load(AtomicOrdering::SeqCst),
        400,
        "no handler ran twice"
    );
    let counts = tag_counts(&out);
    let bad = 2 * (0..200u64).filter(|n| n % 97 == 13).count();
    assert!(
        counts.values().all(|&n| n == 1),
        "no record committed twice"
    );
    assert_eq!(counts.len(), 2 * (400 - bad));
    assert_eq!(report.outputs, 2 * (400 - bad) as u64);
    assert_eq!(report.dead_lettered, bad as u64);
    assert_eq!((log.committed(0), log.committed(1)), (Some(200), Some(200)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_session_stops_the_function_without_committing() {
    let log = MemoryLog::new("readings", 1);
    fill(&log, 1, 50);
    let (out, dlq) = attached_sinks(&log);
    let handler = Arc::new(Tagging::default());
    let plan = exactly_once(plan(&log, handler, Ordering::Partition, &out, &dlq));
    let run = tokio::spawn(run_function(plan, options(), CancellationToken::new()));
    wait_for("the first 50 events to commit", || {
        log.committed(0) == Some(50)
    })
    .await;
    log.fence();
    let before = (out.len(), log.commit_log().len());
    for n in 50..80 {
        log.append(0, Some("k"), n.to_string());
    }
    let result = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the function stops by itself")
        .expect("no panic");
    match result {
        Err(EngineError::Transaction { source, .. }) => {
            assert!(
                source.to_string().contains("fenced"),
                "error names the cause: {source}"
            );
        }
        other => panic!("expected a transaction error, got {other:?}"),
    }
    assert_eq!(
        (out.len(), log.commit_log().len()),
        before,
        "nothing committed after fencing"
    );
    assert_eq!(log.committed(0), Some(50));
}

/// A sink that cannot write inside a transaction.
struct Plain;

#[async_trait]
impl Sink for Plain {
    fn name(&self) -> &str {
        "plain:out"
    }

    async fn write(&self, _record: Record) -> Result<(), SinkError> {
        Ok(())
    }
}

#[tokio::test]
async fn plans_that_cannot_be_exactly_once_are_refused_with_the_reason() {
    let log = MemoryLog::new("readings", 1);
    let (out, dlq) = attached_sinks(&log);
    let eos = || {
        exactly_once(plan(
            &log,
            Arc::new(Tagging::default()),
            Ordering::Partition,
            &out,
            &dlq,
        ))
    };
    let mut plan = eos();
    plan.outputs.push(NamedSink {
        name: Arc::from("audit"),
        sink: Arc::new(Plain),
        encoder: None,
    });
    let error = run_function(plan, options(), CancellationToken::new())
        .await
        .expect_err("a plain sink cannot join a transaction");
    let message = error.to_string();
    assert!(
        message.contains("output `audit`") && message.contains("plain:out"),
        "{message}"
    );

    let unattached = MemorySink::new("elsewhere");
    let mut plan = eos();
    plan.dead_letter = Arc::new(unattached);
    let message = run_function(plan, options(), CancellationToken::new())
        .await
        .expect_err("the session refuses a sink it cannot reach")
        .to_string();
    assert!(
        message.contains("memory:elsewhere") && message.contains("not attached"),
        "{message}"
    );

    let mut plan = eos();
    plan.sources
        .push(Box::new(MemoryLog::new("other", 1).source()));
    let message = run_function(plan, options(), CancellationToken::new())
        .await
        .expect_err("two inputs cannot share one transaction")
        .to_string();
    assert!(message.contains("exactly one input"), "{message}");
}
