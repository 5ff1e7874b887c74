//! Stopping a process whose handler never returns and holds the only Tokio
//! worker: a second signal exits at once (status 130), and a first signal
//! alone ends the process once the drain deadline passed (status 124).
//!
//! The process under test is this test binary itself, started again with
//! `SPATE_SIGNAL_CHILD` set: it runs a pipeline whose Rust handler blocks
//! its thread forever, on a runtime with a single worker. Without a harness
//! (`harness = false`), so `main` decides which of the two it is.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use spate::{Context, Event, HandlerError, Output, Runtime};
use spate_testsupport::process::stderr_lines;

const CHILD: &str = "SPATE_SIGNAL_CHILD";
const STARTED: &str = "handler started and will never return";
/// The pipeline's `drain_timeout`.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

fn main() {
    if let Ok(pipeline) = std::env::var(CHILD) {
        child(Path::new(&pipeline));
    }
    let tests: [(&str, fn()); 2] = [
        (
            "a_second_signal_exits_at_once_while_a_handler_blocks_the_only_worker",
            a_second_signal_exits_at_once_while_a_handler_blocks_the_only_worker,
        ),
        (
            "a_first_signal_alone_ends_the_process_after_the_drain_deadline_whatever_the_handler_does",
            a_first_signal_alone_ends_the_process_after_the_drain_deadline_whatever_the_handler_does,
        ),
    ];
    for (name, test) in tests {
        eprintln!("test {name} ...");
        test();
        eprintln!("test {name} ... ok");
    }
}

async fn never_returns(_event: Event, _ctx: &Context) -> Result<Vec<Output>, HandlerError> {
    eprintln!("{STARTED}");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The process under test: exits only through the signal thread.
fn child(pipeline: &Path) -> ! {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("info")
        .init();
    let signals = spate::runtime::watch_signals().expect("signals");
    let mut runtime = Runtime::new();
    runtime
        .registry_mut()
        .register("never_returns", never_returns);
    let specs = runtime.load(&[pipeline]).expect("pipeline loads");
    signals.exit_after_drain(spate::runtime::longest_drain(&specs));
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let result = tokio.block_on(runtime.run(specs, signals.token()));
    eprintln!("run returned: {:?}", result.map(|_| ()));
    std::process::exit(0);
}

/// The running child and the lines it wrote on stderr, as they come.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pipeline = dir.path().join("blocking.yaml");
        std::fs::write(
            &pipeline,
            format!(
                "functions:\n  - name: blocking\n    input: {{type: generate, count: 1}}\n    handler: never_returns\n    outputs: [{{type: file, path: {out}}}]\n    dead_letter: {{type: file, path: {dead}}}\n    concurrency: {{min: 1, max: 1}}\n    drain_timeout: {drain}ms\n",
                out = dir.path().join("out.jsonl").display(),
                dead = dir.path().join("dead.jsonl").display(),
                drain = DRAIN_TIMEOUT.as_millis(),
            ),
        )
        .unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(CHILD, &pipeline)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = stderr_lines(&mut child);
        let mut running = Self {
            child,
            lines,
            seen: Vec::new(),
            _dir: dir,
        };
        running.wait_for_line(STARTED, Duration::from_secs(30));
        running
    }

    fn wait_for_line(&mut self, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.seen.iter().any(|l| l.contains(text)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no `{text}` within {within:?}; stderr: {:#?}", self.seen),
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `within` for the exit; kills the child if it did not.
    fn exit_within(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.seen.extend(self.lines.try_iter());
                return (status, started.elapsed());
            }
            if started.elapsed() > within {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.seen.extend(self.lines.try_iter());
                panic!(
                    "still running {within:?} after the signal; stderr: {:#?}",
                    self.seen
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn a_second_signal_exits_at_once_while_a_handler_blocks_the_only_worker() {
    let mut running = Running::start();
    running.signal("TERM");
    running.wait_for_line("shutdown requested", Duration::from_secs(5));
    running.signal("INT");
    let (status, took) = running.exit_within(Duration::from_secs(2));
    assert_eq!(
        status.code(),
        Some(spate::runtime::EXIT_SECOND_SIGNAL),
        "{:#?}",
        running.seen
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let said: Vec<_> = running
        .seen
        .iter()
        .filter(|l| l.contains("second signal: exiting at once"))
        .collect();
    assert_eq!(said.len(), 1, "one line says why: {:#?}", running.seen);
}

fn a_first_signal_alone_ends_the_process_after_the_drain_deadline_whatever_the_handler_does() {
    let mut running = Running::start();
    running.signal("TERM");
    let limit = DRAIN_TIMEOUT + spate::runtime::DRAIN_OVERRUN_GRACE;
    let (status, took) = running.exit_within(limit + Duration::from_secs(2));
    assert_eq!(
        status.code(),
        Some(spate::runtime::EXIT_DRAIN_OVERRUN),
        "{:#?}",
        running.seen
    );
    assert!(
        took >= limit - Duration::from_millis(100),
        "ended before the drain deadline: {took:?}"
    );
    assert_eq!(
        running
            .seen
            .iter()
            .filter(|l| l.contains("the drain did not end within drain_timeout"))
            .count(),
        1,
        "one line says why: {:#?}",
        running.seen
    );
}
