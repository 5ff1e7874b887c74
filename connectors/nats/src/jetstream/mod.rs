//! The `jetstream` connector: a durable pull consumer as a source, and
//! publishes that wait for the stream's acknowledgement as a sink.
//!
//! # Source
//!
//! One durable pull consumer with explicit acks, read as one partition
//! (`0`) whose offsets are the **stream sequences** of the messages.
//! Capabilities `{exactly_once: true, durable_positions: true}`: the
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
//! | `url`, `user`, `password`, `token`, `creds_file`, `connect_timeout` | | see [`connection`](crate::connection) |

pub mod exactly_once;
mod sink;
mod source;

use std::time::Duration;

use spate_connector::{Capabilities, ConfigReader, ConnectorFactory, SinkBuilder, SourceBuilder};

use crate::connection::ConnectSettings;
use crate::{error_mark, has_new_errors};

pub use exactly_once::JetStreamTransaction;
pub use sink::JetStreamSink;
pub use source::JetStreamSource;

use sink::JetStreamSinkBuilder;
use source::JetStreamSourceBuilder;

/// What JetStream sources promise: durable positions (the consumer's acks),
/// and exactly-once into JetStream sinks (see [`exactly_once`]).
pub const SOURCE_CAPABILITIES: Capabilities = Capabilities {
    exactly_once: true,
    durable_positions: true,
};

/// What JetStream sinks promise: acknowledged writes, and exactly-once
/// behind a JetStream source (publishes de-duplicated by `Nats-Msg-Id`).
pub const SINK_CAPABILITIES: Capabilities = Capabilities {
    exactly_once: true,
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
