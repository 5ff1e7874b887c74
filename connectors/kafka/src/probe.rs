//! Reaching a Kafka cluster: the metadata probe a source or sink makes when
//! it is built, and the check `spate validate --connect` makes with it.
//!
//! # Guarantees
//!
//! - **A refused or unresolvable cluster is reported fast.** The probe asks
//!   for metadata in slices of [`PROBE_SLICE`] and, between slices, reads
//!   the errors the client reported (librdkafka's "Connection refused",
//!   "all brokers are down", a name that does not resolve). Once every
//!   broker failed that way it gives up at once, so the failure is known
//!   within [`REFUSED_WITHIN`], not after `connect_timeout`.
//! - **A slow cluster gets `connect_timeout`.** Brokers that accept the
//!   connection but do not answer yet are waited for up to the setting.
//! - **`check` refuses whatever `build` refuses** (it runs the same probe)
//!   and, where `build` would only warn, what cannot work as written: an
//!   input or output topic that does not exist.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::{FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};

use crate::error::{code_of, is_auth_error, Failure};

/// How long one metadata request of the probe may wait.
pub const PROBE_SLICE: Duration = Duration::from_millis(250);

/// Within how long a cluster whose every broker refuses the connection (or
/// does not resolve) is reported unreachable.
pub const REFUSED_WITHIN: Duration = Duration::from_secs(1);

/// Asks for the cluster's metadata until it answers or `timeout` passed;
/// between requests `transport_error` says what the client reported (a
/// refused connection), which ends the probe early once every broker is
/// down. Blocking.
pub fn metadata(
    servers: &str,
    timeout: Duration,
    mut fetch: impl FnMut(Duration) -> KafkaResult<Metadata>,
    mut transport_error: impl FnMut() -> Option<String>,
) -> Result<Metadata, Failure> {
    let started = Instant::now();
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        let asked = Instant::now();
        let error = match fetch(left.min(PROBE_SLICE)) {
            Ok(metadata) => return Ok(metadata),
            Err(error) => error,
        };
        if let Some(code) = code_of(&error).filter(|c| is_auth_error(*c)) {
            return Err(Failure::fatal(format!(
                "Kafka at `{servers}` refused the credentials ({code:?}: {error}); check `sasl_*` and `tls_*`"
            )));
        }
        let reported = transport_error().or_else(|| down_by_itself(&error));
        if let Some(why) = reported.filter(|_| started.elapsed() >= REFUSED_WITHIN / 2) {
            return Err(Failure::retryable(format!(
                "cannot reach Kafka at `{servers}`: {why}; check `bootstrap_servers` and that the brokers are running"
            )));
        }
        if started.elapsed() >= timeout {
            return Err(Failure::retryable(format!(
                "cannot reach Kafka at `{servers}`: no answer within `connect_timeout` ({timeout:?}: {error}); check `bootstrap_servers` and that the brokers are running"
            )));
        }
        // A request that failed at once must not spin.
        if let Some(rest) = PROBE_SLICE.checked_sub(asked.elapsed()) {
            std::thread::sleep(rest.min(Duration::from_millis(50)));
        }
    }
}

/// An error of the metadata request itself that means no broker can be
/// reached (rather than a slow answer).
fn down_by_itself(error: &KafkaError) -> Option<String> {
    use RDKafkaErrorCode as C;
    match code_of(error)? {
        C::AllBrokersDown | C::BrokerTransportFailure | C::Resolve => Some(error.to_string()),
        _ => None,
    }
}

/// Whether a client error means a broker could not be reached.
pub fn is_transport(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code_of(error),
        Some(C::AllBrokersDown | C::BrokerTransportFailure | C::Resolve)
    )
}

/// A client context that keeps the last transport error librdkafka
/// reported, with its reason ("Connect to ipv4#127.0.0.1:9092 failed:
/// Connection refused").
#[derive(Default)]
pub struct ProbeContext {
    last: Mutex<Option<String>>,
}

