//! Kafka → no-op handler → Kafka, end to end on a real Kafka-protocol broker
//! (Tansu, started here), spate beside a raw rdkafka consume→produce loop
//! doing the same work on the same broker and data, in the same run.
//!
//! Cases, each over a fresh input topic of `EVENTS` records (4 partitions,
//! `PAYLOAD` bytes each) and its own consumer group:
//! - `raw/at_least_once` (`harness/raw_kafka.rs`): poll, produce each record, and every 100 ms flush
//!   the producer and commit the consumed offsets.
//! - `raw/exactly_once`: the same with a transactional producer:
//!   begin, produce, `send_offsets_to_transaction`, commit every 100 ms.
//! - `spate/at_least_once` and `spate/exactly_once`: `spate run` on the
//!   equivalent pipeline (`passthrough` handler, `ordering: partition`,
//!   `transaction_interval: 100ms` for exactly-once), in-process.
//!
//! What is timed: from the moment the first event is taken up (the raw
//! loop's first poll that returns a message, spate's first handler call)
//! until a watcher, polling the group's committed offsets every 5 ms, sees
//! every input offset committed. Starting at the first event leaves out
//! the consumer-group join (~3 s on Tansu), which is the broker's cost, not
//! the pipeline's; ending at the commit means every output was
//! acknowledged (at-least-once) or committed in a transaction
//! (exactly-once). Every case's output topic is read back and must hold at
//! least `EVENTS` records (nothing lost) before its figure counts.
//!
//! Run: `cargo bench --bench kafka_e2e`. `SPATE_BENCH_EVENTS` (100,000),
//! `SPATE_BENCH_REPEAT` (3) and `SPATE_BENCH_MAX_IN_FLIGHT` (spate's
//! per-partition bound, 5,000) override the defaults;
//! `SPATE_BENCH_CASES=spate/at_least_once` runs one case, to profile it.
//! Prints a table with medians and the ratios spate/raw.

use spate_testsupport::bench::{env_usize, median, raw_kafka, selected_cases};
use spate_testsupport::kafka::blocking as kafka_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_common::Tansu;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 4;
const PAYLOAD: usize = 128;

/// When the case's first event was taken up (first poll of the raw loop,
/// first handler call in spate).
static FIRST_EVENT: Mutex<Option<Instant>> = Mutex::new(None);

fn mark_first_event() {
    let mut first = FIRST_EVENT.lock().unwrap_or_else(|e| e.into_inner());
    first.get_or_insert_with(Instant::now);
}

/// Waits until the group committed `events` offsets on `topic`; returns
/// events per second from the first event taken up to that moment.
fn watch_commits(
    broker: &Tansu,
    group: &str,
    topic: &str,
    events: usize,
    stop: &AtomicBool,
) -> f64 {
    let watcher: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("offsets watcher");
    let mut list = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        list.add_partition(topic, p);
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let committed: i64 = watcher
            .committed_offsets(list.clone(), Duration::from_secs(10))
            .map(|c| {
                c.elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    })
                    .sum()
            })
            .unwrap_or(0);
        if committed as usize >= events {
            let done = Instant::now();
            stop.store(true, Ordering::SeqCst);
            let first = FIRST_EVENT
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .expect("an event was taken up");
            return events as f64 / done.duration_since(first).as_secs_f64().max(1e-3);
        }
        assert!(
            Instant::now() < deadline,
            "{group}: only {committed} of {events} committed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn spate_pipeline(
    broker: &Tansu,
    group: &str,
    input: &str,
    output: &str,
    delivery: &str,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let extra = if delivery == "exactly_once" {
        format!("\n      transactional_id: {group}-spate")
    } else {
        String::new()
    };
    let timing = if delivery == "exactly_once" {
        "transaction_interval: 100ms"
    } else {
        "commit_interval: 100ms"
    };
    let text = format!(
        "settings:\n  metrics_address: off\nfunctions:\n  - name: bench\n    input:\n      type: kafka\n      bootstrap_servers: {b}\n      topics: [{input}]\n      group_id: {group}\n      session_timeout: 6s{extra}\n    handler: bench-noop\n    outputs: [{{type: kafka, bootstrap_servers: {b}, topic: {output}}}]\n    dead_letter: {{type: kafka, bootstrap_servers: {b}, topic: {output}-dead}}\n    delivery: {delivery}\n    ordering: partition\n    concurrency: {{min: 4, max: 64}}\n    max_in_flight: {{events: {in_flight}, bytes: 256MiB}}\n    {timing}\n",
        b = broker.bootstrap,
        in_flight = env_usize("SPATE_BENCH_MAX_IN_FLIGHT", 5000),
    );
    let path = dir.join(format!("{group}.yaml"));
    std::fs::write(&path, text).expect("pipeline written");
    path
}

