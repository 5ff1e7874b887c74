//! The `jetstream` connector: a durable pull consumer as a source, and
//! publishes that wait for the stream's acknowledgement as a sink.
//!
//! # Source
//!
//! Durable pull consumers with explicit acks; each is one partition whose
//! offsets are the **stream sequences** of its messages. Capabilities
//! `{exactly_once: true, durable_positions: true}`: the consumers' ack state
//! on the server is the durable position.
//!
//! * **One partition** (the default): the durable `durable`, read by every
//!   process of the pipeline as a work queue. The server spreads messages
//!   over the processes, so `ordering` holds within each process only.
//! * **`partitions: N` subject partitions**: the stream's subjects carry a
//!   partition number as a token, put there by the server's subject mapping
//!   (for example `mappings { "tele.*": "tele.{{partition(4,1)}}.{{wildcard(1)}}" }`,
//!   a deterministic hash of the device token). Partition `p` is read through
//!   the durable `<durable>-<p>`, filtered on `partition_subject` with
//!   `{partition}` replaced by `p`. Each partition is leased to one process
//!   at a time and moves only after its owner drained and committed it (see
//!   [`leases`]), so `ordering: partition` and `key` hold across processes,
//!   and the processes split the partitions evenly. Every claim (and every
//!   restart of a partition) resets its durable to the ack floor, so a
//!   holder that died leaves nothing to be redelivered behind newer
//!   messages: its unfinished suffix comes first, in order (the argument is
//!   in the source's `takeover` module; the floor is recorded in the
//!   bucket `spate-floors-<durable>` before each reset). A holder reads a
//!   partition only while its lease surely lasts, so a stalled holder
//!   stops before a successor can start.
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `stream` | required | the stream to consume |
//! | `subjects` | none | subjects of the stream; when given, the stream is created with them if it does not exist (an existing stream is bound as it is). Without it the stream must exist |
//! | `durable` | required | durable consumer name, shared by every process of the pipeline; created if missing, its settings updated if present |
//! | `filter_subject` | none | consume only the stream's messages on this subject (wildcards allowed); not with `partitions` |
//! | `partitions` | none (one partition) | number of subject partitions |
//! | `partition_subject` | required with `partitions` | each partition's subject filter, `{partition}` standing for its number, e.g. `tele.{partition}.*` |
//! | `lease_ttl` | `10s` | with `partitions`: how long a dead process keeps its partitions' leases |
//! | `key_token` | none | 1-based subject token used as the event key (e.g. `3` keys `tele.0.device-7` by `device-7`); else the `spate-key` header |
//! | `max_ack_pending` | `1000` | most messages delivered but not yet acked, over all processes of the durable |
//! | `ack_wait` | `30s` | how long the server waits for an ack before delivering again |
//! | `fetch_wait` | `5s` | how long one pull request waits on the server for messages |
//! | `url`, `user`, `password`, `token`, `nkey_seed`, `creds_file`, `tls_ca_file`, `tls_cert_file`, `tls_key_file`, `tls_required`, `connect_timeout` | | see [`connection`](crate::connection) |
//!
//! How the delivery rules of the contract are kept:
//!
//! * **Stage on read, apply on commit.** A delivered message is handed to the
//!   engine and its ack handle held (ordered by sequence). Only
//!   [`Source::commit`] acks, and it acks exactly the held messages below the
//!   committed position (`AckKind::Ack`, in sequence order, then a flush).
//!   Under `exactly_once` the session's commit double-acks them instead,
//!   after its publish acks and off the engine's scheduler (see
//!   [`ack_ledger`]), and `Source::commit` only forgets them.
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
//!   [`SourceMessage::Assigned`] again and starts the partition afresh.
//!   With subject partitions its durable is reset to the ack floor, so
//!   everything unfinished comes again in order. On the shared durable the
//!   waiting messages go first and held messages the engine did not finish
//!   are `Nak`ed, so the server delivers them again (order is not promised
//!   there). This costs a drain, and may process a message twice
//!   (at-least-once), but never skips one.
//!
//! * **Dead letters are terminated.** A message the engine dead-lettered
//!   (see [`Source::dead_lettered`]) is acknowledged with `AckKind::Term` at
//!   its commit, so the server never delivers it again and raises its
//!   `MSG_TERMINATED` advisory for monitoring.
//!
//! [`Source::close`] `Nak`s every message received but not acked, so
//! another process on the durable gets them after `fetch_wait` (the longest
//! a pull request of the closed session can stay open); a process that dies
//! without closing leaves them to be redelivered after `ack_wait`.
//!
//! Consumer lag ([`Source::lag`]) is each partition's pending count on the
//! server as of its last message received. The engine exports the age of
//! each partition's oldest unfinished event beside it (from the messages'
//! publish times).
//!
//! # Sink
//!
//! Publishes each record to a fixed subject and resolves once the stream's
//! publish acknowledgement arrives: that ack is what makes an output
//! "acknowledged". A subject no stream captures fails with a hint.
//! Capabilities `{exactly_once: true, durable_positions: false}`: behind a
//! JetStream input with `delivery: exactly_once`, outputs are published with
//! `Nats-Msg-Id` and the input is double-acked after their publish acks (see
//! [`exactly_once`] for how long that protects, and the duplicate-window
//! check).
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `subject` | required | subject to publish to; a stream must capture it |
//! | `ack_timeout` | `5s` | how long to wait for the publish ack before the write fails (retryably) |
//! | `url`, `user`, `password`, `token`, `nkey_seed`, `creds_file`, `tls_ca_file`, `tls_cert_file`, `tls_key_file`, `tls_required`, `connect_timeout` | | see [`connection`](crate::connection) |
//!
//! [`Source::close`]: spate_connector::Source::close
//! [`Source::commit`]: spate_connector::Source::commit
//! [`Source::dead_lettered`]: spate_connector::Source::dead_lettered
//! [`Source::lag`]: spate_connector::Source::lag
//! [`Source::release`]: spate_connector::Source::release
//! [`SourceMessage::Assigned`]: spate_connector::SourceMessage::Assigned
//! [`SourceMessage::Revoked`]: spate_connector::SourceMessage::Revoked

