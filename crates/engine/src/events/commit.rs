//! Commit events: positions committed to a source or not, and the
//! exactly-once session's transactions committed, failed and replayed.

use std::fmt::Display;
use std::time::Duration;

use tracing::{debug, error, info, warn};

use super::{ConnectorScope, OutputsAcknowledged, Scope};

/// A commit landed: positions committed to a source, or a transaction.
///
/// Counts [`COMMITS`](crate::metrics::COMMITS) and records its latency in
/// [`COMMIT_SECONDS`](crate::metrics::COMMIT_SECONDS). No log line (the
/// connector's own commit event logs it at debug).
pub struct CommitSucceeded {
    /// From the start of the commit to its acknowledgement.
    pub elapsed: Duration,
}

impl CommitSucceeded {
    /// Counts the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        scope.metrics.commits.increment(1);
        scope
            .metrics
            .commit_seconds
            .record(self.elapsed.as_secs_f64());
    }
}

/// Committing positions to a source failed; they are committed with the
/// next commit.
///
/// Counts [`COMMIT_FAILURES`](crate::metrics::COMMIT_FAILURES) and logs a
/// warning `"commit failed; will try again"` with `function`, `source` and
/// `error`.
pub struct CommitFailed<'a>(
    /// What failed.
    pub &'a dyn Display,
);

impl CommitFailed<'_> {
    /// Counts and logs the event.
    #[inline]
    pub fn emit(self, source: ConnectorScope<'_>) {
        commit_failed(source, self.0, "commit failed; will try again");
    }
}

/// Counts a failed commit and warns `message` with `function`, `source` and
/// `error`: [`CommitFailed`] and [`PositionsNotStored`] differ only in
/// their message.
#[inline]
fn commit_failed(source: ConnectorScope<'_>, error: &dyn Display, message: &str) {
    source.function.metrics.commit_failures.increment(1);
    warn!(function = %source.function.name, source = source.name, %error, "{message}");
}

/// An exactly-once transaction committed, with `outputs` output records
/// (its dead letters are each an
/// [`EventDeadLettered`](super::EventDeadLettered)).
///
/// A [`CommitSucceeded`] (commits and latency) and an
/// [`OutputsAcknowledged`] of `outputs`. No log line.
pub struct TransactionCommitted {
    /// From the start of the commit to its acknowledgement.
    pub elapsed: Duration,
    /// Output records it committed.
    pub outputs: u64,
}

impl TransactionCommitted {
    /// Counts the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        CommitSucceeded {
            elapsed: self.elapsed,
        }
        .emit(scope);
        OutputsAcknowledged {
            count: self.outputs,
        }
        .emit(scope);
    }
}

/// A transaction committed its records, but the source could not store the
/// positions on its side; they are stored with the next transaction.
///
/// Counts [`COMMIT_FAILURES`](crate::metrics::COMMIT_FAILURES) and logs a
/// warning `"records committed but the source could not store its
/// positions; trying again with the next transaction"` with `function`,
/// `source` and `error`.
pub struct PositionsNotStored<'a>(
    /// What failed.
    pub &'a dyn Display,
);

impl PositionsNotStored<'_> {
    /// Counts and logs the event.
    #[inline]
    pub fn emit(self, source: ConnectorScope<'_>) {
        let message = "records committed but the source could not store its positions; trying again with the next transaction";
        commit_failed(source, self.0, message);
    }
}

/// A transaction failed `during` a write, commit or abort. Abortable: it is
/// aborted and its records written again into the next one. Fatal (the
/// session is lost, e.g. fenced): the function stops without committing.
///
/// Counts [`COMMIT_FAILURES`](crate::metrics::COMMIT_FAILURES) and logs,
/// with `function`, `session`, `error` and `during`, a warning
/// `"transaction failed; aborting it and writing its records again"` or an
/// error `"exactly-once session lost; stopping the function without
/// committing"`.
pub struct TransactionFailed<'a> {
    /// What failed.
    pub error: &'a dyn Display,
    /// `"write"`, `"commit"` or `"abort"`.
    pub during: &'a str,
    /// The session is lost.
    pub fatal: bool,
}

