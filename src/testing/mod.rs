//! Offline runs of a function for `spate test`: recorded events through the
//! function's own handler and output routing, with no broker, and the
//! outcome of each compared with what was expected.
//!
//! An offline run decides each event as the engine would, using the same
//! pieces: an event carrying a decode error, or whose payload the first
//! input's `format` cannot decode, is dead-lettered with reason
//! `decode-error`; the handler is called with the function's attempt
//! timeout, and a retryable failure is tried again up to `max_attempts`
//! (at once: offline runs do not sleep through the backoff); a panic is
//! caught; outputs are routed with the engine's
//! [`resolve_outputs`], so routing to
//! an undeclared output is a dead letter here as there; each output is
//! encoded in its output's `format` (a record that does not fit is an
//! `encode-error` dead letter), and the outcome shows the handler's
//! (JSON) output. Nothing is written anywhere: the outcome is returned.

use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use spate_connector::{dead_letter, Event, PartitionId, Record};

use crate::engine::worker::{panic_message, resolve_outputs};
use crate::format::{PayloadDecoder, PayloadEncoder, SCHEMA_ID_HEADER};
use crate::handler::{Context, ErrorKind, Handler};
pub use crate::pipeline::samples;
pub use crate::pipeline::samples::{
    expectation, sample_event, Expectation, ExpectedOutput, SampleError,
};
use crate::pipeline::{FunctionSpec, RetryPolicy};

/// What became of one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Handled: these outputs, each with the output it goes to (`None`:
    /// every declared output), in the handler's order.
    Outputs(Vec<(Option<Arc<str>>, Record)>),
    /// Failed for good.
    DeadLetter {
        /// The dead letter's reason header.
        reason: &'static str,
        /// Its error header.
        message: String,
        /// Attempts made.
        attempts: u32,
    },
}

/// The parts of a function an offline run needs.
pub struct OfflineFunction {
    /// The function's name (handlers see it in their context).
    pub name: Arc<str>,
    /// Its handler.
    pub handler: Arc<dyn Handler>,
    /// Its outputs' names, in declaration order.
    pub output_names: Vec<Arc<str>>,
    /// Its retry policy.
    pub retry: RetryPolicy,
    /// The first input's decoder (`None`: payloads as they are).
    pub decoder: Option<Arc<dyn PayloadDecoder>>,
    /// Per output: its encoder (`None`: as the handler made it).
    pub encoders: Vec<Option<Arc<dyn PayloadEncoder>>>,
}

impl OfflineFunction {
    /// The offline form of a loaded function.
    pub fn from_spec(spec: &FunctionSpec) -> Self {
        Self {
            name: Arc::from(spec.name.as_str()),
            handler: spec.handler.clone(),
            output_names: spec
                .outputs
                .iter()
                .map(|o| Arc::from(o.name.as_str()))
                .collect(),
            retry: spec.policy.retry,
            decoder: spec
                .inputs
                .first()
                .filter(|input| !input.format.is_raw())
                .map(|input| input.format.decoder()),
            encoders: spec
                .outputs
                .iter()
                .map(|o| (!o.format.is_raw()).then(|| o.format.encoder()))
                .collect(),
        }
    }

