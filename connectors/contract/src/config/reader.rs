//! The reader over one mapping of a configuration tree: typed lookups that
//! record every problem (wrong type, out of range, missing) instead of
//! stopping, and, when dropped, every key present that nobody asked for.

use std::ops::RangeInclusive;
use std::time::Duration;

use super::{
    did_you_mean, parse_byte_size, parse_duration, quote_list, ConfigError, ConfigErrors,
    ConfigNode, NodeKind, Span, MAX_BYTE_SIZE, MAX_DURATION,
};

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

    /// An optional string that, when written, is not blank; records
    /// "`key` is empty" (with `hint`) for a blank one.
    pub fn non_empty_string(&mut self, key: &'static str, hint: Option<String>) -> Option<String> {
        let value = self.string(key)?;
        if value.trim().is_empty() {
            self.error_at_key(key, format!("`{key}` is empty"), hint);
            return None;
        }
        Some(value)
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
        self.with_unit(
            key,
            parse_duration,
            (MAX_DURATION, &format!("{}h", MAX_DURATION.as_secs() / 3600)),
            "a duration",
            "write a number with a unit: `250ms`, `5s`, `2m`, `1h`",
        )
    }

    /// An optional byte size such as `1048576`, `64KiB`, `1MiB`, `1MB`, at
    /// most [`MAX_BYTE_SIZE`] (a larger one is an error naming that bound).
    pub fn byte_size(&mut self, key: &'static str) -> Option<u64> {
        self.with_unit(
            key,
            parse_byte_size,
            (MAX_BYTE_SIZE, "1TiB"),
            "a size in bytes",
            "write bytes or a number with a unit: `65536`, `64KiB`, `16MiB`, `1GB`",
        )
    }

    /// An optional value written with a unit, parsed by `parse` and at most
    /// `max.0` (a larger one is an error naming `max.1`); text that does not
    /// parse is an error saying it must be `expected`, with `hint`.
    fn with_unit<T: PartialOrd>(
        &mut self,
        key: &'static str,
        parse: fn(&str) -> Result<T, String>,
        max: (T, &str),
        expected: &str,
        hint: &str,
    ) -> Option<T> {
        let node = self.node(key)?;
        match node.as_text().map(parse) {
            Some(Ok(value)) if value > max.0 => {
                self.too_large(key, node, max.1);
                None
            }
            Some(Ok(value)) => Some(value),
            _ => {
                self.wrong_type(key, node, expected, Some(hint.to_owned()));
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
