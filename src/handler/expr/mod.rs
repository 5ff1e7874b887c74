//! Expressions in pipeline files: the `filter` (`expr:`), `map` and `route`
//! built-ins, written in **jq**, run by [jaq](https://github.com/01mf02/jaq)
//! (`jaq-core`, `jaq-std`, `jaq-json`).
//!
//! ```yaml
//! handler: {name: filter, expr: '.temperature >= -40 and .device != null'}
//! handler: {name: map, expr: '{id: .order, total: (.amount * 1.2)}'}
//! handler:
//!   name: route
//!   routes:
//!     - {when: '.amount > 100', to: big}
//!     - {when: '.country == "DE"', to: de}
//!   default: small
//! ```
//!
//! # Why jq (through jaq)
//!
//! The candidates were VRL (the `vrl` crate, Vector's remap language), jq
//! (the `jaq` crates) and CEL (the `cel` crate). Clean debug builds of a
//! scratch crate on this project's 2-core machine, measured while another
//! build shared it (so read them as ratios):
//!
//! | dependencies | crates in the tree | clean build | added |
//! | --- | --- | --- | --- |
//! | `serde_json` alone | 14 | 6.8 s | |
//! | jaq-core 3.1 + jaq-std 3.0 + jaq-json 2.0 | 36 | 16.0 s | **+9 s** |
//! | cel 0.15 (`json`, no default features) | 37 | 34.3 s | +28 s |
//! | vrl 0.38, compiler only (no functions at all) | 141 | 126 s | +119 s |
//! | vrl 0.38, compiler + `stdlib-base` | 271 | 190 s | +183 s |
//!
//! (A release build of the jaq scratch crate: 28.9 s against 10.5 s, +18 s.)
//!
//! - jq is the JSON language most engineers already know (`.a.b`,
//!   `select`, `map`, `//`, string interpolation); a pipeline author can try
//!   an expression with `jq` or `jaq` on a sample event first.
//! - jaq is small, `forbid(unsafe_code)`, MIT-licensed and released as
//!   separate core / standard library / JSON crates; its parser hands back
//!   the exact text of the offending token, so a compile error points at a
//!   line and column inside the expression. Per-event cost: see
//!   `benches/handlers.rs`.
//! - jq yields a stream of values, which is exactly "zero, one or several
//!   outputs" for `map`.
//! - VRL is made for events and has very good diagnostics, but it is heavy
//!   (2–3 minutes more of a from-scratch CI build), needs Rust 1.95 (this
//!   workspace declares 1.89) and is MPL-2.0. CEL is typed and familiar
//!   from Kubernetes, but it is a condition language: reshaping an event
//!   (the `map` case) is awkward and it cannot yield several values.
//!
//! # Semantics
//!
//! - Payloads are parsed as strict JSON (by `serde_json`, at most 128
//!   levels deep). A payload that is not JSON is a permanent
//!   [`HandlerError`](super::HandlerError) (the event is dead-lettered with
//!   the parse error), never retried.
//! - A condition (`filter`'s `expr`, a route's `when`) holds when its
//!   **first** result is truthy — anything but `false` and `null`, as jq's
//!   `select` reads it. A condition that yields nothing does not hold.
//! - `map` turns each result into one output whose payload is the result
//!   written as compact JSON; key, headers and timestamp are the event's.
//!   `empty` yields no output, and so does a `null` result (so
//!   `if .ok then {...} else null end` drops the event). At most
//!   [`MAX_RESULTS`] outputs per event.
//! - Comparisons follow jq's order of all values (`null < false < true <
//!   numbers < strings < arrays < objects`), so `"7" > 100` holds: check
//!   `type` where the data may hold a string for a number.
//! - Numbers are written as jaq writes them: a computed float keeps its
//!   fraction (`119.0`), an integer from the payload stays `119`.
//! - A runtime error (`"a" + 1`, `error("…")`, `halt`) is a permanent
//!   handler error whose message is jq's, shortened to [`MAX_MESSAGE`]
//!   characters: the event goes to the dead letter with it.
//! - Expressions compile when the file loads; a syntax error or an unknown
//!   function or variable is a validation error at the line and column of
//!   the offending text inside the expression (see [`place`] for how that
//!   place is found in the YAML).
//! - `env` and `$ENV` are not available: an expression cannot read the
//!   process environment (where secrets live). `${VAR}` in the pipeline
//!   file is interpolated before the expression compiles, like any value.
//! - An expression runs to its end on the handler's task: one that never
//!   ends (`repeat(.)` with no limit) is not stopped by the retry timeout,
//!   and a recursive `def` that never stops overflows the stack. Pipeline
//!   files are trusted configuration; event data cannot cause either.

