//! The function every row's `spate` processes call (`handler: http`): an
//! axum server in the test that logs each call — which process, which
//! event (key, publish number), which partition, when it started and
//! ended — and answers 503 to about one first attempt in
//! `FAIL_ONE_IN`, so the handler fails and retries.
//!
//! Times are microseconds on one monotonic clock (the recorder's), so two
//! calls of one key can be checked for overlap: spate calls a key's next
//! event only after the previous call's response, which the recorder sends
//! after it logged the end.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use spate_testsupport::http::serve;

/// About one first attempt in this many fails with 503 (decided by the
/// event, so a replay with the same seed fails the same events).
pub const FAIL_ONE_IN: u64 = 100;

/// One call of the handler.
#[derive(Debug, Clone)]
pub struct Call {
    /// `SPATE_PROCESS` of the calling process (`p0`, `p1`, …).
    pub process: String,
    /// The event's key.
    pub key: String,
    /// Its number in publish order over every key.
    pub n: u64,
    /// `spate-partition` of the call.
    pub partition: String,
    /// When the call arrived, µs on the recorder's clock.
    pub start: u64,
    /// When its answer was decided, µs.
    pub end: u64,
    /// Whether it was answered 2xx (the event was handled).
    pub ok: bool,
}

struct Shared {
    epoch: Instant,
    calls: Mutex<Vec<Call>>,
    /// Answer 2xx with the payload as the output (rows with outputs).
    echo: bool,
}

/// The running recorder; stops with the test's runtime.
#[derive(Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
    /// `http://127.0.0.1:PORT/event`.
    pub url: String,
}

impl Recorder {
    /// Starts a recorder on a free port. With `echo`, a handled event's
    /// payload is returned as its output; otherwise the answer is empty
    /// (handled, no output).
    pub async fn start(echo: bool) -> Self {
        let shared = Arc::new(Shared {
            epoch: Instant::now(),
            calls: Mutex::new(Vec::new()),
            echo,
        });
        let app = Router::new()
            .route("/event", post(call))
            .with_state(shared.clone());
        Self {
            shared,
            url: format!("http://{}/event", serve(app).await),
        }
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().clone()
    }

    /// Distinct events handled so far.
    pub fn distinct(&self) -> usize {
        let calls = self.lock();
        let mut seen: Vec<u64> = calls.iter().filter(|c| c.ok).map(|c| c.n).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    }

    /// Calls of `process` answered 2xx so far.
    pub fn handled_by(&self, process: &str) -> usize {
        self.lock()
            .iter()
            .filter(|c| c.ok && c.process == process)
            .count()
    }

    /// Now, µs on the recorder's clock.
    pub fn now(&self) -> u64 {
        self.shared.epoch.elapsed().as_micros() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Call>> {
        self.shared
            .calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A stable hash of the event (FNV-1a), for the 503 decision.
fn fails_first_attempt(n: u64) -> bool {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in n.to_le_bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash.is_multiple_of(FAIL_ONE_IN)
}

async fn call(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Bytes) {
    let start = shared.epoch.elapsed().as_micros() as u64;
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let n = value["n"].as_u64().unwrap_or(u64::MAX);
    let attempt: u32 = header(&headers, "spate-attempt").parse().unwrap_or(0);
    let ok = !(attempt == 1 && fails_first_attempt(n));
    // Some calls take a moment, so two calls of one key running at once
    // would overlap visibly.
    if n.is_multiple_of(7) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let end = shared.epoch.elapsed().as_micros() as u64;
    let record = Call {
        process: header(&headers, "x-spate-process").to_owned(),
        key: value["key"].as_str().unwrap_or("").to_owned(),
        n,
        partition: header(&headers, "spate-partition").to_owned(),
        start,
        end,
        ok,
    };
    shared
        .calls
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(record);
    match (ok, shared.echo) {
        (false, _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(b"try again"),
        ),
        (true, true) => (StatusCode::OK, body),
        (true, false) => (StatusCode::NO_CONTENT, Bytes::new()),
    }
}