    /// Encodes each resolved output in its output's format, to check it
    /// fits; the first that does not is the error.
    async fn check_encoding(&self, resolved: &[(usize, Record)]) -> Result<(), (String, bool)> {
        for (index, record) in resolved {
            if let Some(encoder) = self.encoders.get(*index).and_then(Option::as_ref) {
                if let Err(error) = encoder.encode(&record.payload).await {
                    return Err((
                        format!(
                            "output `{}` cannot be encoded: {}",
                            self.output_names[*index], error.message
                        ),
                        error.retryable,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Starts a stateful handler afresh on these partitions (of the first
    /// input), so one test's events do not count in the next one's state.
    pub fn start_fresh(&self, partitions: impl IntoIterator<Item = PartitionId>) {
        if let Some(state) = self.handler.state() {
            let partitions: std::collections::BTreeSet<PartitionId> =
                partitions.into_iter().collect();
            for partition in partitions {
                state.forget(0, partition);
            }
        }
    }

    /// Decides one event.
    pub async fn run(&self, event: Event) -> Outcome {
        if let Some(reason) = event.headers.get_str(dead_letter::DECODE_ERROR) {
            return Outcome::DeadLetter {
                reason: "decode-error",
                message: reason.to_owned(),
                attempts: 0,
            };
        }
        let max_attempts = self.retry.max_attempts.max(1);
        let mut attempt = 0;
        let mut event = event;
        loop {
            attempt += 1;
            if let Some(decoder) = &self.decoder {
                match decoder.decode(&event.payload).await {
                    Ok(decoded) => {
                        event.payload = decoded.payload;
                        if let Some(id) = decoded.schema_id {
                            event.headers.set(SCHEMA_ID_HEADER, id.to_string());
                        }
                        // Decoded once: later attempts reuse it.
                        return self.run_decoded(event, attempt, max_attempts).await;
                    }
                    Err(error) if error.retryable && attempt < max_attempts => continue,
                    Err(error) => {
                        return Outcome::DeadLetter {
                            reason: "decode-error",
                            message: error.message,
                            attempts: attempt,
                        }
                    }
                }
            }
            return self.run_decoded(event, attempt, max_attempts).await;
        }
    }

    /// Handler attempts from `first_attempt` on, with a decoded event.
    async fn run_decoded(&self, event: Event, first_attempt: u32, max_attempts: u32) -> Outcome {
        let mut attempt = first_attempt - 1;
        loop {
            attempt += 1;
            let ctx = Context::new(self.name.clone(), attempt);
            let call = AssertUnwindSafe(self.handler.handle(event.clone(), &ctx)).catch_unwind();
            let (reason, message, retryable) =
                match tokio::time::timeout(self.retry.timeout, call).await {
                    Ok(Ok(Ok(outputs))) => {
                        // Check the routing exactly as the engine does.
                        let routes: Vec<Option<Arc<str>>> =
                            outputs.iter().map(|o| o.to.clone()).collect();
                        let resolved = match resolve_outputs(&self.output_names, outputs.clone()) {
                            Ok(resolved) => resolved,
                            Err(message) => {
                                return Outcome::DeadLetter {
                                    reason: "unknown-output",
                                    message,
                                    attempts: attempt,
                                }
                            }
                        };
                        match self.check_encoding(&resolved).await {
                            Ok(()) => {
                                return Outcome::Outputs(
                                    routes
                                        .into_iter()
                                        .zip(outputs.into_iter().map(|o| o.record))
                                        .collect(),
                                )
                            }
                            Err((message, retryable)) => ("encode-error", message, retryable),
                        }
                    }
                    Ok(Ok(Err(error))) => (
                        error.reason.unwrap_or("handler-error"),
                        error.message,
                        error.kind == ErrorKind::Retryable,
                    ),
                    Ok(Err(panic)) => (
                        "panic",
                        format!("handler panicked: {}", panic_message(panic.as_ref())),
                        false,
                    ),
                    Err(_) => (
                        "timeout",
                        format!("attempt {attempt} timed out after {:?}", self.retry.timeout),
                        true,
                    ),
                };
            if !retryable || attempt >= max_attempts {
                return Outcome::DeadLetter {
                    reason,
                    message,
                    attempts: attempt,
                };
            }
        }
    }
}

/// A payload as a reader sees it: JSON as compact JSON, other UTF-8 as a
/// quoted string, anything else as base64.
pub fn show_payload(payload: &Bytes) -> String {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload) {
        return value.to_string();
    }
    match std::str::from_utf8(payload) {
        Ok(text) => format!("{text:?} (not JSON)"),
        Err(_) => {
            use base64::Engine as _;
            format!(
                "base64:{}",
                base64::engine::general_purpose::STANDARD.encode(payload)
            )
        }
    }
}

/// One output as a line: `→ <output> key=<key>: <payload>`.
fn output_line(
    out: &mut String,
    indent: &str,
    to: Option<&str>,
    key: Option<&Bytes>,
    payload: &Bytes,
) {
    let key = key
        .map(|k| format!(" key={}", String::from_utf8_lossy(k)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{indent}→ {}{key}: {}",
        to.unwrap_or("every output"),
        show_payload(payload)
    );
}

/// Renders an outcome, one line per output, indented by `indent`.
pub fn render_outcome(outcome: &Outcome, indent: &str) -> String {
    let mut out = String::new();
    match outcome {
        Outcome::Outputs(outputs) if outputs.is_empty() => {
            let _ = writeln!(out, "{indent}no output (dropped)");
        }
        Outcome::Outputs(outputs) => {
            for (to, record) in outputs {
                output_line(
                    &mut out,
                    indent,
                    to.as_deref(),
                    record.key.as_ref(),
                    &record.payload,
                );
            }
        }
        Outcome::DeadLetter {
            reason,
            message,
            attempts,
        } => {
            let _ = writeln!(
                out,
                "{indent}✗ dead letter ({reason}, {attempts} attempt{}): {message}",
                if *attempts == 1 { "" } else { "s" }
            );
        }
    }
    out
}

/// JSON equality where numbers compare by value (`1500` equals `1500.0`).
fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

fn same_payload(expected: &Bytes, actual: &Bytes) -> bool {
    match (
        serde_json::from_slice::<serde_json::Value>(expected),
        serde_json::from_slice::<serde_json::Value>(actual),
    ) {
        (Ok(a), Ok(b)) => same_json(&a, &b),
        _ => expected == actual,
    }
}

/// Compares an outcome with an expectation; `Err` holds a readable diff.
pub fn compare(expected: &Expectation, actual: &Outcome) -> Result<(), String> {
    let mismatch = |why: String| {
        let mut text = format!("  {why}\n  expected:\n");
        text.push_str(&render_expectation(expected, "    "));
        text.push_str("  actual:\n");
        text.push_str(&render_outcome(actual, "    "));
        Err(text)
    };
    match (expected, actual) {
        (Expectation::Outputs(want), Outcome::Outputs(got)) => {
            if want.len() != got.len() {
                return mismatch(format!(
                    "{} outputs expected, {} produced",
                    want.len(),
                    got.len()
                ));
            }
            for (i, (want, (to, record))) in want.iter().zip(got).enumerate() {
                if want.to.as_deref() != to.as_deref() {
                    return mismatch(format!(
                        "output {}: routed to {}, expected {}",
                        i + 1,
                        to.as_deref().unwrap_or("every output"),
                        want.to.as_deref().unwrap_or("every output")
                    ));
                }
                if !same_payload(&want.payload, &record.payload) {
                    return mismatch(format!("output {}: payload differs", i + 1));
                }
                if let Some(key) = &want.key {
                    if record.key.as_ref() != Some(key) {
                        return mismatch(format!("output {}: key differs", i + 1));
                    }
                }
            }
            Ok(())
        }
        (
            Expectation::DeadLetter {
                reason,
                error_contains,
            },
            Outcome::DeadLetter {
                reason: got_reason,
                message,
                ..
            },
        ) => {
            if reason.as_deref().is_some_and(|r| r != *got_reason) {
                return mismatch(format!("dead-letter reason is `{got_reason}`"));
            }
            if let Some(fragment) = error_contains {
                if !message.contains(fragment.as_str()) {
                    return mismatch(format!("the error does not contain {fragment:?}"));
                }
            }
            Ok(())
        }
        (Expectation::Outputs(_), Outcome::DeadLetter { .. }) => {
            mismatch("dead-lettered, outputs expected".to_owned())
        }
        (Expectation::DeadLetter { .. }, Outcome::Outputs(_)) => {
            mismatch("handled, a dead letter expected".to_owned())
        }
    }
}

/// Renders an expectation like [`render_outcome`].
pub fn render_expectation(expected: &Expectation, indent: &str) -> String {
    let mut out = String::new();
    match expected {
        Expectation::Outputs(outputs) if outputs.is_empty() => {
            let _ = writeln!(out, "{indent}no output (dropped)");
        }
        Expectation::Outputs(outputs) => {
            for output in outputs {
                output_line(
                    &mut out,
                    indent,
                    output.to.as_deref(),
                    output.key.as_ref(),
                    &output.payload,
                );
            }
        }
        Expectation::DeadLetter {
            reason,
            error_contains,
        } => {
            let _ = writeln!(
                out,
                "{indent}✗ dead letter ({}){}",
                reason.as_deref().unwrap_or("any reason"),
                error_contains
                    .as_ref()
                    .map(|f| format!(": error containing {f:?}"))
                    .unwrap_or_default()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_compare_as_json_with_numbers_by_value() {
        let same =
            |a: &str, b: &str| same_payload(&Bytes::from(a.to_owned()), &Bytes::from(b.to_owned()));
        assert!(same(r#"{"a":1500,"b":[1]}"#, r#"{"b":[1.0],"a":1500.0}"#));
        assert!(!same(r#"{"a":1}"#, r#"{"a":2}"#));
        assert!(!same(r#"{"a":1}"#, r#"{"a":1,"b":null}"#));
        assert!(same("not json", "not json"));
        assert!(!same("not json", "not json!"));
    }
}
