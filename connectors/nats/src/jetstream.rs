//! The `jetstream` connector: a durable pull consumer as a source, and
//! publishes that wait for the stream's acknowledgement as a sink.
//!
//! # Source
//!
//! One durable pull consumer with explicit acks, read as one partition
//! (`0`) whose offsets are the **stream sequences** of the messages.
//! Capabilities `{exactly_once: false, durable_positions: true}`: the
//! consumer's ack state on the server is the durable position.
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `stream` | required | the stream to consume |
//! | `subjects` | none | subjects of the stream; when given, the stream is created with them if it does not exist (an existing stream is bound as it is). Without it the stream must exist |
//! | `durable` | required | durable consumer name, shared by every process of the pipeline; created if missing, its settings updated if present |
//! | `filter_subject` | none | consume only the stream's messages on this subject (wildcards allowed) |
//! | `max_ack_pending` | `1000` | most messages delivered but not yet acked, over all processes of the durable |
//! | `ack_wait` | `30s` | how long the server waits for an ack before delivering again |
//! | `fetch_wait` | `5s` | how long one pull request waits on the server for messages |
//! | `url`, `user`, `password`, `token`, `creds_file`, `connect_timeout` | | see [`connection`](crate::connection) |
//!
//! How the delivery rules of the contract are kept:
//!
//! * **Stage on read, apply on commit.** A delivered message is handed to the
//!   engine and its ack handle held (ordered by sequence). Only
//!   [`Source::commit`] acks, and it acks exactly the held messages below the
//!   committed position (`AckKind::Ack`, in sequence order, then a flush).
//!   JetStream acks are per message, so acking never covers a message the
//!   engine did not finish.
//! * **Long handlers.** Every held (or received but not yet handed out)
//!   message gets an in-progress ack (`AckKind::Progress`) once it has waited
//!   half of `ack_wait`, so the server does not redeliver work in progress.
//! * **Pause means pause.** Pull requests of at most `max_events` messages
//!   are sent only while the partition is not paused and nothing received is
//!   waiting to be handed out; a request sent before the pause may still
//!   deliver (at most one batch), and those messages wait in the source.
//! * **Cancel safety.** Pull requests run in a task of their own and hand
//!   messages over through a channel, so dropping `next` loses nothing.
//! * **Offsets strictly increase.** JetStream redelivers: after `ack_wait`,
//!   after a reconnect, or when another process on the same durable stops
//!   without acking. A redelivered message whose sequence is still held
//!   (handed out, not yet committed) is a duplicate of work in progress: it
//!   is dropped and its newer ack handle kept. A redelivered message with a
//!   sequence at or below the last one handed out that is *not* held cannot
//!   be given to the engine in order, yet must not be lost (it may never have
//!   been handed out here). The source then hands partition 0 over as in a
//!   rebalance: it returns [`SourceMessage::Revoked`], the engine drains and
//!   commits, and after [`Source::release`] the source returns
//!   [`SourceMessage::Assigned`] again and starts the partition afresh with
//!   the waiting messages first. Held messages the engine did not finish by
//!   then are `Nak`ed, so the server delivers them again. This costs a
//!   drain, and may process a message twice (at-least-once), but never skips
//!   one.
//!
//! [`Source::close`] `Nak`s every message received but not acked, so
//! another process on the durable gets them after `fetch_wait` (the longest
//! a pull request of the closed session can stay open); a process that dies
//! without closing leaves them to be redelivered after `ack_wait`.
//!
//! Consumer lag ([`Source::lag`]) is the server's pending count as of the
//! last message received.
//!
//! # Sink
//!
//! Publishes each record to a fixed subject and resolves once the stream's
//! publish acknowledgement arrives: that ack is what makes an output
//! "acknowledged". A subject no stream captures fails with a hint.
//! Capabilities `{false, false}` for now (`Nats-Msg-Id` de-duplication for
//! exactly-once is not built yet).
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `subject` | required | subject to publish to; a stream must capture it |
//! | `ack_timeout` | `5s` | how long to wait for the publish ack before the write fails (retryably) |
//! | `url`, `user`, `password`, `token`, `creds_file`, `connect_timeout` | | see [`connection`](crate::connection) |

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, Consumer};
use async_nats::jetstream::context::ContextBuilder;
use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::{self as js, stream};
use async_trait::async_trait;
use futures_util::StreamExt;
use spate_connector::{
    Capabilities, CommitPosition, ConfigReader, ConnectorFactory, Event, PartitionId, Position,
    Record, Sink, SinkBuilder, SinkError, Source, SourceBuilder, SourceError, SourceMessage,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::connection::ConnectSettings;
use crate::{error_mark, event_headers, has_new_errors, nats_headers};

/// What JetStream sources promise: durable positions (the consumer's acks).
pub const SOURCE_CAPABILITIES: Capabilities = Capabilities {
    exactly_once: false,
    durable_positions: true,
};

/// What JetStream sinks promise for now: acknowledged writes, no
/// exactly-once.
pub const SINK_CAPABILITIES: Capabilities = Capabilities {
    exactly_once: false,
    durable_positions: false,
};

/// Default `max_ack_pending`.
pub const DEFAULT_MAX_ACK_PENDING: u64 = 1000;
/// Default `ack_wait`.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// Default `fetch_wait`.
pub const DEFAULT_FETCH_WAIT: Duration = Duration::from_secs(5);
/// Default sink `ack_timeout`.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// The `jetstream` connector family.
#[derive(Debug, Clone, Copy, Default)]
pub struct JetStreamFactory;

impl ConnectorFactory for JetStreamFactory {
    fn kind(&self) -> &'static str {
        "jetstream"
    }

    fn source_capabilities(&self) -> Option<Capabilities> {
        Some(SOURCE_CAPABILITIES)
    }

    fn sink_capabilities(&self) -> Option<Capabilities> {
        Some(SINK_CAPABILITIES)
    }

    fn source(&self, config: &mut ConfigReader<'_>) -> Option<Box<dyn SourceBuilder>> {
        let mark = error_mark(config);
        let stream = config.required_string(
            "stream",
            Some("the JetStream stream to consume, e.g. `ORDERS`".to_owned()),
        );
        let subjects: Vec<String> = config
            .list("subjects")
            .unwrap_or_default()
            .into_iter()
            .filter_map(|node| match node.as_text() {
                Some(text) => Some(text.to_owned()),
                None => {
                    config.error(
                        node.span,
                        config.child_path("subjects"),
                        format!("each subject must be a string, found {}", node.type_name()),
                        None,
                    );
                    None
                }
            })
            .collect();
        let durable = config.required_string(
            "durable",
            Some(
                "the durable consumer name every process of this pipeline shares, e.g. `orders-fn`"
                    .to_owned(),
            ),
        );
        let filter_subject = config.string("filter_subject");
        let max_ack_pending = config
            .u64("max_ack_pending")
            .unwrap_or(DEFAULT_MAX_ACK_PENDING);
        if max_ack_pending == 0 {
            config.error_at_key(
                "max_ack_pending",
                "`max_ack_pending` must be at least 1",
                None,
            );
        }
        let ack_wait = config.duration("ack_wait").unwrap_or(DEFAULT_ACK_WAIT);
        if ack_wait < Duration::from_secs(1) {
            config.error_at_key(
                "ack_wait",
                "`ack_wait` must be at least 1s",
                Some("in-progress acks are sent every half `ack_wait`".to_owned()),
            );
        }
        let fetch_wait = config.duration("fetch_wait").unwrap_or(DEFAULT_FETCH_WAIT);
        if fetch_wait < Duration::from_millis(100) {
            config.error_at_key("fetch_wait", "`fetch_wait` must be at least 100ms", None);
        }
        let connect = ConnectSettings::read(config);
        if has_new_errors(config, mark) {
            return None;
        }
        Some(Box::new(JetStreamSourceBuilder {
            stream: stream?,
            subjects,
            durable: durable?,
            filter_subject,
            max_ack_pending: i64::try_from(max_ack_pending).unwrap_or(i64::MAX),
            ack_wait,
            fetch_wait,
            connect,
        }))
    }

    fn sink(&self, config: &mut ConfigReader<'_>) -> Option<Box<dyn SinkBuilder>> {
        let mark = error_mark(config);
        let subject = config.required_string(
            "subject",
            Some("the subject to publish to; a stream must capture it".to_owned()),
        );
        if let Some(subject) = &subject {
            if subject.contains(['*', '>']) {
                config.error_at_key(
                    "subject",
                    format!("cannot publish to the wildcard subject `{subject}`"),
                    Some("a sink publishes to one concrete subject".to_owned()),
                );
            }
        }
        let ack_timeout = config
            .duration("ack_timeout")
            .unwrap_or(DEFAULT_ACK_TIMEOUT);
        let connect = ConnectSettings::read(config);
        if has_new_errors(config, mark) {
            return None;
        }
        Some(Box::new(JetStreamSinkBuilder {
            subject: subject?,
            ack_timeout,
            connect,
        }))
    }
}

