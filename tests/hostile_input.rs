//! One poison event costs at most its own dead letter: the `spate` binary
//! on a real Kafka-protocol broker (Tansu) is fed 10,000 good events mixed
//! with poison ones of every kind a payload can be — an expression driven
//! into deep recursion, into a huge allocation and into an endless loop, a
//! payload that is not JSON, and a 1 MiB payload whose dead letter is over
//! the dead-letter producer's 1 MB limit. Every good event comes out once,
//! every poison one is in the dead-letter topic with its reason (the
//! oversized one in reduced form: size and SHA-256 instead of the payload),
//! the process keeps running with its resident memory under a stated bound,
//! and SIGTERM ends it within `drain_timeout` while poison events are still
//! in flight. The same events through `spate test` give the same outcomes.

use spate_testsupport::kafka::blocking as kafka_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_common::{header, Tansu};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};
use rdkafka::ClientConfig;
use spate_testsupport::spate_process::SpateProcess;

const PARTITIONS: i32 = 2;
const GOOD_EVENTS: usize = 10_000;
/// One poison event after every this many good ones.
const POISON_EVERY: usize = 250;
/// The bound the process's resident memory must stay under.
const RSS_BOUND_BYTES: u64 = 128 << 20;
/// The dead-letter producer's `message.max.bytes`.
const DEAD_LETTER_LIMIT: usize = 1_000_000;
/// The oversized poison payload: over the dead-letter limit.
const BIG_PAYLOAD: usize = (1 << 20) + 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The map expression: the payload's `op` decides how hostile it is.
const EXPRESSION: &str = r#"def f: if . <= 0 then 0 else (. - 1 | f) + 1 end;
        if .op == "recurse" then {id, depth: (.n | f)}
        elif .op == "repeat" then {id, text: ("x" * .n)}
        elif .op == "loop" then {id, last: last(range(1e18))}
        else {id} end"#;

/// The kinds of poison, and the dead-letter reason each must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Poison {
    Recursion,
    Allocation,
    Endless,
    NotJson,
    Oversized,
}

impl Poison {
    const ALL: [Poison; 5] = [
        Poison::Recursion,
        Poison::Allocation,
        Poison::Endless,
        Poison::NotJson,
        Poison::Oversized,
    ];

