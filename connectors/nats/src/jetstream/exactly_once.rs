//! Exactly-once JetStream → JetStream, by idempotent publishes: every
//! output is published with `Nats-Msg-Id` set to the engine's stable record
//! id (`stream/partition/sequence/n`, see
//! [`spate_connector::RECORD_ID_HEADER`]), and the input
//! is acknowledged — with a double ack that waits for the server's
//! confirmation — only after every output's publish ack. Both happen in the
//! session's commit, which the engine runs off its scheduler: the publish
//! acks are awaited, then every input message the committed positions cover
//! is double-acked at once (see [`AckLedger`]), and the commit succeeds
//! only once the server confirmed them all; the source's own `commit` that
//! follows then only forgets them.
//!
//! JetStream has no transactions, so this is not all-or-nothing: after a
//! crash between the publish acks and the input acks, the input is
//! delivered again, the handler runs again, and the stream drops the
//! republished outputs as duplicates of ids it has seen. That holds for as
//! long as the output stream remembers ids: its `duplicate_window` must
//! exceed the longest time between a first publish and a republish: the
//! input's *redelivery time*, the larger of its `ack_wait` (the server
//! redelivers an unacked message after it) and, with subject partitions,
//! its `lease_ttl` (a dead holder's partition is taken over, from its ack
//! floor, after it), plus the time a restart takes. The session checks,
//! before the first publish to a subject, that the capturing stream's window
//! is at least twice the redelivery time, and stops with the fix otherwise.

use std::collections::HashSet;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::{PublishAckFuture, PublishError};
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self as js};
use async_trait::async_trait;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use spate_connector::{
    CommitPosition, Record, StoredPosition, TransactionError, TransactionSession,
    TransactionalTarget, RECORD_ID_HEADER,
};

use super::ack_ledger::AckLedger;
use crate::nats_headers;

/// Unacknowledged publishes a transaction holds before a write waits for
/// the oldest acks. async-nats lets a context have 5,000 publishes awaiting
/// their ack and blocks the next publish until one is awaited; a
/// transaction holding every ack until its commit would wait on itself past
/// that, so acks that arrived are taken in as writes go (a failed one fails
/// the commit), and a write waits only while this many are outstanding.
const SETTLE_AT: usize = 4096;

/// A publish ack on its way.
type AckFuture = <PublishAckFuture as IntoFuture>::IntoFuture;

/// The header JetStream de-duplicates publishes by.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// A JetStream source's exactly-once session (see the module docs).
pub struct JetStreamTransaction {
    name: String,
    cluster: String,
    client: async_nats::Client,
    context: js::Context,
    /// The source's handed-out input messages, double-acked at commit.
    inputs: Arc<AckLedger>,
    /// The input's redelivery time (see the module docs).
    redelivery_after: Duration,
    /// Publish acks not yet taken in, polled as they arrive.
    pending: FuturesUnordered<AckFuture>,
    /// The first publish of the open transaction that was not acknowledged
    /// (found while settling acks early); the commit fails with it.
    failed: Option<String>,
    /// Subjects whose stream's duplicate window was checked.
    checked: HashSet<String>,
}

impl JetStreamTransaction {
    /// Waits for every pending publish ack, remembering the first failure.
    async fn settle(&mut self) {
        self.settle_to(0).await;
    }

    /// Takes in the publish acks that arrived, then waits for more until
    /// fewer than `most` are outstanding, remembering the first failure.
    async fn settle_to(&mut self, most: usize) {
        while let Some(Some(ack)) = self.pending.next().now_or_never() {
            self.take_in(ack);
        }
        while self.pending.len() > most {
            match self.pending.next().await {
                Some(ack) => self.take_in(ack),
                None => break,
            }
        }
    }

    fn take_in(&mut self, ack: Result<PublishAck, PublishError>) {
        if let Err(e) = ack {
            self.failed.get_or_insert_with(|| e.to_string());
        }
    }

    /// A session publishing through `client` to streams on `cluster` (the
    /// server URL as configured), for an input that delivers an unfinished
    /// message again at most `redelivery_after` after it was first
    /// delivered (the larger of `ack_wait` and `lease_ttl`), and whose
    /// handed-out messages are filed in `inputs`.
    pub fn new(
        name: String,
        cluster: String,
        client: async_nats::Client,
        redelivery_after: Duration,
        inputs: Arc<AckLedger>,
    ) -> Self {
        Self {
            name,
            cluster,
            context: js::new(client.clone()),
            client,
            inputs,
            redelivery_after,
            pending: FuturesUnordered::new(),
            failed: None,
            checked: HashSet::new(),
        }
    }

    fn abortable(&self, message: String) -> TransactionError {
        TransactionError::Abortable {
            session: self.name.clone(),
            message,
        }
    }

    fn fatal(&self, message: String) -> TransactionError {
        TransactionError::Fatal {
            session: self.name.clone(),
            message,
        }
    }