pub mod ack_ledger;
pub mod exactly_once;
pub mod leases;
mod sink;
mod source;

use std::time::Duration;

use spate_connector::factory::ConnectorFamily;
use spate_connector::{Capabilities, ConfigReader, SinkBuilder, SourceBuilder};

use crate::connection::ConnectSettings;
use crate::{error_mark, has_new_errors, read_sink};

pub use exactly_once::JetStreamTransaction;
pub use sink::JetStreamSink;
pub use source::JetStreamSource;

use sink::JetStreamSinkBuilder;
use source::{JetStreamSourceBuilder, Partitioning};

/// What JetStream sources promise: durable positions (the consumer's acks),
/// and exactly-once into JetStream sinks (see [`exactly_once`]).
pub const SOURCE_CAPABILITIES: Capabilities = Capabilities::NONE
    .with_exactly_once()
    .with_durable_positions();

/// What JetStream sinks promise: acknowledged writes, and exactly-once
/// behind a JetStream source (publishes de-duplicated by `Nats-Msg-Id`).
pub const SINK_CAPABILITIES: Capabilities = Capabilities::NONE.with_exactly_once();

/// Default `max_ack_pending`.
pub const DEFAULT_MAX_ACK_PENDING: u64 = 1000;

/// The largest `max_ack_pending`.
pub const MAX_ACK_PENDING: u64 = 1_000_000;
/// Default `ack_wait`.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// Default `fetch_wait`.
pub const DEFAULT_FETCH_WAIT: Duration = Duration::from_secs(5);
/// Default `lease_ttl`.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// Most `partitions` a source may have.
pub const MAX_PARTITIONS: u64 = 4096;
/// Default sink `ack_timeout`.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// The `jetstream` connector family.
#[derive(Debug, Clone, Copy, Default)]
pub struct JetStreamFactory;