    fn payload(self, id: usize) -> Vec<u8> {
        match self {
            Poison::Recursion => format!(r#"{{"id":{id},"op":"recurse","n":10000000}}"#).into(),
            Poison::Allocation => {
                format!(r#"{{"id":{id},"op":"repeat","n":1000000000000}}"#).into()
            }
            Poison::Endless => format!(r#"{{"id":{id},"op":"loop"}}"#).into(),
            Poison::NotJson => format!("not json {id}").into(),
            Poison::Oversized => {
                let mut payload = format!("oversized {id} ").into_bytes();
                payload.resize(BIG_PAYLOAD, b'y');
                payload
            }
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Poison::Recursion | Poison::Allocation => "resource-limit",
            Poison::Endless => "timeout",
            Poison::NotJson | Poison::Oversized => "handler-error",
        }
    }
}

/// One produced event: its id, and its poison kind if it is one.
#[derive(Debug, Clone)]
struct Produced {
    id: usize,
    poison: Option<Poison>,
    payload: Vec<u8>,
}

/// `count` good events with a poison one after every [`POISON_EVERY`],
/// the kinds in turn; ids from `first`.
fn events(first: usize, good: usize) -> Vec<Produced> {
    let mut out = Vec::new();
    let mut kinds = Poison::ALL.iter().cycle();
    for n in 0..good {
        let id = first + out.len();
        out.push(Produced {
            id,
            poison: None,
            payload: format!(r#"{{"id":{id},"op":"ok"}}"#).into(),
        });
        if n % POISON_EVERY == POISON_EVERY / 2 {
            let kind = *kinds.next().unwrap_or(&Poison::NotJson);
            let id = first + out.len();
            out.push(Produced {
                id,
                poison: Some(kind),
                payload: kind.payload(id),
            });
        }
    }
    out
}

/// Produces `events` (event `id` to partition `id % PARTITIONS`, keyed by
/// `id % 50`) with a producer that takes the oversized payload, and
/// returns (partition, offset) → id.
fn produce(bootstrap: &str, topic: &str, events: &[Produced]) -> BTreeMap<(i32, i64), usize> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("message.max.bytes", "4000000")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for event in events {
        let key = format!("k{}", event.id % 50);
        let mut record = BaseRecord::to(topic)
            .key(key.as_bytes())
            .payload(event.payload.as_slice())
            .partition(event.id as i32 % PARTITIONS);
        while let Err((_, back)) = producer.send(record) {
            record = back;
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // The idempotent producer keeps each partition's records in send order.
    producer
        .flush(Duration::from_secs(60))
        .expect("every input record acknowledged");
    // Offsets follow production order within each partition.
    let mut next = [0i64; PARTITIONS as usize];
    let mut at = BTreeMap::new();
    for event in events {
        let partition = event.id as i32 % PARTITIONS;
        at.insert((partition, next[partition as usize]), event.id);
        next[partition as usize] += 1;
    }
    at
}

fn pipeline(dir: &Path, bootstrap: &str, prefix: &str) -> std::path::PathBuf {
    let text = format!(
        r#"settings:
  metrics_address: off
functions:
  - name: hostile
    input:
      type: kafka
      bootstrap_servers: {bootstrap}
      topics: [{prefix}-in]
      group_id: {prefix}-group
      session_timeout: 2s
    handler:
      name: map
      expr: |
        {expression}
    outputs:
      - {{type: kafka, bootstrap_servers: {bootstrap}, topic: {prefix}-out}}
    dead_letter:
      type: kafka
      bootstrap_servers: {bootstrap}
      topic: {prefix}-dead
      properties: {{message.max.bytes: "{DEAD_LETTER_LIMIT}"}}
    ordering: key
    concurrency: {{min: 1, max: 8}}
    commit_interval: 20ms
    drain_timeout: 5s
"#,
        expression = EXPRESSION
    );
    let path = dir.join("hostile.yaml");
    std::fs::write(&path, text).expect("pipeline written");
    path
}

/// Samples the resident memory of `pid` every 50 ms until `stop`.
fn watch_rss(pid: u32, stop: Arc<AtomicBool>, peak: Arc<AtomicU64>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let rss_kib = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            if let Some(kib) = rss_kib {
                peak.fetch_max(kib * 1024, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

/// Asserts that each of `events` was counted once in `counts` (by id);
/// the failure names the event (`what`) and shows `log`.
fn assert_each_once<'a>(
    counts: &BTreeMap<usize, u32>,
    events: impl Iterator<Item = &'a Produced>,
    what: impl Fn(&Produced) -> String,
    log: &str,
) {
    for event in events {
        assert_eq!(
            counts.get(&event.id),
            Some(&1),
            "{} once\n{log}",
            what(event)
        );
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn poison_events_of_every_kind_cost_only_their_dead_letters() {
    let broker = Tansu::start();
    let prefix = "hostile";
    broker.create_topic(&format!("{prefix}-in"), PARTITIONS);
    broker.create_topic(&format!("{prefix}-out"), PARTITIONS);
    broker.create_topic(&format!("{prefix}-dead"), 1);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = pipeline(dir.path(), &broker.bootstrap, prefix);

    let produced = events(0, GOOD_EVENTS);
    let by_id: BTreeMap<usize, Produced> = produced.iter().map(|e| (e.id, e.clone())).collect();
    let at = produce(&broker.bootstrap, &format!("{prefix}-in"), &produced);

    let mut spate = SpateProcess::start(
        env!("CARGO_BIN_EXE_spate"),
        &file,
        dir.path().join("spate.log"),
        &[],
    );
    let pid = spate.pid();
    let (stop, peak) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let watcher = watch_rss(pid, stop.clone(), peak.clone());

    let good = produced.iter().filter(|e| e.poison.is_none()).count();
    let poisons = produced.len() - good;
    let outputs = broker.read_all(&format!("{prefix}-out"), good, Duration::from_secs(2));
    let dead = broker.read_all(&format!("{prefix}-dead"), poisons, Duration::from_secs(2));
    spate.assert_running();

    // Every good event came out exactly once.
    let mut seen: BTreeMap<usize, u32> = BTreeMap::new();
    for message in &outputs {
        let value: serde_json::Value =
            serde_json::from_slice(&message.payload).expect("outputs are JSON");
        let id = value["id"].as_u64().expect("an id") as usize;
        *seen.entry(id).or_default() += 1;
    }
    let good_events = produced.iter().filter(|e| e.poison.is_none());
    let out = |event: &Produced| format!("good event {} out", event.id);
    assert_each_once(&seen, good_events, out, &spate.log_tail());
    assert_eq!(seen.len(), good, "no output for a poison event");

    // Every poison event is a dead letter with its reason.
    let mut dead_ids: BTreeMap<usize, u32> = BTreeMap::new();
    for message in &dead {
        let partition: i32 = header(message, "spate-dlq-partition")
            .and_then(|p| p.parse().ok())
            .expect("partition header");
        let offset: i64 = header(message, "spate-dlq-offset")
            .and_then(|o| o.parse().ok())
            .expect("offset header");
        let id = at[&(partition, offset)];
        let kind = by_id[&id]
            .poison
            .expect("only poison events are dead letters");
        assert_eq!(
            header(message, "spate-dlq-reason"),
            Some(kind.reason()),
            "reason of {kind:?} (event {id}): error {:?}",
            header(message, "spate-dlq-error")
        );
        if kind == Poison::Oversized {
            assert!(message.payload.is_empty(), "reduced: no payload");
            assert_eq!(
                header(message, "spate-dlq-payload-size"),
                Some(BIG_PAYLOAD.to_string().as_str())
            );
            assert_eq!(
                header(message, "spate-dlq-payload-sha256"),
                Some(sha256_hex(&by_id[&id].payload).as_str())
            );
            assert!(
                header(message, "spate-dlq-reduced")
                    .is_some_and(|why| why.contains("message.max.bytes")),
                "the reduced form names the setting: {:?}",
                header(message, "spate-dlq-reduced")
            );
        } else {
            assert_eq!(
                message.payload, by_id[&id].payload,
                "dead letter keeps the payload"
            );
        }
        *dead_ids.entry(id).or_insert(0) += 1;
    }
    let poison_events = produced.iter().filter(|e| e.poison.is_some());
    let dead_lettered = |event: &Produced| {
        format!(
            "poison event {} ({:?}) dead-lettered",
            event.id, event.poison
        )
    };
    assert_each_once(&dead_ids, poison_events, dead_lettered, &spate.log_tail());

    // SIGTERM while endless evaluations are in flight: out within the drain.
    let more = events(produced.len(), 10)
        .into_iter()
        .map(|mut e| {
            e.poison = Some(Poison::Endless);
            e.payload = Poison::Endless.payload(e.id);
            e
        })
        .collect::<Vec<_>>();
    produce(&broker.bootstrap, &format!("{prefix}-in"), &more);
    let started = Instant::now();
    let exit = spate.terminate();
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    watcher.join().expect("rss watcher");
    assert!(
        took <= DRAIN_TIMEOUT + Duration::from_secs(2),
        "SIGTERM took {took:?} (drain_timeout {DRAIN_TIMEOUT:?}), exit {exit:?}"
    );
    let peak = peak.load(Ordering::Relaxed);
    eprintln!(
        "peak RSS {} MiB; SIGTERM to exit {took:?} ({exit:?})",
        peak >> 20
    );
    assert!(
        peak > 0 && peak < RSS_BOUND_BYTES,
        "peak RSS {} MiB, bound {} MiB",
        peak >> 20,
        RSS_BOUND_BYTES >> 20
    );
}

#[test]
fn spate_test_gives_poison_events_the_same_dead_letters() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut events_yaml = String::new();
    for (index, kind) in Poison::ALL.iter().enumerate() {
        let payload = kind.payload(index);
        let text = String::from_utf8(payload).expect("text payloads");
        events_yaml.push_str(&format!(
            "      - input: {{payload_text: {}}}\n        expect: {{dead_letter: {{reason: {}}}}}\n",
            serde_json::to_string(&text).expect("quoted"),
            kind.reason()
        ));
    }
    events_yaml.push_str(
        "      - input: {payload: {id: 99, op: ok}}\n        expect: {outputs: [{payload: {id: 99}}]}\n",
    );
    let text = format!(
        r#"functions:
  - name: hostile
    input: {{type: file, path: in.jsonl, layout: raw}}
    handler:
      name: map
      expr: |
        {EXPRESSION}
    outputs: [{{type: file, path: out.jsonl}}]
    dead_letter: {{type: file, path: dead.jsonl}}
tests:
  - name: poison events are dead letters with their reasons
    function: hostile
    events:
{events_yaml}"#
    );
    let file = dir.path().join("hostile.yaml");
    std::fs::write(&file, text).expect("pipeline written");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_spate"))
        .arg("test")
        .arg(&file)
        .output()
        .expect("spate test runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "spate test passes ({:?}, {:?}):\n{stdout}\n{}",
        out.status,
        started.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches("ok   ").count(),
        Poison::ALL.len() + 1,
        "{stdout}"
    );
}
