//! The exactly-once half of the contract: a transaction session that makes
//! a function's output records and its source positions durable together,
//! or not at all.
//!
//! # How the engine drives a session
//!
//! With `delivery: exactly_once` a function has exactly one input, whose
//! source opens the session ([`Source::begin_exactly_once`]), and every
//! output and its dead-letter sink name a [`TransactionalTarget`] the session
//! [accepts](TransactionSession::accepts). Handler tasks then write nothing
//! themselves: the engine holds each finished event's records until the
//! partition's watermark passes the event, writes them into the open
//! transaction, and every `commit_interval` commits the transaction together
//! with the watermark positions. So a committed transaction holds exactly the
//! records of the events below the positions it commits — however out of
//! order events finished — and a crash leaves either both or neither.
//!
//! # The rules a session must keep
//!
//! 1. **All or nothing.** [`TransactionSession::commit`] resolves `Ok` only
//!    once every record written since the last commit and the positions are
//!    durable together. If it resolves `Err`, none of them may become visible
//!    to readers that read committed data only. A connector without atomic
//!    transactions may instead make the records *idempotent*: durable at
//!    commit, and de-duplicated by their [`RECORD_ID_HEADER`] when written
//!    again, with its source acknowledging the positions in
//!    [`Source::commit`](crate::Source::commit), which the engine calls
//!    right after every successful session commit. It must then state how
//!    long its de-duplication lasts.
//! 2. **Abort is clean.** After [`TransactionError::Abortable`] the engine
//!    calls [`TransactionSession::abort`], then writes the same records again
//!    into a new transaction; the session must accept that.
//! 3. **Fencing stops.** If another process took over the session's identity
//!    (a newer producer with the same transactional id), the session returns
//!    [`TransactionError::Fatal`] and the function stops without committing.
//!
//! [`Source::begin_exactly_once`]: crate::Source::begin_exactly_once

use async_trait::async_trait;
use bytes::Bytes;
use thiserror::Error;

use crate::event::Record;
use crate::source::{CommitPosition, StoredPosition};
use crate::state::{StateChange, StateEntry};

/// Header the engine puts on every record it writes under `exactly_once`:
/// `{stream}/{partition}/{offset}/{n}` for the event's `n`-th output, or
/// `{stream}/{partition}/{offset}/dead-letter`. The same event always gives
/// the same ids, so a connector that de-duplicates by id (a JetStream
/// `Nats-Msg-Id`, a database key) can use it, and readers can check that no
/// record was committed twice.
pub const RECORD_ID_HEADER: &str = "spate-record-id";

/// The [`RECORD_ID_HEADER`] value of an event's output `n` (`None`: its dead
/// letter).
pub fn record_id(position: &crate::event::Position, output: Option<usize>) -> Bytes {
    let suffix = output.map_or_else(|| "dead-letter".to_owned(), |n| n.to_string());
    Bytes::from(format!(
        "{}/{}/{}/{suffix}",
        position.stream, position.partition, position.offset
    ))
}

/// Where a sink's records go inside a transaction: the sink's answer to
/// [`Sink::transactional_target`](crate::Sink::transactional_target).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TransactionalTarget {
    /// The connector kind (`kafka`, `postgres`, …).
    pub kind: &'static str,
    /// The cluster or database the sink writes to, as configured (for
    /// Kafka, the bootstrap servers), so a session can refuse a foreign one.
    pub cluster: String,
    /// The topic, table or subject within it.
    pub destination: String,
}

/// A transaction could not be written or committed.
#[derive(Debug, Error)]
pub enum TransactionError {
    /// The open transaction failed; abort it and try again with a new one.
    #[error("{session}: transaction failed: {message}")]
    Abortable {
        /// Which session (connector kind and identity).
        session: String,
        /// What went wrong.
        message: String,
    },
    /// The session cannot go on: fenced by a newer instance, or the broker
    /// refused it for good. The function stops without committing.
    #[error("{session}: {message}")]
    Fatal {
        /// Which session (connector kind and identity).
        session: String,
        /// What went wrong and what to do about it.
        message: String,
    },
}

impl TransactionError {
    /// True when aborting and trying again may succeed.
    pub fn is_abortable(&self) -> bool {
        matches!(self, Self::Abortable { .. })
    }
}

/// A connector's transactional writer, tied to one source's positions.
#[async_trait]
pub trait TransactionSession: Send {
    /// A short name for logs (`kind:identity`).
    fn name(&self) -> &str;

    /// Checks once, before anything runs, that this session can write to
    /// `target` in the same transaction as its source positions; `Err`
    /// says why not, for the operator.
    fn accepts(&self, target: &TransactionalTarget) -> Result<(), String>;

    /// Adds a record to the open transaction, beginning one if none is
    /// open. It may only be buffered: failures may surface at commit.
    async fn write(
        &mut self,
        target: &TransactionalTarget,
        record: Record,
    ) -> Result<(), TransactionError>;

    /// Commits every record written since the last commit together with
    /// these source positions (rule 1). `stored` are the same positions as
    /// the source names them for storing outside its broker
    /// ([`Source::positions_to_store`](crate::Source::positions_to_store)):
    /// a session that stores positions itself (a database's) stores those;
    /// one whose broker keeps the source's own positions (Kafka) commits
    /// `positions`. With nothing written and no positions it does nothing.
    async fn commit(
        &mut self,
        positions: &[CommitPosition],
        stored: &[StoredPosition],
    ) -> Result<(), TransactionError>;

    /// Aborts the open transaction, if any (rule 2).
    async fn abort(&mut self) -> Result<(), TransactionError>;

    /// Every position this session has stored for its source, for
    /// [`Source::resume_from`](crate::Source::resume_from). Read when the
    /// session opens and after every assignment, so positions another
    /// process committed meanwhile are seen. Sessions whose broker keeps the
    /// source's positions return none (the default).
    async fn load_positions(&mut self) -> Result<Vec<StoredPosition>, TransactionError> {
        Ok(Vec::new())
    }

    /// True when the session stores handler state with its positions (see
    /// [`crate::state`]). The default is false, and then a stateful handler
    /// cannot run under `exactly_once` with this session.
    fn stores_state(&self) -> bool {
        false
    }

    /// Adds a change of handler state of `partition` (a stable partition
    /// name) to the open transaction, like [`TransactionSession::write`].
    async fn write_state(
        &mut self,
        partition: &str,
        change: StateChange,
    ) -> Result<(), TransactionError> {
        let _ = (partition, change);
        Err(TransactionError::Fatal {
            session: self.name().to_owned(),
            message: "this session cannot store handler state".to_owned(),
        })
    }

    /// The committed handler state of these partitions (stable names).
    async fn load_state(
        &mut self,
        partitions: &[String],
    ) -> Result<Vec<StateEntry>, TransactionError> {
        let _ = partitions;
        Ok(Vec::new())
    }
}
