//! Pieces the benches share: the raw client-library floors (rdkafka and
//! async-nats loops doing what a no-op pipeline does) and the set-up of a
//! NATS bench case; the settings every end-to-end bench reads from the
//! environment, and the median of its rounds.
//!
//! Guarantees: see each module; all of them only read and write the
//! brokers, topics and streams their caller names.

pub mod nats_setup;
pub mod raw_kafka;
pub mod raw_nats;

/// The number in the environment variable `name`, else `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The cases of `all` to run: those `SPATE_BENCH_CASES` names (a comma
/// list, to profile one), or every one when it is unset.
pub fn selected_cases<'a>(all: &[&'a str]) -> Vec<&'a str> {
    let only = std::env::var("SPATE_BENCH_CASES").unwrap_or_default();
    all.iter()
        .copied()
        .filter(|c| only.is_empty() || only.split(',').any(|o| o == *c))
        .collect()
}

/// The median of `values` (the upper one of an even count); sorts them.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}
