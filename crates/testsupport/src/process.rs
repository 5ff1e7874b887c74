//! The pieces every broker harness is made of: a free port, "is something
//! answering at this address", waiting until it does, a child process
//! killed on drop, and the choice between a broker already answering on
//! its standard port and one started for the test.
//!
//! Guarantees: [`ChildGuard`] kills and reaps its process when dropped (or
//! replaced); [`start_on_free_port`] returns only once the child answers,
//! trying another port when the first one was lost to someone else;
//! [`shared`] never starts anything.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a broker of the test's own may take to answer.
pub const START_PATIENCE: Duration = Duration::from_secs(10);

/// A port nothing listens on right now (another process may take it before
/// the caller binds it: [`start_on_free_port`] tries again then).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Whether something accepts TCP connections at `addr` (`host:port`).
///
/// A connection to itself does not count: polling a local port nobody
/// listens on yet can, on Linux, pick that very port as the probe's own
/// source port and "connect" (TCP simultaneous open). The probe then holds
/// the port, and the server meant to bind it cannot.
pub fn answers(addr: &str) -> bool {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_millis(300)).ok())
        .is_some_and(|stream| !is_self_connection(&stream))
}

fn is_self_connection(stream: &TcpStream) -> bool {
    matches!((stream.local_addr(), stream.peer_addr()), (Ok(local), Ok(peer)) if local == peer)
}

/// Polls `addr` until it [`answers`]; false if `patience` ran out first or
/// `gave_up` said to stop (the child exited, say).
pub fn wait_until_answering(
    addr: &str,
    patience: Duration,
    mut gave_up: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + patience;
    loop {
        if answers(addr) {
            return true;
        }
        if gave_up() || Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed (and reaped) when the guard drops.
pub struct ChildGuard(Child);

impl ChildGuard {
    /// Guards `child`.
    pub fn new(child: Child) -> Self {
        Self(child)
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Whether the process has exited already.
    pub fn exited(&mut self) -> bool {
        self.0.try_wait().ok().flatten().is_some()
    }

    /// Kills the process now and waits for it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a child with `spawn(port)` on a free port and waits until it
/// answers on `127.0.0.1:port`; a child that exits or stays silent is
/// killed and the next free port tried (five in all, then panics naming
/// `what`). Returns the guarded child and its port.
pub fn start_on_free_port(what: &str, mut spawn: impl FnMut(u16) -> Child) -> (ChildGuard, u16) {
    for _ in 0..5 {
        let port = free_port();
        if let Some(child) = start_on(port, &mut spawn) {
            return (child, port);
        }
    }
    panic!("{what} did not come up");
}

/// Starts a child with `spawn(port)` and waits until it answers on
/// `127.0.0.1:port`; `None` (the child killed) if it exited or stayed
/// silent for [`START_PATIENCE`].
pub fn start_on(port: u16, spawn: impl FnOnce(u16) -> Child) -> Option<ChildGuard> {
    let mut child = ChildGuard::new(spawn(port));
    let addr = format!("127.0.0.1:{port}");
    // Answered by our child, not by a process that held the port first
    // while ours failed to bind it and is exiting.
    let answered = wait_until_answering(&addr, START_PATIENCE, || child.exited());
    (answered && !child.exited()).then_some(child)
}

/// The broker the environment names (`env_var`, a `scheme://host:port` or
/// `host:port`, default `default`) as `host:port`, if it answers; `None`
/// when the test should start one of its own.
pub fn shared(env_var: &str, default: &str, scheme: &str) -> Option<String> {
    let url = std::env::var(env_var).unwrap_or_else(|_| default.to_owned());
    let host_port = url
        .trim_start_matches(scheme)
        .trim_start_matches("://")
        .trim_end_matches('/')
        .to_owned();
    answers(&host_port).then_some(host_port)
}

/// The binary `name` from `env_var`, else `/usr/sbin/name` if it exists,
/// else `name` on the `PATH`.
pub fn binary(env_var: &str, name: &str) -> String {
    std::env::var(env_var).unwrap_or_else(|_| {
        let sbin = format!("/usr/sbin/{name}");
        if std::path::Path::new(&sbin).exists() {
            sbin
        } else {
            name.to_owned()
        }
    })
}

/// The child's stderr lines as they come, each passed through `tag` on the
/// reading thread (to note when it came, say). Takes the child's piped
/// stderr.
pub fn stderr_lines_with<T: Send + 'static>(
    child: &mut Child,
    tag: impl Fn(String) -> T + Send + 'static,
) -> mpsc::Receiver<T> {
    let stderr = child.stderr.take().expect("the child's stderr is piped");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if sender.send(tag(line)).is_err() {
                break;
            }
        }
    });
    receiver
}

/// The child's stderr lines as they come (see [`stderr_lines_with`]).
pub fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    stderr_lines_with(child, |line| line)
}
