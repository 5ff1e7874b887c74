//! Configuration read through a connector crate's factories, as the
//! pipeline loader reads it: the per-connector modules ([`crate::nats`],
//! [`crate::mqtt`], [`crate::kafka`], [`crate::builtin`]) are thin faces
//! over these, the same ones made by one macro ([`config_helpers`]).
//!
//! Guarantees: a configuration the test says is valid fails the test with
//! every problem recorded if it is not; a factory asked for by kind fails
//! the test naming the kind if the crate has none.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use spate_connector::testkit::{next_before, read_sink_config, read_source_config};
use spate_connector::{
    ConfigError, ConnectorFactory, Headers, Record, Sink, SinkBuilder, Source, SourceBuilder,
    SourceMessage,
};

/// Record `i` of a sink test: key `dev-<i>`, payload `payload-<i>`, a
/// header `trace: t-<i>` and the header `multi` twice (`a`, then `b`).
pub fn numbered_record(i: usize, timestamp_ms: Option<i64>) -> Record {
    let mut headers = Headers::new();
    headers.push("trace", Bytes::from(format!("t-{i}")));
    headers.push("multi", Bytes::from_static(b"a"));
    headers.push("multi", Bytes::from_static(b"b"));
    Record {
        key: Some(Bytes::from(format!("dev-{i}"))),
        payload: Bytes::from(format!("payload-{i}")),
        headers,
        timestamp_ms,
    }
}

/// Writes each payload through `sink` as a record of its own, then flushes;
/// the first error as text.
pub async fn write_payloads(sink: &dyn Sink, payloads: Vec<Bytes>) -> Result<(), String> {
    for payload in payloads {
        sink.write(Record::from_payload(payload))
            .await
            .map_err(|e| e.to_string())?;
    }
    sink.flush().await.map_err(|e| e.to_string())
}

/// The factory of `kind` from a crate's list (`spate_nats::connectors()`…).
pub fn find(connectors: Vec<Arc<dyn ConnectorFactory>>, kind: &str) -> Arc<dyn ConnectorFactory> {
    connectors
        .into_iter()
        .find(|f| f.kind() == kind)
        .unwrap_or_else(|| panic!("no connector `{kind}`"))
}

/// The builder of a configuration that must be valid: no problem read.
fn valid<B: ?Sized>((builder, errors): Read<B>) -> Box<B> {
    assert!(errors.is_empty(), "unexpected config errors: {errors:?}");
    builder.expect("a builder for a valid configuration")
}

/// A source builder from a configuration that must be valid.
pub fn valid_source(
    factory: &dyn ConnectorFactory,
    entries: &[(&str, &str)],
) -> Box<dyn SourceBuilder> {
    valid(read_source_config(factory, entries))
}

/// A sink builder from a configuration that must be valid.
pub fn valid_sink_builder(
    factory: &dyn ConnectorFactory,
    entries: &[(&str, &str)],
) -> Box<dyn SinkBuilder> {
    valid(read_sink_config(factory, entries))
}

/// A built sink from a configuration that must be valid.
pub async fn valid_sink(factory: &dyn ConnectorFactory, entries: &[(&str, &str)]) -> Box<dyn Sink> {
    valid_sink_builder(factory, entries)
        .build()
        .await
        .expect("sink builds")
}

/// Builds a source and consumes its initial assignment, which must be
/// partitions `0..partitions` (a `next` slower than `patience` fails).
pub async fn open_assigned(
    builder: &dyn SourceBuilder,
    partitions: u32,
    patience: Duration,
) -> Box<dyn Source> {
    let mut source = builder.build().await.expect("source builds");
    match next_before(&mut *source, 10, patience).await {
        SourceMessage::Assigned(assigned) => {
            assert_eq!(assigned, (0..partitions).collect::<Vec<_>>())
        }
        other => panic!("expected Assigned first, got {other:?}"),
    }
    source
}

/// The messages of every problem.
pub fn messages(errors: &[ConfigError]) -> Vec<String> {
    errors.iter().map(|e| e.message.clone()).collect()
}

/// Asserts that one of the configuration problems' `messages` contains
/// `part`; the failure lists them all.
pub fn assert_mentioned(messages: &[String], part: &str) {
    assert!(
        messages.iter().any(|m| m.contains(part)),
        "no problem mentions {part:?}: {messages:?}"
    );
}

/// The problem about the unknown key `key`, whose hint must be `did you
/// mean `suggestion`?`.
pub fn assert_suggests<'e>(
    errors: &'e [ConfigError],
    key: &str,
    suggestion: &str,
) -> &'e ConfigError {
    let unknown = errors
        .iter()
        .find(|e| e.message.contains(&format!("unknown key `{key}`")))
        .expect("unknown key");
    let hint = format!("did you mean `{suggestion}`?");
    assert_eq!(unknown.hint.as_deref(), Some(hint.as_str()));
    unknown
}

/// What reading a configuration gives: the builder (if any) and every
/// problem recorded, unknown keys included.
pub type Read<B> = (Option<Box<B>>, Vec<ConfigError>);

/// Defines, in a per-connector module, `factory(kind)`, `read_source`,
/// `read_sink`, `source_builder` and `sink` over a crate's list of
/// factories (`spate_nats::connectors`…).
macro_rules! config_helpers {
    ($connectors:path) => {
        /// The factory of `kind` from the crate's list.
        pub fn factory(kind: &str) -> std::sync::Arc<dyn spate_connector::ConnectorFactory> {
            $crate::connector::find($connectors(), kind)
        }

        /// Reads a source configuration; see [`Read`]($crate::connector::Read).
        pub fn read_source(
            kind: &str,
            entries: &[(&str, &str)],
        ) -> $crate::connector::Read<dyn spate_connector::SourceBuilder> {
            spate_connector::testkit::read_source_config(&*factory(kind), entries)
        }

        /// Reads a sink configuration; see [`read_source`].
        pub fn read_sink(
            kind: &str,
            entries: &[(&str, &str)],
        ) -> $crate::connector::Read<dyn spate_connector::SinkBuilder> {
            spate_connector::testkit::read_sink_config(&*factory(kind), entries)
        }

        /// A source builder from a configuration that must be valid.
        pub fn source_builder(
            kind: &str,
            entries: &[(&str, &str)],
        ) -> Box<dyn spate_connector::SourceBuilder> {
            $crate::connector::valid_source(&*factory(kind), entries)
        }

        /// A built sink from a configuration that must be valid.
        pub async fn sink(kind: &str, entries: &[(&str, &str)]) -> Box<dyn spate_connector::Sink> {
            $crate::connector::valid_sink(&*factory(kind), entries).await
        }

        pub use $crate::connector::{assert_mentioned, assert_suggests, messages};
    };
}

pub(crate) use config_helpers;