mod handlers;
pub mod place;

use std::fmt;

use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{compile, data, Ctx, Vars};
use jaq_json::Val;

pub(crate) use handlers::configure_filter;
pub use handlers::{MapBuiltin, RouteBuiltin};

/// Most outputs one `map` evaluation may produce; more is a runtime error.
pub const MAX_RESULTS: usize = 10_000;

/// Longest runtime error message kept (in characters); longer ones are cut.
pub const MAX_MESSAGE: usize = 500;

/// Natives left out of the language: they read the process environment.
const HIDDEN: &[&str] = &["env"];

/// jq keywords that jaq reads as a call to an unknown function when they
/// stand where a value should (`.a and and .b`).
const KEYWORDS: &[&str] = &[
    "and", "or", "then", "elif", "else", "end", "as", "catch", "import", "include",
];

type Data = data::JustLut<Val>;

/// A compiled jq expression.
pub struct Expr {
    source: String,
    filter: jaq_core::Filter<Data>,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expr").field(&self.source).finish()
    }
}

/// One problem found while compiling an expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    /// Byte offset of the offending text in the expression.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub hint: Option<String>,
}

/// Why running an expression failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The payload is not JSON.
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    /// jq raised an error (a type error, `error(...)`).
    #[error("{0}")]
    Failed(String),
    /// The expression called `halt` / `halt_error`.
    #[error("the expression called halt (exit code {0})")]
    Halted(i32),
    /// `map` produced more than [`MAX_RESULTS`] values.
    #[error("the expression yielded more than {MAX_RESULTS} results")]
    TooManyResults,
}

/// Parses a payload as one JSON value.
///
/// Through `serde_json` rather than `jaq-json`'s own reader: that one
/// accepts more than JSON (`NaN`, non-string keys, byte strings) and has no
/// nesting limit, so a payload of a million `[` would overflow the stack;
/// `serde_json` is strict and stops at 128 levels.
pub(crate) fn parse_json(payload: &[u8]) -> Result<Val, EvalError> {
    serde_json::from_slice(payload).map_err(|e| EvalError::NotJson(e.to_string()))
}

/// The byte offset of `part` in `whole`, if `part` is a slice of it.
fn offset_in(whole: &str, part: &str) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (start + part.len() <= whole.len()).then_some(start)
}

/// `text` for a message: the first line, at most 24 characters.
fn shown(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    let mut out: String = line.chars().take(24).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

impl Expr {
    /// Compiles `source`; every problem comes with its place in `source`.
    pub fn compile(source: &str) -> Result<Self, Vec<CompileError>> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader
            .load(
                &arena,
                File {
                    code: source,
                    path: (),
                },
            )
            .map_err(|errors| {
                errors
                    .into_iter()
                    .flat_map(|(_, error)| load_errors(source, error))
                    .collect::<Vec<_>>()
            })?;
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs())
            .filter(|(name, _, _)| !HIDDEN.contains(name));
        let filter = jaq_core::Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errors| {
                errors
                    .into_iter()
                    .flat_map(|(_, errors)| errors)
                    .map(|(name, undefined)| undefined_error(source, name, &undefined))
                    .collect::<Vec<_>>()
            })?;
        Ok(Self {
            source: source.to_owned(),
            filter,
        })
    }

    /// The expression as written (after `${VAR}` interpolation).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Runs the expression on `input`, calling `each` with every result
    /// until it returns `false` or the results end.
    fn run(&self, input: Val, mut each: impl FnMut(Val) -> bool) -> Result<(), EvalError> {
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([]));
        for result in self.filter.id.run((ctx, input)) {
            match result {
                Ok(value) => {
                    if !each(value) {
                        break;
                    }
                }
                Err(exception) => {
                    return Err(match exception.get_err() {
                        Ok(error) => EvalError::Failed(cut(error_text(error))),
                        Err(other) => EvalError::Halted(other.get_halt().unwrap_or(-1)),
                    })
                }
            }
        }
        Ok(())
    }

    /// Whether the first result is truthy (not `false`, not `null`); an
    /// expression with no result does not hold.
    pub(crate) fn holds(&self, input: Val) -> Result<bool, EvalError> {
        let mut holds = false;
        self.run(input, |value| {
            holds = jaq_core::ValT::as_bool(&value);
            false
        })?;
        Ok(holds)
    }

    /// Every result but `null`s, each as compact JSON.
    pub(crate) fn json_results(&self, input: Val) -> Result<Vec<Vec<u8>>, EvalError> {
        let mut results = Vec::new();
        let mut too_many = false;
        self.run(input, |value| {
            if matches!(value, Val::Null) {
                return true;
            }
            if results.len() == MAX_RESULTS {
                too_many = true;
                return false;
            }
            results.push(value.to_string().into_bytes());
            true
        })?;
        if too_many {
            return Err(EvalError::TooManyResults);
        }
        Ok(results)
    }
}

