//! The operating-system calls of the sandbox, and the only `unsafe` code of
//! the expression module: `fork`, and what a forked child does to itself
//! before it evaluates anything (close inherited descriptors, die with its
//! parent, cap its address space, no core files), plus `kill` and
//! `waitpid` for the parent. Each call is a thin wrapper that returns
//! `std::io::Result`; everything above this module is safe code.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// Whose side of a `fork` this is.
pub(super) enum Forked {
    /// The parent; the child's process id.
    Parent(libc::pid_t),
    /// The new child process.
    Child,
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// It exited with this status.
    Exited(i32),
    /// A signal ended it.
    Signaled(i32),
    /// It could not be waited for (already reaped, or not our child).
    Unknown,
}

fn check(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// Forks the process. The child is a copy of the calling thread only: it
/// must not take any lock another thread may have held at the time (no
/// logging, no stdout/stderr, no tokio), which is what [`super::child`]
/// keeps to.
pub(super) fn fork() -> io::Result<Forked> {
    // SAFETY: `fork` has no memory-safety preconditions of its own; the
    // child's restrictions (only the calling thread survives, locks held by
    // other threads stay held) are upheld by the child code, which only
    // allocates (glibc's malloc is reset for the child by its own fork
    // handlers) and makes the system calls in this module.
    let pid = check(unsafe { libc::fork() })?;
    Ok(if pid == 0 {
        Forked::Child
    } else {
        Forked::Parent(pid)
    })
}

/// This process's id.
pub(super) fn getpid() -> libc::pid_t {
    // SAFETY: `getpid` cannot fail and touches no memory of ours.
    unsafe { libc::getpid() }
}

/// In the child: asks the kernel to SIGKILL this process when the thread
/// that forked it ends (pool threads live as long as the process), then
/// exits at once if the parent `parent` is already gone.
pub(super) fn die_with_parent(parent: libc::pid_t) {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; no pointers involved.
    let set = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // SAFETY: `getppid` cannot fail and touches no memory of ours.
    if set != 0 || unsafe { libc::getppid() } != parent {
        exit(0);
    }
}

/// In the child: closes every descriptor but `keep` (listed from
/// `/proc/self/fd`) and points standard input, output and error at
/// `/dev/null`.
pub(super) fn close_other_fds(keep: RawFd) {
    let listed: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    };
    // The directory's own descriptor is in the list but closed by now.
    for fd in listed {
        if fd != keep && fd > 2 {
            // SAFETY: closing a descriptor number is memory-safe; no Rust
            // object of this (child) process owns these descriptors any more
            // except `keep`, which is skipped.
            unsafe { libc::close(fd) };
        }
    }
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for target in 0..=2 {
            // SAFETY: `dup2` onto the standard descriptors; `null` stays
            // open for the duration of the call.
            unsafe { libc::dup2(null.as_raw_fd(), target) };
        }
    }
}

/// In the child: restores the default action of SIGSEGV and SIGBUS, so a
/// stack overflow ends the child by that signal (std's handler would print
/// a message and abort, which reads like an allocation failure); and
/// ignores SIGINT, SIGTERM, SIGHUP and SIGPIPE, whose inherited handlers
/// (tokio's) belong to the parent: a Ctrl-C sent to the process group is
/// the parent's to act on, and the child ends with it (`die_with_parent`).
pub(super) fn child_signals() {
    for signal in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: installing SIG_DFL for a signal has no preconditions.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
        // SAFETY: installing SIG_IGN for a signal has no preconditions.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
}

/// In the child: no core files.
pub(super) fn no_core_files() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `zero` is a valid rlimit that lives across the call.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
}

/// In the child: sets the soft limit of the address space to `bytes`
/// (the hard limit is left as it is; a soft limit above it is cut to it).
pub(super) fn limit_address_space(bytes: u64) -> io::Result<()> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `current` is a valid, writable rlimit for the call.
    check(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut current) })?;
    let wanted = libc::rlimit {
        rlim_cur: bytes.min(current.rlim_max),
        rlim_max: current.rlim_max,
    };
    // SAFETY: `wanted` is a valid rlimit that lives across the call.
    check(unsafe { libc::setrlimit(libc::RLIMIT_AS, &wanted) }).map(drop)
}

/// Ends this (child) process at once: no destructors, no atexit handlers,
/// no flushing of buffers shared with the parent.
pub(super) fn exit(status: i32) -> ! {
    // SAFETY: `_exit` is always safe to call; it does not return.
    unsafe { libc::_exit(status) }
}

/// Sends SIGKILL to `pid`.
pub(super) fn kill(pid: libc::pid_t) {
    // SAFETY: sending a signal has no memory-safety preconditions; `pid` is
    // a child of ours that has not been reaped yet, so the id is not reused.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Waits for the child `pid` to end and reaps it.
pub(super) fn wait(pid: libc::pid_t) -> Ended {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a valid, writable int for the call.
        let result = unsafe { libc::waitpid(pid, &mut status, 0) };
        if result == pid {
            break;
        }
        if result < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return Ended::Unknown;
    }
    if libc::WIFEXITED(status) {
        Ended::Exited(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Ended::Signaled(libc::WTERMSIG(status))
    } else {
        Ended::Unknown
    }
}
