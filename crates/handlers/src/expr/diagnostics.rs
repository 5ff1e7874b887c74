//! Compile errors as a pipeline author reads them: jaq's lexer, parser and
//! compiler problems turned into [`CompileError`]s with the byte offset of
//! the offending text, a message and, where useful, a hint.

use jaq_core::compile;
use jaq_core::load;

use super::{offset_in, shown, CompileError, Data, HIDDEN, KEYWORDS};

pub(super) fn load_errors(source: &str, error: load::Error<&str>) -> Vec<CompileError> {
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

pub(super) fn undefined_error(
    source: &str,
    name: &str,
    undefined: &compile::Undefined,
) -> CompileError {
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
                    "expressions cannot read the environment; bind a value with `vars: {name: '${VAR}'}` and write `$name`"
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
                "expressions cannot read the environment; bind a value with `vars: {name: '${VAR}'}` and write `$name`"
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
