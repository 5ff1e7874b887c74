//! Payload formats end to end: Avro with an inline schema and through a
//! Confluent Schema Registry, against a small registry served here on
//! 127.0.0.1 that implements the documented REST paths, payloads and error
//! codes the client uses.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value as Json};
use spate::format::{confluent_frame, read_format, FormatRole, FormatSpec, SCHEMA_ID_HEADER};
use spate_connector::config::ConfigErrors;
use spate_connector::{ConfigError, ConfigReader, DecodeError, Decoded, EncodeError};
use spate_testsupport::http::serve;

// ------------------------------------------------------------ test registry

const SR_JSON: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Default)]
struct RegistryState {
    /// Schema text by id (ids start at 1).
    schemas: Mutex<Vec<String>>,
    /// Subject → ids of its versions, oldest first.
    subjects: Mutex<HashMap<String, Vec<u32>>>,
    registers: AtomicUsize,
    lookups: AtomicUsize,
    fetches: AtomicUsize,
    /// `Some((user, password))`: require basic auth.
    auth: Option<(String, String)>,
    /// Answer 503 to everything.
    failing: AtomicBool,
}

struct TestRegistry {
    url: String,
    state: Arc<RegistryState>,
}

fn answer(status: StatusCode, body: Json) -> Response {
    (status, [(header::CONTENT_TYPE, SR_JSON)], body.to_string()).into_response()
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    answer(status, json!({"error_code": code, "message": message}))
}

/// Every route's gate: checks auth and failure mode before the handler.
async fn gated(State(state): State<Arc<RegistryState>>, request: Request, next: Next) -> Response {
    match gate(&state, request.headers()) {
        Some(stop) => stop,
        None => next.run(request).await,
    }
}

/// Checks auth and failure mode; `Some(response)` ends the request.
fn gate(state: &RegistryState, headers: &HeaderMap) -> Option<Response> {
    if state.failing.load(Ordering::SeqCst) {
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            50003,
            "Error while forwarding the request to the primary",
        ));
    }
    if let Some((user, password)) = &state.auth {
        use base64::Engine as _;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            return Some(error(StatusCode::UNAUTHORIZED, 401, "Unauthorized"));
        }
    }
    None
}

/// The `schema` member of a POST body, after the documented content type;
/// the error is (status, error code, message).
fn posted_schema(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<String, (StatusCode, u32, &'static str)> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if content_type != Some(SR_JSON) {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            415,
            "Unsupported Media Type",
        ));
    }
    let request: Json =
        serde_json::from_slice(body).map_err(|_| (StatusCode::BAD_REQUEST, 400, "Bad Request"))?;
    let Some(schema) = request.get("schema").and_then(Json::as_str) else {
        return Err((StatusCode::UNPROCESSABLE_ENTITY, 42201, "Empty schema"));
    };
    if apache_avro::Schema::parse_str(schema).is_err() {
        return Err((StatusCode::UNPROCESSABLE_ENTITY, 42201, "Invalid schema"));
    }
    Ok(schema.to_owned())
}

fn subject_not_found(subject: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        40401,
        &format!("Subject '{subject}' not found."),
    )
}

fn canonical(schema: &str) -> String {
    apache_avro::Schema::parse_str(schema)
        .map(|s| s.canonical_form())
        .unwrap_or_default()
}

fn version_answer(state: &RegistryState, subject: &str, id: u32) -> Json {
    let versions = state.subjects.lock().unwrap()[subject].clone();
    let version = versions.iter().position(|v| *v == id).map_or(0, |p| p + 1);
    let schema = state.schemas.lock().unwrap()[id as usize - 1].clone();
    json!({"subject": subject, "id": id, "version": version, "schema": schema})
}

async fn schema_by_id(State(state): State<Arc<RegistryState>>, Path(id): Path<u32>) -> Response {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    let schemas = state.schemas.lock().unwrap();
    match id.checked_sub(1).and_then(|i| schemas.get(i as usize)) {
        Some(schema) => answer(StatusCode::OK, json!({"schema": schema})),
        None => error(StatusCode::NOT_FOUND, 40403, "Schema not found"),
    }
}

