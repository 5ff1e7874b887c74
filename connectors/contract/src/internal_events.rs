//! Named internal events of connectors: one type per happening, whose `emit`
//! counts it (a Prometheus metric through the `metrics` facade), logs it
//! (tracing, with fields) and so keeps the two in one place.
//!
//! A connector never writes a metric or a log line for these happenings by
//! hand: it builds the event where the happening is seen and calls
//! [`emit`](ConnectionLost::emit). The binary installs the Prometheus
//! recorder, so every metric below shows up in `/metrics` with no wiring in
//! the connector.
//!
//! Labels stay low-cardinality: `connector` is the connector kind (`kafka`,
//! `nats`, `jetstream`, `mqtt`, `postgres`, `file`, …) and `target`, where
//! present, the input or output name the pipeline gave the connector. Never a
//! key, a payload, an address or a secret: those go, at most, into the log
//! line's `error` field.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// Metric names, one per event; the doc comment of each event says what it counts.
pub mod names {
    /// See [`ConnectionLost`](super::ConnectionLost).
    pub const DISCONNECTS: &str = "spate_connector_disconnects_total";
    /// See [`Reconnected`](super::Reconnected).
    pub const RECONNECTS: &str = "spate_connector_reconnects_total";
    /// See [`FetchError`](super::FetchError).
    pub const FETCH_ERRORS: &str = "spate_connector_fetch_errors_total";
    /// See [`ProduceError`](super::ProduceError).
    pub const PRODUCE_ERRORS: &str = "spate_connector_produce_errors_total";
    /// See [`CommitCompleted`](super::CommitCompleted).
    pub const COMMIT_DURATION: &str = "spate_connector_commit_duration_seconds";
    /// See [`CommitFailed`](super::CommitFailed).
    pub const COMMIT_ERRORS: &str = "spate_connector_commit_errors_total";
    /// See [`AckFailed`](super::AckFailed).
    pub const ACK_ERRORS: &str = "spate_connector_ack_errors_total";
    /// See [`MessagesDropped`](super::MessagesDropped).
    pub const DROPPED: &str = "spate_connector_dropped_total";
}

/// The connection to the broker or database was lost; the connector
/// reconnects on its own.
///
/// Counts `spate_connector_disconnects_total{connector,target}` and logs a
/// warning `"<context>"` with `connector`, `name` and `error`.
pub struct ConnectionLost<'a> {
    /// The connector kind, e.g. `"nats"`.
    pub connector: &'static str,
    /// The input or output name (or the component) that lost its connection.
    pub target: &'a str,
    /// Why, when the client says.
    pub error: Option<&'a dyn Display>,
    /// The log line, e.g. `"MQTT connection lost; reconnecting"`.
    pub context: &'static str,
}

impl ConnectionLost<'_> {
    /// Counts and logs the event.
    pub fn emit(self) {
        match self.error {
            Some(error) => {
                tracing::warn!(connector = self.connector, name = %self.target, %error, "{}", self.context)
            }
            None => {
                tracing::warn!(connector = self.connector, name = %self.target, "{}", self.context)
            }
        }
        let labels = [
            ("connector", self.connector.to_owned()),
            ("target", self.target.to_owned()),
        ];
        metrics::counter!(names::DISCONNECTS, &labels).increment(1);
    }
}

/// A lost connection was established again (not the first connection).
///
/// Counts `spate_connector_reconnects_total{connector,target}` and logs
/// `"<context>"` at info with `connector` and `name`.
pub struct Reconnected<'a> {
    /// The connector kind.
    pub connector: &'static str,
    /// The input or output name (or the component) that reconnected.
    pub target: &'a str,
    /// The log line, e.g. `"NATS connection (re)established"`.
    pub context: &'static str,
}

impl Reconnected<'_> {
    /// Counts and logs the event.
    pub fn emit(self) {
        tracing::info!(connector = self.connector, name = %self.target, "{}", self.context);
        let labels = [
            ("connector", self.connector.to_owned()),
            ("target", self.target.to_owned()),
        ];
        metrics::counter!(names::RECONNECTS, &labels).increment(1);
    }
}

/// Reading from the broker or file failed (the source retries, or surfaces
/// the error to the engine).
///
/// Counts `spate_connector_fetch_errors_total{connector}` and logs a warning
/// `"<context>"` with `connector`, `name` and `error`.
pub struct FetchError<'a> {
    /// The connector kind.
    pub connector: &'static str,
    /// The input name.
    pub name: &'a str,
    /// What failed.
    pub error: &'a dyn Display,
    /// The log line.
    pub context: &'static str,
}

