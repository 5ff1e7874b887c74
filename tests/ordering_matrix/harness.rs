//! Runs one row of the matrix: `spate` processes of one pipeline (a fleet,
//! each with its own `SPATE_PROCESS` name), a publisher feeding the source
//! at a steady rate through the broker's own client, and a random chaos
//! schedule — kill -9 after assignment, SIGTERM handover, scale to three
//! processes and back, broker restart — drawn from a printed seed
//! (`SPATE_MATRIX_SEED` replays it). Then the calls the recorder saw are
//! checked against the row's promise.
//!
//! `SPATE_MATRIX_SOAK=1` runs the same rows with more events and more
//! chaos (see `scripts/soak-ordering`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::check::{self, Kill, Promise, Report};
use super::recorder::Recorder;
use spate_testsupport::spate_process::SpateProcess;

/// One chaos step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// kill -9 a process that has handled events, and start a new one.
    Kill,
    /// SIGTERM a process (it drains and commits), then start a new one.
    Handover,
    /// Start processes until three run.
    ScaleOut,
    /// SIGTERM processes until one runs.
    ScaleIn,
    /// Restart the broker (only rows whose test owns it).
    BrokerRestart,
}

/// Every chaos step: the chaos of rows whose broker is the test's own.
pub const FULL_CHAOS: &[Action] = &[
    Action::Kill,
    Action::Handover,
    Action::ScaleOut,
    Action::ScaleIn,
    Action::BrokerRestart,
];

/// Every chaos step but the broker restart.
pub const PROCESS_CHAOS: &[Action] = FULL_CHAOS.split_at(4).0;

/// Restarts a row's broker; the publisher pauses meanwhile.
pub type Restart = Box<dyn FnMut() + Send>;

/// Publishes events (by number) to the row's source; retried by the
/// publisher itself where the broker allows it.
pub type Publish = Arc<dyn Fn(Vec<u64>) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// The [`Restart`] of a nats-server of the test's own: down for 500 ms,
/// then up again on the same port and store.
pub fn nats_restart(server: &Arc<Mutex<crate::nats_common::Server>>) -> Restart {
    let server = server.clone();
    Box::new(move || {
        let mut server = server.lock().unwrap_or_else(|p| p.into_inner());
        assert!(
            server.restart(Duration::from_millis(500)),
            "the server is the test's"
        );
    })
}

/// A row: its name, what it promises, the chaos it faces.
pub struct Row {
    /// The row's name in the contract table.
    pub name: &'static str,
    /// What the check asserts.
    pub promise: Promise,
    /// Chaos steps drawn from.
    pub actions: &'static [Action],
}

/// Size of a run: events, chaos steps, publishing time.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// Events published.
    pub events: u64,
    /// Chaos steps.
    pub steps: usize,
    /// How long publishing lasts.
    pub publish_for: Duration,
}

/// The default run, or the soak run with `SPATE_MATRIX_SOAK=1`.
pub fn scale() -> Scale {
    if std::env::var_os("SPATE_MATRIX_SOAK").is_some() {
        Scale {
            events: 40_000,
            steps: 12,
            publish_for: Duration::from_secs(60),
        }
    } else {
        Scale {
            events: 4_000,
            steps: 4,
            publish_for: Duration::from_secs(12),
        }
    }
}

/// Writes a row's pipeline file `pipeline.yaml` into `dir`; its path.
pub fn write_pipeline(dir: &Path, text: &str) -> PathBuf {
    let file = dir.join("pipeline.yaml");
    std::fs::write(&file, text).expect("pipeline");
    file
}

/// A directory for the row's pipeline and process logs; kept (and named)
/// with `SPATE_MATRIX_KEEP=1`.
pub fn workdir() -> tempfile::TempDir {
    let mut dir = tempfile::tempdir().expect("temp dir");
    if std::env::var_os("SPATE_MATRIX_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("logs kept in {}", dir.path().display());
    }
    dir
}

/// The seed of the default run: fixed, so the suite replays the same
/// schedules (each row still draws its own timings from it).
const DEFAULT_SEED: u64 = 1;

/// The seed of this run: `SPATE_MATRIX_SEED` (a number, or `random`), else
/// a random one in the soak run and [`DEFAULT_SEED`] otherwise.
pub fn seed() -> u64 {
    match std::env::var("SPATE_MATRIX_SEED") {
        Ok(text) if text != "random" => text.parse().unwrap_or(DEFAULT_SEED),
        Ok(_) => rand::random(),
        Err(_) if std::env::var_os("SPATE_MATRIX_SOAK").is_some() => rand::random(),
        Err(_) => DEFAULT_SEED,
    }
}

/// The key of event `n` of a row with `keys` keys, and its number within
/// the key (1, 2, …).
pub fn key_and_seq(n: u64, keys: u64) -> (String, u64) {
    (format!("k{}", n % keys), n / keys + 1)
}

