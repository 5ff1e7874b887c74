//! Helpers of the built-in connectors' integration tests: configuration
//! read through the crate's factories, and event collection.
//!
//! Guarantees: a source that errors, or whose `next` takes longer than
//! 10 s, fails the test instead of hanging it.

use std::time::Duration;

use spate_connector::{ConfigNode, Event, Source, SourceBuilder, SourceMessage};

/// A mapping node of unquoted scalars (see
/// [`spate_connector::testkit::config_map`]).
pub fn config(entries: &[(&str, &str)]) -> ConfigNode {
    spate_connector::testkit::config_map(entries)
}

crate::connector::config_helpers!(spate_builtin::connectors);

/// Builds a source and consumes its initial assignment.
pub async fn open(builder: &dyn SourceBuilder) -> (Box<dyn Source>, Vec<u32>) {
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