impl FetchError<'_> {
    /// Counts and logs the event.
    pub fn emit(self) {
        tracing::warn!(connector = self.connector, name = %self.name, error = %self.error, "{}", self.context);
        metrics::counter!(names::FETCH_ERRORS, "connector" => self.connector).increment(1);
    }
}

/// Writing to the broker, database or file failed (the engine retries the
/// write, or the connector replaces its producer).
///
/// Counts `spate_connector_produce_errors_total{connector}` and logs a
/// warning `"<context>"` with `connector`, `name` and `error`.
pub struct ProduceError<'a> {
    /// The connector kind.
    pub connector: &'static str,
    /// The output name.
    pub name: &'a str,
    /// What failed.
    pub error: &'a dyn Display,
    /// The log line.
    pub context: &'static str,
}

impl ProduceError<'_> {
    /// Counts and logs the event.
    pub fn emit(self) {
        tracing::warn!(connector = self.connector, name = %self.name, error = %self.error, "{}", self.context);
        metrics::counter!(names::PRODUCE_ERRORS, "connector" => self.connector).increment(1);
    }
}

/// A commit (of source positions, or of an exactly-once transaction) was
/// acknowledged by the broker or database.
///
/// Records its latency in the histogram
/// `spate_connector_commit_duration_seconds{connector}` and logs at debug
/// with `connector`, `name` and `seconds`.
pub struct CommitCompleted<'a> {
    /// The connector kind.
    pub connector: &'static str,
    /// The input name or transactional session.
    pub name: &'a str,
    /// From the start of the commit to its acknowledgement.
    pub elapsed: Duration,
}

impl CommitCompleted<'_> {
    /// Records and logs the event.
    pub fn emit(self) {
        let seconds = self.elapsed.as_secs_f64();
        tracing::debug!(connector = self.connector, name = %self.name, seconds, "commit done");
        metrics::histogram!(names::COMMIT_DURATION, "connector" => self.connector).record(seconds);
    }
}

/// A commit failed: the positions or the transaction did not land (the
/// engine retries, or the events are redelivered).
///
/// Counts `spate_connector_commit_errors_total{connector}` and logs a
/// warning `"<context>"` with `connector`, `name` and `error`.
pub struct CommitFailed<'a> {
    /// The connector kind.
    pub connector: &'static str,
    /// The input name or transactional session.
    pub name: &'a str,
    /// What failed.
    pub error: &'a dyn Display,
    /// The log line.
    pub context: &'static str,
}

impl CommitFailed<'_> {
    /// Counts and logs the event.
    pub fn emit(self) {
        tracing::warn!(connector = self.connector, name = %self.name, error = %self.error, "{}", self.context);
        metrics::counter!(names::COMMIT_ERRORS, "connector" => self.connector).increment(1);
    }
}

/// Times one commit and emits its outcome: [`CommitCompleted`] with the
/// latency when it landed, [`CommitFailed`] when not.
pub struct CommitTimer {
    connector: &'static str,
    started: Instant,
}

impl CommitTimer {
    /// Starts timing a commit of a `connector` kind.
    pub fn start(connector: &'static str) -> Self {
        Self {
            connector,
            started: Instant::now(),
        }
    }

    /// Emits the outcome of the commit of `name`; `context` is the log line
    /// of a failure.
    pub fn finish<T, E: Display>(self, name: &str, outcome: &Result<T, E>, context: &'static str) {
        match outcome {
            Ok(_) => CommitCompleted {
                connector: self.connector,
                name,
                elapsed: self.started.elapsed(),
            }
            .emit(),
            Err(error) => CommitFailed {
                connector: self.connector,
                name,
                error,
                context,
            }
            .emit(),
        }
    }
}

/// A per-message acknowledgement that is not a commit (a negative ack, an
/// in-progress ack) failed; the broker redelivers after its timeout.
///
/// Counts `spate_connector_ack_errors_total{connector}` and logs a warning
/// `"<context>"` with `connector`, `name` and `error`.
pub struct AckFailed<'a> {
    /// The connector kind.
    pub connector: &'static str,
    /// The input name.
    pub name: &'a str,
    /// What failed.
    pub error: &'a dyn Display,
    /// The log line.
    pub context: &'static str,
}

impl AckFailed<'_> {
    /// Counts and logs the event.
    pub fn emit(self) {
        tracing::warn!(connector = self.connector, name = %self.name, error = %self.error, "{}", self.context);
        metrics::counter!(names::ACK_ERRORS, "connector" => self.connector).increment(1);
    }
}

