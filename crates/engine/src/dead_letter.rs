//! Writing dead letters, and the reduced form of one its sink rejected for
//! good.
//!
//! A dead letter is finished only once its sink acknowledged it; a write
//! that fails transiently is tried again after backoff, the event's offset
//! waiting for it.
//!
//! A dead letter the dead-letter sink refuses as it is (larger than the
//! sink accepts, refused by its schema) would be refused again however often
//! it is retried. It is written once more without its payload: every header
//! is kept (provenance, reason, the original ones), the key too, and three
//! headers describe what was left out — the payload's size, its SHA-256
//! (lowercase hex) and why it was reduced, naming the setting that would have
//! let it through whole. Hashing happens only here, never on the path of an
//! event that succeeds.

use std::fmt::Write as _;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use spate_connector::{dead_letter, Record, SinkError};

use super::events::{DeadLetterCause, DeadLetterReduced, DeadLetterWriteFailed, EventDeadLettered};
use super::work::{Outcome, Stage, Verdict, WorkItem};
use super::worker::{retry_write, FunctionShared};

/// True when `record` is already a reduced dead letter (reducing it again
/// cannot make it any smaller). An event that arrived with the header (read
/// back from a dead-letter topic) but still has a payload can be reduced.
pub fn is_reduced(record: &Record) -> bool {
    record.payload.is_empty() && record.headers.get(dead_letter::REDUCED).is_some()
}

/// `record` without its payload, with the headers that describe the payload
/// and `why` (the sink's rejection, which names the setting).
pub fn reduce(mut record: Record, why: &str) -> Record {
    let payload = std::mem::take(&mut record.payload);
    record
        .headers
        .set(dead_letter::PAYLOAD_SIZE, payload.len().to_string());
    record
        .headers
        .set(dead_letter::PAYLOAD_SHA256, sha256_hex(&payload));
    record.headers.set(
        dead_letter::REDUCED,
        format!("the dead-letter sink rejected the dead letter with its payload: {why}; written without it"),
    );
    record.payload = Bytes::new();
    record
}

/// The SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        // Writing into a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// Writes the dead letter; until it is acknowledged the event stays
/// unfinished, so its offset is not committed.
pub(super) async fn write_dead_letter(
    shared: &FunctionShared,
    item: &mut WorkItem,
    record: Record,
) -> Option<Verdict> {
    match shared.dead_letter.write(record.clone()).await {
        Ok(()) => {
            item.write_failures = 0;
            let position = &item.event.position;
            EventDeadLettered {
                stream: &position.stream,
                partition: position.partition,
                offset: position.offset,
                cause: item.failure.as_ref().map(|failure| DeadLetterCause {
                    reason: failure.reason,
                    error: &failure.message,
                }),
            }
            .emit(&shared.scope);
            Some(Verdict::Finished(Outcome::DeadLettered))
        }
        Err(error) if error.is_retryable() => {
            DeadLetterWriteFailed(&error).emit(&shared.scope);
            Some(retry_write(shared, item, Stage::DeadLetter(record)))
        }
        Err(error) => rejected_dead_letter(shared, item, record, &error),
    }
}

/// The dead-letter sink rejected `record` for good. Written as it is it
/// would be rejected again however often it is tried, so the item moves
/// on to writing it in reduced form (returns `None`: the stage runs now).
/// A reduced dead letter rejected too cannot be written at all, and
/// dropping it would lose the event silently: the function stops, naming
/// the dead-letter sink and its error.
pub(super) fn rejected_dead_letter(
    shared: &FunctionShared,
    item: &mut WorkItem,
    record: Record,
    error: &SinkError,
) -> Option<Verdict> {
    let position = &item.event.position;
    if is_reduced(&record) {
        return Some(Verdict::Unwritable(format!(
            "the dead-letter sink `{}` rejected the dead letter of {} partition {} offset {} even without its payload ({error}); change that setting of the dead-letter destination and restart: the event is read again",
            shared.dead_letter.name(),
            position.stream,
            position.partition,
            position.offset,
        )));
    }
    DeadLetterReduced {
        stream: &position.stream,
        partition: position.partition,
        offset: position.offset,
        payload_bytes: record.payload.len(),
        error,
    }
    .emit(&shared.scope);
    item.write_failures = 0;
    item.stage = Stage::DeadLetter(reduce(record, &error.to_string()));
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use spate_connector::Headers;

    #[test]
    fn the_hash_is_lowercase_hex_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_reduced_dead_letter_keeps_key_and_headers_and_describes_the_payload() {
        let mut headers = Headers::new();
        headers.push("origin", Bytes::from_static(b"x"));
        let record = Record {
            key: Some(Bytes::from_static(b"k")),
            payload: Bytes::from_static(b"abc"),
            headers,
            timestamp_ms: Some(7),
        };
        assert!(!is_reduced(&record));
        let reduced = reduce(record, "too large; raise `max`");
        assert!(reduced.payload.is_empty());
        assert_eq!(reduced.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(reduced.timestamp_ms, Some(7));
        assert_eq!(reduced.headers.get_str("origin"), Some("x"));
        assert_eq!(
            reduced.headers.get_str(dead_letter::PAYLOAD_SIZE),
            Some("3")
        );
        assert!(reduced
            .headers
            .get_str(dead_letter::REDUCED)
            .is_some_and(|why| why.contains("raise `max`")));
        assert!(is_reduced(&reduced));
        let mut replayed = reduced.clone();
        replayed.payload = Bytes::from_static(b"abc");
        assert!(!is_reduced(&replayed), "a payload left to reduce");
    }
}
