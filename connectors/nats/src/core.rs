//! The `nats` connector: core NATS publish/subscribe.
//!
//! Core NATS keeps no positions: a message published while nobody listens
//! is gone, and a message received is never redelivered. The source is
//! therefore at-most-once by nature (capabilities `{exactly_once: false,
//! durable_positions: false}`; the loader accepts only `at_most_once` on it)
//! and `commit` does nothing.
//!
//! **Source** — one subscription, one partition (`0`), offsets are a counter
//! of this session starting at 0 (they restart at 0 with every new source).
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `subject` | required | subject to subscribe to; wildcards `*` and `>` allowed |
//! | `queue_group` | none | share the subject's messages with every subscriber of this queue group (several spate processes) |
//! | `url`, `user`, `password`, `token`, `nkey_seed`, `creds_file`, `tls_ca_file`, `tls_cert_file`, `tls_key_file`, `tls_required`, `connect_timeout` | | see [`connection`](crate::connection) |
//!
//! Pausing stops `next` from returning events; messages that keep arriving
//! wait in the client's subscription buffer, and when that fills the client
//! drops them (a NATS "slow consumer", logged) — core NATS has no
//! flow control, which is why it is at-most-once.
//!
//! **Sink** — publishes each record to a fixed subject. A write resolves once
//! the client has flushed the message to the server's socket (a `flush` after
//! the publish): core NATS has no broker acknowledgement, so that is the
//! strongest promise it can give (capabilities `{false, false}`). Writes are
//! pipelined: [`Sink::send`] publishes at once and resolves at the next
//! flush, which one flusher task runs for every publish made since the last,
//! so a partition's next event does not wait for this one's flush and many
//! publishes share one.
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `subject` | required | subject to publish to (no wildcards) |
//! | `url`, `user`, `password`, `token`, `nkey_seed`, `creds_file`, `tls_ca_file`, `tls_cert_file`, `tls_key_file`, `tls_required`, `connect_timeout` | | see [`connection`](crate::connection) |

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{FutureExt, StreamExt};
use spate_connector::factory::ConnectorFamily;
use spate_connector::{
    Capabilities, CommitPosition, ConfigReader, Event, PartitionId, PendingWrite, Position, Record,
    Sink, SinkBuilder, SinkError, Source, SourceBuilder, SourceError, SourceMessage,
};

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::connection::ConnectSettings;
use crate::{error_mark, event_headers, has_new_errors, nats_headers, read_sink, SubjectBytes};

/// What core NATS sources promise: nothing durable.
pub const SOURCE_CAPABILITIES: Capabilities = Capabilities::NONE;

/// What core NATS sinks promise: flushed to the server, no acknowledgement.
pub const SINK_CAPABILITIES: Capabilities = Capabilities::NONE;

/// The `nats` connector family.
#[derive(Debug, Clone, Copy, Default)]
pub struct NatsFactory;

impl ConnectorFamily for NatsFactory {
    const KIND: &'static str = "nats";
    const SOURCE: Option<Capabilities> = Some(SOURCE_CAPABILITIES);
    const SINK: Option<Capabilities> = Some(SINK_CAPABILITIES);

    fn read_source(&self, config: &mut ConfigReader<'_>) -> Option<Box<dyn SourceBuilder>> {
        let mark = error_mark(config);
        let subject = config.required_string(
            "subject",
            Some("the subject to subscribe to, e.g. `telemetry.>`".to_owned()),
        );
        let queue_group = config.string("queue_group");
        let connect = ConnectSettings::read(config);
        if has_new_errors(config, mark) {
            return None;
        }
        Some(Box::new(NatsSourceBuilder {
            subject: subject?,
            queue_group,
            connect,
        }))
    }

    fn read_sink(&self, config: &mut ConfigReader<'_>) -> Option<Box<dyn SinkBuilder>> {
        let (subject, (), connect) = read_sink(
            config,
            "the subject to publish to, e.g. `orders.processed`",
            |_| (),
        )?;
        Some(Box::new(NatsSinkBuilder { subject, connect }))
    }
}

struct NatsSourceBuilder {
    subject: String,
    queue_group: Option<String>,
    connect: ConnectSettings,
}

