//! Configuration as connectors see it: a tree of nodes that remember where in
//! the pipeline file they were written, and a reader that collects *every*
//! problem instead of stopping at the first.
//!
//! The keys a component asks its [`ConfigReader`] for are its schema: when a
//! reader is dropped, any key present in the file that nobody asked for is
//! reported as unknown, with a "did you mean" taken from the keys that were
//! asked for. Defaults therefore live in exactly one place — the code that
//! reads the key.

use std::cell::RefCell;
use std::fmt;

mod reader;
mod units;

pub use reader::ConfigReader;
pub use units::{parse_byte_size, parse_duration, MAX_BYTE_SIZE, MAX_DURATION};

/// A place in a pipeline file: 1-based line and column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One value of a configuration tree with its place in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigNode {
    /// The value.
    pub kind: NodeKind,
    /// Where the value starts.
    pub span: Span,
}

/// The shapes a configuration value can take.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// An explicit `null`, `~` or empty value.
    Null,
    /// A scalar. `quoted` scalars are always strings; plain ones may be read
    /// as numbers or booleans.
    Scalar {
        /// The text after environment interpolation.
        text: String,
        /// Whether the scalar was quoted in the file.
        quoted: bool,
    },
    /// A sequence.
    Seq(Vec<ConfigNode>),
    /// A mapping, in file order. Keys carry their own spans.
    Map(Vec<(String, Span, ConfigNode)>),
}

impl ConfigNode {
    /// What the node is, for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Null => "nothing",
            NodeKind::Scalar { .. } => "a scalar",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    /// The scalar text, if this is a scalar.
    pub fn as_text(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// Looks a key up in a mapping node.
    pub fn get(&self, key: &str) -> Option<&ConfigNode> {
        match &self.kind {
            NodeKind::Map(entries) => entries.iter().find(|(k, _, _)| k == key).map(|(_, _, v)| v),
            _ => None,
        }
    }

    /// Converts the node to JSON, keeping plain scalars' natural types
    /// (numbers, booleans, null) and quoted scalars as strings.
    pub fn to_json_text(&self) -> String {
        match &self.kind {
            NodeKind::Null => "null".to_owned(),
            NodeKind::Scalar { text, quoted } => {
                if !quoted && (text == "true" || text == "false" || text.parse::<f64>().is_ok()) {
                    text.clone()
                } else {
                    json_string(text)
                }
            }
            NodeKind::Seq(items) => {
                let inner: Vec<String> = items.iter().map(ConfigNode::to_json_text).collect();
                format!("[{}]", inner.join(","))
            }
            NodeKind::Map(entries) => {
                let inner: Vec<String> = entries
                    .iter()
                    .map(|(k, _, v)| format!("{}:{}", json_string(k), v.to_json_text()))
                    .collect();
                format!("{{{}}}", inner.join(","))
            }
        }
    }
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One problem in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the problem is.
    pub span: Span,
    /// The field path, e.g. `functions[0].retry.max_attempts`.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it, if there is something useful to say.
    pub hint: Option<String>,
}

/// Collected problems, shared by every reader over one file.
pub type ConfigErrors = RefCell<Vec<ConfigError>>;

/// The candidate closest to `word`, if it is close enough to be a typo.
pub fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// `a`, `b` or `c`, for messages.
pub fn quote_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    match quoted.len() {
        0 => String::new(),
        1 => quoted[0].clone(),
        n => format!("{} or {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}

/// A mapping node of unquoted scalars, as a pipeline file would give a
/// connector; key `i` sits on line `i + 2` so errors have distinct places.
/// For tests (the test kit offers it to connectors).
#[cfg(any(test, feature = "testkit"))]
pub fn config_map(entries: &[(&str, &str)]) -> ConfigNode {
    ConfigNode {
        kind: NodeKind::Map(
            entries
                .iter()
                .enumerate()
                .map(|(i, (key, value))| {
                    let line = i as u32 + 2;
                    let value = ConfigNode {
                        kind: NodeKind::Scalar {
                            text: (*value).to_owned(),
                            quoted: false,
                        },
                        span: Span { line, column: 12 },
                    };
                    ((*key).to_owned(), Span { line, column: 5 }, value)
                })
                .collect(),
        ),
        span: Span { line: 1, column: 5 },
    }
}

#[cfg(test)]
mod tests;
