//! Scenarios 1 (Kafka → no-op → Kafka: spate, the raw rdkafka loop, Quix
//! Streams, Bytewax) and 3 (key-parallel: 1 partition, 1,000 keys, a 1 ms
//! handler, ordering `key` / `partition` / `none`), on one Tansu broker.
//!
//! One run of one case, [`kafka_run`]:
//! 1. fresh input, output and dead-letter topics and a fresh group; the
//!    input is preloaded with `events` stamped records;
//! 2. the output checker starts, then the contender (a child process);
//! 3. throughput phase: from the first output to the output that completes
//!    the preloaded ids (group join and process start are left out alike
//!    for every contender), CPU seconds of the contender over that window;
//! 4. latency phase: `latency_events` more records written at a steady
//!    rate while the contender runs; p50/p99 of output arrival − produce
//!    time;
//! 5. check: every id has an output; exactly-once: no id twice; contenders
//!    that commit to the group: offsets committed for every input before
//!    the stop (SIGTERM, drain); peak RSS over the whole run.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::kafka::{self, Checker, Pacer};
use super::proc::Contender;
use super::report::{Row, Run};
use super::tally::Tally;
use super::{run_rounds, throughput_run, unique, wait_progress, Case, Ctx};
use crate::kafka_common::Tansu;

/// Topic and group names of one run.
pub struct Names {
    /// Input topic.
    pub input: String,
    /// Output topic.
    pub output: String,
    /// Dead-letter topic.
    pub dead: String,
    /// Consumer group.
    pub group: String,
}

impl Names {
    /// Fresh names for a run of `slug`.
    pub fn new(slug: &str) -> Self {
        let base = unique(slug);
        Self {
            input: format!("{base}-in"),
            output: format!("{base}-out"),
            dead: format!("{base}-dead"),
            group: format!("{base}-group"),
        }
    }
}

/// One Kafka case.
pub struct KafkaSpec<'a> {
    /// For names and messages.
    pub slug: &'a str,
    /// Input partitions.
    pub partitions: i32,
    /// Distinct keys.
    pub keys: u64,
    /// Payload bytes.
    pub size: usize,
    /// Throughput-phase records.
    pub events: u64,
    /// Latency-phase records and their rate.
    pub latency: (u64, f64),
    /// Whether the contender commits offsets to its group.
    pub commits: bool,
    /// Whether a duplicate fails the run.
    pub exactly_once: bool,
    /// Builds the contender's command for this run's names.
    pub launch: &'a dyn Fn(&Names) -> Command,
}

/// How spate is configured for a Kafka case.
pub struct SpateKafka<'a> {
    /// `at_least_once` or `exactly_once`.
    pub delivery: &'a str,
    /// `partition`, `key` or `none`.
    pub ordering: &'a str,
    /// `passthrough` or `bench-sleep`.
    pub handler: &'a str,
    /// Concurrency min and max.
    pub concurrency: (usize, usize),
    /// `max_in_flight.events` (per partition).
    pub in_flight: usize,
    /// `settings.metrics_address`.
    pub metrics: &'a str,
}

