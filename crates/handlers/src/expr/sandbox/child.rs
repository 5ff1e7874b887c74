//! The life of a sandbox child after `fork`: cut itself off (descriptors,
//! parent death, core files, fault signals, panic output), then answer
//! requests until its socket closes. It never logs, never touches tokio,
//! tracing or std's stdout/stderr locks: only allocation, jaq and the
//! system calls of [`sys`](super::sys).

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};

use super::frame::{encode_reply, read_frame, write_frame, Request};
use super::sys;
use crate::expr::{EvalError, Expr, Outcome};

/// Compiled expressions kept per child before the cache starts over.
const CACHED: usize = 256;

/// Compiled expressions by source and bound variables.
type Cache = HashMap<(String, Vec<(String, String)>), Expr>;

/// Runs the child; never returns.
pub(super) fn run(mut socket: UnixStream, parent: libc::pid_t) -> ! {
    sys::close_other_fds(socket.as_raw_fd());
    sys::die_with_parent(parent);
    sys::no_core_files();
    sys::child_signals();
    panic::set_hook(Box::new(|_| {}));
    let baseline = address_space();
    let mut cache = Cache::new();
    loop {
        let body = match read_frame(&mut socket) {
            Ok(Some(body)) => body,
            _ => sys::exit(0),
        };
        let reply = match Request::decode(&body) {
            Ok(request) => {
                drop(body);
                let limit = address_space().max(baseline).saturating_add(request.memory);
                if sys::limit_address_space(limit).is_err() {
                    sys::exit(3);
                }
                panic::catch_unwind(AssertUnwindSafe(|| evaluate(&mut cache, request)))
                    .unwrap_or_else(|_| Err(EvalError::Failed("the evaluator panicked".to_owned())))
            }
            Err(_) => sys::exit(2),
        };
        if write_frame(&mut socket, &encode_reply(&reply)).is_err() {
            sys::exit(0);
        }
        let _ = socket.flush();
    }
}

fn evaluate(cache: &mut Cache, request: Request) -> Result<Outcome, EvalError> {
    let key = (request.source, request.vars);
    if !cache.contains_key(&key) {
        if cache.len() >= CACHED {
            cache.clear();
        }
        let expr = Expr::compile_here(&key.0, &key.1).map_err(|errors| {
            EvalError::Failed(
                errors
                    .first()
                    .map_or_else(|| "does not compile".to_owned(), |e| e.message.clone()),
            )
        })?;
        cache.insert(key.clone(), expr);
    }
    match cache.get(&key) {
        Some(expr) => expr.evaluate_inline(&request.payload, request.mode),
        None => Err(EvalError::Failed("does not compile".to_owned())),
    }
}

/// This process's address-space size in bytes (`VmSize`), 0 if unknown.
fn address_space() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmSize:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib.saturating_mul(1024))
}
