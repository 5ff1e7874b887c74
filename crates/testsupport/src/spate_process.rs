//! `spate` processes of the end-to-end tests: a `spate run` child with its
//! log in a file, and SIGTERM sent only once spate handles it.
//!
//! Guarantees: a [`SpateProcess`] is killed if the test ends first; a stop
//! waits at most 30 s, then kills the process and fails the test with the
//! tail of its log.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Sends SIGTERM once the process handles it (bit 15 of `SigCgt` in
/// /proc), so the signal cannot land before spate installed its handler.
pub fn sigterm_when_handled(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << 14) != 0);
        if caught {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spate never installed its SIGTERM handler"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
}

/// How long a `spate` process may take to stop after SIGTERM.
const STOP_PATIENCE: Duration = Duration::from_secs(30);

/// A `spate run` process of the test, killed if the test ends first; its
/// log goes to a file, whose tail failure messages show.
pub struct SpateProcess {
    child: Option<Child>,
    log: PathBuf,
}

impl SpateProcess {
    /// Starts `spate run pipeline` (`spate`: the binary, in the root tests
    /// `env!("CARGO_BIN_EXE_spate")`) with `env` added to the environment
    /// and its log appended to `log`.
    pub fn start(spate: &str, pipeline: &Path, log: PathBuf, env: &[(&str, &str)]) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(spate)
            .arg("run")
            .arg(pipeline)
            .env("SPATE_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spate starts");
        Self {
            child: Some(child),
            log,
        }
    }

    /// The last lines spate logged, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Panics with the log if spate already exited.
    pub fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("running");
        if let Ok(Some(exit)) = child.try_wait() {
            panic!("spate exited early ({exit}):\n{}", self.log_tail());
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGTERM, then waits for the exit, whatever its status (waits at most
    /// [`STOP_PATIENCE`], then kills it and panics).
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.sigterm_and_wait()
    }

    /// kill -9: the process dies wherever it is.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit (status 0).
    pub fn stop(mut self) {
        let exit = self.sigterm_and_wait();
        assert!(
            exit.success(),
            "SIGTERM ends the run cleanly, got {exit}:\n{}",
            self.log_tail()
        );
    }

    fn sigterm_and_wait(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        sigterm_when_handled(child.id());
        let deadline = Instant::now() + STOP_PATIENCE;
        loop {
            if let Some(exit) = child.try_wait().expect("wait") {
                return exit;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("spate did not stop after SIGTERM:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SpateProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
