//! The `tests:` block of a pipeline file: recorded events and what each
//! should come to, run by `spate test` with no broker.
//!
//! ```yaml
//! tests:
//!   - name: plausible readings pass, malformed ones are dead-lettered
//!     function: clean-readings          # optional when the file has one function
//!     events:
//!       - input: {payload: {device: d1, temperature: 21.5}}
//!         expect: {outputs: [{payload: {device: d1, temperature: 21.5}}]}
//!       - input: {payload_text: "not json"}
//!         expect: {dead_letter: {reason: handler-error}}
//! ```
//!
//! Inputs and expectations are read exactly as `spate test --input` and
//! `--expect` read JSON Lines (see [`crate::samples`]); every
//! problem is reported at its line and column.

use spate_connector::config::quote_list;
use spate_connector::{ConfigNode, ConfigReader, NodeKind};

use crate::samples::{expectation, sample_event};
use crate::spec::{PipelineTest, TestEvent};

fn to_json(node: &ConfigNode) -> serde_json::Value {
    // `to_json_text` always writes valid JSON.
    serde_json::from_str(&node.to_json_text()).unwrap_or(serde_json::Value::Null)
}

/// Every `to:` of an expected output names an output of the function
/// (otherwise the test could never pass); errors at the `to:` value.
fn check_expected_targets(
    reader: &ConfigReader<'_>,
    expect: &ConfigNode,
    path: &str,
    function: &str,
    outputs: &[&str],
) -> bool {
    let Some(NodeKind::Seq(items)) = expect.get("outputs").map(|o| &o.kind) else {
        return true;
    };
    let mut fine = true;
    for (index, item) in items.iter().enumerate() {
        let Some(to) = item.get("to") else {
            continue;
        };
        let Some(name) = to.as_text().filter(|name| !outputs.contains(name)) else {
            continue;
        };
        fine = false;
        reader.error(
            to.span,
            format!("{path}.outputs[{index}].to"),
            format!(
                "`{name}` is not an output of function `{function}`, so this test could never pass"
            ),
            Some(match outputs.is_empty() {
                true => format!("function `{function}` has no `outputs:`"),
                false => format!("its outputs: {}", quote_list(outputs)),
            }),
        );
    }
    fine
}

/// Reads `tests:`; `functions` are the names declared in the file and
/// `outputs` (in the same order) the output names of each.
pub(super) fn read_tests(
    top: &mut ConfigReader<'_>,
    functions: &[String],
    outputs: &[Vec<&str>],
) -> Option<Vec<PipelineTest>> {
    let Some(items) = top.list("tests") else {
        return Some(Vec::new());
    };
    let mut tests = Vec::new();
    let mut complete = true;
    for (index, item) in items.into_iter().enumerate() {
        let path = format!("tests[{index}]");
        let mut reader = ConfigReader::new(item, path.clone(), top.errors());
        if !matches!(item.kind, NodeKind::Map(_)) {
            reader.error(
                item.span,
                path.clone(),
                format!("each test is a mapping, found {}", item.type_name()),
                Some(
                    "`- name: ...`, `function: ...`, `events: [{input: ..., expect: ...}]`"
                        .to_owned(),
                ),
            );
            complete = false;
            continue;
        }
        let name = reader.required_string("name", Some("say what the test checks".to_owned()));
        let function = match reader.string("function") {
            Some(function) => {
                if !functions.contains(&function) {
                    reader.error_at_key(
                        "function",
                        format!("no function `{function}` in this file"),
                        Some(format!("functions: {}", functions.join(", "))),
                    );
                    complete = false;
                }
                Some(function)
            }
            None if functions.len() == 1 => Some(functions[0].clone()),
            None => {
                reader.missing(
                    "function",
                    Some(format!(
                        "this file has several functions; name one of {}",
                        functions.join(", ")
                    )),
                );
                None
            }
        };
        let mut events = Vec::new();
        match reader.list("events") {
            None => reader.missing(
                "events",
                Some("`events: [{input: {payload: ...}, expect: {outputs: [...]}}]`".to_owned()),
            ),
            Some(list) => {
                let target = function.as_ref().and_then(|f| {
                    let at = functions.iter().position(|name| name == f)?;
                    Some((f.as_str(), outputs.get(at)?.as_slice()))
                });
                for (n, entry) in list.into_iter().enumerate() {
                    let (event, fine) = read_test_event(top, entry, &path, n, target);
                    complete &= fine;
                    events.extend(event);
                }
            }
        }
        match (name, function) {
            (Some(name), Some(function)) => tests.push(PipelineTest {
                name,
                function,
                span: item.span,
                events,
            }),
            _ => complete = false,
        }
    }
    complete.then_some(tests)
}

/// Entry `n` of a test's `events:`: the recorded event and what it should
/// come to; `target` is the function under test and its output names. The
/// flag is false when a problem was recorded (the event may still be
/// read, without its expectation).
fn read_test_event(
    test: &ConfigReader<'_>,
    entry: &ConfigNode,
    path: &str,
    n: usize,
    target: Option<(&str, &[&str])>,
) -> (Option<TestEvent>, bool) {
    let entry_path = format!("{path}.events[{n}]");
    let mut entry_reader = ConfigReader::new(entry, entry_path.clone(), test.errors());
    let input = entry_reader.node("input");
    let expect = entry_reader.node("expect");
    let Some(input) = input else {
        entry_reader.missing(
            "input",
            Some(
                "the recorded event: `{payload: ...}`, `{payload_text: ...}` or any JSON value"
                    .to_owned(),
            ),
        );
        return (None, false);
    };
    let mut complete = true;
    let event = match sample_event(&to_json(input), n as u64) {
        Ok(event) => Some(event),
        Err(e) => {
            entry_reader.error(input.span, format!("{entry_path}.input"), e.0, None);
            None
        }
    };
    if let (Some(node), Some((function, outputs))) = (expect, target) {
        let expect_path = format!("{entry_path}.expect");
        if !check_expected_targets(&entry_reader, node, &expect_path, function, outputs) {
            complete = false;
        }
    }
    let expected = match expect.map(|node| (node, expectation(&to_json(node)))) {
        None => None,
        Some((_, Ok(expected))) => Some(expected),
        Some((node, Err(e))) => {
            entry_reader.error(node.span, format!("{entry_path}.expect"), e.0, None);
            complete = false;
            None
        }
    };
    match event {
        Some(event) => (
            Some(TestEvent {
                span: entry.span,
                event,
                expect: expected,
            }),
            complete,
        ),
        None => (None, false),
    }
}
