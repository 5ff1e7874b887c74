//! A real Kafka-protocol broker for integration tests: Tansu 0.6.0, one per
//! test, on a free port with in-memory storage (binary from
//! `scripts/fetch-tansu`, or `$TANSU_BIN`); plus plain rdkafka clients to
//! create topics, read them back and read a group's committed offsets.
//!
//! Guarantees: [`tansu`] returns only once the broker answers, and the
//! [`Broker`] guard kills it when dropped.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::process::{start_on_free_port, ChildGuard};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers as _, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A running Tansu broker, killed on drop.
pub struct Broker {
    /// `127.0.0.1:port`.
    pub bootstrap: String,
    _child: ChildGuard,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// The broker's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Creates a topic of `partitions` partitions under a fresh name from
    /// `prefix` ([`crate::names::unique`]) and returns the name.
    pub async fn topic(&self, prefix: &str, partitions: i32) -> String {
        let topic = crate::names::unique(prefix);
        create_topic(&self.bootstrap, &topic, partitions).await;
        topic
    }
}

fn tansu_binary() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/fetch-tansu");
        let out = Command::new("bash")
            .arg(script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
        assert!(
            out.status.success(),
            "{script} failed; set TANSU_BIN to a tansu 0.6.0 binary"
        );
        String::from_utf8(out.stdout)
            .expect("a path")
            .trim()
            .to_owned()
    })
}

/// Starts a Tansu broker of our own on a free port.
pub fn tansu() -> Broker {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("tansu.log");
    let (child, port) = start_on_free_port("tansu", |port| {
        let log_file = std::fs::File::create(&log).expect("log file");
        let url = format!("tcp://127.0.0.1:{port}");
        Command::new(tansu_binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("tansu starts")
    });
    Broker {
        bootstrap: format!("127.0.0.1:{port}"),
        _child: child,
        log,
        _dir: dir,
    }
}

/// Creates a topic.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create_topics");
    for result in results {
        result.unwrap_or_else(|(t, e)| panic!("creating topic {t} failed: {e}"));
    }
}

/// One record read back with a plain consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBack {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Payload.
    pub payload: Vec<u8>,
    /// Headers in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Timestamp (ms), if any.
    pub timestamp: Option<i64>,
}

/// Reads every partition of `topic` from the beginning (assigned, not
/// subscribed: no group join), at least up to the end each partition had
/// when the read began, then until `expect` records arrived and `quiet`
/// passes with nothing new. Reads committed data only when
/// `read_committed`. Panics if the end is not reached within
/// [`READ_LIMIT`]: a partial read would pass for lost records.
pub fn read_topic(
    bootstrap: &str,
    topic: &str,
    read_committed: bool,
    expect: usize,
    quiet: Duration,
) -> Vec<ReadBack> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.partition.eof", "false")
        // assign() needs a group id; nothing joins or commits with it.
        .set("group.id", "spate-test-reader")
        .set("enable.auto.commit", "false")
        .set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len());
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("offset");
    }
    consumer.assign(&tpl).expect("assign");
    // Where each partition ended when the read began: everything below is
    // read (or, under `read_committed`, skipped by the consumer) before
    // the read may end.
    let ends: Vec<i64> = (0..partitions as i32)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .map_or(0, |(_, high)| high)
        })
        .collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + READ_LIMIT;
    // The first fetch needs a connection, metadata and a ListOffsets round
    // trip: give it 3 s more than `quiet`.
    let mut last = Instant::now() + Duration::from_secs(3);
    loop {
        let quiet_now = Instant::now().saturating_duration_since(last) >= quiet;
        if quiet_now && out.len() >= expect && reached(&consumer, topic, &ends) {
            break;
        }
        if Instant::now() >= deadline {
            // What other tests read as "nothing more came" (fewer than
            // `expect`) is theirs to judge; stopping short of the end is not.
            assert!(
                reached(&consumer, topic, &ends),
                "reading {topic} back: {} records in {READ_LIMIT:?}, short of the end {ends:?} it had when the read began",
                out.len()
            );
            break;
        }
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                last = Instant::now();
                out.push(ReadBack {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                                .collect()
                        })
                        .unwrap_or_default(),
                    timestamp: m.timestamp().to_millis(),
                });
            }
            Some(Err(e)) => panic!("reading {topic} back failed: {e}"),
            None => {}
        }
    }
    out
}

/// Longest a [`read_topic`] may take.
pub const READ_LIMIT: Duration = Duration::from_secs(120);

/// Whether the consumer's position on every partition of `topic` is at or
/// past `ends`.
fn reached(consumer: &BaseConsumer, topic: &str, ends: &[i64]) -> bool {
    let Ok(positions) = consumer.position() else {
        return false;
    };
    ends.iter().enumerate().all(|(p, end)| {
        *end <= 0
            || matches!(
                positions.find_partition(topic, p as i32).map(|e| e.offset()),
                Some(Offset::Offset(at)) if at >= *end
            )
    })
}

/// The committed offset of each partition of `topic` for `group`
/// (`None`: nothing committed).
pub fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let offsets = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions)
        .map(
            |p| match offsets.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            },
        )
        .collect()
}
