//! Resilience of spate on a real nats-server with JetStream, end to end:
//!
//! * a server restart in the middle of a stream loses nothing: the `spate`
//!   binary reconnects by itself, every input still gets its output under
//!   at-least-once, and exactly one under exactly-once;
//! * two processes on one durable consumer share the work as a queue: each
//!   input is handled once, by one of them, and the server redelivers
//!   nothing;
//! * a handler slower than `ack_wait` keeps its messages (in-progress acks,
//!   no redelivery), and fetching stops at the in-flight bound, so the
//!   consumer's unacknowledged messages stay bounded;
//! * poison events end in the dead-letter stream with their provenance
//!   headers and are terminated (`AckKind::Term`, one `MSG_TERMINATED`
//!   advisory each), never redelivered.
//!
//! The slow handler is a Rust function registered through the library API
//! ([`spate::Runtime`]) and runs in this process: no built-in handler of the
//! binary can be made slow. Every other test runs the `spate` binary.

use spate_testsupport::nats as nats_common;
use spate_testsupport::nats::{order_of, JetStreamPipeline};
use spate_testsupport::orders::assert_each_order_once;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use async_nats::HeaderMap;
use futures::StreamExt;
use nats_common::{
    create_stream, delete_stream, server, start_own, stream_len, stream_messages, unique,
};
use spate::{Context, Event, HandlerError, Output};
use spate_connector::dead_letter;
use spate_testsupport::spate_process::SpateProcess;
use tokio_util::sync::CancellationToken;

/// Customers the orders are keyed by (`spate-key`).
const CUSTOMERS: usize = 29;

/// How long any one wait of these tests may take.
const PATIENCE: Duration = Duration::from_secs(30);

/// Streams and durable of one test run, all with a unique tag.
struct Names {
    tag: String,
    input: String,
    output: String,
    dead: String,
    durable: String,
}

impl Names {
    fn new(prefix: &str) -> Self {
        let tag = unique(prefix);
        Self {
            input: format!("IN_{tag}"),
            output: format!("OUT_{tag}"),
            dead: format!("DEAD_{tag}"),
            durable: format!("orders-{tag}"),
            tag,
        }
    }

    /// New names for `prefix`, their streams created ([`Names::create`]).
    async fn created(prefix: &str, client: &async_nats::Client) -> Self {
        let names = Self::new(prefix);
        names.create(client).await;
        names
    }

    fn input_subject(&self) -> String {
        format!("in.{}", self.tag)
    }

    fn dead_subject(&self) -> String {
        format!("dead.{}", self.tag)
    }

    /// Creates the input stream, the output stream (capturing `out.<tag>`
    /// and every subject below it) and the dead-letter stream.
    async fn create(&self, client: &async_nats::Client) {
        create_stream(client, &self.input, &[self.input_subject()]).await;
        create_stream(
            client,
            &self.output,
            &[format!("out.{}", self.tag), format!("out.{}.>", self.tag)],
        )
        .await;
        create_stream(client, &self.dead, &[self.dead_subject()]).await;
    }

    /// Deletes the streams (and so the durable) from the shared server.
    async fn delete(&self, client: &async_nats::Client) {
        for stream in [&self.input, &self.output, &self.dead] {
            delete_stream(client, stream).await;
        }
    }
}

