//! Hostile expressions and payloads against the expression built-ins: a
//! poison event costs its own dead letter (`resource-limit`, `timeout`)
//! and nothing else, through the engine and through `spate test`; deeply
//! nested or over-long expressions are validation errors at their place,
//! never a stack overflow; and environment values reach expressions as
//! bound variables, never as spliced code.

use std::process::Command;
use std::sync::Arc;

use spate::engine::run_function;
use spate::handler::expr::{MAX_DEPTH, MAX_EXPR_BYTES, MAX_INLINE_DEPTH, MAX_NESTING};
use spate::pipeline::{Ordering, PipelineSpec};
use spate::{Context, Event, Handler, Headers};
use spate_connector::dead_letter as dl;
use spate_connector::testkit::{MemoryLog, MemorySink};
use spate_connector::Position;
use spate_testsupport::engine::{handler_pipeline, load_pipeline, options, plan};
use tokio_util::sync::CancellationToken;

const FILE: &str = "pipelines/test.yaml";

/// A one-function pipeline whose handler is `handler` (YAML lines indented
/// under `handler:`).
fn pipeline(handler: &str) -> String {
    handler_pipeline(handler, &["big"])
}

/// An `orders` event at offset 0 carrying `payload`.
fn event(payload: &'static [u8]) -> Event {
    Event {
        key: None,
        payload: bytes::Bytes::from_static(payload),
        headers: Headers::new(),
        timestamp_ms: None,
        position: Position {
            stream: Arc::from("orders"),
            partition: 0,
            offset: 0,
        },
    }
}