/// Writes spate's pipeline file for `names`; returns its path.
pub fn spate_pipeline(ctx: &Ctx, broker: &Tansu, names: &Names, spate: &SpateKafka) -> PathBuf {
    let b = &broker.bootstrap;
    let (extra, timing) = if spate.delivery == "exactly_once" {
        (
            format!("\n      transactional_id: {}-spate", names.group),
            "transaction_interval: 100ms",
        )
    } else {
        (String::new(), "commit_interval: 100ms")
    };
    let text = format!(
        "settings:\n  metrics_address: {metrics}\nfunctions:\n  - name: bench\n    input:\n      type: kafka\n      bootstrap_servers: {b}\n      topics: [{input}]\n      group_id: {group}\n      session_timeout: {session}ms\n      properties: {{fetch.wait.max.ms: \"{fetch_wait}\"}}{extra}\n    handler: {handler}\n    outputs: [{{type: kafka, bootstrap_servers: {b}, topic: {output}}}]\n    dead_letter: {{type: kafka, bootstrap_servers: {b}, topic: {dead}}}\n    delivery: {delivery}\n    ordering: {ordering}\n    concurrency: {{min: {min}, max: {max}}}\n    max_in_flight: {{events: {in_flight}, bytes: 256MiB}}\n    {timing}\n    drain_timeout: 30s\n",
        metrics = spate.metrics,
        input = names.input,
        group = names.group,
        session = ctx.config.session_ms,
        fetch_wait = ctx.config.fetch_wait_ms,
        handler = spate.handler,
        output = names.output,
        dead = names.dead,
        delivery = spate.delivery,
        ordering = spate.ordering,
        min = spate.concurrency.0,
        max = spate.concurrency.1,
        in_flight = spate.in_flight,
    );
    let path = ctx.file(&format!("{}.yaml", names.group));
    std::fs::write(&path, text).expect("pipeline written");
    path
}

/// The `bench-sleep: calls=N mean_us=M` line a spate child prints.
pub fn sleep_report(log: &str) -> Option<(u64, u64)> {
    let line = log.lines().rev().find(|l| l.starts_with("bench-sleep:"))?;
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
    };
    Some((field("calls=")?, field("mean_us=")?))
}

