//! The JetStream source: a durable pull consumer read as one partition,
//! acknowledged only behind finished events (see the module above for the
//! rules it keeps).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, Consumer};
use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::{self as js, stream};
use async_trait::async_trait;
use futures_util::StreamExt;
use spate_connector::{
    CommitPosition, Event, PartitionId, Position, Source, SourceBuilder, SourceError,
    SourceMessage, TransactionSession,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::JetStreamTransaction;
use crate::connection::ConnectSettings;
use crate::event_headers;

pub(super) struct JetStreamSourceBuilder {
    pub(super) stream: String,
    pub(super) subjects: Vec<String>,
    pub(super) durable: String,
    pub(super) filter_subject: Option<String>,
    pub(super) max_ack_pending: i64,
    pub(super) ack_wait: Duration,
    pub(super) fetch_wait: Duration,
    pub(super) connect: ConnectSettings,
}

#[async_trait]
impl SourceBuilder for JetStreamSourceBuilder {
    async fn build(&self) -> Result<Box<dyn Source>, SourceError> {
        let name = format!("jetstream:{}", self.stream);
        let unavailable = |message: String| SourceError::Unavailable {
            source_name: name.clone(),
            message,
        };
        let fatal = |message: String| SourceError::Fatal {
            source_name: name.clone(),
            message,
        };
        let client = self.connect.connect(&name).await.map_err(unavailable)?;
        let context = js::new(client.clone());
        let url = self.connect.display_url();
        let stream = if self.subjects.is_empty() {
            context.get_stream(&self.stream).await.map_err(|e| {
                let message = format!("cannot bind stream `{}` at `{url}`: {e}", self.stream);
                match e.kind() {
                    js::context::GetStreamErrorKind::JetStream(inner) if inner.code() == 404 => {
                        fatal(format!(
                            "{message}; create it, or set `subjects` so spate creates it"
                        ))
                    }
                    _ => unavailable(message),
                }
            })?
        } else {
            context
                .get_or_create_stream(stream::Config {
                    name: self.stream.clone(),
                    subjects: self.subjects.clone(),
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    let message = format!(
                        "cannot create or bind stream `{}` at `{url}`: {e}",
                        self.stream
                    );
                    match e.kind() {
                        js::context::CreateStreamErrorKind::TimedOut
                        | js::context::CreateStreamErrorKind::JetStreamUnavailable => unavailable(
                            format!("{message}; is the server running with JetStream (`-js`)?"),
                        ),
                        _ => fatal(message),
                    }
                })?
        };
        let consumer: Consumer<pull::Config> = stream
            .create_consumer(pull::Config {
                durable_name: Some(self.durable.clone()),
                filter_subject: self.filter_subject.clone().unwrap_or_default(),
                ack_policy: AckPolicy::Explicit,
                ack_wait: self.ack_wait,
                max_ack_pending: self.max_ack_pending,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                let message = format!(
                    "cannot create or bind durable consumer `{}` on stream `{}`: {e}",
                    self.durable, self.stream
                );
                match e.kind() {
                    async_nats::jetstream::stream::ConsumerErrorKind::JetStream(_) => fatal(
                        format!("{message}; an existing consumer of that name must be a pull consumer whose settings can be updated"),
                    ),
                    _ => unavailable(message),
                }
            })?;
        let (requests, request_rx) = mpsc::unbounded_channel();
        let (feed_tx, feed) = mpsc::unbounded_channel();
        let task = tokio::spawn(fetch_loop(consumer, self.fetch_wait, request_rx, feed_tx));
        let progress_every = self.ack_wait / 2;
        let mut progress_tick = tokio::time::interval(progress_every / 2);
        progress_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Box::new(JetStreamSource {
            name,
            stream: Arc::from(self.stream.as_str()),
            client,
            requests,
            feed,
            task,
            fetch_in_flight: false,
            staged: BTreeMap::new(),
            out_of_order: BTreeMap::new(),
            held: BTreeMap::new(),
            last_handed: 0,
            paused: false,
            phase: Phase::Unassigned,
            progress_every,
            progress_tick,
            fetch_wait: self.fetch_wait,
            lag: None,
            cluster: self.connect.display_url(),
            ack_wait: self.ack_wait,
            exactly_once: false,
        }))
    }
}

