//! Where in the pipeline file a place inside an expression is, and reading
//! an expression from a built-in's settings with its compile errors put
//! there.
//!
//! A configuration node knows where its scalar starts and its text once
//! YAML has unquoted it; it does not keep the source or the style. So the
//! place of byte `offset` of the text is worked out per style:
//!
//! - a plain scalar (`expr: .a > 1`): the node starts at its first
//!   character; add the characters before the offset;
//! - a quoted scalar on one line (`expr: '.a > 1'`): the node starts at the
//!   opening quote, so add one more. It is read as single-quoted YAML, where
//!   `''` stands for one `'` (jq has no use for `'`, and single quotes keep
//!   jq's `"` as they are, so this is the usual way to write an
//!   expression); in a double-quoted scalar every `\"` or `\\` before the
//!   offset makes the column one too small;
//! - a block scalar (`expr: |` and indented lines; told apart by the line
//!   breaks in its text): the node starts at the first character of its
//!   first non-empty line, which gives the line and the indentation; add
//!   the line breaks before the offset (less the leading empty lines) and
//!   the characters before the offset on its line. Use `|`, not `>`: a
//!   folded scalar joins its lines, so only its first line is placed
//!   right; and a one-line `|-` block has no line break to be told apart
//!   by, so it is placed one column too far.
//!
//! Expressions are not interpolated (the loader keeps `expr` and `when` as
//! written, and a `${…}` in one is an error here), so the text is the
//! file's.

use spate_connector::{ConfigNode, ConfigReader, NodeKind, Span};

use super::Expr;

fn columns(text: &str) -> u32 {
    u32::try_from(text.chars().count()).unwrap_or(u32::MAX)
}

/// The place in the file of byte `offset` of `node`'s text.
pub fn span_in(node: &ConfigNode, offset: usize) -> Span {
    let NodeKind::Scalar { text, quoted } = &node.kind else {
        return node.span;
    };
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    if !quoted {
        return Span {
            line: node.span.line,
            column: node.span.column.saturating_add(columns(before)),
        };
    }
    if text.contains('\n') {
        let leading = text.len() - text.trim_start_matches('\n').len();
        let breaks = before.matches('\n').count();
        let line = i64::from(node.span.line) + breaks as i64 - leading as i64;
        let line_start = before.rfind('\n').map_or(0, |at| at + 1);
        return Span {
            line: u32::try_from(line.max(1)).unwrap_or(u32::MAX),
            column: node
                .span
                .column
                .saturating_add(columns(&before[line_start..])),
        };
    }
    let doubled_quotes = columns(&before.replace(|c| c != '\'', ""));
    Span {
        line: node.span.line,
        column: node
            .span
            .column
            .saturating_add(1)
            .saturating_add(columns(before))
            .saturating_add(doubled_quotes),
    }
}

/// Reads the expression under `key` and compiles it with `vars` bound
/// (name, JSON text). A missing key is `None` with no error (the caller
/// decides whether it is required); a value that is not text, holds a
/// `${…}` (expressions are not interpolated: values reach them through
/// `vars:`), or does not compile, records one error per problem, each at
/// its place inside the expression.
pub fn read_expr(
    config: &mut ConfigReader<'_>,
    key: &'static str,
    vars: &[(String, String)],
) -> Option<Expr> {
    let node = config.node(key)?;
    let Some(source) = node.as_text() else {
        config.error(
            node.span,
            config.child_path(key),
            format!("`{key}` must be a jq expression, found {}", node.type_name()),
            Some(format!(
                "quote the expression: `{key}: '.amount > 100'`, or write it as a block after `{key}: |`"
            )),
        );
        return None;
    };
    if let Some(at) = source.find("${") {
        let name: String = source[at + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let var = if name.is_empty() {
            "VAR".to_owned()
        } else {
            name
        };
        let lower = var.to_ascii_lowercase();
        config.error(
            span_in(node, at),
            config.child_path(key),
            format!("`${{…}}` inside the expression in `{key}`: environment values are not spliced into code"),
            Some(format!(
                "bind the value and use it as a jq variable: `vars: {{{lower}: '${{{var}}}'}}` next to `{key}`, and `${lower}` in the expression (a literal `${{` in a jq string: write `\\u0024{{`)"
            )),
        );
        return None;
    }
    match Expr::compile_with_vars(source, vars) {
        Ok(expr) => Some(expr),
        Err(errors) => {
            for error in errors {
                config.error(
                    span_in(node, error.offset),
                    config.child_path(key),
                    format!("invalid jq expression in `{key}`: {}", error.message),
                    error.hint,
                );
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(text: &str, quoted: bool, line: u32, column: u32) -> ConfigNode {
        ConfigNode {
            kind: NodeKind::Scalar {
                text: text.to_owned(),
                quoted,
            },
            span: span(line, column),
        }
    }

    fn span(line: u32, column: u32) -> Span {
        Span { line, column }
    }

    /// Asserts that byte `offset` of `text`, a scalar (`quoted` or not)
    /// whose node starts at `start`, is placed at `expected`.
    fn assert_placed(
        text: &str,
        quoted: bool,
        start: (u32, u32),
        offset: usize,
        expected: (u32, u32),
    ) {
        let node = scalar(text, quoted, start.0, start.1);
        assert_eq!(
            span_in(&node, offset),
            span(expected.0, expected.1),
            "{text:?} at {offset}"
        );
    }

    #[test]
    fn plain_scalars_count_characters_from_their_start() {
        assert_placed(".a > > 1", false, (5, 13), 5, (5, 18));
    }

    #[test]
    fn quoted_scalars_skip_the_quote_and_count_doubled_single_quotes() {
        assert_placed(".a > > 1", true, (5, 13), 5, (5, 19));
        assert_placed(".a == \"it's\" > >", true, (5, 13), 15, (5, 30));
    }

    #[test]
    fn block_scalars_count_lines_from_their_first_line() {
        // expr: |
        //   {id: .order,
        //    total: (.amount * )}
        let text = "{id: .order,\n total: (.amount * )}\n";
        let at = "{id: .order,\n total: (.amount * ".len();
        assert_placed(text, true, (6, 9), at, (7, 28));
        // A leading empty line is before the node's line.
        assert_placed("\n.a >\n", true, (7, 9), 4, (7, 12));
    }

    #[test]
    fn offsets_past_the_end_or_inside_a_character_are_clamped() {
        assert_placed("é", false, (1, 1), 1, (1, 1));
        assert_placed("é", false, (1, 1), 99, (1, 2));
    }
}