/// One run of one Kafka case; see the module docs.
pub fn kafka_run(ctx: &Ctx, broker: &Tansu, spec: &KafkaSpec) -> Result<Run, String> {
    let names = Names::new(spec.slug);
    let began = std::time::Instant::now();
    let mut phases: Vec<(&str, f64)> = Vec::new();
    let mut mark = |phase: &'static str| phases.push((phase, began.elapsed().as_secs_f64()));
    broker.create_topic(&names.input, spec.partitions);
    broker.create_topic(&names.output, 1);
    broker.create_topic(&names.dead, 1);
    let (n, (m, pace)) = (spec.events, spec.latency);
    kafka::preload(
        broker,
        &names.input,
        spec.partitions,
        spec.keys,
        0,
        n,
        spec.size,
    );
    mark("preloaded");
    let total = (n + m) as usize;
    let tally = Tally::shared(total, n, &[n as usize, total]);
    let checker = Checker::start(broker, &names.output, tally.clone());
    let pacer = Pacer::new(broker, &names.input, spec.partitions, spec.keys, spec.size);
    let log = ctx.file(&format!("{}.log", names.group));
    let mut contender = Contender::spawn(spec.slug, (spec.launch)(&names), &log);
    let unique_now = || tally.lock().expect("tally").unique;
    // Process start, imports and the group join: up to 90 s for the first
    // output; then 30 s without progress fails the run.
    super::await_first(
        spec.slug,
        Duration::from_secs(90),
        &mut || unique_now() > 0,
        &mut || contender.assert_alive(),
    )?;
    mark("first output");
    wait_progress(
        &format!("{}: throughput phase", spec.slug),
        Duration::from_secs(30),
        &unique_now,
        &|| unique_now() >= n as usize,
        &mut || contender.assert_alive(),
    )?;
    mark("throughput phase");
    // Latency phase.
    pacer.run(n, m, pace, &AtomicU64::new(0));
    wait_progress(
        &format!("{}: latency phase", spec.slug),
        Duration::from_secs(30),
        &unique_now,
        &|| unique_now() >= total,
        &mut || contender.assert_alive(),
    )?;
    mark("latency phase");
    let committed = if spec.commits {
        kafka::await_commits(
            broker,
            &names.group,
            &names.input,
            spec.partitions,
            total as i64,
            Duration::from_secs(20),
        )
    } else {
        0
    };
    mark("commits");
    let stopped = contender.stop(Duration::from_secs(30));
    mark("stopped");
    // Anything written late (a duplicate) still gets counted.
    std::thread::sleep(Duration::from_millis(300));
    checker.stop();
    let tally = tally.lock().expect("tally");
    kafka::delete_topics(broker, &[&names.input, &names.output, &names.dead]);
    mark("cleaned up");
    eprintln!(
        "    {}: {}",
        spec.slug,
        phases
            .iter()
            .map(|(phase, at)| format!("{phase} at {at:.1} s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if spec.commits && committed < total as i64 {
        return Err(format!(
            "{}: only {committed} of {total} input offsets committed",
            spec.slug
        ));
    }
    if spec.exactly_once && tally.duplicates > 0 {
        return Err(format!(
            "{}: {} duplicate record ids under exactly-once",
            spec.slug, tally.duplicates
        ));
    }
    let mut note = Vec::new();
    if tally.duplicates > 0 {
        note.push(format!("{} duplicates", tally.duplicates));
    }
    if let Some((calls, mean_us)) = sleep_report(&stopped.log).filter(|(calls, _)| *calls > 0) {
        note.push(format!("handler mean {mean_us} µs over {calls} calls"));
    }
    if !stopped.clean_exit {
        note.push("killed after 30 s drain".to_owned());
    }
    throughput_run(&tally, &stopped, n, tally.duplicates, 0, note.join("; "))
}

/// The command running a Python peer (`quix` or `bytewax`) for `names`.
pub fn peer_command(ctx: &Ctx, peer: &str, broker: &Tansu, names: &Names, eos: bool) -> Command {
    let python = ctx
        .python
        .as_ref()
        .expect("peer rows are only built with a Python");
    let mut command = Command::new(python);
    match peer {
        "quix" => {
            command.arg(ctx.peers.join("quix_job.py"));
        }
        _ => {
            command.args(["-m", "bytewax.run"]).arg(format!(
                "{}:flow",
                ctx.peers.join("bytewax_job.py").display()
            ));
        }
    }
    command
        .env("BENCH_BOOTSTRAP", &broker.bootstrap)
        .env("BENCH_INPUT", &names.input)
        .env("BENCH_OUTPUT", &names.output)
        .env("BENCH_GROUP", &names.group)
        .env(
            "BENCH_GUARANTEE",
            if eos { "exactly-once" } else { "at-least-once" },
        )
        .env("BENCH_SESSION_MS", ctx.config.session_ms.to_string())
        .env("BENCH_FETCH_WAIT_MS", ctx.config.fetch_wait_ms.to_string())
        .env(
            "BENCH_STATE_DIR",
            ctx.file(&format!("{}-state", names.group)),
        )
        .env("PYTHONUNBUFFERED", "1");
    command
}

/// Scenario 1 for one payload size: rows in table order.
pub fn scenario_1(ctx: &Ctx, broker: &Tansu, size: usize, events: u64) -> Vec<Row> {
    let scenario = if size >= 1024 {
        "1 Kafka 1 KB".to_owned()
    } else {
        format!("1 Kafka {size} B")
    };
    let config = &ctx.config;
    let latency = (config.latency_events, config.latency_rate);
    let session = config.session_ms.to_string();
    let fetch_wait = config.fetch_wait_ms.to_string();
    let mut cases: Vec<Case> = Vec::new();
    for (guarantee, eos) in [("at-least-once", false), ("exactly-once", true)] {
        let tag = if eos { "eos" } else { "alo" };
        let contenders: [(&str, &str, &str); 4] = [
            ("raw", "raw rdkafka", guarantee),
            ("spate", "spate", guarantee),
            ("quix", "Quix Streams", guarantee),
            ("bytewax", "Bytewax", "at-least-once (no recovery)"),
        ];
        for (who, label, shown) in contenders {
            if !config.runs(who) || (who == "bytewax" && eos) {
                continue;
            }
            let mut row = Row::new(&scenario, label, shown);
            if who == "quix" || who == "bytewax" {
                if let Err(why) = &ctx.python {
                    row.not_run = Some(why.clone());
                    cases.push((row, Box::new(|_| Err("not run".to_owned()))));
                    continue;
                }
            }
            let slug = format!("s1-{who}-{tag}-{size}");
            let (session, fetch_wait) = (session.clone(), fetch_wait.clone());
            cases.push((
                row,
                Box::new(move |_round| {
                    let launch = |names: &Names| match who {
                        "raw" => ctx.child(&[
                            "raw-kafka",
                            &broker.bootstrap,
                            &names.group,
                            &names.input,
                            &names.output,
                            tag,
                            &session,
                            &fetch_wait,
                        ]),
                        "spate" => {
                            let spate = SpateKafka {
                                delivery: if eos { "exactly_once" } else { "at_least_once" },
                                ordering: "partition",
                                handler: "passthrough",
                                concurrency: (4, 64),
                                in_flight: 5_000,
                                metrics: "off",
                            };
                            let path = spate_pipeline(ctx, broker, names, &spate);
                            ctx.child(&["spate", &path.display().to_string()])
                        }
                        peer => peer_command(ctx, peer, broker, names, eos),
                    };
                    kafka_run(
                        ctx,
                        broker,
                        &KafkaSpec {
                            slug: &slug,
                            partitions: 4,
                            keys: 1_000,
                            size,
                            events,
                            latency,
                            commits: who != "bytewax",
                            exactly_once: eos,
                            launch: &launch,
                        },
                    )
                }),
            ));
        }
    }
    run_cases(cases, config.repeat)
}

/// Runs the cases that are to run, returns every row.
fn run_cases(mut cases: Vec<Case>, repeat: usize) -> Vec<Row> {
    let (mut skipped, mut live): (Vec<Case>, Vec<Case>) =
        cases.drain(..).partition(|(row, _)| row.not_run.is_some());
    run_rounds(&mut live, repeat);
    let mut rows: Vec<Row> = live.into_iter().map(|(row, _)| row).collect();
    rows.extend(skipped.drain(..).map(|(row, _)| row));
    rows
}

/// Scenario 3: spate alone against the bound (max concurrency / handler
/// time).
pub fn scenario_3(ctx: &Ctx, broker: &Tansu) -> Vec<Row> {
    let config = &ctx.config;
    let (many, few) = config.parallel_events;
    let mut cases: Vec<Case> = Vec::new();
    for ordering in ["key", "partition", "none"] {
        let (events, bound, pace) = if ordering == "partition" {
            (few, 1_000.0, 500.0)
        } else {
            (many, 256_000.0, config.latency_rate)
        };
        let latency_events = ((pace * 2.0) as u64).min(config.latency_events);
        let mut row = Row::new(
            "3 key-parallel, 1 partition, 1,000 keys, 1 ms handler, max 256",
            "spate",
            &format!("ordering {ordering}"),
        );
        row.bound = Some(bound);
        cases.push((
            row,
            Box::new(move |_round| {
                let launch = |names: &Names| {
                    let spate = SpateKafka {
                        delivery: "at_least_once",
                        ordering,
                        handler: "bench-sleep",
                        concurrency: (1, 256),
                        in_flight: 10_000,
                        metrics: "off",
                    };
                    let path = spate_pipeline(ctx, broker, names, &spate);
                    let mut command = ctx.child(&["spate", &path.display().to_string()]);
                    command.env("SPATE_BENCH_SLEEP_US", "1000");
                    command
                };
                kafka_run(
                    ctx,
                    broker,
                    &KafkaSpec {
                        slug: &format!("s3-{ordering}"),
                        partitions: 1,
                        keys: 1_000,
                        size: 128,
                        events,
                        latency: (latency_events, pace),
                        commits: true,
                        exactly_once: false,
                        launch: &launch,
                    },
                )
            }),
        ));
    }
    run_cases(cases, config.repeat)
}
