//! Building a connector when its target may be down: retried with backoff
//! until it connects, a setting that cannot work fails at once.
//!
//! # Guarantees
//!
//! - **Reported once per outage.** The first failed attempt is logged as a
//!   warning with the connector's own error (which names the address); the
//!   retries after it are logged at debug level only, and connecting after
//!   a failure is logged once. Every connector fails an attempt on a refused
//!   connection at once (Kafka within [`spate_kafka::probe::REFUSED_WITHIN`]),
//!   so the warning comes within 2 s of the start; a target that accepts
//!   connections but does not answer gets its `connect_timeout` first.
//! - **Backoff.** Attempts are [`CONNECT_RETRY_FIRST`] apart, doubling (with
//!   jitter) up to [`CONNECT_RETRY_MAX`].
//! - **Stoppable.** A shutdown while waiting ends the wait: nothing was
//!   read, so nothing needs draining.
//! - **Only what may pass is retried.** An error the connector marks as
//!   permanent (a missing stream, refused credentials) ends the run.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::RunError;
use crate::engine::{backoff, FunctionPlan, NamedSink, SessionHost};
use crate::pipeline::FunctionSpec;

/// The wait after the first failed attempt to connect.
pub const CONNECT_RETRY_FIRST: Duration = Duration::from_secs(1);

/// The longest wait between attempts to connect.
pub const CONNECT_RETRY_MAX: Duration = Duration::from_secs(30);

/// An error building a connector: whether another attempt may succeed.
pub trait BuildError: Display {
    /// True when the target may come back (refused, unreachable, timed out);
    /// false for a setting that cannot work.
    fn retryable(&self) -> bool;
}

impl BuildError for spate_connector::SourceError {
    fn retryable(&self) -> bool {
        self.is_retryable()
    }
}

impl BuildError for spate_connector::SinkError {
    fn retryable(&self) -> bool {
        self.is_retryable()
    }
}

/// Runs `attempt` until it succeeds, fails for good (an error that is not
/// [`BuildError::retryable`]) or `shutdown` is cancelled (`Ok(None)`).
/// `what` names the connector in the log (`function `f`: input `kafka``).
pub async fn until_connected<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> Result<Option<T>, E>
where
    E: BuildError,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut failures: u32 = 0;
    loop {
        let result = tokio::select! {
            result = attempt() => result,
            () = shutdown.cancelled() => return Ok(None),
        };
        let error = match result {
            Ok(connected) => {
                if failures > 0 {
                    info!(connector = what, failed_attempts = failures, "connected");
                }
                return Ok(Some(connected));
            }
            Err(error) if error.retryable() => error,
            Err(error) => return Err(error),
        };
        failures = failures.saturating_add(1);
        let wait = backoff::delay(CONNECT_RETRY_FIRST, CONNECT_RETRY_MAX, failures);
        if failures == 1 {
            warn!(
                connector = what,
                %error,
                "cannot connect; retrying with backoff (logged again once connected)"
            );
        } else {
            debug!(connector = what, %error, retry_in = ?wait, failures, "still cannot connect");
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return Ok(None),
        }
    }
}

/// Builds a function's connectors, each retried until it connects (see the
/// module docs); `None` when `shutdown` came first.
pub(super) async fn build_plan(
    function: FunctionSpec,
    pipeline: Arc<str>,
    shutdown: &CancellationToken,
) -> Result<Option<FunctionPlan>, RunError> {
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
        let what = format!("function `{name}`: input `{}`", input.kind);
        let built = until_connected(&what, shutdown, || input.builder.build())
            .await
            .map_err(|source| RunError::BuildSource {
                function: name.clone(),
                kind: input.kind.clone(),
                source,
            })?;
        let Some(source) = built else {
            return Ok(None);
        };
        sources.push(source);
    }
    let mut outputs = Vec::new();
    let sinks = function
        .outputs
        .iter()
        .map(|o| ("output", o))
        .chain(std::iter::once(("dead letter", &function.dead_letter)));
    let mut dead_letter = None;
    for (role, spec) in sinks {
        let what = format!("function `{name}`: {role} `{}`", spec.name);
        let built = until_connected(&what, shutdown, || spec.builder.build())
            .await
            .map_err(|source| RunError::BuildSink {
                function: name.clone(),
                role,
                name: spec.name.clone(),
                source,
            })?;
        let Some(sink) = built else {
            return Ok(None);
        };
        if role == "dead letter" {
            dead_letter = Some(Arc::from(sink));
        } else {
            outputs.push(NamedSink {
                name: Arc::from(spec.name.as_str()),
                sink: Arc::from(sink),
                encoder: (!spec.format.is_raw()).then(|| spec.format.encoder()),
            });
        }
    }
    let Some(dead_letter) = dead_letter else {
        return Ok(None);
    };
    Ok(Some(FunctionPlan {
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
        dead_letter,
        policy: function.policy,
        session_host,
    }))
}