/// The text of a runtime error: a string given to `error` as it is, any
/// other value as JSON.
fn error_text(error: jaq_core::Error<Val>) -> String {
    match error.into_val() {
        Val::TStr(text) => String::from_utf8_lossy(&text).into_owned(),
        other => other.to_string(),
    }
}

/// Cuts a runtime message to [`MAX_MESSAGE`] characters.
fn cut(message: String) -> String {
    match message.char_indices().nth(MAX_MESSAGE) {
        Some((end, _)) => format!("{}…", &message[..end]),
        None => message,
    }
}

fn load_errors(source: &str, error: load::Error<&str>) -> Vec<CompileError> {
    let at = |part: &str| offset_in(source, part).unwrap_or(0);
    match error {
        load::Error::Io(problems) => problems
            .into_iter()
            .map(|(path, message)| CompileError {
                offset: at(path),
                message: format!("cannot load module `{path}`: {message}"),
                hint: Some("pipeline expressions cannot import modules".to_owned()),
            })
            .collect(),
        load::Error::Lex(problems) => problems
            .into_iter()
            .map(|(expected, found)| lex_error(source, &expected, found))
            .collect(),
        // The first parse error is the cause; later ones follow from it.
        load::Error::Parse(problems) => problems
            .into_iter()
            .take(1)
            .map(|(expected, found)| {
                let expected = expected.as_str();
                if found.is_empty() {
                    CompileError {
                        offset: at(found),
                        message: format!("the expression ends early: expected {expected}"),
                        hint: None,
                    }
                } else {
                    CompileError {
                        offset: at(found),
                        message: format!("expected {expected}, found `{}`", shown(found)),
                        hint: None,
                    }
                }
            })
            .collect(),
    }
}

fn lex_error(source: &str, expected: &load::lex::Expect<&str>, found: &str) -> CompileError {
    use load::lex::Expect;
    // An unclosed delimiter is reported at its opening, the rest where
    // lexing stopped.
    let at = match expected {
        Expect::Delim(open) => open,
        _ => found,
    };
    let offset = offset_in(source, at).unwrap_or(0);
    let (message, hint) = match expected {
        Expect::Delim(open) => {
            let close = match *open {
                "(" => ")",
                "[" => "]",
                "{" => "}",
                _ => "\"",
            };
            (
                format!("`{open}` is never closed"),
                Some(format!("close it with `{close}`")),
            )
        }
        Expect::Token => (
            format!(
                "unexpected character `{}`",
                found.chars().next().unwrap_or(' ')
            ),
            None,
        ),
        Expect::Escape => (
            "unknown escape in a string".to_owned(),
            Some(r#"jq strings know `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`, `\uXXXX` and `\(...)`"#.to_owned()),
        ),
        other => (format!("expected {}", other_lex(other)), None),
    };
    CompileError {
        offset,
        message,
        hint,
    }
}

fn other_lex(expected: &load::lex::Expect<&str>) -> &'static str {
    use load::lex::Expect;
    match expected {
        Expect::Digit => "a digit",
        Expect::Ident => "a name",
        Expect::Unicode => "4 hexadecimal digits after `\\u`",
        _ => "something else",
    }
}

fn undefined_error(source: &str, name: &str, undefined: &compile::Undefined) -> CompileError {
    let offset = offset_in(source, name).unwrap_or(0);
    let (message, hint) = match undefined {
        compile::Undefined::Filter(0) if KEYWORDS.contains(&name) => (
            format!("unexpected keyword `{name}`"),
            Some(format!("a value must stand before `{name}`; check the expression up to here")),
        ),
        compile::Undefined::Filter(arity) => {
            let message = format!("unknown function `{name}/{arity}`");
            let hint = if HIDDEN.contains(&name) {
                Some(
                    "expressions cannot read the environment; write `${VAR}` in the pipeline file instead"
                        .to_owned(),
                )
            } else {
                let names = known_functions();
                spate_connector::config::did_you_mean(name, names.iter().copied())
                    .map(|best| format!("did you mean `{best}`?"))
            };
            (message, hint)
        }
        compile::Undefined::Var if name == "$ENV" => (
            "unknown variable `$ENV`".to_owned(),
            Some(
                "expressions cannot read the environment; write `${VAR}` in the pipeline file instead"
                    .to_owned(),
            ),
        ),
        compile::Undefined::Var => (
            format!("unknown variable `{name}`"),
            Some(format!("bind it first: `<value> as {name} | ...`")),
        ),
        other => (format!("unknown {} `{name}`", other.as_str()), None),
    };
    CompileError {
        offset,
        message,
        hint,
    }
}

