//! Pipeline file → validated [`PipelineSpec`].
//!
//! Everything is read through [`ConfigReader`]s sharing one error list, so a
//! file with many problems reports all of them (each at its line and column,
//! with a hint), and nothing is ever built from a file that had one. The
//! defaults of every key live here, in the code that reads the key, and
//! nowhere else. Loading does no I/O beyond reading the file: connectors are
//! only configured, never connected.
//!
//! The file format (see also `pipelines/demo.yaml`):
//!
//! ```yaml
//! settings:                                # optional
//!   metrics_address: 127.0.0.1:9464        # `ip:port`, or `off`
//!   max_in_flight: {events: 100000, bytes: 256MiB}   # whole process
//! functions:                               # required, at least one
//!   - name: enrich-telemetry               # required, unique, [A-Za-z0-9_.-]+
//!     input: {type: generate}              # or `inputs: [...]`, exactly one of the two
//!     handler: passthrough                 # or {name: filter, <settings>}
//!     outputs: [{type: file, name: valid, path: out/valid.jsonl}]
//!     dead_letter: {type: file, path: out/dead.jsonl}   # required
//!     delivery: at_least_once              # | exactly_once | at_most_once
//!     ordering: partition                  # | key | none
//!     concurrency: {min: 0, max: 16}
//!     retry: {max_attempts: 3, initial_backoff: 100ms, max_backoff: 10s, timeout: 30s}
//!     max_in_flight: {events: 1000, bytes: 16MiB}       # per partition
//!     commit_interval: 1s
//!     drain_timeout: 30s
//!     transaction_interval: 100ms          # exactly_once only: commit at least this often
//!     transaction_max_events: 10000        # exactly_once only: or once this many events wait
//! tests:                                   # optional, run by `spate test` (see load::tests_block)
//!   - name: valid readings pass
//!     function: enrich-telemetry
//!     events:
//!       - input: {payload: {temperature: 20}}
//!         expect: {outputs: [{payload: {temperature: 20}}]}
//! ```

use std::path::{Path, PathBuf};

use spate_connector::config::ConfigErrors;
use spate_connector::{ConfigError, ConfigNode, ConfigReader, NodeKind};

use super::env::{Environment, ProcessEnv};
use super::spec::{FunctionSpec, PipelineSpec, PipelineTest, SettingsSpec};
use super::yaml;
use crate::registry::Registry;
use function::read_functions;
use tuning::read_settings;

mod function;
mod promises;
mod tests_block;
mod tuning;

/// Why a pipeline file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{}: cannot read the file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file was read and has problems; all of them, sorted by place.
    #[error("{}: {} problem{} in the pipeline file", path.display(), errors.len(), if errors.len() == 1 { "" } else { "s" })]
    Invalid {
        /// The file, as given.
        path: PathBuf,
        /// Every problem.
        errors: Vec<ConfigError>,
    },
}

impl LoadError {
    /// The file this error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Read { path, .. } | Self::Invalid { path, .. } => path,
        }
    }

    /// The problems in the file (empty for [`LoadError::Read`]).
    pub fn errors(&self) -> &[ConfigError] {
        match self {
            Self::Read { .. } => &[],
            Self::Invalid { errors, .. } => errors,
        }
    }
}

/// Reads, parses and validates the pipeline file at `path`, interpolating
/// `${VAR}` from this process's environment.
pub fn load_file(path: &Path, registry: &Registry) -> Result<PipelineSpec, LoadError> {
    use std::io::Read;
    let read_error = |source| LoadError::Read {
        path: path.to_owned(),
        source,
    };
    // One byte more than the bound, so a longer file is refused by the
    // parser without being read whole.
    let limit = u64::try_from(yaml::MAX_FILE_BYTES)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(limit).read_to_end(&mut bytes))
        .map_err(read_error)?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        // Too long: the parser refuses it by its length alone.
        Err(error) if error.as_bytes().len() > yaml::MAX_FILE_BYTES => {
            String::from_utf8_lossy(error.as_bytes()).into_owned()
        }
        Err(error) => {
            return Err(read_error(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                error.utf8_error(),
            )))
        }
    };
    load_str(&text, path, registry, &ProcessEnv)
}

/// Parses and validates pipeline-file `text`; `path` is only used in the
/// returned spec and errors. `${VAR}` values come from `env`.
pub fn load_str(
    text: &str,
    path: &Path,
    registry: &Registry,
    env: &dyn Environment,
) -> Result<PipelineSpec, LoadError> {
    let invalid = |errors| LoadError::Invalid {
        path: path.to_owned(),
        errors,
    };
    let document = yaml::parse(text, env).map_err(|error| invalid(vec![error]))?;
    let (spec, later) = match load_node(&document.root, path, registry) {
        Ok(spec) => (Some(spec), Vec::new()),
        Err(errors) => (None, errors),
    };
    let errors = document.finish(later);
    match spec {
        Some(spec) if errors.is_empty() => Ok(spec),
        _ => Err(invalid(errors)),
    }
}

