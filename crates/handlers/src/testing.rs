//! Helpers for the crate's unit tests: events to feed handlers. Test-only;
//! nothing here is part of the crate's interface.

use std::sync::Arc;

use bytes::Bytes;
use spate_connector::{Event, Headers, PartitionId, Position};

/// An event at `offset` of `stream`'s `partition` holding `payload` and
/// nothing else: no key, headers or timestamp (set them with struct
/// update syntax, `Event { key, ..event(…) }`).
pub(crate) fn event(stream: &str, partition: PartitionId, offset: u64, payload: &[u8]) -> Event {
    Event {
        key: None,
        payload: Bytes::copy_from_slice(payload),
        headers: Headers::new(),
        timestamp_ms: None,
        position: Position {
            stream: Arc::from(stream),
            partition,
            offset,
        },
    }
}
