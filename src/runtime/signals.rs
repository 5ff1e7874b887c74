//! SIGTERM/SIGINT handling on a dedicated OS thread, so that stopping works
//! whatever the handlers do.
//!
//! # Guarantees
//!
//! - **The first signal asks for a graceful stop.** It cancels the token
//!   [`SignalWatch::token`] hands out: intake stops, in-flight events drain,
//!   positions are committed.
//! - **A second signal exits at once**, with status [`EXIT_SECOND_SIGNAL`],
//!   even when every Tokio worker is stuck in a handler that never yields:
//!   the signals are caught by a signal handler that only writes a byte to a
//!   pipe, and read by a plain OS thread that no handler can block.
//! - **The drain has a hard end.** Once [`SignalWatch::exit_after_drain`]
//!   was given the longest `drain_timeout`, the process exits with status
//!   [`EXIT_DRAIN_OVERRUN`] when that long plus [`DRAIN_OVERRUN_GRACE`] has
//!   passed since the first signal and it is still alive. What was not
//!   committed is read again on the next start.
//!
//! Each of these exits writes one log line saying why.

use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Exit status when a second SIGTERM/SIGINT cut the drain short.
pub const EXIT_SECOND_SIGNAL: i32 = 130;

/// Exit status when the drain outlasted the longest `drain_timeout` plus
/// [`DRAIN_OVERRUN_GRACE`] (a handler that never returns and holds a worker).
pub const EXIT_DRAIN_OVERRUN: i32 = 124;

/// How long past the longest `drain_timeout` the process may take to
/// commit, close its connectors and exit before it is ended.
pub const DRAIN_OVERRUN_GRACE: Duration = Duration::from_secs(3);

/// The graceful-stop token and the hard drain deadline of the process.
#[derive(Debug, Clone)]
pub struct SignalWatch {
    token: CancellationToken,
    drain_limit: Arc<Mutex<Option<Duration>>>,
}

impl SignalWatch {
    /// The token the first signal cancels.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Ends the process with [`EXIT_DRAIN_OVERRUN`] if it still runs
    /// `drain_timeout` + [`DRAIN_OVERRUN_GRACE`] after the first signal.
    /// Pass the longest `drain_timeout` of every function; until this is
    /// called, only a second signal ends a drain early.
    pub fn exit_after_drain(&self, drain_timeout: Duration) {
        let mut limit = self.drain_limit.lock().unwrap_or_else(|e| e.into_inner());
        *limit = Some(drain_timeout + DRAIN_OVERRUN_GRACE);
    }
}

/// Why signals could not be watched.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// The pipe, the signal handler or the thread could not be set up.
    #[error("cannot watch SIGTERM/SIGINT: {0}")]
    Setup(#[from] std::io::Error),
}

/// Installs the SIGTERM and SIGINT handlers and starts the thread that acts
/// on them. Call it once per process; the handlers stay for its lifetime.
pub fn watch_signals() -> Result<SignalWatch, SignalError> {
    let (mut reader, writer) = UnixStream::pair()?;
    writer.set_nonblocking(true)?;
    // The write end lives as long as the process: the handlers hold its fd.
    let fd = writer.as_raw_fd();
    std::mem::forget(writer);
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the action only calls write(2) on a non-blocking socket,
        // which is async-signal-safe, allocates nothing and takes no lock;
        // signal-hook-registry saves and restores errno around it.
        unsafe { signal_hook_registry::register(signal, move || wake(fd)) }?;
    }
    let watch = SignalWatch {
        token: CancellationToken::new(),
        drain_limit: Arc::new(Mutex::new(None)),
    };
    let thread_watch = watch.clone();
    std::thread::Builder::new()
        .name("spate-signals".to_owned())
        .spawn(move || watch_thread(&mut reader, &thread_watch))?;
    Ok(watch)
}

/// Signal-handler side: one byte per signal (dropped if the pipe is full,
/// which only happens after many signals the thread has not read yet).
fn wake(fd: RawFd) {
    let byte = [1u8];
    // SAFETY: `fd` is the write end kept open for the process's lifetime;
    // the buffer is one valid byte.
    let _ = unsafe { libc::write(fd, byte.as_ptr().cast(), 1) };
}

/// Waits for the first signal, cancels the token, then exits on the second
/// signal or at the drain deadline.
fn watch_thread(reader: &mut UnixStream, watch: &SignalWatch) {
    if !read_signal(reader) {
        return;
    }
    info!(
        "shutdown requested: stopping intake, draining, committing (signal again to exit at once)"
    );
    watch.token.cancel();
    let first = Instant::now();
    loop {
        let limit = *watch.drain_limit.lock().unwrap_or_else(|e| e.into_inner());
        let timeout = match limit {
            Some(limit) => match limit.checked_sub(first.elapsed()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => exit_overrun(limit),
            },
            // Re-read the limit now and then: it may be set after the signal.
            None => Some(Duration::from_secs(1)),
        };
        if reader.set_read_timeout(timeout).is_err() {
            return;
        }
        let mut byte = [0u8; 1];
        match reader.read(&mut byte) {
            Ok(1..) => {
                warn!(
                    status = EXIT_SECOND_SIGNAL,
                    "second signal: exiting at once without draining; what was not committed is read again on the next start"
                );
                std::process::exit(EXIT_SECOND_SIGNAL);
            }
            Ok(0) => return,
            Err(error) if is_timeout(&error) => continue,
            Err(_) => return,
        }
    }
}

/// Blocks for the next signal; false if the pipe broke.
fn read_signal(reader: &mut UnixStream) -> bool {
    let mut byte = [0u8; 1];
    loop {
        match reader.read(&mut byte) {
            Ok(1..) => return true,
            Ok(0) => return false,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::Interrupted
    )
}

fn exit_overrun(limit: Duration) -> ! {
    error!(
        status = EXIT_DRAIN_OVERRUN,
        after_ms = limit.as_millis() as u64,
        "the drain did not end within drain_timeout plus {} s (a handler that never returns?): exiting without finishing it; what was not committed is read again on the next start",
        DRAIN_OVERRUN_GRACE.as_secs()
    );
    std::process::exit(EXIT_DRAIN_OVERRUN);
}
