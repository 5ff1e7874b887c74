//! YAML text to a spanned [`ConfigNode`] tree.
//!
//! Built on `saphyr-parser`'s event stream. Guarantees:
//!
//! - every node and every mapping key carries its 1-based line and column;
//! - a YAML syntax error is one [`ConfigError`] at its place, with a hint;
//! - anchors and aliases are resolved by copying the anchored node (the
//!   copy's outer span is where the alias is used, inner spans where the
//!   values are written), and `<<: *anchor` merges a mapping's keys into
//!   another (keys written explicitly win); what aliases add is bounded by
//!   [`MAX_ALIAS_VALUES`] values and [`MAX_ALIAS_BYTES`] bytes (the error is
//!   at the alias that crosses a bound); values written out in the file are
//!   not counted, so a file without aliases is never refused by them;
//! - a file is at most [`MAX_FILE_BYTES`] long, and nests lists and
//!   mappings at most [`MAX_DEPTH`] deep (so no recursion over the tree can
//!   exhaust the stack);
//! - a key written twice in one mapping is an error (the first one counts);
//! - `${VAR}` / `${VAR:-default}` are interpolated in scalar values, never in
//!   keys nor in the values of `expr` and `when` (jq expressions, which take
//!   values through `vars:`; see `tree::CODE_KEYS`) (see [`super::env`]); an interpolation problem is an error at that
//!   value, and [`Document::finish`] drops the follow-on errors other
//!   readers report at the same place;
//! - an error message never shows a value taken from the environment:
//!   [`Document::finish`] puts back the text as written in the file.
//!
//! A plain `null`, `Null`, `NULL`, `~` or an empty value is
//! [`NodeKind::Null`](spate_connector::NodeKind::Null); quoted, block (`|`, `>`) and `!!str` scalars are
//! marked `quoted` (always strings).

use saphyr_parser::{Event, Marker, Parser, ScanError};
use spate_connector::{ConfigError, ConfigNode, Span};

use super::env::Environment;
use tree::Builder;

mod tree;

/// Most values aliases (`*name`) may add to a file, all aliases together.
pub const MAX_ALIAS_VALUES: usize = 100_000;

/// Most bytes of text (scalars and keys) aliases may add to a file, all
/// aliases together: a short file whose aliases repeat a long value would
/// otherwise take gigabytes.
pub const MAX_ALIAS_BYTES: usize = 4 << 20;

/// Deepest nesting of lists and mappings in a file.
pub const MAX_DEPTH: usize = 128;

/// Largest pipeline file, in bytes.
pub const MAX_FILE_BYTES: usize = 16 << 20;

/// Values taken from the environment at least this long are scrubbed from
/// every message, not only from messages about the value they were put in.
const SECRET_MIN_CHARS: usize = 8;

/// A parsed pipeline file.
#[derive(Debug, Clone)]
pub struct Document {
    /// The tree; [`NodeKind::Null`](spate_connector::NodeKind::Null) at 1:1 for an empty file.
    pub root: ConfigNode,
    problems: Vec<ConfigError>,
    interpolated: Vec<Interpolated>,
    failed: Vec<Span>,
}

/// A scalar value changed by interpolation.
#[derive(Debug, Clone)]
struct Interpolated {
    span: Span,
    written: String,
    text: String,
    from_env: Vec<(String, String)>,
}

impl Document {
    /// Problems found while building the tree (interpolation, duplicate
    /// keys, merges); the tree is usable despite them.
    pub fn problems(&self) -> &[ConfigError] {
        &self.problems
    }

    /// Every problem of the file: this document's, then `later` ones
    /// reported by readers of the tree — minus those at a value whose
    /// interpolation already failed, with environment values replaced by
    /// the text written in the file, sorted by place (stable).
    pub fn finish(&self, later: Vec<ConfigError>) -> Vec<ConfigError> {
        let mut all = self.problems.clone();
        for mut error in later {
            if self.failed.contains(&error.span) {
                continue;
            }
            self.redact(&mut error);
            all.push(error);
        }
        all.sort_by_key(|e| e.span);
        all
    }

    fn redact(&self, error: &mut ConfigError) {
        for value in &self.interpolated {
            if value.from_env.is_empty() {
                continue;
            }
            if value.span == error.span {
                let shown = format!("`{}`", value.text);
                let written = format!("`{}`", value.written);
                replace_in(error, &shown, &written);
            }
            for (name, secret) in &value.from_env {
                if secret.chars().count() >= SECRET_MIN_CHARS {
                    replace_in(error, secret, &format!("${{{name}}}"));
                }
            }
        }
    }
}

