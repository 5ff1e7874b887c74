//! Unique names for the resources a test creates (topics, streams,
//! subjects, durables, client ids, schemas).
//!
//! Guarantees: two calls never return the same name within a process (a
//! counter), names of different processes differ (the process id), and
//! names are lower-case letters, digits and `_` after the prefix, so they
//! are valid Kafka topics, NATS stream names, MQTT client ids and
//! PostgreSQL identifiers alike.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// `{prefix}_{pid}_{nanoseconds}_{counter}`: unique per call, process and run.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_nanos();
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