#[async_trait]
impl SourceBuilder for NatsSourceBuilder {
    async fn build(&self) -> Result<Box<dyn Source>, SourceError> {
        let name = format!("nats:{}", self.subject);
        let unavailable = |message: String| SourceError::Unavailable {
            source_name: name.clone(),
            message,
        };
        let client = self.connect.connect(&name).await.map_err(unavailable)?;
        let subscriber = match &self.queue_group {
            Some(group) => {
                client
                    .queue_subscribe(self.subject.clone(), group.clone())
                    .await
            }
            None => client.subscribe(self.subject.clone()).await,
        }
        .map_err(|e| unavailable(format!("cannot subscribe to `{}`: {e}", self.subject)))?;
        Ok(Box::new(NatsSource {
            stream: Arc::from(self.subject.as_str()),
            name,
            client,
            subscriber,
            assigned: false,
            paused: false,
            next_offset: 0,
            subject_bytes: SubjectBytes::default(),
        }))
    }

    /// Connects and subscribes as `build` does, then lets go.
    async fn check(&self) -> Result<(), SourceError> {
        self.build().await.map(drop)
    }
}

/// A core NATS subscription as a one-partition source.
pub struct NatsSource {
    name: String,
    stream: Arc<str>,
    client: async_nats::Client,
    subscriber: async_nats::Subscriber,
    assigned: bool,
    paused: bool,
    next_offset: u64,
    subject_bytes: SubjectBytes,
}

impl NatsSource {
    /// An event of `message`, received at `now_ms`.
    fn make_event(&mut self, message: async_nats::Message, now_ms: Option<i64>) -> Event {
        let subject = self.subject_bytes.get(message.subject.as_str());
        let (key, headers) = event_headers(subject, message.headers.as_ref());
        let offset = self.next_offset;
        self.next_offset += 1;
        Event {
            key,
            payload: message.payload,
            headers,
            // Core NATS messages carry no time; use the receive time.
            timestamp_ms: now_ms,
            position: Position {
                stream: self.stream.clone(),
                partition: 0,
                offset,
            },
        }
    }
}

#[async_trait]
impl Source for NatsSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn next(&mut self, max_events: usize) -> Result<SourceMessage, SourceError> {
        if let Some(assigned) = SourceMessage::assign_once(&mut self.assigned, || vec![0]) {
            return Ok(assigned);
        }
        if self.paused {
            // Pause means pause; the engine calls `next` in a select, so
            // waiting here forever is what it expects.
            std::future::pending::<()>().await;
        }
        // Receiving from the subscription is cancel safe (a channel recv).
        let Some(first) = self.subscriber.next().await else {
            return Err(SourceError::Unavailable {
                source_name: self.name.clone(),
                message: "the NATS subscription was closed".to_owned(),
            });
        };
        // Everything the subscription has ready goes in this batch (up to
        // `max_events`); nothing waits for more to arrive. The messages
        // received together share one receive time.
        let now_ms = Event::receive_time_ms();
        let max_events = max_events.max(1);
        let mut events = Vec::with_capacity(max_events.min(256));
        events.push(self.make_event(first, now_ms));
        while events.len() < max_events {
            match self.subscriber.next().now_or_never() {
                Some(Some(message)) => {
                    let event = self.make_event(message, now_ms);
                    events.push(event);
                }
                _ => break,
            }
        }
        Ok(SourceMessage::Events(events))
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

    async fn commit(&mut self, _positions: &[CommitPosition]) -> Result<(), SourceError> {
        // Core NATS keeps no positions.
        Ok(())
    }

    async fn close(&mut self) -> Result<(), SourceError> {
        let _ = self.subscriber.unsubscribe().await;
        let _ = self.client.flush().await;
        Ok(())
    }
}

struct NatsSinkBuilder {
    subject: String,
    connect: ConnectSettings,
}

#[async_trait]
impl SinkBuilder for NatsSinkBuilder {
    async fn build(&self) -> Result<Box<dyn Sink>, SinkError> {
        let name = format!("nats:{}", self.subject);
        let client = self.connect.connect_sink(&name).await?;
        let flushes = Flushes::start(client.clone(), Arc::from(name.as_str()));
        Ok(Box::new(NatsSink {
            name,
            subject: async_nats::Subject::from(self.subject.as_str()),
            client,
            flushes,
        }))
    }

    /// Connects as `build` does, then lets go.
    async fn check(&self) -> Result<(), SinkError> {
        let name = format!("nats:{}", self.subject);
        self.connect.connect_sink(&name).await.map(drop)
    }
}

/// Group flushes: publishes are numbered; one task flushes the client
/// whenever publishes are waiting and announces the highest number the
/// flush covered. A failed flush (the server away) is tried again: the
/// client keeps the messages and sends them once reconnected.
struct Flushes {
    state: Arc<FlushState>,
    task: JoinHandle<()>,
}

/// What the flusher task and every pending write share.
struct FlushState {
    /// The sink's name, for the error of a write the sink outlived.
    name: Arc<str>,
    /// Publishes numbered so far.
    published: AtomicU64,
    /// The highest publish number a flush covered (what `changes` last
    /// announced), read without touching the channel.
    flushed: AtomicU64,
    wake: Notify,
    /// Announces `flushed`; closed once the flusher task stopped.
    changes: watch::Receiver<u64>,
}

