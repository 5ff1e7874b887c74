//! The fuzz targets: each a seed corpus and a function that must not
//! panic, hang or abort, and that asserts the target's properties beyond
//! "no crash".
//!
//! To add a target: write its `fn(&[u8])` and corpus here, list it in
//! [`all`], and add a `#[test]` for it in `tests/fuzz.rs`.

use std::path::Path;
use std::sync::OnceLock;

use bytes::Bytes;
use spate::format::FormatSpec;
use spate::pipeline::{self, LoadError};
use spate::Registry;

use super::harness::Target;

/// Every target.
pub fn all() -> Vec<Target> {
    vec![
        loader(),
        envelope(),
        avro(),
        registry(),
        expr(),
        expr_eval(),
    ]
}

fn files(pattern_dirs: &[(&str, &str)]) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for (dir, extension) in pattern_dirs {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        let mut paths: Vec<_> = entries
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|x| x == *extension))
            .collect();
        paths.sort();
        out.extend(paths.iter().filter_map(|p| std::fs::read(p).ok()));
    }
    out
}

// ---------------------------------------------------------------- loader

fn handlers() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::with_builtins)
}

fn fuzz_env(name: &str) -> Option<String> {
    match name {
        "HOST" => Some("broker-1:9092".to_owned()),
        "EMPTY" => Some(String::new()),
        "A" => Some("${B}".to_owned()),
        _ => None,
    }
}

fn load(text: &str) -> Result<(), Vec<String>> {
    let path = Path::new("fuzz.yaml");
    match pipeline::load_str(text, path, handlers(), &fuzz_env) {
        Ok(_) => Ok(()),
        Err(LoadError::Invalid { errors, .. }) => {
            assert!(!errors.is_empty(), "an invalid file with no error");
            for error in &errors {
                assert!(
                    error.span.line >= 1 && error.span.column >= 1,
                    "an error without its place: {error:?}"
                );
            }
            Err(vec![pipeline::render(path, &errors)])
        }
        Err(other) => panic!("load_str does no I/O, yet: {other}"),
    }
}

/// The pipeline loader: validating text never panics, every error carries
/// its line and column, and the errors are the same on a second load.
fn run_loader(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let first = load(&text);
    let second = load(&text);
    assert_eq!(first, second, "loading the same text twice differs");
}

/// The loader target: corpus `pipelines/*.yaml` and `tests/invalid/*.yaml`.
pub fn loader() -> Target {
    Target {
        name: "loader",
        corpus: files(&[("pipelines", "yaml"), ("tests/invalid", "yaml")]),
        run: run_loader,
        yaml: true,
        max_len: 256 << 10,
    }
}

// -------------------------------------------------------------- envelope

/// The file envelope reader: decoding never panics, and what decodes
/// re-encodes to a line that decodes to the same record.
fn run_envelope(data: &[u8]) {
    use spate_builtin::file::envelope::{decode, encode};
    let Ok(record) = decode(data) else {
        return;
    };
    let mut line = Vec::new();
    encode(&record, &mut line);
    match decode(&line) {
        Ok(again) => assert_eq!(again, record, "an envelope does not round-trip"),
        Err(error) => panic!("an encoded envelope does not decode: {error}"),
    }
}

/// The envelope target.
pub fn envelope() -> Target {
    let lines = [
        r#"{"key":"device-7","payload":{"t":21.5},"headers":{"trace":"abc"},"timestamp_ms":1700000000000}"#,
        r#"{"payload":"text"}"#,
        r#"{"key_base64":"AAEC","payload_base64":"//79","headers":{"b":{"base64":"AA=="},"b":"again"}}"#,
        r#"{"payload":[1,2,{"a":null}],"timestamp_ms":-1}"#,
        r#"{"payload":1e400}"#,
    ];
    Target {
        name: "envelope",
        corpus: lines.iter().map(|l| l.as_bytes().to_vec()).collect(),
        run: run_envelope,
        yaml: false,
        max_len: 64 << 10,
    }
}

// ------------------------------------------------------------------ avro

const SCHEMA: &str = r#"{"type": "record", "name": "R", "fields": [
  {"name": "id", "type": "long"},
  {"name": "name", "type": ["null", "string"]},
  {"name": "tags", "type": {"type": "array", "items": "string"}},
  {"name": "attrs", "type": {"type": "map", "values": "double"}},
  {"name": "kind", "type": {"type": "enum", "name": "K", "symbols": ["A", "B"]}},
  {"name": "raw", "type": "bytes"},
  {"name": "fix", "type": {"type": "fixed", "name": "F", "size": 4}},
  {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 2}},
  {"name": "f", "type": "float"},
  {"name": "ok", "type": "boolean"}
]}"#;

