//! Environment interpolation in pipeline-file values.
//!
//! In a scalar *value* (never a key):
//!
//! - `${VAR}` is replaced by the variable's value; an unset variable is an
//!   error.
//! - `${VAR:-default}` is replaced by the variable's value, or by `default`
//!   when the variable is unset or empty.
//! - a default may itself hold references: `${A:-${B:-x}}` is `A`, else
//!   `B`, else `x`; a default is only interpolated when it is used, and
//!   defaults nest at most [`MAX_DEFAULT_DEPTH`] deep (deeper is an error);
//! - `$${` is a literal `${`; any other `$` is kept as written.
//!
//! Variable names are letters, digits and `_`, not starting with a digit.
//! The lookup goes through [`Environment`], so tests (and embedders) decide
//! what the environment is. Every value taken from the environment is
//! reported back in [`Expanded::from_env`], so whoever prints messages can
//! keep secrets out of them.

/// Where `${VAR}` values come from.
pub trait Environment {
    /// The value of `name`, or `None` if it is not set.
    fn var(&self, name: &str) -> Option<String>;
}

impl<F> Environment for F
where
    F: Fn(&str) -> Option<String>,
{
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// The environment of this process. A variable whose value is not valid
/// UTF-8 counts as unset.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// A value after interpolation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expanded {
    /// The interpolated text.
    pub text: String,
    /// `(name, value)` of every variable whose value was inserted.
    pub from_env: Vec<(String, String)>,
    /// What could not be interpolated; such references are kept as written.
    pub problems: Vec<Problem>,
}

/// Why a reference could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// `${VAR}` with `VAR` unset and no default.
    Unset(String),
    /// `${` with no closing `}`.
    Unclosed,
    /// `${...}` whose inside is not a variable name (with an optional
    /// `:-default`).
    BadReference(String),
    /// Defaults nested deeper than [`MAX_DEFAULT_DEPTH`].
    TooDeep,
}

impl Problem {
    /// The message and hint for a pipeline-file error.
    pub fn describe(&self) -> (String, String) {
        match self {
            Self::Unset(name) => (
                format!("environment variable `{name}` is not set"),
                format!("set it, or give a default: `${{{name}:-value}}`"),
            ),
            Self::Unclosed => (
                "unclosed `${` in this value".to_owned(),
                "close it with `}`, or write `$${` for a literal `${`".to_owned(),
            ),
            Self::BadReference(inside) => (
                format!("`${{{inside}}}` is not an environment variable reference"),
                "write `${NAME}` or `${NAME:-default}` (letters, digits and `_`), or `$${` for a literal `${`"
                    .to_owned(),
            ),
            Self::TooDeep => (
                format!("defaults are nested more than {MAX_DEFAULT_DEPTH} deep in this value"),
                "nest fewer `${A:-${B:-...}}` defaults".to_owned(),
            ),
        }
    }
}

/// Deepest nesting of defaults in defaults (`${A:-${B:-x}}` is 2 deep).
pub const MAX_DEFAULT_DEPTH: usize = 8;

/// Interpolates `${...}` references in `text`.
pub fn expand(text: &str, env: &dyn Environment) -> Expanded {
    let mut out = Expanded {
        text: String::with_capacity(text.len()),
        ..Expanded::default()
    };
    expand_into(text, env, 1, &mut out);
    out
}

/// Appends `text`, interpolated, to `out`; `depth` counts the defaults this
/// text is nested in (1 for a value itself).
fn expand_into(text: &str, env: &dyn Environment, depth: usize, out: &mut Expanded) {
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.text.push_str(&rest[..dollar]);
        let at = &rest[dollar..];
        if let Some(after) = at.strip_prefix("$${") {
            out.text.push_str("${");
            rest = after;
            continue;
        }
        let Some(reference) = at.strip_prefix("${") else {
            out.text.push('$');
            rest = &at[1..];
            continue;
        };
        let Some(close) = matching_brace(reference) else {
            out.problems.push(Problem::Unclosed);
            out.text.push_str(at);
            return;
        };
        let inside = &reference[..close];
        let written = &at[..close + 3];
        rest = &reference[close + 1..];
        let (name, default) = match inside.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inside, None),
        };
        if !is_variable_name(name) {
            out.problems.push(Problem::BadReference(inside.to_owned()));
            out.text.push_str(written);
            continue;
        }
        // An empty value counts as unset when there is a default.
        let value = env
            .var(name)
            .filter(|value| !(value.is_empty() && default.is_some()));
        match (value, default) {
            (Some(value), _) => {
                out.text.push_str(&value);
                out.from_env.push((name.to_owned(), value));
            }
            (None, Some(default)) if depth >= MAX_DEFAULT_DEPTH && default.contains("${") => {
                out.problems.push(Problem::TooDeep);
                out.text.push_str(written);
            }
            (None, Some(default)) => expand_into(default, env, depth + 1, out),
            (None, None) => {
                out.problems.push(Problem::Unset(name.to_owned()));
                out.text.push_str(written);
            }
        }
    }
    out.text.push_str(rest);
}

