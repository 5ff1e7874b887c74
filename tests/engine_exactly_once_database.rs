//! `exactly_once` into a database (the in-memory test kit's): the sink opens
//! the session, rows, source positions and handler state commit together,
//! and a restarted function resumes from the stored positions and state —
//! not from the broker's, which may trail them — after crashes at random
//! points.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use spate::engine::{run_function, EngineError, FunctionPlan, NamedSink, SessionHost};
use spate::handler::{Context, Handler, HandlerError, HandlerState, Output};
use spate::pipeline::Ordering;
use spate_connector::testkit::{MemoryDatabase, MemoryLog, MemorySink};
use spate_connector::{dead_letter, Event, PartitionId, SessionOwner};
use spate_testsupport::engine::{
    attached_sinks, crash_at_random, exactly_once, options, plan, run_to_end, sinks, wait_for,
    Running,
};
use tokio_util::sync::CancellationToken;

/// Counts events per key (per input partition) and outputs `key=count`;
/// a payload `bad` is a permanent failure.
#[derive(Default)]
struct Counter {
    counts: Mutex<HashMap<(usize, PartitionId), HashMap<Bytes, u64>>>,
}

#[async_trait]
impl Handler for Counter {
    async fn handle(&self, event: Event, ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        if event.payload.as_ref() == b"bad" {
            return Err(HandlerError::permanent("bad reading").with_reason("invalid"));
        }
        let key = event.key.clone().unwrap_or_default();
        let count = {
            let mut counts = self.counts.lock().unwrap();
            let count = counts
                .entry((ctx.input, event.position.partition))
                .or_default()
                .entry(key.clone())
                .or_insert(0);
            *count += 1;
            *count
        };
        ctx.put_state(key.clone(), count.to_string());
        let text = format!("{}={count}", String::from_utf8_lossy(&key));
        Ok(vec![Output::from_event(&event, text)])
    }

    fn state(&self) -> Option<&dyn HandlerState> {
        Some(self)
    }
}

impl HandlerState for Counter {
    fn restore(&self, input: usize, partition: PartitionId, entries: Vec<(Bytes, Bytes)>) {
        let restored = entries
            .into_iter()
            .map(|(key, value)| {
                let count = std::str::from_utf8(&value).unwrap().parse().unwrap();
                (key, count)
            })
            .collect();
        self.counts
            .lock()
            .unwrap()
            .insert((input, partition), restored);
    }

    fn forget(&self, input: usize, partition: PartitionId) {
        self.counts.lock().unwrap().remove(&(input, partition));
    }
}

fn owner() -> SessionOwner {
    SessionOwner {
        pipeline: "test-pipeline".to_owned(),
        function: "test-fn".to_owned(),
        source: "memory:readings".to_owned(),
    }
}

fn db_plan(log: &MemoryLog, db: &MemoryDatabase, handler: Arc<dyn Handler>) -> FunctionPlan {
    let unused = MemorySink::new("unused");
    let mut plan = plan(log, handler, Ordering::Key, &unused, &unused);
    plan.outputs = vec![NamedSink::new("counts", Arc::new(db.table("counts")))];
    plan.dead_letter = Arc::new(db.table("dead"));
    plan.session_host = SessionHost::Sink;
    exactly_once(plan)
}

fn fill(log: &MemoryLog, partitions: u32, per_partition: u64) {
    for p in 0..partitions {
        for n in 0..per_partition {
            let key = format!("p{p}-k{}", n % 5);
            let payload = if n % 61 == 7 { "bad" } else { "reading" };
            log.append(p, Some(&key), payload);
        }
    }
}

/// The expected count of each key: events that are not `bad`.
fn expected_counts(partitions: u32, per_partition: u64) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for p in 0..partitions {
        for n in 0..per_partition {
            if n % 61 != 7 {
                *counts.entry(format!("p{p}-k{}", n % 5)).or_insert(0) += 1;
            }
        }
    }
    counts
}

