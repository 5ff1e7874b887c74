//! Subject partitions on a real nats-server: the server's subject mapping
//! (`partition(N, token)`) splits a stream's subjects into N partitions, the
//! source reads each through its own durable, and the processes sharing the
//! source split the partitions by leases, handing a partition over only
//! after its owner committed and released it. Each partition reports its
//! pending count as lag.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spate_connector::{CommitPosition, PartitionId, Source, SourceBuilder, SourceMessage};
use spate_testsupport::nats::{
    create_stream, messages, read_source, source_builder, start_own_with_config, unique, Server,
};

const PARTITIONS: u32 = 4;
const DEVICES: usize = 24;

/// The server maps `tele.<device>` to `ptele.<partition>.<device>`, the
/// partition a hash of the device token.
fn mapping_config() -> String {
    format!(
        "mappings = {{\n  \"tele.*\": \"ptele.{{{{partition({PARTITIONS},1)}}}}.{{{{wildcard(1)}}}}\"\n}}\n"
    )
}

/// What one simulated engine saw.
#[derive(Default)]
struct Seen {
    /// Per event: (device key, partition, sequence, payload).
    events: Vec<(String, PartitionId, u64, usize)>,
    assigned: BTreeSet<PartitionId>,
    /// Partitions handed over (revoked, committed, released).
    handed_over: Vec<PartitionId>,
    /// Per partition: the largest and the last lag the source reported.
    lag: BTreeMap<PartitionId, (u64, u64)>,
}

/// Plays the engine for one source: every event is finished and committed
/// at once; a revoke is committed and released. Runs until `stop`.
async fn drive(
    mut source: Box<dyn Source>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<tokio::sync::Notify>,
) {
    loop {
        let message = tokio::select! {
            m = source.next(50) => m,
            _ = stop.notified() => break,
        };
        match message {
            Ok(SourceMessage::Events(events)) => {
                let mut next: BTreeMap<PartitionId, u64> = BTreeMap::new();
                {
                    let mut seen = seen.lock().unwrap();
                    for event in events {
                        let key =
                            String::from_utf8_lossy(event.key.as_deref().expect("key from token"))
                                .into_owned();
                        let payload: usize = std::str::from_utf8(&event.payload)
                            .unwrap()
                            .parse()
                            .unwrap();
                        let p = event.position.partition;
                        assert!(
                            seen.assigned.contains(&p),
                            "event of unassigned partition {p}"
                        );
                        seen.events.push((key, p, event.position.offset, payload));
                        next.insert(p, event.position.offset + 1);
                    }
                }
                {
                    let mut seen = seen.lock().unwrap();
                    for p in next.keys() {
                        let lag = source
                            .lag(*p)
                            .expect("a JetStream partition reports its lag");
                        let entry = seen.lag.entry(*p).or_insert((0, 0));
                        *entry = (entry.0.max(lag), lag);
                    }
                }
                let positions: Vec<CommitPosition> =
                    next.into_iter().map(CommitPosition::from).collect();
                source.commit(&positions).await.expect("commit");
            }
            Ok(SourceMessage::Assigned(partitions)) => {
                let mut seen = seen.lock().unwrap();
                for p in partitions {
                    assert!(seen.assigned.insert(p), "partition {p} assigned twice");
                }
            }
            Ok(SourceMessage::Revoked(partitions)) => {
                {
                    let mut seen = seen.lock().unwrap();
                    for p in &partitions {
                        assert!(seen.assigned.remove(p), "revoked {p} it did not own");
                        seen.handed_over.push(*p);
                    }
                }
                source.release(&partitions).await.expect("release");
            }
            Ok(SourceMessage::End) => panic!("a JetStream source does not end"),
            Err(e) => panic!("source failed: {e}"),
        }
    }
    source.close().await.expect("close");
}

/// Builds a source from `builder` and drives it on a task of its own
/// until `stop`; what it sees and the task.
async fn spawn_drive(
    builder: &dyn SourceBuilder,
    stop: &Arc<tokio::sync::Notify>,
) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let source = builder.build().await.expect("builds");
    let task = tokio::spawn(drive(source, seen.clone(), stop.clone()));
    (seen, task)
}

async fn publish(client: &async_nats::Client, from: usize, to: usize) {
    let js = async_nats::jetstream::new(client.clone());
    let mut acks = Vec::new();
    for i in from..to {
        acks.push(
            js.publish(format!("tele.dev-{}", i % DEVICES), i.to_string().into())
                .await
                .expect("publish"),
        );
    }
    for ack in acks {
        ack.await.expect("stored");
    }
}