fn replace_in(error: &mut ConfigError, from: &str, to: &str) {
    if error.message.contains(from) {
        error.message = error.message.replace(from, to);
    }
    if let Some(hint) = error.hint.as_mut().filter(|h| h.contains(from)) {
        *hint = hint.replace(from, to);
    }
}

/// Parses one YAML document, interpolating `${...}` in values through
/// `env`. A syntax error (or a file that cannot be made into one tree) is
/// the `Err`; every other problem is kept in the [`Document`].
pub fn parse(text: &str, env: &dyn Environment) -> Result<Document, ConfigError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(fatal(
            Span { line: 1, column: 1 },
            &format!(
                "the file is {} bytes long, more than the {} MiB a pipeline file may have",
                text.len(),
                MAX_FILE_BYTES >> 20
            ),
            "split it into several pipeline files",
        ));
    }
    let mut builder = Builder::new(env);
    let mut documents = 0;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| syntax_error(&e))?;
        let at = span_at(span.start);
        match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(fatal(
                        at,
                        "a pipeline file holds one YAML document, and a second one starts here",
                        "remove this `---`, or put the second document in its own file",
                    ));
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                builder.scalar(&value, style, anchor, tag.as_deref(), at)?
            }
            Event::SequenceStart(anchor, _) => builder.open(anchor, at, false)?,
            Event::MappingStart(anchor, _) => builder.open(anchor, at, true)?,
            Event::SequenceEnd | Event::MappingEnd => builder.close()?,
            Event::Alias(id) => builder.alias(id, at)?,
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
    Ok(builder.finish())
}

fn span_at(marker: Marker) -> Span {
    Span {
        line: u32::try_from(marker.line()).unwrap_or(u32::MAX),
        column: u32::try_from(marker.col().saturating_add(1)).unwrap_or(u32::MAX),
    }
}

fn fatal(span: Span, message: &str, hint: &str) -> ConfigError {
    ConfigError {
        span,
        path: String::new(),
        message: message.to_owned(),
        hint: Some(hint.to_owned()),
    }
}

