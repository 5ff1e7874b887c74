//! The validated, typed form of a pipeline file: what the engine runs.
//!
//! Every value here has passed validation; defaults are applied by the
//! loader (`pipeline::load`), the only place that knows them.

use std::path::PathBuf;
use std::sync::Arc;

use spate_connector::format::Format;
use spate_connector::{Capabilities, SinkBuilder, SourceBuilder, Span};

use spate_connector::Handler;
pub use spate_engine::policy::{
    ConcurrencySpec, Delivery, InFlightLimits, Ordering, RetryPolicy, RunPolicy, TransactionPolicy,
};

/// A loaded pipeline file.
pub struct PipelineSpec {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its functions, in file order.
    pub functions: Vec<FunctionSpec>,
    /// Process-wide settings.
    pub settings: SettingsSpec,
    /// The file's `tests:` block, run by `spate test`.
    pub tests: Vec<PipelineTest>,
    /// Promises the file asks for that its sources cannot keep under
    /// failures (see `load::promises`): printed by `validate` and `run`,
    /// never fatal.
    pub warnings: Vec<spate_connector::ConfigError>,
}

/// One test of the `tests:` block: recorded events for one function and
/// what each should come to.
#[derive(Debug, Clone)]
pub struct PipelineTest {
    /// What it checks.
    pub name: String,
    /// The function it runs.
    pub function: String,
    /// Where it is declared.
    pub span: Span,
    /// Its events, in order.
    pub events: Vec<TestEvent>,
}

/// One recorded event of a test and its expected outcome.
#[derive(Debug, Clone)]
pub struct TestEvent {
    /// Where it is declared.
    pub span: Span,
    /// The event, as a source would deliver it.
    pub event: spate_connector::Event,
    /// What it should come to; `None` only prints the outcome.
    pub expect: Option<crate::samples::Expectation>,
}

/// Process-wide settings (`settings:` in the file).
#[derive(Debug, Clone, PartialEq)]
pub struct SettingsSpec {
    /// Prometheus/health endpoint address, `None` to disable.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// In-flight bound over every function of the process.
    pub max_in_flight: InFlightLimits,
}

/// One input of a function.
pub struct SourceSpec {
    /// Connector kind (`type:`).
    pub kind: String,
    /// Builds the source when the pipeline runs.
    pub builder: Box<dyn SourceBuilder>,
    /// What the source can promise.
    pub capabilities: Capabilities,
    /// How its payloads are decoded before the handler (`format:`).
    pub format: Arc<dyn Format>,
    /// Where it is declared.
    pub span: Span,
}

/// One output or dead-letter destination of a function.
pub struct SinkSpec {
    /// The output's name, which handlers use to route (`name:`, else the kind).
    pub name: String,
    /// Connector kind (`type:`).
    pub kind: String,
    /// Builds the sink when the pipeline runs.
    pub builder: Arc<dyn SinkBuilder>,
    /// What the sink can promise.
    pub capabilities: Capabilities,
    /// How handler outputs are encoded (`format:`; dead letters keep the
    /// event's bytes as they came, so theirs is always raw).
    pub format: Arc<dyn Format>,
    /// Where it is declared.
    pub span: Span,
}

/// One function: inputs → handler → outputs, and how it is run.
pub struct FunctionSpec {
    /// Unique within the file.
    pub name: String,
    /// Where it is declared.
    pub span: Span,
    /// Its sources.
    pub inputs: Vec<SourceSpec>,
    /// Registered name of the handler.
    pub handler_name: String,
    /// The handler, resolved and configured.
    pub handler: Arc<dyn Handler>,
    /// Where outputs go.
    pub outputs: Vec<SinkSpec>,
    /// Where events that cannot be handled go.
    pub dead_letter: SinkSpec,
    /// How the engine runs it.
    pub policy: RunPolicy,
}
