//! The `spate` binary end to end: the README's demo, a graceful SIGTERM that
//! drains and commits, a restart that resumes where the commit left off, and
//! `validate` exit codes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn spate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spate"));
    command.env("SPATE_LOG", "warn");
    command
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_demo_runs_with_no_broker_and_accounts_for_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let output = spate()
        .current_dir(dir.path())
        .args(["run", repo_file("pipelines/demo.yaml").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed: {stderr}");
    assert!(
        stderr.contains("telemetry-demo: 20000 events in"),
        "no summary in: {stderr}"
    );
    let readings = lines(&dir.path().join("out/demo-readings.jsonl"));
    let dead = lines(&dir.path().join("out/demo-dead-letters.jsonl"));
    assert_eq!(dead.len(), 40, "every 500th of 20000 readings is malformed");
    assert_eq!(
        readings.len() + dead.len(),
        20_000,
        "an event was lost or duplicated"
    );
    assert!(
        stderr.contains(&format!("{} handled", readings.len())),
        "{stderr}"
    );
    assert!(stderr.contains("40 dead-lettered"), "{stderr}");
    for letter in &dead {
        let letter: serde_json::Value = serde_json::from_str(letter).unwrap();
        let headers = &letter["headers"];
        assert_eq!(headers["spate-dlq-function"], "telemetry-demo");
        assert_eq!(headers["spate-dlq-reason"], "handler-error");
        assert!(headers["spate-dlq-error"]
            .as_str()
            .unwrap()
            .contains("payload is not JSON"));
        assert!(headers["spate-dlq-offset"].as_str().is_some());
    }
}

#[test]
fn a_log_piped_to_a_file_has_no_terminal_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let output = spate()
        .current_dir(dir.path())
        .env("SPATE_LOG", "info")
        .args(["run", repo_file("pipelines/demo.yaml").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed: {stderr}");
    assert!(stderr.contains(" INFO "), "info lines logged: {stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escapes in a piped log: {stderr:?}"
    );
}

#[cfg(unix)]
#[test]
fn sigterm_drains_commits_and_a_restart_resumes_after_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    let commits = dir.path().join("in.position");
    let text: String = (0..500)
        .map(|n| format!("{{\"key\":\"k{}\",\"payload\":{{\"n\":{n}}}}}\n", n % 7))
        .collect();
    fs::write(&input, text).unwrap();
    let pipeline = dir.path().join("tail.yaml");
    // commit_interval is an hour: only the shutdown commit can move the
    // position within this test.
    fs::write(
        &pipeline,
        format!(
            "settings:\n  metrics_address: off\nfunctions:\n  - name: tail\n    input: {{type: file, path: {}, follow: true, commit_file: {}}}\n    handler: passthrough\n    outputs: [{{type: file, path: {}}}]\n    dead_letter: {{type: file, path: {}}}\n    ordering: key\n    commit_interval: 1h\n",
            input.display(),
            commits.display(),
            output.display(),
            dir.path().join("dead.jsonl").display()
        ),
    )
    .unwrap();

    let run = || {
        spate()
            .args(["run", pipeline.to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let child = run();
    wait_until("500 outputs", || lines(&output).len() == 500);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let finished = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&finished.stderr);
    assert!(
        finished.status.success(),
        "exit after SIGTERM: {:?}\n{stderr}",
        finished.status
    );
    assert!(stderr.contains("tail: 500 events"), "{stderr}");

    // Restart: append 20 lines; only those are processed.
    let more: String = (500..520)
        .map(|n| format!("{{\"payload\":{{\"n\":{n}}}}}\n"))
        .collect();
    fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .and_then(|mut f| std::io::Write::write_all(&mut f, more.as_bytes()))
        .unwrap();
    let child = run();
    wait_until("520 outputs", || lines(&output).len() >= 520);
    std::thread::sleep(Duration::from_millis(200));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let finished = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&finished.stderr);
    assert!(finished.status.success(), "{stderr}");
    assert!(
        stderr.contains("tail: 20 events"),
        "restart re-read committed lines: {stderr}"
    );
    let numbers: Vec<u64> = lines(&output)
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["payload"]["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(numbers.len(), 520);
    let mut sorted = numbers.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..520).collect::<Vec<u64>>());
}

#[test]
fn validate_accepts_the_examples_and_rejects_a_broken_file_with_its_location() {
    let examples = spate()
        .arg("validate")
        .arg(repo_file("pipelines/demo.yaml"))
        .output()
        .unwrap();
    assert!(
        examples.status.success(),
        "{}",
        String::from_utf8_lossy(&examples.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    fs::write(
        &broken,
        "functions:\n  - name: f\n    input: {type: generate}\n    handler: passthrough\n    dead_letter: {type: stdout}\n    concurrency: {min: 4, max: 2}\n",
    )
    .unwrap();
    let result = spate().arg("validate").arg(&broken).output().unwrap();
    assert_eq!(result.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains(&format!("{}:6:", broken.display())),
        "no file:line for the min > max problem in: {stderr}"
    );
}

/// Kills the child if the test fails before handing it back.
struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    fn into_inner(mut self) -> std::process::Child {
        self.0.take().expect("child present")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    );
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

#[cfg(unix)]
#[test]
fn a_running_pipeline_serves_its_metrics_and_readiness() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    fs::write(&input, "{\"payload\":1}\n{\"payload\":2}\nnot json\n").unwrap();
    let pipeline = dir.path().join("p.yaml");
    fs::write(
        &pipeline,
        format!(
            "settings:\n  metrics_address: 127.0.0.1:{port}\nfunctions:\n  - name: watched\n    input: {{type: file, path: {}, follow: true}}\n    handler: passthrough\n    outputs: [{{type: file, path: {}}}]\n    dead_letter: {{type: file, path: {}}}\n    commit_interval: 50ms\n",
            input.display(),
            dir.path().join("out.jsonl").display(),
            dir.path().join("dead.jsonl").display()
        ),
    )
    .unwrap();
    let child = KillOnDrop(Some(
        spate()
            .args(["run", pipeline.to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    wait_until("ready", || {
        http_get(port, "/health/ready").starts_with("HTTP/1.1 200")
    });
    // The per-partition gauges are set just after each commit: wait for
    // everything together rather than racing them.
    wait_until("metrics of the run", || {
        let metrics = http_get(port, "/metrics");
        [
            "spate_events_in_total{function=\"watched\"} 3",
            "spate_events_dead_lettered_total{function=\"watched\"} 1",
            "spate_commits_total{function=\"watched\"}",
            "spate_handler_duration_seconds_bucket{function=\"watched\"",
            "spate_partition_uncommitted_events{function=\"watched\"",
            "spate_handler_concurrency{function=\"watched\"}",
        ]
        .iter()
        .all(|line| metrics.contains(line))
    });
    let child = child.into_inner();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let finished = child.wait_with_output().unwrap();
    assert!(
        finished.status.success(),
        "{}",
        String::from_utf8_lossy(&finished.stderr)
    );
    assert!(
        http_get(port, "/health/live").is_empty(),
        "still serving after exit"
    );
}
