//! `/health/ready` of a running `spate` against a real Kafka broker (Tansu,
//! `TANSU_BIN`): 503 while the consumer group is still joining, 200 once the
//! source was assigned its partitions, and 503 again from the moment a drain
//! starts, while the process is still draining.

use spate_testsupport::kafka::blocking as kafka_common;
use spate_testsupport::process::{free_port, stderr_lines};

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kafka_common::Tansu;

/// `GET path` on the endpoint; (status, body), or `None` while it does not
/// answer yet.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ready_waits_for_the_kafka_group_assignment_and_turns_503_when_the_drain_starts() {
    let broker = Tansu::start();
    let topic = format!("ready-{}", std::process::id());
    broker.create_topic(&topic, 2);
    // The handler's function accepts connections and never answers: an
    // event in flight keeps the drain going for its `drain_timeout`.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("ready.yaml");
    std::fs::write(
        &pipeline,
        format!(
            r#"settings:
  metrics_address: 127.0.0.1:{port}
functions:
  - name: slow
    input:
      type: kafka
      bootstrap_servers: {bootstrap}
      topics: [{topic}]
      group_id: {topic}-group
      session_timeout: 6s
    handler: {{name: http, url: 'http://{silent}/slow', timeout: 60s}}
    outputs: [{{type: file, path: {out}}}]
    dead_letter: {{type: file, path: {dead}}}
    retry: {{max_attempts: 1, timeout: 60s}}
    drain_timeout: 5s
"#,
            bootstrap = broker.bootstrap,
            silent = silent.local_addr().unwrap(),
            out = dir.path().join("out.jsonl").display(),
            dead = dir.path().join("dead.jsonl").display(),
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_spate"))
        .args(["run", pipeline.to_str().unwrap()])
        .env("SPATE_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    let mut child = KillOnDrop(child);
    let mut seen = Vec::new();

    // Before the group assigned the partitions: 503, naming the source.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answers = Vec::new();
    let ready_at = loop {
        assert!(Instant::now() < deadline, "never ready: {answers:?}");
        if let Some((status, body)) = get(port, "/health/ready") {
            if status == 200 {
                break Instant::now();
            }
            answers.push((status, body));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        answers
            .iter()
            .any(|(s, b)| *s == 503 && b.contains("waiting for ready/slow input 0")),
        "no 503 while the group joined: {answers:?}"
    );
    // By the time it said 200, the assignment was logged.
    seen.extend(lines.try_iter());
    while Instant::now() < ready_at + Duration::from_millis(300) {
        seen.extend(lines.recv_timeout(Duration::from_millis(50)).ok());
    }
    assert!(
        seen.iter().any(|l| l.contains("partitions assigned")),
        "ready before the assignment: {seen:#?}"
    );
    assert_eq!(get(port, "/health/live").map(|a| a.0), Some(200));

    // An event in flight, stuck in the handler; then SIGTERM.
    broker.produce(&topic, 2, &[("k".to_owned(), b"{\"n\":1}".to_vec())]);
    silent.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let _stuck = loop {
        match silent.accept() {
            Ok((stream, _)) => break stream,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(error) => panic!("the handler never called: {error}"),
        }
    };
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        assert!(Instant::now() < deadline, "still ready after SIGTERM");
        if let Some((503, body)) = get(port, "/health/ready") {
            assert_eq!(body, "not ready: draining\n");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the 503 came during the drain, not after the exit"
    );
    assert_eq!(get(port, "/health/live").map(|a| a.0), Some(200));
    let exit = child.0.wait().unwrap();
    seen.extend(lines.try_iter());
    assert!(exit.success(), "{seen:#?}");
}
