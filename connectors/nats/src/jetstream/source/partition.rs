//! One partition of the JetStream source: the messages received from its
//! consumer, by stream sequence, as they move from received to handed out
//! to acknowledged, and the fetch task that pulls them.
//!
//! Guarantees: events are handed out in increasing sequence order; a
//! sequence is acknowledged only when a commit covers it; a redelivery of a
//! sequence already held is never handed out twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, Consumer};
use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::{self as js};
use futures_util::StreamExt;
use spate_connector::{Event, PartitionId, Position};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use async_nats::Subject;

use crate::jetstream::ack_ledger::AckLedger;
use crate::jetstream::leases::LeaseValidity;
use crate::{event_headers, SubjectBytes};

/// How long before its lease can end a leased partition's pull request
/// must be over.
const LEASE_MARGIN: Duration = Duration::from_millis(200);
/// The shortest pull request worth sending; with less lease left the fetch
/// task waits this long for the lease to be renewed instead.
const MIN_PULL: Duration = Duration::from_millis(50);

/// Whose fetch task a [`Feed`] item comes from: the partition and the
/// reader's serial, so items a replaced reader's task sent before it
/// stopped are told apart from the new reader's (they belong to a consumer
/// that was reset, and are dropped).
pub(super) type FeedTag = (PartitionId, u64);

/// Serials of readers, unique in the process.
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(0);

/// What a fetch task hands the source.
pub(super) enum Feed {
    Message(Box<js::Message>),
    /// A pull request ended (filled, expired or failed).
    Done,
    Error(String),
}

/// Where a partition is in its assign / revoke cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// `Assigned` not returned yet.
    Unassigned,
    /// Handing out events.
    Assigned,
    /// `Revoked` returned; waiting for `release`.
    Revoked,
}

/// A received message: the event (while not handed out), its ack handle
/// and its ack subject (filed in the exactly-once ack ledger).
pub(super) struct Pending {
    pub(super) event: Option<Event>,
    pub(super) acker: Acker,
    pub(super) reply: Option<Subject>,
    pub(super) touched: Instant,
}

/// How the subject becomes the event key.
#[derive(Debug, Clone, Copy)]
pub(super) struct KeyRule {
    /// 1-based subject token used as the key (else the `spate-key` header).
    pub(super) key_token: Option<usize>,
}

/// One partition's messages and fetch task.
pub(super) struct PartitionReader {
    pub(super) id: PartitionId,
    /// Tags this reader's feed items (see [`FeedTag`]).
    pub(super) serial: u64,
    requests: mpsc::UnboundedSender<usize>,
    task: JoinHandle<()>,
    pub(super) fetch_in_flight: bool,
    /// Received, to be handed out, by sequence (all above `last_handed`).
    pub(super) staged: BTreeMap<u64, Pending>,
    /// Received redeliveries at or below `last_handed` that were not held:
    /// handed out after the next revoke / assign cycle.
    pub(super) out_of_order: BTreeMap<u64, Pending>,
    /// Handed out, not yet acked, by sequence.
    pub(super) held: BTreeMap<u64, Pending>,
    /// Held sequences the engine dead-lettered: `term`ed at their commit.
    pub(super) terminated: BTreeSet<u64>,
    /// The highest sequence handed out since the last assignment (0: none).
    pub(super) last_handed: u64,
    pub(super) paused: bool,
    pub(super) phase: Phase,
    /// A revoke is wanted (lease lost or given back).
    pub(super) revoke_wanted: bool,
    /// After release: keep the partition (a restart in order) or drop it
    /// (lease gone).
    pub(super) keep_after_release: bool,
    pub(super) lag: Option<u64>,
    /// A leased partition's lease (`None` for the shared durable): nothing
    /// is fetched or handed out past its end.
    pub(super) validity: Option<LeaseValidity>,
    /// The subject of the last message received, as shared bytes.
    subject_bytes: SubjectBytes,
    /// Under `exactly_once`: where handed-out messages are filed for the
    /// session's commit to double-ack (see [`AckLedger`]).
    pub(super) ledger: Option<Arc<AckLedger>>,
}

