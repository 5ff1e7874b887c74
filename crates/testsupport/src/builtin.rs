//! Helpers of the built-in connectors' integration tests: configuration
//! read through the crate's factories, and event collection.
//!
//! Guarantees: a source that errors, or whose `next` takes longer than
//! 10 s, fails the test instead of hanging it.

use std::sync::Arc;
use std::time::Duration;

use spate_connector::{
    ConfigError, ConfigNode, ConnectorFactory, Event, Sink, Source, SourceMessage,
};

/// A mapping node of unquoted scalars (see
/// [`spate_connector::testkit::config_map`]).
pub fn config(entries: &[(&str, &str)]) -> ConfigNode {
    spate_connector::testkit::config_map(entries)
}

/// The factory of `kind` from the crate's list.
pub fn factory(kind: &str) -> Arc<dyn ConnectorFactory> {
    spate_builtin::connectors()
        .into_iter()
        .find(|f| f.kind() == kind)
        .unwrap_or_else(|| panic!("no connector `{kind}`"))
}

/// Reads a source configuration; returns the builder (if any) and every
/// problem recorded, unknown keys included.
pub fn read_source(
    kind: &str,
    entries: &[(&str, &str)],
) -> (
    Option<Box<dyn spate_connector::SourceBuilder>>,
    Vec<ConfigError>,
) {
    spate_connector::testkit::read_source_config(&*factory(kind), entries)
}

/// Reads a sink configuration; see [`read_source`].
pub fn read_sink(
    kind: &str,
    entries: &[(&str, &str)],
) -> (
    Option<Box<dyn spate_connector::SinkBuilder>>,
    Vec<ConfigError>,
) {
    spate_connector::testkit::read_sink_config(&*factory(kind), entries)
}

/// A source builder from a configuration that must be valid.
pub fn source_builder(
    kind: &str,
    entries: &[(&str, &str)],
) -> Box<dyn spate_connector::SourceBuilder> {
    let (builder, errors) = read_source(kind, entries);
    assert!(errors.is_empty(), "unexpected config errors: {errors:?}");
    builder.expect("a builder for a valid configuration")
}

/// A built sink from a configuration that must be valid.
pub async fn sink(kind: &str, entries: &[(&str, &str)]) -> Box<dyn Sink> {
    let (builder, errors) = read_sink(kind, entries);
    assert!(errors.is_empty(), "unexpected config errors: {errors:?}");
    builder
        .expect("a builder")
        .build()
        .await
        .expect("sink builds")
}

/// Builds a source and consumes its initial assignment.
pub async fn open(builder: &dyn spate_connector::SourceBuilder) -> (Box<dyn Source>, Vec<u32>) {
    let mut source = builder.build().await.expect("source builds");
    match next(&mut *source, 10).await {
        SourceMessage::Assigned(partitions) => (source, partitions),
        other => panic!("expected Assigned first, got {other:?}"),
    }
}

/// `next` with a generous timeout so a broken source fails instead of hanging.
pub async fn next(source: &mut dyn Source, max: usize) -> SourceMessage {
    tokio::time::timeout(Duration::from_secs(10), source.next(max))
        .await
        .expect("next did not return within 10s")
        .expect("next failed")
}

/// Reads until `End` (panics after 10s without progress).
pub async fn read_to_end(source: &mut dyn Source, max: usize) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        match next(source, max).await {
            SourceMessage::Events(batch) => {
                assert!(!batch.is_empty(), "an Events message is never empty");
                assert!(batch.len() <= max, "batch of {} > max {max}", batch.len());
                events.extend(batch);
            }
            SourceMessage::End => return events,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Reads until at least `n` events arrived.
pub async fn read_n(source: &mut dyn Source, n: usize, max: usize) -> Vec<Event> {
    let mut events = Vec::new();
    while events.len() < n {
        match next(source, max).await {
            SourceMessage::Events(batch) => events.extend(batch),
            other => panic!("unexpected {other:?} after {} events", events.len()),
        }
    }
    events
}

/// The messages of every problem.
pub fn messages(errors: &[ConfigError]) -> Vec<String> {
    errors.iter().map(|e| e.message.clone()).collect()
}
