//! MQTT subscriptions as sources.
//!
//! Two kinds share this code; they differ only in what they promise:
//!
//! * `mqtt` — at-least-once. Subscribes at QoS 1 with a persistent session
//!   (`clean_session: false`) under a stable `client_id`, with manual acks:
//!   a message is acknowledged to the broker (PUBACK) only when
//!   [`Source::commit`] covers it. The broker's session is the durable
//!   position store (as a JetStream consumer's ack state is): a message not
//!   acknowledged when spate stops or crashes is delivered again when a
//!   source with the same `client_id` connects, and messages published
//!   while spate is down are queued for it. Capabilities `{exactly_once:
//!   false, durable_positions: true, resumable: true}`; `resumable` (feeding
//!   `exactly_once` into a database) needs `sequence:`, see below.
//! * `mqtt_at_most_once` — QoS 0 (or QoS 1 acknowledged on receipt), clean
//!   session by default. Nothing is redelivered; capabilities `{false,
//!   false}`, so the loader accepts it only under `delivery: at_most_once`.
//!
//! Capabilities are fixed per connector kind and a source's configuration
//! cannot see the function's `delivery`, so the choice between the two is
//! the kind: `mqtt` refuses `qos: 0` and `clean_session: true` (either would
//! lose messages at a restart) and points at `mqtt_at_most_once`.
//!
//! `mqtt` also refuses `qos: 2`: rumqttc 0.25 forgets its QoS 2 receive
//! state when the connection drops, so a PUBREL the broker re-sends after a
//! reconnect (for a message acknowledged just before it) fails the
//! connection again and again. QoS 2 brings nothing under at-least-once
//! anyway; messages published at QoS 2 reach a QoS 1 subscription at QoS 1.
//!
//! # Partitions, offsets, keys
//!
//! MQTT has neither partitions nor offsets. A message's partition is a hash
//! (FNV-1a) of its topic — or of one level of it, `partition_level` (1-based:
//! level 2 of `devices/d7/telemetry` is `d7`) — modulo `partitions`
//! (default 1). Offsets are a per-partition counter in arrival order,
//! starting at 0 for every new source: they are *session-local*; the
//! durable state is the broker's record of unacknowledged messages, not the
//! offsets. MQTT keeps the order of messages of one topic, so events of one
//! topic stay in order within their partition.
//!
//! The key is one topic level (`key_level`, 1-based) or a top-level field of
//! a JSON payload (`key_field`; strings as their text, other values as
//! JSON), or none. Every event carries the header [`TOPIC_HEADER`]
//! (`spate-mqtt-topic`) with its topic, and [`RETAIN_HEADER`] when the
//! broker flagged it as a retained message. The timestamp is the receive
//! time (MQTT 3.1.1 messages carry none).
//!
//! # Commit
//!
//! Committing a partition up to an offset acknowledges every message of the
//! partition below it (PUBACK), in the partition's arrival order. Acks of
//! different partitions may interleave out of arrival order; MQTT 3.1.1 asks
//! clients to acknowledge in order so that brokers can keep "ordered
//! topics", and order *within a topic* is what spate keeps. Mosquitto,
//! EMQX and HiveMQ accept acks in any order.
//!
//! A redelivered message (DUP flag) whose packet id is still held unacked
//! by this source is dropped as the copy it is. If the broker loses the
//! session (it restarted without persistence; `session_present` false on
//! reconnect), the source subscribes again and no longer acknowledges
//! messages of the lost session (their packet ids mean nothing now).
//!
//! # Exactly-once into a database: `sequence`
//!
//! A database sink commits rows together with the positions they cover,
//! then the source acknowledges the messages. A crash between the two makes
//! the broker deliver those messages again, and MQTT 3.1.1 gives a message
//! no identity to recognise it by. With `sequence: /seq` each device
//! supplies one — a number in the payload that grows with every message of
//! its topic (a counter, or an epoch-milliseconds timestamp) — and the
//! position stored for each *topic* is its last finished sequence (see
//! [`sequence`]). On start the source takes the stored positions
//! ([`Source::resume_from`]) and acknowledges, without handing them on,
//! redelivered messages at or below them. A message whose sequence is not
//! above its topic's last one and that is not a redelivery is dead-lettered
//! as out of sequence, and one without a usable sequence as undecodable:
//! neither is dropped silently. Without `sequence:` the source cannot feed
//! `exactly_once` into a database, and the pipeline loader says so.
//!
//! This relies on the broker keeping each topic's order, as MQTT 3.1.1
//! requires ("ordered topics"). Mosquitto 2.0 breaks it when a
//! subscriber's in-flight window (`max_inflight_messages`) is full: what
//! arrives meanwhile is queued, and newer messages of a topic can be sent
//! before the queued ones. spate then dead-letters the overtaken readings as
//! out of sequence (the aggregate misses them). Give spate's session no
//! window — `max_inflight_messages 0` in `mosquitto.conf` — and let the
//! source's own bound and TCP flow control hold the broker back (measured
//! on Mosquitto 2.0.11: with a window of 1,000, a 20,000-reading burst had
//! hundreds of readings overtaken; with none, none in every run).
//!
//! The position of a topic is stored under the topic itself, so changing
//! `topics`, `partitions` or `partition_level` keeps it; handler state (the
//! `window` aggregator's) is stored per partition, so changing `partitions`
//! or `partition_level` orphans it — drain first.
//!
//! # Backpressure and memory
//!
//! A task polls rumqttc's event loop continuously (so keep-alive pings go
//! out) and hands messages to the source through a channel of
//! `max_buffered` messages. The source reads from that channel while it
//! holds fewer than `max_buffered` unread events; paused partitions keep
//! theirs unread. When the channel is full the task stops polling, so
//! nothing more is read from the socket and TCP flow control pushes back
//! on the broker. With an in-flight window (Mosquitto's
//! `max_inflight_messages`, 20 by default) the broker sends at most that
//! many unacknowledged messages and queues the rest in the session
//! (`max_queued_messages`, 1000 by default, beyond which *it* drops
//! messages — size it for the longest outage); throughput is then bounded
//! by window / commit latency. Without a window (`max_inflight_messages 0`,
//! which `sequence:` needs, see above) TCP flow control is the bound. If
//! the channel stays full longer than 1.5 × `keep_alive` (a handler far
//! slower than the input), the broker drops the connection, since no pings
//! went out; rumqttc reconnects, the broker redelivers what is
//! unacknowledged, and the copies are dropped as above: nothing is lost,
//! but raise `keep_alive` if that happens often.
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `topics` | required | topic filter or list of filters; `+` and `#` wildcards |
//! | `client_id` | required for `mqtt` | stable client id: the broker keeps the session under it |
//! | `qos` | `1` (`mqtt`), `0` (`mqtt_at_most_once`) | subscription QoS: `mqtt` takes `1`; `mqtt_at_most_once` `0` or `1` |
//! | `clean_session` | `false` (`mqtt`), `true` (`mqtt_at_most_once`) | `mqtt` needs `false` |
//! | `partitions` | `1` | number of partitions topics are hashed into (1–1024) |
//! | `partition_level` | whole topic | 1-based topic level hashed into the partition |
//! | `key_level` | none | 1-based topic level used as the key |
//! | `key_field` | none | top-level field of a JSON payload used as the key |
//! | `max_buffered` | `1000` | messages read but not yet handed to the engine |
//! | `sequence` | none | `mqtt` only: JSON pointer to a number that grows with every message of a topic; needed for `exactly_once` into a database |
//! | `url`, `username`, `password`, `tls_ca_file`, `keep_alive`, `connect_timeout`, `max_packet_size` | | see [`connection`](crate::connection) |

