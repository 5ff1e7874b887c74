//! A broker that cannot be reached, as `spate run` reports it: within 2 s of
//! the start, once (not once per retry), naming the address, without the
//! same text twice on a line; a shutdown while waiting for it ends cleanly;
//! an error that ends the run is printed once.

use spate_testsupport::nats as nats_common;
use spate_testsupport::process::{free_port, stderr_lines_with};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Writes `file` in `dir`: a pipeline of passthrough functions, each
/// (name, input as a YAML flow mapping, more lines of the function),
/// writing their outputs and dead letters to `out.jsonl` in `dir`.
fn write_pipeline(dir: &Path, file: &str, functions: &[(&str, String, &str)]) -> PathBuf {
    let out = dir.join("out.jsonl");
    let out = out.display();
    let mut text = String::from("settings: {metrics_address: off}\nfunctions:\n");
    for (name, input, more) in functions {
        text.push_str(&format!(
            "  - name: {name}\n    input: {input}\n    handler: passthrough\n    outputs: [{{type: file, path: {out}}}]\n    dead_letter: {{type: file, path: {out}}}\n{more}"
        ));
    }
    let pipeline = dir.join(file);
    std::fs::write(&pipeline, text).unwrap();
    pipeline
}

#[test]
fn an_unreachable_kafka_and_nats_are_each_reported_within_2_s_once_and_not_per_retry() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let pipeline = write_pipeline(
        dir.path(),
        "down.yaml",
        &[
            (
                "k",
                format!("{{type: kafka, bootstrap_servers: '127.0.0.1:{port}', topics: [t], group_id: g}}"),
                "",
            ),
            (
                "n",
                format!("{{type: nats, url: 'nats://127.0.0.1:{port}', subject: s}}"),
                "    delivery: at_most_once\n",
            ),
        ],
    );
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_spate"))
        .args(["run", pipeline.to_str().unwrap()])
        .env("SPATE_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines_with(&mut child, move |line| (started.elapsed(), line));
    let mut seen: Vec<(Duration, String)> = Vec::new();
    // Long enough for several retries (1 s, 2 s, then 4 s apart).
    while started.elapsed() < Duration::from_secs(5) {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            seen.push(line);
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    seen.extend(lines.try_iter());
    let all: Vec<&str> = seen.iter().map(|(_, l)| l.as_str()).collect();
    assert!(
        status.success(),
        "a shutdown while connecting is clean: {all:#?}"
    );
    let address = format!("127.0.0.1:{port}");
    for (kind, what) in [
        ("kafka", "cannot reach Kafka"),
        ("nats", "cannot connect to NATS"),
    ] {
        let reports: Vec<&(Duration, String)> = seen
            .iter()
            .filter(|(_, l)| l.contains(&address) && l.contains(what))
            .collect();
        assert_eq!(reports.len(), 1, "{kind}: once, not per retry: {all:#?}");
        let (at, line) = reports[0];
        assert!(
            *at < Duration::from_secs(2),
            "{kind}: reported after {at:?}"
        );
        assert_eq!(
            line.matches(what).count(),
            1,
            "{kind}: doubled text: {line}"
        );
        assert!(line.contains(&format!("input `{kind}`")), "{line}");
    }
}

#[test]
fn an_error_that_ends_the_run_is_printed_once() {
    let nats = nats_common::server();
    let stream = format!("ABSENT_{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        dir.path(),
        "absent.yaml",
        &[(
            "j",
            format!(
                "{{type: jetstream, url: '{}', stream: {stream}, durable: d}}",
                nats.url
            ),
            "",
        )],
    );
    let output = Command::new(env!("CARGO_BIN_EXE_spate"))
        .args(["run", pipeline.to_str().unwrap()])
        .env("SPATE_LOG", "off")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let start = format!(
        "error: function `j`: cannot open input `jetstream`: jetstream:{stream}: cannot bind stream `{stream}` at `{}`: ",
        nats.url
    );
    assert!(lines[0].starts_with(&start), "{stderr}");
    assert_eq!(
        lines[0].matches("cannot bind stream").count(),
        1,
        "{stderr}"
    );
    assert!(
        lines[0].ends_with("; create it, or set `subjects` so spate creates it"),
        "{stderr}"
    );
}
