//! A small mutation fuzzer on stable Rust: a target is a seed corpus and a
//! function `fn(&[u8])` that must not panic, hang or abort on any input.
//!
//! - Input `i` of a run is a pure function of the seed, the target's name
//!   and `i` (a fixed corpus, no feedback), so a seed replays a run exactly;
//!   `SPATE_FUZZ_REPLAY=<target>:<from>-<to>` runs only those inputs,
//!   printing each index and saving each input (see below) before running
//!   it, so the input that kills the process is on disk.
//! - Inputs run on one thread with a large stack ([`STACK_BYTES`]), so a
//!   deep but legal input is not taken for a crash, while unbounded
//!   recursion in the code under test still overflows it and kills the
//!   process. Before each batch of [`BATCH`] inputs the seed and the first
//!   index are written straight to stderr (not captured by the test
//!   harness), so the line before a crash says how to replay it.
//! - A panic is a finding: the input is written to
//!   `$CARGO_TARGET_TMPDIR/fuzz-findings/<target>/` and the test fails,
//!   saying to move it into `tests/fuzz/regressions/<target>/`, where
//!   [`replay_regressions`] runs it in every test run.
//! - An input that runs longer than `SPATE_FUZZ_HANG_SECONDS` (default 10)
//!   is a finding (a hang): the test fails naming its index.
//!
//! Environment: `SPATE_FUZZ_SECONDS` (time per target, default
//! [`DEFAULT_SECONDS`]), `SPATE_FUZZ_SEED` (default: from the clock,
//! printed).

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Seconds per target when `SPATE_FUZZ_SECONDS` is not set: the targets of
/// one run together stay within about a minute.
pub const DEFAULT_SECONDS: u64 = 10;

/// Stack of the thread that runs the inputs: that of a process's main
/// thread on Linux, where `spate validate` loads files (a debug build's
/// frames are larger than a release build's, so this has headroom for any
/// legal depth, while unbounded recursion still overflows it).
pub const STACK_BYTES: usize = 8 << 20;

/// Inputs between two progress lines.
pub const BATCH: u64 = 2000;

/// A run stops after this many findings.
pub const MAX_FINDINGS: usize = 10;

/// What is fuzzed.
#[derive(Clone)]
pub struct Target {
    /// Names the target in messages, seeds and the regressions directory.
    pub name: &'static str,
    /// Inputs to mutate (at least one).
    pub corpus: Vec<Vec<u8>>,
    /// Must not panic, hang or abort on any input.
    pub run: fn(&[u8]),
    /// Also apply the YAML-aware mutations.
    pub yaml: bool,
    /// Longest input generated.
    pub max_len: usize,
}

/// The PRNG: SplitMix64, enough for choosing mutations.
pub struct Rng(u64);

impl Rng {
    /// A generator for input `index` of `target` under `seed`.
    pub fn for_input(seed: u64, target: &str, index: u64) -> Self {
        let mut hash = 0xcbf2_9ce4_8422_2325_u64;
        for byte in target.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
        Rng(seed ^ hash ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The seed of this run, the same for every target (printed by [`fuzz`]).
pub fn seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        env_u64("SPATE_FUZZ_SEED").unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
    })
}

/// Input `index` of `target` under `seed`.
pub fn input(target: &Target, seed: u64, index: u64) -> Vec<u8> {
    let mut rng = Rng::for_input(seed, target.name, index);
    let mut data = rng.pick(&target.corpus).clone();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        super::mutate::mutate(&mut rng, &mut data, &target.corpus, target.yaml);
    }
    data.truncate(target.max_len);
    data
}

fn raw_stderr(line: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{line}");
    let _ = stderr.flush();
}

/// Which inputs to run: all for the time budget, or a replayed range.
fn replay_range(target: &str) -> Option<(u64, u64)> {
    let spec = std::env::var("SPATE_FUZZ_REPLAY").ok()?;
    let (name, range) = spec.split_once(':')?;
    if name != target {
        return Some((1, 0)); // another target is replayed: run nothing here
    }
    let (from, to) = range.split_once('-').unwrap_or((range, range));
    Some((from.parse().ok()?, to.parse().ok()?))
}

/// How many inputs ran, and the findings.
pub struct Outcome {
    /// Inputs run.
    pub inputs: u64,
    /// Time taken.
    pub elapsed: Duration,
    /// What went wrong, one line each.
    pub findings: Vec<String>,
}

/// Fuzzes `target` for its time budget (or replays a range); panics with
/// every finding.
pub fn fuzz(target: Target) {
    let seed = seed();
    let seconds = env_u64("SPATE_FUZZ_SECONDS").unwrap_or(DEFAULT_SECONDS);
    let hang = Duration::from_secs(env_u64("SPATE_FUZZ_HANG_SECONDS").unwrap_or(10));
    let replay = replay_range(target.name);
    let name = target.name;
    raw_stderr(&format!(
        "fuzz {}: seed {seed} (replay with SPATE_FUZZ_SEED={seed}), {seconds}s",
        target.name
    ));
    let outcome = run(target, seed, Duration::from_secs(seconds), hang, replay);
    let rate = outcome.inputs as f64 / outcome.elapsed.as_secs_f64().max(1e-9);
    println!(
        "fuzz {}: {} inputs in {:.1}s ({rate:.0}/s), {} findings",
        name,
        outcome.inputs,
        outcome.elapsed.as_secs_f64(),
        outcome.findings.len()
    );
    assert!(
        outcome.findings.is_empty(),
        "fuzzing found (seed {seed}):\n{}",
        outcome.findings.join("\n")
    );
}

