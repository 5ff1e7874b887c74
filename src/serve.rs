//! The operations endpoint: Prometheus metrics and health checks over HTTP.
//!
//! [`start`] binds a TCP listener (by default on loopback; the address is
//! `settings.metrics_address` of the pipeline file, `off` disables the
//! endpoint) and serves:
//!
//! | path | answer |
//! | --- | --- |
//! | `GET /metrics` | every spate metric in the Prometheus text format |
//! | `GET /health/live` | `200 ok` for as long as the process serves at all |
//! | `GET /health/ready` | `200 ready` while every source of every function is connected and assigned its partitions (see [`crate::engine::readiness`]); `503 not ready: …` naming what it waits for before that, while a source cannot reach its broker, and from the moment a drain starts (the token given to [`Health::stop_with`] cancelled, the first SIGTERM) |
//!
//! Liveness never depends on brokers: a source that lost its broker makes
//! the process not ready (no traffic should be routed to it as a healthy
//! consumer) but stays live, because restarting it would not help.
//!
//! Anything else is `404`, and a method other than `GET`/`HEAD` is `405`.
//!
//! # Guarantees
//!
//! - **One recorder per process.** The first [`start`] (or
//!   [`install_recorder`]) installs the Prometheus recorder as the global
//!   `metrics` recorder; later calls reuse it and never panic. If some other
//!   recorder was installed first, [`ServeError::Recorder`] says so. Metric
//!   handles registered *before* the recorder is installed stay no-ops
//!   forever (that is how `metrics` works), so start the endpoint before
//!   any function starts.
//! - **Latency histograms.** Histograms (handler and commit durations) are
//!   exported as Prometheus histograms with [`LATENCY_BUCKETS`], 10 µs to
//!   10 s, not as summaries.
//! - **Bind errors are typed.** A port in use or an address that cannot be
//!   bound comes back as [`ServeError::Bind`], naming the address and what to
//!   change.
//! - **Bounded.** At most [`MAX_CONNECTIONS`] connections are served at
//!   once (more are closed on accept), and a client that does not send its
//!   request headers within [`HEADER_READ_TIMEOUT`] is disconnected.
//! - **Stops cleanly.** [`ServeHandle::shutdown`] (or dropping the handle)
//!   stops accepting, lets requests in progress finish for up to
//!   [`SHUTDOWN_GRACE`], then closes what is left. The server task also runs
//!   the recorder's upkeep (draining histogram samples) while it lives.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::engine::readiness::Readiness;

/// Histogram bucket upper bounds, in seconds: 10 µs to 10 s in 1–2.5–5
/// steps, for handler, output and commit latencies.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// A connection must send its request headers within this long.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`ServeHandle::shutdown`] lets requests in progress finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How often the recorder's upkeep runs.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound (in use, not local, no permission).
    #[error(
        "cannot serve metrics and health on {addr}: {source}; set `settings.metrics_address` \
         (or `--metrics-address`) to a free `ip:port`, or to `off` to disable the endpoint"
    )]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The Prometheus recorder could not be installed.
    #[error("cannot install the Prometheus metrics recorder: {message}")]
    Recorder {
        /// Why (typically: another `metrics` recorder is already installed).
        message: String,
    },
}

/// What `/health/ready` reports: the runtime's flag, every source's
/// readiness and whether a drain started. Clones share all three.
#[derive(Debug, Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
    sources: Readiness,
    stopping: Arc<OnceLock<CancellationToken>>,
}

impl Health {
    /// A flag that starts as not ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the process ready to serve once its sources are (starting,
    /// running) or not at all (finished).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// The board the engine records each source's readiness on (hand it to
    /// [`crate::Runtime::report_readiness`]).
    pub fn sources(&self) -> &Readiness {
        &self.sources
    }

    /// Not ready from the moment `shutdown` is cancelled (a drain starts).
    /// Only the first call counts.
    pub fn stop_with(&self, shutdown: &CancellationToken) {
        let _ = self.stopping.set(shutdown.clone());
    }

    /// Whether `/health/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.why_not_ready().is_none()
    }

    /// Why `/health/ready` answers 503, or `None` when it answers 200.
    pub fn why_not_ready(&self) -> Option<String> {
        if self.stopping.get().is_some_and(|t| t.is_cancelled()) {
            return Some("draining".to_owned());
        }
        if !self.ready.load(Ordering::Acquire) {
            return Some("not running".to_owned());
        }
        let waiting = self.sources.waiting();
        if !waiting.is_empty() {
            let names: Vec<String> = waiting.iter().map(ToString::to_string).collect();
            return Some(format!("waiting for {}", names.join(", ")));
        }
        (!self.sources.is_ready()).then(|| "no source started yet".to_owned())
    }
}

