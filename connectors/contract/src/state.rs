//! Handler state that an exactly-once session stores with its positions.
//!
//! A stateful handler (the built-in `window` aggregator) keeps state per key
//! between events. Under `exactly_once` each change is tied to the event that
//! made it and written into the transaction once the partition's watermark
//! passes that event — the same rule as output records — so the committed
//! state is exactly the state after the committed events, and a restart
//! (or the partition's next owner) resumes from it without counting any
//! event twice or missing one. Only sessions that store positions themselves
//! (a database sink's) store state; see
//! [`TransactionSession::stores_state`](crate::TransactionSession::stores_state).

use bytes::Bytes;

/// One change a handler made to its state while handling one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// The key whose state changed (the handler's own key, e.g. a device id).
    pub key: Bytes,
    /// The key's whole new state, or `None` when it was removed.
    pub value: Option<Bytes>,
}

/// A stored state entry: the state of one key of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEntry {
    /// The partition's stable name ([`Source::partition_name`](crate::Source::partition_name)).
    pub partition: String,
    /// The key.
    pub key: Bytes,
    /// Its state.
    pub value: Bytes,
}