/// Runs `target` for `budget` (no replay) and returns what happened,
/// without failing: for testing the harness itself.
pub fn run_quietly(target: Target, seed: u64, budget: Duration, hang: Duration) -> Outcome {
    run(target, seed, budget, hang, None)
}

fn run(
    target: Target,
    seed: u64,
    budget: Duration,
    hang: Duration,
    replay: Option<(u64, u64)>,
) -> Outcome {
    let current = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let name = target.name;
    // To regenerate the input a stuck worker holds.
    let copy = target.clone();
    let worker = {
        let (current, done) = (current.clone(), done.clone());
        std::thread::Builder::new()
            .name(format!("fuzz-{name}"))
            .stack_size(STACK_BYTES)
            .spawn(move || {
                let findings = work(&target, seed, budget, replay, &current);
                done.store(true, Ordering::SeqCst);
                findings
            })
    };
    let worker = match worker {
        Ok(worker) => worker,
        Err(error) => panic!("cannot start the fuzz thread: {error}"),
    };
    let started = Instant::now();
    let (mut seen, mut since) = (u64::MAX, Instant::now());
    while !done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
        let now = current.load(Ordering::SeqCst);
        if now != seen {
            (seen, since) = (now, Instant::now());
        } else if since.elapsed() > hang {
            let index = now.saturating_sub(1);
            let data = input(&copy, seed, index);
            let saved = save_finding(name, index, &data);
            return Outcome {
                inputs: now,
                elapsed: started.elapsed(),
                findings: vec![format!(
                    "{name}: input {index} ran longer than {hang:?} (a hang), saved to {}; replay with SPATE_FUZZ_SEED={seed} SPATE_FUZZ_REPLAY={name}:{index}",
                    saved.display()
                )],
            };
        }
    }
    let (inputs, findings) = match worker.join() {
        Ok(result) => result,
        Err(_) => (
            current.load(Ordering::SeqCst),
            vec!["the fuzz thread panicked".to_owned()],
        ),
    };
    Outcome {
        inputs,
        elapsed: started.elapsed(),
        findings,
    }
}

fn work(
    target: &Target,
    seed: u64,
    budget: Duration,
    replay: Option<(u64, u64)>,
    current: &AtomicU64,
) -> (u64, Vec<String>) {
    let started = Instant::now();
    let (from, to) = replay.unwrap_or((0, u64::MAX));
    let mut findings = Vec::new();
    let mut ran = 0;
    let mut index = from;
    while index <= to
        && findings.len() < MAX_FINDINGS
        && (replay.is_some() || started.elapsed() < budget)
    {
        if replay.is_some() {
            raw_stderr(&format!("fuzz {}: input {index}", target.name));
        } else if (index - from) % BATCH == 0 {
            raw_stderr(&format!(
                "fuzz {}: seed {seed}, inputs from {index} (replay: SPATE_FUZZ_SEED={seed} SPATE_FUZZ_REPLAY={}:{index}-{})",
                target.name,
                target.name,
                index + BATCH - 1
            ));
        }
        let data = input(target, seed, index);
        if replay.is_some() {
            // Saved before it runs, so an input that kills the process is
            // on disk to become a regression.
            let saved = save_finding(target.name, index, &data);
            raw_stderr(&format!("  saved to {}", saved.display()));
        }
        current.store(index + 1, Ordering::SeqCst);
        if catch_unwind(AssertUnwindSafe(|| (target.run)(&data))).is_err() {
            let saved = save_finding(target.name, index, &data);
            findings.push(format!(
                "{}: input {index} panicked, saved to {}; move it to tests/fuzz/regressions/{}/",
                target.name,
                saved.display(),
                target.name
            ));
        }
        ran += 1;
        index += 1;
    }
    (ran, findings)
}

fn save_finding(target: &str, index: u64, data: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz-findings")
        .join(target);
    let path = dir.join(format!("input-{index}"));
    if let Err(error) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, data)) {
        raw_stderr(&format!("cannot save {}: {error}", path.display()));
    }
    path
}

/// Runs every file of `tests/fuzz/regressions/<target>/` through the
/// target (each must not panic); returns how many ran.
pub fn replay_regressions(target: &Target) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/regressions")
        .join(target.name);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    paths.sort();
    let mut failed = Vec::new();
    for path in &paths {
        let data = std::fs::read(path).unwrap_or_default();
        if catch_unwind(AssertUnwindSafe(|| (target.run)(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "regressions that fail again: {failed:?}");
    paths.len()
}