struct JetStreamSourceBuilder {
    stream: String,
    subjects: Vec<String>,
    durable: String,
    filter_subject: Option<String>,
    max_ack_pending: i64,
    ack_wait: Duration,
    fetch_wait: Duration,
    connect: ConnectSettings,
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
}

impl JetStreamSource {
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

struct JetStreamSinkBuilder {
    subject: String,
    ack_timeout: Duration,
    connect: ConnectSettings,
}

#[async_trait]
impl SinkBuilder for JetStreamSinkBuilder {
    async fn build(&self) -> Result<Box<dyn Sink>, SinkError> {
        let name = format!("jetstream:{}", self.subject);
        let client =
            self.connect
                .connect(&name)
                .await
                .map_err(|message| SinkError::Unavailable {
                    sink_name: name.clone(),
                    message,
                })?;
        let context = ContextBuilder::new()
            .timeout(self.ack_timeout)
            .build(client);
        Ok(Box::new(JetStreamSink {
            name,
            subject: async_nats::Subject::from(self.subject.as_str()),
            context,
        }))
    }
}

/// Publishes records to one subject captured by a JetStream stream.
pub struct JetStreamSink {
    name: String,
    subject: async_nats::Subject,
    context: js::Context,
}

impl JetStreamSink {
    fn publish_error(&self, e: js::context::PublishError) -> SinkError {
        use js::context::PublishErrorKind as Kind;
        match e.kind() {
            Kind::MaxPayloadExceeded => SinkError::Rejected {
                sink_name: self.name.clone(),
                message: e.to_string(),
            },
            Kind::StreamNotFound => SinkError::Unavailable {
                sink_name: self.name.clone(),
                message: format!(
                    "no stream captures subject `{}`; create one whose subjects include it",
                    self.subject
                ),
            },
            _ => SinkError::Unavailable {
                sink_name: self.name.clone(),
                message: format!("publish not acknowledged: {e}"),
            },
        }
    }
}

#[async_trait]
impl Sink for JetStreamSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&self, record: Record) -> Result<(), SinkError> {
        let headers = nats_headers(record.key.as_ref(), &record.headers).map_err(|message| {
            SinkError::Rejected {
                sink_name: self.name.clone(),
                message,
            }
        })?;
        let ack = match headers {
            Some(headers) => {
                self.context
                    .publish_with_headers(self.subject.clone(), headers, record.payload)
                    .await
            }
            None => {
                self.context
                    .publish(self.subject.clone(), record.payload)
                    .await
            }
        }
        .map_err(|e| self.publish_error(e))?;
        ack.await.map_err(|e| self.publish_error(e))?;
        Ok(())
    }
}
