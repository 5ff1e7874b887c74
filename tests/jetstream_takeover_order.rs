//! Per-key order on JetStream subject partitions survives kill -9 (issue
//! 19's headline case), end to end: two `spate` processes share a
//! 4-partition source (`ordering: key`), an `http` handler calls a small
//! server in this test that records what it handles and answers 503 to
//! about 1 % of calls, and a random schedule kills one of the processes
//! with SIGKILL 8 times once it holds partitions, restarting it each time.
//! Then, per key: nothing is lost; after dropping copies, the handled
//! sequence numbers strictly increase; the handler never ran two events of
//! one key at once. Under exactly-once (JetStream → JetStream) the output
//! stream also holds every event exactly once, in order per key.
//!
//! The schedule's seed is printed; `SPATE_ORDER_SEED=<n>` replays it. Each
//! kill's takeover time (kill → the victim's partitions' next event handled
//! by another process) and the copies it caused are printed too.

use spate_testsupport::http::serve;
use spate_testsupport::nats as nats_common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use nats_common::{create_stream, start_own_with_config, stream_messages, unique};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PARTITIONS: u32 = 4;
const KEYS: u64 = 200;
const EVENTS: u64 = 6000;
const KILLS: usize = 8;
const PROCESSES: usize = 2;
/// Share of handler calls answered 503 (retryable).
const FAILURE_RATE: f64 = 0.01;
/// How long the whole run may take before the test gives up.
const PATIENCE: Duration = Duration::from_secs(90);

/// The server's subject mapping: `ord.<device>` → `pord.<p>.<device>`.
fn mapping_config() -> String {
    format!(
        "mappings = {{\n  \"ord.*\": \"pord.{{{{partition({PARTITIONS},1)}}}}.{{{{wildcard(1)}}}}\"\n}}\n"
    )
}

fn pipeline(nats: &str, handler: &str, tag: &str, delivery: &str) -> String {
    format!(
        r#"settings:
  metrics_address: off
functions:
  - name: ordered
    input:
      type: jetstream
      url: {nats}
      stream: IN_{tag}
      durable: ord-{tag}
      partitions: {PARTITIONS}
      partition_subject: "pord.{{partition}}.*"
      key_token: 3
      lease_ttl: 2s
      ack_wait: 4s
      fetch_wait: 300ms
    handler:
      name: http
      url: {handler}
      timeout: 5s
      headers: {{x-process: '${{PROCESS}}'}}
    outputs: [{{type: jetstream, url: {nats}, subject: out.{tag}}}]
    dead_letter: {{type: jetstream, url: {nats}, subject: dead.{tag}}}
    delivery: {delivery}
    ordering: key
    concurrency: {{min: 1, max: 16}}
    retry: {{max_attempts: 20, initial_backoff: 5ms, max_backoff: 50ms, timeout: 10s}}
    max_in_flight: {{events: 500, bytes: 16MiB}}
    commit_interval: 50ms
    drain_timeout: 5s
"#
    )
}

/// One event the handler answered 200 to.
#[derive(Debug, Clone, Copy)]
struct Handled {
    key: u64,
    seq: u64,
    partition: u32,
    process: u32,
    at: Instant,
}

/// What the recording handler saw.
struct Recorder {
    rng: StdRng,
    handled: Vec<Handled>,
    running: HashMap<u64, u32>,
    /// (key, seq) of calls that started while another of their key ran.
    overlaps: Vec<(u64, u64)>,
    failed: usize,
}

type Shared = Arc<Mutex<Recorder>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Recorder> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

fn header_u32(headers: &HeaderMap, name: &str) -> u32 {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(u32::MAX)
}

/// Counts a call of `key` as running until dropped: a call whose client
/// died (kill -9) is dropped by the server mid-way and must not stay
/// counted.
struct Running {
    shared: Shared,
    key: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(running) = lock(&self.shared).running.get_mut(&self.key) {
            *running -= 1;
        }
    }
}

