//! The sandbox: expressions that are not proven bounded (see
//! [`bounded`](super::bounded)) run in child processes made by `fork()`
//! without exec, so a stack overflow, an allocation failure or an endless
//! loop ends that child, never this process.
//!
//! Guarantees:
//!
//! - [`POOL_SIZE`] long-lived std threads (made lazily, process-wide, each
//!   with a [`CHILD_STACK`] stack that the child inherits and evaluates on)
//!   each own at most one child. A child keeps only its end of a socket
//!   pair, gets SIGKILL when its parent goes, has no core files, and caps
//!   its address space before each evaluation at its current size plus the
//!   request's memory budget.
//! - One evaluation is bounded in time by its deadline: when it passes, the
//!   child is killed, reaped and replaced on the next request, and the
//!   caller gets [`EvalError::Timeout`]. A child that dies (stack overflow,
//!   memory limit, killed) is reaped and its end turned into
//!   [`EvalError::ResourceLimit`] in words. No child is left a zombie.
//! - When the caller's future is dropped (its own timeout fired first), the
//!   pool thread notices within [`SLICE`] and kills the child.

mod child;
pub mod frame;
mod sys;

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub use frame::Request;
use sys::{Ended, Forked};

use super::{EvalError, Outcome};

/// Sandbox threads (and so child processes) in this process.
pub const POOL_SIZE: usize = 2;

/// The stack of each sandbox thread, which its child evaluates on
/// (reserved address space; pages are committed as they are used).
pub const CHILD_STACK: usize = 64 << 20;

/// How often a waiting pool thread checks whether its caller gave up.
pub const SLICE: Duration = Duration::from_millis(20);

struct Job {
    request: Request,
    time: Duration,
    reply: oneshot::Sender<Result<Outcome, EvalError>>,
}

static POOL: OnceLock<Result<async_channel::Sender<Job>, String>> = OnceLock::new();

fn pool() -> Result<&'static async_channel::Sender<Job>, EvalError> {
    POOL.get_or_init(|| {
        let (sender, receiver) = async_channel::unbounded();
        for index in 0..POOL_SIZE {
            let jobs = receiver.clone();
            std::thread::Builder::new()
                .name(format!("spate-sandbox-{index}"))
                .stack_size(CHILD_STACK)
                .spawn(move || serve(&jobs))
                .map_err(|e| format!("cannot start a sandbox thread: {e}"))?;
        }
        Ok(sender)
    })
    .as_ref()
    .map_err(|e| EvalError::Unavailable(e.clone()))
}

/// Evaluates `request` in a sandbox child within `time` (counted from when
/// a child starts on it).
pub async fn evaluate(request: Request, time: Duration) -> Result<Outcome, EvalError> {
    let (reply, answer) = oneshot::channel();
    pool()?
        .send(Job {
            request,
            time,
            reply,
        })
        .await
        .map_err(|_| EvalError::Unavailable("the sandbox is closed".to_owned()))?;
    answer
        .await
        .map_err(|_| EvalError::Unavailable("the sandbox thread ended".to_owned()))?
}

/// A pool thread: one job at a time, one child at most.
fn serve(jobs: &async_channel::Receiver<Job>) {
    let mut child = None;
    while let Ok(job) = jobs.recv_blocking() {
        if job.reply.is_closed() {
            continue;
        }
        let result = run_job(&mut child, &job);
        let _ = job.reply.send(result);
    }
    if let Some(child) = child.take() {
        child.end();
    }
}

struct Child {
    pid: libc::pid_t,
    socket: UnixStream,
}

impl Child {
    fn spawn() -> io::Result<Self> {
        let (ours, theirs) = UnixStream::pair()?;
        let parent = sys::getpid();
        match sys::fork()? {
            Forked::Child => child::run(theirs, parent),
            Forked::Parent(pid) => {
                drop(theirs);
                Ok(Self { pid, socket: ours })
            }
        }
    }

