//! Golden tests for `spate validate`: every `tests/invalid/NAME.yaml` must be
//! rejected with exactly the text in `tests/invalid/NAME.expected` (what
//! the CLI prints: `file:line:column: message` and `  hint: ...` lines,
//! sorted by place).
//!
//! One broken file per kind of mistake. To add a case, write the YAML file
//! and run
//!
//! ```text
//! SPATE_BLESS=1 cargo test --test validate_golden
//! ```
//!
//! which (re)writes every `.expected` file from the current output; then
//! read the diff before committing it — the point of these files is that a
//! person has checked each message.
//!
//! The files are loaded with a fixed environment (`OUT_DIR=out`,
//! `DB_PASSWORD=correct-horse-battery-staple`, nothing else) and a registry
//! of the built-ins plus test-only pieces: a Rust function handler `enrich`,
//! a connector `queue` (source and sink that support exactly-once, like
//! Kafka) and a connector `pubsub` (source and sink without durable
//! positions, like core NATS).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use spate::pipeline::{self, LoadError};
use spate::{Context, Event, HandlerError, Output, Registry};
use spate_connector::{
    Capabilities, ConfigReader, ConnectorFactory, Sink, SinkBuilder, SinkError, Source,
    SourceBuilder, SourceError,
};

/// A connector kind that only validates its settings (one required key).
struct TestConnector {
    kind: &'static str,
    key: &'static str,
    capabilities: Capabilities,
    sink_capabilities: Option<Capabilities>,
}

struct NeverBuilt;

#[async_trait]
impl SourceBuilder for NeverBuilt {
    async fn build(&self) -> Result<Box<dyn Source>, SourceError> {
        Err(SourceError::Fatal {
            source_name: "test".to_owned(),
            message: "test connectors are never built".to_owned(),
        })
    }
}

#[async_trait]
impl SinkBuilder for NeverBuilt {
    async fn build(&self) -> Result<Box<dyn Sink>, SinkError> {
        Err(SinkError::Unavailable {
            sink_name: "test".to_owned(),
            message: "test connectors are never built".to_owned(),
        })
    }
}

impl ConnectorFactory for TestConnector {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn source_capabilities(&self) -> Option<Capabilities> {
        Some(self.capabilities)
    }

    fn sink_capabilities(&self) -> Option<Capabilities> {
        self.sink_capabilities
    }

    fn source(&self, config: &mut ConfigReader<'_>) -> Option<Box<dyn SourceBuilder>> {
        config.required_string(self.key, None)?;
        Some(Box::new(NeverBuilt))
    }

    fn sink(&self, config: &mut ConfigReader<'_>) -> Option<Box<dyn SinkBuilder>> {
        config.required_string(self.key, None)?;
        Some(Box::new(NeverBuilt))
    }
}

async fn enrich(event: Event, _ctx: &Context) -> Result<Vec<Output>, HandlerError> {
    Ok(vec![Output::from_event(&event, event.payload.clone())])
}

fn registry() -> Registry {
    let mut registry = Registry::with_builtins();
    registry.register("enrich", enrich);
    // A broker with transactions (like Kafka): its source opens them.
    registry.add_connector(Arc::new(TestConnector {
        kind: "queue",
        key: "topic",
        capabilities: Capabilities {
            exactly_once: true,
            durable_positions: true,
            resumable: false,
        },
        sink_capabilities: Some(Capabilities {
            exactly_once: true,
            durable_positions: false,
            resumable: false,
        }),
    }));
    registry.add_connector(Arc::new(TestConnector {
        kind: "pubsub",
        key: "subject",
        capabilities: Capabilities {
            exactly_once: false,
            durable_positions: false,
            resumable: false,
        },
        sink_capabilities: Some(Capabilities {
            exactly_once: false,
            durable_positions: false,
            resumable: false,
        }),
    }));
    registry
}

fn test_env(name: &str) -> Option<String> {
    match name {
        "OUT_DIR" => Some("out".to_owned()),
        "DB_PASSWORD" => Some("correct-horse-battery-staple".to_owned()),
        _ => None,
    }
}

fn invalid_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid")
}

fn files_with(extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(invalid_dir())
        .expect("tests/invalid exists")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

/// What `spate validate` prints for `file` (as a repository-relative path).
fn rendered(file: &Path, registry: &Registry) -> Result<String, String> {
    let text =
        fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let shown = Path::new("tests/invalid").join(name);
    match pipeline::load_str(&text, &shown, registry, &test_env) {
        Ok(_) => Err(format!("{} loaded without any error", shown.display())),
        Err(error) => Ok(pipeline::render_load_error(&error)),
    }
}

#[test]
fn every_invalid_file_is_rejected_with_exactly_the_expected_messages() {
    let bless = std::env::var_os("SPATE_BLESS").is_some_and(|v| v == "1");
    let registry = registry();
    let mut failures = Vec::new();
    let cases = files_with("yaml");
    assert!(cases.len() >= 30, "the golden cases are missing");
    for case in &cases {
        let expected_path = case.with_extension("expected");
        let actual = match rendered(case, &registry) {
            Ok(actual) => actual,
            Err(problem) => {
                failures.push(problem);
                continue;
            }
        };
        if bless {
            fs::write(&expected_path, &actual).expect("write .expected");
            continue;
        }
        match fs::read_to_string(&expected_path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                case.display()
            )),
            Err(_) => failures.push(format!(
                "{} has no .expected file; run with SPATE_BLESS=1 and review it. Output:\n{actual}",
                case.display()
            )),
        }
    }
    for expected in files_with("expected") {
        if !expected.with_extension("yaml").exists() {
            failures.push(format!("{} has no .yaml file", expected.display()));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_secret_from_the_environment_never_appears_in_the_output() {
    let registry = registry();
    for case in files_with("yaml") {
        let output = rendered(&case, &registry).unwrap_or_default();
        assert!(
            !output.contains("correct-horse"),
            "{} shows the secret:\n{output}",
            case.display()
        );
    }
}

#[test]
fn the_example_pipelines_are_valid() {
    let registry = registry();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut checked = 0;
    for entry in fs::read_dir(&dir).expect("pipelines/ exists") {
        let path = entry.expect("readable directory entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = fs::read_to_string(&path).expect("readable example");
        if let Err(error) = pipeline::load_str(&text, &path, &registry, &|_: &str| None) {
            panic!("{}", pipeline::render_load_error(&error));
        }
        checked += 1;
    }
    assert!(
        checked >= 1,
        "no example pipeline found in {}",
        dir.display()
    );
}

#[test]
fn a_missing_file_is_one_clear_line_and_a_hint() {
    let error = match pipeline::load_file(Path::new("tests/invalid/no-such-file.yaml"), &registry())
    {
        Ok(_) => panic!("a missing file loaded"),
        Err(error) => error,
    };
    assert!(matches!(error, LoadError::Read { .. }));
    assert_eq!(
        pipeline::render_load_error(&error),
        "tests/invalid/no-such-file.yaml: no such file\n  hint: check the path; a relative path starts from the current directory\n"
    );
}
