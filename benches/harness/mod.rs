//! The comparison harness behind `cargo bench --bench compare` (run through
//! `scripts/bench`): brokers, contenders as child processes, checkers,
//! scenarios, and the report. See `benches/README.md` for what each
//! scenario measures and how each figure is verified.
//!
//! Guarantees: every contender runs as a child process measured the same
//! way ([`proc`]); every figure comes from a run whose output was read back
//! and checked by record id ([`tally`]); a run that fails its check is kept
//! out of the medians and reported as a failure.

pub mod chart;
pub mod child;
pub mod demo_cases;
pub mod dynamics;
pub mod kafka;
pub mod kafka_cases;
pub mod machine;
pub mod nats_cases;
pub mod proc;
pub mod report;
pub mod tally;

pub use spate_testsupport::bench::{nats_setup, raw_kafka, raw_nats};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Sizes and repeats of a comparison run (from the environment).
#[derive(Debug, Clone)]
pub struct Config {
    /// Repeats of every case (median reported).
    pub repeat: usize,
    /// Throughput-phase events per Kafka/NATS run with 128 B payloads.
    pub events: u64,
    /// Throughput-phase events per Kafka run with 1 KB payloads.
    pub events_1k: u64,
    /// Latency-phase events per run.
    pub latency_events: u64,
    /// Latency-phase rate, events/s.
    pub latency_rate: f64,
    /// Scenario 3: events for `key`/`none` and for `partition` ordering.
    pub parallel_events: (u64, u64),
    /// Scenario 4: seconds of the slow phase and input rate (events/s).
    pub backpressure: (u64, f64),
    /// Scenario 5: seconds before and after the step, and the two rates.
    pub step: (u64, u64, f64, f64),
    /// Scenario 6: events generated per run of the demo's shape.
    pub demo_events: u64,
    /// Consumer-group session timeout (ms) for every Kafka contender. Tansu
    /// answers a group join after half of it, so it is every run's fixed
    /// start-up cost: 2 s keeps that at 1 s (every contender heartbeats at
    /// a third of it).
    pub session_ms: u32,
    /// `fetch.wait.max.ms` for every Kafka contender's consumer: Tansu
    /// answers a fetch only when this runs out, not when data arrives.
    pub fetch_wait_ms: u32,
    /// Scenarios to run (1–6), all by default.
    pub scenarios: Vec<u32>,
    /// Contenders to run (`spate`, `raw`, `quix`, `bytewax`), all by default
    /// (`raw` includes scenario 6's plain loop).
    pub contenders: Vec<String>,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Config {
    /// The full run, or the smoke run with `quick`; `SPATE_BENCH_*`
    /// variables override single figures.
    pub fn from_env(quick: bool) -> Self {
        let (repeat, events, events_1k, latency, parallel, slow, step, demo) = if quick {
            (1, 20_000, 10_000, 1_000, (5_000, 500), 8, (3, 4), 200_000)
        } else {
            (
                3,
                100_000,
                50_000,
                2_000,
                (120_000, 2_000),
                60,
                (8, 15),
                2_000_000,
            )
        };
        let list = |name: &str, all: &str| -> Vec<String> {
            std::env::var(name)
                .unwrap_or_else(|_| all.to_owned())
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        Self {
            repeat: env_or("SPATE_BENCH_REPEAT", repeat).max(1),
            events: env_or("SPATE_BENCH_EVENTS", events),
            events_1k: env_or("SPATE_BENCH_EVENTS_1K", events_1k),
            latency_events: env_or("SPATE_BENCH_LATENCY_EVENTS", latency),
            latency_rate: env_or("SPATE_BENCH_LATENCY_RATE", 2_000.0),
            parallel_events: (
                env_or("SPATE_BENCH_PARALLEL_EVENTS", parallel.0),
                parallel.1,
            ),
            backpressure: (env_or("SPATE_BENCH_BACKPRESSURE_SECS", slow), 2_000.0),
            step: (step.0, step.1, 200.0, 4_000.0),
            demo_events: env_or("SPATE_BENCH_DEMO_EVENTS", demo),
            session_ms: env_or("SPATE_BENCH_SESSION_MS", 2_000),
            fetch_wait_ms: env_or("SPATE_BENCH_FETCH_WAIT_MS", 10),
            scenarios: list("SPATE_BENCH_SCENARIOS", "1,2,3,4,5,6")
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
            contenders: list("SPATE_BENCH_CONTENDERS", "spate,raw,quix,bytewax"),
        }
    }

    /// Whether `contender` is to run.
    pub fn runs(&self, contender: &str) -> bool {
        self.contenders.iter().any(|c| c == contender)
    }
}

/// What every scenario needs.
pub struct Ctx {
    /// Sizes and repeats.
    pub config: Config,
    /// This bench binary (re-run as `child …` for the Rust contenders).
    pub exe: PathBuf,
    /// Pipeline files and contender logs of this run.
    pub work: PathBuf,
    /// The virtualenv's Python with Quix Streams and Bytewax, or why not.
    pub python: Result<PathBuf, String>,
    /// `benches/peers` (the Python jobs).
    pub peers: PathBuf,
}

impl Ctx {
    /// A command running this binary as `child <args>`.
    pub fn child(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.exe);
        command.arg("child").args(args);
        command
    }

    /// A fresh file path under the work directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }
}

/// A unique name for this run's topics, streams and groups.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// A case: its row and how to run it once (round number given).
pub type Case<'a> = (
    report::Row,
    Box<dyn FnMut(usize) -> Result<report::Run, String> + 'a>,
);