/// A POSTed schema: registered under the subject (`…/versions`) or looked
/// up there; each counted once past the [`gate`].
async fn post_schema(
    State(state): State<Arc<RegistryState>>,
    Path(subject): Path<String>,
    route: MatchedPath,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let registering = route.as_str().ends_with("/versions");
    let calls = if registering {
        &state.registers
    } else {
        &state.lookups
    };
    calls.fetch_add(1, Ordering::SeqCst);
    match posted_schema(&headers, &body) {
        Err((status, code, message)) => error(status, code, message),
        Ok(schema) if registering => register(&state, subject, schema),
        Ok(schema) => lookup(&state, &subject, &schema),
    }
}

fn register(state: &RegistryState, subject: String, schema: String) -> Response {
    let id = {
        let mut schemas = state.schemas.lock().unwrap();
        match schemas
            .iter()
            .position(|s| canonical(s) == canonical(&schema))
        {
            Some(at) => at as u32 + 1,
            None => {
                schemas.push(schema);
                schemas.len() as u32
            }
        }
    };
    let mut subjects = state.subjects.lock().unwrap();
    let versions = subjects.entry(subject).or_default();
    if !versions.contains(&id) {
        versions.push(id);
    }
    answer(StatusCode::OK, json!({"id": id}))
}

fn lookup(state: &RegistryState, subject: &str, schema: &str) -> Response {
    let Some(versions) = state.subjects.lock().unwrap().get(subject).cloned() else {
        return subject_not_found(subject);
    };
    let found = {
        let schemas = state.schemas.lock().unwrap();
        versions
            .into_iter()
            .find(|id| canonical(&schemas[*id as usize - 1]) == canonical(schema))
    };
    match found {
        Some(id) => answer(StatusCode::OK, version_answer(state, subject, id)),
        None => error(StatusCode::NOT_FOUND, 40403, "Schema not found"),
    }
}

async fn latest(State(state): State<Arc<RegistryState>>, Path(subject): Path<String>) -> Response {
    let last = state
        .subjects
        .lock()
        .unwrap()
        .get(&subject)
        .and_then(|v| v.last().copied());
    match last {
        Some(id) => answer(StatusCode::OK, version_answer(&state, &subject, id)),
        None => subject_not_found(&subject),
    }
}

async fn start_registry(auth: Option<(&str, &str)>) -> TestRegistry {
    let state = Arc::new(RegistryState {
        auth: auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
        ..RegistryState::default()
    });
    let router = Router::new()
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/subjects/{subject}/versions", post(post_schema))
        .route("/subjects/{subject}/versions/latest", get(latest))
        .route("/subjects/{subject}", post(post_schema))
        .route_layer(middleware::from_fn_with_state(state.clone(), gated))
        .with_state(state.clone());
    TestRegistry {
        url: format!("http://{}", serve(router).await),
        state,
    }
}

impl TestRegistry {
    /// Registers directly in the state, as another producer would have.
    fn preload(&self, subject: &str, schema: &str) -> u32 {
        let mut schemas = self.state.schemas.lock().unwrap();
        schemas.push(schema.to_owned());
        let id = schemas.len() as u32;
        self.state
            .subjects
            .lock()
            .unwrap()
            .entry(subject.to_owned())
            .or_default()
            .push(id);
        id
    }
}

// ------------------------------------------------------------------ helpers

fn read(yaml: &str, role: FormatRole) -> (Option<FormatSpec>, Vec<ConfigError>) {
    let document =
        spate::pipeline::yaml::parse(yaml, &|_: &str| None::<String>).expect("YAML parses");
    let errors = ConfigErrors::default();
    let spec = {
        let mut reader = ConfigReader::new(&document.root, "input", &errors);
        let _ = reader.string("type");
        read_format(&mut reader, role)
    };
    (spec, errors.into_inner())
}

fn spec(yaml: &str, role: FormatRole) -> FormatSpec {
    let (spec, errors) = read(yaml, role);
    assert!(errors.is_empty(), "{errors:#?}");
    spec.expect("a spec when there are no errors")
}

fn registry_yaml(url: &str, extra: &str) -> String {
    format!("type: kafka\nformat: avro\nschema_registry:\n  url: {url}\n{extra}")
}

const ORDER_V1: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"long"},{"name":"item","type":"string"},{"name":"note","type":["null","string"],"default":null},{"name":"legacy","type":"int","default":0}]}"#;
const ORDER_V2: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"long"},{"name":"item","type":"string"},{"name":"note","type":["null","string"],"default":null},{"name":"currency","type":"string","default":"EUR"}]}"#;