/// `key=count` rows, grouped by key in commit order.
fn counts_by_key(db: &MemoryDatabase) -> BTreeMap<String, Vec<u64>> {
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for row in db.rows("counts") {
        let text = String::from_utf8_lossy(&row.payload).into_owned();
        let (key, count) = text.split_once('=').expect("key=count");
        by_key
            .entry(key.to_owned())
            .or_default()
            .push(count.parse().expect("count"));
    }
    by_key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_positions_and_state_stay_exact_across_twenty_crashes() {
    let (partitions, per_partition) = (3u32, 300u64);
    let log = MemoryLog::new("readings", partitions);
    fill(&log, partitions, per_partition);
    // The broker never learns a position: every restart must resume from
    // the database's, or it would count everything again.
    log.fail_commits(true);
    let db = MemoryDatabase::new();
    for crash in 0..20 {
        // kill -9: whatever is not committed is gone
        crash_at_random(db_plan(&log, &db, Arc::new(Counter::default()))).await;
        // Each key's rows count 1, 2, 3, … with no repeat and no gap, and
        // the stored state is the last count.
        let state = db.state_of(&owner());
        for (key, counts) in counts_by_key(&db) {
            let expected: Vec<u64> = (1..=counts.len() as u64).collect();
            assert_eq!(counts, expected, "after crash {crash}: rows of {key}");
            let stored = state
                .iter()
                .find(|((_, k), _)| k.as_ref() == key.as_bytes())
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
            assert_eq!(
                stored,
                Some(counts.len().to_string()),
                "after crash {crash}: state of {key}"
            );
        }
    }
    log.end();
    let plan = db_plan(&log, &db, Arc::new(Counter::default()));
    run_to_end(plan).await;
    let expected = expected_counts(partitions, per_partition);
    let rows = counts_by_key(&db);
    for (key, total) in &expected {
        let expected_rows: Vec<u64> = (1..=*total).collect();
        assert_eq!(rows.get(key), Some(&expected_rows), "rows of {key}");
    }
    assert_eq!(rows.len(), expected.len());
    let positions = db.positions(&owner());
    for p in 0..partitions {
        assert_eq!(positions.get(&p.to_string()), Some(&per_partition));
    }
    let bad = db.rows("dead");
    assert_eq!(
        bad.len(),
        (0..per_partition).filter(|n| n % 61 == 7).count() * partitions as usize,
        "each bad reading is dead-lettered exactly once"
    );
    assert!(bad
        .iter()
        .all(|r| r.headers.get_str(dead_letter::REASON) == Some("invalid")));
    // Restarts were told the stored positions every time.
    assert!(log.resume_log().len() >= 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_table_would_refuse_is_dead_lettered_alone() {
    let log = MemoryLog::new("readings", 1);
    for n in 0..20 {
        let payload = if n == 5 { "refuse-me" } else { "reading" };
        log.append(0, Some("k"), payload);
    }
    log.end();
    let db = MemoryDatabase::new();
    // The handler's output carries the key only, so refuse by key text.
    db.refuse_payloads_containing("k=6");
    run_function(
        db_plan(&log, &db, Arc::new(Counter::default())),
        options(),
        CancellationToken::new(),
    )
    .await
    .expect("run ends");
    let counts: Vec<u64> = counts_by_key(&db).remove("k").unwrap_or_default();
    let expected: Vec<u64> = (1..=20).filter(|c| *c != 6).collect();
    assert_eq!(counts, expected);
    let dead = db.rows("dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].headers.get_str(dead_letter::REASON),
        Some("output-rejected")
    );
    assert_eq!(dead[0].headers.get_str(dead_letter::OFFSET), Some("5"));
    // The event was counted (the handler ran); its state commits with it.
    let state = db.state_of(&owner());
    assert_eq!(
        state.get(&("0".to_owned(), Bytes::from_static(b"k"))),
        Some(&Bytes::from_static(b"20"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reassigned_partition_restores_its_committed_state() {
    let log = MemoryLog::new("readings", 2);
    for n in 0..10 {
        log.append(0, Some("a"), "reading");
        log.append(1, Some(&format!("b{}", n % 2)), "reading");
    }
    let db = MemoryDatabase::new();
    let run = Running::start(db_plan(&log, &db, Arc::new(Counter::default())), options());
    wait_for("20 rows committed", || db.rows("counts").len() == 20).await;
    log.revoke(&[0]);
    wait_for("partition 0 released", || log.released() == vec![0]).await;
    for _ in 0..5 {
        log.append(0, Some("a"), "reading");
    }
    log.assign(&[0]);
    wait_for("25 rows committed", || db.rows("counts").len() == 25).await;
    run.stop().await;
    assert_eq!(
        counts_by_key(&db).remove("a"),
        Some((1..=15).collect::<Vec<u64>>()),
        "counting resumes at 11 from the committed state, not from nothing"
    );
    // Partition 1's keys were never given up.
    assert_eq!(
        counts_by_key(&db).remove("b0"),
        Some((1..=5).collect::<Vec<u64>>())
    );
}

/// The message of the plan error `plan` is refused with.
async fn plan_error(plan: FunctionPlan) -> String {
    match run_function(plan, options(), CancellationToken::new()).await {
        Err(EngineError::Plan { message, .. }) => message,
        other => panic!("expected a plan error, got {other:?}"),
    }
}

#[tokio::test]
async fn stateful_handlers_need_a_session_that_stores_state_and_an_order_per_key() {
    let log = MemoryLog::new("readings", 1);
    let (out, dlq) = attached_sinks(&log);
    let handler = Arc::new(Counter::default());
    let message = plan_error(exactly_once(plan(&log, handler, Ordering::Key, &out, &dlq))).await;
    assert!(message.contains("cannot store it"), "{message}");
    assert!(message.contains("postgres"), "{message}");
    let handler = Arc::new(Counter::default());
    let message = plan_error(plan(&log, handler, Ordering::None, &out, &dlq)).await;
    assert!(message.contains("ordering: none"), "{message}");
}

#[tokio::test]
async fn under_at_least_once_state_lives_in_memory_only() {
    let log = MemoryLog::new("readings", 1);
    for _ in 0..10 {
        log.append(0, Some("k"), "reading");
    }
    log.end();
    let (out, dlq) = sinks();
    let report = run_function(
        plan(
            &log,
            Arc::new(Counter::default()),
            Ordering::Key,
            &out,
            &dlq,
        ),
        options(),
        CancellationToken::new(),
    )
    .await
    .expect("run ends");
    assert_eq!(report.handled, 10);
    let last = out.records().last().map(|r| r.payload.clone());
    assert_eq!(last, Some(Bytes::from_static(b"k=10")));
}
