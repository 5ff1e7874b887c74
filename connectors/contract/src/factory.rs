//! How a connector is named in a pipeline file, validated and built.
//!
//! Building is two-phase, so `spate validate` can check a file without
//! touching a broker: [`ConnectorFactory::source`] / [`ConnectorFactory::sink`]
//! only read configuration (collecting every error in the [`ConfigReader`]),
//! and the returned builder does the I/O later, when the pipeline runs.
//!
//! # Checking a target (`spate validate --connect`)
//!
//! Every builder whose connector has a target (a broker, a database)
//! implements `check` ([`SourceBuilder::check`], [`SinkBuilder::check`]):
//! it connects, checks what [`SourceBuilder::build`] / [`SinkBuilder::build`]
//! would check when connecting (the target answers within the connector's
//! connect timeout, the topic or stream exists, settings the target must
//! agree with do) and lets go, reading and writing nothing. Whatever `build`
//! would refuse, `check` refuses too; the defaults, which check nothing, are
//! for connectors without a target (files, the generator).
//!
//! An error says which address it could not reach or what it found there;
//! the runtime places it at the input or output in the pipeline file.

use async_trait::async_trait;

use crate::config::ConfigReader;
use crate::error::{SinkError, SourceError};
use crate::sink::Sink;
use crate::source::Source;
use crate::transaction::TransactionalTarget;

/// What a connector can promise, checked when a pipeline file is loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Can take part in `exactly_once` delivery (transactional or
    /// idempotent writes tied to source positions).
    pub exactly_once: bool,
    /// For a source: keeps durable positions, so `at_least_once` means
    /// something (a core-NATS subscription, for example, does not). For a
    /// sink: stores source positions itself, in the same transactions as
    /// its records (a database), so it can open the exactly-once session
    /// ([`Sink::begin_exactly_once`]).
    pub durable_positions: bool,
    /// For a source: can resume from positions a sink stored
    /// ([`Source::resume_from`]), so it can feed
    /// `exactly_once` into a database. Always false for a sink.
    pub resumable: bool,
}

impl Capabilities {
    /// Promises nothing: no exactly-once, no durable positions, no resuming
    /// (a core-NATS subscription, a stdout sink). Every connector's
    /// capabilities start here and add what it keeps, so each constant
    /// names only its promises.
    pub const NONE: Capabilities = Capabilities {
        exactly_once: false,
        durable_positions: false,
        resumable: false,
    };

    /// These capabilities, and exactly-once.
    pub const fn with_exactly_once(self) -> Capabilities {
        Capabilities {
            exactly_once: true,
            ..self
        }
    }

    /// These capabilities, and durable positions.
    pub const fn with_durable_positions(self) -> Capabilities {
        Capabilities {
            durable_positions: true,
            ..self
        }
    }

    /// These capabilities, and resuming from stored positions.
    pub const fn with_resumable(self) -> Capabilities {
        Capabilities {
            resumable: true,
            ..self
        }
    }
}

/// What one configured source can promise when it is less than what its
/// kind can, and the setting that would lift the difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredCapabilities {
    /// What this source, as configured, can promise.
    pub capabilities: Capabilities,
    /// How to get the rest, for the error a pipeline asking for more gets
    /// (e.g. "set `sequence:` to the field each device numbers its
    /// readings with").
    pub hint: String,
}

/// Builds a source once the pipeline runs.
#[async_trait]
pub trait SourceBuilder: Send + Sync {
    /// Connects and returns the source.
    async fn build(&self) -> Result<Box<dyn Source>, SourceError>;

    /// Connects and checks the settings against the target without reading
    /// anything, for `spate validate --connect` (see the module docs): an
    /// unreachable target or one `build` would refuse is an error. The
    /// default checks nothing.
    async fn check(&self) -> Result<(), SourceError> {
        Ok(())
    }

    /// Whether this source's exactly-once session could hold records for
    /// `target` (see [`TransactionSession::accepts`](crate::TransactionSession::accepts)),
    /// decided from the settings alone so the loader can refuse what `run`
    /// would: the reason when it could not. The default accepts anything.
    fn accepts(&self, target: &TransactionalTarget) -> Result<(), String> {
        let _ = target;
        Ok(())
    }