/// The client library dropped or ignored incoming messages (a slow
/// consumer, a message without the metadata to acknowledge it).
///
/// Counts `spate_connector_dropped_total{connector}` and logs a warning
/// `"<context>"` with `connector` and `name`.
pub struct MessagesDropped<'a> {
    /// The connector kind.
    pub connector: &'static str,
    /// The input name (or the component).
    pub name: &'a str,
    /// The log line.
    pub context: &'static str,
}

impl MessagesDropped<'_> {
    /// Counts and logs the event.
    pub fn emit(self) {
        tracing::warn!(connector = self.connector, name = %self.name, "{}", self.context);
        metrics::counter!(names::DROPPED, "connector" => self.connector).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    /// A metric seen: its name, labels and value.
    type Seen = (String, Vec<(String, String)>, DebugValue);

    fn snapshot(emit: impl FnOnce()) -> Vec<Seen> {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, emit);
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let labels = key
                    .key()
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()));
                (key.key().name().to_owned(), labels.collect(), value)
            })
            .collect()
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn connection_events_count_per_connector_and_target() {
        let got = snapshot(|| {
            let error = "broken pipe";
            for _ in 0..2 {
                ConnectionLost {
                    connector: "nats",
                    target: "orders",
                    error: Some(&error),
                    context: "lost",
                }
                .emit();
            }
            Reconnected {
                connector: "nats",
                target: "orders",
                context: "back",
            }
            .emit();
        });
        let want = labels(&[("connector", "nats"), ("target", "orders")]);
        assert!(
            got.contains(&(
                names::DISCONNECTS.into(),
                want.clone(),
                DebugValue::Counter(2)
            )),
            "{got:?}"
        );
        assert!(
            got.contains(&(names::RECONNECTS.into(), want, DebugValue::Counter(1))),
            "{got:?}"
        );
    }

    #[test]
    fn error_events_count_per_connector_only() {
        let got = snapshot(|| {
            let error = "timed out";
            FetchError {
                connector: "kafka",
                name: "in",
                error: &error,
                context: "c",
            }
            .emit();
            ProduceError {
                connector: "kafka",
                name: "out",
                error: &error,
                context: "c",
            }
            .emit();
            CommitFailed {
                connector: "kafka",
                name: "in",
                error: &error,
                context: "c",
            }
            .emit();
            AckFailed {
                connector: "jetstream",
                name: "in",
                error: &error,
                context: "c",
            }
            .emit();
            MessagesDropped {
                connector: "nats",
                name: "in",
                context: "c",
            }
            .emit();
        });
        for (name, connector) in [
            (names::FETCH_ERRORS, "kafka"),
            (names::PRODUCE_ERRORS, "kafka"),
            (names::COMMIT_ERRORS, "kafka"),
            (names::ACK_ERRORS, "jetstream"),
            (names::DROPPED, "nats"),
        ] {
            let want = (
                name.to_owned(),
                labels(&[("connector", connector)]),
                DebugValue::Counter(1),
            );
            assert!(got.contains(&want), "{name}: {got:?}");
        }
    }

    #[test]
    fn a_commit_timer_records_latency_or_counts_the_failure() {
        let got = snapshot(|| {
            CommitTimer::start("kafka").finish("in", &Ok::<(), &str>(()), "c");
            CommitTimer::start("kafka").finish("in", &Err::<(), _>("fenced"), "c");
        });
        let want = (
            names::COMMIT_ERRORS.to_owned(),
            labels(&[("connector", "kafka")]),
            DebugValue::Counter(1),
        );
        assert!(got.contains(&want), "{got:?}");
        let recorded = got.iter().find(|(n, _, _)| n == names::COMMIT_DURATION);
        assert!(
            matches!(recorded, Some((_, _, DebugValue::Histogram(v))) if v.len() == 1),
            "{got:?}"
        );
    }

    #[test]
    fn commit_latency_is_recorded_in_seconds() {
        let got = snapshot(|| {
            CommitCompleted {
                connector: "postgres",
                name: "out",
                elapsed: Duration::from_millis(250),
            }
            .emit();
        });
        let (_, labels_got, value) = got
            .iter()
            .find(|(n, _, _)| n == names::COMMIT_DURATION)
            .expect("recorded");
        assert_eq!(labels_got, &labels(&[("connector", "postgres")]));
        assert_eq!(value, &DebugValue::Histogram(vec![0.25.into()]));
    }
}