fn avro_format() -> &'static FormatSpec {
    static FORMAT: OnceLock<FormatSpec> = OnceLock::new();
    FORMAT.get_or_init(|| match FormatSpec::avro(SCHEMA, None) {
        Ok(format) => format,
        Err(error) => panic!("the fuzz schema: {error:?}"),
    })
}

/// The Avro decoder: a payload decodes to JSON or is a decode error that
/// is never retried; it never panics.
fn run_avro(data: &[u8]) {
    let decoder = avro_format().decoder();
    let payload = Bytes::copy_from_slice(data);
    if let Err(error) = futures::executor::block_on(decoder.decode(&payload)) {
        assert!(
            !error.retryable,
            "a bad inline-schema payload is retried: {error:?}"
        );
    }
}

/// The Avro target; its corpus is encoded from JSON by the encoder.
pub fn avro() -> Target {
    let documents = [
        r#"{"id": 1, "name": "a", "tags": ["x", "y"], "attrs": {"t": 1.5}, "kind": "A", "raw": "AAE=", "fix": "AAECAw==", "amount": "12.30", "f": 1.0, "ok": true}"#,
        r#"{"id": -9223372036854775808, "name": null, "tags": [], "attrs": {}, "kind": "B", "raw": "", "fix": "/////w==", "amount": "-0.01", "f": "NaN", "ok": false}"#,
    ];
    let encoder = avro_format().encoder();
    let corpus = documents
        .iter()
        .filter_map(|d| {
            futures::executor::block_on(encoder.encode(&Bytes::from_static(d.as_bytes())))
                .ok()
                .map(|b| b.to_vec())
        })
        .collect::<Vec<_>>();
    assert_eq!(
        corpus.len(),
        documents.len(),
        "the Avro corpus did not encode"
    );
    Target {
        name: "avro",
        corpus,
        run: run_avro,
        yaml: false,
        max_len: 64 << 10,
    }
}

// -------------------------------------------------------------- registry

/// The schema id the registry below knows.
const SCHEMA_ID: u32 = 7;

/// A registry serving [`SCHEMA`] under [`SCHEMA_ID`] (and 404 with the
/// registry's "not found" code for any other id), on a runtime of its own;
/// and the Confluent-framed Avro format reading through it.
fn registry_format() -> &'static (tokio::runtime::Runtime, FormatSpec) {
    static FORMAT: OnceLock<(tokio::runtime::Runtime, FormatSpec)> = OnceLock::new();
    FORMAT.get_or_init(|| {
        use axum::extract::Path as UrlPath;
        use axum::http::StatusCode;
        use axum::routing::get;
        use spate::format::{RegistryConfig, RegistryOptions, SchemaRegistry};
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => panic!("a runtime for the fuzz registry: {error}"),
        };
        let schema_by_id = |UrlPath(id): UrlPath<u32>| async move {
            let json = "application/vnd.schemaregistry.v1+json";
            match id {
                SCHEMA_ID => (
                    StatusCode::OK,
                    [("content-type", json)],
                    serde_json::json!({ "schema": SCHEMA }).to_string(),
                ),
                _ => (
                    StatusCode::NOT_FOUND,
                    [("content-type", json)],
                    r#"{"error_code": 40403, "message": "Schema not found"}"#.to_owned(),
                ),
            }
        };
        let router = axum::Router::new().route("/schemas/ids/{id}", get(schema_by_id));
        let listener = match runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")) {
            Ok(listener) => listener,
            Err(error) => panic!("binding the fuzz registry: {error}"),
        };
        let address = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        runtime.spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let registry = SchemaRegistry::new(RegistryConfig {
            url: format!("http://{address}"),
            username: None,
            password: None,
            timeout: std::time::Duration::from_secs(5),
        });
        let format = registry.map_err(|e| format!("{e}")).and_then(|r| {
            FormatSpec::avro_registry(std::sync::Arc::new(r), RegistryOptions::default())
                .map_err(|e| format!("{e:?}"))
        });
        match format {
            Ok(format) => (runtime, format),
            Err(error) => panic!("the fuzz registry format: {error}"),
        }
    })
}

/// The schema-registry wire decoder: a framed payload decodes or is a
/// decode error; with the known schema id (or a frame too short to hold
/// one) the error is never retried; it never panics.
fn run_registry(data: &[u8]) {
    let (runtime, format) = registry_format();
    let decoder = format.decoder();
    let payload = Bytes::copy_from_slice(data);
    let known_id = data.len() < 5 || data[1..5] == SCHEMA_ID.to_be_bytes();
    if let Err(error) = runtime.block_on(decoder.decode(&payload)) {
        assert!(
            !(known_id && error.retryable),
            "a bad payload under a known schema is retried: {error:?}"
        );
    }
}