/// What the fetch task hands the source.
enum Feed {
    Message(Box<js::Message>),
    /// A pull request ended (filled, expired or failed).
    Done,
    Error(String),
}

/// Sends one pull request per number received, forwarding its messages.
/// Running apart from the source makes `next` cancel safe: a pull request's
/// messages are never dropped with a future.
async fn fetch_loop(
    consumer: Consumer<pull::Config>,
    fetch_wait: Duration,
    mut requests: mpsc::UnboundedReceiver<usize>,
    feed: mpsc::UnboundedSender<Feed>,
) {
    while let Some(count) = requests.recv().await {
        match consumer
            .batch()
            .max_messages(count)
            .expires(fetch_wait)
            .messages()
            .await
        {
            Ok(mut batch) => {
                while let Some(item) = batch.next().await {
                    let sent = match item {
                        Ok(message) => feed.send(Feed::Message(Box::new(message))),
                        Err(e) => feed.send(Feed::Error(format!("pull request failed: {e}"))),
                    };
                    if sent.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                if feed
                    .send(Feed::Error(format!("cannot send pull request: {e}")))
                    .is_err()
                {
                    return;
                }
                // Do not spin while the server is away.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        if feed.send(Feed::Done).is_err() {
            return;
        }
    }
}

/// Where the source is in the assign / revoke cycle of partition 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `Assigned` not returned yet.
    Unassigned,
    /// Handing out events.
    Assigned,
    /// `Revoked` returned; waiting for `release`.
    Revoked,
}

/// A received message: the event (while not handed out) and its ack handle.
struct Pending {
    event: Option<Event>,
    acker: Acker,
    touched: Instant,
}

/// A JetStream durable pull consumer as a one-partition source.
pub struct JetStreamSource {
    name: String,
    stream: Arc<str>,
    client: async_nats::Client,
    requests: mpsc::UnboundedSender<usize>,
    feed: mpsc::UnboundedReceiver<Feed>,
    task: JoinHandle<()>,
    fetch_in_flight: bool,
    /// Received, to be handed out, by sequence (all above `last_handed`).
    staged: BTreeMap<u64, Pending>,
    /// Received redeliveries at or below `last_handed` that were not held:
    /// handed out after the next revoke / assign cycle.
    out_of_order: BTreeMap<u64, Pending>,
    /// Handed out, not yet acked, by sequence.
    held: BTreeMap<u64, Pending>,
    /// The highest sequence handed out since the last assignment (0: none).
    last_handed: u64,
    paused: bool,
    phase: Phase,
    progress_every: Duration,
    progress_tick: tokio::time::Interval,
    fetch_wait: Duration,
    lag: Option<u64>,
    /// For the exactly-once session: the server URL as configured and the
    /// consumer's `ack_wait`.
    cluster: String,
    ack_wait: Duration,
    /// An exactly-once session is open: acks wait for the server's reply.
    exactly_once: bool,
}

impl JetStreamSource {
    /// Exactly-once acks: all at once, each waiting for the server's
    /// confirmation, so a committed position is really stored before the
    /// engine goes on. Acked messages leave `held` even if others fail.
    async fn double_ack(&mut self, sequences: &[u64]) -> Result<(), SourceError> {
        let acks = futures_util::future::join_all(
            sequences
                .iter()
                .filter_map(|s| self.held.get(s))
                .map(|entry| entry.acker.double_ack_with(AckKind::Ack)),
        )
        .await;
        let mut first_error = None;
        for (sequence, result) in sequences.iter().zip(acks) {
            match result {
                Ok(()) => {
                    self.held.remove(sequence);
                }
                Err(e) => {
                    first_error.get_or_insert(format!("ack of sequence {sequence} failed: {e}"));
                }
            }
        }
        match first_error {
            None => Ok(()),
            Some(message) => Err(SourceError::Unavailable {
                source_name: self.name.clone(),
                message,
            }),
        }
    }

    fn to_event(&self, message: &async_nats::Message, sequence: u64, time_ms: i64) -> Event {
        let (key, headers) = event_headers(message.subject.as_str(), message.headers.as_ref());
        Event {
            key,
            payload: message.payload.clone(),
            headers,
            timestamp_ms: Some(time_ms),
            position: Position {
                stream: self.stream.clone(),
                partition: 0,
                offset: sequence,
            },
        }
    }

    /// Files one received message under staged, held or out-of-order.
    fn receive(&mut self, message: js::Message) {
        let (sequence, pending, time_ms) = match message.info() {
            Ok(info) => (
                info.stream_sequence,
                info.pending,
                (info.published.unix_timestamp_nanos() / 1_000_000) as i64,
            ),
            Err(e) => {
                tracing::warn!(source = %self.name, error = %e, "JetStream message without ack metadata ignored");
                return;
            }
        };
        self.lag = Some(pending);
        let (message, acker) = message.split();
        let now = Instant::now();
        // A redelivery of something held or waiting: keep the newest handle.
        for map in [&mut self.held, &mut self.staged, &mut self.out_of_order] {
            if let Some(entry) = map.get_mut(&sequence) {
                entry.acker = acker;
                entry.touched = now;
                tracing::debug!(source = %self.name, sequence, "duplicate delivery dropped");
                return;
            }
        }
        let event = self.to_event(&message, sequence, time_ms);
        let entry = Pending {
            event: Some(event),
            acker,
            touched: now,
        };
        if sequence > self.last_handed {
            self.staged.insert(sequence, entry);
        } else {
            tracing::info!(
                source = %self.name,
                sequence,
                last_handed = self.last_handed,
                "redelivered message below the last handed-out sequence; handing the partition over to restart it in order"
            );
            self.out_of_order.insert(sequence, entry);
        }
    }

    fn handle_feed(&mut self, item: Feed) -> Result<(), SourceError> {
        match item {
            Feed::Message(message) => {
                self.receive(*message);
                Ok(())
            }
            Feed::Done => {
                self.fetch_in_flight = false;
                Ok(())
            }
            Feed::Error(message) => Err(SourceError::Unavailable {
                source_name: self.name.clone(),
                message: format!("{message}; async-nats reconnects by itself, retrying"),
            }),
        }
    }

    /// Sends in-progress acks for everything that waited half `ack_wait`.
    async fn send_progress(&mut self) {
        let now = Instant::now();
        let every = self.progress_every;
        for map in [&mut self.held, &mut self.staged, &mut self.out_of_order] {
            for (sequence, entry) in map.iter_mut() {
                if now.duration_since(entry.touched) >= every {
                    if let Err(e) = entry.acker.ack_with(AckKind::Progress).await {
                        tracing::warn!(sequence, error = %e, "in-progress ack failed");
                    }
                    entry.touched = now;
                }
            }
        }
    }

    /// Takes up to `max` staged events in sequence order.
    fn hand_out(&mut self, max: usize) -> Vec<Event> {
        let mut events = Vec::new();
        while events.len() < max {
            let Some((sequence, mut entry)) = self.staged.pop_first() else {
                break;
            };
            if let Some(event) = entry.event.take() {
                events.push(event);
            }
            self.last_handed = sequence;
            self.held.insert(sequence, entry);
        }
        events
    }
}

#[async_trait]
impl Source for JetStreamSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn next(&mut self, max_events: usize) -> Result<SourceMessage, SourceError> {
        let max_events = max_events.max(1);
        loop {
            // Take in whatever already arrived (never blocks).
            while let Ok(item) = self.feed.try_recv() {
                self.handle_feed(item)?;
            }
            match self.phase {
                Phase::Unassigned => {
                    self.phase = Phase::Assigned;
                    return Ok(SourceMessage::Assigned(vec![0]));
                }
                Phase::Assigned if !self.out_of_order.is_empty() => {
                    self.phase = Phase::Revoked;
                    return Ok(SourceMessage::Revoked(vec![0]));
                }
                Phase::Assigned if !self.paused => {
                    if !self.staged.is_empty() {
                        return Ok(SourceMessage::Events(self.hand_out(max_events)));
                    }
                    if !self.fetch_in_flight {
                        if self.requests.send(max_events).is_err() {
                            return Err(SourceError::Fatal {
                                source_name: self.name.clone(),
                                message: "the JetStream fetch task stopped".to_owned(),
                            });
                        }
                        self.fetch_in_flight = true;
                    }
                }
                _ => {}
            }
            // Wait for messages, or send in-progress acks on the tick. Both
            // branches are cancel safe (channel recv, interval tick).
            tokio::select! {
                item = self.feed.recv() => match item {
                    Some(item) => self.handle_feed(item)?,
                    None => {
                        return Err(SourceError::Fatal {
                            source_name: self.name.clone(),
                            message: "the JetStream fetch task stopped".to_owned(),
                        })
                    }
                },
                _ = self.progress_tick.tick() => self.send_progress().await,
            }
        }
    }

    fn pause(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError> {
        if partitions.contains(&0) {
            self.paused = true;
        }
        Ok(())
    }

    fn resume(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError> {
        if partitions.contains(&0) {
            self.paused = false;
        }
        Ok(())
    }

    async fn commit(&mut self, positions: &[CommitPosition]) -> Result<(), SourceError> {
        let Some(next_offset) = positions
            .iter()
            .filter(|p| p.partition == 0)
            .map(|p| p.next_offset)
            .max()
        else {
            return Ok(());
        };
        let sequences: Vec<u64> = self.held.range(..next_offset).map(|(s, _)| *s).collect();
        if self.exactly_once {
            return self.double_ack(&sequences).await;
        }
        for sequence in sequences {
            let acked = match self.held.get(&sequence) {
                Some(entry) => entry.acker.ack_with(AckKind::Ack).await,
                None => continue,
            };
            if let Err(e) = acked {
                return Err(SourceError::Unavailable {
                    source_name: self.name.clone(),
                    message: format!("ack of sequence {sequence} failed: {e}"),
                });
            }
            self.held.remove(&sequence);
        }
        self.client
            .flush()
            .await
            .map_err(|e| SourceError::Unavailable {
                source_name: self.name.clone(),
                message: format!("flushing acks failed: {e}"),
            })
    }

    async fn begin_exactly_once(&mut self) -> Result<Box<dyn TransactionSession>, SourceError> {
        self.exactly_once = true;
        Ok(Box::new(JetStreamTransaction::new(
            format!("{}:exactly-once", self.name),
            self.cluster.clone(),
            self.client.clone(),
            self.ack_wait,
        )))
    }

    async fn release(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError> {
        if !partitions.contains(&0) || self.phase != Phase::Revoked {
            return Ok(());
        }
        // Whatever the engine did not finish is delivered again by the
        // server; the waiting redeliveries go first in the new assignment.
        for (sequence, entry) in std::mem::take(&mut self.held) {
            if let Err(e) = entry.acker.ack_with(AckKind::Nak(None)).await {
                tracing::warn!(source = %self.name, sequence, error = %e, "nak failed; the server redelivers after ack_wait");
            }
        }
        self.staged.append(&mut self.out_of_order);
        self.last_handed = 0;
        self.phase = Phase::Unassigned;
        Ok(())
    }

    fn lag(&self, partition: PartitionId) -> Option<u64> {
        if partition == 0 {
            self.lag
        } else {
            None
        }
    }

    async fn close(&mut self) -> Result<(), SourceError> {
        self.task.abort();
        // Hand unfinished messages back instead of leaving them to
        // `ack_wait`, so another process on the durable takes them over
        // soon. The redelivery is delayed by `fetch_wait`: this session's
        // last pull request may still be open on the server, and a message
        // redelivered to it would be lost until `ack_wait` again.
        let delay = self.fetch_wait + Duration::from_millis(100);
        for map in [&mut self.held, &mut self.staged, &mut self.out_of_order] {
            for (_, entry) in std::mem::take(map) {
                let _ = entry.acker.ack_with(AckKind::Nak(Some(delay))).await;
            }
        }
        let _ = self.client.flush().await;
        Ok(())
    }
}

impl Drop for JetStreamSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}