/// A test's own nats-server with the subject mapping, a client, a stream
/// of `ptele.*.*` and a source of it: 4 subject partitions of
/// `ptele.{partition}.*` keyed by the third token, with these lease and
/// ack waits (the takeover tests: 1 s leases and an `ack_wait` far beyond
/// the test, so nothing may wait for a redelivery).
struct Partitioned {
    server: Server,
    client: async_nats::Client,
    stream: String,
    durable: String,
    builder: Box<dyn SourceBuilder>,
}

async fn partitioned(lease_ttl: &str, ack_wait: &str) -> Partitioned {
    let server = start_own_with_config(&mapping_config());
    let client = server.client().await;
    let stream = unique("PTELE");
    create_stream(&client, &stream, &["ptele.*.*".to_owned()]).await;
    let durable = unique("tele");
    let builder = source_builder(
        "jetstream",
        &[
            ("url", server.url.as_str()),
            ("stream", stream.as_str()),
            ("durable", durable.as_str()),
            ("partitions", "4"),
            ("partition_subject", "ptele.{partition}.*"),
            ("key_token", "3"),
            ("lease_ttl", lease_ttl),
            ("ack_wait", ack_wait),
            ("fetch_wait", "300ms"),
        ],
    );
    Partitioned {
        server,
        client,
        stream,
        durable,
        builder,
    }
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_split_subject_partitions_and_hand_over_in_order() {
    let cluster = partitioned("2s", "3s").await;
    publish(&cluster.client, 0, 600).await;

    // The first process takes every partition.
    let stop = Arc::new(tokio::sync::Notify::new());
    let (first, first_task) = spawn_drive(&*cluster.builder, &stop).await;
    wait_until(
        "the first process to take all partitions and read",
        Duration::from_secs(20),
        || {
            let seen = first.lock().unwrap();
            seen.assigned.len() == PARTITIONS as usize && seen.events.len() == 600
        },
    )
    .await;

    // A second process joins: the partitions split two and two, each
    // handed over only after the first released it.
    let (second, second_task) = spawn_drive(&*cluster.builder, &stop).await;
    wait_until(
        "the partitions to split two and two",
        Duration::from_secs(20),
        || {
            let (a, b) = (first.lock().unwrap(), second.lock().unwrap());
            a.assigned.len() == 2 && b.assigned.len() == 2 && a.assigned.is_disjoint(&b.assigned)
        },
    )
    .await;
    publish(&cluster.client, 600, 1200).await;
    wait_until("every message to be read", Duration::from_secs(20), || {
        first.lock().unwrap().events.len() + second.lock().unwrap().events.len() >= 1200
    })
    .await;
    // Nothing more arrives: no duplicates beyond this point either.
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.notify_waiters();
    let _ = first_task.await;
    let _ = second_task.await;

    let (first, second) = (first.lock().unwrap(), second.lock().unwrap());
    // Lag is each partition's pending count: it was seen above zero while
    // reading in batches, and every partition ends caught up.
    assert!(
        first.lag.values().any(|(max, _)| *max > 0),
        "lag never above zero: {:?}",
        first.lag
    );
    for seen in [&*first, &*second] {
        for p in &seen.assigned {
            assert_eq!(
                seen.lag.get(p).map(|l| l.1),
                Some(0),
                "partition {p} caught up"
            );
        }
    }
    let handed: BTreeSet<PartitionId> = first.handed_over.iter().copied().collect();
    assert_eq!(
        handed.len(),
        2,
        "two partitions moved: {:?}",
        first.handed_over
    );
    assert_eq!(
        second.assigned, handed,
        "the second owns what the first gave back"
    );

    // Each message read exactly once (every read was committed before any
    // hand-over), each device always in the same partition, and each
    // partition's sequences increasing within each process.
    let mut payloads = BTreeMap::new();
    let mut device_partition = BTreeMap::new();
    for seen in [&*first, &*second] {
        let mut last: BTreeMap<PartitionId, u64> = BTreeMap::new();
        for (key, p, sequence, payload) in &seen.events {
            *payloads.entry(*payload).or_insert(0) += 1;
            let expected = device_partition.entry(key.clone()).or_insert(*p);
            assert_eq!(expected, p, "device {key} in two partitions");
            let previous = last.insert(*p, *sequence).unwrap_or(0);
            assert!(
                previous < *sequence,
                "partition {p}: {sequence} after {previous}"
            );
            assert_eq!(
                *key,
                format!("dev-{}", payload % DEVICES),
                "key from subject token 3"
            );
        }
    }
    assert_eq!(payloads.len(), 1200, "every message read");
    let repeated: Vec<_> = payloads.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "read twice: {repeated:?}");
    let used: BTreeSet<PartitionId> = device_partition.values().copied().collect();
    assert_eq!(
        used.len(),
        PARTITIONS as usize,
        "the mapping used every partition"
    );
    let second_payloads: BTreeSet<usize> = second.events.iter().map(|e| e.3).collect();
    assert!(
        second_payloads.iter().all(|p| *p >= 600),
        "the second process read only messages published after it joined"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_process_leases_expire_and_the_survivor_takes_its_partitions() {
    let cluster = partitioned("2s", "2s").await;
    let stop = Arc::new(tokio::sync::Notify::new());
    let (survivor, survivor_task) = spawn_drive(&*cluster.builder, &stop).await;
    wait_until(
        "the survivor to take all partitions",
        Duration::from_secs(20),
        || survivor.lock().unwrap().assigned.len() == PARTITIONS as usize,
    )
    .await;
    // The victim joins, takes its half, reads without committing, and dies
    // (dropped: no close, no release, no acks).
    let mut victim = cluster.builder.build().await.expect("victim builds");
    take_partitions(&mut *victim, 2, "the victim").await;
    publish(&cluster.client, 0, 400).await;
    let victim_read = read_until_quiet(&mut *victim).await;
    assert!(victim_read > 0, "the victim read some of its partitions");
    drop(victim);

    // After the victim's leases expire, the survivor reads everything,
    // the victim's unacked reads included (redelivered after ack_wait).
    wait_until(
        "the survivor to read every message",
        Duration::from_secs(30),
        || {
            let seen = survivor.lock().unwrap();
            seen.events
                .iter()
                .map(|e| e.3)
                .collect::<BTreeSet<_>>()
                .len()
                == 400
        },
    )
    .await;
    assert_eq!(survivor.lock().unwrap().assigned.len(), PARTITIONS as usize);
    stop.notify_waiters();
    let _ = survivor_task.await;
}

#[test]
fn partition_settings_are_checked_together() {
    let base = [("stream", "S"), ("durable", "d")];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut entries = base.to_vec();
        entries.extend_from_slice(extra);
        let (builder, errors) = read_source("jetstream", &entries);
        (builder.is_some(), messages(&errors))
    };
    let (ok, msgs) = with(&[("partitions", "4")]);
    assert!(!ok);
    assert!(
        msgs[0].starts_with("`partitions` needs `partition_subject`"),
        "{msgs:?}"
    );

    let (_, msgs) = with(&[("partitions", "4"), ("partition_subject", "tele.*.>")]);
    assert_eq!(
        msgs,
        vec!["`partition_subject` `tele.*.>` has no `{partition}` placeholder"]
    );

    let (_, msgs) = with(&[
        ("partitions", "4"),
        ("partition_subject", "tele.{partition}.>"),
        ("filter_subject", "tele.>"),
    ]);
    assert_eq!(
        msgs,
        vec!["`filter_subject` and `partitions` exclude each other"]
    );

    let (_, msgs) = with(&[("lease_ttl", "5s")]);
    assert_eq!(msgs, vec!["`lease_ttl` needs `partitions`"]);

    let (_, msgs) = with(&[("partitions", "0"), ("partition_subject", "t.{partition}")]);
    assert_eq!(
        msgs,
        vec!["`partitions` must be between 1 and 4096, found 0"]
    );

    let (_, msgs) = with(&[("key_token", "0")]);
    assert_eq!(msgs, vec!["`key_token` counts subject tokens from 1"]);

    let (ok, msgs) = with(&[
        ("partitions", "8"),
        ("partition_subject", "tele.{partition}.>"),
        ("lease_ttl", "4s"),
        ("key_token", "3"),
    ]);
    assert!(ok && msgs.is_empty(), "{msgs:?}");
}

/// Drives a source built from `builder` until it has read `count` events
/// (within 20 s) and `linger` more has passed; what it saw.
async fn successor_reads(
    builder: &dyn SourceBuilder,
    what: &str,
    count: usize,
    linger: Duration,
) -> Seen {
    let stop = Arc::new(tokio::sync::Notify::new());
    let (seen, task) = spawn_drive(builder, &stop).await;
    wait_until(what, Duration::from_secs(20), || {
        seen.lock().unwrap().events.len() >= count
    })
    .await;
    tokio::time::sleep(linger).await;
    stop.notify_waiters();
    let _ = task.await;
    let mut seen = seen.lock().unwrap();
    std::mem::take(&mut *seen)
}

/// Reads `source` until it holds `count` partitions (within 20 s).
async fn take_partitions(source: &mut dyn Source, count: usize, who: &str) {
    let mut held = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while held.len() < count {
        assert!(Instant::now() < deadline, "{who} got {held:?}");
        if let Some(SourceMessage::Assigned(p)) =
            spate_testsupport::nats::next_within(source, 10, Duration::from_millis(500)).await
        {
            held.extend(p);
        }
    }
}

/// Reads `source` until it has been quiet for 500 ms; how many events came.
async fn read_until_quiet(source: &mut dyn Source) -> usize {
    let mut read = 0;
    while let Some(SourceMessage::Events(events)) =
        spate_testsupport::nats::next_within(source, 100, Duration::from_millis(500)).await
    {
        read += events.len();
    }
    read
}

/// Issue 19: a partition taken over from a dead holder starts at its ack
/// floor, so the messages the dead holder had read but not finished come
/// first, in order, long before `ack_wait` — never after newer messages of
/// the same device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_over_partition_restarts_at_its_ack_floor_before_newer_messages() {
    let cluster = partitioned("1s", "60s").await;
    // The victim takes every partition, reads without committing, and dies
    // (dropped: no close, no release, no acks).
    let mut victim = cluster.builder.build().await.expect("victim builds");
    take_partitions(&mut *victim, PARTITIONS as usize, "the victim").await;
    publish(&cluster.client, 0, 200).await;
    let victim_read = read_until_quiet(&mut *victim).await;
    assert_eq!(victim_read, 200, "the victim read everything");
    drop(victim);
    // Newer messages of the same devices arrive before anyone takes over.
    publish(&cluster.client, 200, 400).await;

    let started = Instant::now();
    let seen = successor_reads(
        &*cluster.builder,
        "the successor to read every message, well before ack_wait",
        400,
        Duration::ZERO,
    )
    .await;
    eprintln!("taken over and read in {:?}", started.elapsed());
    let mut last: BTreeMap<&str, usize> = BTreeMap::new();
    for (device, _, _, payload) in &seen.events {
        if let Some(before) = last.insert(device, *payload) {
            assert!(
                before < *payload,
                "device {device}: message {payload} after {before}"
            );
        }
    }
    assert_eq!(seen.events.len(), 400, "each message once");
}

