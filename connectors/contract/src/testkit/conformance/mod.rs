//! The conformance suite every connector runs: one entry point, [`run`],
//! that checks each rule the contract states ([`crate::source`],
//! [`crate::sink`], [`crate::transaction`]) against a connector's real
//! broker, and that every capability the connector claims
//! ([`Capabilities`]) holds.
//!
//! A connector's test describes itself with a [`Harness`]: a [`Fixture`]
//! that makes a fresh [`TestStream`] (topic, subject, file, table) per
//! check, plus the capabilities its source and sink claim. Each check runs
//! on its own stream, in its own task, under a time limit, and every wait
//! inside it waits on a condition with a time limit too, so a broken
//! connector fails fast with a message and never hangs the suite. A check
//! whose capability is not claimed is reported *skipped*; a claimed one
//! that does not hold *fails*, so claiming too much is a failure.
//!
//! ```ignore
//! use spate_connector::testkit::conformance::{self, Harness};
//!
//! #[tokio::test]
//! async fn kafka_keeps_the_contract() {
//!     conformance::run(
//!         Harness::new("kafka", KafkaFixture::start())
//!             .source(factory.source_capabilities().unwrap())
//!             .sink(factory.sink_capabilities().unwrap())
//!             .group(),
//!     )
//!     .await;
//! }
//! ```

mod checks;
mod exactly_once;
mod group;
mod memory;
mod report;
mod session;
mod sink;
#[cfg(test)]
mod tests;

pub use memory::{MemoryDatabaseFixture, MemoryFixture, MEMORY_SOURCE, MEMORY_TABLE};
pub use report::{Check, Outcome, Report};

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::factory::Capabilities;
use crate::sink::Sink;
use crate::source::Source;

/// Makes a fresh, empty stream for each check.
#[async_trait]
pub trait Fixture: Send + Sync + 'static {
    /// A new stream no other check uses. `label` names the check asking
    /// (`source-order`, …), for topic and group names the broker's logs can
    /// be read by.
    async fn stream(&self, label: &str) -> Result<Box<dyn TestStream>, String>;
}

/// One stream of a connector's broker, as the suite drives it. Every method
/// that the connector does not have keeps its default, which says so; the
/// capabilities the [`Harness`] claims decide which the suite calls.
#[async_trait]
pub trait TestStream: Send + Sync {
    /// How many partitions [`TestStream::produce`] can write to, numbered
    /// from 0 (at least 1). They need not be the source's partition ids.
    fn partitions(&self) -> u32 {
        1
    }

    /// Opens a new source session (consumer) on the stream. Sessions of one
    /// stream share their durable positions (the same consumer group,
    /// durable consumer, client id or position file), so a second session
    /// is what a restarted process would open.
    async fn source(&self) -> Result<Box<dyn Source>, String> {
        Err("this stream has no source".to_owned())
    }

    /// Appends `payloads`, in order, to producer partition `partition`, and
    /// returns once they are stored (often through the connector's own
    /// sink, or a plain client). Not called for a source that makes its own
    /// events ([`Harness::generated`]).
    async fn produce(&self, partition: u32, payloads: Vec<Bytes>) -> Result<(), String> {
        let _ = (partition, payloads);
        Err("this stream cannot be produced into".to_owned())
    }

    /// A new sink that writes into this stream.
    async fn sink(&self) -> Result<Box<dyn Sink>, String> {
        Err("this stream has no sink".to_owned())
    }

    /// Every payload the stream durably holds, read outside any session,
    /// for a stream no source of the connector reads (a database table);
    /// `None` (the default) reads back through a new [`TestStream::source`]
    /// session.
    async fn stored(&self) -> Result<Option<Vec<Bytes>>, String> {
        Ok(None)
    }

    /// A fresh stream this stream's source sessions can write to in their
    /// exactly-once transactions (an output topic of the same cluster), for
    /// a source that claims `exactly_once`.
    async fn transaction_output(&self) -> Result<Box<dyn TestStream>, String> {
        Err("this stream has no output for transactions".to_owned())
    }

    /// Makes the group take partitions away from the session opened last,
    /// as a rebalance does: typically opens and returns a second member of
    /// the group. `None`: the same session gets the partitions back once it
    /// released them. For a source that claims [`Harness::group`].
    async fn rebalance(&self) -> Result<Option<Box<dyn Source>>, String> {
        Err("this stream's source has no group".to_owned())
    }
}

/// How an exactly-once session keeps rule 1 of [`crate::transaction`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transactions {
    /// Records become visible at commit and never after an abort.
    Atomic,
    /// Records may be durable once written, and are de-duplicated by their
    /// [`crate::RECORD_ID_HEADER`] when written again (a JetStream publish).
    Idempotent,
}

