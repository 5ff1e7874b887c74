//! A broker that cannot be reached, as `spate run` reports it: within 2 s of
//! the start, once (not once per retry), naming the address, without the
//! same text twice on a line; a shutdown while waiting for it ends cleanly;
//! an error that ends the run is printed once.

use spate_testsupport::nats as nats_common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn an_unreachable_kafka_and_nats_are_each_reported_within_2_s_once_and_not_per_retry() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let pipeline = dir.path().join("down.yaml");
    std::fs::write(
        &pipeline,
        format!(
            r#"settings: {{metrics_address: off}}
functions:
  - name: k
    input: {{type: kafka, bootstrap_servers: '127.0.0.1:{port}', topics: [t], group_id: g}}
    handler: passthrough
    outputs: [{{type: file, path: {out}}}]
    dead_letter: {{type: file, path: {out}}}
  - name: n
    input: {{type: nats, url: 'nats://127.0.0.1:{port}', subject: s}}
    handler: passthrough
    outputs: [{{type: file, path: {out}}}]
    dead_letter: {{type: file, path: {out}}}
    delivery: at_most_once
"#,
            out = dir.path().join("out.jsonl").display()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_spate"))
        .args(["run", pipeline.to_str().unwrap()])
        .env("SPATE_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = sender.send((started.elapsed(), line));
        }
    });
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
    let pipeline = dir.path().join("absent.yaml");
    std::fs::write(
        &pipeline,
        format!(
            r#"settings: {{metrics_address: off}}
functions:
  - name: j
    input: {{type: jetstream, url: '{url}', stream: {stream}, durable: d}}
    handler: passthrough
    outputs: [{{type: file, path: {out}}}]
    dead_letter: {{type: file, path: {out}}}
"#,
            url = nats.url,
            out = dir.path().join("out.jsonl").display()
        ),
    )
    .unwrap();
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
