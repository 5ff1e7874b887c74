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

/// A mapping node of unquoted scalars, as a pipeline file would give a
/// connector; key `i` sits on line `i + 2` so errors have distinct places.
pub fn config_map(entries: &[(&str, &str)]) -> crate::ConfigNode {
    use crate::{ConfigNode, NodeKind, Span};
    ConfigNode {
        kind: NodeKind::Map(
            entries
                .iter()
                .enumerate()
                .map(|(i, (key, value))| {
                    let line = i as u32 + 2;
                    let value = ConfigNode {
                        kind: NodeKind::Scalar {
                            text: (*value).to_owned(),
                            quoted: false,
                        },
                        span: Span { line, column: 12 },
                    };
                    ((*key).to_owned(), Span { line, column: 5 }, value)
                })
                .collect(),
        ),
        span: Span { line: 1, column: 5 },
    }
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
    let node = config_map(entries);
    let errors = crate::config::ConfigErrors::default();
    let builder = {
        let mut reader = crate::ConfigReader::new(&node, "inputs[0]", &errors);
        factory.source(&mut reader)
    };
    (builder, errors.into_inner())
}

/// Reads a sink configuration; see [`read_source_config`].
pub fn read_sink_config(
    factory: &dyn crate::ConnectorFactory,
    entries: &[(&str, &str)],
) -> (Option<Box<dyn crate::SinkBuilder>>, Vec<crate::ConfigError>) {
    let node = config_map(entries);
    let errors = crate::config::ConfigErrors::default();
    let builder = {
        let mut reader = crate::ConfigReader::new(&node, "outputs[0]", &errors);
        factory.sink(&mut reader)
    };
    (builder, errors.into_inner())
}