/// A holder killed between deleting a partition's durable and creating it
/// again leaves no consumer; its successor starts from the ack floor
/// recorded before the delete, not from the stream's start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_lost_mid_reset_restarts_from_the_recorded_ack_floor() {
    let Partitioned {
        server: _server,
        client,
        stream,
        durable,
        builder,
    } = partitioned("1s", "60s").await;
    publish(&client, 0, 200).await;
    // The first holder finishes messages 0..100 and dies.
    let mut first = builder.build().await.expect("builds");
    let mut assigned = BTreeSet::new();
    let mut read = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while read.len() < 200 || assigned.len() < PARTITIONS as usize {
        assert!(Instant::now() < deadline, "read {} of 200", read.len());
        match spate_testsupport::nats::next_within(&mut *first, 100, Duration::from_millis(500))
            .await
        {
            Some(SourceMessage::Assigned(p)) => assigned.extend(p),
            Some(SourceMessage::Events(events)) => read.extend(events),
            _ => {}
        }
    }
    let mut finished: BTreeMap<PartitionId, u64> = BTreeMap::new();
    for event in &read {
        let payload: usize = std::str::from_utf8(&event.payload)
            .unwrap()
            .parse()
            .unwrap();
        if payload < 100 {
            let next = finished.entry(event.position.partition).or_insert(0);
            *next = (*next).max(event.position.offset + 1);
        }
    }
    let positions: Vec<CommitPosition> = finished.into_iter().map(CommitPosition::from).collect();
    first.commit(&positions).await.expect("commit");
    drop(first);
    // The next holder resets every durable (recording the floors), then
    // "dies mid-reset": the durables are gone.
    let mut second = builder.build().await.expect("builds");
    take_partitions(&mut *second, PARTITIONS as usize, "the second holder").await;
    drop(second);
    let js = async_nats::jetstream::new(client.clone());
    let stream_handle = js.get_stream(&stream).await.expect("stream");
    for p in 0..PARTITIONS {
        stream_handle
            .delete_consumer(&format!("{durable}-{p}"))
            .await
            .expect("durable deleted");
    }

    // 500 ms more give a wrong restart (from the stream's start) time to
    // show.
    let seen = successor_reads(
        &*builder,
        "the successor to read the unfinished messages",
        100,
        Duration::from_millis(500),
    )
    .await;
    let payloads: Vec<usize> = seen.events.iter().map(|e| e.3).collect();
    assert_eq!(
        payloads.iter().copied().collect::<BTreeSet<_>>(),
        (100..200).collect::<BTreeSet<_>>(),
        "exactly the unfinished messages, from the recorded floors"
    );
    assert_eq!(payloads.len(), 100, "each once");
}