fn load_with(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<PipelineSpec, String> {
    load_pipeline(text, FILE, &env)
}

fn handler(handler_yaml: &str) -> Arc<dyn Handler> {
    match load_with(&pipeline(handler_yaml), &|_| None) {
        Ok(mut spec) => spec.functions.remove(0).handler,
        Err(errors) => panic!("{handler_yaml}\ndid not load:\n{errors}"),
    }
}

fn errors_with(handler_yaml: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    match load_with(&pipeline(handler_yaml), env) {
        Ok(_) => panic!("{handler_yaml}\nloaded without an error"),
        Err(errors) => errors,
    }
}

/// The poison of each kind, chosen by the event's `kind`; good events map
/// to `{id}`. The time limit is far above what the stack and memory poisons
/// need to hit their own limit even on a loaded machine, so each poison
/// meets the limit it is meant to meet.
const POISONED_MAP: &str = r#"name: map
limits: {time: 3s, memory: 64MiB}
expr: |
  if .kind == "recurse" then (def f: if . <= 0 then 0 else (. - 1 | f) + 1 end; .n | f)
  elif .kind == "string" then ("x" * .n | length)
  elif .kind == "loop" then last(range(1e18))
  elif .kind == "repeat" then (repeat(.) | empty)
  else {id} end
"#;

fn poison(kind: &str) -> (String, &'static str, &'static str) {
    match kind {
        "recurse" => (
            r#"{"kind": "recurse", "n": 10000000}"#.to_owned(),
            "resource-limit",
            "overflowed its stack",
        ),
        "string" => (
            format!(r#"{{"kind": "{kind}", "n": 10000000000}}"#),
            "resource-limit",
            "ran out of memory (limit 64 MiB)",
        ),
        _ => (
            format!(r#"{{"kind": "{kind}"}}"#),
            "timeout",
            "took longer than 3s",
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_are_dead_lettered_with_their_reason_and_every_good_event_comes_out_in_order()
{
    let kinds = ["recurse", "string", "loop", "repeat", "recurse"];
    let log = MemoryLog::new("orders", 1);
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for n in 0..30u64 {
        let payload = if n % 6 == 5 {
            let (payload, reason, words) = poison(kinds[(n / 6) as usize]);
            bad.push((n, reason, words));
            payload
        } else {
            good.push(format!(r#"{{"id":{n}}}"#));
            format!(r#"{{"id": {n}, "kind": "good"}}"#)
        };
        log.append(0, Some("k"), payload);
    }
    log.end();
    let (out, dlq) = (MemorySink::new("out"), MemorySink::new("dlq"));
    let report = run_function(
        plan(&log, handler(POISONED_MAP), Ordering::Partition, &out, &dlq),
        options(),
        CancellationToken::new(),
    )
    .await
    .unwrap_or_else(|e| panic!("the run failed: {e}"));
    let outputs: Vec<String> = out
        .records()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect();
    assert_eq!(outputs, good, "every good event, in order");
    let letters = dlq.records();
    assert_eq!(letters.len(), bad.len(), "{letters:?}");
    for (letter, (n, reason, words)) in letters.iter().zip(&bad) {
        let header = |name| letter.headers.get_str(name).unwrap_or_default().to_owned();
        assert_eq!(header(dl::OFFSET), n.to_string());
        assert_eq!(header(dl::REASON), *reason, "offset {n}");
        assert!(header(dl::ERROR).contains(words), "{}", header(dl::ERROR));
        assert_eq!(header(dl::ATTEMPTS), "1", "permanent: not retried");
    }
    assert_eq!(report.dead_lettered, bad.len() as u64);
    assert_eq!(log.committed(0), Some(30));
}

#[test]
fn spate_test_expects_the_dead_letters_of_poison_events_without_aborting() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut tests = String::from("tests:\n  - name: poison is dead-lettered\n    events:\n");
    for kind in ["recurse", "string", "loop"] {
        let (payload, reason, words) = poison(kind);
        tests.push_str(&format!(
            "      - input: {{payload_text: '{payload}'}}\n        expect: {{dead_letter: {{reason: {reason}, error_contains: '{words}'}}}}\n"
        ));
    }
    tests.push_str(
        "      - input: {payload: {id: 7, kind: good}}\n        expect: {outputs: [{payload: {id: 7}}]}\n",
    );
    let file = |expect_good: &str| {
        format!(
            "{}{}",
            pipeline(POISONED_MAP).replace("out/big.jsonl", "big.jsonl"),
            tests.replace("{id: 7}}]", expect_good)
        )
    };
    let spate = |text: String| {
        std::fs::write(dir.path().join("p.yaml"), text).unwrap_or_else(|e| panic!("{e}"));
        let output = Command::new(env!("CARGO_BIN_EXE_spate"))
            .args(["test", "p.yaml"])
            .current_dir(dir.path())
            .env("SPATE_LOG", "warn")
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code(), text)
    };
    let (code, out) = spate(file("{id: 7}}]"));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ok   p.yaml:"), "{out}");
    let (code, out) = spate(file("{id: 8}}]"));
    assert_eq!(
        code,
        Some(1),
        "a wrong expectation is a normal failure: {out}"
    );
    assert!(out.contains("FAIL p.yaml:"), "{out}");
}

/// The deep shapes the parser and compiler recurse on, `n` levels each.
fn deep_shapes(n: usize) -> Vec<(&'static str, String)> {
    vec![
        (
            "parentheses",
            format!("{}1{}", "(".repeat(n), ")".repeat(n)),
        ),
        ("arrays", format!("{}1{}", "[".repeat(n), "]".repeat(n))),
        ("objects", format!("{}1{}", "{a:".repeat(n), "}".repeat(n))),
        ("negations", format!("{}1", "- ".repeat(n))),
        (
            "ifs",
            format!("{}1{}", "if . then ".repeat(n), " end".repeat(n)),
        ),
        ("pipes", format!(".a{}", " | .a".repeat(n))),
        ("sums", format!("1{}", " + 1".repeat(n))),
        (
            "interpolations",
            format!("{}1{}", "\"\\(".repeat(n), ")\"".repeat(n)),
        ),
    ]
}

#[test]
fn deeply_nested_expressions_of_every_shape_are_located_validation_errors() {
    let expr_column = 13; // `      expr: '` puts the expression's first character at 14
    for n in [MAX_DEPTH + 10, MAX_EXPR_BYTES / 6, MAX_EXPR_BYTES / 2 - 2] {
        for (shape, source) in deep_shapes(n) {
            if source.len() > MAX_EXPR_BYTES {
                continue;
            }
            let out = errors_with(&format!("name: map\nexpr: '{source}'"), &|_| None);
            assert!(
                out.starts_with("pipelines/test.yaml:6:"),
                "{shape} x{n}: {out}"
            );
            assert!(
                out.contains(&format!("nests deeper than {MAX_NESTING} levels"))
                    || out.contains(&format!("nests deeper than {MAX_DEPTH} levels")),
                "{shape} x{n}: {out}"
            );
            let column: usize = out
                .split(':')
                .nth(2)
                .and_then(|c| c.parse().ok())
                .unwrap_or_default();
            assert!(
                column > expr_column,
                "{shape}: placed inside the expression: {out}"
            );
        }
    }
    let long = format!("1{}", " + 1".repeat(MAX_EXPR_BYTES));
    let out = errors_with(&format!("name: map\nexpr: '{long}'"), &|_| None);
    assert!(
        out.contains(&format!("longer than {MAX_EXPR_BYTES}")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expression_that_loads_also_runs_on_a_worker_thread() {
    // Just under the limits: validation passes, so running must not
    // overflow a worker thread's small stack either.
    let mut ran = 0;
    // (At `MAX_INLINE_DEPTH` the shapes still run inline, on the worker.)
    let shapes = deep_shapes(MAX_INLINE_DEPTH - 1)
        .into_iter()
        .chain(deep_shapes(MAX_NESTING / 2 - 2))
        .chain(deep_shapes(MAX_DEPTH - 10));
    for (shape, source) in shapes {
        let Ok(mut spec) = load_with(&pipeline(&format!("name: map\nexpr: '{source}'")), &|_| {
            None
        }) else {
            continue;
        };
        ran += 1;
        let map = spec.functions.remove(0).handler;
        let event = event(b"{\"a\": 1}");
        let result = tokio::spawn(async move {
            map.handle(event, &Context::new(Arc::from("orders"), 1))
                .await
                .map(|outputs| outputs.len())
        })
        .await;
        assert!(
            matches!(result, Ok(Ok(_)) | Ok(Err(_))),
            "{shape}: {result:?}"
        );
    }
    assert!(ran >= 20, "only {ran} shapes loaded");
}

#[test]
fn an_environment_reference_inside_an_expression_is_refused_at_its_place() {
    let env = |name: &str| (name == "DEV").then(|| "x\" or true or \"".to_owned());
    let out = errors_with("name: filter\nexpr: '.device == \"${DEV}\"'", &env);
    assert_eq!(
        out,
        "pipelines/test.yaml:6:26: `${…}` inside the expression in `expr`: environment values are not spliced into code\n  hint: bind the value and use it as a jq variable: `vars: {dev: '${DEV}'}` next to `expr`, and `$dev` in the expression (a literal `${` in a jq string: write `\\u0024{`)\n"
    );
    let out = errors_with(
        "name: route\nroutes: [{when: '.a == ${DEV}', to: big}]",
        &env,
    );
    assert!(out.contains("inside the expression in `when`"), "{out}");
}

#[tokio::test]
async fn variables_carry_environment_values_as_strings_not_code() {
    let env = |name: &str| (name == "DEV").then(|| "x\" or true or \"".to_owned());
    let spec = load_with(
        &pipeline("name: filter\nexpr: '.device == $dev'\nvars: {dev: '${DEV}'}"),
        &env,
    );
    let filter = match spec {
        Ok(mut spec) => spec.functions.remove(0).handler,
        Err(errors) => panic!("{errors}"),
    };
    let run = |payload: &'static str| {
        let filter = filter.clone();
        async move {
            let event = event(payload.as_bytes());
            filter
                .handle(event, &Context::new(Arc::from("orders"), 1))
                .await
                .map(|outputs| outputs.len())
                .unwrap_or(99)
        }
    };
    assert_eq!(
        run(r#"{"device": "y"}"#).await,
        0,
        "the injection holds no more"
    );
    assert_eq!(run(r#"{"device": "x\" or true or \""}"#).await, 1);
    let out = errors_with("name: filter\nexpr: '.a'\nvars: {1x: a, ok: [1]}", &|_| {
        None
    });
    assert!(out.contains("`1x` cannot be a jq variable name"), "{out}");
    assert!(
        out.contains("`vars.ok` must be text, found a list"),
        "{out}"
    );
    let out = errors_with(
        "name: map\nexpr: '.'\nlimits: {time: 0s, memory: 1KiB}",
        &|_| None,
    );
    assert!(out.contains("`time` is 0ns, outside 1ms to 60s"), "{out}");
    assert!(
        out.contains("`memory` is 1024 bytes, outside 16MiB to 16GiB"),
        "{out}"
    );
}