/// The index in `reference` (the text after a `${`) of the `}` that closes
/// it, skipping `${...}` nested in a default and `$${` escapes.
fn matching_brace(reference: &str) -> Option<usize> {
    let bytes = reference.as_bytes();
    let mut open = 1usize;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"$${") {
            i += 3;
            continue;
        }
        if bytes[i..].starts_with(b"${") {
            open += 1;
            i += 2;
            continue;
        }
        if bytes[i] == b'}' {
            open -= 1;
            if open == 0 {
                return Some(i);
            }
        }
        i += 1;
    }
    None
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("broker-1".to_owned()),
            "EMPTY" => Some(String::new()),
            "TOKEN" => Some("s3cr3t-t0ken".to_owned()),
            _ => None,
        }
    }

    #[test]
    fn references_defaults_and_escapes() {
        let out = expand("${HOST}:9092", &env);
        assert_eq!(out.text, "broker-1:9092");
        assert_eq!(
            out.from_env,
            vec![("HOST".to_owned(), "broker-1".to_owned())]
        );
        assert_eq!(expand("${PORT:-9092}", &env).text, "9092");
        assert_eq!(expand("${EMPTY:-fallback}", &env).text, "fallback");
        assert_eq!(expand("${EMPTY}", &env).text, "");
        assert_eq!(expand("${HOST:-x}", &env).text, "broker-1");
        assert_eq!(
            expand("cost $5 and $${HOST} and $$", &env).text,
            "cost $5 and ${HOST} and $$"
        );
        assert_eq!(expand("${X:-a:-b}", &env).text, "a:-b");
        assert!(expand("plain text", &env).from_env.is_empty());
    }

    #[test]
    fn nested_defaults_take_the_first_variable_that_is_set() {
        assert_eq!(expand("${A:-${HOST:-x}}", &env).text, "broker-1");
        assert_eq!(expand("${A:-${B:-x}}", &env).text, "x");
        assert_eq!(expand("${HOST:-${B:-x}}", &env).text, "broker-1");
        assert_eq!(
            expand("${A:-${EMPTY:-${B:-deep}}}:9092", &env).text,
            "deep:9092"
        );
        assert_eq!(
            expand("${A:-pre-${HOST}-post}", &env).text,
            "pre-broker-1-post"
        );
        assert_eq!(expand("${A:-$${B}}", &env).text, "${B}");
        let unset = expand("${A:-${B}}", &env);
        assert_eq!(unset.problems, vec![Problem::Unset("B".to_owned())]);
        assert_eq!(unset.text, "${B}");
        assert!(
            expand("${HOST:-${B}}", &env).problems.is_empty(),
            "a default that is not used is not interpolated"
        );
    }

    #[test]
    fn defaults_nested_too_deep_are_a_problem_not_a_stack_overflow() {
        let nest = |depth: usize| {
            let mut text = "x".to_owned();
            for i in 0..depth {
                text = format!("${{V{i}:-{text}}}");
            }
            text
        };
        assert_eq!(expand(&nest(MAX_DEFAULT_DEPTH), &env).text, "x");
        let deep = expand(&nest(MAX_DEFAULT_DEPTH + 1), &env);
        assert_eq!(deep.problems, vec![Problem::TooDeep]);
        let huge = expand(&nest(100_000), &env);
        assert_eq!(huge.problems, vec![Problem::TooDeep]);
    }

    #[test]
    fn every_problem_is_reported_and_the_reference_kept_as_written() {
        let out = expand("${NOPE}/${HOST}/${1BAD}/${", &env);
        assert_eq!(out.text, "${NOPE}/broker-1/${1BAD}/${");
        assert_eq!(
            out.problems,
            vec![
                Problem::Unset("NOPE".to_owned()),
                Problem::BadReference("1BAD".to_owned()),
                Problem::Unclosed,
            ]
        );
        assert_eq!(
            expand("${}", &env).problems,
            vec![Problem::BadReference(String::new())]
        );
        let (message, hint) = Problem::Unset("NOPE".to_owned()).describe();
        assert_eq!(message, "environment variable `NOPE` is not set");
        assert_eq!(hint, "set it, or give a default: `${NOPE:-value}`");
    }
}
