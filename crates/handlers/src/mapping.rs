//! Reading a mapping of a built-in's settings (`vars:`, `headers:`) entry
//! by entry. Guarantees: every entry is read, so all problems are found in
//! one pass; each is recorded at its entry (`vars.dev`), and any problem
//! makes the whole mapping invalid.

use spate_connector::{ConfigNode, ConfigReader, NodeKind, Span};

/// A mapping's entries as the file holds them: name, its place, value.
pub(crate) type Entries = [(String, Span, ConfigNode)];

/// What is wrong with one entry: where, what, and how to fix it.
pub(crate) struct EntryProblem {
    span: Span,
    message: String,
    hint: String,
}

impl EntryProblem {
    /// A problem at `span`.
    pub(crate) fn new(span: Span, message: String, hint: &str) -> Self {
        Self {
            span,
            message,
            hint: hint.to_owned(),
        }
    }
}

/// The mapping under `key` (its place and entries), `Some(None)` when the
/// key is absent, or `None` when its value is not a mapping (recorded as
/// `` `{key}` must be {what}, found … `` with `hint`).
pub(crate) fn mapping<'a>(
    config: &mut ConfigReader<'a>,
    key: &'static str,
    what: &str,
    hint: &str,
) -> Option<Option<(Span, &'a Entries)>> {
    let Some(node) = config.node(key) else {
        return Some(None);
    };
    let NodeKind::Map(entries) = &node.kind else {
        config.error(
            node.span,
            config.child_path(key),
            format!("`{key}` must be {what}, found {}", node.type_name()),
            Some(hint.to_owned()),
        );
        return None;
    };
    Some(Some((node.span, entries)))
}

/// Reads each of `entries` (of the mapping under `key`) with `read`, given
/// the entry's name, the name's place and the value; records each problem
/// at its entry. True when there was none.
pub(crate) fn read_entries<'a>(
    config: &ConfigReader<'_>,
    key: &str,
    entries: &'a Entries,
    mut read: impl FnMut(&'a str, Span, &'a ConfigNode) -> Result<(), EntryProblem>,
) -> bool {
    let mut ok = true;
    for (name, span, value) in entries {
        if let Err(problem) = read(name, *span, value) {
            config.error(
                problem.span,
                format!("{}.{name}", config.child_path(key)),
                problem.message,
                Some(problem.hint),
            );
            ok = false;
        }
    }
    ok
}