impl ConnectorFamily for JetStreamFactory {
    const KIND: &'static str = "jetstream";
    const SOURCE: Option<Capabilities> = Some(SOURCE_CAPABILITIES);
    const SINK: Option<Capabilities> = Some(SINK_CAPABILITIES);

    fn read_source(&self, config: &mut ConfigReader<'_>) -> Option<Box<dyn SourceBuilder>> {
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
        let partitioning = read_partitioning(config, filter_subject);
        let key_token = config.u64("key_token");
        if key_token == Some(0) {
            config.error_at_key(
                "key_token",
                "`key_token` counts subject tokens from 1",
                Some("e.g. `key_token: 2` keys `telemetry.device-7.temp` by `device-7`".to_owned()),
            );
        }
        let max_ack_pending = config
            .u64_in("max_ack_pending", 1..=MAX_ACK_PENDING)
            .unwrap_or(DEFAULT_MAX_ACK_PENDING);
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
            partitioning: partitioning?,
            key_token: key_token.and_then(|t| usize::try_from(t).ok()),
            max_ack_pending: i64::try_from(max_ack_pending).unwrap_or(i64::MAX),
            ack_wait,
            fetch_wait,
            connect,
        }))
    }

    fn read_sink(&self, config: &mut ConfigReader<'_>) -> Option<Box<dyn SinkBuilder>> {
        let (subject, ack_timeout, connect) = read_sink(
            config,
            "the subject to publish to; a stream must capture it",
            |config| {
                config
                    .duration("ack_timeout")
                    .unwrap_or(DEFAULT_ACK_TIMEOUT)
            },
        )?;
        Some(Box::new(JetStreamSinkBuilder {
            subject,
            ack_timeout,
            connect,
        }))
    }
}

/// Reads `partitions`, `partition_subject` and `lease_ttl` (all or none),
/// which exclude `filter_subject`.
fn read_partitioning(
    config: &mut ConfigReader<'_>,
    filter_subject: Option<String>,
) -> Option<Partitioning> {
    let count = config.u64("partitions");
    let subject = config.string("partition_subject");
    let lease_ttl = config.duration("lease_ttl");
    let Some(count) = count else {
        for key in ["partition_subject", "lease_ttl"] {
            if config.has(key) {
                config.error_at_key(
                    key,
                    format!("`{key}` needs `partitions`"),
                    Some(
                        "set `partitions: N` to read N subject partitions, or remove this key"
                            .to_owned(),
                    ),
                );
            }
        }
        return Some(Partitioning::Single { filter_subject });
    };
    if count == 0 || count > MAX_PARTITIONS {
        config.error_at_key(
            "partitions",
            format!("`partitions` must be between 1 and {MAX_PARTITIONS}, found {count}"),
            None,
        );
    }
    if filter_subject.is_some() {
        config.error_at_key(
            "filter_subject",
            "`filter_subject` and `partitions` exclude each other",
            Some(
                "with `partitions`, `partition_subject` filters each partition's consumer"
                    .to_owned(),
            ),
        );
    }
    let hint = "e.g. `partition_subject: telemetry.{partition}.>`, where the server's subject mapping puts the partition number (`{{partition(N,1)}}`) as a token".to_owned();
    let Some(subject) = subject else {
        config.error_at_key(
            "partitions",
            "`partitions` needs `partition_subject`: the subject filter of each partition, with `{partition}` where its number goes",
            Some(hint),
        );
        return None;
    };
    if !subject.contains("{partition}") {
        config.error_at_key(
            "partition_subject",
            format!("`partition_subject` `{subject}` has no `{{partition}}` placeholder"),
            Some(hint),
        );
    }
    let lease_ttl = lease_ttl.unwrap_or(DEFAULT_LEASE_TTL);
    if lease_ttl < Duration::from_secs(1) {
        config.error_at_key(
            "lease_ttl",
            "`lease_ttl` must be at least 1s",
            Some("leases are refreshed every quarter of it".to_owned()),
        );
    }
    Some(Partitioning::Subjects {
        count: u32::try_from(count).unwrap_or(u32::MAX),
        subject,
        lease_ttl,
    })
}
