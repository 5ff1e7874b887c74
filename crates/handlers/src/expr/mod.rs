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
//!   process environment (where secrets live). Values from the environment
//!   reach an expression as jq variables: `vars: {dev: '${DEVICE}'}` next to
//!   the expression binds `$dev` to that string. The text of an expression
//!   is never interpolated (the loader keeps `expr` and `when` values as
//!   written), and a `${…}` in it is a validation error at its place whose
//!   hint shows the `vars:` form: spliced text could rewrite the code
//!   (`.device == "${DEV}"` with a crafted `DEV` turned into `true`).
//!
//! # Bounds
//!
//! However an expression and a payload combine, one evaluation is bounded
//! in stack, memory and time:
//!
//! - At load: an expression is at most [`MAX_EXPR_BYTES`] long, nests at
//!   most [`MAX_NESTING`] brackets/strings (checked before parsing) and
//!   [`MAX_DEPTH`] levels of parse tree; beyond is a validation error at
//!   the offending text. Parsing and compiling run on a thread with a stack
//!   large enough for any input up to the length limit, so `validate`,
//!   `run` and `test` behave the same on any thread.
//! - Expressions that [`bounded`]'s static analysis proves linear in the
//!   event run inline, on the handler's task (the common, cheap case).
//! - All others run in the [`sandbox`]: forked child processes whose stack
//!   overflow, allocation failure or endless loop ends that child only.
//!   The handler's `limits: {time, memory}` bound each evaluation (defaults
//!   and ranges in [`limits`]). Exceeding stack or memory is a permanent
//!   error with reason `resource-limit`, exceeding the time one with reason
//!   `timeout`: the event is dead-lettered at once with the words, and the
//!   process, its other events and functions go on.

pub mod bounded;
mod diagnostics;
mod handlers;
pub mod limits;
pub mod place;
pub mod sandbox;

use std::fmt;
use std::time::Duration;

use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{data, Ctx, Vars};
use jaq_json::Val;

pub use bounded::{MAX_INLINE_DEPTH, MAX_INLINE_NODES, MAX_INLINE_WEIGHT};
use diagnostics::{load_errors, undefined_error};
pub(crate) use handlers::configure_filter;
pub use handlers::{MapBuiltin, RouteBuiltin, REASON_RESOURCE_LIMIT, REASON_TIMEOUT};
pub use limits::Limits;

/// Most outputs one `map` evaluation may produce; more is a runtime error.
pub const MAX_RESULTS: usize = 10_000;

/// Longest runtime error message kept (in characters); longer ones are cut.
pub const MAX_MESSAGE: usize = 500;

/// Longest expression accepted, in bytes.
pub const MAX_EXPR_BYTES: usize = 16 * 1024;

/// Deepest nesting of brackets, braces, parentheses and strings accepted.
pub const MAX_NESTING: usize = 128;

/// Deepest parse tree accepted (`- - - 1`, `if … if`, long `|` chains).
pub const MAX_DEPTH: usize = 256;

/// The stack of the thread that parses and compiles an expression: enough
/// for any input up to [`MAX_EXPR_BYTES`] (reserved, committed as used).
const COMPILE_STACK: usize = 256 << 20;

/// Natives left out of the language: they read the process environment.
const HIDDEN: &[&str] = &["env"];

/// jq keywords that jaq reads as a call to an unknown function when they
/// stand where a value should (`.a and and .b`).
const KEYWORDS: &[&str] = &[
    "and", "or", "then", "elif", "else", "end", "as", "catch", "import", "include",
];

type Data = data::JustLut<Val>;

/// What an evaluation is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Whether the first result is truthy (`filter`, a route's `when`).
    Holds,
    /// Every non-null result as compact JSON (`map`).
    Results,
}

/// What an evaluation gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The answer to [`Mode::Holds`].
    Holds(bool),
    /// The answer to [`Mode::Results`].
    Results(Vec<Vec<u8>>),
}

/// A compiled jq expression.
pub struct Expr {
    source: String,
    vars: Vec<(String, String)>,
    filter: jaq_core::Filter<Data>,
    inline: bool,
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
    /// The evaluation exceeded its stack or memory and its sandbox process
    /// died; the words say which.
    #[error("{0}")]
    ResourceLimit(String),
    /// The evaluation took longer than its time limit and was killed.
    #[error("the evaluation took longer than {0:?} and was stopped")]
    Timeout(Duration),
    /// The sandbox could not run the evaluation (no process could be made).
    #[error("the expression sandbox is unavailable: {0}")]
    Unavailable(String),
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

fn error_at(offset: usize, message: String, hint: Option<&str>) -> Vec<CompileError> {
    vec![CompileError {
        offset,
        message,
        hint: hint.map(str::to_owned),
    }]
}

/// The offset of the first bracket, brace, parenthesis or string that
/// opens more than [`MAX_NESTING`] levels deep (strings and their `\(…)`
/// count as levels; `#` comments are skipped).
fn too_nested(source: &str) -> Option<usize> {
    #[derive(PartialEq)]
    enum Level {
        Code,
        Str,
    }
    let mut stack: Vec<Level> = Vec::new();
    let mut chars = source.char_indices();
    while let Some((at, c)) = chars.next() {
        let in_string = stack.last() == Some(&Level::Str);
        let opens = match (in_string, c) {
            (false, '"') => Some(Level::Str),
            (false, '(' | '[' | '{') => Some(Level::Code),
            (false, ')' | ']' | '}') | (true, '"') => {
                stack.pop();
                None
            }
            (false, '#') => {
                chars.by_ref().find(|(_, c)| *c == '\n');
                None
            }
            (true, '\\') => match chars.next() {
                Some((_, '(')) => Some(Level::Code),
                _ => None,
            },
            _ => None,
        };
        if let Some(level) = opens {
            stack.push(level);
            if stack.len() > MAX_NESTING {
                return Some(at);
            }
        }
    }
    None
}

impl Expr {
    /// Compiles `source`; every problem comes with its place in `source`.
    pub fn compile(source: &str) -> Result<Self, Vec<CompileError>> {
        Self::compile_with_vars(source, &[])
    }

