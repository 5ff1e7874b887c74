//! The library entry point: register handlers, load pipeline files, run
//! every function they declare until the sources end or shutdown is asked.
//!
//! ```no_run
//! use spate::{Context, Event, HandlerError, Output, Runtime};
//!
//! async fn enrich(event: Event, _ctx: &Context) -> Result<Vec<Output>, HandlerError> {
//!     Ok(vec![Output::from_event(&event, event.payload.clone())])
//! }
//!
//! # async fn example() -> anyhow::Result<()> {
//! let mut runtime = Runtime::new();
//! runtime.registry_mut().register("enrich", enrich);
//! let pipelines = runtime.load(&["pipelines/demo.yaml"])?;
//! let shutdown = spate::runtime::shutdown_on_signals();
//! let reports = runtime.run(pipelines, shutdown).await?;
//! # Ok(()) }
//! ```
//!
//! Guarantees: connectors are built (and so brokers reached) only by
//! [`Runtime::run`], never by loading; every function's connectors are built
//! at once, a target that cannot be reached yet is retried with backoff and
//! reported once (see `connect`), and a connector that cannot work as
//! configured stops the run before any event is read; every function drains
//! and commits before `run` returns. Signals are handled on a thread of
//! their own (see [`watch_signals`]), and every source's readiness is
//! recorded for `/health/ready` (see [`Runtime::report_readiness`]).

use std::path::Path;
use std::sync::Arc;

use spate_connector::{ConfigError, SinkError, SourceError, Span, TransactionalTarget};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::engine::readiness::{Readiness, SourceKey};
use crate::engine::{self, EngineError, EngineOptions, FunctionReport, ProcessBudget};
use crate::pipeline::{self, Delivery, LoadError, PipelineSpec};
use crate::registry::Registry;

mod connect;
mod signals;

pub use connect::{CONNECT_RETRY_FIRST, CONNECT_RETRY_MAX};

pub use signals::{
    watch_signals, SignalError, SignalWatch, DRAIN_OVERRUN_GRACE, EXIT_DRAIN_OVERRUN,
    EXIT_SECOND_SIGNAL,
};

/// Why a run could not start or did not end cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A source could not be built (broker unreachable, file missing, …).
    #[error("function `{function}`: cannot open input `{kind}`: {source}")]
    BuildSource {
        /// The function.
        function: String,
        /// The connector kind.
        kind: String,
        /// Why.
        #[source]
        source: SourceError,
    },
    /// A sink could not be built.
    #[error("function `{function}`: cannot open {role} `{name}`: {source}")]
    BuildSink {
        /// The function.
        function: String,
        /// `output` or `dead letter`.
        role: &'static str,
        /// The output's name.
        name: String,
        /// Why.
        #[source]
        source: SinkError,
    },
    /// A connector's settings do not fit what it found when it connected
    /// (a mapping naming a column its table does not have): every problem
    /// at its place in the pipeline file, as `spate validate` reports.
    #[error("{0}")]
    Misconfigured(LoadErrors),
    /// A function failed while running.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A function's task panicked (a bug in spate).
    #[error("function task failed: {0}")]
    Join(String),
}

/// Every problem found while loading a set of pipeline files; displays as
/// the `file:line:column: message` lines `spate validate` prints.
#[derive(Debug)]
pub struct LoadErrors(pub Vec<LoadError>);

impl std::fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for error in &self.0 {
            f.write_str(pipeline::render_load_error(error).trim_end())?;
            f.write_str("\n")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

/// Handlers, connectors and engine options; runs pipelines.
pub struct Runtime {
    registry: Registry,
    options: Option<EngineOptions>,
    readiness: Readiness,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    /// A runtime with the built-in handlers and broker-less connectors.
    pub fn new() -> Self {
        Self {
            registry: Registry::with_builtins(),
            options: None,
            readiness: Readiness::new(),
        }
    }

    /// The registry, to add handlers and connectors.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records every source's readiness on `readiness` (the board
    /// [`crate::serve::Health::sources`] reads) in the runs that follow;
    /// overrides the board of options set with
    /// [`set_engine_options`](Self::set_engine_options).
    pub fn report_readiness(&mut self, readiness: Readiness) {
        self.readiness = readiness;
    }