/// Records the call, fails ~1 % of them with 503, echoes the body (the
/// output) otherwise.
async fn handle(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Bytes) {
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let (Some(key), Some(seq)) = (value["key"].as_u64(), value["seq"].as_u64()) else {
        return (StatusCode::BAD_REQUEST, Bytes::new());
    };
    let fail = {
        let mut recorder = lock(&shared);
        let running = recorder.running.entry(key).or_insert(0);
        *running += 1;
        if *running > 1 {
            recorder.overlaps.push((key, seq));
        }
        recorder.rng.random_bool(FAILURE_RATE)
    };
    let running = Running {
        shared: shared.clone(),
        key,
    };
    // Long enough for an overlapping call of the same key to be seen.
    tokio::time::sleep(Duration::from_millis(1)).await;
    drop(running);
    let mut recorder = lock(&shared);
    if fail {
        recorder.failed += 1;
        return (StatusCode::SERVICE_UNAVAILABLE, Bytes::new());
    }
    recorder.handled.push(Handled {
        key,
        seq,
        partition: header_u32(&headers, "spate-partition"),
        process: header_u32(&headers, "x-process"),
        at: Instant::now(),
    });
    (StatusCode::OK, body)
}

async fn start_recorder(seed: u64) -> (Shared, String) {
    let shared: Shared = Arc::new(Mutex::new(Recorder {
        rng: StdRng::seed_from_u64(seed ^ 0x5eed),
        handled: Vec::new(),
        running: HashMap::new(),
        overlaps: Vec::new(),
        failed: 0,
    }));
    let app = Router::new()
        .route("/fn", post(handle))
        .with_state(shared.clone());
    (shared, format!("http://{}/fn", serve(app).await))
}

