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
//! [`Runtime::run`], never by loading; a function whose connectors cannot be
//! built stops the run before any event is read; every function drains and
//! commits before `run` returns.

use std::path::Path;
use std::sync::Arc;

use spate_connector::{SinkError, SourceError};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::engine::{
    self, EngineError, EngineOptions, FunctionPlan, FunctionReport, NamedSink, ProcessBudget,
    SessionHost,
};
use crate::handler::Registry;
use crate::pipeline::{self, FunctionSpec, LoadError, PipelineSpec};

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
            return options.clone();
        }
        let mut options = EngineOptions::default();
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
        let mut plans = Vec::new();
        for spec in specs {
            let pipeline = pipeline_name(&spec.path);
            for function in spec.functions {
                let plan = build_plan(function, pipeline.clone())
                    .await
                    .map_err(|error| located(error, &spec.path))?;
                plans.push(plan);
            }
        }
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

/// Checks every sink of the pipelines against its target without writing
/// (`spate validate --connect`); returns every problem, each a
/// [`RunError`]: settings that do not fit as [`RunError::Misconfigured`]
/// (at their places in the file), targets that cannot be reached as
/// [`RunError::BuildSink`].
pub async fn check_sinks(specs: &[PipelineSpec]) -> Vec<RunError> {
    let mut problems = Vec::new();
    for spec in specs {
        for function in &spec.functions {
            let sinks = function
                .outputs
                .iter()
                .map(|o| ("output", o))
                .chain(std::iter::once(("dead letter", &function.dead_letter)));
            for (role, sink) in sinks {
                if let Err(source) = sink.builder.check().await {
                    let error = RunError::BuildSink {
                        function: function.name.clone(),
                        role,
                        name: sink.name.clone(),
                        source,
                    };
                    problems.push(located(error, &spec.path));
                }
            }
        }
    }
    problems
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

async fn build_plan(function: FunctionSpec, pipeline: Arc<str>) -> Result<FunctionPlan, RunError> {
    let name = function.name.clone();
    // The loader made sure that under `exactly_once` either every output and
    // the dead letter store positions themselves (a database) or none does.
    let session_host = match function
        .outputs
        .iter()
        .chain(std::iter::once(&function.dead_letter))
        .all(|sink| sink.capabilities.exactly_once && sink.capabilities.durable_positions)
    {
        true => SessionHost::Sink,
        false => SessionHost::Source,
    };
    let mut sources = Vec::new();
    for input in &function.inputs {
        let source = input
            .builder
            .build()
            .await
            .map_err(|source| RunError::BuildSource {
                function: name.clone(),
                kind: input.kind.clone(),
                source,
            })?;
        sources.push(source);
    }
    let mut outputs = Vec::new();
    for output in &function.outputs {
        let sink = output
            .builder
            .build()
            .await
            .map_err(|source| RunError::BuildSink {
                function: name.clone(),
                role: "output",
                name: output.name.clone(),
                source,
            })?;
        outputs.push(NamedSink {
            name: Arc::from(output.name.as_str()),
            sink: Arc::from(sink),
            encoder: (!output.format.is_raw()).then(|| output.format.encoder()),
        });
    }
    let dead_letter = function
        .dead_letter
        .builder
        .build()
        .await
        .map_err(|source| RunError::BuildSink {
            function: name.clone(),
            role: "dead letter",
            name: function.dead_letter.name.clone(),
            source,
        })?;
    Ok(FunctionPlan {
        pipeline,
        name: Arc::from(name.as_str()),
        handler: function.handler.clone(),
        sources,
        outputs,
        decoders: function
            .inputs
            .iter()
            .map(|input| (!input.format.is_raw()).then(|| input.format.decoder()))
            .collect(),
        dead_letter: Arc::from(dead_letter),
        policy: function.policy,
        session_host,
    })
}

/// A token cancelled by the first SIGTERM or SIGINT; a second signal exits
/// the process at once with status 130. Must be called inside a Tokio
/// runtime; the handlers are registered before it returns.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    #[cfg(unix)]
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => Some(term),
        Err(error) => {
            warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops spate gracefully");
            None
        }
    };
    #[cfg(unix)]
    let mut interrupt =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    tokio::spawn(async move {
        for round in 0..2 {
            #[cfg(unix)]
            {
                let term_recv = async {
                    match term.as_mut() {
                        Some(term) => term.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let interrupt_recv = async {
                    match interrupt.as_mut() {
                        Some(interrupt) => interrupt.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = term_recv => {}
                    _ = interrupt_recv => {}
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
            if round == 0 {
                info!("shutdown requested: stopping intake, draining, committing (signal again to exit at once)");
                cancel.cancel();
            }
        }
        warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
    token
}