/// A connector as the suite sees it: its fixture, what it claims, and how
/// long to wait. Build it with [`Harness::new`] and the builder methods.
pub struct Harness {
    pub(crate) name: String,
    pub(crate) fixture: Arc<dyn Fixture>,
    pub(crate) source: Option<Capabilities>,
    pub(crate) sink: Option<Capabilities>,
    pub(crate) transactions: Transactions,
    pub(crate) group: bool,
    pub(crate) generated: bool,
    pub(crate) events: usize,
    pub(crate) wait: Duration,
    pub(crate) quiet: Duration,
    pub(crate) budget: Duration,
}

impl Harness {
    /// A connector named `name` with neither source nor sink claimed yet.
    pub fn new(name: &str, fixture: impl Fixture) -> Self {
        Self {
            name: name.to_owned(),
            fixture: Arc::new(fixture),
            source: None,
            sink: None,
            transactions: Transactions::Atomic,
            group: false,
            generated: false,
            events: 6,
            wait: Duration::from_secs(15),
            quiet: Duration::from_secs(1),
            budget: Duration::from_secs(120),
        }
    }

    /// The connector has a source claiming `capabilities` (usually its
    /// factory's `source_capabilities()`, or the configured builder's).
    pub fn source(mut self, capabilities: Capabilities) -> Self {
        self.source = Some(capabilities);
        self
    }

    /// The connector has a sink claiming `capabilities`.
    pub fn sink(mut self, capabilities: Capabilities) -> Self {
        self.sink = Some(capabilities);
        self
    }

    /// The exactly-once session de-duplicates instead of aborting
    /// atomically (see [`Transactions::Idempotent`]).
    pub fn idempotent_transactions(mut self) -> Self {
        self.transactions = Transactions::Idempotent;
        self
    }

    /// The source's partitions are assigned by a group, so the broker can
    /// revoke them ([`TestStream::rebalance`]): rule 4 is checked.
    pub fn group(mut self) -> Self {
        self.group = true;
        self
    }

    /// The source makes its own events (a generator): nothing is
    /// produced, and events are told apart by their payloads.
    pub fn generated(mut self) -> Self {
        self.generated = true;
        self
    }

    /// Events produced into each partition per check (default 6, at least 2).
    pub fn events_per_partition(mut self, events: usize) -> Self {
        self.events = events.max(2);
        self
    }

    /// The longest wait for something that should happen (default 15 s).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// How long the suite watches for something that must not happen
    /// (default 1 s).
    pub fn quiet(mut self, quiet: Duration) -> Self {
        self.quiet = quiet;
        self
    }

    /// The most one check may take, all waits included (default 120 s).
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }
}

/// Runs every check against the connector `harness` describes, prints the
/// report, and panics with it if any check failed. The one entry point of
/// the suite.
pub async fn run(harness: Harness) -> Report {
    let report = evaluate(harness).await;
    println!("{report}");
    assert!(!report.failed(), "{report}");
    report
}

/// Names checks to run (comma-separated, e.g.
/// `SPATE_CONFORMANCE=source-pause,source-order`), for working on one
/// check; the others are reported skipped. Unset: every check runs.
pub const FILTER_VARIABLE: &str = "SPATE_CONFORMANCE";

/// Runs every check and returns the report without judging it.
pub async fn evaluate(harness: Harness) -> Report {
    let harness = Arc::new(harness);
    let mut report = Report::new(&harness.name);
    let only = std::env::var(FILTER_VARIABLE).ok();
    for check in Check::ALL {
        let picked = only
            .as_deref()
            .is_none_or(|only| only.split(',').any(|name| name.trim() == check.name()));
        let outcome = match check.applies(&harness) {
            Err(reason) => Outcome::Skipped(reason),
            Ok(()) if !picked => Outcome::Skipped(format!("not named in ${FILTER_VARIABLE}")),
            Ok(()) => run_one(check, harness.clone()).await,
        };
        report.push(check, outcome);
    }
    report
}

/// One check in its own task, under the harness's budget: a panic or an
/// overrun is a failure of that check only.
async fn run_one(check: Check, harness: Arc<Harness>) -> Outcome {
    let budget = harness.budget;
    let task =
        tokio::spawn(
            async move { tokio::time::timeout(budget, checks::run(check, harness)).await },
        );
    match task.await {
        Ok(Ok(Ok(()))) => Outcome::Passed,
        Ok(Ok(Err(message))) => Outcome::Failed(message),
        Ok(Err(_)) => Outcome::Failed(format!("did not finish within {budget:?}")),
        Err(error) => Outcome::Failed(match error.try_into_panic() {
            Ok(panic) => format!("panicked: {}", panic_text(&*panic)),
            Err(error) => format!("task failed: {error}"),
        }),
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "(no message)".to_owned())
}