/// The registry target; its corpus is the Avro corpus framed with
/// [`SCHEMA_ID`].
pub fn registry() -> Target {
    let corpus = avro()
        .corpus
        .iter()
        .map(|datum| spate::format::confluent_frame(SCHEMA_ID, datum).to_vec())
        .collect();
    Target {
        name: "registry",
        corpus,
        run: run_registry,
        yaml: false,
        max_len: 64 << 10,
    }
}

// ------------------------------------------------------------------ expr

/// The expression compiler: compiling never panics or overflows.
fn run_expr(data: &[u8]) {
    let _ = spate::handler::expr::Expr::compile(&String::from_utf8_lossy(data));
}

/// The expression compiler target: compiling any text never crashes (the
/// length and depth limits turn what would overflow into errors).
pub fn expr() -> Target {
    let sources = [
        ".amount >= 0",
        "{id: .order, total: (.amount * 1.2)}",
        "if .a then [.b[] | select(. > 1)] else empty end",
        "def f(x): x + 1; f(.n) // \"none\"",
        ".items | map(.price) | add",
        "reduce .[] as $x (0; . + $x)",
        "[limit(3; repeat(1))]",
        ".a.b.c? // (.d | tostring | ascii_downcase)",
    ];
    Target {
        name: "expr",
        corpus: sources.iter().map(|s| s.as_bytes().to_vec()).collect(),
        run: run_expr,
        yaml: false,
        max_len: 16 << 10,
    }
}

// ---------------------------------------------------------- evaluation

/// Limits of the sandboxed evaluations: short, so endless inputs cost
/// little fuzzing time.
fn eval_limits() -> spate::handler::expr::Limits {
    spate::handler::expr::Limits {
        time: std::time::Duration::from_millis(200),
        memory: 64 << 20,
    }
}

fn eval_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the evaluation target")
    })
}

/// An expression and a payload, split at the first newline: an
/// expression the classifier proves bounded runs inline, on this thread
/// (so a wrong proof crashes the fuzzer: that is the finding); any other
/// runs in the sandbox, which must answer within its time limit whatever
/// it evaluates. Either way a result or an error, never a crash or hang.
fn run_expr_eval(data: &[u8]) {
    use spate::handler::expr::{EvalError, Expr, Mode};
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (source, payload) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let Ok(expr) = Expr::compile(&String::from_utf8_lossy(source)) else {
        return;
    };
    let mode = if payload.first().is_some_and(|b| b % 2 == 0) {
        Mode::Holds
    } else {
        Mode::Results
    };
    if expr.is_inline() {
        let _ = expr.evaluate_inline(payload, mode);
        return;
    }
    let limits = eval_limits();
    let started = std::time::Instant::now();
    let result = eval_runtime().block_on(expr.evaluate_sandboxed(payload, mode, &limits));
    assert!(
        !matches!(result, Err(EvalError::Unavailable(_))),
        "the sandbox is unavailable: {result:?}"
    );
    assert!(
        started.elapsed() < limits.time + std::time::Duration::from_secs(2),
        "a sandboxed evaluation outlived its time limit by far: {:?}",
        started.elapsed()
    );
}

/// The evaluation target: expression and payload, one line each.
pub fn expr_eval() -> Target {
    let cases = [
        ".amount >= 0\n{\"amount\": 3}",
        "{id: .order, total: (.amount * 1.2)}\n{\"order\": \"o-1\", \"amount\": 10}",
        ".items | map(.price) | add\n{\"items\": [{\"price\": 1}, {\"price\": 2.5}]}",
        "[.[] | select(. > 1)]\n[1, 2, 3]",
        ".a.b.c? // (.d | tostring | ascii_downcase)\n{\"d\": \"X\"}",
        "def f: if . <= 0 then 0 else (. - 1 | f) + 1 end; .n | f\n{\"n\": 30}",
        "\"x\" * .n\n{\"n\": 4}",
        "[limit(.n; repeat(1))]\n{\"n\": 5}",
        ".[.i] = 1\n{\"i\": 3}",
        "reduce .[] as $x (0; . + $x)\n[1, 2, 3]",
        "to_entries | map(.key) | join(\",\")\n{\"a\": 1, \"b\": 2}",
        "if .t == \"a\" then {k: .v} elif .t == \"b\" then [.v, .v] else null end\n{\"t\": \"b\", \"v\": [1]}",
    ];
    Target {
        name: "expr_eval",
        corpus: cases.iter().map(|s| s.as_bytes().to_vec()).collect(),
        run: run_expr_eval,
        yaml: false,
        max_len: 16 << 10,
    }
}