/// Validates an already parsed tree. Every problem is returned, in the
/// order found (callers sort by place).
pub fn load_node(
    root: &ConfigNode,
    path: &Path,
    registry: &Registry,
) -> Result<PipelineSpec, Vec<ConfigError>> {
    let errors = ConfigErrors::default();
    let loaded = read_file(root, registry, &errors);
    let mut errors = errors.into_inner();
    match loaded {
        Some((settings, functions, tests)) if errors.is_empty() => Ok(PipelineSpec {
            path: path.to_owned(),
            functions,
            settings,
            tests,
            warnings: promises::warnings(root),
        }),
        _ => {
            if errors.is_empty() {
                errors.push(ConfigError {
                    span: root.span,
                    path: String::new(),
                    message: "the file could not be loaded".to_owned(),
                    hint: None,
                });
            }
            Err(errors)
        }
    }
}

/// True for names of functions and outputs: `[A-Za-z0-9_.-]+`.
pub(super) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn read_file(
    root: &ConfigNode,
    registry: &Registry,
    errors: &ConfigErrors,
) -> Option<(SettingsSpec, Vec<FunctionSpec>, Vec<PipelineTest>)> {
    let top_level = "a pipeline file is a mapping with `functions:` (and optionally `settings:`); see pipelines/demo.yaml";
    let problem = match &root.kind {
        NodeKind::Map(_) => None,
        NodeKind::Null => Some("the file is empty".to_owned()),
        _ => Some(format!(
            "the file must be a mapping, found {}",
            root.type_name()
        )),
    };
    if let Some(message) = problem {
        errors.borrow_mut().push(ConfigError {
            span: root.span,
            path: String::new(),
            message,
            hint: Some(top_level.to_owned()),
        });
        return None;
    }
    let mut top = ConfigReader::new(root, "", errors);
    let settings = read_settings(top.section("settings"));
    let functions = match top.node("functions") {
        None => {
            top.error(
                root.span,
                "functions",
                "missing required field `functions`",
                Some(
                    "declare at least one function: `functions:` then `- name: ...` items"
                        .to_owned(),
                ),
            );
            None
        }
        Some(node) => read_functions(node, registry, errors),
    };
    // The tests block names functions: check it only against a file whose
    // functions loaded, so one mistake is not reported twice.
    let tests = match &functions {
        Some(functions) => {
            let names: Vec<String> = functions.iter().map(|f| f.name.clone()).collect();
            let outputs: Vec<Vec<&str>> = functions
                .iter()
                .map(|f| f.outputs.iter().map(|o| o.name.as_str()).collect())
                .collect();
            tests_block::read_tests(&mut top, &names, &outputs)
        }
        None => {
            let _ = top.node("tests");
            Some(Vec::new())
        }
    };
    Some((settings?, functions?, tests?))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use std::time::Duration;

    use spate_connector::Span;

    use super::*;
    use crate::spec::{ConcurrencySpec, Delivery, InFlightLimits, Ordering, RetryPolicy};

    fn load(text: &str) -> Result<PipelineSpec, Vec<ConfigError>> {
        let env = |name: &str| (name == "OUT").then(|| "/tmp/spate-out".to_owned());
        load_str(text, Path::new("p.yaml"), &registry(), &env).map_err(|e| e.errors().to_vec())
    }

    /// The connectors and handlers these tests name.
    fn registry() -> Registry {
        let mut registry = Registry::empty();
        for factory in spate_builtin::connectors() {
            registry.add_connector(factory);
        }
        for factory in spate_handlers::handlers() {
            registry.add_handler(factory);
        }
        registry
    }

    fn loaded(text: &str) -> PipelineSpec {
        match load(text) {
            Ok(spec) => spec,
            Err(errors) => panic!("{}", crate::render(Path::new("p.yaml"), &errors)),
        }
    }

    #[test]
    fn defaults_fill_what_the_file_leaves_out() {
        let spec = loaded(
            "functions:\n  - name: f\n    input: {type: generate}\n    handler: passthrough\n    dead_letter: {type: stdout}\n",
        );
        assert_eq!(
            spec.settings,
            SettingsSpec {
                metrics_address: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
                max_in_flight: InFlightLimits {
                    events: 100_000,
                    bytes: 256 << 20,
                },
            }
        );
        let f = &spec.functions[0];
        assert_eq!(
            (f.name.as_str(), f.span),
            ("f", Span { line: 2, column: 5 })
        );
        assert_eq!(f.handler_name, "passthrough");
        assert_eq!(f.inputs.len(), 1);
        assert!(f.outputs.is_empty());
        assert_eq!(
            (f.dead_letter.name.as_str(), f.dead_letter.kind.as_str()),
            ("stdout", "stdout")
        );
        assert_eq!(
            (f.policy.delivery, f.policy.ordering),
            (Delivery::AtLeastOnce, Ordering::Partition)
        );
        assert_eq!(f.policy.concurrency, ConcurrencySpec { min: 0, max: 16 });
        assert_eq!(
            f.policy.retry,
            RetryPolicy {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(10),
                timeout: Duration::from_secs(30),
            }
        );
        assert_eq!(
            f.policy.max_in_flight,
            InFlightLimits {
                events: 1000,
                bytes: 16 << 20,
            }
        );
        assert_eq!(
            (f.policy.commit_interval, f.policy.drain_timeout),
            (Duration::from_secs(1), Duration::from_secs(30))
        );
    }

    #[test]
    fn written_values_are_used() {
        let spec = loaded(
            r#"
settings:
  metrics_address: off
  max_in_flight: {events: 5000, bytes: 1MiB}
functions:
  - name: enrich.v2
    inputs:
      - {type: generate, count: 5}
      - {type: file, path: in.jsonl}
    handler: {name: filter, field: t, gte: 1}
    outputs:
      - {type: file, name: valid, path: "${OUT}/valid.jsonl"}
      - {type: stdout}
    dead_letter: {type: file, path: dead.jsonl}
    delivery: at_most_once
    ordering: key
    concurrency: {min: 2, max: 4}
    retry: {max_attempts: 1, initial_backoff: 0ms, max_backoff: 1s, timeout: 2s}
    max_in_flight: {events: 10, bytes: 4KiB}
    commit_interval: 250ms
    drain_timeout: 0s
  - name: second
    input: {type: generate}
    handler: passthrough
    dead_letter: {type: stdout}
"#,
        );
        assert_eq!(spec.settings.metrics_address, None);
        assert_eq!(
            spec.settings.max_in_flight,
            InFlightLimits {
                events: 5000,
                bytes: 1 << 20
            }
        );
        assert_eq!(spec.functions.len(), 2);
        let f = &spec.functions[0];
        assert_eq!(f.name, "enrich.v2");
        let kinds: Vec<&str> = f.inputs.iter().map(|i| i.kind.as_str()).collect();
        assert_eq!(kinds, ["generate", "file"]);
        assert_eq!(f.handler_name, "filter");
        let outputs: Vec<(&str, &str)> = f
            .outputs
            .iter()
            .map(|o| (o.name.as_str(), o.kind.as_str()))
            .collect();
        assert_eq!(outputs, [("valid", "file"), ("stdout", "stdout")]);
        assert_eq!(
            (f.policy.delivery, f.policy.ordering),
            (Delivery::AtMostOnce, Ordering::Key)
        );
        assert_eq!(f.policy.concurrency, ConcurrencySpec { min: 2, max: 4 });
        assert_eq!(f.policy.retry.max_attempts, 1);
        assert_eq!(f.policy.retry.initial_backoff, Duration::ZERO);
        assert_eq!(
            f.policy.max_in_flight,
            InFlightLimits {
                events: 10,
                bytes: 4096
            }
        );
        assert_eq!(
            (f.policy.commit_interval, f.policy.drain_timeout),
            (Duration::from_millis(250), Duration::ZERO)
        );
    }

    #[test]
    fn one_bad_function_does_not_hide_the_problems_of_the_next() {
        let errors = load(
            "functions:\n  - name: a\n    input: {type: generate}\n    handler: nope\n    dead_letter: {type: stdout}\n  - name: a\n    input: {type: generate}\n    handler: passthrough\n    dead_letter: {type: stdout}\n    retry: {max_attempts: 0}\n",
        )
        .err()
        .unwrap_or_default();
        let found: Vec<(u32, &str)> = errors
            .iter()
            .map(|e| (e.span.line, e.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (4, "unknown handler `nope`"),
                (6, "duplicate function name `a`"),
                (
                    10,
                    "`retry.max_attempts` must be between 1 and 1_000, found `0`"
                ),
            ]
        );
    }

    #[test]
    fn a_tests_block_of_six_thousand_events_without_aliases_loads() {
        let mut text = String::from(
            "functions:\n  - name: f\n    input: {type: generate}\n    handler: passthrough\n    dead_letter: {type: stdout}\ntests:\n  - name: many\n    events:\n",
        );
        for i in 0..6000 {
            text.push_str(&format!(
                "      - input: {{key: k{i}, payload: {{n: {i}, t: 1.5, tags: [a, b]}}}}\n        expect: {{outputs: [{{payload: {{n: {i}, t: 1.5, tags: [a, b]}}}}]}}\n"
            ));
        }
        let spec = loaded(&text);
        assert_eq!(spec.tests[0].events.len(), 6000);
    }

    #[test]
    fn names_are_checked() {
        assert!(is_valid_name("enrich-telemetry_v2.1"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("with space"));
        assert!(!is_valid_name("slash/y"));
    }
}
