//! Opening a JetStream source: connecting, binding the stream (or creating
//! it when `subjects` are set), and binding each partition's durable pull
//! consumer — the stream's single shared durable, or with `partitions: N`
//! the lease coordinator that claims partitions and binds each claimed
//! durable reset to its ack floor (see [`takeover`](super::takeover)).
//! Errors are fatal only where retrying cannot help (no such stream, a
//! consumer of that name that cannot be updated).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, Consumer};
use async_nats::jetstream::{self as js, stream};
use spate_connector::{PartitionId, Source, SourceError};
use tokio::sync::mpsc;

use super::partition::{KeyRule, PartitionReader};
use super::takeover::{self, PartitionBinder};
use super::{JetStreamSource, JetStreamSourceBuilder, LeaseLink, Partitioning};
use crate::jetstream::leases::{self, BindConsumer, Coordinator};

impl JetStreamSourceBuilder {
    /// How long an unfinished message may stay away before it is handed
    /// out again: `ack_wait`, or `lease_ttl` if larger with partitions.
    pub(super) fn redelivery_after(&self) -> Duration {
        match &self.partitioning {
            Partitioning::Subjects { lease_ttl, .. } => self.ack_wait.max(*lease_ttl),
            Partitioning::Single { .. } => self.ack_wait,
        }
    }

    async fn bind_stream(
        &self,
        context: &js::Context,
        unavailable: &impl Fn(String) -> SourceError,
        fatal: &impl Fn(String) -> SourceError,
    ) -> Result<stream::Stream, SourceError> {
        let url = self.connect.display_url();
        if self.subjects.is_empty() {
            return context.get_stream(&self.stream).await.map_err(|e| {
                let message = format!("cannot bind stream `{}` at `{url}`: {e}", self.stream);
                match e.kind() {
                    js::context::GetStreamErrorKind::JetStream(inner) if inner.code() == 404 => {
                        fatal(format!(
                            "{message}; create it, or set `subjects` so spate creates it"
                        ))
                    }
                    _ => unavailable(message),
                }
            });
        }
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
            })
    }

    /// The consumer configuration of partition `partition`.
    fn consumer_config(&self, partition: PartitionId) -> pull::Config {
        let (durable, filter) = match &self.partitioning {
            Partitioning::Single { filter_subject } => (
                self.durable.clone(),
                filter_subject.clone().unwrap_or_default(),
            ),
            Partitioning::Subjects { subject, .. } => (
                format!("{}-{partition}", self.durable),
                subject.replace("{partition}", &partition.to_string()),
            ),
        };
        pull::Config {
            durable_name: Some(durable),
            filter_subject: filter,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_ack_pending: self.max_ack_pending,
            ..Default::default()
        }
    }

    /// Connects, binds the stream and the consumers, and with partitions
    /// starts the lease coordinator.
    pub(super) async fn open(&self) -> Result<Box<dyn Source>, SourceError> {
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
        let stream = self.bind_stream(&context, &unavailable, &fatal).await?;
        let (feed_tx, feed) = mpsc::unbounded_channel();
        let mut readers = BTreeMap::new();
        let mut leases = None;
        let mut binder = None;
        match &self.partitioning {
            Partitioning::Single { .. } => {
                let consumer = bind_consumer(&stream, &self.stream, self.consumer_config(0))
                    .await
                    .map_err(|(is_fatal, message)| {
                        if is_fatal {
                            fatal(message)
                        } else {
                            unavailable(message)
                        }
                    })?;
                readers.insert(
                    0,
                    PartitionReader::start(0, consumer, self.fetch_wait, feed_tx.clone(), None),
                );
            }
            Partitioning::Subjects {
                count, lease_ttl, ..
            } => {
                let store = leases::open_bucket(&context, &self.durable, *lease_ttl)
                    .await
                    .map_err(unavailable)?;
                let floors = leases::open_kv(
                    &context,
                    &takeover::floors_bucket(&self.durable),
                    format!(
                        "spate: the ack floors of durable `{}`'s partitions",
                        self.durable
                    ),
                    Duration::ZERO,
                )
                .await
                .map_err(unavailable)?;
                let partition_binder = Arc::new(PartitionBinder {
                    stream: stream.clone(),
                    stream_name: self.stream.clone(),
                    configs: (0..*count).map(|p| self.consumer_config(p)).collect(),
                    floors,
                });
                let shared = partition_binder.clone();
                let bind: BindConsumer = Box::new(move |partition| {
                    let binder = shared.clone();
                    Box::pin(async move { binder.bind_from_ack_floor(partition).await })
                });
                binder = Some(partition_binder);
                let (events_tx, events) = mpsc::unbounded_channel();
                let (commands, commands_rx) = mpsc::unbounded_channel();
                let coordinator = Coordinator::new(store, *count, *lease_ttl, bind, events_tx);
                let task = tokio::spawn(coordinator.run(commands_rx));
                leases = Some(LeaseLink {
                    events,
                    commands,
                    task,
                });
            }
        }
        let progress_every = self.ack_wait / 2;
        let mut progress_tick = tokio::time::interval(progress_every / 2);
        progress_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Box::new(JetStreamSource {
            name,
            stream: Arc::from(self.stream.as_str()),
            client,
            feed_tx,
            feed,
            readers,
            leases,
            binder,
            keys: KeyRule {
                key_token: self.key_token,
            },
            progress_every,
            progress_tick,
            fetch_wait: self.fetch_wait,
            cluster: self.connect.display_url(),
            redelivery_after: self.redelivery_after(),
            exactly_once: false,
            ledger: None,
        }))
    }
}

/// Creates or binds a durable consumer, with the error a user can act on.
async fn bind_consumer(
    stream: &stream::Stream,
    stream_name: &str,
    config: pull::Config,
) -> Result<Consumer<pull::Config>, (bool, String)> {
    let durable = config.durable_name.clone().unwrap_or_default();
    stream.create_consumer(config).await.map_err(|e| {
        let message =
            format!("cannot create or bind durable consumer `{durable}` on stream `{stream_name}`: {e}");
        match e.kind() {
            js::stream::ConsumerErrorKind::JetStream(_) => (
                true,
                format!("{message}; an existing consumer of that name must be a pull consumer whose settings can be updated"),
            ),
            _ => (false, message),
        }
    })
}