impl PartitionReader {
    /// A reader whose fetch task pulls from `consumer` and tags what it
    /// receives with `id` on `feed`, while `validity` (if any) lasts.
    pub(super) fn start(
        id: PartitionId,
        consumer: Consumer<pull::Config>,
        fetch_wait: Duration,
        feed: mpsc::UnboundedSender<(FeedTag, Feed)>,
        validity: Option<LeaseValidity>,
    ) -> PartitionReader {
        let serial = NEXT_SERIAL.fetch_add(1, Ordering::Relaxed);
        let (requests, request_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(fetch_loop(
            (id, serial),
            consumer,
            fetch_wait,
            validity.clone(),
            request_rx,
            feed,
        ));
        PartitionReader {
            id,
            serial,
            requests,
            task,
            fetch_in_flight: false,
            staged: BTreeMap::new(),
            out_of_order: BTreeMap::new(),
            held: BTreeMap::new(),
            terminated: BTreeSet::new(),
            last_handed: 0,
            paused: false,
            phase: Phase::Unassigned,
            revoke_wanted: false,
            keep_after_release: true,
            lag: None,
            validity,
            subject_bytes: SubjectBytes::default(),
            ledger: None,
        }
    }

    /// Asks the fetch task for up to `count` messages; false if it stopped.
    pub(super) fn request(&mut self, count: usize) -> bool {
        if self.requests.send(count).is_err() {
            return false;
        }
        self.fetch_in_flight = true;
        true
    }

    /// Stops the fetch task after its current pull request.
    pub(super) fn stop_fetching(&mut self) {
        let (closed, _) = mpsc::unbounded_channel();
        self.requests = closed;
    }

    /// Files one received message under staged, held or out-of-order.
    pub(super) fn receive(
        &mut self,
        source_name: &str,
        stream: &Arc<str>,
        keys: KeyRule,
        message: js::Message,
    ) {
        let (sequence, pending, time_ms) = match message.info() {
            Ok(info) => (
                info.stream_sequence,
                info.pending,
                (info.published.unix_timestamp_nanos() / 1_000_000) as i64,
            ),
            Err(e) => {
                spate_connector::internal_events::FetchError {
                    connector: "jetstream",
                    name: source_name,
                    error: &e,
                    context: "JetStream message without ack metadata ignored",
                }
                .emit();
                return;
            }
        };
        self.lag = Some(pending);
        let reply = message.message.reply.clone();
        let (message, acker) = message.split();
        let now = Instant::now();
        if let (Some(ledger), Some(reply)) = (&self.ledger, &reply) {
            if self.held.contains_key(&sequence) {
                ledger.renew(self.id, self.serial, sequence, reply.clone());
            }
        }
        // A redelivery of something held or waiting: keep the newest handle.
        for map in [&mut self.held, &mut self.staged, &mut self.out_of_order] {
            if let Some(entry) = map.get_mut(&sequence) {
                entry.acker = acker;
                entry.reply = reply;
                entry.touched = now;
                tracing::debug!(source = %source_name, sequence, "duplicate delivery dropped");
                return;
            }
        }
        let subject = self.subject_bytes.get(message.subject.as_str());
        let (mut key, headers) = event_headers(subject, message.headers.as_ref());
        if let Some(token) = keys.key_token {
            if let Some(part) = message.subject.as_str().split('.').nth(token - 1) {
                key = Some(bytes::Bytes::copy_from_slice(part.as_bytes()));
            }
        }
        let event = Event {
            key,
            payload: message.payload.clone(),
            headers,
            timestamp_ms: Some(time_ms),
            position: Position {
                stream: stream.clone(),
                partition: self.id,
                offset: sequence,
            },
        };
        let entry = Pending {
            event: Some(event),
            acker,
            reply,
            touched: now,
        };
        if sequence > self.last_handed {
            self.staged.insert(sequence, entry);
        } else {
            tracing::debug!(
                source = %source_name,
                partition = self.id,
                sequence,
                last_handed = self.last_handed,
                "redelivered message below the last handed-out sequence"
            );
            self.out_of_order.insert(sequence, entry);
        }
    }

    /// The partition's lease ran out (or was given up): nothing more may be
    /// handed out, another process may be reading it already.
    pub(super) fn lease_lapsed(&self) -> bool {
        self.validity
            .as_ref()
            .is_some_and(|v| v.remaining().is_zero())
    }

    /// Moves up to `max` staged events, in sequence order, into `events`.
    /// Under `exactly_once` they are filed in the ack ledger too.
    pub(super) fn hand_out(&mut self, max: usize, events: &mut Vec<Event>) {
        let mut taken = 0;
        let mut filed = Vec::new();
        while taken < max {
            let Some((sequence, mut entry)) = self.staged.pop_first() else {
                break;
            };
            if let Some(event) = entry.event.take() {
                events.push(event);
                taken += 1;
            }
            if let (Some(_), Some(reply)) = (&self.ledger, &entry.reply) {
                filed.push((sequence, reply.clone()));
            }
            self.last_handed = sequence;
            self.held.insert(sequence, entry);
        }
        if let Some(ledger) = self.ledger.as_ref().filter(|_| !filed.is_empty()) {
            ledger.file(self.id, self.serial, filed);
        }
    }

    /// Forgets what this reader filed in the ack ledger: its messages go
    /// back to the server.
    fn forget_filed(&self) {
        if let Some(ledger) = &self.ledger {
            ledger.forget(self.id, self.serial);
        }
    }

    /// `Term` for a dead-lettered message (the server then never delivers
    /// it again and raises its "terminated" advisory), `Ack` otherwise.
    pub(super) fn ack_kind(&self, sequence: u64) -> AckKind {
        if self.terminated.contains(&sequence) {
            AckKind::Term
        } else {
            AckKind::Ack
        }
    }

    /// Takes the held messages below `next_offset` out, in sequence order
    /// (to be acked, or forgotten once acked).
    pub(super) fn take_held_below(&mut self, next_offset: u64) -> BTreeMap<u64, Pending> {
        let above = self.held.split_off(&next_offset);
        std::mem::replace(&mut self.held, above)
    }

    /// Sends in-progress acks for everything that waited `every`.
    pub(super) async fn send_progress(&mut self, every: Duration) {
        let now = Instant::now();
        for map in [&mut self.held, &mut self.staged, &mut self.out_of_order] {
            for (sequence, entry) in map.iter_mut() {
                if now.duration_since(entry.touched) >= every {
                    if let Err(e) = entry.acker.ack_with(AckKind::Progress).await {
                        tracing::debug!(sequence, "in-progress ack failed");
                        spate_connector::internal_events::AckFailed {
                            connector: "jetstream",
                            name: "progress",
                            error: &e,
                            context: "in-progress ack failed",
                        }
                        .emit();
                    }
                    entry.touched = now;
                }
            }
        }
    }

    /// Hands back, for redelivery after `delay`, every message not acked,
    /// and clears the partition's state.
    pub(super) async fn nak_all(&mut self, source_name: &str, delay: Option<Duration>) {
        self.forget_filed();
        for map in [&mut self.held, &mut self.staged, &mut self.out_of_order] {
            for (sequence, entry) in std::mem::take(map) {
                nak(self.id, sequence, entry, delay, source_name).await;
            }
        }
        self.terminated.clear();
    }

    /// Starts the partition afresh after a release it keeps: unfinished
    /// held messages go back to the server, the waiting redeliveries first.
    pub(super) async fn restart(&mut self, source_name: &str) {
        self.forget_filed();
        for (sequence, entry) in std::mem::take(&mut self.held) {
            nak(self.id, sequence, entry, None, source_name).await;
        }
        self.terminated.clear();
        self.staged.append(&mut self.out_of_order);
        self.last_handed = 0;
        self.phase = Phase::Unassigned;
    }
}

/// Hands one message of `partition` back for redelivery after `delay`. A
/// failed nak is only reported: the server redelivers after `ack_wait`.
async fn nak(
    partition: PartitionId,
    sequence: u64,
    entry: Pending,
    delay: Option<Duration>,
    source_name: &str,
) {
    if let Err(e) = entry.acker.ack_with(AckKind::Nak(delay)).await {
        tracing::debug!(partition, sequence, "nak failed");
        spate_connector::internal_events::AckFailed {
            connector: "jetstream",
            name: source_name,
            error: &e,
            context: "nak failed; the server redelivers after ack_wait",
        }
        .emit();
    }
}

impl Drop for PartitionReader {
    fn drop(&mut self) {
        self.forget_filed();
        self.task.abort();
    }
}

/// Sends one pull request per number received, forwarding its messages.
/// Running apart from the source makes `next` cancel safe: a pull request's
/// messages are never dropped with a future.
async fn fetch_loop(
    id: FeedTag,
    consumer: Consumer<pull::Config>,
    fetch_wait: Duration,
    validity: Option<LeaseValidity>,
    mut requests: mpsc::UnboundedReceiver<usize>,
    feed: mpsc::UnboundedSender<(FeedTag, Feed)>,
) {
    while let Some(count) = requests.recv().await {
        // A leased partition's pull request ends before its lease can.
        let expires = match &validity {
            None => fetch_wait,
            Some(validity) => fetch_wait.min(validity.remaining().saturating_sub(LEASE_MARGIN)),
        };
        if expires < MIN_PULL {
            tokio::time::sleep(MIN_PULL).await;
            if feed.send((id, Feed::Done)).is_err() {
                return;
            }
            continue;
        }
        match consumer
            .batch()
            .max_messages(count)
            .expires(expires)
            .messages()
            .await
        {
            Ok(mut batch) => {
                while let Some(item) = batch.next().await {
                    let sent = match item {
                        Ok(message) => feed.send((id, Feed::Message(Box::new(message)))),
                        Err(e) => feed.send((id, Feed::Error(format!("pull request failed: {e}")))),
                    };
                    if sent.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                if feed
                    .send((id, Feed::Error(format!("cannot send pull request: {e}"))))
                    .is_err()
                {
                    return;
                }
                // Do not spin while the server is away.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        if feed.send((id, Feed::Done)).is_err() {
            return;
        }
    }
}