/// Names of the functions an expression can call, for "did you mean".
fn known_functions() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs())
        .map(|def| def.name)
        .chain(
            jaq_core::funs::<Data>()
                .chain(jaq_std::funs())
                .chain(jaq_json::funs())
                .map(|(name, _, _)| name),
        )
        .filter(|name| !name.starts_with('_') && !HIDDEN.contains(name))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(source: &str) -> Expr {
        Expr::compile(source).unwrap_or_else(|e| panic!("{source:?}: {e:?}"))
    }

    fn json(text: &str) -> Val {
        parse_json(text.as_bytes()).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn conditions_read_the_first_result_as_jq_truthiness() {
        let event = json(r#"{"amount": 150, "country": "DE", "tags": []}"#);
        for (source, expected) in [
            (".amount > 100", true),
            (".amount > 200", false),
            (".country", true),
            (".missing", false),
            (".tags", true),
            ("empty", false),
            ("false, true", false),
        ] {
            assert_eq!(
                compile(source).holds(event.clone()),
                Ok(expected),
                "{source}"
            );
        }
    }

    #[test]
    fn results_are_compact_json_and_nulls_are_skipped() {
        let results = compile("{id: .order, total: (.amount * 2)}, null, empty, \"x\"")
            .json_results(json(r#"{"order": "o-1", "amount": 21}"#));
        let results: Vec<String> = results
            .unwrap_or_default()
            .into_iter()
            .map(|r| String::from_utf8_lossy(&r).into_owned())
            .collect();
        assert_eq!(results, vec![r#"{"id":"o-1","total":42}"#, r#""x""#]);
    }

    #[test]
    fn runtime_errors_halts_and_floods_are_errors() {
        let event = json(r#"{"name": "a"}"#);
        assert_eq!(
            compile(".name + 1").holds(event.clone()),
            Err(EvalError::Failed("cannot calculate \"a\" + 1".to_owned()))
        );
        assert_eq!(
            compile("halt_error(3)").holds(event.clone()),
            Err(EvalError::Halted(3))
        );
        assert_eq!(
            compile("range(20000)").json_results(event),
            Err(EvalError::TooManyResults)
        );
    }

    #[test]
    fn compile_errors_point_at_the_offending_text() {
        let errors = |source: &str| match Expr::compile(source) {
            Ok(_) => panic!("{source:?} compiled"),
            Err(errors) => errors
                .into_iter()
                .map(|e| (e.offset, e.message))
                .collect::<Vec<_>>(),
        };
        assert_eq!(
            errors(".a > > 1"),
            vec![(5, "expected term, found `>`".to_owned())]
        );
        assert_eq!(
            errors(".amount >"),
            vec![(9, "the expression ends early: expected term".to_owned())]
        );
        assert_eq!(
            errors("{id: .order"),
            vec![(0, "`{` is never closed".to_owned())]
        );
        assert_eq!(
            errors(".a | selct(. > 1)"),
            vec![(5, "unknown function `selct/1`".to_owned())]
        );
        assert_eq!(
            errors("$x + 1"),
            vec![(0, "unknown variable `$x`".to_owned())]
        );
        assert_eq!(
            errors("env"),
            vec![(0, "unknown function `env/0`".to_owned())]
        );
        assert_eq!(
            errors(".a and and .b"),
            vec![(7, "unexpected keyword `and`".to_owned())]
        );
    }

    #[test]
    fn not_json_is_reported_with_the_parser_message() {
        assert!(matches!(
            parse_json(b"temperature=21"),
            Err(EvalError::NotJson(_))
        ));
        assert!(matches!(
            parse_json(b"{\"a\": 1} {}"),
            Err(EvalError::NotJson(_))
        ));
        assert!(matches!(parse_json(b"{1: 2}"), Err(EvalError::NotJson(_))));
        assert!(matches!(parse_json(b"NaN"), Err(EvalError::NotJson(_))));
        let deep = "[".repeat(1_000_000);
        assert_eq!(
            parse_json(deep.as_bytes()),
            Err(EvalError::NotJson(
                "recursion limit exceeded at line 1 column 128".to_owned()
            ))
        );
    }
}