/// The process's Prometheus handle, once installed.
static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();
/// Serialises installation, so two racing first calls install only once.
static INSTALLING: Mutex<()> = Mutex::new(());

/// Installs the Prometheus recorder as the process's global `metrics`
/// recorder (histograms with [`LATENCY_BUCKETS`]), or returns the one
/// already installed by an earlier call.
pub fn install_recorder() -> Result<PrometheusHandle, ServeError> {
    if let Some(handle) = RECORDER.get() {
        return Ok(handle.clone());
    }
    let _installing = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(handle) = RECORDER.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|error| ServeError::Recorder {
            message: error.to_string(),
        })?;
    Ok(RECORDER.get_or_init(|| handle).clone())
}

/// A running endpoint. Dropping it stops the server, as
/// [`shutdown`](Self::shutdown) does without waiting.
#[derive(Debug)]
pub struct ServeHandle {
    local_addr: SocketAddr,
    health: Health,
    prometheus: PrometheusHandle,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl ServeHandle {
    /// The address actually bound (the port is chosen by the system when
    /// the requested port was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The readiness flag `/health/ready` reports.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The Prometheus handle `/metrics` renders.
    pub fn prometheus(&self) -> &PrometheusHandle {
        &self.prometheus
    }

    /// Stops accepting, lets requests in progress finish (up to
    /// [`SHUTDOWN_GRACE`]) and returns once the server task ended.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            if let Err(error) = task.await {
                warn!(%error, "metrics endpoint task failed");
            }
        }
    }
}

impl Drop for ServeHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Binds `addr`, installs (or reuses) the Prometheus recorder and serves
/// `/metrics`, `/health/live` and `/health/ready` on a task of the current
/// Tokio runtime until the returned handle is shut down or dropped.
pub async fn start(addr: SocketAddr, health: Health) -> Result<ServeHandle, ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let prometheus = install_recorder()?;
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve(
        listener,
        Arc::new(Endpoints {
            health: health.clone(),
            prometheus: prometheus.clone(),
        }),
        stop.clone(),
    ));
    info!(address = %local_addr, "serving /metrics, /health/live and /health/ready");
    Ok(ServeHandle {
        local_addr,
        health,
        prometheus,
        stop,
        task: Some(task),
    })
}

/// What the request handler needs.
struct Endpoints {
    health: Health,
    prometheus: PrometheusHandle,
}

/// The accept loop; also runs the recorder's upkeep.
async fn serve(listener: TcpListener, endpoints: Arc<Endpoints>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
    upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = upkeep.tick() => endpoints.prometheus.run_upkeep(),
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let endpoints = endpoints.clone();
                        let stop = stop.clone();
                        connections.spawn(async move {
                            serve_connection(stream, endpoints, stop).await;
                            drop(slot);
                        });
                    }
                    Err(_) => {
                        debug!(%peer, limit = MAX_CONNECTIONS, "metrics endpoint busy; connection closed");
                    }
                },
                Err(error) => {
                    // Per-connection accept errors (reset before accept, out
                    // of file descriptors): back off briefly, keep serving.
                    warn!(%error, "metrics endpoint accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        debug!("metrics endpoint connections still open after the grace period; closing them");
        connections.shutdown().await;
    }
    debug!("metrics endpoint stopped");
}

/// Serves one HTTP/1.1 connection until it closes or the server stops.
async fn serve_connection(stream: TcpStream, endpoints: Arc<Endpoints>, stop: CancellationToken) {
    let service = service_fn(move |request: Request<Incoming>| {
        let response = respond(&endpoints, &request);
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        debug!(%error, "metrics endpoint connection ended with an error");
    }
}

/// Routes a request.
fn respond(endpoints: &Endpoints, request: &Request<Incoming>) -> Response<String> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match request.uri().path() {
        "/metrics" => {
            let mut response = Response::new(endpoints.prometheus.render());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(PROMETHEUS_TEXT),
            );
            response
        }
        "/health/live" => text(StatusCode::OK, "ok\n"),
        "/health/ready" => match endpoints.health.why_not_ready() {
            None => text(StatusCode::OK, "ready\n"),
            Some(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /health/live or /health/ready\n",
        ),
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<String> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
