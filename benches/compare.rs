//! spate against the raw clients and against the stream processors users
//! would pick instead, on one machine in one run: the six scenarios of
//! `benches/README.md`, every contender a child process measured the same
//! way, every figure from a run whose output was checked.
//!
//! Run everything with `scripts/bench` (it installs the Python peers and
//! Tansu first); this binary alone is `cargo bench --bench compare [--
//! --quick]`. Writes `compare.md` (table, ratios, conditions, machine),
//! `compare.svg` and `runs.json` (every run's figures) under
//! `SPATE_BENCH_OUT` (default `benches/results`).
//!
//! Guarantees: nothing is written under the output directory unless every
//! requested scenario ran (failed cases are reported as failures in the
//! table, never left out); medians are of verified runs only.
//!
//! `compare child …` is the contender side (see `harness/child.rs`).

use spate_testsupport::kafka::blocking as kafka_common;
use spate_testsupport::nats as nats_common;

mod harness;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use harness::report::{self, find, Row};
use harness::{Config, Ctx};

/// The virtualenv Python with both peers importable, or why not.
fn python() -> Result<PathBuf, String> {
    let Ok(path) = std::env::var("SPATE_BENCH_PYTHON") else {
        return Err("SPATE_BENCH_PYTHON unset (scripts/bench installs the peers)".to_owned());
    };
    let out = std::process::Command::new(&path)
        .args(["-c", "import quixstreams, bytewax.connectors.kafka"])
        .output()
        .map_err(|e| format!("cannot run {path}: {e}"))?;
    if out.status.success() {
        Ok(PathBuf::from(path))
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "peers not importable: {}",
            err.lines().last().unwrap_or("")
        ))
    }
}

fn ratio(rows: &[Row], a: (&str, &str, &str), b: (&str, &str, &str)) -> String {
    ratio_of(rows, a, b, Row::rate)
}

/// `a`'s median of `figure` over `b`'s, or "not measured".
fn ratio_of(
    rows: &[Row],
    a: (&str, &str, &str),
    b: (&str, &str, &str),
    figure: fn(&Row) -> f64,
) -> String {
    match (find(rows, a.0, a.1, a.2), find(rows, b.0, b.1, b.2)) {
        (Some(a), Some(b)) if (figure(a) / figure(b)).is_finite() => {
            format!("{:.2}", figure(a) / figure(b))
        }
        _ => "not measured".to_owned(),
    }
}