fn output_yaml(url: &str, schema: &str) -> String {
    registry_yaml(
        url,
        &format!("  subject: orders-value\nschema: '{schema}'\n"),
    )
}

async fn decode_json(spec: &FormatSpec, payload: &Bytes) -> (Json, Option<u32>) {
    let decoded = spec.decoder().decode(payload).await.expect("decodes");
    (
        serde_json::from_slice(&decoded.payload).expect("JSON"),
        decoded.schema_id,
    )
}

/// `json` encoded by an output spec read from `yaml`.
async fn encode(yaml: &str, json: &Bytes) -> Result<Bytes, EncodeError> {
    spec(yaml, FormatRole::Output).encoder().encode(json).await
}

/// `payload` decoded by an input spec read from `yaml`.
async fn decode(yaml: &str, payload: &Bytes) -> Result<Decoded, DecodeError> {
    spec(yaml, FormatRole::Input)
        .decoder()
        .decode(payload)
        .await
}

/// [`output_yaml`] with `auto_register: false`: the schema is looked up.
fn lookup_yaml(url: &str, schema: &str) -> String {
    output_yaml(url, schema).replace("  subject:", "  auto_register: false\n  subject:")
}

fn order(id: i64) -> Bytes {
    Bytes::from(json!({"id": id, "item": "book", "note": null, "legacy": 7}).to_string())
}

// -------------------------------------------------------------------- tests

#[tokio::test]
async fn inline_avro_round_trips_and_evolves() {
    let yaml = format!("type: file\nformat: avro\nschema: '{ORDER_V1}'\n");
    let output = spec(&yaml, FormatRole::Output);
    let avro = output.encoder().encode(&order(1)).await.expect("encodes");
    assert_ne!(avro[0], b'{', "Avro binary, not JSON");
    let input = spec(&yaml, FormatRole::Input);
    let (value, id) = decode_json(&input, &avro).await;
    assert_eq!(
        value,
        json!({"id": 1, "item": "book", "note": null, "legacy": 7})
    );
    assert_eq!(id, None);

    // Reader v2: `currency` added with a default, `legacy` removed.
    let evolved =
        format!("type: file\nformat: avro\nschema: '{ORDER_V1}'\nreader_schema: '{ORDER_V2}'\n");
    let (value, _) = decode_json(&spec(&evolved, FormatRole::Input), &avro).await;
    assert_eq!(
        value,
        json!({"id": 1, "item": "book", "note": null, "currency": "EUR"})
    );
}

#[tokio::test]
async fn registry_avro_round_trips_in_the_wire_format() {
    let registry = start_registry(None).await;
    let output = spec(&output_yaml(&registry.url, ORDER_V1), FormatRole::Output);
    let framed = output.encoder().encode(&order(42)).await.expect("encodes");
    assert_eq!(framed[0], 0, "magic byte");
    let id = u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]);
    assert_eq!(id, 1);

    let input = spec(&registry_yaml(&registry.url, ""), FormatRole::Input);
    let decoder = input.decoder();
    for _ in 0..20 {
        let decoded = decoder.decode(&framed).await.expect("decodes");
        assert_eq!(decoded.schema_id, Some(id));
        let value: Json = serde_json::from_slice(&decoded.payload).expect("JSON");
        assert_eq!(
            value,
            json!({"id": 42, "item": "book", "note": null, "legacy": 7})
        );
    }
    assert_eq!(
        registry.state.fetches.load(Ordering::SeqCst),
        1,
        "schema cached by id"
    );
}

#[tokio::test]
async fn encoding_registers_once_then_uses_the_cached_id() {
    let registry = start_registry(None).await;
    let output = spec(&output_yaml(&registry.url, ORDER_V1), FormatRole::Output);
    let encoders = [output.encoder(), output.clone().encoder()];
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let encoder = encoders[i % 2].clone();
            tokio::spawn(async move { encoder.encode(&order(i as i64)).await })
        })
        .collect();
    for task in tasks {
        let framed = task.await.expect("task").expect("encodes");
        assert_eq!(&framed[..5], &[0, 0, 0, 0, 1]);
    }
    assert_eq!(
        registry.state.registers.load(Ordering::SeqCst),
        1,
        "one register call for 64 encodes"
    );
    assert_eq!(
        registry.state.subjects.lock().unwrap()["orders-value"],
        vec![1]
    );
}