    /// Compiles `source` with `vars` bound as `$name` (name without `$`,
    /// value as JSON text). Longer than [`MAX_EXPR_BYTES`], nested deeper
    /// than [`MAX_NESTING`] or [`MAX_DEPTH`] is an error; parsing and
    /// compiling run on a thread whose stack holds any shorter input.
    pub fn compile_with_vars(
        source: &str,
        vars: &[(String, String)],
    ) -> Result<Self, Vec<CompileError>> {
        if source.len() > MAX_EXPR_BYTES {
            return Err(error_at(
                MAX_EXPR_BYTES.min(source.len()),
                format!(
                    "the expression is {} bytes long, longer than {MAX_EXPR_BYTES}",
                    source.len()
                ),
                Some("split the work over several functions, or shorten it"),
            ));
        }
        if let Some(offset) = too_nested(source) {
            return Err(error_at(
                offset,
                format!("the expression nests deeper than {MAX_NESTING} levels here"),
                Some("flatten the expression"),
            ));
        }
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("spate-expr-compile".to_owned())
                .stack_size(COMPILE_STACK)
                .spawn_scoped(scope, || Self::compile_here(source, vars))
                .map_err(|e| error_at(0, format!("cannot start the compiler thread: {e}"), None))?
                .join()
                .unwrap_or_else(|_| Err(error_at(0, "the jq compiler failed".to_owned(), None)))
        })
    }

    /// Compiles on the calling thread: for sources already checked by
    /// [`Expr::compile_with_vars`] (the sandbox child recompiles them).
    pub(crate) fn compile_here(
        source: &str,
        vars: &[(String, String)],
    ) -> Result<Self, Vec<CompileError>> {
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
        let inline = match load::parse(source, |p| p.term()) {
            Some(term) => {
                if let Some(deep) = bounded::too_deep(&term, MAX_DEPTH) {
                    let offset = bounded::text_in(deep)
                        .and_then(|text| offset_in(source, text))
                        .unwrap_or(0);
                    return Err(error_at(
                        offset,
                        format!("the expression nests deeper than {MAX_DEPTH} levels here"),
                        Some("flatten the expression"),
                    ));
                }
                bounded::is_bounded(&term)
            }
            None => false,
        };
        let names: Vec<String> = vars.iter().map(|(name, _)| format!("${name}")).collect();
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs())
            .filter(|(name, _, _)| !HIDDEN.contains(name));
        let filter = jaq_core::Compiler::default()
            .with_funs(funs)
            .with_global_vars(names.iter().map(String::as_str))
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
            vars: vars.to_vec(),
            filter,
            inline,
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the expression was proven bounded and so runs inline, on
    /// the caller's thread; otherwise it runs in the [`sandbox`].
    pub fn is_inline(&self) -> bool {
        self.inline
    }

    /// Evaluates on `payload`: inline when the expression is proven
    /// bounded, else in the sandbox within `limits`.
    pub async fn evaluate(
        &self,
        payload: &[u8],
        mode: Mode,
        limits: &Limits,
    ) -> Result<Outcome, EvalError> {
        if self.inline {
            return self.evaluate_inline(payload, mode);
        }
        self.evaluate_sandboxed(payload, mode, limits).await
    }

    /// Evaluates in the sandbox, whatever the expression.
    pub async fn evaluate_sandboxed(
        &self,
        payload: &[u8],
        mode: Mode,
        limits: &Limits,
    ) -> Result<Outcome, EvalError> {
        let request = sandbox::Request {
            source: self.source.clone(),
            vars: self.vars.clone(),
            mode,
            payload: payload.to_vec(),
            memory: limits.memory,
        };
        sandbox::evaluate(request, limits.time).await
    }

    /// Evaluates on the calling thread, unbounded: only for expressions
    /// proven bounded, or inside a sandbox child.
    pub fn evaluate_inline(&self, payload: &[u8], mode: Mode) -> Result<Outcome, EvalError> {
        let input = parse_json(payload)?;
        match mode {
            Mode::Holds => self.holds(input).map(Outcome::Holds),
            Mode::Results => self.json_results(input).map(Outcome::Results),
        }
    }

    /// Runs the expression on `input`, calling `each` with every result
    /// until it returns `false` or the results end.
    fn run(&self, input: Val, mut each: impl FnMut(Val) -> bool) -> Result<(), EvalError> {
        let vars = self
            .vars
            .iter()
            .map(|(_, json)| serde_json::from_str::<Val>(json).unwrap_or(Val::Null));
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new(vars));
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

#[cfg(test)]
mod tests;