mod acks;
mod connect;
pub mod sequence;
mod settings;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rumqttc::{AsyncClient, Publish, QoS};
use spate_connector::internal_events::CommitTimer;
use spate_connector::{
    dead_letter, Capabilities, CommitPosition, Event, Headers, PartitionId, Position, Source,
    SourceError, SourceMessage, StoredPosition,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{RETAIN_HEADER, TOPIC_HEADER};
use connect::Delivery;
pub use connect::MqttSourceBuilder;
use sequence::{Sequenced, Sequences};
pub use settings::{
    check_filter, read_source, KeyFrom, Router, SourceSettings, MAX_MAX_BUFFERED, MAX_PARTITIONS,
};

/// What `mqtt` sources can promise: the broker's persistent session keeps
/// unacknowledged messages, and with `sequence:` the source resumes from
/// positions a database stored (without it, a source says so through
/// `SourceBuilder::capabilities`).
pub const SOURCE_CAPABILITIES: Capabilities =
    Capabilities::NONE.with_durable_positions().with_resumable();

/// What `mqtt_at_most_once` sources promise: nothing durable.
pub const AT_MOST_ONCE_CAPABILITIES: Capabilities = Capabilities::NONE;

/// A message handed to the engine and not yet acknowledged.
#[derive(Debug)]
struct Held {
    offset: u64,
    packet_id: u16,
    session: u64,
    /// False once the broker reused the packet id (it considers the message
    /// acknowledged), or for a QoS 0 delivery: no ack is sent for it.
    ack: bool,
    /// With `sequence:`: the message's topic and sequence, which commits
    /// turn into stored positions.
    sequenced: Option<(Arc<str>, u64)>,
}

#[derive(Debug, Default)]
struct PartitionState {
    next_offset: u64,
    paused: bool,
    unread: VecDeque<Event>,
    held: VecDeque<Held>,
}

/// An MQTT subscription as a partitioned source.
pub struct MqttSource {
    name: String,
    stream: Arc<str>,
    client: AsyncClient,
    rx: mpsc::Receiver<Delivery>,
    driver: JoinHandle<()>,
    session: Arc<AtomicU64>,
    session_seen: u64,
    manual_acks: bool,
    router: Router,
    partitions: Vec<PartitionState>,
    assigned: bool,
    unread_total: usize,
    max_buffered: usize,
    /// Packet id → (partition, offset) of held messages of the current session.
    held_ids: HashMap<u16, (PartitionId, u64)>,
    /// Acks the client's request channel had no room for yet, with the
    /// held message each acknowledges (none for a finished copy).
    pending_acks: VecDeque<(Publish, Option<(PartitionId, u64)>)>,
    failed: Option<String>,
    round_robin: usize,
    /// With `sequence:`, each topic's last sequence.
    sequences: Option<Sequences>,
}

impl Drop for MqttSource {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl MqttSource {
    fn ingest(&mut self, publish: Publish, session: u64) {
        if session > self.session_seen {
            // The broker lost the old session: its packet ids mean nothing.
            self.session_seen = session;
            self.held_ids.clear();
        }
        let tracked = self.manual_acks && publish.qos != QoS::AtMostOnce;
        if tracked {
            if let Some(&(partition, offset)) = self.held_ids.get(&publish.pkid) {
                if publish.dup {
                    // A redelivery of a message we still hold.
                    tracing::debug!(source = %self.name, pkid = publish.pkid, "dropped a redelivered copy");
                    return;
                }
                // The broker reused the id: it counts the old message as
                // acknowledged, so acking it again would ack this one.
                if let Some(held) = self.partitions[partition as usize]
                    .held
                    .iter_mut()
                    .find(|h| h.offset == offset)
                {
                    held.ack = false;
                }
            }
        }
        let topic = publish.topic.as_str();
        let mut headers = Headers::new();
        headers.push(TOPIC_HEADER, Bytes::copy_from_slice(topic.as_bytes()));
        if publish.retain {
            headers.push(RETAIN_HEADER, Bytes::from_static(b"true"));
        }
        let mut sequenced = None;
        if let Some(sequences) = self.sequences.as_mut() {
            let topic: Arc<str> = Arc::from(topic);
            match sequences.classify(&topic, &publish.payload, publish.dup) {
                Sequenced::New(sequence) => sequenced = Some((topic, sequence)),
                Sequenced::Finished { sequence, last } => {
                    // Finished before a restart; only its ack was lost.
                    tracing::debug!(source = %self.name, %topic, sequence, last, "acknowledged a redelivered message that is already finished");
                    if tracked {
                        self.pending_acks.push_back((publish, None));
                    }
                    return;
                }
                Sequenced::OutOfSequence(why) | Sequenced::Missing(why) => {
                    headers.set(dead_letter::DECODE_ERROR, why);
                }
            }
        }
        let partition = self.router.partition(topic);
        let key = self.router.key(topic, &publish.payload);
        let state = &mut self.partitions[partition as usize];
        let offset = state.next_offset;
        state.next_offset += 1;
        if tracked || sequenced.is_some() {
            state.held.push_back(Held {
                offset,
                packet_id: publish.pkid,
                session,
                ack: tracked,
                sequenced,
            });
            if tracked {
                self.held_ids.insert(publish.pkid, (partition, offset));
            }
        }
        state.unread.push_back(Event {
            key,
            payload: publish.payload,
            headers,
            timestamp_ms: Event::receive_time_ms(),
            position: Position {
                stream: self.stream.clone(),
                partition,
                offset,
            },
        });
        self.unread_total += 1;
    }

    /// Takes up to `max` unread events of unpaused partitions, round robin.
    fn take_ready(&mut self, max: usize) -> Vec<Event> {
        let mut events = Vec::new();
        let n = self.partitions.len();
        let mut progressed = true;
        while events.len() < max && progressed {
            progressed = false;
            for i in 0..n {
                if events.len() >= max {
                    break;
                }
                let p = (self.round_robin + i) % n;
                let state = &mut self.partitions[p];
                if state.paused {
                    continue;
                }
                if let Some(event) = state.unread.pop_front() {
                    events.push(event);
                    progressed = true;
                }
            }
        }
        self.round_robin = (self.round_robin + 1) % n.max(1);
        self.unread_total -= events.len();
        events
    }

    fn check_partition(&self, partition: PartitionId) -> Result<(), SourceError> {
        if (partition as usize) < self.partitions.len() {
            Ok(())
        } else {
            Err(SourceError::Fatal {
                source_name: self.name.clone(),
                message: format!("partition {partition} does not exist"),
            })
        }
    }
}

#[async_trait]
impl Source for MqttSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn next(&mut self, max_events: usize) -> Result<SourceMessage, SourceError> {
        if let Some(assigned) = SourceMessage::assign_once(&mut self.assigned, || {
            (0..self.partitions.len() as PartitionId).collect()
        }) {
            return Ok(assigned);
        }
        let max_events = max_events.max(1);
        loop {
            let acks_waiting = !self.flush_acks();
            if let Some(message) = self.failed.clone() {
                return Err(SourceError::Fatal {
                    source_name: self.name.clone(),
                    message,
                });
            }
            while self.unread_total < self.max_buffered {
                match self.rx.try_recv() {
                    Ok(Delivery::Message(publish, session)) => self.ingest(publish, session),
                    Ok(Delivery::Failed(message)) => self.failed = Some(message),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        return Err(SourceError::Unavailable {
                            source_name: self.name.clone(),
                            message: "the MQTT event loop stopped".to_owned(),
                        })
                    }
                }
            }
            if self.failed.is_some() {
                continue;
            }
            let events = self.take_ready(max_events);
            if !events.is_empty() {
                return Ok(SourceMessage::Events(events));
            }
            if self.unread_total >= self.max_buffered {
                // Everything buffered belongs to paused partitions: stop
                // reading until a resume (cancel safe: nothing in flight).
                if acks_waiting {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                std::future::pending::<()>().await;
            }
            tokio::select! {
                delivery = self.rx.recv() => match delivery {
                    Some(Delivery::Message(publish, session)) => self.ingest(publish, session),
                    Some(Delivery::Failed(message)) => self.failed = Some(message),
                    None => {
                        return Err(SourceError::Unavailable {
                            source_name: self.name.clone(),
                            message: "the MQTT event loop stopped".to_owned(),
                        })
                    }
                },
                _ = tokio::time::sleep(Duration::from_millis(10)), if acks_waiting => {}
            }
        }
    }

    fn pause(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError> {
        for p in partitions {
            self.check_partition(*p)?;
            self.partitions[*p as usize].paused = true;
        }
        Ok(())
    }

    fn resume(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError> {
        for p in partitions {
            self.check_partition(*p)?;
            self.partitions[*p as usize].paused = false;
        }
        Ok(())
    }

    async fn commit(&mut self, positions: &[CommitPosition]) -> Result<(), SourceError> {
        let timer = CommitTimer::start("mqtt");
        let outcome = self.queue_acks(positions);
        timer.finish(
            &self.name,
            &outcome,
            "acknowledging committed messages failed",
        );
        outcome
    }

    /// With `sequence:`, each topic's last sequence among the messages the
    /// positions cover (see [`sequence`]); a topic none of them touch keeps
    /// its stored position.
    fn positions_to_store(&self, positions: &[CommitPosition]) -> Vec<StoredPosition> {
        let mut last: BTreeMap<&str, u64> = BTreeMap::new();
        for position in positions {
            let Some(state) = self.partitions.get(position.partition as usize) else {
                continue;
            };
            for held in state
                .held
                .iter()
                .take_while(|h| h.offset < position.next_offset)
            {
                if let Some((topic, sequence)) = &held.sequenced {
                    let entry = last.entry(topic).or_insert(*sequence);
                    *entry = (*entry).max(*sequence);
                }
            }
        }
        last.into_iter()
            .map(|(topic, sequence)| StoredPosition {
                partition: topic.to_owned(),
                next_offset: sequence.saturating_add(1),
            })
            .collect()
    }

    /// With `sequence:`: raises each topic's last sequence to the stored one
    /// and acknowledges, unhandled, every buffered message at or below it.
    fn resume_from(&mut self, positions: &[StoredPosition]) -> Result<(), SourceError> {
        let Some(sequences) = self.sequences.as_mut() else {
            return Err(SourceError::Fatal {
                source_name: self.name.clone(),
                message: "an `mqtt` input resumes from stored positions only with `sequence:` (the payload field each device numbers its messages with)".to_owned(),
            });
        };
        for position in positions {
            sequences.floor(&position.partition, position.next_offset);
        }
        let current = self.session.load(Ordering::Acquire);
        let mut dropped = 0usize;
        for (index, state) in self.partitions.iter_mut().enumerate() {
            let finished: Vec<u64> = state
                .held
                .iter()
                .filter(|h| {
                    h.sequenced
                        .as_ref()
                        .is_some_and(|(topic, seq)| sequences.is_finished(topic, *seq))
                })
                .map(|h| h.offset)
                .collect();
            if finished.is_empty() {
                continue;
            }
            // Only unread events can be finished here: resume comes before
            // any event of a newly assigned partition is handed out.
            state
                .unread
                .retain(|e| !finished.contains(&e.position.offset));
            let mut kept = VecDeque::with_capacity(state.held.len());
            for held in state.held.drain(..) {
                if !finished.contains(&held.offset) {
                    kept.push_back(held);
                    continue;
                }
                dropped += 1;
                if held.ack && held.session == current {
                    let mut publish = Publish::new("", QoS::AtLeastOnce, Vec::<u8>::new());
                    publish.pkid = held.packet_id;
                    self.pending_acks
                        .push_back((publish, Some((index as PartitionId, held.offset))));
                }
            }
            state.held = kept;
        }
        self.unread_total -= dropped;
        if dropped > 0 {
            tracing::info!(source = %self.name, messages = dropped, "acknowledged redelivered messages the database already holds");
        }
        self.flush_acks();
        Ok(())
    }

    fn lag(&self, partition: PartitionId) -> Option<u64> {
        self.partitions
            .get(partition as usize)
            .map(|p| p.unread.len() as u64)
    }

    async fn close(&mut self) -> Result<(), SourceError> {
        // Give queued acks a moment to leave, then disconnect cleanly (the
        // session stays on the broker).
        for _ in 0..100 {
            if self.flush_acks() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = self.client.disconnect().await;
        let driver = &mut self.driver;
        let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;
        Ok(())
    }
}