    /// Kills and reaps the child.
    fn end(self) -> Ended {
        sys::kill(self.pid);
        sys::wait(self.pid)
    }

    /// Reaps a child that closed its socket (it is dying or dead).
    fn reap(self) -> Ended {
        drop(self.socket);
        sys::wait(self.pid)
    }
}

/// Why a job stopped waiting for its reply.
enum Stop {
    Deadline,
    Abandoned,
    Died,
}

fn run_job(slot: &mut Option<Child>, job: &Job) -> Result<Outcome, EvalError> {
    let mut child = match slot.take() {
        Some(child) => child,
        None => Child::spawn()
            .map_err(|e| EvalError::Unavailable(format!("cannot start a sandbox process: {e}")))?,
    };
    let deadline = Instant::now() + job.time;
    let exchanged = send(&mut child.socket, &job.request, deadline)
        .and_then(|()| receive(&mut child.socket, deadline, &job.reply));
    match exchanged {
        Ok(body) => match frame::decode_reply(&body) {
            Ok(reply) => {
                *slot = Some(child);
                reply
            }
            Err(e) => {
                child.end();
                Err(EvalError::Unavailable(e.to_string()))
            }
        },
        Err(Stop::Deadline) => {
            child.end();
            Err(EvalError::Timeout(job.time))
        }
        Err(Stop::Abandoned) => {
            child.end();
            Err(EvalError::Timeout(job.time))
        }
        Err(Stop::Died) => Err(EvalError::ResourceLimit(died(
            child.reap(),
            job.request.memory,
        ))),
    }
}

fn send(socket: &mut UnixStream, request: &Request, deadline: Instant) -> Result<(), Stop> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Stop::Deadline);
    }
    socket
        .set_write_timeout(Some(left))
        .map_err(|_| Stop::Died)?;
    frame::write_frame(socket, &request.encode()).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Stop::Deadline,
        _ => Stop::Died,
    })
}

/// Reads one reply frame, in slices of [`SLICE`], until `deadline` or
/// until the requester is gone.
fn receive(
    socket: &mut UnixStream,
    deadline: Instant,
    reply: &oneshot::Sender<Result<Outcome, EvalError>>,
) -> Result<Vec<u8>, Stop> {
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if buffer.len() >= 4 {
            let mut head = [0; 4];
            head.copy_from_slice(&buffer[..4]);
            let len = frame::frame_len(head).map_err(|_| Stop::Died)?;
            if buffer.len() >= 4 + len {
                buffer.drain(..4);
                return Ok(buffer);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Stop::Deadline);
        }
        if reply.is_closed() {
            return Err(Stop::Abandoned);
        }
        socket
            .set_read_timeout(Some(left.min(SLICE)))
            .map_err(|_| Stop::Died)?;
        match socket.read(&mut chunk) {
            Ok(0) => return Err(Stop::Died),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return Err(Stop::Died),
        }
    }
}

/// What happened to a child that died during an evaluation, in words.
fn died(ended: Ended, memory: u64) -> String {
    let mib = memory >> 20;
    match ended {
        Ended::Signaled(libc::SIGSEGV | libc::SIGBUS) => {
            "the evaluation overflowed its stack (recursion too deep)".to_owned()
        }
        Ended::Signaled(libc::SIGABRT) => {
            format!("the evaluation ran out of memory (limit {mib} MiB)")
        }
        Ended::Signaled(libc::SIGKILL) => {
            "the evaluation was killed (SIGKILL, e.g. by the system's out-of-memory killer)"
                .to_owned()
        }
        Ended::Signaled(signal) => format!("the evaluation was ended by signal {signal}"),
        Ended::Exited(3) => "the sandbox could not set its memory limit".to_owned(),
        Ended::Exited(status) => format!("the sandbox process exited with status {status}"),
        Ended::Unknown => "the sandbox process ended".to_owned(),
    }
}

#[cfg(test)]
mod tests;
