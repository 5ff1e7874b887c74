//! The `http` handler against a real HTTP server (axum on 127.0.0.1, started
//! by each test): what it sends, how responses become outputs, and — run
//! through the engine over the in-memory test kit — that 5xx and 429 are
//! retried, 4xx dead-lettered with the status, and slow endpoints cut off.
//! Handlers are built from pipeline-file text through the loader, with a
//! test environment supplying the `${VAR}` secrets.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use spate::engine::{run_function, FunctionReport};
use spate::handler::Handler;
use spate::pipeline::Ordering;
use spate::{Context, ErrorKind, Event, HandlerError, Headers, Output};
use spate_connector::dead_letter as dl;
use spate_connector::testkit::{MemoryLog, MemorySink};
use spate_testsupport::engine::{load_handler, options, order_event, plan};
use spate_testsupport::http::serve_with_peers;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "s3cr3t-token-value";
const API_KEY: &str = "key-0123456789";

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: &'static str,
    peer: SocketAddr,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct Server {
    seen: Mutex<Vec<Seen>>,
    flaky_calls: AtomicU32,
}

impl Server {
    fn record(&self, path: &'static str, peer: SocketAddr, headers: &HeaderMap, body: &Bytes) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Seen {
                path,
                peer,
                headers: headers.clone(),
                body: body.clone(),
            });
    }

    fn seen(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }
}

type Shared = State<Arc<Server>>;
type Peer = ConnectInfo<SocketAddr>;

/// Starts the test server; returns its base address and its record.
async fn start() -> (String, Arc<Server>) {
    let server = Arc::new(Server::default());
    let app = Router::new()
        .route(
            "/echo",
            post(|State(s): Shared, ConnectInfo(peer): Peer, headers: HeaderMap, body: Bytes| async move {
                s.record("/echo", peer, &headers, &body);
                body
            }),
        )
        .route(
            "/array",
            post(|State(s): Shared, ConnectInfo(peer): Peer, headers: HeaderMap, body: Bytes| async move {
                s.record("/array", peer, &headers, &body);
                r#"[{"n": 1}, {"n": 2}, "three"]"#
            }),
        )
        .route(
            "/empty",
            post(|State(s): Shared, ConnectInfo(peer): Peer, headers: HeaderMap, body: Bytes| async move {
                s.record("/empty", peer, &headers, &body);
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/slow",
            post(|State(s): Shared, ConnectInfo(peer): Peer, headers: HeaderMap, body: Bytes| async move {
                s.record("/slow", peer, &headers, &body);
                tokio::time::sleep(Duration::from_secs(3)).await;
                "too late"
            }),
        )
        .route(
            "/flaky",
            post(|State(s): Shared, ConnectInfo(peer): Peer, headers: HeaderMap, body: Bytes| async move {
                s.record("/flaky", peer, &headers, &body);
                if s.flaky_calls.fetch_add(1, AtomicOrdering::SeqCst) < 2 {
                    (StatusCode::INTERNAL_SERVER_ERROR, "database unavailable").into_response()
                } else {
                    r#"{"status": "scored"}"#.into_response()
                }
            }),
        )
        .route(
            "/bad",
            post(|State(s): Shared, ConnectInfo(peer): Peer, headers: HeaderMap, body: Bytes| async move {
                s.record("/bad", peer, &headers, &body);
                (StatusCode::BAD_REQUEST, "missing field `amount`\n")
            }),
        )
        .route(
            "/busy",
            post(|State(s): Shared, ConnectInfo(peer): Peer, headers: HeaderMap, body: Bytes| async move {
                s.record("/busy", peer, &headers, &body);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "1")],
                    "slow down",
                )
            }),
        )
        .route(
            "/auth",
            post(|State(s): Shared, ConnectInfo(peer): Peer, headers: HeaderMap, body: Bytes| async move {
                s.record("/auth", peer, &headers, &body);
                let expected = format!("Bearer {SECRET}");
                match headers.get("authorization").and_then(|v| v.to_str().ok()) {
                    Some(given) if given == expected => (StatusCode::OK, "welcome"),
                    _ => (StatusCode::UNAUTHORIZED, "unauthorized"),
                }
            }),
        )
        .with_state(server.clone());
    (format!("http://{}", serve_with_peers(app).await), server)
}

