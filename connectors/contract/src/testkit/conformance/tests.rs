//! The suite against the test kit's own connectors, which keep the
//! contract, and against wrappers that break it on purpose: the suite must
//! pass the first and name the broken rule of the second.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    evaluate, run, Check, Fixture, Harness, MemoryDatabaseFixture, MemoryFixture, Outcome, Report,
    TestStream, MEMORY_SOURCE, MEMORY_TABLE,
};
use crate::error::SourceError;
use crate::event::PartitionId;
use crate::factory::Capabilities;
use crate::sink::Sink;
use crate::source::{CommitPosition, Source, SourceMessage};

fn fast(harness: Harness) -> Harness {
    harness
        .wait(Duration::from_secs(2))
        .quiet(Duration::from_millis(200))
        .budget(Duration::from_secs(20))
}

fn assert_passed(report: &Report, check: Check) {
    assert_eq!(report.outcome(check), Some(&Outcome::Passed), "{check:?}");
}

fn assert_skipped(report: &Report, check: Check) {
    assert!(
        matches!(report.outcome(check), Some(Outcome::Skipped(_))),
        "{check:?}"
    );
}

/// The message of `check`'s failure; panics with `otherwise` and the report
/// if it did not fail.
fn failure<'r>(report: &'r Report, check: Check, otherwise: &str) -> &'r str {
    match report.outcome(check) {
        Some(Outcome::Failed(message)) => message,
        _ => panic!("{otherwise}\n{report}"),
    }
}

#[tokio::test]
async fn the_memory_log_keeps_the_contract() {
    let report = run(fast(
        Harness::new("memory", MemoryFixture::new(3))
            .source(MEMORY_SOURCE)
            .sink(Capabilities::default())
            .group(),
    ))
    .await;
    assert_eq!(
        report.outcome(Check::SinkSessionCommit),
        Some(&Outcome::Skipped(
            "not claimed: sink durable_positions".to_owned()
        ))
    );
    assert_passed(&report, Check::SourceReleaseOnRevoke);
}

#[tokio::test]
async fn the_memory_database_keeps_the_contract() {
    let report = run(fast(
        Harness::new("memorydb", MemoryDatabaseFixture).sink(MEMORY_TABLE),
    ))
    .await;
    assert_passed(&report, Check::SinkSessionAbort);
    assert_skipped(&report, Check::SourceOrder);
}

/// How a [`Broken`] source breaks the contract.
#[derive(Clone, Copy)]
enum Breaks {
    /// `commit` answers `Ok` and stores nothing.
    Commits,
    /// `pause` answers `Ok` and changes nothing.
    Pause,
}

/// A memory fixture whose sources break the contract one way.
struct BrokenFixture(MemoryFixture, Breaks);

#[async_trait]
impl Fixture for BrokenFixture {
    async fn stream(&self, label: &str) -> Result<Box<dyn TestStream>, String> {
        Ok(Box::new(BrokenStream(self.0.stream(label).await?, self.1)))
    }
}

struct BrokenStream(Box<dyn TestStream>, Breaks);

#[async_trait]
impl TestStream for BrokenStream {
    fn partitions(&self) -> u32 {
        self.0.partitions()
    }

    async fn source(&self) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(Broken(self.0.source().await?, self.1)))
    }

    async fn produce(&self, partition: u32, payloads: Vec<Bytes>) -> Result<(), String> {
        self.0.produce(partition, payloads).await
    }

    async fn sink(&self) -> Result<Box<dyn Sink>, String> {
        self.0.sink().await
    }
}

struct Broken(Box<dyn Source>, Breaks);

#[async_trait]
impl Source for Broken {
    fn name(&self) -> &str {
        self.0.name()
    }

    async fn next(&mut self, max_events: usize) -> Result<SourceMessage, SourceError> {
        self.0.next(max_events).await
    }

    fn pause(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError> {
        match self.1 {
            Breaks::Pause => Ok(()),
            _ => self.0.pause(partitions),
        }
    }

    fn resume(&mut self, partitions: &[PartitionId]) -> Result<(), SourceError> {
        self.0.resume(partitions)
    }

    async fn commit(&mut self, positions: &[CommitPosition]) -> Result<(), SourceError> {
        match self.1 {
            Breaks::Commits => Ok(()),
            _ => self.0.commit(positions).await,
        }
    }
}

/// Claims durable positions for a source whose commits store nothing.
fn forgetful() -> Harness {
    fast(
        Harness::new(
            "forgets-commits",
            BrokenFixture(MemoryFixture::new(2), Breaks::Commits),
        )
        .source(Capabilities {
            durable_positions: true,
            ..Capabilities::default()
        }),
    )
}

#[tokio::test]
#[should_panic(expected = "FAILED  source-resume-at-commit: a new session delivered")]
async fn a_source_claiming_durable_positions_it_does_not_keep_fails() {
    run(forgetful()).await;
}

#[tokio::test]
async fn the_report_names_the_broken_rule_and_passes_the_rest() {
    let report = evaluate(forgetful()).await;
    println!("{report}");
    let message = failure(
        &report,
        Check::SourceResumeAtCommit,
        "resume-at-commit should fail:",
    );
    assert!(
        message.contains("below the committed positions"),
        "{message}"
    );
    assert_passed(&report, Check::SourceOrder);
    assert_passed(&report, Check::SourceRedelivery);
    assert_skipped(&report, Check::SourceExactlyOnceCommit);
}

#[tokio::test]
async fn a_source_that_ignores_pause_fails_the_pause_check() {
    let harness = fast(
        Harness::new(
            "ignores-pause",
            BrokenFixture(MemoryFixture::new(2), Breaks::Pause),
        )
        .source(Capabilities::default()),
    );
    let report = evaluate(harness).await;
    println!("{report}");
    let message = failure(&report, Check::SourcePause, "pause should fail:");
    assert!(
        message.contains("events of paused partitions came"),
        "{message}"
    );
}