fn run_case(broker: &Tansu, case: &str, round: usize, events: usize, dir: &std::path::Path) -> f64 {
    let slug = format!("{}-{round}", case.replace('/', "-"));
    let (input, output, group) = (
        format!("{slug}-in"),
        format!("{slug}-out"),
        format!("{slug}-group"),
    );
    broker.create_topic(&input, PARTITIONS);
    broker.create_topic(&output, 1);
    broker.create_topic(&format!("{output}-dead"), 1);
    let payload = vec![b'x'; PAYLOAD];
    let records: Vec<(String, Vec<u8>)> = (0..events)
        .map(|i| (format!("k{}", i % 1000), payload.clone()))
        .collect();
    broker.produce(&input, PARTITIONS, &records);
    let stop = Arc::new(AtomicBool::new(false));
    let rate = std::thread::scope(|scope| {
        let stop_worker = stop.clone();
        let (input_w, output_w, group_w) = (input.clone(), output.clone(), group.clone());
        let worker = match case {
            "raw/at_least_once" | "raw/exactly_once" => {
                let transactional = case.ends_with("exactly_once");
                scope.spawn(move || {
                    raw_kafka::raw_loop(
                        &broker.bootstrap,
                        &group_w,
                        &input_w,
                        &output_w,
                        transactional,
                        (6000, 500),
                        &stop_worker,
                        &mark_first_event,
                    )
                })
            }
            _ => {
                let delivery = case.trim_start_matches("spate/");
                let path = spate_pipeline(broker, &group_w, &input_w, &output_w, delivery, dir);
                scope.spawn(move || {
                    let runtime = tokio::runtime::Runtime::new().expect("tokio");
                    runtime.block_on(async move {
                        let mut spate = spate::runtime::Runtime::new();
                        spate.registry_mut().register("bench-noop", noop);
                        let specs = spate.load(&[path]).expect("bench pipeline loads");
                        let shutdown = CancellationToken::new();
                        let watcher = shutdown.clone();
                        tokio::spawn(async move {
                            while !stop_worker.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                            watcher.cancel();
                        });
                        spate.run(specs, shutdown).await.expect("spate runs");
                    });
                })
            }
        };
        let rate = watch_commits(broker, &group, &input, events, &stop);
        worker.join().expect("worker");
        rate
    });
    let outputs = broker
        .read_all(&output, events, Duration::from_secs(1))
        .len();
    assert!(
        outputs >= events,
        "{case}: {outputs} outputs for {events} inputs"
    );
    rate
}

/// The no-op handler: forwards the event unchanged.
async fn noop(
    event: spate::Event,
    _ctx: &spate::handler::Context,
) -> Result<Vec<spate::handler::Output>, spate::handler::HandlerError> {
    mark_first_event();
    Ok(vec![spate::handler::Output::from_event(
        &event,
        event.payload.clone(),
    )])
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a listing; nothing to list.
    }
    let events = env_usize("SPATE_BENCH_EVENTS", 100_000);
    let repeat = env_usize("SPATE_BENCH_REPEAT", 3);
    let broker = Tansu::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let all = [
        "raw/at_least_once",
        "spate/at_least_once",
        "raw/exactly_once",
        "spate/exactly_once",
    ];
    // SPATE_BENCH_CASES=spate/at_least_once runs only that case (to profile).
    let cases = selected_cases(&all);
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..repeat {
        for (index, case) in cases.iter().enumerate() {
            let rate = run_case(&broker, case, round, events, dir.path());
            eprintln!("round {round} {case}: {rate:.0} events/s");
            rates[index].push(rate);
        }
    }
    let medians: Vec<f64> = rates.iter_mut().map(|r| median(r)).collect();
    if cases.len() < all.len() {
        return;
    }
    println!("\nKafka -> no-op -> Kafka on Tansu 0.6.0, {events} events x {PAYLOAD} B, {PARTITIONS} partitions, median of {repeat}\n");
    println!("| case | events/s (median) | runs |");
    println!("| --- | ---: | --- |");
    for ((case, median), runs) in cases.iter().zip(&medians).zip(&rates) {
        let runs: Vec<String> = runs.iter().map(|r| format!("{r:.0}")).collect();
        println!("| {case} | {median:.0} | {} |", runs.join(", "));
    }
    println!(
        "\nspate ALO / raw ALO = {:.2}; spate EOS / raw EOS = {:.2}; spate EOS / spate ALO = {:.2}",
        medians[1] / medians[0],
        medians[3] / medians[2],
        medians[3] / medians[1]
    );
}
