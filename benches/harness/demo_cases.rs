//! Scenario 6, the demo's shape: spate running `pipelines/demo.yaml` (the
//! `generate` source → the `filter` built-in → a `file` sink, dead letters
//! to a second file) over `demo_events` events, beside a plain Rust loop
//! doing the same work with no engine, in the same run.
//!
//! spate's pipeline is `pipelines/demo.yaml` itself with only `count` and
//! the two file paths replaced, so the bench follows the demo. The plain
//! loop ([`plain_loop`]) calls the generator's own code
//! (`spate_builtin::generate::Telemetry::event`) for the same events,
//! parses each payload as JSON (`serde_json::Value`, as the `filter`
//! built-in does), keeps `temperature >= -40`, and writes the kept events
//! as envelope lines (`spate_builtin::file::envelope::encode`, the file
//! sink's own encoder) through a `BufWriter`, the undecodable ones to a
//! dead-letter file, then flushes.
//!
//! One run: the contender (a child process) starts; the harness tails its
//! output file, counting lines; the throughput phase runs from the first
//! line to the line completing the expected kept events (process start
//! left out for both alike); events/s = generated events ÷ that window,
//! CPU s over it. Both children stay alive after their work until SIGTERM,
//! so the sampler sees them past the end of the phase.
//!
//! Guarantees: a run counts only if its output file holds exactly the
//! expected number of kept events (every generated event minus the
//! malformed ones: every temperature the generator makes passes the
//! filter), its dead-letter file exactly the malformed ones, and its
//! output's order-independent fingerprint (sum of a hash of every line)
//! equals the first verified run's, whichever contender made it: the same
//! lines, byte for byte, in any order.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use spate_builtin::file::envelope;
use spate_builtin::generate::GenerateSettings;
use spate_connector::{Headers, PartitionId, Record};

use super::proc::Contender;
use super::report::{Row, Run};
use super::{await_first, run_rounds, unique, wait_progress, Case, Ctx};

/// The scenario's name in the table.
pub const SCENARIO: &str = "6 demo shape: generate → filter → file";
/// The plain loop's name in the table.
pub const PLAIN: &str = "plain Rust loop";
/// Set in spate's child: stay alive after the pipeline ends, until SIGTERM.
pub const HOLD_ENV: &str = "SPATE_BENCH_HOLD";

/// The demo's generator and filter settings, which the plain loop copies
/// (and [`spate_pipeline`] checks are still the demo's).
const DEVICES: u64 = 100;
const PARTITIONS: u32 = 4;
const MALFORMED_EVERY: u64 = 500;
const FIELD: &str = "temperature";
const MIN_TEMPERATURE: f64 = -40.0;

/// The generator of a run of `count` events.
fn settings(count: u64) -> GenerateSettings {
    GenerateSettings {
        devices: DEVICES,
        partitions: PARTITIONS,
        count: Some(count),
        malformed_every: MALFORMED_EVERY,
        ..GenerateSettings::default()
    }
}

/// (kept, dead-lettered) events of a run of `count`: event `g` is
/// malformed when `g + 1` is a multiple of `malformed_every`; every other
/// one passes the filter (the generator's temperatures stay within 10–30).
pub fn expected(count: u64) -> (u64, u64) {
    let dead = count / MALFORMED_EVERY;
    (count - dead, dead)
}