/// One error for a YAML syntax error, with a hint for the usual causes.
fn syntax_error(error: &ScanError) -> ConfigError {
    let info = error.info();
    let hint = if info.contains("tab") {
        "indent with spaces; YAML does not allow tabs for indentation"
    } else if info.contains("mapping values are not allowed") {
        "put a nested mapping on its own, more indented line, or quote a value that contains `: `"
    } else if info.contains("unknown anchor") {
        "define the anchor with `&name` before using it as `*name`"
    } else if info.contains("quoted scalar") {
        "close the quote on the same value, or check the indentation of its continuation lines"
    } else if info.contains("bracket") || info.contains("flow") || info.contains("','") {
        "check that every `[` and `{` is closed once, with `,` between items"
    } else if info.contains("indentation")
        || info.contains("expected key")
        || info.contains("indicator")
    {
        "check the indentation: the keys of one mapping, and the `-` items of one list, start in the same column"
    } else {
        "check the YAML syntax on this line and the one before"
    };
    let message = format!("invalid YAML: {info}");
    fatal(span_at(*error.marker()), &message, hint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spate_connector::NodeKind;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse_ok(text: &str) -> Document {
        match parse(text, &no_env) {
            Ok(document) => document,
            Err(error) => panic!("{text:?} did not parse: {error:?}"),
        }
    }

    /// The error parsing `text` gives; the test fails if it parses.
    fn refused(text: &str) -> ConfigError {
        parse(text, &no_env)
            .err()
            .unwrap_or_else(|| panic!("accepted"))
    }

    /// Asserts that `error` says `part`.
    fn assert_says(error: &ConfigError, part: &str) {
        assert!(error.message.contains(part), "{}", error.message);
    }

    fn at(line: u32, column: u32) -> Span {
        Span { line, column }
    }

    fn text(node: &ConfigNode) -> &str {
        node.as_text().unwrap_or("<not a scalar>")
    }

    #[test]
    fn spans_are_one_based_for_keys_and_values() {
        let doc = parse_ok("functions:\n  - name: \"x\"\n    retry: {timeout: 5s}\n");
        let NodeKind::Map(top) = &doc.root.kind else {
            panic!("root is a map")
        };
        assert_eq!(top[0].1, at(1, 1));
        let function = &doc.root.get("functions").and_then(|f| match &f.kind {
            NodeKind::Seq(items) => items.first(),
            _ => None,
        });
        let function = function.unwrap_or_else(|| panic!("no function"));
        assert_eq!(function.span, at(2, 5));
        let name = function.get("name").unwrap_or_else(|| panic!("no name"));
        assert_eq!(
            (name.span, name.kind.clone()),
            (
                at(2, 11),
                NodeKind::Scalar {
                    text: "x".into(),
                    quoted: true
                }
            )
        );
        let timeout = function
            .get("retry")
            .and_then(|r| r.get("timeout"))
            .unwrap_or_else(|| panic!("no timeout"));
        assert_eq!((text(timeout), timeout.span), ("5s", at(3, 22)));
    }

    #[test]
    fn nulls_quotes_and_block_scalars() {
        let doc = parse_ok("a:\nb: ~\nc: null\nd: 'null'\ne: |\n  line\nf: !!str 12\ng: 12\n");
        let get = |k: &str| doc.root.get(k).map(|n| n.kind.clone());
        assert_eq!(get("a"), Some(NodeKind::Null));
        assert_eq!(get("b"), Some(NodeKind::Null));
        assert_eq!(get("c"), Some(NodeKind::Null));
        assert_eq!(
            get("d"),
            Some(NodeKind::Scalar {
                text: "null".into(),
                quoted: true
            })
        );
        assert_eq!(
            get("e"),
            Some(NodeKind::Scalar {
                text: "line\n".into(),
                quoted: true
            })
        );
        assert_eq!(
            get("f"),
            Some(NodeKind::Scalar {
                text: "12".into(),
                quoted: true
            })
        );
        assert_eq!(
            get("g"),
            Some(NodeKind::Scalar {
                text: "12".into(),
                quoted: false
            })
        );
    }

    #[test]
    fn aliases_copy_the_anchored_node_and_merges_keep_explicit_keys() {
        let doc = parse_ok(
            "base: &retry {max_attempts: 5, timeout: 1s}\none: *retry\ntwo:\n  <<: *retry\n  timeout: 2s\n",
        );
        let one = doc.root.get("one").unwrap_or_else(|| panic!("no one"));
        assert_eq!(one.span, at(2, 6), "the copy's outer span is the alias");
        let attempts = one
            .get("max_attempts")
            .unwrap_or_else(|| panic!("no attempts"));
        assert_eq!(
            (text(attempts), attempts.span),
            ("5", at(1, 29)),
            "inner spans are where it is written"
        );
        let two = doc.root.get("two").unwrap_or_else(|| panic!("no two"));
        assert_eq!(two.get("timeout").map(text), Some("2s"));
        assert_eq!(two.get("max_attempts").map(text), Some("5"));
        let NodeKind::Map(entries) = &two.kind else {
            panic!("two is a map")
        };
        assert_eq!(entries.len(), 2);
        assert!(doc.problems().is_empty(), "{:?}", doc.problems());
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let prev = format!("*a{}", i - 1);
            text.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
        }
        let error = refused(&text);
        assert_says(&error, "add more than 100000 values");
    }

    #[test]
    fn aliases_repeating_a_long_string_are_refused_at_the_alias_that_crosses_the_byte_bound() {
        let long = "x".repeat(64 << 10);
        let copies = MAX_ALIAS_BYTES / long.len() + 1;
        let mut text = format!("big: &big \"{long}\"\ncopies:\n");
        for _ in 0..copies {
            text.push_str("  - *big\n");
        }
        let error = refused(&text);
        assert_eq!(
            error.span,
            at(u32::try_from(copies).unwrap_or(0) + 2, 5),
            "{error:?}"
        );
        assert_says(&error, "more than 4 MiB");
        let under = text.replace("  - *big\n", "");
        let under = format!("{under}  - *big\n");
        assert!(parse(&under, &no_env).is_ok(), "one copy is fine");
    }

    #[test]
    fn a_file_without_aliases_is_never_refused_by_the_alias_bounds() {
        let mut text = String::from("tests:\n  - name: many\n    function: f\n    events:\n");
        for i in 0..(MAX_ALIAS_VALUES / 4) {
            text.push_str(&format!(
                "      - input: {{key: k{i}, payload: {{n: {i}, t: 1.5}}}}\n        expect: {{outputs: [{{payload: {{n: {i}}}}}]}}\n"
            ));
        }
        let document = parse_ok(&text);
        let events = document
            .root
            .get("tests")
            .and_then(|t| match &t.kind {
                NodeKind::Seq(items) => items.first(),
                _ => None,
            })
            .and_then(|t| t.get("events"));
        match events.map(|e| &e.kind) {
            Some(NodeKind::Seq(items)) => assert_eq!(items.len(), MAX_ALIAS_VALUES / 4),
            other => panic!("no events: {other:?}"),
        }
    }

    #[test]
    fn nesting_deeper_than_the_bound_is_an_error_not_a_stack_overflow() {
        // Block nesting (flow nesting meets the parser's own limit first).
        let deep = |n: usize| format!("a:\n{}x\n", "- ".repeat(n));
        assert!(parse(&deep(MAX_DEPTH - 1), &no_env).is_ok());
        let error = refused(&deep(100_000));
        assert_eq!(error.span.line, 2);
        assert_says(&error, "nested more than 128 deep");
    }

    #[test]
    fn a_file_longer_than_the_bound_is_refused_before_parsing() {
        let text = format!("a: \"{}\"\n", "x".repeat(MAX_FILE_BYTES));
        let error = refused(&text);
        assert_eq!(error.span, at(1, 1));
        assert_says(&error, "more than the 16 MiB");
    }

    #[test]
    fn duplicate_keys_and_non_text_keys_are_reported() {
        let doc = parse_ok("functions:\n  - name: a\n    name: b\n? [x]\n: 1\n");
        let messages: Vec<(Span, &str)> = doc
            .problems()
            .iter()
            .map(|e| (e.span, e.message.as_str()))
            .collect();
        assert_eq!(
            messages,
            vec![
                (at(3, 5), "duplicate key `name` in `functions[0]`"),
                (at(4, 3), "a key must be text, found a list"),
            ]
        );
        assert_eq!(
            doc.problems()[0].hint.as_deref(),
            Some("write each key once; the first `name` (line 2) is the one used")
        );
        let function = doc.root.get("functions").map(|f| f.to_json_text());
        assert_eq!(function.as_deref(), Some(r#"[{"name":"a"}]"#));
    }

    #[test]
    fn syntax_errors_point_at_their_place_with_a_hint() {
        let error = refused("a:\n  b: 1\n c: 2\n");
        assert_eq!(error.span, at(3, 2));
        assert_eq!(
            error.message,
            "invalid YAML: while parsing a block mapping, did not find expected key"
        );
        assert!(error.hint.is_some_and(|h| h.contains("indentation")));
        let error = refused("a:\n\tb: 1\n");
        assert!(error.hint.is_some_and(|h| h.contains("tabs")));
        let error = refused("a: 1\n---\nb: 2\n");
        assert_eq!(error.span, at(2, 1));
    }

    #[test]
    fn an_empty_file_is_a_null_root() {
        assert_eq!(parse_ok("").root.kind, NodeKind::Null);
        assert_eq!(parse_ok("# only a comment\n").root.kind, NodeKind::Null);
    }

    #[test]
    fn values_are_interpolated_keys_are_not_and_secrets_never_shown() {
        let env = |name: &str| (name == "TOKEN").then(|| "hunter2-very-secret".to_owned());
        let doc = match parse(
            "${TOKEN}: x\ntoken: ${TOKEN}\nport: ${PORT}\nother: \"${TOKEN}\"\n",
            &env,
        ) {
            Ok(doc) => doc,
            Err(error) => panic!("{error:?}"),
        };
        assert!(
            doc.root.get("${TOKEN}").is_some(),
            "keys are not interpolated"
        );
        assert_eq!(doc.root.get("token").map(text), Some("hunter2-very-secret"));
        let token_span = doc.root.get("token").map(|n| n.span).unwrap_or_default();
        let port_span = doc.root.get("port").map(|n| n.span).unwrap_or_default();
        let later = vec![
            ConfigError {
                span: token_span,
                path: "token".into(),
                message: "`token` must be a number, found `hunter2-very-secret`".into(),
                hint: None,
            },
            ConfigError {
                span: port_span,
                path: "port".into(),
                message: "`port` must be a number, found `${PORT}`".into(),
                hint: None,
            },
            ConfigError {
                span: at(4, 8),
                path: "other".into(),
                message: "cannot open hunter2-very-secret".into(),
                hint: Some("check hunter2-very-secret".into()),
            },
        ];
        let all = doc.finish(later);
        let shown: Vec<(&str, Option<&str>)> = all
            .iter()
            .map(|e| (e.message.as_str(), e.hint.as_deref()))
            .collect();
        assert_eq!(
            shown,
            vec![
                ("`token` must be a number, found `${TOKEN}`", None),
                (
                    "environment variable `PORT` is not set",
                    Some("set it, or give a default: `${PORT:-value}`")
                ),
                ("cannot open ${TOKEN}", Some("check ${TOKEN}")),
            ],
            "the follow-on error at the unset value is dropped"
        );
    }
}
