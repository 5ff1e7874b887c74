//! Contenders as child processes, measured the same way whoever they are:
//! CPU seconds (`utime + stime` of `/proc/<pid>/stat`, all threads) and
//! resident memory (`VmRSS`, and the kernel's high-water mark `VmHWM` of
//! `/proc/<pid>/status`), sampled every [`SAMPLE_EVERY`] by a thread of the
//! harness from spawn until the process is stopped.
//!
//! Guarantees: a [`Contender`] is stopped (SIGTERM, then SIGKILL after the
//! grace period) when it is dropped, so no child outlives the harness's
//! panic; stdout and stderr go to a log file whose tail is quoted when a
//! contender dies early.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often CPU time and memory are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// One sample of a running contender.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// When it was taken.
    pub at: Instant,
    /// CPU seconds used so far (user + system, all threads).
    pub cpu_s: f64,
    /// Resident set now, KiB.
    pub rss_kib: u64,
    /// Peak resident set so far, KiB.
    pub hwm_kib: u64,
}

/// A running contender process with its sampler.
pub struct Contender {
    /// What it is (for messages).
    pub name: String,
    child: Child,
    log: PathBuf,
    samples: Arc<Mutex<Vec<ProcSample>>>,
    done: Arc<AtomicBool>,
    sampler: Option<JoinHandle<()>>,
}

/// What a stopped contender left.
pub struct Stopped {
    /// Every sample taken, in order.
    pub samples: Vec<ProcSample>,
    /// Its stdout and stderr.
    pub log: String,
    /// Whether it exited on its own after SIGTERM (not killed).
    pub clean_exit: bool,
}

impl Stopped {
    /// CPU seconds used between two instants (nearest samples outside).
    pub fn cpu_between(&self, from: Instant, to: Instant) -> f64 {
        let before = self
            .samples
            .iter()
            .rev()
            .find(|s| s.at <= from)
            .or(self.samples.first());
        let after = self
            .samples
            .iter()
            .find(|s| s.at >= to)
            .or(self.samples.last());
        match (before, after) {
            (Some(b), Some(a)) => (a.cpu_s - b.cpu_s).max(0.0),
            _ => 0.0,
        }
    }

    /// The peak resident set seen, MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.samples
            .iter()
            .map(|s| s.hwm_kib.max(s.rss_kib))
            .max()
            .unwrap_or(0) as f64
            / 1024.0
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// CPU seconds of a live process, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// (`VmRSS`, `VmHWM`) of a live process, KiB.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

impl Contender {
    /// Starts `command` with its output in `log`, and its sampler.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Self {
        let file = std::fs::File::create(log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = file.try_clone().expect("log file handle");
        let child = command
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {command:?}: {e}"));
        let pid = child.id();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (samples, done) = (samples.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    let at = Instant::now();
                    if let (Some(cpu_s), Some((rss_kib, hwm_kib))) =
                        (cpu_seconds(pid), memory_kib(pid))
                    {
                        samples.lock().expect("samples").push(ProcSample {
                            at,
                            cpu_s,
                            rss_kib,
                            hwm_kib,
                        });
                    }
                    std::thread::sleep(SAMPLE_EVERY);
                }
            })
        };
        Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            samples,
            done,
            sampler: Some(sampler),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Samples so far.
    pub fn samples(&self) -> Vec<ProcSample> {
        self.samples.lock().expect("samples").clone()
    }

    /// Panics with the log's tail if the process already exited.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}); its log ends:\n{}",
                self.name,
                tail(&self.log)
            );
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; returns the samples
    /// and the log.
    pub fn stop(mut self, grace: Duration) -> Stopped {
        // One last sample while it is still alive.
        let pid = self.pid();
        if let (Some(cpu_s), Some((rss_kib, hwm_kib))) = (cpu_seconds(pid), memory_kib(pid)) {
            self.samples.lock().expect("samples").push(ProcSample {
                at: Instant::now(),
                cpu_s,
                rss_kib,
                hwm_kib,
            });
        }
        let clean_exit = self.terminate(grace);
        self.done.store(true, Ordering::SeqCst);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
        Stopped {
            samples: self.samples(),
            log: std::fs::read_to_string(&self.log).unwrap_or_default(),
            clean_exit,
        }
    }

    fn terminate(&mut self, grace: Duration) -> bool {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status.success();
        }
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success() || status.code().is_none();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        if self.sampler.is_some() {
            self.terminate(Duration::from_secs(5));
            self.done.store(true, Ordering::SeqCst);
        }
    }
}

/// The last lines of a log file.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