/// `pipelines/demo.yaml` with `count` and the two paths replaced; panics if
/// the demo no longer has the shape the plain loop copies.
fn spate_pipeline(ctx: &Ctx, slug: &str, count: u64, out: &Path, dead: &Path) -> PathBuf {
    let demo = super::repo_root().join("pipelines/demo.yaml");
    let mut text = std::fs::read_to_string(&demo)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", demo.display()));
    for kept in [
        "type: generate".to_owned(),
        format!("devices: {DEVICES}"),
        format!("partitions: {PARTITIONS}"),
        format!("malformed_every: {MALFORMED_EVERY}"),
        "name: filter".to_owned(),
        format!("field: {FIELD}"),
        format!("gte: {MIN_TEMPERATURE}"),
        "type: file".to_owned(),
    ] {
        assert!(
            text.contains(&kept),
            "pipelines/demo.yaml no longer says `{kept}`: update benches/harness/demo_cases.rs"
        );
    }
    for (from, to) in [
        ("count: 20000", format!("count: {count}")),
        (
            "path: out/demo-readings.jsonl",
            format!("path: {}", out.display()),
        ),
        (
            "path: out/demo-dead-letters.jsonl",
            format!("path: {}", dead.display()),
        ),
    ] {
        assert_eq!(
            text.matches(from).count(),
            1,
            "pipelines/demo.yaml no longer has `{from}` once: update benches/harness/demo_cases.rs"
        );
        text = text.replace(from, &to);
    }
    let path = ctx.file(&format!("{slug}.yaml"));
    std::fs::write(&path, text).expect("pipeline written");
    path
}

/// The plain loop (`compare child plain-demo <count> <out> <dead>`): the
/// demo's work with no engine; see the module docs.
pub fn plain_loop(count: u64, out: &Path, dead: &Path) -> std::io::Result<()> {
    let telemetry = settings(count).telemetry();
    let partitions = u64::from(telemetry.partitions);
    let mut kept = BufWriter::new(File::create(out)?);
    let mut dead_letters = BufWriter::new(File::create(dead)?);
    let mut line = Vec::with_capacity(1024);
    for g in 0..count {
        // Event g of the source: partition g % partitions, offset g / partitions.
        let event = telemetry.event((g % partitions) as PartitionId, g / partitions);
        line.clear();
        let mut headers = Headers::new();
        let sink = match serde_json::from_slice::<Value>(&event.payload) {
            Ok(document) => {
                let keep = document
                    .pointer(&format!("/{FIELD}"))
                    .and_then(Value::as_f64)
                    .is_some_and(|t| t >= MIN_TEMPERATURE);
                if !keep {
                    continue;
                }
                &mut kept
            }
            Err(e) => {
                headers.push("error", format!("payload is not JSON: {e}"));
                headers.push("partition", event.position.partition.to_string());
                headers.push("offset", event.position.offset.to_string());
                &mut dead_letters
            }
        };
        let record = Record {
            key: event.key,
            payload: event.payload,
            headers,
            timestamp_ms: event.timestamp_ms,
        };
        envelope::encode(&record, &mut line);
        sink.write_all(&line)?;
    }
    kept.flush()?;
    dead_letters.flush()
}

/// Counts the lines of a file as another process writes it.
struct Tail {
    path: PathBuf,
    file: Option<File>,
    buf: Vec<u8>,
    lines: u64,
    target: u64,
    first: Option<Instant>,
    reached: Option<Instant>,
}

impl Tail {
    fn new(path: &Path, target: u64) -> Self {
        Self {
            path: path.to_owned(),
            file: None,
            buf: vec![0; 1 << 20],
            lines: 0,
            target,
            first: None,
            reached: None,
        }
    }

    /// Reads what was appended; returns the lines so far.
    fn poll(&mut self) -> u64 {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let Some(file) = self.file.as_mut() else {
            return 0;
        };
        while let Ok(read @ 1..) = file.read(&mut self.buf) {
            self.lines += self.buf[..read].iter().filter(|b| **b == b'\n').count() as u64;
        }
        let now = Instant::now();
        if self.lines > 0 && self.first.is_none() {
            self.first = Some(now);
        }
        if self.lines >= self.target && self.reached.is_none() {
            self.reached = Some(now);
        }
        self.lines
    }
}

/// (lines, order-independent fingerprint) of a finished file.
fn fingerprint(path: &Path) -> Result<(u64, u64), String> {
    let file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let (mut lines, mut sum, mut line) = (0u64, 0u64, Vec::new());
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return Ok((lines, sum)),
            Ok(_) => {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                line.hash(&mut hasher);
                sum = sum.wrapping_add(hasher.finish());
                lines += 1;
            }
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
    }
}

