//! The conformance suite ([`spate_connector::testkit::conformance`]) against
//! the built-in connectors: `file` (a followed JSON Lines file with a
//! commit file, produced into and read back through the file sink) and
//! `generate` (a source that makes its own replayable events).

use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;
use spate_connector::testkit::conformance::{self, Fixture, Harness, TestStream};
use spate_connector::{Sink, Source, SourceBuilder};
use spate_testsupport::builtin::{factory, read_sink, source_builder};

/// A followed file per check, in a directory removed with the fixture.
struct FileFixture {
    dir: tempfile::TempDir,
}

struct FileStream {
    path: PathBuf,
    source: Box<dyn SourceBuilder>,
}

#[async_trait]
impl Fixture for FileFixture {
    async fn stream(&self, label: &str) -> Result<Box<dyn TestStream>, String> {
        let path = self.dir.path().join(format!("{label}.jsonl"));
        std::fs::write(&path, "").map_err(|e| e.to_string())?;
        let positions = self.dir.path().join(format!("{label}.positions"));
        let source = source_builder(
            "file",
            &[
                ("path", path.to_str().unwrap()),
                ("follow", "true"),
                ("poll_interval", "10ms"),
                ("commit_file", positions.to_str().unwrap()),
            ],
        );
        Ok(Box::new(FileStream { path, source }))
    }
}

#[async_trait]
impl TestStream for FileStream {
    async fn source(&self) -> Result<Box<dyn Source>, String> {
        self.source.build().await.map_err(|e| e.to_string())
    }

    /// Appends through the connector's own sink.
    async fn produce(&self, _partition: u32, payloads: Vec<Bytes>) -> Result<(), String> {
        let sink = self.sink().await?;
        spate_testsupport::connector::write_payloads(&*sink, payloads).await
    }

    async fn sink(&self) -> Result<Box<dyn Sink>, String> {
        let (builder, errors) = read_sink("file", &[("path", self.path.to_str().unwrap())]);
        if !errors.is_empty() {
            return Err(format!("{errors:?}"));
        }
        let builder = builder.ok_or("no file sink builder")?;
        builder.build().await.map_err(|e| e.to_string())
    }
}

#[tokio::test]
async fn the_file_connector_keeps_the_contract() {
    let file = factory("file");
    conformance::run(
        Harness::new(
            "file",
            FileFixture {
                dir: tempfile::tempdir().unwrap(),
            },
        )
        .source(file.source_capabilities().unwrap())
        .sink(file.sink_capabilities().unwrap()),
    )
    .await;
}

/// A generate source per check; its sessions share the builder's
/// positions, as rebuilds within one process do.
struct GenerateFixture;

struct GenerateStream(Box<dyn SourceBuilder>);

#[async_trait]
impl Fixture for GenerateFixture {
    async fn stream(&self, _label: &str) -> Result<Box<dyn TestStream>, String> {
        Ok(Box::new(GenerateStream(source_builder(
            "generate",
            &[("partitions", "3"), ("devices", "6"), ("seed", "7")],
        ))))
    }
}

#[async_trait]
impl TestStream for GenerateStream {
    async fn source(&self) -> Result<Box<dyn Source>, String> {
        self.0.build().await.map_err(|e| e.to_string())
    }
}

#[tokio::test]
async fn the_generate_connector_keeps_the_contract() {
    let generate = factory("generate");
    assert!(generate.sink_capabilities().is_none());
    conformance::run(
        Harness::new("generate", GenerateFixture)
            .source(generate.source_capabilities().unwrap())
            .generated(),
    )
    .await;
}
