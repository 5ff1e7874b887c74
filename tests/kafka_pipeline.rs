//! The `spate` binary against a real Kafka-protocol broker (Tansu): kill -9
//! and restart under at-least-once and exactly-once, poison events to a
//! dead-letter topic with their provenance, and two processes of one
//! consumer group handing partitions over when one dies.
//!
//! What these tests can and cannot prove on Tansu: it keeps the records of
//! aborted transactions visible to `read_committed` readers, so a reader here
//! cannot tell a committed output from one of a transaction that a kill -9
//! left open (and the restart aborted). The exactly-once test therefore
//! proves that (1) at every kill point the group's committed offsets never
//! run ahead of the outputs — every input below them has its output, (2)
//! nothing is lost in the end, and (3) every duplicate is an output of an
//! event that was above the committed offsets at some kill, i.e. one that a
//! real broker would have hidden as aborted. That a transaction never holds
//! an output of an event above the offsets it commits is proven by the
//! engine's own crash test (`tests/engine_exactly_once.rs`).

use spate_testsupport::kafka::blocking as kafka_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kafka_common::{header, text, FilterPipeline, Tansu};
use spate_testsupport::orders::assert_none_lost;

const PARTITIONS: i32 = 4;
/// Orders loaded at the start (the kill tests load more batches of the same
/// size when a run gets through everything before its kill).
const ORDERS_BATCH: usize = 12_000;
/// Batches of the exactly-once kill test: transactions commit less often
/// than at-least-once commits, and a run that gets through a whole batch
/// within its first transactions leaves no kill point mid-stream.
const ORDERS_BATCH_EOS: usize = 48_000;
/// Orders of the group test, enough for the kill to land mid-stream.
const ORDERS_GROUP: usize = 40_000;

/// Every 500th order is not JSON: the `filter` handler fails it for good.
fn is_poison(order: usize) -> bool {
    order % 500 == 7
}

