//! Helpers for connector tests: reading a source with a time limit (so a
//! broken source fails a test instead of hanging it) and reading
//! configuration the way the pipeline loader does.

use std::time::Duration;

use crate::event::Event;
use crate::source::{Source, SourceMessage};

/// `source.next(max)`, failing the test if it errors or has not returned
/// within `limit`, so a broken source fails instead of hanging.
pub async fn next_before(source: &mut dyn Source, max: usize, limit: Duration) -> SourceMessage {
    match tokio::time::timeout(limit, source.next(max)).await {
        Ok(Ok(message)) => message,
        Ok(Err(error)) => panic!("next failed: {error}"),
        Err(_) => panic!("next did not return within {limit:?}"),
    }
}

/// `source.next(max)`, or `None` if it returns nothing within `wait`;
/// fails the test if it errors.
pub async fn next_within(
    source: &mut dyn Source,
    max: usize,
    wait: Duration,
) -> Option<SourceMessage> {
    match tokio::time::timeout(wait, source.next(max)).await {
        Ok(Ok(message)) => Some(message),
        Ok(Err(error)) => panic!("next failed: {error}"),
        Err(_) => None,
    }
}

/// Reads until at least `n` events arrived, checking that no batch is empty
/// or larger than `max`; any other message, or a `next` slower than `limit`,
/// fails the test.
pub async fn read_events(
    source: &mut dyn Source,
    n: usize,
    max: usize,
    limit: Duration,
) -> Vec<Event> {
    let mut events = Vec::new();
    while events.len() < n {
        match next_before(source, max, limit).await {
            SourceMessage::Events(batch) => {
                assert!(!batch.is_empty(), "an Events message is never empty");
                assert!(batch.len() <= max, "batch of {} > max {max}", batch.len());
                events.extend(batch);
            }
            other => panic!("unexpected {other:?} after {} events", events.len()),
        }
    }
    events
}

/// Reads a source configuration through `factory` the way the pipeline
/// loader does; returns the builder (if any) and every problem recorded,
/// unknown keys included.
pub fn read_source_config(
    factory: &dyn crate::ConnectorFactory,
    entries: &[(&str, &str)],
) -> (
    Option<Box<dyn crate::SourceBuilder>>,
    Vec<crate::ConfigError>,
) {
    read_config(entries, "inputs[0]", |reader| factory.source(reader))
}

/// Reads a sink configuration; see [`read_source_config`].
pub fn read_sink_config(
    factory: &dyn crate::ConnectorFactory,
    entries: &[(&str, &str)],
) -> (Option<Box<dyn crate::SinkBuilder>>, Vec<crate::ConfigError>) {
    read_config(entries, "outputs[0]", |reader| factory.sink(reader))
}

/// Reads the mapping of `entries` at `path` with `read`; what it made and
/// every problem recorded.
fn read_config<T>(
    entries: &[(&str, &str)],
    path: &str,
    read: impl FnOnce(&mut crate::ConfigReader<'_>) -> T,
) -> (T, Vec<crate::ConfigError>) {
    let node = crate::config::config_map(entries);
    let errors = crate::config::ConfigErrors::default();
    let made = read(&mut crate::ConfigReader::new(&node, path, &errors));
    (made, errors.into_inner())
}