/// The seed of the run: `SPATE_ORDER_SEED`, else a fresh one (printed).
fn seed() -> u64 {
    let seed = std::env::var("SPATE_ORDER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("SPATE_ORDER_SEED={seed} replays this run");
    seed
}

/// Publishes the events `{key, seq}` (seq counting per key) at a steady
/// pace, so kills land while work flows.
async fn publish(client: async_nats::Client) {
    let js = jetstream::new(client);
    for chunk in (0..EVENTS).step_by(50) {
        let mut acks = Vec::new();
        for n in chunk..(chunk + 50).min(EVENTS) {
            let (key, seq) = (n % KEYS, n / KEYS);
            let payload = format!(r#"{{"key":{key},"seq":{seq}}}"#);
            acks.push(
                js.publish(format!("ord.dev-{key}"), payload.into())
                    .await
                    .expect("publish"),
            );
        }
        for ack in acks {
            ack.await.expect("stored");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The partitions whose lease `pid` holds now (its lease values start
/// with the pid in hex).
async fn leases_of(store: &jetstream::kv::Store, pid: u32) -> BTreeSet<u32> {
    let prefix = format!("{pid:x}-");
    let mut held = BTreeSet::new();
    for p in 0..PARTITIONS {
        if let Ok(Some(owner)) = store.get(format!("p.{p}")).await {
            if owner.starts_with(prefix.as_bytes()) {
                held.insert(p);
            }
        }
    }
    held
}

/// A running `spate run`: its number (sent as `x-process`), killed if the
/// test ends first.
struct Member {
    number: u32,
    child: Child,
    log: PathBuf,
}

fn start_member(number: u32, file: &Path, dir: &Path) -> Member {
    let log = dir.join(format!("spate-{number}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_spate"))
        .arg("run")
        .arg(file)
        .env("SPATE_LOG", "info")
        .env("PROCESS", number.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spate starts");
    Member { number, child, log }
}

impl Member {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn assert_running(&mut self) {
        if let Ok(Some(exit)) = self.child.try_wait() {
            panic!(
                "spate {} exited early ({exit}):\n{}",
                self.number,
                self.log_tail()
            );
        }
    }

    /// kill -9: the process dies wherever it is.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then a clean exit.
    fn stop(mut self) {
        spate_testsupport::spate_process::sigterm_when_handled(self.child.id());
        let exit = self.child.wait().expect("wait");
        assert!(
            exit.success(),
            "SIGTERM ends the run cleanly, got {exit}:\n{}",
            self.log_tail()
        );
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one kill did: the takeover time of the victim's partitions and
/// how many events were handled again because of it.
struct KillReport {
    /// `None` if no other process handled an event of them by the end.
    takeover: Option<Duration>,
    copies: usize,
}

/// Kills a process `KILLS` times, each once it holds partitions and
/// handled events with them, restarting it at once.
async fn chaos(
    rng: &mut StdRng,
    members: &mut Vec<Member>,
    store: &jetstream::kv::Store,
    recorder: &Shared,
    file: &Path,
    dir: &Path,
) -> Vec<(Instant, u32, BTreeSet<u32>)> {
    let mut kills = Vec::new();
    let first_number = members.len() as u32;
    let deadline = Instant::now() + PATIENCE;
    for next_number in first_number..first_number + KILLS as u32 {
        let victim = rng.random_range(0..members.len());
        let pid = members[victim].child.id();
        let number = members[victim].number;
        // Wait until it holds partitions and handled events of them.
        let held = loop {
            members[victim].assert_running();
            let held = leases_of(store, pid).await;
            let handled = lock(recorder)
                .handled
                .iter()
                .rev()
                .take(200)
                .any(|h| h.process == number);
            if !held.is_empty() && handled {
                break held;
            }
            assert!(
                Instant::now() < deadline,
                "process {number} never held partitions"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..600))).await;
        let held = held.union(&leases_of(store, pid).await).copied().collect();
        let killed = members.swap_remove(victim);
        let at = Instant::now();
        killed.kill();
        eprintln!("kill -9 of process {number} holding partitions {held:?}");
        kills.push((at, number, held));
        members.push(start_member(next_number, file, dir));
    }
    kills
}

/// Per kill: the time until another process handled an event of the
/// victim's partitions, and the copies handled after it (a copy: an event
/// handled before; each copy counts for the latest kill before it).
fn kill_reports(handled: &[Handled], kills: &[(Instant, u32, BTreeSet<u32>)]) -> Vec<KillReport> {
    let mut copies = vec![0; kills.len()];
    let mut seen = BTreeSet::new();
    for h in handled {
        if !seen.insert((h.key, h.seq)) {
            if let Some(kill) = kills.iter().rposition(|(at, _, _)| *at <= h.at) {
                copies[kill] += 1;
            }
        }
    }
    kills
        .iter()
        .zip(copies)
        .map(|((at, victim, partitions), copies)| {
            let takeover = handled
                .iter()
                .find(|h| h.at >= *at && h.process != *victim && partitions.contains(&h.partition))
                .map(|h| h.at.duration_since(*at));
            KillReport { takeover, copies }
        })
        .collect()
}

/// Per key, in handling order: events handled out of order (a sequence
/// number not seen before, below the highest seen), as (key, seq, after).
fn order_violations(handled: &[Handled]) -> Vec<(u64, u64, u64)> {
    let mut seen: BTreeMap<u64, (u64, BTreeSet<u64>)> = BTreeMap::new();
    let mut violations = Vec::new();
    for h in handled {
        let (highest, copies) = seen.entry(h.key).or_insert((0, BTreeSet::new()));
        if !copies.insert(h.seq) {
            continue; // a copy
        }
        if copies.len() > 1 && h.seq <= *highest {
            violations.push((h.key, h.seq, *highest));
        }
        *highest = (*highest).max(h.seq);
    }
    violations
}

async fn wait_until_all_handled(recorder: &Shared, members: &mut [Member]) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let distinct: BTreeSet<(u64, u64)> = lock(recorder)
            .handled
            .iter()
            .map(|h| (h.key, h.seq))
            .collect();
        if distinct.len() as u64 == EVENTS {
            return;
        }
        for member in members.iter_mut() {
            member.assert_running();
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {EVENTS} events handled",
            distinct.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// Checks the output stream of an exactly-once run: every event once, in
/// order per key.
async fn check_exactly_once_outputs(client: &async_nats::Client, stream: &str) {
    let outputs = stream_messages(client, stream).await;
    let mut count: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    let mut out_of_order = Vec::new();
    for message in &outputs {
        let value: serde_json::Value = serde_json::from_slice(&message.payload).expect("JSON");
        let (key, seq) = (
            value["key"].as_u64().expect("key"),
            value["seq"].as_u64().expect("seq"),
        );
        *count.entry((key, seq)).or_insert(0) += 1;
        if let Some(previous) = last.insert(key, seq) {
            if previous >= seq {
                out_of_order.push((key, seq, previous));
            }
        }
    }
    let copies: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(count.len() as u64, EVENTS, "every event has its output");
    assert!(copies.is_empty(), "outputs stored twice: {copies:?}");
    assert!(
        out_of_order.is_empty(),
        "outputs out of order per key (key, seq, after): {out_of_order:?}"
    );
}

async fn kills_keep_key_order(delivery: &str) {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let server = start_own_with_config(&mapping_config());
    let client = server.client().await;
    let tag = unique("takeover");
    create_stream(&client, &format!("IN_{tag}"), &["pord.*.*".to_owned()]).await;
    create_stream(&client, &format!("OUT_{tag}"), &[format!("out.{tag}")]).await;
    create_stream(&client, &format!("DEAD_{tag}"), &[format!("dead.{tag}")]).await;
    let (recorder, handler_url) = start_recorder(seed).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(&file, pipeline(&server.url, &handler_url, &tag, delivery)).expect("pipeline");

    let publisher = tokio::spawn(publish(client.clone()));
    let mut members: Vec<Member> = (0..PROCESSES as u32)
        .map(|n| start_member(n, &file, dir.path()))
        .collect();
    let store = {
        let js = jetstream::new(client.clone());
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(store) = js.get_key_value(format!("spate-leases-ord-{tag}")).await {
                break store;
            }
            assert!(Instant::now() < deadline, "no lease bucket");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let kills = chaos(&mut rng, &mut members, &store, &recorder, &file, dir.path()).await;
    publisher.await.expect("publisher");
    wait_until_all_handled(&recorder, &mut members).await;
    for member in members {
        member.stop();
    }

    let (handled, overlaps, failed) = {
        let recorder = lock(&recorder);
        (
            recorder.handled.clone(),
            recorder.overlaps.clone(),
            recorder.failed,
        )
    };
    let reports = kill_reports(&handled, &kills);
    for (i, report) in reports.iter().enumerate() {
        eprintln!(
            "kill {i}: takeover {:?}, {} events handled again",
            report.takeover, report.copies
        );
    }
    let distinct: BTreeSet<(u64, u64)> = handled.iter().map(|h| (h.key, h.seq)).collect();
    eprintln!(
        "{delivery}: {EVENTS} events, {KILLS} kills, {} handled calls ({} copies), {failed} answered 503, median takeover {:?}, most copies after one kill {}, {:.1} s",
        handled.len(),
        handled.len() - distinct.len(),
        median(reports.iter().filter_map(|r| r.takeover).collect()),
        reports.iter().map(|r| r.copies).max().unwrap_or(0),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(distinct.len() as u64, EVENTS, "nothing lost");
    if std::env::var("SPATE_ORDER_KEEP_LOGS").is_ok() {
        eprintln!("logs kept in {}", dir.keep().display());
    }
    let violations = order_violations(&handled);
    if let Some((key, _, _)) = violations.first() {
        let t0 = handled.first().map(|h| h.at).unwrap_or(started);
        let history: Vec<String> = handled
            .iter()
            .filter(|h| h.key == *key)
            .map(|h| {
                format!(
                    "seq {} p{} by {} at {:?}",
                    h.seq,
                    h.partition,
                    h.process,
                    h.at - t0
                )
            })
            .collect();
        let kill_times: Vec<String> = kills
            .iter()
            .map(|(at, n, p)| format!("{n} {p:?} at {:?}", *at - t0))
            .collect();
        eprintln!("key {key}: {history:#?}\nkills: {kill_times:?}");
    }
    assert!(
        violations.is_empty(),
        "{} events handled after a newer one of their key (key, seq, after): {:?} (seed {seed})",
        violations.len(),
        &violations[..violations.len().min(20)]
    );
    assert!(
        overlaps.is_empty(),
        "events of one key handled at once (key, seq): {overlaps:?} (seed {seed})"
    );
    if delivery == "exactly_once" {
        check_exactly_once_outputs(&client, &format!("OUT_{tag}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_order_survives_kills_on_jetstream_partitions_at_least_once() {
    kills_keep_key_order("at_least_once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_order_survives_kills_on_jetstream_partitions_exactly_once_without_copies() {
    kills_keep_key_order("exactly_once").await;
}
