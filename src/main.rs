//! The `spate` command line: `run`, `validate` and `test` pipeline files.
//!
//! Exit status: 0 when every function ended cleanly (sources ended or a
//! graceful shutdown), 1 when a file is invalid or a function failed, 130
//! ([`runtime::EXIT_SECOND_SIGNAL`]) when a second signal cut the drain
//! short, 124 ([`runtime::EXIT_DRAIN_OVERRUN`]) when the drain outlasted the
//! longest `drain_timeout` plus [`runtime::DRAIN_OVERRUN_GRACE`].

mod test_command;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use spate::engine::FunctionReport;
use spate::pipeline::{self, LoadError};
use spate::runtime::{self, Runtime};
use tracing_subscriber::EnvFilter;

/// spate runs functions subscribed to event streams.
///
/// A pipeline file (YAML) binds inputs — Kafka topics, NATS subjects,
/// JetStream streams, MQTT topics, files, a synthetic generator — to a handler
/// function, and says where its outputs and its dead letters go, in which
/// order events are handled, how far concurrency may scale, how failures are
/// retried and what delivery promise holds.
///
/// Start with the demo, which needs no broker:
///
///     spate run pipelines/demo.yaml
#[derive(Parser)]
#[command(name = "spate", version, about, long_about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run every function of the given pipeline files.
    ///
    /// Runs until every source ends (files, a generator with a `count`) or
    /// until SIGTERM/SIGINT: then intake stops, in-flight events are drained
    /// (up to each function's `drain_timeout`), finished positions are
    /// committed, and spate exits 0. A second signal exits at once (status
    /// 130), whatever the handlers do; a drain that outlasts the longest
    /// `drain_timeout` by a few seconds (a handler that never returns) is
    /// ended with status 124. What was not committed is read again on the next start.
    ///
    /// Prints a summary per function on stderr when it ends. Log level:
    /// `SPATE_LOG=debug` (or any `tracing` filter, e.g. `spate=debug`).
    ///
    /// Example: spate run pipelines/demo.yaml
    Run {
        /// Pipeline files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Serve Prometheus metrics and health checks here instead of the
        /// file's `settings.metrics_address` (`off` to disable).
        #[arg(long, value_name = "ADDR|off")]
        metrics_address: Option<String>,
    },
    /// Check pipeline files without connecting to anything.
    ///
    /// Reports every problem of every file as `file:line:column: message`
    /// with a hint, and exits 1 if there was any. With --connect it also
    /// connects to every input, output and dead-letter target and checks
    /// the settings against it without reading or writing: the broker
    /// answers, topics and streams exist, a database table's columns fit
    /// the mapping; whatever `run` would refuse when connecting.
    ///
    /// Example: spate validate pipelines/*.yaml
    Validate {
        /// Pipeline files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also check every input, output and dead letter against its target.
        #[arg(long)]
        connect: bool,
    },
    /// Run a function over recorded events, with no broker, and check what
    /// each came to.
    ///
    /// Without --input, runs the `tests:` block of each file: recorded
    /// events and the outputs or dead letter each must come to; exits 1 on
    /// any mismatch, with a diff. With --input FILE (JSON Lines: one event
    /// per line, either any JSON value as the payload or
    /// `{"payload": ..., "key": ..., "headers": {...}}`), prints what each
    /// event comes to; --expect FILE (JSON Lines, one expectation per input
    /// line: `{"outputs": [{"payload": ..., "to": ...}]}` or
    /// `{"dead_letter": {"reason": ...}}`) turns that into a check.
    ///
    /// The function's own handler, retry policy and output routing decide
    /// each event, as in `spate run`; retries happen without backoff.
    ///
    /// Example: spate test pipelines/demo.yaml
    Test {
        /// Pipeline files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Recorded events (JSON Lines) to run instead of the `tests:` block.
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
        /// The function to run them through (needed when the file has
        /// several).
        #[arg(long, value_name = "NAME")]
        function: Option<String>,
        /// Expected outcomes (JSON Lines), one per --input line.
        #[arg(long, value_name = "FILE")]
        expect: Option<PathBuf>,
    },
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("SPATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal: a log piped to a file or a
    // collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Validate { files, connect } => match connect {
            false => validate(&files),
            true => block_on(validate_connected(&files)),
        },
        Command::Test {
            files,
            input,
            function,
            expect,
        } => block_on(test_command::test(test_command::TestArgs {
            files,
            input,
            function,
            expect,
        })),
        Command::Run {
            files,
            metrics_address,
        } => block_on(run(&files, metrics_address.as_deref())),
    }
}