    /// Checks once per subject that its stream remembers ids long enough.
    async fn check_window(&mut self, subject: &str) -> Result<(), TransactionError> {
        if self.checked.contains(subject) {
            return Ok(());
        }
        let (stream_name, window) = duplicate_window(&self.context, subject)
            .await
            .map_err(|message| self.abortable(message))?;
        if let Some(problem) = window_problem(&stream_name, subject, window, self.redelivery_after)
        {
            return Err(self.fatal(problem));
        }
        self.checked.insert(subject.to_owned());
        Ok(())
    }
}

/// The stream capturing `subject`, and how long it de-duplicates message
/// ids; what could not be read, in words.
pub(crate) async fn duplicate_window(
    context: &js::Context,
    subject: &str,
) -> Result<(String, Duration), String> {
    let stream_name = context
        .stream_by_subject(subject)
        .await
        .map_err(|e| format!("cannot find the stream capturing `{subject}`: {e}"))?;
    let mut stream = context
        .get_stream(&stream_name)
        .await
        .map_err(|e| format!("cannot read stream `{stream_name}`: {e}"))?;
    let window = stream
        .info()
        .await
        .map_err(|e| format!("cannot read stream `{stream_name}`: {e}"))?
        .config
        .duplicate_window;
    Ok((stream_name, window))
}

/// Whether a JetStream input on `cluster` can make `target` exactly-once:
/// only JetStream outputs on the same server (`url`).
pub(crate) fn accepts(cluster: &str, target: &TransactionalTarget) -> Result<(), String> {
    if target.kind != "jetstream" {
        return Err(format!(
            "a JetStream input can only make `jetstream` outputs exactly-once, not `{}`",
            target.kind
        ));
    }
    if target.cluster != cluster {
        return Err(format!(
            "the output is on `{}` but the input on `{cluster}`; both must use the same `url`",
            target.cluster
        ));
    }
    Ok(())
}

/// Why a stream that de-duplicates for `window` cannot take the outputs
/// to `subject` of an input that redelivers after `redelivery_after`:
/// exactly-once needs the window to be at least twice that. `None` when it
/// is.
pub(crate) fn window_problem(
    stream_name: &str,
    subject: &str,
    window: Duration,
    redelivery_after: Duration,
) -> Option<String> {
    let needed = redelivery_after * 2;
    (window < needed).then(|| format!(
        "stream `{stream_name}` (capturing `{subject}`) de-duplicates for {window:?}, but exactly-once needs at least {needed:?} (twice the input's redelivery time of {redelivery_after:?}, the larger of its ack_wait and lease_ttl): an output published again after a redelivery could be stored twice; raise its duplicate window, e.g. `nats stream edit {stream_name} --dupe-window {}s`",
        needed.as_secs().max(1)
    ))
}

#[async_trait]
impl TransactionSession for JetStreamTransaction {
    fn name(&self) -> &str {
        &self.name
    }

    fn accepts(&self, target: &TransactionalTarget) -> Result<(), String> {
        accepts(&self.cluster, target)
    }

    async fn write(
        &mut self,
        target: &TransactionalTarget,
        record: Record,
    ) -> Result<(), TransactionError> {
        self.check_window(&target.destination).await?;
        let Some(id) = record.headers.get_str(RECORD_ID_HEADER).map(str::to_owned) else {
            return Err(self.fatal(format!(
                "record for `{}` has no `{RECORD_ID_HEADER}` header to de-duplicate by",
                target.destination
            )));
        };
        let mut headers = nats_headers(record.key.as_ref(), &record.headers)
            .map_err(|message| {
                self.fatal(format!(
                    "cannot publish to `{}`: {message}",
                    target.destination
                ))
            })?
            .unwrap_or_default();
        headers.insert(MSG_ID_HEADER, id.as_str());
        self.settle_to(SETTLE_AT - 1).await;
        let ack = self
            .context
            .publish_with_headers(target.destination.clone(), headers, record.payload)
            .await
            .map_err(|e| {
                self.abortable(format!("publish to `{}` failed: {e}", target.destination))
            })?;
        self.pending.push(ack.into_future());
        Ok(())
    }

    async fn commit(
        &mut self,
        positions: &[CommitPosition],
        _stored: &[StoredPosition],
    ) -> Result<(), TransactionError> {
        // The outputs first, then the inputs they came from: this runs off
        // the engine's scheduler, and the source's `commit`, which the
        // engine calls once this returns `Ok`, only forgets the acked.
        let timer = spate_connector::internal_events::CommitTimer::start("jetstream");
        self.settle().await;
        let outcome = match self.failed.take() {
            Some(first) => Err(self.abortable(format!(
                "a publish of this transaction was not acknowledged: {first}"
            ))),
            None => self
                .inputs
                .double_ack(&self.client, positions)
                .await
                .map_err(|message| self.abortable(message)),
        };
        timer.finish(&self.name, &outcome, "JetStream exactly-once commit failed");
        outcome
    }

    async fn abort(&mut self) -> Result<(), TransactionError> {
        // Published records cannot be taken back; the engine publishes them
        // again with the same ids, which the stream drops as duplicates.
        self.pending = FuturesUnordered::new();
        self.failed = None;
        Ok(())
    }
}