/// The payload of order `order`: JSON, or not for a poison one.
fn payload(order: usize, poison: fn(usize) -> bool) -> String {
    if poison(order) {
        format!("not json {order}")
    } else {
        format!(r#"{{"order":{order},"amount":{}}}"#, order % 40)
    }
}

fn never(_order: usize) -> bool {
    false
}

/// Publishes `orders` to `subject` and returns each one's stream sequence.
/// Every message carries `Nats-Msg-Id`, so a round that failed half-way (the
/// server is restarting) is published again, until `PATIENCE` runs out,
/// without storing any order twice.
async fn publish_orders(
    client: &async_nats::Client,
    subject: &str,
    orders: Range<usize>,
    poison: fn(usize) -> bool,
) -> BTreeMap<usize, u64> {
    let js = jetstream::new(client.clone());
    let deadline = Instant::now() + PATIENCE;
    'round: loop {
        let mut acks = Vec::with_capacity(orders.len());
        for order in orders.clone() {
            let mut headers = HeaderMap::new();
            headers.insert(
                "spate-key",
                format!("customer-{}", order % CUSTOMERS).as_str(),
            );
            headers.insert("Nats-Msg-Id", format!("{subject}-{order}").as_str());
            match js
                .publish_with_headers(subject.to_owned(), headers, payload(order, poison).into())
                .await
            {
                Ok(ack) => acks.push((order, ack)),
                Err(e) => {
                    assert!(Instant::now() < deadline, "publishing inputs: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue 'round;
                }
            }
        }
        let mut sequences = BTreeMap::new();
        for (order, ack) in acks {
            match ack.await {
                Ok(ack) => {
                    sequences.insert(order, ack.sequence);
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "storing inputs: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue 'round;
                }
            }
        }
        return sequences;
    }
}

/// A pipeline file for one function reading `names.input`.
struct Pipeline<'a> {
    url: &'a str,
    names: &'a Names,
    delivery: &'a str,
    ordering: &'a str,
    handler: &'a str,
    output_subject: String,
    ack_wait: &'a str,
    concurrency_max: usize,
    /// More keys of the function, each on its own line, indented by four.
    extra: &'a str,
}

impl Pipeline<'_> {
    fn write(&self, dir: &Path) -> PathBuf {
        let Pipeline {
            url,
            names,
            delivery,
            ordering,
            handler,
            output_subject,
            ack_wait,
            concurrency_max,
            extra,
        } = self;
        let text = JetStreamPipeline {
            url,
            stream: &names.input,
            durable: &names.durable,
            input_extra: "",
            ack_wait,
            fetch_wait: "500ms",
            handler,
            output_subject,
            dead_subject: &names.dead_subject(),
            delivery,
            ordering,
            concurrency_max: *concurrency_max,
            drain_timeout: "5s",
            extra,
        }
        .yaml();
        let path = dir.join(format!("{}.yaml", names.tag));
        std::fs::write(&path, text).expect("pipeline written");
        path
    }
}

/// `spate run` of the amount filter over `names`, writing to `out.<tag>`,
/// with its pipeline and its log (`spate.log`) in `dir`.
fn run_filter(
    url: &str,
    names: &Names,
    delivery: &str,
    ack_wait: &str,
    concurrency_max: usize,
    dir: &Path,
) -> SpateProcess {
    let pipeline = Pipeline {
        url,
        names,
        delivery,
        ordering: "key",
        handler: "{name: filter, field: amount, gte: 0}",
        output_subject: format!("out.{}", names.tag),
        ack_wait,
        concurrency_max,
        extra: "",
    }
    .write(dir);
    SpateProcess::start(
        env!("CARGO_BIN_EXE_spate"),
        &pipeline,
        dir.join("spate.log"),
        &[],
    )
}

/// A running `spate run`, killed if the test ends without stopping it.
/// The durable consumer's state, or `None` while the server does not answer
/// (or before spate created it).
async fn consumer_info(client: &async_nats::Client, names: &Names) -> Option<consumer::Info> {
    let js = jetstream::new(client.clone());
    let mut consumer: consumer::PullConsumer = js
        .get_consumer_from_stream(&names.durable, &names.input)
        .await
        .ok()?;
    consumer.info().await.ok().cloned()
}

