//! Header names shared by everything that writes or reads dead letters.
//!
//! A dead letter is the original event (key, payload, headers kept) with
//! these headers added, so `spate dlq inspect` can explain it and
//! `spate dlq replay` can send it back where it came from.

/// Header a source sets on an event it could not decode (the value says
/// why); the engine dead-letters such an event without calling the handler.
pub const DECODE_ERROR: &str = "spate-decode-error";

/// The function that gave up on the event.
pub const FUNCTION: &str = "spate-dlq-function";
/// The source connector and stream (`kind:stream`) the event came from.
pub const SOURCE: &str = "spate-dlq-source";
/// The stream (topic, subject, file path) the event came from.
pub const STREAM: &str = "spate-dlq-stream";
/// Its partition.
pub const PARTITION: &str = "spate-dlq-partition";
/// Its offset or sequence.
pub const OFFSET: &str = "spate-dlq-offset";
/// Its key, if it had one (also kept as the record key).
pub const KEY: &str = "spate-dlq-key";
/// The last error message.
pub const ERROR: &str = "spate-dlq-error";
/// Why it was dead-lettered: `handler-error`, `timeout`, `panic`,
/// `decode-error`, `encode-error`, `output-rejected`, `unknown-output`, or a
/// word the handler gave (the `window` handler's `late` and `invalid`).
pub const REASON: &str = "spate-dlq-reason";
/// Attempts made.
pub const ATTEMPTS: &str = "spate-dlq-attempts";
/// First failure, milliseconds since the Unix epoch.
pub const FIRST_FAILURE_MS: &str = "spate-dlq-first-failure-ms";
/// Last failure, milliseconds since the Unix epoch.
pub const LAST_FAILURE_MS: &str = "spate-dlq-last-failure-ms";

/// On a dead letter written in reduced form (its sink refused it as it
/// was, for good): the original payload's size in bytes, decimal. The
/// payload itself is left out; every other header is kept.
pub const PAYLOAD_SIZE: &str = "spate-dlq-payload-size";
/// On a reduced dead letter: the SHA-256 of the original payload,
/// lowercase hex, to match it against the source's copy.
pub const PAYLOAD_SHA256: &str = "spate-dlq-payload-sha256";
/// On a reduced dead letter: why it was reduced, in words, naming the
/// setting that would have let it through whole.
pub const REDUCED: &str = "spate-dlq-reduced";