    /// Overrides the engine options (otherwise taken from the first file's
    /// `settings`).
    pub fn set_engine_options(&mut self, options: EngineOptions) {
        self.options = Some(options);
    }

    /// Loads and validates pipeline files; every problem of every file is
    /// reported.
    pub fn load<P: AsRef<Path>>(&self, paths: &[P]) -> Result<Vec<PipelineSpec>, LoadErrors> {
        let mut specs = Vec::new();
        let mut errors = Vec::new();
        for path in paths {
            match pipeline::load_file(path.as_ref(), &self.registry) {
                Ok(spec) => specs.push(spec),
                Err(error) => errors.push(error),
            }
        }
        if errors.is_empty() {
            Ok(specs)
        } else {
            Err(LoadErrors(errors))
        }
    }

    /// The engine options a run of `specs` uses.
    pub fn engine_options(&self, specs: &[PipelineSpec]) -> EngineOptions {
        if let Some(options) = &self.options {
            return EngineOptions {
                readiness: self.readiness.clone(),
                ..options.clone()
            };
        }
        let mut options = EngineOptions {
            readiness: self.readiness.clone(),
            ..EngineOptions::default()
        };
        if let Some(first) = specs.first() {
            if specs.iter().any(|s| s.settings != first.settings) {
                warn!(
                    file = %first.path.display(),
                    "pipeline files disagree on `settings`; using those of the first file"
                );
            }
            options.budget = Arc::new(ProcessBudget::new(first.settings.max_in_flight));
        }
        options
    }