#[tokio::test]
async fn lookup_and_latest_modes() {
    let registry = start_registry(None).await;
    let id = registry.preload("orders-value", ORDER_V1);

    // auto_register: false looks the schema up.
    let framed = encode(&lookup_yaml(&registry.url, ORDER_V1), &order(1))
        .await
        .expect("encodes");
    assert_eq!(&framed[1..5], &id.to_be_bytes());
    assert_eq!(registry.state.lookups.load(Ordering::SeqCst), 1);
    assert_eq!(registry.state.registers.load(Ordering::SeqCst), 0);

    // A schema that is not registered: permanent, with the registry's code.
    let err = encode(&lookup_yaml(&registry.url, ORDER_V2), &order(1))
        .await
        .expect_err("not registered");
    assert!(!err.retryable);
    assert!(err.message.contains("40403"), "{err}");

    // No schema: the subject's latest version.
    let latest = registry_yaml(&registry.url, "  subject: orders-value\n");
    let framed = encode(&latest, &order(5))
        .await
        .expect("encodes with latest");
    assert_eq!(&framed[1..5], &id.to_be_bytes());
    let unknown = registry_yaml(&registry.url, "  subject: nobody-value\n");
    let err = encode(&unknown, &order(5))
        .await
        .expect_err("no such subject");
    assert!(!err.retryable && err.message.contains("40401"), "{err}");
}

