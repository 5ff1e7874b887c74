//! The metrics and health endpoint, over a real loopback socket.
//!
//! Every test of this binary shares one process-wide Prometheus recorder,
//! which is also what the reuse test relies on.

use std::net::SocketAddr;
use std::time::Duration;

use spate::engine::readiness::SourceKey;
use spate::observability::{EVENTS_IN, HANDLER_SECONDS};
use spate::serve::{self, Health, ServeError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A plain HTTP/1.1 request; returns (status code, body).
async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the response comes within 10 s")
        .expect("read");
    let text = String::from_utf8(raw).expect("a UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    (status, body.to_owned())
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

#[tokio::test]
async fn metrics_and_health_are_served() {
    let health = Health::new();
    let server = serve::start(loopback(), health.clone())
        .await
        .expect("the endpoint starts");
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0, "the bound port is exposed");

    metrics::counter!(EVENTS_IN, "function" => "serve-test").increment(3);
    metrics::histogram!(HANDLER_SECONDS, "function" => "serve-test").record(0.002);

    let (status, body) = request(addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.lines()
            .any(|l| l == "spate_events_in_total{function=\"serve-test\"} 3"),
        "counter line missing from:\n{body}"
    );
    // Histograms, with the latency buckets: 2 ms lands in le=0.0025, not
    // in le=0.001.
    assert!(
        body.contains(
            "spate_handler_duration_seconds_bucket{function=\"serve-test\",le=\"0.00001\"} 0"
        ),
        "10 µs bucket missing from:\n{body}"
    );
    assert!(
        body.contains(
            "spate_handler_duration_seconds_bucket{function=\"serve-test\",le=\"0.001\"} 0"
        ),
        "1 ms bucket wrong in:\n{body}"
    );
    assert!(
        body.contains(
            "spate_handler_duration_seconds_bucket{function=\"serve-test\",le=\"0.0025\"} 1"
        ),
        "2.5 ms bucket wrong in:\n{body}"
    );
    assert!(
        body.contains("spate_handler_duration_seconds_bucket{function=\"serve-test\",le=\"10\"} 1"),
        "10 s bucket missing from:\n{body}"
    );

    assert_eq!(
        request(addr, "GET", "/health/live").await,
        (200, "ok\n".to_owned())
    );
    assert_eq!(request(addr, "GET", "/health/ready").await.0, 503);
    health.set_ready(true);
    assert_eq!(
        request(addr, "GET", "/health/ready").await,
        (503, "not ready: no source started yet\n".to_owned()),
        "running with no source known is not ready"
    );
    let source = SourceKey {
        pipeline: "orders".into(),
        function: "enrich".into(),
        input: 0,
    };
    health.sources().expect(source.clone());
    assert_eq!(
        request(addr, "GET", "/health/ready").await,
        (
            503,
            "not ready: waiting for orders/enrich input 0\n".to_owned()
        )
    );
    health.sources().set(source.clone(), true);
    assert_eq!(
        request(addr, "GET", "/health/ready").await,
        (200, "ready\n".to_owned())
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    health.stop_with(&shutdown);
    assert_eq!(request(addr, "GET", "/health/ready").await.0, 200);
    shutdown.cancel();
    assert_eq!(
        request(addr, "GET", "/health/ready").await,
        (503, "not ready: draining\n".to_owned())
    );
    server.health().set_ready(false);
    assert_eq!(request(addr, "GET", "/health/ready").await.0, 503);

    assert_eq!(request(addr, "GET", "/nope").await.0, 404);
    assert_eq!(request(addr, "POST", "/metrics").await.0, 405);

    server.shutdown().await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "nothing listens after shutdown"
    );
}

#[tokio::test]
async fn a_port_in_use_is_a_typed_error_naming_the_address() {
    let first = serve::start(loopback(), Health::new())
        .await
        .expect("the endpoint starts");
    let taken = first.local_addr();
    let error = serve::start(taken, Health::new())
        .await
        .expect_err("the port is taken");
    assert!(
        matches!(error, ServeError::Bind { addr, .. } if addr == taken),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&taken.to_string()), "{message}");
    assert!(message.contains("settings.metrics_address"), "{message}");
    assert!(message.contains("`off`"), "{message}");
    first.shutdown().await;
}

#[tokio::test]
async fn starting_twice_reuses_the_recorder() {
    let one = serve::start(loopback(), Health::new())
        .await
        .expect("first start");
    let two = serve::start(loopback(), Health::new())
        .await
        .expect("second start reuses the recorder");
    metrics::counter!(EVENTS_IN, "function" => "reuse-test").increment(1);
    let line = "spate_events_in_total{function=\"reuse-test\"} 1";
    for server in [&one, &two] {
        let (status, body) = request(server.local_addr(), "GET", "/metrics").await;
        assert_eq!(status, 200);
        assert!(body.lines().any(|l| l == line), "missing from:\n{body}");
    }
    drop(one);
    two.shutdown().await;
}