    /// Builds every function's connectors, then runs all functions until
    /// their sources end or `shutdown` is cancelled. Returns one report per
    /// function, in file order.
    pub async fn run(
        &self,
        specs: Vec<PipelineSpec>,
        shutdown: CancellationToken,
    ) -> Result<Vec<FunctionReport>, RunError> {
        let options = self.engine_options(&specs);
        // Every source is expected before any is built, so readiness
        // waits for all of them.
        for spec in &specs {
            let pipeline = pipeline_name(&spec.path);
            for function in &spec.functions {
                for input in 0..function.inputs.len() {
                    options.readiness.expect(SourceKey {
                        pipeline: pipeline.clone(),
                        function: Arc::from(function.name.as_str()),
                        input,
                    });
                }
            }
        }
        // Every function's connectors at once, so each unreachable target
        // is reported as soon as it is found, not after another's retries.
        let mut builds = Vec::new();
        for spec in specs {
            let pipeline = pipeline_name(&spec.path);
            for function in spec.functions {
                let (pipeline, path, shutdown) = (pipeline.clone(), spec.path.clone(), &shutdown);
                builds.push(async move {
                    connect::build_plan(function, pipeline, shutdown)
                        .await
                        .map_err(|error| located(error, &path))
                });
            }
        }
        let built = futures::future::try_join_all(builds).await?;
        // `None`: stopped while waiting for a target; nothing was read.
        let Some(plans) = built.into_iter().collect::<Option<Vec<_>>>() else {
            return Ok(Vec::new());
        };
        let mut tasks = JoinSet::new();
        let count = plans.len();
        for (index, plan) in plans.into_iter().enumerate() {
            let options = options.clone();
            let shutdown = shutdown.clone();
            tasks
                .spawn(async move { (index, engine::run_function(plan, options, shutdown).await) });
        }
        info!(functions = count, "running");
        let mut reports: Vec<Option<FunctionReport>> = vec![None; count];
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((index, Ok(report))) => reports[index] = Some(report),
                Ok((_, Err(error))) => {
                    // One function failing stops the others cleanly.
                    shutdown.cancel();
                    first_error.get_or_insert(RunError::Engine(error));
                }
                Err(join) => {
                    shutdown.cancel();
                    first_error.get_or_insert(RunError::Join(join.to_string()));
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(reports.into_iter().flatten().collect()),
        }
    }
}

/// Checks every input, output and dead letter of the pipelines against its
/// target without reading or writing (`spate validate --connect`), all at
/// once; returns every problem, each as [`RunError::Misconfigured`] at its
/// place in the file: settings that do not fit where they are about, a
/// target that cannot be reached (or that `run` would refuse) at the input
/// or output that names it.
pub async fn check_connectors(specs: &[PipelineSpec]) -> Vec<RunError> {
    let mut checks: Vec<futures::future::BoxFuture<'_, Option<RunError>>> = Vec::new();
    for spec in specs {
        for (f, function) in spec.functions.iter().enumerate() {
            let targets: Vec<TransactionalTarget> = match function.policy.delivery {
                Delivery::ExactlyOnce => function
                    .outputs
                    .iter()
                    .chain(std::iter::once(&function.dead_letter))
                    .filter_map(|sink| sink.builder.target())
                    .collect(),
                _ => Vec::new(),
            };
            for (i, input) in function.inputs.iter().enumerate() {
                let targets = targets.clone();
                checks.push(Box::pin(async move {
                    let checked = match input.builder.check().await {
                        Ok(()) if !targets.is_empty() => {
                            input.builder.check_exactly_once(&targets).await
                        }
                        other => other,
                    };
                    let error = checked.err()?;
                    Some(placed(
                        &spec.path,
                        input.span,
                        format!("functions[{f}].inputs[{i}]"),
                        format!(
                            "function `{}`: input `{}`: {error}",
                            function.name, input.kind
                        ),
                    ))
                }));
            }
            let sinks = function
                .outputs
                .iter()
                .map(|o| ("output", o))
                .chain(std::iter::once(("dead letter", &function.dead_letter)));
            for (role, sink) in sinks {
                checks.push(Box::pin(async move {
                    match sink.builder.check().await.err()? {
                        SinkError::Misconfigured { problems, .. } => {
                            Some(RunError::Misconfigured(LoadErrors(vec![
                                LoadError::Invalid {
                                    path: spec.path.clone(),
                                    errors: problems,
                                },
                            ])))
                        }
                        error => Some(placed(
                            &spec.path,
                            sink.span,
                            format!("functions[{f}].{role}"),
                            format!(
                                "function `{}`: {role} `{}`: {error}",
                                function.name, sink.name
                            ),
                        )),
                    }
                }));
            }
        }
    }
    futures::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// One problem at `span` of the file at `path`.
fn placed(path: &Path, span: Span, at: String, message: String) -> RunError {
    RunError::Misconfigured(LoadErrors(vec![LoadError::Invalid {
        path: path.to_path_buf(),
        errors: vec![ConfigError {
            span,
            path: at,
            message,
            hint: None,
        }],
    }]))
}

/// A misconfigured sink's problems, placed in the file they are about.
fn located(error: RunError, path: &Path) -> RunError {
    match error {
        RunError::BuildSink {
            source: SinkError::Misconfigured { problems, .. },
            ..
        } => RunError::Misconfigured(LoadErrors(vec![LoadError::Invalid {
            path: path.to_path_buf(),
            errors: problems,
        }])),
        other => other,
    }
}

/// A pipeline's name: its file's name without the extension.
fn pipeline_name(path: &Path) -> Arc<str> {
    Arc::from(
        path.file_stem()
            .map(|stem| stem.to_string_lossy())
            .unwrap_or_default()
            .as_ref(),
    )
}

/// A token cancelled by the first SIGTERM or SIGINT; a second signal exits
/// the process at once with status [`EXIT_SECOND_SIGNAL`], whatever the
/// handlers do (see [`watch_signals`], which also bounds the drain). Call it
/// once per process.
pub fn shutdown_on_signals() -> CancellationToken {
    match watch_signals() {
        Ok(watch) => watch.token(),
        Err(error) => {
            warn!(%error, "spate cannot be stopped gracefully by a signal");
            CancellationToken::new()
        }
    }
}

/// The longest `drain_timeout` of every function of `specs`: what
/// [`SignalWatch::exit_after_drain`] needs.
pub fn longest_drain(specs: &[PipelineSpec]) -> std::time::Duration {
    specs
        .iter()
        .flat_map(|spec| &spec.functions)
        .map(|function| function.policy.drain_timeout)
        .max()
        .unwrap_or_default()
}