/// Produces orders `from..to` (a multiple of the partition count apart, so
/// order `i` stays at partition `i % 4`, offset `i / 4`).
fn load_orders(broker: &Tansu, topic: &str, from: usize, to: usize) {
    let records: Vec<(String, Vec<u8>)> = (from..to)
        .map(|i| {
            let payload = if is_poison(i) {
                format!("not json {i}")
            } else {
                format!(r#"{{"order":{i},"amount":{}}}"#, i % 50)
            };
            (format!("customer-{}", i % 37), payload.into_bytes())
        })
        .collect();
    broker.produce_from(topic, PARTITIONS, from, &records);
}

/// Round-robin production: order `i` is at partition `i % 4`, offset `i / 4`.
fn order_at(partition: i32, offset: i64) -> usize {
    offset as usize * PARTITIONS as usize + partition as usize
}

struct Names {
    /// Orders loaded so far.
    orders: std::cell::Cell<usize>,
    input: String,
    output: String,
    dead: String,
    group: String,
}

fn names(prefix: &str, orders: usize) -> Names {
    Names {
        orders: std::cell::Cell::new(orders),
        input: format!("{prefix}-orders"),
        output: format!("{prefix}-valid"),
        dead: format!("{prefix}-dead"),
        group: format!("{prefix}-group"),
    }
}

fn pipeline(dir: &Path, broker: &Tansu, names: &Names, delivery: &str) -> String {
    let text = FilterPipeline {
        bootstrap: &broker.bootstrap,
        input: &names.input,
        group: &names.group,
        transactional_id: (delivery == "exactly_once").then_some("spate-test-eos"),
        output: &names.output,
        dead: &names.dead,
        dead_extra: "",
        delivery,
        ordering: "key",
        concurrency_max: Some(32),
    }
    .yaml();
    let path = dir.join(format!("{delivery}.yaml"));
    std::fs::write(&path, text).expect("pipeline written");
    path.to_string_lossy().into_owned()
}

fn start(pipeline: &str, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_spate"))
        .args(["run", pipeline])
        .env("SPATE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spate starts")
}

fn kill_9(mut child: Child) {
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
}

fn sigterm(mut child: Child) -> std::process::ExitStatus {
    spate_testsupport::spate_process::sigterm_when_handled(child.id());
    child.wait().expect("spate exits")
}

/// Order number → how many outputs carry it, and the dead letters' orders.
fn tally(broker: &Tansu, names: &Names, idle: Duration) -> (BTreeMap<usize, u32>, BTreeSet<usize>) {
    let mut outputs = BTreeMap::new();
    for message in broker.read_all(&names.output, 0, idle) {
        let value: serde_json::Value =
            serde_json::from_str(&text(&message)).expect("outputs are the input JSON");
        let order = value["order"].as_u64().expect("order field") as usize;
        *outputs.entry(order).or_insert(0) += 1;
    }
    let mut dead = BTreeSet::new();
    for message in broker.read_all(&names.dead, 0, idle) {
        assert_eq!(header(&message, "spate-dlq-reason"), Some("handler-error"));
        assert_eq!(
            header(&message, "spate-dlq-function"),
            Some("validate-orders")
        );
        assert_eq!(
            header(&message, "spate-dlq-stream"),
            Some(names.input.as_str())
        );
        let partition: i32 = header(&message, "spate-dlq-partition")
            .and_then(|p| p.parse().ok())
            .expect("partition header");
        let offset: i64 = header(&message, "spate-dlq-offset")
            .and_then(|o| o.parse().ok())
            .expect("offset header");
        let order = order_at(partition, offset);
        assert!(
            is_poison(order),
            "order {order} was dead-lettered but is valid"
        );
        assert_eq!(
            text(&message),
            format!("not json {order}"),
            "dead letter keeps the payload"
        );
        dead.insert(order);
    }
    (outputs, dead)
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.contains("WARN")
                || l.contains("ERROR")
                || l.contains("assigned")
                || l.contains("revoked")
        })
        .collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn wait_for_all(
    broker: &Tansu,
    names: &Names,
    log: &Path,
) -> (BTreeMap<usize, u32>, BTreeSet<usize>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (outputs, dead) = tally(broker, names, Duration::from_millis(500));
        if outputs.len() + dead.len() == names.orders.get() {
            return (outputs, dead);
        }
        assert!(
            Instant::now() < deadline,
            "only {} outputs and {} dead letters of {} orders; the run's log ends:\n{}",
            outputs.len(),
            dead.len(),
            names.orders.get(),
            log_tail(log)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until the group's committed offsets cover every order loaded.
fn wait_for_offsets(broker: &Tansu, names: &Names, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let committed = broker.committed(&names.group, &names.input, PARTITIONS);
        let total: i64 = committed.values().sum();
        if total as usize >= names.orders.get() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the input offsets reached {total} of {}: {committed:?}; the run's log ends:\n{}",
            names.orders.get(),
            log_tail(log)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Kills runs until `wanted` kills landed mid-stream (with loaded input
/// still uncommitted), at most `3 × wanted` rounds: start, wait until a
/// commit shows progress in this run, let it go on for a moment, kill -9,
/// call `check` with the committed offsets. When a run got through
/// everything loaded before its kill, another batch of orders is loaded, so
/// the outcome does not hang on how fast the machine is. Returns the number
/// of mid-stream kills.
fn kill_rounds(
    broker: &Tansu,
    names: &Names,
    file: &str,
    dir: &Path,
    wanted: usize,
    mut check: impl FnMut(u64, &BTreeMap<i32, i64>),
) -> usize {
    let total = |c: &BTreeMap<i32, i64>| c.values().sum::<i64>() as usize;
    let batch = names.orders.get();
    let mut mid_stream = 0;
    let mut before = total(&broker.committed(&names.group, &names.input, PARTITIONS));
    for round in 0..(3 * wanted as u64) {
        if mid_stream >= wanted {
            break;
        }
        if before >= names.orders.get() {
            let loaded = names.orders.get();
            load_orders(broker, &names.input, loaded, loaded + batch);
            names.orders.set(loaded + batch);
        }
        let child = start(file, &dir.join(format!("run-{round}.log")));
        let deadline = Instant::now() + Duration::from_secs(60);
        while total(&broker.committed(&names.group, &names.input, PARTITIONS)) <= before {
            assert!(Instant::now() < deadline, "run {round} made no progress");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis((round * 37) % 60));
        kill_9(child);
        let committed = broker.committed(&names.group, &names.input, PARTITIONS);
        before = total(&committed);
        if before < names.orders.get() {
            mid_stream += 1;
        }
        check(round, &committed);
    }
    mid_stream
}

fn setup(prefix: &str, orders: usize) -> (Tansu, Names, tempfile::TempDir) {
    let broker = Tansu::start();
    let names = names(prefix, orders);
    broker.create_topic(&names.input, PARTITIONS);
    broker.create_topic(&names.output, 1);
    broker.create_topic(&names.dead, 1);
    load_orders(&broker, &names.input, 0, orders);
    (broker, names, tempfile::tempdir().expect("temp dir"))
}

fn assert_complete(names: &Names, outputs: &BTreeMap<usize, u32>, dead: &BTreeSet<usize>) {
    assert_none_lost(
        0..names.orders.get(),
        is_poison,
        |order| outputs.contains_key(&order),
        |order| dead.contains(&order),
    );
}

/// Asserts that the group committed every input offset; `what` says so in
/// the failure.
fn assert_all_committed(broker: &Tansu, names: &Names, what: &str) {
    let committed = broker.committed(&names.group, &names.input, PARTITIONS);
    let total: i64 = committed.values().sum();
    assert_eq!(total as usize, names.orders.get(), "{what}: {committed:?}");
}

#[test]
fn at_least_once_survives_kill_9_and_loses_nothing() {
    let (broker, names, dir) = setup("alo", ORDERS_BATCH);
    let file = pipeline(dir.path(), &broker, &names, "at_least_once");
    let mid_stream = kill_rounds(&broker, &names, &file, dir.path(), 3, |_, _| {});
    assert!(mid_stream >= 3, "only {mid_stream} kills landed mid-stream");
    let child = start(&file, &dir.path().join("final.log"));
    let (outputs, dead) = wait_for_all(&broker, &names, &dir.path().join("final.log"));
    let status = sigterm(child);
    assert!(status.success(), "SIGTERM ends a run cleanly: {status}");
    assert_complete(&names, &outputs, &dead);
    assert_all_committed(
        &broker,
        &names,
        "after SIGTERM every input offset is committed",
    );
}

#[test]
fn exactly_once_commits_offsets_only_with_their_outputs_across_kill_points() {
    let (broker, names, dir) = setup("eos", ORDERS_BATCH_EOS);
    let file = pipeline(dir.path(), &broker, &names, "exactly_once");
    // Outputs seen above the committed offsets at a kill: a real broker
    // hides them (their transaction never committed), Tansu does not.
    let mut left_open: BTreeMap<usize, u32> = BTreeMap::new();
    let mid_stream = kill_rounds(&broker, &names, &file, dir.path(), 5, |round, committed| {
        let (outputs, dead) = tally(&broker, &names, Duration::from_millis(800));
        eprintln!(
            "kill {round}: committed {committed:?}, {} outputs, {} dead letters",
            outputs.len(),
            dead.len()
        );
        for partition in 0..PARTITIONS {
            let below = committed.get(&partition).copied().unwrap_or(0);
            for offset in 0..below {
                let order = order_at(partition, offset);
                assert!(
                    outputs.contains_key(&order) || dead.contains(&order),
                    "kill {round}: offset {offset} of partition {partition} is committed but order {order} has no output"
                );
            }
        }
        for (&order, _) in outputs.iter() {
            let partition = (order % PARTITIONS as usize) as i32;
            let offset = (order / PARTITIONS as usize) as i64;
            if offset >= committed.get(&partition).copied().unwrap_or(0) {
                *left_open.entry(order).or_insert(0) += 1;
            }
        }
    });
    assert!(mid_stream >= 5, "only {mid_stream} kills landed mid-stream");
    let child = start(&file, &dir.path().join("final.log"));
    let (outputs, dead) = wait_for_all(&broker, &names, &dir.path().join("final.log"));
    // Outputs of transactions a kill left open are visible on Tansu, so
    // every order may show an output before this run committed anything:
    // wait for the offsets too (they commit only with their transaction).
    wait_for_offsets(&broker, &names, &dir.path().join("final.log"));
    let status = sigterm(child);
    assert!(status.success(), "SIGTERM ends a run cleanly: {status}");
    assert_complete(&names, &outputs, &dead);
    for (order, copies) in &outputs {
        let allowed = 1 + left_open.get(order).copied().unwrap_or(0);
        assert!(
            *copies <= allowed,
            "order {order} has {copies} outputs; only {} of them can come from transactions a kill left open",
            allowed - 1
        );
    }
    assert_all_committed(&broker, &names, "every input offset committed");
    // Every output names the event it came from.
    for message in broker.read_all(&names.output, 10, Duration::from_secs(1)) {
        let id = header(&message, "spate-record-id").expect("record id header");
        assert!(id.starts_with(&format!("{}/", names.input)), "{id}");
        assert!(message.key.is_some(), "the key is kept");
    }
}

#[test]
fn two_processes_share_the_group_and_a_killed_one_hands_its_partitions_over() {
    let (broker, names, dir) = setup("group", ORDERS_GROUP);
    let file = pipeline(dir.path(), &broker, &names, "at_least_once");
    let first = start(&file, &dir.path().join("first.log"));
    let second = start(&file, &dir.path().join("second.log"));
    let assigned = |log: &str| {
        std::fs::read_to_string(dir.path().join(log))
            .unwrap_or_default()
            .contains("partitions assigned")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(assigned("first.log") && assigned("second.log")) {
        assert!(
            Instant::now() < deadline,
            "both processes should get partitions"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    kill_9(first);
    // The dead process commits nothing more: its uncommitted window starts
    // at these offsets, and only events in it may be handled twice.
    let at_kill = broker.committed(&names.group, &names.input, PARTITIONS);
    let (outputs, dead) = wait_for_all(&broker, &names, &dir.path().join("second.log"));
    let status = sigterm(second);
    assert!(status.success(), "{status}");
    assert_complete(&names, &outputs, &dead);
    for (&order, &copies) in &outputs {
        let partition = (order % PARTITIONS as usize) as i32;
        let offset = (order / PARTITIONS as usize) as i64;
        assert!(
            copies == 1 || offset >= at_kill.get(&partition).copied().unwrap_or(0),
            "order {order} (partition {partition}, offset {offset}) was output {copies} times though it was committed ({at_kill:?}) before the kill"
        );
    }
    let committed = broker.committed(&names.group, &names.input, PARTITIONS);
    let total: i64 = committed.values().sum();
    assert_eq!(
        total as usize,
        names.orders.get(),
        "the survivor committed every partition: {committed:?}"
    );
}