/// The JSON payload of event `n`.
pub fn payload(n: u64, keys: u64) -> String {
    let (key, seq) = key_and_seq(n, keys);
    format!(r#"{{"key":"{key}","seq":{seq},"n":{n}}}"#)
}

/// A row's pipeline: one function `matrix` reading `input`, calling the
/// recorder ([`handler_yaml`]) and with the other keys in `rest` (outputs,
/// dead letters, delivery, ordering, commit or transaction interval). Both
/// are `key: value` lines, indented here.
pub fn pipeline_yaml(recorder: &Recorder, input: &str, rest: &str) -> String {
    let indent = |text: &str, by: &str| -> String {
        text.lines().map(|line| format!("{by}{line}\n")).collect()
    };
    format!(
        "settings:\n  metrics_address: off\nfunctions:\n  - name: matrix\n    input:\n{input}    \
         {handler}\n{rest}    concurrency: {{min: 1, max: 32}}\n    drain_timeout: 10s\n",
        input = indent(input, "      "),
        handler = handler_yaml(recorder),
        rest = indent(rest, "    "),
    )
}

/// The `handler:` block every row's pipeline uses: the recorder, named by
/// the process.
fn handler_yaml(recorder: &Recorder) -> String {
    format!(
        "handler:\n      name: http\n      url: {}\n      timeout: 5s\n      \
         headers: {{x-spate-process: '${{SPATE_PROCESS}}'}}\n    \
         retry: {{max_attempts: 10, initial_backoff: 5ms, max_backoff: 50ms, timeout: 10s}}",
        recorder.url
    )
}

/// The figures of a finished row, for the results table.
pub struct Outcome {
    /// What the calls show.
    pub report: Report,
    /// What the kills cost.
    pub takeover: check::Takeover,
    /// Wall time of the row.
    pub seconds: f64,
}

/// Processes of the row, started and stopped by the chaos.
struct Fleet {
    pipeline: PathBuf,
    dir: PathBuf,
    running: Vec<(String, SpateProcess)>,
    started: usize,
}

impl Fleet {
    fn start_one(&mut self) -> String {
        let name = format!("p{}", self.started);
        self.started += 1;
        let log = self.dir.join(format!("{name}.log"));
        let level = std::env::var("SPATE_MATRIX_LOG").unwrap_or_else(|_| "info".to_owned());
        let env = [
            ("SPATE_PROCESS", name.as_str()),
            ("SPATE_LOG", level.as_str()),
        ];
        let process = SpateProcess::start(env!("CARGO_BIN_EXE_spate"), &self.pipeline, log, &env);
        self.running.push((name.clone(), process));
        name
    }

    fn take(&mut self, index: usize) -> (String, SpateProcess) {
        self.running.remove(index)
    }

    fn stop_all(&mut self) {
        for (_, process) in self.running.drain(..) {
            process.stop();
        }
    }
}

/// Runs `row` against `pipeline` (its processes log into `dir`), with
/// `publish` feeding the source and `restart` restarting the broker.
pub async fn run(
    row: &Row,
    recorder: &Recorder,
    pipeline: &Path,
    dir: &Path,
    publish: Publish,
    restart: Option<Restart>,
) -> Outcome {
    let seed = seed();
    let scale = scale();
    eprintln!(
        "row {}: seed {seed} (SPATE_MATRIX_SEED={seed} replays it), {scale:?}",
        row.name
    );
    let started = Instant::now();
    let broker_gate = Arc::new(tokio::sync::RwLock::new(()));
    let fleet = Arc::new(Mutex::new(Fleet {
        pipeline: pipeline.to_owned(),
        dir: dir.to_owned(),
        running: Vec::new(),
        started: 0,
    }));
    lock(&fleet).start_one();
    let publisher = tokio::spawn(publish_steadily(publish, scale, broker_gate.clone()));
    let kills = {
        let (fleet, recorder, gate) = (fleet.clone(), recorder.clone(), broker_gate.clone());
        let actions = row.actions;
        tokio::task::spawn_blocking(move || {
            chaos(seed, scale, actions, &fleet, &recorder, restart, &gate)
        })
        .await
        .expect("chaos thread")
    };
    publisher.await.expect("publisher");
    settle(row, recorder, scale.events, &fleet).await;
    let stopper = fleet.clone();
    tokio::task::spawn_blocking(move || lock(&stopper).stop_all())
        .await
        .expect("processes stopped");
    let calls = recorder.calls();
    let report = check::analyse(&calls, scale.events, row.promise.order);
    let takeover = check::takeover(&calls, &kills);
    let outcome = Outcome {
        report,
        takeover,
        seconds: started.elapsed().as_secs_f64(),
    };
    let ms = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    eprintln!(
        "row {}: {} in {:.1} s; kills {}; takeover ms [{}]; first re-handled ms [{}]; re-handled per kill {:?}",
        row.name,
        outcome.report.line(),
        outcome.seconds,
        kills.len(),
        ms(&outcome.takeover.waits),
        ms(&outcome.takeover.first_copy),
        outcome.takeover.redelivered
    );
    outcome.report.assert_keeps(row.name, seed, row.promise);
    outcome
}

fn lock(fleet: &Mutex<Fleet>) -> std::sync::MutexGuard<'_, Fleet> {
    fleet
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Publishes events `0..events` in chunks spread over `publish_for`; a
/// chunk waits while the broker restarts.
async fn publish_steadily(publish: Publish, scale: Scale, gate: Arc<tokio::sync::RwLock<()>>) {
    const CHUNKS: u64 = 80;
    let per_chunk = scale.events.div_ceil(CHUNKS);
    let pause = scale.publish_for / CHUNKS as u32;
    let mut next = 0;
    while next < scale.events {
        let end = (next + per_chunk).min(scale.events);
        {
            let _open = gate.read().await;
            publish((next..end).collect()).await;
        }
        next = end;
        tokio::time::sleep(pause).await;
    }
}

/// The chaos schedule: each allowed action once and more up to
/// `scale.steps`, in random order at random moments while the publisher
/// runs. Returns the kills.
fn chaos(
    seed: u64,
    scale: Scale,
    actions: &[Action],
    fleet: &Mutex<Fleet>,
    recorder: &Recorder,
    mut restart: Option<Restart>,
    gate: &tokio::sync::RwLock<()>,
) -> Vec<Kill> {
    let mut rng = StdRng::seed_from_u64(seed);
    // Every action the row allows at least once, in random order, then
    // random ones up to the run's number of steps.
    let mut plan = actions.to_vec();
    plan.shuffle(&mut rng);
    while plan.len() < scale.steps {
        plan.push(actions[rng.random_range(0..actions.len())]);
    }
    eprintln!("chaos plan: {plan:?}");
    let mut kills = Vec::new();
    let step = scale.publish_for / (plan.len() as u32 + 1);
    for action in plan {
        std::thread::sleep(step.mul_f64(rng.random_range(0.5..1.0)));
        eprintln!("chaos: {action:?}");
        match action {
            Action::Kill => {
                let (name, process) = assigned_victim(fleet, recorder, &mut rng);
                process.kill();
                let at = recorder.now();
                kills.push(Kill { process: name, at });
                lock(fleet).start_one();
            }
            Action::Handover => {
                let (_, process) = assigned_victim(fleet, recorder, &mut rng);
                process.stop();
                lock(fleet).start_one();
            }
            Action::ScaleOut => {
                let mut fleet = lock(fleet);
                while fleet.running.len() < 3 {
                    fleet.start_one();
                }
            }
            Action::ScaleIn => loop {
                let last = {
                    let mut fleet = lock(fleet);
                    if fleet.running.len() <= 1 {
                        break;
                    }
                    let last = fleet.running.len() - 1;
                    fleet.take(last).1
                };
                last.stop();
            },
            Action::BrokerRestart => {
                if let Some(restart) = restart.as_mut() {
                    let _closed = gate.blocking_write();
                    restart();
                }
            }
        }
    }
    kills
}

/// A running process that has handled at least one event since it started
/// (waits for one), taken out of the fleet.
fn assigned_victim(
    fleet: &Mutex<Fleet>,
    recorder: &Recorder,
    rng: &mut StdRng,
) -> (String, SpateProcess) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        {
            let mut fleet = lock(fleet);
            let assigned: Vec<usize> = (0..fleet.running.len())
                .filter(|&i| recorder.handled_by(&fleet.running[i].0) > 0)
                .collect();
            if !assigned.is_empty() {
                let pick = assigned[rng.random_range(0..assigned.len())];
                return fleet.take(pick);
            }
            for (_, process) in fleet.running.iter_mut() {
                process.assert_running();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no process was assigned any event within a minute"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until every event is handled (lossless rows) or until the calls
/// stop for two seconds (rows that may lose events), at most two minutes.
async fn settle(row: &Row, recorder: &Recorder, events: u64, fleet: &Mutex<Fleet>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = (recorder.calls().len(), Instant::now());
    loop {
        let distinct = recorder.distinct() as u64;
        if distinct >= events {
            return;
        }
        let count = recorder.calls().len();
        if count != last.0 {
            last = (count, Instant::now());
        } else if !row.promise.lossless && last.1.elapsed() > Duration::from_secs(2) {
            return;
        }
        if Instant::now() > deadline {
            let fleet = lock(fleet);
            let tails: Vec<String> = fleet
                .running
                .iter()
                .map(|(name, _)| format!("--- {name}\n{}", quiet_tail(&fleet.dir, name)))
                .collect();
            eprintln!(
                "row {}: only {distinct} of {events} events handled after two minutes\n{}",
                row.name,
                tails.join("\n")
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last lines of a process's log, without the scaler's.
fn quiet_tail(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("handler concurrency"))
        .collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