/// Runs every case `repeat` times, round by round (case 1, case 2, …, then
/// again), so slow drift of the machine spreads over every case alike. A
/// run that panics or fails its check is kept as a failure of its row, so
/// one broken case never hides the others.
pub fn run_rounds(cases: &mut [Case<'_>], repeat: usize) {
    for round in 0..repeat {
        for (row, run) in cases.iter_mut() {
            attempt(row, round, run);
        }
    }
}

fn attempt(
    row: &mut report::Row,
    round: usize,
    run: &mut Box<dyn FnMut(usize) -> Result<report::Run, String> + '_>,
) {
    let label = format!("{} / {} / {}", row.scenario, row.contender, row.guarantee);
    eprintln!("  {label} #{round} ...");
    let began = std::time::Instant::now();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(round)));
    match outcome {
        Ok(Ok(result)) => {
            eprintln!(
                "  {label} #{round}: {:.0} ev/s, p50 {:.1} ms, p99 {:.1} ms, cpu {:.2} s, rss {:.0} MiB{} [run took {:.1} s]",
                result.rate,
                result.p50_ms,
                result.p99_ms,
                result.cpu_s,
                result.rss_mib,
                if result.note.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", result.note)
                },
                began.elapsed().as_secs_f64()
            );
            row.runs.push(result);
        }
        Ok(Err(why)) => {
            eprintln!("  {label} #{round}: FAILED: {why}");
            row.failures.push(why);
        }
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panicked".to_owned());
            eprintln!("  {label} #{round}: PANICKED: {why}");
            row.failures.push(why);
        }
    }
}

/// The figures of a verified run: the rate of the throughput phase (from
/// the first output until the `n`-th distinct one), the latencies of the
/// paced phase, the contender's CPU over the throughput phase and its peak
/// memory; `duplicates`, `lost` and `note` as the case counted them.
pub fn throughput_run(
    tally: &tally::Tally,
    stopped: &proc::Stopped,
    n: u64,
    duplicates: usize,
    lost: usize,
    note: String,
) -> Result<report::Run, String> {
    let first = tally.first.ok_or("no output")?;
    let done = tally
        .reached(n as usize)
        .ok_or("throughput phase unfinished")?;
    let window = done.duration_since(first).as_secs_f64().max(1e-3);
    Ok(report::Run {
        rate: n as f64 / window,
        p50_ms: tally::quantile_ms(&tally.latencies_us, 0.5),
        p99_ms: tally::quantile_ms(&tally.latencies_us, 0.99),
        cpu_s: stopped.cpu_between(first, done),
        events: n,
        rss_mib: stopped.peak_rss_mib(),
        duplicates,
        lost,
        note,
        ..Default::default()
    })
}

/// Waits until `done` or `stall` passes with `progress` unchanged; calls
/// `check` (which may panic) every poll.
pub fn wait_progress(
    what: &str,
    stall: Duration,
    progress: &dyn Fn() -> usize,
    done: &dyn Fn() -> bool,
    check: &mut dyn FnMut(),
) -> Result<(), String> {
    let mut last = (progress(), std::time::Instant::now());
    loop {
        if done() {
            return Ok(());
        }
        check();
        let now = progress();
        if now != last.0 {
            last = (now, std::time::Instant::now());
        } else if last.1.elapsed() > stall {
            return Err(format!("{what}: stuck at {now} for {stall:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits up to `within` until `started`; calls `check` every poll.
pub fn await_first(
    what: &str,
    within: Duration,
    started: &mut dyn FnMut() -> bool,
    check: &mut dyn FnMut(),
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + within;
    while !started() {
        check();
        if std::time::Instant::now() > deadline {
            return Err(format!("{what}: no output within {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// The repository root (where `benches/` is).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