/// The test environment: the secrets a deployment would export.
fn env(name: &str) -> Option<String> {
    match name {
        "FN_AUTH" => Some(SECRET.to_owned()),
        "FN_KEY" => Some(API_KEY.to_owned()),
        "BROKEN" => Some("line one\nline two".to_owned()),
        _ => None,
    }
}

fn pipeline_text(handler: &str) -> String {
    format!(
        "functions:\n  - name: score-orders\n    input: {{type: generate}}\n    handler: {handler}\n    dead_letter: {{type: stdout}}\n"
    )
}

/// Loads a one-function pipeline whose `handler:` is `handler` and returns
/// the configured handler, or the rendered errors.
fn load(handler: &str) -> Result<Arc<dyn Handler>, String> {
    load_handler(&pipeline_text(handler), "t.yaml", &env)
}

fn http(settings: &str) -> Arc<dyn Handler> {
    load(&format!("{{name: http, {settings}}}")).unwrap_or_else(|errors| panic!("{errors}"))
}

fn event(key: &str, payload: &str) -> Event {
    let mut headers = Headers::new();
    headers.push("traceparent", "00-4bf92f3577b34da6-00f067aa0ba902b7-01");
    headers.push("blob", &b"\xff\x00"[..]);
    order_event(key, payload.to_owned(), headers, 2, 17)
}

fn ctx() -> Context {
    Context::new(Arc::from("score-orders"), 1)
}

async fn call(handler: &Arc<dyn Handler>, payload: &str) -> Result<Vec<Output>, HandlerError> {
    handler.handle(event("order-7", payload), &ctx()).await
}

fn header<'a>(seen: &'a Seen, name: &str) -> &'a str {
    seen.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("request lacks header {name}: {:?}", seen.headers.keys()))
}

fn payloads(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .map(|o| String::from_utf8_lossy(&o.record.payload).into_owned())
        .collect()
}

/// Runs `handler` over `count` order events through the engine.
async fn run(
    handler: Arc<dyn Handler>,
    count: u32,
    ordering: Ordering,
) -> (FunctionReport, MemorySink, MemorySink) {
    let log = MemoryLog::new("orders", 1);
    for n in 0..count {
        log.append(
            0,
            Some(&format!("order-{n}")),
            format!(r#"{{"order": {n}}}"#),
        );
    }
    log.end();
    let (out, dlq) = (MemorySink::new("out"), MemorySink::new("dlq"));
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        run_function(
            plan(&log, handler, ordering, &out, &dlq),
            options(),
            CancellationToken::new(),
        ),
    )
    .await
    .expect("the function finishes")
    .expect("the function runs");
    assert_eq!(
        log.committed(0),
        Some(u64::from(count)),
        "every event finished"
    );
    (report, out, dlq)
}

