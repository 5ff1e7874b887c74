//! `spate test` end to end: a pipeline's `tests:` block passes or fails
//! with a readable diff and the right exit status, recorded events from
//! `--input` are decided as the engine would decide them (retries, routing
//! to an undeclared output), and a broken `tests:` block is a validation
//! error at its line.

use std::path::Path;
use std::process::{Command, Output};

fn spate(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spate"))
        .args(args)
        .current_dir(dir)
        .env("SPATE_LOG", "warn")
        .output()
        .expect("spate runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Asserts that the command failed (exit code 1) saying `part`.
fn assert_fails_saying(output: &Output, part: &str) {
    assert_eq!(output.status.code(), Some(1), "{}", text(output));
    assert_says(&text(output), part);
}

/// Asserts that the printed `out` contains `part`; the failure shows it.
fn assert_says(out: &str, part: &str) {
    assert!(out.contains(part), "{out}");
}

const FUNCTION: &str = r#"functions:
  - name: readings
    input: {type: generate, count: 1}
    handler: {name: filter, field: temperature, gte: -40}
    outputs: [{type: stdout, name: clean}]
    dead_letter: {type: stdout}
"#;

/// A directory holding `p.yaml`: [`FUNCTION`] followed by `more`.
fn function_with(more: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), format!("{FUNCTION}{more}")).unwrap();
    dir
}

#[test]
fn the_example_pipelines_tests_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = spate(&["test", "pipelines/demo.yaml"], root);
    assert!(output.status.success(), "{}", text(&output));
    let out = text(&output);
    assert_says(&out, "ok   pipelines/demo.yaml:");
    assert!(!out.contains("FAIL"), "{out}");
}

#[test]
fn a_wrong_expectation_fails_with_a_diff_naming_the_line() {
    let dir = function_with(
        "tests:\n  - name: warm readings pass\n    events:\n      - input: {payload: {temperature: 20}}\n        expect: {outputs: [{payload: {temperature: 21}}]}\n      - input: {payload: {temperature: 30}}\n        expect: {outputs: [{payload: {temperature: 30}}]}\n",
    );
    let output = spate(&["test", "p.yaml"], dir.path());
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let out = text(&output);
    assert_says(&out, "FAIL p.yaml:10");
    assert_says(&out, "output 1: payload differs");
    assert_says(&out, r#"→ every output: {"temperature":21}"#);
    assert_says(&out, r#"→ every output: {"temperature":20}"#);
    assert_says(&out, "ok   p.yaml:12");
    assert_says(&out, "1 event(s) did not come out as expected");
}

#[test]
fn input_and_expect_files_check_dead_letters_and_drops() {
    let dir = function_with("");
    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"temperature\": 5}\n\n{\"payload_text\": \"garbage\", \"key\": \"d9\"}\n{\"temperature\": -100}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("expect.jsonl"),
        "{\"outputs\": [{\"payload\": {\"temperature\": 5}}]}\n{\"dead_letter\": {\"reason\": \"handler-error\", \"error_contains\": \"not JSON\"}}\n{\"outputs\": []}\n",
    )
    .unwrap();
    let expecting = |expect: &str| {
        let args = ["test", "p.yaml", "--input", "in.jsonl", "--expect", expect];
        spate(&args, dir.path())
    };
    let output = expecting("expect.jsonl");
    assert!(output.status.success(), "{}", text(&output));
    assert_says(&text(&output), "ok   in.jsonl:3");

    // Without --expect it only prints.
    let output = spate(&["test", "p.yaml", "--input", "in.jsonl"], dir.path());
    assert!(output.status.success());
    let out = text(&output);
    assert_says(&out, "in.jsonl:4\n  no output (dropped)");
    assert_says(&out, "✗ dead letter (handler-error, 1 attempt)");

    // One expectation per input line.
    std::fs::write(dir.path().join("short.jsonl"), "{\"outputs\": []}\n").unwrap();
    let output = expecting("short.jsonl");
    assert_fails_saying(&output, "1 expectations for 3 input events");

    // A line that is not JSON is named.
    std::fs::write(dir.path().join("bad.jsonl"), "{\"a\": 1}\nnot json\n").unwrap();
    let output = spate(&["test", "p.yaml", "--input", "bad.jsonl"], dir.path());
    assert_fails_saying(&output, "bad.jsonl:2: not a JSON value");
}

#[test]
fn a_broken_tests_block_is_a_validation_error_at_its_place() {
    let dir = function_with(
        "tests:\n  - name: wrong function\n    function: nope\n    events:\n      - input: {payload: 1}\n        expect: {outputs: [{payload: 1, too: clean}]}\n",
    );
    for command in ["test", "validate"] {
        let output = spate(&[command, "p.yaml"], dir.path());
        assert_eq!(output.status.code(), Some(1), "{command}");
        let out = text(&output);
        assert!(
            out.contains("p.yaml:9:15: no function `nope` in this file"),
            "{command}: {out}"
        );
        assert!(
            out.contains("p.yaml:12:17: unknown key `too` in an expected output"),
            "{command}: {out}"
        );
    }
}

#[test]
fn nothing_to_test_is_an_error() {
    let dir = function_with("");
    let output = spate(&["test", "p.yaml"], dir.path());
    assert_fails_saying(&output, "nothing to test");
}

#[test]
fn formats_decode_before_the_handler_and_encode_after_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        r#"functions:
  - name: ids
    input: {type: generate, count: 1, format: json}
    handler: passthrough
    outputs:
      - type: stdout
        format: avro
        schema: '{"type": "record", "name": "Id", "fields": [{"name": "id", "type": "long"}]}'
    dead_letter: {type: stdout}
tests:
  - name: ids are encoded, other payloads are not
    events:
      - input: {payload: {id: 1}}
        expect: {outputs: [{payload: {id: 1}}]}
      - input: {payload: {id: "one"}}
        expect: {dead_letter: {reason: encode-error, error_contains: id}}
      - input: {payload_text: "id=1"}
        expect: {dead_letter: {reason: decode-error}}
"#,
    )
    .unwrap();
    let output = spate(&["test", "p.yaml"], dir.path());
    assert!(output.status.success(), "{}", text(&output));
    let out = text(&output);
    assert_eq!(out.matches("ok   p.yaml:").count(), 3, "{out}");
}
