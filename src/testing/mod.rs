//! Offline runs of a function for `spate test`: recorded events through the
//! function's own handler and output routing, with no broker, and the
//! outcome of each compared with what was expected.
//!
//! An offline run decides each event with the engine's own stage machine
//! ([`crate::engine::stage`]): decode (an event carrying a decode error, or
//! whose payload the first input's `format` cannot decode, is dead-lettered
//! with reason `decode-error`), the handler under the function's attempt
//! timeout with panics caught, routing, encoding in each output's `format`,
//! and a retry (at once: offline runs do not sleep through the backoff) or
//! a dead letter with the reason the engine would give. The outcome shows
//! the handler's (JSON) output; nothing is written anywhere.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use spate_connector::{Event, PartitionId, Record};

use crate::engine::stage::{Decided, Offline};
pub use crate::pipeline::samples;
pub use crate::pipeline::samples::{
    expectation, sample_event, Expectation, ExpectedOutput, SampleError,
};
use crate::pipeline::FunctionSpec;

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

/// A function run offline: the engine's stage machine
/// ([`crate::engine::stage::Offline`]) built from a loaded function.
pub struct OfflineFunction {
    stages: Offline,
}

impl OfflineFunction {
    /// The offline form of a loaded function.
    pub fn from_spec(spec: &FunctionSpec) -> Self {
        Self {
            stages: Offline {
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
            },
        }
    }

    /// Starts a stateful handler afresh on these partitions (of the first
    /// input), so one test's events do not count in the next one's state.
    pub fn start_fresh(&self, partitions: impl IntoIterator<Item = PartitionId>) {
        if let Some(state) = self.stages.handler.state() {
            let partitions: std::collections::BTreeSet<PartitionId> =
                partitions.into_iter().collect();
            for partition in partitions {
                state.forget(0, partition);
            }
        }
    }

    /// Decides one event with the engine's stages.
    pub async fn run(&self, event: Event) -> Outcome {
        match self.stages.run(event).await {
            Decided::Handled(outputs) => {
                Outcome::Outputs(outputs.into_iter().map(|o| (o.to, o.record)).collect())
            }
            Decided::DeadLetter { failed, attempts } => Outcome::DeadLetter {
                reason: failed.reason,
                message: failed.message,
                attempts,
            },
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

/// One output: where it goes (`None`: every output), its key and payload.
type OutputLine<'a> = (Option<&'a str>, Option<&'a Bytes>, &'a Bytes);

/// One line per output, `→ <output> key=<key>: <payload>`, or
/// `no output (dropped)` when there is none.
fn output_lines<'a>(out: &mut String, indent: &str, outputs: impl Iterator<Item = OutputLine<'a>>) {
    let mut dropped = true;
    for (to, key, payload) in outputs {
        dropped = false;
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
    if dropped {
        let _ = writeln!(out, "{indent}no output (dropped)");
    }
}

/// Renders an outcome, one line per output, indented by `indent`.
pub fn render_outcome(outcome: &Outcome, indent: &str) -> String {
    let mut out = String::new();
    match outcome {
        Outcome::Outputs(outputs) => output_lines(
            &mut out,
            indent,
            outputs
                .iter()
                .map(|(to, record)| (to.as_deref(), record.key.as_ref(), &record.payload)),
        ),
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
        Expectation::Outputs(outputs) => output_lines(
            &mut out,
            indent,
            outputs
                .iter()
                .map(|output| (output.to.as_deref(), output.key.as_ref(), &output.payload)),
        ),
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