    /// For `spate validate --connect` of an `exactly_once` function:
    /// connects and checks what `run` would check of `targets` (the
    /// function's outputs and dead letter, see [`SinkBuilder::target`])
    /// before it writes to them in this source's transactions, without
    /// writing anything. The default checks nothing.
    async fn check_exactly_once(&self, targets: &[TransactionalTarget]) -> Result<(), SourceError> {
        let _ = targets;
        Ok(())
    }

    /// What this source as configured can promise, when that is less than
    /// its kind's [`ConnectorFactory::source_capabilities`]; `None` (the
    /// default) when it is all of them.
    fn capabilities(&self) -> Option<ConfiguredCapabilities> {
        None
    }
}

/// Builds a sink once the pipeline runs.
#[async_trait]
pub trait SinkBuilder: Send + Sync {
    /// Connects and returns the sink.
    async fn build(&self) -> Result<Box<dyn Sink>, SinkError>;

    /// Connects and checks the settings against the target without writing
    /// anything, for `spate validate --connect` (see the module docs): an
    /// unreachable target is [`SinkError::Unavailable`]; settings that do
    /// not fit what was found (a database table's columns against the
    /// mapping) are [`SinkError::Misconfigured`] with every problem at its
    /// place in the file. The default checks nothing.
    async fn check(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Where the built sink will write, as its
    /// [`Sink::transactional_target`](crate::Sink::transactional_target)
    /// will say, known before it is built; `None` (the default) for a sink
    /// that takes no part in a source's transactions.
    fn target(&self) -> Option<TransactionalTarget> {
        None
    }
}

/// One connector family, as named by `type:` in a pipeline file.
pub trait ConnectorFactory: Send + Sync {
    /// The `type:` name (`kafka`, `file`, `generate`, …).
    fn kind(&self) -> &'static str;

    /// What sources of this kind can promise, or `None` if it has no source.
    fn source_capabilities(&self) -> Option<Capabilities>;

    /// What sinks of this kind can promise, or `None` if it has no sink.
    fn sink_capabilities(&self) -> Option<Capabilities>;

    /// Reads a source's settings; errors go into `config`.
    fn source(&self, config: &mut ConfigReader<'_>) -> Option<Box<dyn SourceBuilder>> {
        let _ = config;
        None
    }

    /// Reads a sink's settings; errors go into `config`.
    fn sink(&self, config: &mut ConfigReader<'_>) -> Option<Box<dyn SinkBuilder>> {
        let _ = config;
        None
    }
}

/// A connector family whose name and capabilities are constants, as every
/// built-in one's are. Implementing it implements [`ConnectorFactory`]: the
/// family states each fact once, and the accessors are written here once.
pub trait ConnectorFamily: Send + Sync {
    /// The `type:` name ([`ConnectorFactory::kind`]).
    const KIND: &'static str;

    /// What its sources can promise; `None` (the default) if it has none.
    const SOURCE: Option<Capabilities> = None;

    /// What its sinks can promise; `None` (the default) if it has none.
    const SINK: Option<Capabilities> = None;

    /// Reads a source's settings ([`ConnectorFactory::source`]).
    fn read_source(&self, _config: &mut ConfigReader<'_>) -> Option<Box<dyn SourceBuilder>> {
        None
    }

    /// Reads a sink's settings ([`ConnectorFactory::sink`]).
    fn read_sink(&self, _config: &mut ConfigReader<'_>) -> Option<Box<dyn SinkBuilder>> {
        None
    }
}

impl<F: ConnectorFamily> ConnectorFactory for F {
    fn kind(&self) -> &'static str {
        F::KIND
    }

    fn source_capabilities(&self) -> Option<Capabilities> {
        F::SOURCE
    }

    fn sink_capabilities(&self) -> Option<Capabilities> {
        F::SINK
    }

    fn source(&self, config: &mut ConfigReader<'_>) -> Option<Box<dyn SourceBuilder>> {
        self.read_source(config)
    }

    fn sink(&self, config: &mut ConfigReader<'_>) -> Option<Box<dyn SinkBuilder>> {
        self.read_sink(config)
    }
}