/// How long the async runtime waits for tasks still running (a handler the
/// drain gave up on) once a command is done, before the process exits.
const RUNTIME_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs a command's future on a multi-threaded runtime; an error ends the
/// process with status 1 after printing it with its causes.
fn block_on(command: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    let tokio = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(tokio) => tokio,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = tokio.block_on(command);
    // A handler that never yields holds its worker: do not wait for it.
    tokio.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", spate::error_chain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn print_load_errors(errors: &[LoadError]) {
    let mut stderr = std::io::stderr().lock();
    for error in errors {
        let _ = write!(stderr, "{}", pipeline::render_load_error(error));
    }
}

/// Promises a loaded file asks for that its sources cannot keep (stderr).
fn print_warnings(spec: &pipeline::PipelineSpec) {
    if !spec.warnings.is_empty() {
        let text = pipeline::render_warnings(&spec.path, &spec.warnings);
        let _ = write!(std::io::stderr().lock(), "{text}");
    }
}

fn validate(files: &[PathBuf]) -> ExitCode {
    let runtime = Runtime::new();
    let mut failed = false;
    for file in files {
        match pipeline::load_file(file, runtime.registry()) {
            Ok(spec) => {
                print_warnings(&spec);
                let count = spec.functions.len();
                let noun = if count == 1 { "function" } else { "functions" };
                println!("{}: ok ({count} {noun})", file.display());
            }
            Err(error) => {
                failed = true;
                print_load_errors(std::slice::from_ref(&error));
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `validate --connect`: the offline checks, then every sink against its
/// target.
async fn validate_connected(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    if validate(files) != ExitCode::SUCCESS {
        return Ok(ExitCode::FAILURE);
    }
    let runtime = Runtime::new();
    let specs = match runtime.load(files) {
        Ok(specs) => specs,
        Err(errors) => {
            print_load_errors(&errors.0);
            return Ok(ExitCode::FAILURE);
        }
    };
    let problems = runtime::check_connectors(&specs).await;
    for problem in &problems {
        match problem {
            runtime::RunError::Misconfigured(errors) => print_load_errors(&errors.0),
            other => eprintln!("error: {}", spate::error_chain(other)),
        }
    }
    if problems.is_empty() {
        println!("every input, output and dead letter reached its target and fits it");
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

async fn run(files: &[PathBuf], metrics_address: Option<&str>) -> anyhow::Result<ExitCode> {
    // First, so a SIGTERM while connectors connect still stops cleanly.
    let signals = runtime::watch_signals()?;
    let shutdown = signals.token();
    let mut runtime = Runtime::new();
    let mut specs = match runtime.load(files) {
        Ok(specs) => specs,
        Err(errors) => {
            print_load_errors(&errors.0);
            return Ok(ExitCode::FAILURE);
        }
    };
    specs.iter().for_each(print_warnings);
    signals.exit_after_drain(runtime::longest_drain(&specs));
    if let Some(address) = metrics_address {
        let parsed: Option<SocketAddr> = match address {
            "off" => None,
            text => Some(text.parse().with_context(|| {
                format!("--metrics-address `{text}` is not host:port or `off`")
            })?),
        };
        for spec in &mut specs {
            spec.settings.metrics_address = parsed;
        }
    }
    // The recorder must be installed before any function registers its
    // metric handles, so the endpoint starts first.
    let health = spate::serve::Health::new();
    health.stop_with(&shutdown);
    runtime.report_readiness(health.sources().clone());
    let server = match specs.first().and_then(|s| s.settings.metrics_address) {
        Some(address) => Some(spate::serve::start(address, health.clone()).await?),
        None => None,
    };
    health.set_ready(true);
    let result = runtime.run(specs, shutdown).await;
    health.set_ready(false);
    if let Some(server) = server {
        server.shutdown().await;
    }
    let reports = match result {
        Ok(reports) => reports,
        Err(runtime::RunError::Misconfigured(errors)) => {
            print_load_errors(&errors.0);
            return Ok(ExitCode::FAILURE);
        }
        Err(error) => return Err(error.into()),
    };
    print_summary(&reports);
    Ok(ExitCode::SUCCESS)
}

fn print_summary(reports: &[FunctionReport]) {
    let mut stderr = std::io::stderr().lock();
    for r in reports {
        let seconds = r.elapsed.as_secs_f64();
        let rate = if seconds > 0.0 {
            r.events_in as f64 / seconds
        } else {
            0.0
        };
        let _ = writeln!(
            stderr,
            "{}: {} events in {:.2} s ({:.0} events/s): {} handled, {} outputs written, {} dead-lettered, {} retries",
            r.function, r.events_in, seconds, rate, r.handled, r.outputs, r.dead_lettered, r.retries
        );
    }
}