impl Flushes {
    fn start(client: async_nats::Client, name: Arc<str>) -> Flushes {
        let (flushed_tx, changes) = watch::channel(0);
        let state = Arc::new(FlushState {
            name,
            published: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            wake: Notify::new(),
            changes,
        });
        let task = tokio::spawn(flush_loop(client, state.clone(), flushed_tx));
        Flushes { state, task }
    }

    /// Numbers a publish just made; the returned write resolves once a
    /// flush covered it, or fails if the sink closed first.
    fn covered(&self) -> PendingWrite {
        let number = self.state.published.fetch_add(1, AtomicOrdering::AcqRel) + 1;
        self.state.wake.notify_one();
        let state = self.state.clone();
        Box::pin(async move { state.wait_covered(number).await })
    }
}

impl FlushState {
    /// Waits until a flush covered publish `number`. A write the flusher
    /// already covered resolves at its first poll, without a wake-up.
    async fn wait_covered(&self, number: u64) -> Result<(), SinkError> {
        if self.flushed.load(AtomicOrdering::Acquire) >= number {
            return Ok(());
        }
        let mut changes = self.changes.clone();
        let covered = changes.wait_for(|done| *done >= number).await.is_ok();
        if covered {
            Ok(())
        } else {
            Err(SinkError::Unavailable {
                sink_name: self.name.to_string(),
                message: "the sink closed before the message was flushed".to_owned(),
            })
        }
    }
}

/// The flusher task: flushes whenever publishes are waiting, then
/// announces what the flush covered (the atomic first, so a write polled
/// after the announcement never waits).
async fn flush_loop(
    client: async_nats::Client,
    shared: Arc<FlushState>,
    flushed_tx: watch::Sender<u64>,
) {
    let mut done = 0;
    loop {
        let target = shared.published.load(AtomicOrdering::Acquire);
        if target == done {
            // `notify_one` keeps a permit when nobody waits, so a
            // publish between the load and here is not missed.
            shared.wake.notified().await;
            continue;
        }
        match client.flush().await {
            Ok(()) => {
                done = target;
                shared.flushed.store(done, AtomicOrdering::Release);
                let _ = flushed_tx.send(done);
            }
            Err(e) => {
                spate_connector::internal_events::ProduceError {
                    connector: "nats",
                    name: "flush",
                    error: &e,
                    context: "flush failed; trying again",
                }
                .emit();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl Drop for Flushes {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publishes records to one core NATS subject.
pub struct NatsSink {
    name: String,
    subject: async_nats::Subject,
    client: async_nats::Client,
    flushes: Flushes,
}

impl NatsSink {
    async fn publish(&self, record: Record) -> Result<(), SinkError> {
        let headers = nats_headers(record.key.as_ref(), &record.headers).map_err(|message| {
            SinkError::Rejected {
                sink_name: self.name.clone(),
                message,
            }
        })?;
        match headers {
            Some(headers) => {
                self.client
                    .publish_with_headers(self.subject.clone(), headers, record.payload)
                    .await
            }
            None => {
                self.client
                    .publish(self.subject.clone(), record.payload)
                    .await
            }
        }
        .map_err(|e| match e.kind() {
            async_nats::client::PublishErrorKind::MaxPayloadExceeded => SinkError::Rejected {
                sink_name: self.name.clone(),
                message: format!(
                    "{e}; raise the NATS server's `max_payload` (server configuration), or make the message smaller"
                ),
            },
            _ => SinkError::Unavailable {
                sink_name: self.name.clone(),
                message: format!("publish failed: {e}"),
            },
        })
        .inspect_err(|error| {
            spate_connector::internal_events::ProduceError {
                connector: "nats",
                name: &self.name,
                error,
                context: "NATS publish failed",
            }
            .emit()
        })
    }
}

#[async_trait]
impl Sink for NatsSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&self, record: Record) -> Result<(), SinkError> {
        self.publish(record).await?;
        self.flushes.covered().await
    }

    /// Publishes now (the client keeps publish order); resolves once a
    /// flush covered the message.
    async fn send(&self, record: Record) -> Result<PendingWrite, SinkError> {
        self.publish(record).await?;
        Ok(self.flushes.covered())
    }

    async fn flush(&self) -> Result<(), SinkError> {
        self.client
            .flush()
            .await
            .map_err(|e| SinkError::Unavailable {
                sink_name: self.name.clone(),
                message: format!("flush failed: {e}"),
            })
    }
}