/// One run of one contender (`spate` or `plain`); `reference` is the first
/// verified run's output fingerprint.
fn demo_run(
    ctx: &Ctx,
    who: &str,
    count: u64,
    reference: &Cell<Option<u64>>,
) -> Result<Run, String> {
    let slug = unique(&format!("s6-{who}"));
    let out = ctx.file(&format!("{slug}.jsonl"));
    let dead = ctx.file(&format!("{slug}-dead.jsonl"));
    let command = if who == "spate" {
        let pipeline = spate_pipeline(ctx, &slug, count, &out, &dead);
        let mut command = ctx.child(&["spate", &pipeline.display().to_string()]);
        command.env(HOLD_ENV, "1");
        command
    } else {
        let (out, dead) = (out.display().to_string(), dead.display().to_string());
        ctx.child(&["plain-demo", &count.to_string(), &out, &dead])
    };
    let (kept, malformed) = expected(count);
    let mut contender = Contender::spawn(&slug, command, &ctx.file(&format!("{slug}.log")));
    let tail = RefCell::new(Tail::new(&out, kept));
    await_first(
        &slug,
        Duration::from_secs(60),
        &mut || tail.borrow_mut().poll() > 0,
        &mut || contender.assert_alive(),
    )?;
    let lines = || tail.borrow_mut().poll() as usize;
    wait_progress(
        &slug,
        Duration::from_secs(30),
        &lines,
        &|| tail.borrow().lines >= kept,
        &mut || contender.assert_alive(),
    )?;
    // Let the sampler see the process past the end of the phase.
    std::thread::sleep(super::proc::SAMPLE_EVERY * 2);
    let stopped = contender.stop(Duration::from_secs(30));
    let tail = tail.into_inner();
    let (first, done) = (
        tail.first.ok_or("no output")?,
        tail.reached.ok_or("unfinished")?,
    );
    let checked = (fingerprint(&out), fingerprint(&dead));
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&dead);
    let ((lines, sum), (dead_lines, _)) = (checked.0?, checked.1?);
    if lines != kept || dead_lines != malformed {
        return Err(format!(
            "{slug}: {lines} lines out (expected {kept}), {dead_lines} dead letters (expected {malformed})"
        ));
    }
    match reference.get() {
        Some(expected) if expected != sum => {
            return Err(format!(
                "{slug}: output lines differ from the first verified run's (fingerprint {sum:016x}, expected {expected:016x})"
            ))
        }
        Some(_) => {}
        None => reference.set(Some(sum)),
    }
    let window = done.duration_since(first).as_secs_f64().max(1e-3);
    Ok(Run {
        rate: count as f64 / window,
        cpu_s: stopped.cpu_between(first, done),
        events: count,
        rss_mib: stopped.peak_rss_mib(),
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        note: format!(
            "{lines} kept, {dead_lines} dead-lettered, same lines as the first verified run"
        ),
        ..Default::default()
    })
}

/// Scenario 6: spate and the plain loop, rounds interleaved.
pub fn scenario_6(ctx: &Ctx) -> Vec<Row> {
    let count = ctx.config.demo_events;
    let reference = Cell::new(None);
    let mut cases: Vec<Case> = Vec::new();
    for (who, label, guarantee) in [
        ("plain", PLAIN, "one pass, flushed at the end"),
        ("spate", "spate", "at-least-once, ordering key"),
    ] {
        if !(ctx.config.runs(who) || who == "plain" && ctx.config.runs("raw")) {
            continue;
        }
        let reference = &reference;
        cases.push((
            Row::new(SCENARIO, label, guarantee),
            Box::new(move |_round| demo_run(ctx, who, count, reference)),
        ));
    }
    run_rounds(&mut cases, ctx.config.repeat);
    cases.into_iter().map(|(row, _)| row).collect()
}