/// Waits until the output and dead-letter streams hold at least this many
/// messages; every poll also checks that `spates` still run.
async fn wait_for_results(
    client: &async_nats::Client,
    names: &Names,
    outputs: usize,
    dead: usize,
    spates: &mut [&mut SpateProcess],
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let have = (
            stream_len(client, &names.output).await.unwrap_or(0),
            stream_len(client, &names.dead).await.unwrap_or(0),
        );
        if have.0 >= outputs && have.1 >= dead {
            return;
        }
        for spate in spates.iter_mut() {
            spate.assert_running();
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {outputs} outputs and {} of {dead} dead letters:\n{}",
            have.0,
            have.1,
            spates.first().map(|s| s.log_tail()).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the durable has nothing left to deliver and nothing
/// unacknowledged: every input committed. Returns its state then.
async fn wait_until_all_acked(client: &async_nats::Client, names: &Names) -> consumer::Info {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let info = consumer_info(client, names).await;
        if let Some(info) = &info {
            if info.num_ack_pending == 0 && info.num_pending == 0 {
                return info.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the durable never got fully acknowledged: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One stored message of an output or dead-letter stream.
struct Stored {
    subject: String,
    order: usize,
    sequence: u64,
    headers: HeaderMap,
}

impl Stored {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.as_str())
    }
}

/// Every message of `stream`, in stream order.
async fn read_stream(client: &async_nats::Client, stream: &str) -> Vec<Stored> {
    stream_messages(client, stream)
        .await
        .into_iter()
        .map(|message| {
            let order = order_of(&message.payload);
            Stored {
                subject: message.subject.to_string(),
                order,
                sequence: message.info().expect("JetStream message").stream_sequence,
                headers: message.headers.clone().unwrap_or_default(),
            }
        })
        .collect()
}

/// How many messages each order has.
fn per_order(stored: &[Stored]) -> BTreeMap<usize, usize> {
    let mut counts = BTreeMap::new();
    for message in stored {
        *counts.entry(message.order).or_insert(0) += 1;
    }
    counts
}

// ---------------------------------------------------------------------------
// 1. A server restart mid-stream.

const RESTART_ORDERS: usize = 3000;
/// Published before the restart; the rest only after it.
const BEFORE_RESTART: usize = 2000;

fn restart_poison(order: usize) -> bool {
    order % 250 == 3
}

/// Runs the binary through a restart of its server (stop, same store,
/// start) while it works through the first part of the input; the rest is
/// published once the server is back. Returns the output and dead-letter
/// streams, read whole.
async fn through_a_restart(delivery: &str) -> (Vec<Stored>, Vec<Stored>) {
    let mut server = start_own();
    let client = server.client().await;
    let names = Names::created(&format!("restart_{delivery}"), &client).await;
    let subject = names.input_subject();
    publish_orders(&client, &subject, 0..BEFORE_RESTART, restart_poison).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let mut spate = run_filter(&server.url, &names, delivery, "2s", 16, dir.path());
    wait_for_results(&client, &names, 100, 0, &mut [&mut spate]).await;

    let done = stream_len(&client, &names.output).await.unwrap_or(0)
        + stream_len(&client, &names.dead).await.unwrap_or(0);
    tokio::task::block_in_place(|| assert!(server.restart(Duration::from_secs(2))));
    eprintln!("{delivery}: server restarted after {done} of {RESTART_ORDERS} results");

    publish_orders(
        &client,
        &subject,
        BEFORE_RESTART..RESTART_ORDERS,
        restart_poison,
    )
    .await;
    let poison = (0..RESTART_ORDERS).filter(|o| restart_poison(*o)).count();
    wait_for_results(
        &client,
        &names,
        RESTART_ORDERS - poison,
        poison,
        &mut [&mut spate],
    )
    .await;
    wait_until_all_acked(&client, &names).await;
    spate.stop();
    let outputs = read_stream(&client, &names.output).await;
    let dead = read_stream(&client, &names.dead).await;
    (outputs, dead)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_stream_loses_nothing() {
    let (outputs, dead) = through_a_restart("at_least_once").await;
    let (outputs, dead) = (per_order(&outputs), per_order(&dead));
    for order in 0..RESTART_ORDERS {
        if restart_poison(order) {
            assert!(
                dead.contains_key(&order),
                "poison order {order} has no dead letter"
            );
            assert!(
                !outputs.contains_key(&order),
                "poison order {order} has an output"
            );
        } else {
            assert!(outputs.contains_key(&order), "order {order} was lost");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_stream_keeps_each_output_exactly_once() {
    let (outputs, dead) = through_a_restart("exactly_once").await;
    let (outputs, dead) = (per_order(&outputs), per_order(&dead));
    assert_each_order_once(0..RESTART_ORDERS, restart_poison, &outputs, &dead);
}

// ---------------------------------------------------------------------------
// 2. Two processes on one durable.

const SHARED_ORDERS: usize = 4000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_durable_share_the_load_without_duplicates() {
    let server = server();
    let client = server.client().await;
    let names = Names::created("shared", &client).await;
    let dir = tempfile::tempdir().expect("temp dir");
    // Each process publishes to its own subject; one stream captures both.
    let pipeline = Pipeline {
        url: &server.url,
        names: &names,
        delivery: "at_least_once",
        ordering: "key",
        handler: "{name: filter, field: amount, gte: 0}",
        output_subject: "${OUT_SUBJECT}".to_owned(),
        ack_wait: "30s",
        concurrency_max: 16,
        extra: "",
    }
    .write(dir.path());
    let subjects = [
        format!("out.{}.a", names.tag),
        format!("out.{}.b", names.tag),
    ];
    let mut a = SpateProcess::start(
        env!("CARGO_BIN_EXE_spate"),
        &pipeline,
        dir.path().join("a.log"),
        &[("OUT_SUBJECT", &subjects[0])],
    );
    let mut b = SpateProcess::start(
        env!("CARGO_BIN_EXE_spate"),
        &pipeline,
        dir.path().join("b.log"),
        &[("OUT_SUBJECT", &subjects[1])],
    );

    // Both have a pull request waiting on the durable before any input
    // exists, so the server hands the input to both.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let info = consumer_info(&client, &names).await;
        if info.as_ref().is_some_and(|i| i.num_waiting >= 2) {
            break;
        }
        a.assert_running();
        b.assert_running();
        assert!(
            Instant::now() < deadline,
            "both processes never pulled at once: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publish_orders(&client, &names.input_subject(), 0..SHARED_ORDERS, never).await;
    wait_for_results(&client, &names, SHARED_ORDERS, 0, &mut [&mut a, &mut b]).await;
    let info = wait_until_all_acked(&client, &names).await;
    a.stop();
    b.stop();

    assert_eq!(
        info.delivered.consumer_sequence, SHARED_ORDERS as u64,
        "each input delivered once (a redelivery takes a consumer sequence of its own): {info:?}"
    );
    assert_eq!(info.num_redelivered, 0, "{info:?}");
    assert_eq!(info.num_ack_pending, 0, "{info:?}");
    let outputs = read_stream(&client, &names.output).await;
    let counts = per_order(&outputs);
    assert_eq!(counts.len(), SHARED_ORDERS, "every order has an output");
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "orders with more than one output: {twice:?}"
    );
    let mut per_process: BTreeMap<&str, usize> = BTreeMap::new();
    for message in &outputs {
        *per_process.entry(message.subject.as_str()).or_insert(0) += 1;
    }
    eprintln!("outputs per process: {per_process:?}");
    for subject in &subjects {
        assert!(
            per_process.get(subject.as_str()).copied().unwrap_or(0) > 0,
            "the process publishing to {subject} did no work: {per_process:?}"
        );
    }
    names.delete(&client).await;
}

// ---------------------------------------------------------------------------
// 3. A handler slower than ack_wait, at the in-flight bound.

const SLOW_ORDERS: usize = 24;
/// Per-partition in-flight bound (`max_in_flight.events`).
const BOUND: usize = 4;
/// Handler tasks at most.
const SLOW_TASKS: usize = 4;
/// Each event's handling time: longer than the `ack_wait` of 2s.
const SLOW: Duration = Duration::from_secs(3);

static SLOW_STARTED: AtomicU64 = AtomicU64::new(0);

async fn slow(event: Event, _ctx: &Context) -> Result<Vec<Output>, HandlerError> {
    SLOW_STARTED.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(SLOW).await;
    let payload = event.payload.clone();
    Ok(vec![Output::from_event(&event, payload)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_keeps_its_messages_with_progress_acks_and_fetching_stops_at_the_bound() {
    let server = server();
    let client = server.client().await;
    let names = Names::created("slow", &client).await;
    publish_orders(&client, &names.input_subject(), 0..SLOW_ORDERS, never).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let extra = format!("    max_in_flight: {{events: {BOUND}, bytes: 16MiB}}\n");
    let pipeline = Pipeline {
        url: &server.url,
        names: &names,
        delivery: "at_least_once",
        ordering: "none",
        handler: "slow",
        output_subject: format!("out.{}", names.tag),
        ack_wait: "2s",
        concurrency_max: SLOW_TASKS,
        extra: &extra,
    }
    .write(dir.path());

    let mut runtime = spate::Runtime::new();
    runtime.registry_mut().register("slow", slow);
    let specs = runtime.load(&[&pipeline]).expect("pipeline loads");
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let run = tokio::spawn(async move { runtime.run(specs, stop).await });

    // The source holds, unacknowledged: what the engine has in flight plus
    // what its pull requests still bring (the engine asks for no more than
    // the room left under the bound: at most BOUND together), and what
    // finished since the last commit (acked at the next, every 50ms; at
    // most BOUND).
    let held_at_most = 2 * BOUND;
    let (mut peak_pending, mut peak_redelivered) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(info) = consumer_info(&client, &names).await {
            peak_pending = peak_pending.max(info.num_ack_pending);
            peak_redelivered = peak_redelivered.max(info.num_redelivered);
        }
        if stream_len(&client, &names.output).await.unwrap_or(0) >= SLOW_ORDERS {
            break;
        }
        assert!(!run.is_finished(), "the run ended early: {:?}", run.await);
        assert!(
            Instant::now() < deadline,
            "only {} of {SLOW_ORDERS} outputs",
            stream_len(&client, &names.output).await.unwrap_or(0)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let info = wait_until_all_acked(&client, &names).await;
    shutdown.cancel();
    let reports = run.await.expect("no panic").expect("the run ends cleanly");

    eprintln!(
        "peak ack pending {peak_pending} (bound {BOUND}, at most {held_at_most}), \
         peak redelivered {peak_redelivered}, {:?}",
        reports[0]
    );
    assert!(
        peak_pending <= held_at_most,
        "{peak_pending} messages unacknowledged at once: fetching went on past the bound"
    );
    assert!(
        peak_pending >= BOUND,
        "the engine never filled its in-flight bound ({peak_pending} pending at most)"
    );
    assert_eq!(
        peak_redelivered, 0,
        "the server redelivered work in progress"
    );
    assert_eq!(
        info.delivered.consumer_sequence, SLOW_ORDERS as u64,
        "each input delivered once, none again after ack_wait: {info:?}"
    );
    assert_eq!(
        reports[0].events_in, SLOW_ORDERS as u64,
        "each event read once"
    );
    assert_eq!(
        reports[0].handled, SLOW_ORDERS as u64,
        "each event handled once"
    );
    assert_eq!(SLOW_STARTED.load(Ordering::SeqCst), SLOW_ORDERS as u64);
    let counts = per_order(&read_stream(&client, &names.output).await);
    assert_eq!(counts.len(), SLOW_ORDERS, "every order has an output");
    assert!(
        counts.values().all(|n| *n == 1),
        "an output twice: {counts:?}"
    );
    names.delete(&client).await;
}

// ---------------------------------------------------------------------------
// 4. Poison events.

const POISON_ORDERS: usize = 300;

fn poison_every_twentieth(order: usize) -> bool {
    order % 20 == 7
}

/// The advisory JetStream raises when a message is acked with `Term`.
#[derive(Debug, serde::Deserialize)]
struct Terminated {
    stream: String,
    consumer: String,
    stream_seq: u64,
}

async fn poison_run(delivery: &str) {
    let server = server();
    let client = server.client().await;
    let names = Names::created(&format!("poison_{delivery}"), &client).await;
    let sequences = publish_orders(
        &client,
        &names.input_subject(),
        0..POISON_ORDERS,
        poison_every_twentieth,
    )
    .await;
    let poison: BTreeMap<usize, u64> = sequences
        .into_iter()
        .filter(|(order, _)| poison_every_twentieth(*order))
        .collect();
    let mut advisories = client
        .subscribe(format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{}.{}",
            names.input, names.durable
        ))
        .await
        .expect("advisory subscription");
    client.flush().await.expect("subscribed");

    let dir = tempfile::tempdir().expect("temp dir");
    let mut spate = run_filter(&server.url, &names, delivery, "30s", 8, dir.path());
    wait_for_results(
        &client,
        &names,
        POISON_ORDERS - poison.len(),
        poison.len(),
        &mut [&mut spate],
    )
    .await;

    // One advisory per poison message, for its stream sequence.
    let expected: BTreeSet<u64> = poison.values().copied().collect();
    let mut terminated: Vec<u64> = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while terminated.iter().collect::<BTreeSet<_>>().len() < expected.len() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(message)) = tokio::time::timeout(remaining, advisories.next()).await else {
            panic!(
                "terminated advisories for {terminated:?} only, expected {expected:?}:\n{}",
                spate.log_tail()
            );
        };
        let advisory: Terminated = serde_json::from_slice(&message.payload).expect("advisory JSON");
        assert_eq!(
            (advisory.stream.as_str(), advisory.consumer.as_str()),
            (names.input.as_str(), names.durable.as_str())
        );
        terminated.push(advisory.stream_seq);
    }
    let info = wait_until_all_acked(&client, &names).await;
    spate.stop();
    // Anything the server still had queued for us arrives before a round
    // trip's answer.
    client.flush().await.expect("flush");
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(200), advisories.next()).await
    {
        let advisory: Terminated = serde_json::from_slice(&message.payload).expect("advisory JSON");
        terminated.push(advisory.stream_seq);
    }
    terminated.sort_unstable();
    assert_eq!(
        terminated,
        expected.iter().copied().collect::<Vec<_>>(),
        "exactly one terminated advisory per poison message"
    );
    assert_eq!(info.num_ack_pending, 0, "{info:?}");
    assert_eq!(
        info.delivered.consumer_sequence, POISON_ORDERS as u64,
        "no message delivered again: {info:?}"
    );

    let dead = read_stream(&client, &names.dead).await;
    assert_eq!(
        dead.len(),
        poison.len(),
        "one dead letter per poison message"
    );
    let source = format!("jetstream:{}", names.input);
    for letter in &dead {
        let order = letter.order;
        let sequence = poison
            .get(&order)
            .unwrap_or_else(|| panic!("dead letter of the valid order {order}"));
        let offset = sequence.to_string();
        let customer = format!("customer-{}", order % CUSTOMERS);
        for (name, want) in [
            (dead_letter::FUNCTION, "orders"),
            (dead_letter::SOURCE, source.as_str()),
            (dead_letter::STREAM, names.input.as_str()),
            (dead_letter::PARTITION, "0"),
            (dead_letter::OFFSET, offset.as_str()),
            (dead_letter::KEY, customer.as_str()),
            (dead_letter::REASON, "handler-error"),
            (dead_letter::ATTEMPTS, "1"),
        ] {
            assert_eq!(
                letter.header(name),
                Some(want),
                "header {name} of dead letter {} (order {order})",
                letter.sequence
            );
        }
        let error = letter.header(dead_letter::ERROR).unwrap_or_default();
        assert!(
            error.contains("not JSON"),
            "error of order {order}: {error}"
        );
        for name in [dead_letter::FIRST_FAILURE_MS, dead_letter::LAST_FAILURE_MS] {
            let ms: u64 = letter
                .header(name)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("header {name} of order {order}"));
            assert!(ms > 1_600_000_000_000, "{name} of order {order}: {ms}");
        }
    }
    let outputs = per_order(&read_stream(&client, &names.output).await);
    for order in 0..POISON_ORDERS {
        let want = usize::from(!poison_every_twentieth(order));
        assert_eq!(
            outputs.get(&order).copied().unwrap_or(0),
            want,
            "outputs of order {order}"
        );
    }
    names.delete(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_are_dead_lettered_with_headers_and_terminated() {
    poison_run("at_least_once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_are_terminated_under_exactly_once_too() {
    poison_run("exactly_once").await;
}
