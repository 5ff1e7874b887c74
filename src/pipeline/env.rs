//! Environment interpolation in pipeline-file values.
//!
//! In a scalar *value* (never a key):
//!
//! - `${VAR}` is replaced by the variable's value; an unset variable is an
//!   error.
//! - `${VAR:-default}` is replaced by the variable's value, or by `default`
//!   when the variable is unset or empty.
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
        }
    }
}

/// Interpolates `${...}` references in `text`.
pub fn expand(text: &str, env: &dyn Environment) -> Expanded {
    let mut out = Expanded {
        text: String::with_capacity(text.len()),
        ..Expanded::default()
    };
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
        let Some(close) = reference.find('}') else {
            out.problems.push(Problem::Unclosed);
            out.text.push_str(at);
            rest = "";
            break;
        };
        let inside = &reference[..close];
        rest = &reference[close + 1..];
        let (name, default) = match inside.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inside, None),
        };
        if !is_variable_name(name) {
            out.problems.push(Problem::BadReference(inside.to_owned()));
            out.text.push_str(&at[..close + 3]);
            continue;
        }
        match (env.var(name), default) {
            (Some(value), Some(default)) if value.is_empty() => out.text.push_str(default),
            (Some(value), _) => {
                out.text.push_str(&value);
                out.from_env.push((name.to_owned(), value));
            }
            (None, Some(default)) => out.text.push_str(default),
            (None, None) => {
                out.problems.push(Problem::Unset(name.to_owned()));
                out.text.push_str(&at[..close + 3]);
            }
        }
    }
    out.text.push_str(rest);
    out
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