impl ProbeContext {
    /// The last transport error reported, taken.
    pub fn take(&self) -> Option<String> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl ClientContext for ProbeContext {
    /// librdkafka's own lines (one per refused connection) only at debug
    /// level: the probe's error says it once.
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        tracing::debug!(?level, facility, message, "librdkafka (probe)");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if is_transport(&error) {
            *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_owned());
        }
    }
}

impl ConsumerContext for ProbeContext {}

impl ProducerContext for ProbeContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// Runs a blocking probe on tokio's blocking pool; a probe task that does
/// not finish (it panicked) fails the check.
pub async fn off_runtime(
    probe: impl FnOnce() -> Result<(), Failure> + Send + 'static,
) -> Result<(), Failure> {
    tokio::task::spawn_blocking(probe)
        .await
        .map_err(|e| Failure::fatal(format!("the check failed: {e}")))
        .and_then(|r| r)
}

/// A Kafka `what` (`producer`, `consumer`) built from `config` with a
/// fresh [`ProbeContext`].
fn probe_client<T: FromClientConfigAndContext<ProbeContext>>(
    config: &ClientConfig,
    servers: &str,
    what: &str,
) -> Result<T, Failure> {
    config
        .create_with_context(ProbeContext::default())
        .map_err(|e| Failure::fatal(format!("cannot create a Kafka {what} for `{servers}`: {e}")))
}

/// Probes with a short-lived producer built from `config` (none of its
/// records are ever sent); `topics` must exist. Blocking.
pub fn probe_producer(
    config: &ClientConfig,
    servers: &str,
    timeout: Duration,
    topics: &[&str],
) -> Result<(), Failure> {
    let producer: BaseProducer<ProbeContext> = probe_client(config, servers, "producer")?;
    let metadata = metadata(
        servers,
        timeout,
        |slice| producer.client().fetch_metadata(None, slice),
        || {
            producer.poll(Duration::ZERO);
            producer.context().take()
        },
    )?;
    topics_exist(&metadata, servers, topics)
}

/// Probes with a consumer built from `config` that joins no group (it never
/// subscribes); `topics` must exist. Blocking.
pub fn probe_consumer(
    config: &ClientConfig,
    servers: &str,
    timeout: Duration,
    topics: &[&str],
) -> Result<(), Failure> {
    let consumer: BaseConsumer<ProbeContext> = probe_client(config, servers, "consumer")?;
    let metadata = metadata(
        servers,
        timeout,
        |slice| consumer.fetch_metadata(None, slice),
        || consumer_transport_error(&consumer),
    )?;
    topics_exist(&metadata, servers, topics)
}

/// The transport error a consumer that has not subscribed reports through
/// its queue, if any.
pub fn consumer_transport_error<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Option<String> {
    match consumer.poll(Duration::ZERO) {
        Some(Err(error)) if is_transport(&error) => Some(error.to_string()),
        _ => None,
    }
}

/// Every topic of `topics` is in `metadata`.
pub fn topics_exist(metadata: &Metadata, servers: &str, topics: &[&str]) -> Result<(), Failure> {
    let missing: Vec<&str> = topics
        .iter()
        .copied()
        .filter(|topic| {
            !metadata
                .topics()
                .iter()
                .any(|t| t.name() == *topic && t.error().is_none())
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Failure::fatal(format!(
        "no topic {} at `{servers}`; create it (or fix the name)",
        missing
            .iter()
            .map(|t| format!("`{t}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Logs a librdkafka log line as `tracing` does by default, except a failed
/// connection (`FAIL`, one line per attempt and broker): debug level only,
/// since spate reports an unreachable cluster itself, once per outage.
pub fn log_librdkafka(level: RDKafkaLogLevel, facility: &str, message: &str) {
    use RDKafkaLogLevel as L;
    if facility == "FAIL" {
        tracing::debug!(target: "librdkafka", facility, "{message}");
        return;
    }
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error => {
            tracing::error!(target: "librdkafka", facility, "{message}")
        }
        L::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
        L::Notice | L::Info => tracing::info!(target: "librdkafka", facility, "{message}"),
        L::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
    }
}