/// The Ratios line of spate's CPU per event over the floor's, for every
/// (scenario, guarantee) given: the target is at most 1.5×.
fn cpu_line(rows: &[Row], what: &str, pairs: &[(&str, &str, &str)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .map(|&(scenario, guarantee, floor)| {
            format!(
                "{guarantee} {}",
                ratio_of(
                    rows,
                    (scenario, "spate", guarantee),
                    (scenario, floor, guarantee),
                    Row::cpu_us_per_event,
                )
            )
        })
        .collect();
    if parts.iter().all(|p| p.ends_with("not measured")) {
        return String::new();
    }
    format!(
        "- {what}: CPU µs per event, spate ÷ raw loop: {} (target ≤ 1.5)\n",
        parts.join("; ")
    )
}

fn notes(rows: &[Row]) -> String {
    let mut out = String::new();
    let spate = "spate";
    for scenario in ["1 Kafka 128 B", "1 Kafka 1 KB"] {
        let alo = (scenario, spate, "at-least-once");
        let eos = (scenario, spate, "exactly-once");
        let _ = writeln!(
            out,
            "- {scenario}: spate ALO / raw loop = {}; spate EOS / raw EOS loop = {}; spate EOS / spate ALO = {}; spate / Quix Streams = {} (ALO), {} (EOS); spate / Bytewax = {}",
            ratio(rows, alo, (scenario, "raw rdkafka", "at-least-once")),
            ratio(rows, eos, (scenario, "raw rdkafka", "exactly-once")),
            ratio(rows, eos, alo),
            ratio(rows, alo, (scenario, "Quix Streams", "at-least-once")),
            ratio(rows, eos, (scenario, "Quix Streams", "exactly-once")),
            ratio(rows, alo, (scenario, "Bytewax", "at-least-once (no recovery)")),
        );
        out.push_str(&cpu_line(
            rows,
            scenario,
            &[
                (scenario, "at-least-once", "raw rdkafka"),
                (scenario, "exactly-once", "raw rdkafka"),
            ],
        ));
    }
    let js = "2 JetStream";
    let _ = writeln!(
        out,
        "- JetStream: spate ALO / raw loop = {}; spate EOS / raw EOS loop = {}; spate EOS / spate ALO = {}; core NATS: spate / raw = {}",
        ratio(rows, (js, spate, "at-least-once"), (js, "raw async-nats", "at-least-once")),
        ratio(rows, (js, spate, "exactly-once"), (js, "raw async-nats", "exactly-once")),
        ratio(rows, (js, spate, "exactly-once"), (js, spate, "at-least-once")),
        ratio(rows, ("2 core NATS", spate, "at-most-once"), ("2 core NATS", "raw async-nats", "at-most-once")),
    );
    out.push_str(&cpu_line(
        rows,
        "JetStream and core NATS",
        &[
            (js, "at-least-once", "raw async-nats"),
            (js, "exactly-once", "raw async-nats"),
            ("2 core NATS", "at-most-once", "raw async-nats"),
        ],
    ));
    out.push_str(&demo_note(rows));
    for row in measured(rows, "3 ") {
        let bound = row.bound.unwrap_or(f64::NAN);
        let mean_us = report::find(rows, &row.scenario, &row.contender, &row.guarantee)
            .map(|r| r.median_of(|run| handler_mean_us(&run.note)))
            .unwrap_or(f64::NAN);
        let tasks = if row.guarantee.ends_with("partition") {
            1.0
        } else {
            256.0
        };
        let _ = writeln!(
            out,
            "- key-parallel, {}: {} events/s = {:.3} of the bound {} (max concurrency / 1 ms); the 1 ms await measured {:.0} µs on average, so the bound with the real await is {} ({:.2} of it)",
            row.guarantee,
            report::thousands(row.rate()),
            row.rate() / bound,
            report::thousands(bound),
            mean_us,
            report::thousands(tasks * 1e6 / mean_us),
            row.rate() / (tasks * 1e6 / mean_us),
        );
    }
    for row in measured(rows, "4 ") {
        let max = row.runs.iter().map(|r| r.rss_mib).fold(0.0, f64::max);
        let at = |name: &str| row.median_extra(name);
        let _ = writeln!(
            out,
            "- backpressure: largest RSS seen in any run {max:.0} MiB (peak, whole run incl. the drain); during the slow phase RSS was {:.0} MiB at 10 s and {:.0} MiB at its end (medians), max {:.0} MiB; backlog at the end of the slow phase {} events; nothing lost in {} of {} runs",
            at("rss_mib_at_10s"),
            at("rss_mib_at_slow_end"),
            at("rss_mib_max_slow_phase"),
            report::thousands(at("backlog_at_slow_end")),
            row.runs.len(),
            row.runs.len() + row.failures.len(),
        );
    }
    for row in measured(rows, "5 ") {
        let _ = writeln!(
            out,
            "- scaling step: concurrency went {:.0} → {:.0} and settled {:.1} s after the step; lag stopped growing {:.1} s after the step (peak {} events) — medians of {} runs",
            row.median_extra("concurrency_before_step"),
            row.median_extra("concurrency_final"),
            row.median_extra("concurrency_settle_s"),
            row.median_extra("lag_stops_growing_s"),
            report::thousands(row.median_extra("lag_peak_events")),
            row.runs.len(),
        );
    }
    out
}

/// The Ratios line of scenario 6: spate over the plain loop.
fn demo_note(rows: &[Row]) -> String {
    use harness::demo_cases::{PLAIN, SCENARIO};
    let (Some(spate), Some(plain)) = (
        rows.iter()
            .find(|r| r.scenario == SCENARIO && r.contender == "spate"),
        rows.iter()
            .find(|r| r.scenario == SCENARIO && r.contender == PLAIN),
    ) else {
        return String::new();
    };
    let (a, b) = (
        (SCENARIO, "spate", spate.guarantee.as_str()),
        (SCENARIO, PLAIN, plain.guarantee.as_str()),
    );
    format!(
        "- demo shape: spate ÷ plain loop = {} (events/s), {} (CPU µs per event), {} (peak RSS)\n",
        ratio(rows, a, b),
        ratio_of(rows, a, b, Row::cpu_us_per_event),
        ratio_of(rows, a, b, |r| r.median_of(|run| run.rss_mib)),
    )
}

/// The rows of scenario `number` (`"3 "`, …) that have a figure.
fn measured<'a>(rows: &'a [Row], number: &'a str) -> impl Iterator<Item = &'a Row> {
    rows.iter()
        .filter(move |r| r.scenario.starts_with(number) && r.measured())
}

fn handler_mean_us(note: &str) -> f64 {
    note.split("handler mean ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn conditions(config: &Config) -> String {
    format!(
        "- every case repeated {repeat}× (rounds interleave the cases), median of the verified runs shown; every contender a child process; CPU s = user+system of the contender over the throughput phase; peak RSS = the contender's VmHWM over its whole run\n\
         - throughput phase: the input preloaded with {events} records (128 B; {events_1k} for 1 KB), timed from the first output to the output completing them (process start and group join excluded for everyone)\n\
         - latency phase: then {lat} more records written at {rate:.0}/s; latency = output arrival at the checker − the time stamped in the record when it was handed to the producer\n\
         - Kafka: Tansu, input 4 partitions, output 1 partition, 1,000 keys; spate `ordering: partition`, `concurrency: {{min: 4, max: 64}}`, `max_in_flight` 5,000, commits/transactions every 100 ms; raw loop and Quix Streams commit every 100 ms too; Bytewax has no recovery store configured (no committed positions)\n\
         - verified: every record id came out (counts match input); exactly-once: no id twice (Tansu shows aborted transactional records to every reader, so this holds for clean runs without crashes and cannot tell committed from aborted); consumer-group contenders: every input offset committed; JetStream: input consumer fully acked, exactly-once output stream holds exactly one message per input; core NATS: input published with at most {window} outstanding, a loss fails the run\n\
         - demo shape (6): `pipelines/demo.yaml` (count and paths replaced) over {demo} generated events, and a plain Rust loop doing the same work (the generator's code, `serde_json` parse, the filter's predicate, the file sink's envelope encoder, a `BufWriter`); both child processes; throughput phase from the first output line to the line completing the kept events, events/s = generated events ÷ that window; verified: both output files hold exactly the expected kept lines (the same lines, by an order-independent fingerprint) and dead-letter files the malformed ones\n",
        repeat = config.repeat,
        events = report::thousands(config.events as f64),
        events_1k = report::thousands(config.events_1k as f64),
        lat = report::thousands(config.latency_events as f64),
        rate = config.latency_rate,
        window = report::thousands(harness::nats_cases::CORE_WINDOW as f64),
        demo = report::thousands(config.demo_events as f64),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        harness::child::main(&args[1..]);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a listing; nothing to list.
    }
    let quick = args.iter().any(|a| a == "--quick") || std::env::var("SPATE_BENCH_QUICK").is_ok();
    let began = Instant::now();
    let config = Config::from_env(quick);
    let root = harness::repo_root();
    let work = root.join("target/spate-bench").join(harness::unique("run"));
    std::fs::create_dir_all(&work).expect("work directory");
    let python = python();
    if let Err(why) = &python {
        eprintln!("Python peers: {why}");
    }
    let ctx = Ctx {
        config: config.clone(),
        exe: std::env::current_exe().expect("own path"),
        work: work.clone(),
        python,
        peers: root.join("benches/peers"),
    };
    eprintln!(
        "compare: {config:?}\nlogs and pipelines: {}",
        work.display()
    );
    let wants = |s: u32| config.scenarios.contains(&s);
    let broker = kafka_common::Tansu::start();
    let mut rows = Vec::new();
    // Wall time per scenario, for the report: where a full run's time goes.
    let mut scenario_secs: Vec<(u32, f64)> = Vec::new();
    let mut timed = |scenario: u32, run: &mut dyn FnMut() -> Vec<Row>| -> Vec<Row> {
        let began = Instant::now();
        let rows = run();
        scenario_secs.push((scenario, began.elapsed().as_secs_f64()));
        rows
    };
    if wants(1) {
        rows.extend(timed(1, &mut || {
            let mut rows = harness::kafka_cases::scenario_1(&ctx, &broker, 128, config.events);
            rows.extend(harness::kafka_cases::scenario_1(
                &ctx,
                &broker,
                1024,
                config.events_1k,
            ));
            rows
        }));
    }
    let mut nats_version = "not used".to_owned();
    if wants(2) {
        rows.extend(timed(2, &mut || {
            let (nats_rows, version) = harness::nats_cases::scenario_2(&ctx);
            nats_version = version;
            nats_rows
        }));
    }
    if wants(3) {
        rows.extend(timed(3, &mut || {
            harness::kafka_cases::scenario_3(&ctx, &broker)
        }));
    }
    if wants(4) {
        rows.extend(timed(4, &mut || {
            harness::dynamics::scenario_4(&ctx, &broker)
        }));
    }
    if wants(5) {
        rows.extend(timed(5, &mut || {
            harness::dynamics::scenario_5(&ctx, &broker)
        }));
    }
    if wants(6) {
        rows.extend(timed(6, &mut || harness::demo_cases::scenario_6(&ctx)));
    }
    drop(broker);
    let tansu = std::process::Command::new(
        std::env::var("TANSU_BIN").unwrap_or_else(|_| "tansu".to_owned()),
    )
    .arg("--version")
    .output()
    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    .unwrap_or_else(|e| format!("unknown ({e})"));
    let machine = harness::machine::describe(
        &nats_version,
        &tansu,
        ctx.python.as_ref().ok().map(|p| p.as_path()),
    );
    let wall = began.elapsed().as_secs_f64();
    let out_dir = std::env::var("SPATE_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("benches/results"));
    std::fs::create_dir_all(&out_dir).expect("output directory");
    let title = format!(
        "spate vs raw clients and peers{}",
        if quick { " (quick smoke run)" } else { "" }
    );
    let mut md = String::new();
    let _ = writeln!(md, "# {title}\n");
    let _ = writeln!(
        md,
        "Written by `scripts/bench` (`cargo bench --bench compare{}`); harness wall time {:.0} s ({}). How each figure is measured and checked: `benches/README.md`.\n",
        if quick { " -- --quick" } else { "" },
        wall,
        scenario_secs
            .iter()
            .map(|(scenario, secs)| format!("scenario {scenario}: {secs:.0} s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    md.push_str(&report::table(&rows));
    let _ = writeln!(md, "\n`CPU µs per event`: the contender's CPU seconds over the throughput phase ÷ the events it processed in it, in µs (median of the runs' own figures). `÷ raw floor`: events/s over the raw client's under the same guarantee (scenario 3: over the bound; scenario 6: over the plain loop's). `spate ÷ this`: spate's events/s over this contender's under the same guarantee. `–`: not measured.\n");
    let _ = writeln!(md, "## Ratios\n\n{}", notes(&rows));
    let _ = writeln!(md, "## Conditions\n\n{}", conditions(&config));
    let _ = writeln!(md, "## Machine\n\n{machine}");
    let failures: Vec<String> = rows
        .iter()
        .flat_map(|r| {
            r.failures.iter().map(move |f| {
                format!(
                    "- {} / {} / {}: {}",
                    r.scenario,
                    r.contender,
                    r.guarantee,
                    f.replace('\n', " ")
                )
            })
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(
            md,
            "## Failed runs (kept out of the medians)\n\n{}\n",
            failures.join("\n")
        );
    }
    std::fs::write(out_dir.join("compare.md"), &md).expect("compare.md written");
    std::fs::write(out_dir.join("runs.json"), report::runs_json(&rows)).expect("runs.json written");
    std::fs::write(
        out_dir.join("machine.md"),
        format!("# Machine\n\n{machine}"),
    )
    .expect("machine.md written");
    if let Err(e) = harness::chart::draw(&out_dir.join("compare.svg"), &rows, &title) {
        eprintln!("chart not drawn: {e}");
    }
    println!("{md}");
    eprintln!("wrote {} ({wall:.0} s)", out_dir.display());
}