impl TransactionFailed<'_> {
    /// Counts and logs the event.
    #[inline]
    pub fn emit(self, session: ConnectorScope<'_>) {
        session.function.metrics.commit_failures.increment(1);
        let (function, session, error, during) = (
            &session.function.name,
            session.name,
            self.error,
            self.during,
        );
        if self.fatal {
            error!(function = %function, session = %session, %error, during, "exactly-once session lost; stopping the function without committing");
        } else {
            warn!(function = %function, session = %session, %error, during, "transaction failed; aborting it and writing its records again");
        }
    }
}

/// The last transaction at shutdown did not commit after its tries; its
/// events are handled again after a restart.
///
/// Logs a warning `"the last transaction did not commit; its events will be
/// handled again after a restart"` with `function`.
pub struct FinalTransactionNotCommitted;

impl FinalTransactionNotCommitted {
    /// Logs the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        warn!(function = %scope.name, "the last transaction did not commit; its events will be handled again after a restart");
    }
}

/// Reading the stored positions (and handler state) of newly assigned
/// partitions failed transiently; it is read again after `retry_in`.
///
/// Logs a warning `"reading stored positions for assigned partitions
/// failed"` with `function`, `error` and `retry_in`.
pub struct StoredPositionsReadFailed<'a> {
    /// What failed.
    pub error: &'a dyn Display,
    /// The backoff before the next read.
    pub retry_in: Duration,
}

impl StoredPositionsReadFailed<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        warn!(function = %scope.name, error = %self.error, retry_in = ?self.retry_in, "reading stored positions for assigned partitions failed");
    }
}

/// A stateful handler was given the committed state of an assigned
/// partition.
///
/// Logs `"handler state restored"` at debug with `function`, `partition`
/// (its stable name) and `keys`.
pub struct HandlerStateRestored<'a> {
    /// The partition's stable name.
    pub partition: &'a str,
    /// Keys restored.
    pub keys: usize,
}

impl HandlerStateRestored<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self, scope: &Scope) {
        debug!(function = %scope.name, partition = %self.partition, keys = self.keys, "handler state restored");
    }
}

/// The exactly-once session opened; `resumed_from` positions when it
/// stores the source's positions itself (a database's session).
///
/// Logs, with `session`, `"resuming from the positions stored with the
/// records"` at info (adding `positions`) when it resumes, then
/// `"exactly-once session open"` at info.
pub struct SessionOpened<'a> {
    /// The session's name.
    pub session: &'a str,
    /// Positions the source resumes from, when the session stores them.
    pub resumed_from: Option<usize>,
}

impl SessionOpened<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self) {
        if let Some(positions) = self.resumed_from {
            info!(
                session = self.session,
                positions, "resuming from the positions stored with the records"
            );
        }
        info!(session = self.session, "exactly-once session open");
    }
}

/// An aborted transaction's records are written again into a fresh one.
///
/// Logs `"writing the aborted transaction's records again"` at debug with
/// `session` and `records`.
pub struct TransactionReplayed<'a> {
    /// The session's name.
    pub session: &'a str,
    /// Records written again.
    pub records: usize,
}

impl TransactionReplayed<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self) {
        debug!(session = %self.session, records = self.records, "writing the aborted transaction's records again");
    }
}

/// The task committing in the background failed (panicked): the session is
/// lost with it.
///
/// Logs an error `"the commit task failed"` with `session` and `error`.
/// (The lost session then counts as a fatal [`TransactionFailed`].)
pub struct CommitTaskFailed<'a> {
    /// The session's name.
    pub session: &'a str,
    /// The task's failure.
    pub error: &'a dyn Display,
}

impl CommitTaskFailed<'_> {
    /// Logs the event.
    #[inline]
    pub fn emit(self) {
        error!(session = self.session, error = %self.error, "the commit task failed");
    }
}