#[tokio::test]
async fn payload_mode_posts_the_payload_with_metadata_headers_and_echo_is_one_output() {
    let (base, server) = start().await;
    let handler = http(&format!(
        "url: '{base}/echo', timeout: 2s, headers: {{x-api-key: '${{FN_KEY}}'}}"
    ));
    let outputs = call(&handler, r#"{"order": 7, "amount": 12.50}"#)
        .await
        .unwrap();
    assert_eq!(payloads(&outputs), [r#"{"order": 7, "amount": 12.50}"#]);
    let record = &outputs[0].record;
    assert_eq!(record.key.as_deref(), Some(&b"order-7"[..]), "key kept");
    assert_eq!(
        record.timestamp_ms,
        Some(1_700_000_000_000),
        "timestamp kept"
    );
    assert_eq!(
        record.headers.get_str("traceparent"),
        Some("00-4bf92f3577b34da6-00f067aa0ba902b7-01"),
        "event headers kept"
    );
    assert_eq!(outputs[0].to, None);

    let seen = server.seen("/echo");
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(
        request.body,
        Bytes::from_static(br#"{"order": 7, "amount": 12.50}"#)
    );
    assert_eq!(header(request, "content-type"), "application/json");
    assert_eq!(header(request, "x-api-key"), API_KEY);
    assert_eq!(header(request, "spate-key"), "order-7");
    assert_eq!(header(request, "spate-stream"), "orders");
    assert_eq!(header(request, "spate-partition"), "2");
    assert_eq!(header(request, "spate-offset"), "17");
    assert_eq!(header(request, "spate-function"), "score-orders");
    assert_eq!(header(request, "spate-attempt"), "1");
    assert_eq!(header(request, "spate-timestamp-ms"), "1700000000000");
    assert_eq!(
        header(request, "spate-h-traceparent"),
        "00-4bf92f3577b34da6-00f067aa0ba902b7-01"
    );
    assert!(
        request.headers.get("spate-h-blob").is_none(),
        "binary header not sent"
    );
    assert_eq!(header(request, "spate-skipped-headers"), "1");
    assert!(header(request, "user-agent").starts_with("spate/"));
    assert!(request.headers.get("authorization").is_none());

    // Not JSON: sent as octet-stream, unless `content_type` says otherwise.
    call(&handler, "plain words").await.unwrap();
    let typed = http(&format!("url: '{base}/echo', content_type: text/plain"));
    call(&typed, "plain words").await.unwrap();
    let seen = server.seen("/echo");
    assert_eq!(header(&seen[1], "content-type"), "application/octet-stream");
    assert_eq!(header(&seen[2], "content-type"), "text/plain");
}

#[tokio::test]
async fn event_mode_posts_a_json_envelope() {
    let (base, server) = start().await;
    let handler = http(&format!("url: '{base}/echo', body: event"));
    let outputs = call(&handler, r#"{"order": 7}"#).await.unwrap();
    assert_eq!(outputs.len(), 1, "the echoed envelope is one output");
    let seen = server.seen("/echo");
    assert_eq!(header(&seen[0], "content-type"), "application/json");
    assert_eq!(header(&seen[0], "spate-offset"), "17");
    let envelope: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(
        envelope,
        serde_json::json!({
            "function": "score-orders",
            "attempt": 1,
            "stream": "orders",
            "partition": 2,
            "offset": 17,
            "key": "order-7",
            "timestamp_ms": 1_700_000_000_000_i64,
            "headers": [
                {"name": "traceparent", "value": "00-4bf92f3577b34da6-00f067aa0ba902b7-01"},
                {"name": "blob", "value_base64": "/wA="}
            ],
            "payload": {"order": 7}
        })
    );
    call(&handler, "not json").await.unwrap();
    let envelope: Value = serde_json::from_slice(&server.seen("/echo")[1].body).unwrap();
    assert_eq!(envelope["payload_base64"], "bm90IGpzb24=");
    assert!(envelope.get("payload").is_none());
}

#[tokio::test]
async fn a_json_array_is_many_outputs_and_no_content_is_none() {
    let (base, _server) = start().await;
    let array = http(&format!("url: '{base}/array'"));
    let outputs = call(&array, "{}").await.unwrap();
    assert_eq!(
        payloads(&outputs),
        [r#"{"n": 1}"#, r#"{"n": 2}"#, r#""three""#]
    );
    assert!(outputs
        .iter()
        .all(|o| o.record.key.as_deref() == Some(&b"order-7"[..])));
    let empty = http(&format!("url: '{base}/empty'"));
    assert_eq!(call(&empty, "{}").await.unwrap(), Vec::new());
}

#[tokio::test]
async fn a_slow_endpoint_is_cut_off_at_the_timeout_and_is_retryable() {
    let (base, _server) = start().await;
    let handler = http(&format!("url: '{base}/slow', timeout: 200ms"));
    let started = Instant::now();
    let error = call(&handler, "{}").await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(error.kind, ErrorKind::Retryable, "{error}");
    assert_eq!(
        error.message,
        format!("POST {base}/slow: no complete response within 200ms (the handler's `timeout`)")
    );
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_secs(2),
        "took {elapsed:?}"
    );
}

#[tokio::test]
async fn a_refused_connection_is_retryable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap();
    drop(closed);
    let handler = http(&format!("url: 'http://{address}/orders'"));
    let error = call(&handler, "{}").await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Retryable, "{error}");
    assert!(
        error
            .message
            .starts_with(&format!("POST http://{address}/orders: cannot connect: ")),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_endpoint_is_retried_by_the_engine_until_it_answers() {
    let (base, server) = start().await;
    let handler = http(&format!("url: '{base}/flaky'"));
    let (report, out, dlq) = run(handler, 1, Ordering::Key).await;
    assert_eq!(report.retries, 2, "{report:?}");
    assert_eq!((report.handled, report.dead_lettered), (1, 0));
    assert!(dlq.is_empty());
    let records = out.records();
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].payload,
        Bytes::from_static(br#"{"status": "scored"}"#)
    );
    assert_eq!(records[0].key.as_deref(), Some(&b"order-0"[..]));
    let attempts: Vec<String> = server
        .seen("/flaky")
        .iter()
        .map(|s| header(s, "spate-attempt").to_owned())
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
}

/// Runs one event against `path` of the test server, which must
/// dead-letter it after `calls` calls, with no output; the server's base URL
/// and the dead letters.
async fn dead_lettered(path: &str, calls: u64) -> (String, Vec<spate::Record>) {
    let (base, server) = start().await;
    let handler = http(&format!("url: '{base}{path}'"));
    let (report, out, dlq) = run(handler, 1, Ordering::Key).await;
    let retries = calls - 1;
    assert_eq!(
        (report.retries, report.dead_lettered),
        (retries, 1),
        "{report:?}"
    );
    assert!(out.is_empty());
    assert_eq!(server.seen(path).len() as u64, calls, "calls to {path}");
    (base, dlq.records())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_is_dead_lettered_at_once_with_the_status_and_body() {
    // A 4xx is not retried.
    let (base, letters) = dead_lettered("/bad", 1).await;
    assert_eq!(letters[0].payload, Bytes::from_static(br#"{"order": 0}"#));
    assert_eq!(
        letters[0].headers.get_str(dl::ERROR),
        Some(format!("POST {base}/bad: 400 Bad Request: missing field `amount`").as_str())
    );
    assert_eq!(letters[0].headers.get_str(dl::ATTEMPTS), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_is_retried_then_dead_lettered() {
    // Three calls: max_attempts is 3.
    let (base, letters) = dead_lettered("/busy", 3).await;
    assert_eq!(
        letters[0].headers.get_str(dl::ERROR),
        Some(
            format!("POST {base}/busy: 429 Too Many Requests (Retry-After: 1): slow down").as_str()
        )
    );
    assert_eq!(letters[0].headers.get_str(dl::ATTEMPTS), Some("3"));
}

#[tokio::test]
async fn the_auth_header_comes_from_the_environment_and_never_shows() {
    let (base, server) = start().await;
    let authorised = http(&format!(
        "url: '{base}/auth', auth_header: 'Bearer ${{FN_AUTH}}'"
    ));
    assert_eq!(
        payloads(&call(&authorised, "{}").await.unwrap()),
        ["welcome"]
    );
    assert_eq!(
        header(&server.seen("/auth")[0], "authorization"),
        format!("Bearer {SECRET}")
    );

    // `${VAR:-}` makes the credential optional: unset means no header.
    let anonymous = http(&format!(
        "url: '{base}/auth', auth_header: '${{NO_SUCH_VAR:-}}'"
    ));
    let error = call(&anonymous, "{}").await.unwrap_err();
    assert!(server.seen("/auth")[1]
        .headers
        .get("authorization")
        .is_none());
    assert_eq!(error.kind, ErrorKind::Permanent);
    assert_eq!(
        error.message,
        format!("POST {base}/auth: 401 Unauthorized: unauthorized")
    );

    // A wrong credential fails without quoting it.
    let wrong = http(&format!("url: '{base}/auth', auth_header: '${{FN_KEY}}'"));
    let error = call(&wrong, "{}").await.unwrap_err();
    assert!(!error.message.contains(API_KEY), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_events_share_a_few_pooled_connections() {
    let (base, server) = start().await;
    let handler = http(&format!("url: '{base}/echo'"));
    let (report, out, dlq) = run(handler, 300, Ordering::None).await;
    assert_eq!((report.handled, report.dead_lettered), (300, 0));
    assert_eq!(out.len(), 300);
    assert!(dlq.is_empty());
    let peers: BTreeSet<SocketAddr> = server.seen("/echo").iter().map(|s| s.peer).collect();
    // A connection goes back to the pool just after its response is read,
    // so a call starting in that instant may open one more: the bound is
    // about `concurrency.max` (16), not exactly it.
    assert!(
        !peers.is_empty() && peers.len() <= 2 * 16,
        "300 calls used {} connections; pooled connections should be reused",
        peers.len()
    );
}

#[tokio::test]
async fn an_oversized_response_is_a_permanent_failure() {
    let (base, _server) = start().await;
    let handler = http(&format!("url: '{base}/echo', max_response_size: 16"));
    let error = call(&handler, r#"{"padding": "more than sixteen bytes"}"#)
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Permanent);
    assert_eq!(
        error.message,
        format!("POST {base}/echo: response body is larger than `max_response_size` (16 bytes)")
    );
}

#[test]
fn settings_are_checked_at_load_with_the_place_and_a_hint() {
    let errors = load(
        "{name: http, url: 'ftp://fn.example/x', timout: 5s, timeout: 0ms, body: events, headers: {'bad name': x, Authorization: y, x-token: '${BROKEN}', spate-key: z}, auth_header: '${BROKEN}', max_response_size: 0}",
    )
    .err()
    .expect("invalid settings are rejected");
    for expected in [
        "`url` must be an http:// or https:// address, found scheme `ftp`",
        "unknown key `timout` in `functions[0].handler`",
        "did you mean `timeout`?",
        "`timeout` must be at least 1ms",
        "unknown body `events`",
        "`bad name` is not a valid HTTP header name",
        "header `Authorization` cannot be set under `headers`",
        "write the credential as `auth_header:`",
        "the value of header `x-token` is not a valid HTTP header value",
        "header `spate-key` cannot be set under `headers`",
        "`auth_header` is not a valid HTTP header value",
        "`max_response_size` must be at least 1 byte",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
    assert!(
        errors.contains("t.yaml:4:"),
        "errors carry their place:\n{errors}"
    );
    assert!(
        !errors.contains("line one"),
        "an environment value was echoed:\n{errors}"
    );

    let errors = load("{name: http}").err().expect("url is required");
    assert!(errors.contains("missing required field `url`"), "{errors}");
    let errors = load("{name: http, url: 'https://user:pw@fn.example/'}")
        .err()
        .expect("credentials in the url are refused");
    assert!(errors.contains("must not carry credentials"), "{errors}");
    assert!(!errors.contains(":pw@"), "{errors}");
    let errors =
        load("{name: http, url: 'https://fn.example/', body: event, content_type: text/plain}")
            .err()
            .expect("content_type is for body: payload");
    assert!(
        errors.contains("`content_type` applies to `body: payload` only"),
        "{errors}"
    );
    let errors = load("{name: http, url: 'not a url'}")
        .err()
        .expect("bad url");
    assert!(errors.contains("`url` is not a valid address"), "{errors}");
}