#[tokio::test]
async fn registry_schema_evolution_with_a_reader_schema() {
    let registry = start_registry(None).await;
    let old = encode(&output_yaml(&registry.url, ORDER_V1), &order(1))
        .await
        .expect("v1 encodes");
    let new = encode(
        &output_yaml(&registry.url, ORDER_V2),
        &Bytes::from(json!({"id": 2, "item": "pen", "currency": "USD"}).to_string()),
    )
    .await
    .expect("v2 encodes");
    assert_eq!((old[4], new[4]), (1, 2), "two schema ids");

    // A v2 reader sees the added field's default in old events.
    let reader_v2 = spec(
        &registry_yaml(&registry.url, &format!("reader_schema: '{ORDER_V2}'\n")),
        FormatRole::Input,
    );
    assert_eq!(
        decode_json(&reader_v2, &old).await,
        (
            json!({"id": 1, "item": "book", "note": null, "currency": "EUR"}),
            Some(1)
        )
    );
    // A reader that needs a field the writer lacks, with no default: a
    // permanent error that says so, with the writer's id.
    let strict = ORDER_V2.replace(r#","default":"EUR""#, "");
    let reader_strict = registry_yaml(&registry.url, &format!("reader_schema: '{strict}'\n"));
    let err = decode(&reader_strict, &old)
        .await
        .expect_err("incompatible");
    assert!(!err.retryable && err.schema_id == Some(1), "{err:?}");
    assert!(
        err.message
            .starts_with("schema id 1: the reader schema cannot read"),
        "{err}"
    );
    // A v1 reader drops the field it does not know and defaults the removed one.
    let reader_v1 = spec(
        &registry_yaml(&registry.url, &format!("reader_schema: '{ORDER_V1}'\n")),
        FormatRole::Input,
    );
    assert_eq!(
        decode_json(&reader_v1, &new).await,
        (
            json!({"id": 2, "item": "pen", "note": null, "legacy": 0}),
            Some(2)
        )
    );
}

#[tokio::test]
async fn corrupt_payloads_are_permanent_dead_letters() {
    let registry = start_registry(None).await;
    let id = registry.preload("orders-value", ORDER_V1);
    let decoder = spec(&registry_yaml(&registry.url, ""), FormatRole::Input).decoder();

    let err = decoder
        .decode(&Bytes::from_static(b"{\"id\":1}"))
        .await
        .expect_err("JSON is not framed");
    assert!(!err.retryable);
    assert!(err.message.contains("magic byte is 0x7b"), "{err}");
    assert_eq!(err.schema_id, None);

    let err = decoder
        .decode(&Bytes::from_static(&[0, 0, 1]))
        .await
        .expect_err("short header");
    assert!(err.message.contains("truncated payload: 3 bytes"), "{err}");
    let err = decoder.decode(&Bytes::new()).await.expect_err("empty");
    assert!(err.message.contains("empty payload"), "{err}");

    let good = encode(&format!("format: avro\nschema: '{ORDER_V1}'\n"), &order(3))
        .await
        .expect("datum");
    let framed = confluent_frame(id, &good);
    assert!(decoder.decode(&framed).await.is_ok());
    let truncated = framed.slice(..framed.len() - 2);
    let err = decoder
        .decode(&truncated)
        .await
        .expect_err("truncated datum");
    assert!(!err.retryable);
    assert_eq!(err.schema_id, Some(id));
    assert!(
        err.message
            .starts_with(&format!("schema id {id}: not a valid Avro datum")),
        "{err}"
    );
    let headers = err.dead_letter_headers();
    assert_eq!(headers[0].0, spate_connector::dead_letter::DECODE_ERROR);
    assert_eq!(headers[1], (SCHEMA_ID_HEADER, id.to_string()));
}

#[tokio::test]
async fn unknown_schema_id_is_permanent_and_named() {
    let registry = start_registry(None).await;
    let err = decode(
        &registry_yaml(&registry.url, ""),
        &confluent_frame(9_999, b"\x02"),
    )
    .await
    .expect_err("unknown id");
    assert!(!err.retryable);
    assert_eq!(err.schema_id, Some(9_999));
    assert_eq!(
        err.message,
        "schema id 9999 is unknown to the schema registry (error code 40403)"
    );
}

#[tokio::test]
async fn registry_down_or_failing_is_retryable() {
    // A port nobody listens on: connection refused.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("address"));
    drop(closed);
    let err = decode(&registry_yaml(&url, ""), &confluent_frame(1, b"\x02"))
        .await
        .expect_err("down");
    assert!(err.retryable, "{err}");
    assert_eq!(err.schema_id, Some(1));
    assert!(
        err.message
            .starts_with("schema registry unavailable: cannot connect"),
        "{err}"
    );
    let err = encode(&output_yaml(&url, ORDER_V1), &order(1))
        .await
        .expect_err("down");
    assert!(err.retryable, "{err}");

    // A base URL that is not the registry: 404 without an error code.
    let registry = start_registry(None).await;
    let wrong_path = format!("{}/not-the-registry", registry.url);
    let err = decode(
        &registry_yaml(&wrong_path, ""),
        &confluent_frame(1, b"\x02"),
    )
    .await
    .expect_err("wrong path");
    assert!(err.retryable && err.message.contains("base URL"), "{err}");

    // HTTP 503, then recovery: the failure was not cached.
    let registry = start_registry(None).await;
    registry.state.failing.store(true, Ordering::SeqCst);
    let output = spec(&output_yaml(&registry.url, ORDER_V1), FormatRole::Output);
    let err = output.encoder().encode(&order(1)).await.expect_err("503");
    assert!(err.retryable && err.message.contains("HTTP 503"), "{err}");
    registry.state.failing.store(false, Ordering::SeqCst);
    output
        .encoder()
        .encode(&order(1))
        .await
        .expect("registry is back");
}

#[tokio::test]
async fn basic_auth_is_sent_and_secrets_stay_out_of_debug() {
    let registry = start_registry(Some(("key", "s3cr3t-password"))).await;
    let good = spec(
        &output_yaml(&registry.url, ORDER_V1).replace(
            "  subject:",
            "  username: key\n  password: s3cr3t-password\n  subject:",
        ),
        FormatRole::Output,
    );
    good.encoder().encode(&order(1)).await.expect("authorized");
    let debug = format!("{good:?} {:?}", good.encoder());
    assert!(!debug.contains("s3cr3t"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");

    let wrong = registry_yaml(
        &registry.url,
        "  username: key\n  password: wrong-password\n",
    );
    let err = decode(&wrong, &confluent_frame(1, b"\x02"))
        .await
        .expect_err("401");
    assert!(err.retryable, "{err}");
    assert!(
        err.message.contains("HTTP 401") && err.message.contains("check schema_registry.username"),
        "{err}"
    );
    assert!(!err.message.contains("wrong-password"), "{err}");
}

#[tokio::test]
async fn json_not_matching_the_schema_names_the_field() {
    let registry = start_registry(None).await;
    let err = encode(
        &output_yaml(&registry.url, ORDER_V1),
        &Bytes::from_static(br#"{"id": 1, "item": 5}"#),
    )
    .await
    .expect_err("item is not a string");
    assert!(!err.retryable);
    assert_eq!(err.field.as_deref(), Some("item"));
    assert_eq!(
        err.message,
        "output does not match the Avro schema: field `item`: expected a string, found number 5"
    );
}

#[test]
fn formats_default_to_raw_and_json_is_plain() {
    assert!(spec("type: kafka\n", FormatRole::Input).is_raw());
    assert_eq!(
        spec("type: kafka\nformat: json\n", FormatRole::Input).name(),
        "json"
    );
    // A schema written as YAML is read as the JSON it spells.
    let yaml = "format: avro\nschema:\n  type: record\n  name: R\n  fields:\n    - {name: a, type: long}\n    - {name: b, type: [\"null\", string], default: null}\n";
    assert_eq!(spec(yaml, FormatRole::Input).name(), "avro");
}

/// (YAML, role, expected (path, line, message fragment)).
#[test]
fn config_errors_are_reported_at_their_keys() {
    let cases: &[(&str, FormatRole, &str, u32, &str)] = &[
        ("format: avr\n", FormatRole::Input, "input.format", 1, "unknown format `avr`"),
        ("format: json\nschema: '\"long\"'\n", FormatRole::Input, "input.schema", 2, "applies only to `format: avro`"),
        ("format: avro\n", FormatRole::Input, "input.format", 1, "needs `schema`, `schema_file` or `schema_registry`"),
        ("format: avro\nschema: '{\"type\": \"recrod\"}'\n", FormatRole::Input, "input.schema", 2, "invalid Avro schema"),
        ("format: avro\nschema_file: /nonexistent/order.avsc\n", FormatRole::Input, "input.schema_file", 2, "cannot read Avro schema file"),
        ("format: avro\nschema: '\"long\"'\nschema_file: x.avsc\n", FormatRole::Input, "input.schema_file", 3, "not both"),
        (
            "format: avro\nschema: '{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":\"long\"}]}'\nreader_schema: '{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"b\",\"type\":\"long\"}]}'\n",
            FormatRole::Input, "input.reader_schema", 3, "reader schema cannot read",
        ),
        ("format: avro\nschema: '\"long\"'\nreader_schema: '\"long\"'\n", FormatRole::Output, "input.reader_schema", 3, "only used by inputs"),
        ("format: avro\nschema_registry:\n  url: ftp://x\n", FormatRole::Input, "input.schema_registry.url", 3, "must be http or https"),
        ("format: avro\nschema_registry:\n  url: not a url\n", FormatRole::Input, "input.schema_registry.url", 3, "not a URL"),
        ("format: avro\nschema_registry:\n  url: http://u:p@host:8081\n", FormatRole::Input, "input.schema_registry.url", 3, "must not carry credentials"),
        ("format: avro\nschema_registry:\n  username: key\n  url: http://h\n", FormatRole::Input, "input.schema_registry.username", 3, "needs `password` too"),
        ("format: avro\nschema_registry:\n  url: http://h\n  password: x\n", FormatRole::Input, "input.schema_registry.password", 4, "needs `username` too"),
        ("format: avro\nschema_registry:\n  url: http://h\n", FormatRole::Output, "input.schema_registry.subject", 3, "missing required field `subject`"),
        ("format: avro\nschema_registry:\n  url: http://h\n  subject: s\n", FormatRole::Input, "input.schema_registry.subject", 4, "only used by outputs"),
        ("format: avro\nschema: '\"long\"'\nschema_registry:\n  url: http://h\n", FormatRole::Input, "input.schema", 2, "takes the writer schema from each payload"),
        ("format: avro\nschema_registry:\n  url: http://h\n  timeout: 0s\n", FormatRole::Input, "input.schema_registry.timeout", 4, "more than zero"),
        ("format: avro\nschema_registry:\n  url: http://h\n  subjet: s\n", FormatRole::Input, "input.schema_registry.subjet", 4, "unknown key `subjet`"),
    ];
    for (yaml, role, path, line, fragment) in cases {
        let (spec, errors) = read(yaml, *role);
        assert!(spec.is_none(), "{yaml}");
        let found = errors.iter().find(|e| e.path == *path);
        let Some(error) = found else {
            panic!("no error at {path} for\n{yaml}\ngot {errors:#?}");
        };
        assert_eq!(error.span.line, *line, "{yaml}\n{error:?}");
        assert!(error.message.contains(fragment), "{yaml}\n{error:?}");
    }
    // apache-avro's own message is kept.
    let (_, errors) = read(
        "format: avro\nschema: '{\"type\": \"recrod\"}'\n",
        FormatRole::Input,
    );
    assert!(
        errors[0].message.len() > "invalid Avro schema: ".len(),
        "{errors:?}"
    );
}
