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
use std::ops::RangeInclusive;
use std::time::Duration;

mod units;

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

/// Reads one mapping of a configuration tree, recording every problem.
///
/// Unknown keys are reported when the reader is dropped, so read every key
/// the component supports before letting the reader go.
pub struct ConfigReader<'a> {
    node: &'a ConfigNode,
    path: String,
    errors: &'a ConfigErrors,
    known: Vec<&'static str>,
}

impl<'a> ConfigReader<'a> {
    /// A reader over `node`, which must be a mapping (otherwise one error is
    /// recorded and every lookup finds nothing).
    pub fn new(node: &'a ConfigNode, path: impl Into<String>, errors: &'a ConfigErrors) -> Self {
        let path = path.into();
        if !matches!(node.kind, NodeKind::Map(_)) {
            errors.borrow_mut().push(ConfigError {
                span: node.span,
                path: path.clone(),
                message: format!("`{path}` must be a mapping, found {}", node.type_name()),
                hint: Some("write it as `key: value` lines indented under it".to_owned()),
            });
        }
        Self {
            node,
            path,
            errors,
            known: Vec::new(),
        }
    }

    /// The field path of this mapping.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Where this mapping starts.
    pub fn span(&self) -> Span {
        self.node.span
    }

    /// The error list this reader writes into, for nested readers.
    pub fn errors(&self) -> &'a ConfigErrors {
        self.errors
    }

    /// The path of a key of this mapping.
    pub fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Records a problem at `span`.
    pub fn error(
        &self,
        span: Span,
        path: impl Into<String>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.errors.borrow_mut().push(ConfigError {
            span,
            path: path.into(),
            message: message.into(),
            hint,
        });
    }

    /// Records a problem with key `key` of this mapping (at its value if
    /// present, else at the mapping).
    pub fn error_at_key(&self, key: &str, message: impl Into<String>, hint: Option<String>) {
        let span = self.raw(key).map_or(self.node.span, |n| n.span);
        self.error(span, self.child_path(key), message, hint);
    }

    /// True if the key is written in the file.
    pub fn has(&mut self, key: &'static str) -> bool {
        self.node(key).is_some()
    }

    fn raw(&self, key: &str) -> Option<&'a ConfigNode> {
        self.node.get(key)
    }

    /// The raw node under `key`, marking the key as known.
    pub fn node(&mut self, key: &'static str) -> Option<&'a ConfigNode> {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
        match self.raw(key) {
            Some(ConfigNode {
                kind: NodeKind::Null,
                ..
            })
            | None => None,
            Some(node) => Some(node),
        }
    }

    /// Records "missing required field".
    pub fn missing(&self, key: &str, hint: Option<String>) {
        self.error(
            self.node.span,
            self.child_path(key),
            format!("missing required field `{key}` {}", self.location()),
            hint,
        );
    }

    /// "in `path`", or "at the top level of the file" for the root mapping.
    fn location(&self) -> String {
        if self.path.is_empty() {
            "at the top level of the file".to_owned()
        } else {
            format!("in `{}`", self.path)
        }
    }

    fn too_large(&self, key: &str, node: &ConfigNode, bound: &str) {
        self.error(
            node.span,
            self.child_path(key),
            format!(
                "`{key}` must be at most {bound}, found `{}`",
                node.as_text().unwrap_or_default()
            ),
            Some(format!(
                "{bound} is the largest value of any setting of this kind; see \"Limits\" in the README"
            )),
        );
    }

    fn wrong_type(&self, key: &str, node: &ConfigNode, expected: &str, hint: Option<String>) {
        let found = match &node.kind {
            NodeKind::Scalar { text, .. } => format!("`{text}`"),
            _ => node.type_name().to_owned(),
        };
        self.error(
            node.span,
            self.child_path(key),
            format!("`{key}` must be {expected}, found {found}"),
            hint,
        );
    }

    /// An optional string.
    pub fn string(&mut self, key: &'static str) -> Option<String> {
        let node = self.node(key)?;
        match &node.kind {
            NodeKind::Scalar { text, .. } => Some(text.clone()),
            _ => {
                self.wrong_type(key, node, "a string", None);
                None
            }
        }
    }

    /// A required string; records an error when absent.
    pub fn required_string(&mut self, key: &'static str, hint: Option<String>) -> Option<String> {
        let value = self.string(key);
        if value.is_none() && self.raw(key).is_none_or(|n| n.kind == NodeKind::Null) {
            self.missing(key, hint);
        }
        value
    }

    /// An optional whole number.
    pub fn u64(&mut self, key: &'static str) -> Option<u64> {
        let node = self.node(key)?;
        match node.as_text().map(|t| t.replace('_', "").parse::<u64>()) {
            Some(Ok(v)) => Some(v),
            _ => {
                self.wrong_type(key, node, "a whole number (0 or more)", None);
                None
            }
        }
    }

    /// An optional whole number that must lie in `range`; outside it (a
    /// number too large for 64 bits included), an error at the value that
    /// names the range.
    pub fn u64_in(&mut self, key: &'static str, range: RangeInclusive<u64>) -> Option<u64> {
        let node = self.node(key)?;
        let text = node
            .as_text()
            .map(|t| t.replace('_', ""))
            .unwrap_or_default();
        let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        if !digits {
            return self.u64(key);
        }
        match text.parse::<u64>() {
            Ok(value) if range.contains(&value) => Some(value),
            _ => {
                self.error(
                    node.span,
                    self.child_path(key),
                    format!(
                        "`{key}` must be between {} and {}, found `{}`",
                        range.start(),
                        range.end(),
                        node.as_text().unwrap_or_default()
                    ),
                    Some("see \"Limits\" in the README for every setting's range".to_owned()),
                );
                None
            }
        }
    }

    /// An optional number.
    pub fn f64(&mut self, key: &'static str) -> Option<f64> {
        let node = self.node(key)?;
        match node.as_text().map(str::parse::<f64>) {
            Some(Ok(v)) if v.is_finite() => Some(v),
            _ => {
                self.wrong_type(key, node, "a number", None);
                None
            }
        }
    }

    /// An optional boolean (`true` / `false`).
    pub fn bool(&mut self, key: &'static str) -> Option<bool> {
        let node = self.node(key)?;
        match node.as_text() {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => {
                self.wrong_type(key, node, "`true` or `false`", None);
                None
            }
        }
    }

    /// An optional duration such as `250ms`, `5s`, `2m`, `1h`, at most
    /// [`MAX_DURATION`] (a longer one is an error naming that bound).
    pub fn duration(&mut self, key: &'static str) -> Option<Duration> {
        let node = self.node(key)?;
        match node.as_text().map(parse_duration) {
            Some(Ok(d)) if d > MAX_DURATION => {
                self.too_large(key, node, &format!("{}h", MAX_DURATION.as_secs() / 3600));
                None
            }
            Some(Ok(d)) => Some(d),
            _ => {
                self.wrong_type(
                    key,
                    node,
                    "a duration",
                    Some("write a number with a unit: `250ms`, `5s`, `2m`, `1h`".to_owned()),
                );
                None
            }
        }
    }

    /// An optional byte size such as `1048576`, `64KiB`, `1MiB`, `1MB`, at
    /// most [`MAX_BYTE_SIZE`] (a larger one is an error naming that bound).
    pub fn byte_size(&mut self, key: &'static str) -> Option<u64> {
        let node = self.node(key)?;
        match node.as_text().map(parse_byte_size) {
            Some(Ok(d)) if d > MAX_BYTE_SIZE => {
                self.too_large(key, node, "1TiB");
                None
            }
            Some(Ok(d)) => Some(d),
            _ => {
                self.wrong_type(
                    key,
                    node,
                    "a size in bytes",
                    Some(
                        "write bytes or a number with a unit: `65536`, `64KiB`, `16MiB`, `1GB`"
                            .to_owned(),
                    ),
                );
                None
            }
        }
    }

    /// One of a fixed set of words; an unknown word gets a "did you mean".
    pub fn one_of(&mut self, key: &'static str, choices: &[&'static str]) -> Option<&'static str> {
        let node = self.node(key)?;
        let Some(text) = node.as_text() else {
            self.wrong_type(key, node, &format!("one of {}", quote_list(choices)), None);
            return None;
        };
        if let Some(choice) = choices.iter().find(|c| **c == text) {
            return Some(choice);
        }
        let hint = match did_you_mean(text, choices.iter().copied()) {
            Some(best) => format!("did you mean `{best}`? (one of {})", quote_list(choices)),
            None => format!("use one of {}", quote_list(choices)),
        };
        self.error(
            node.span,
            self.child_path(key),
            format!("unknown {key} `{text}`"),
            Some(hint),
        );
        None
    }

    /// A nested mapping under `key`.
    pub fn section(&mut self, key: &'static str) -> Option<ConfigReader<'a>> {
        let path = self.child_path(key);
        let node = self.node(key)?;
        Some(ConfigReader::new(node, path, self.errors))
    }

    /// The items of a list under `key`; a single non-list value counts as a
    /// one-item list.
    pub fn list(&mut self, key: &'static str) -> Option<Vec<&'a ConfigNode>> {
        let node = self.node(key)?;
        match &node.kind {
            NodeKind::Seq(items) => Some(items.iter().collect()),
            _ => Some(vec![node]),
        }
    }
}

impl Drop for ConfigReader<'_> {
    fn drop(&mut self) {
        let NodeKind::Map(entries) = &self.node.kind else {
            return;
        };
        for (key, span, _) in entries {
            if self.known.iter().any(|k| k == key) {
                continue;
            }
            let hint = match did_you_mean(key, self.known.iter().copied()) {
                Some(best) => Some(format!("did you mean `{best}`?")),
                None if self.known.is_empty() => None,
                None => Some(format!("known keys here: {}", quote_list(&self.known))),
            };
            self.errors.borrow_mut().push(ConfigError {
                span: *span,
                path: self.child_path(key),
                message: format!("unknown key `{key}` {}", self.location()),
                hint,
            });
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(text: &str, line: u32) -> ConfigNode {
        ConfigNode {
            kind: NodeKind::Scalar {
                text: text.to_owned(),
                quoted: false,
            },
            span: Span { line, column: 10 },
        }
    }

    fn map(entries: Vec<(&str, ConfigNode)>) -> ConfigNode {
        ConfigNode {
            kind: NodeKind::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| {
                        let span = Span {
                            line: v.span.line,
                            column: 3,
                        };
                        (k.to_owned(), span, v)
                    })
                    .collect(),
            ),
            span: Span { line: 1, column: 1 },
        }
    }

    #[test]
    fn every_problem_is_collected_with_its_place() {
        let node = map(vec![
            ("max_attempts", scalar("three", 2)),
            ("timout", scalar("5s", 3)),
            ("initial_backoff", scalar("100", 4)),
        ]);
        let errors = ConfigErrors::default();
        {
            let mut reader = ConfigReader::new(&node, "retry", &errors);
            assert_eq!(reader.u64("max_attempts"), None);
            assert_eq!(reader.duration("timeout"), None);
            assert_eq!(reader.duration("initial_backoff"), None);
        }
        let errors = errors.into_inner();
        let lines: Vec<(u32, &str)> = errors
            .iter()
            .map(|e| (e.span.line, e.message.as_str()))
            .collect();
        assert_eq!(
            lines,
            vec![
                (
                    2,
                    "`max_attempts` must be a whole number (0 or more), found `three`"
                ),
                (4, "`initial_backoff` must be a duration, found `100`"),
                (3, "unknown key `timout` in `retry`"),
            ]
        );
        assert_eq!(errors[2].hint.as_deref(), Some("did you mean `timeout`?"));
    }

    #[test]
    fn one_of_suggests_the_closest_choice() {
        let node = map(vec![("ordering", scalar("partiton", 2))]);
        let errors = ConfigErrors::default();
        {
            let mut reader = ConfigReader::new(&node, "", &errors);
            assert_eq!(
                reader.one_of("ordering", &["partition", "key", "none"]),
                None
            );
        }
        let errors = errors.into_inner();
        assert_eq!(errors[0].message, "unknown ordering `partiton`");
        assert_eq!(
            errors[0].hint.as_deref(),
            Some("did you mean `partition`? (one of `partition`, `key` or `none`)")
        );
    }

    #[test]
    fn durations_and_sizes_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert_eq!(parse_byte_size("64KiB"), Ok(65_536));
        assert_eq!(parse_byte_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_byte_size("4096"), Ok(4096));
        assert!(parse_byte_size("lots").is_err());
    }

    #[test]
    fn json_conversion_keeps_plain_scalar_types() {
        let node = map(vec![("a", scalar("12", 2)), ("b", scalar("x\"y", 3))]);
        assert_eq!(node.to_json_text(), r#"{"a":12,"b":"x\"y"}"#);
    }
}
