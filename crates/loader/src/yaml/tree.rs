//! The tree builder behind [`super::parse`]: turns parser events into
//! [`ConfigNode`]s with their spans, resolving anchors, aliases and `<<`
//! merges, refusing alias bombs (bounded in values and bytes added) and
//! runaway nesting, reporting duplicate and non-text keys, and interpolating
//! `${...}` in values.

use std::collections::HashMap;

use saphyr_parser::{ScalarStyle, Tag};
use spate_connector::{ConfigError, ConfigNode, NodeKind, Span};

use super::{fatal, Document, Interpolated, MAX_ALIAS_BYTES, MAX_ALIAS_VALUES, MAX_DEPTH};
use crate::env::{expand, Environment};

fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

fn is_str_tag(tag: Option<&Tag>) -> bool {
    tag.is_some_and(|t| t.is_yaml_core_schema() && t.suffix == "str")
}

/// What a copy of a node adds to the tree: its values, and the bytes of its
/// text (scalars and keys). Recursion is bounded by [`MAX_DEPTH`].
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    values: usize,
    bytes: usize,
}

fn size_of(node: &ConfigNode) -> Size {
    let mut size = Size {
        values: 1,
        bytes: 0,
    };
    let mut add = |inner: Size, key: usize| {
        size.values = size.values.saturating_add(inner.values);
        size.bytes = size.bytes.saturating_add(inner.bytes).saturating_add(key);
    };
    match &node.kind {
        NodeKind::Null => {}
        NodeKind::Scalar { text, .. } => add(Size::default(), text.len()),
        NodeKind::Seq(items) => items.iter().for_each(|item| add(size_of(item), 0)),
        NodeKind::Map(entries) => entries
            .iter()
            .for_each(|(key, _, value)| add(size_of(value), key.len())),
    }
    size
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Keys whose values are jq expressions: not interpolated, so that the
/// expression handlers can refuse a `${…}` in code at its place (values
/// reach expressions through `vars:`).
pub(super) const CODE_KEYS: &[&str] = &["expr", "when"];

/// What a mapping frame waits for next.
enum Key {
    /// A key.
    Awaiting,
    /// The value of this key (`plain`: written without quotes).
    Valid {
        text: String,
        span: Span,
        plain: bool,
    },
    /// The value of a key that was not plain text (dropped).
    Invalid,
}

/// A collection being built.
struct Frame {
    span: Span,
    anchor: usize,
    path: String,
    body: Body,
}

enum Body {
    Seq(Vec<ConfigNode>),
    Map {
        entries: Vec<(String, Span, ConfigNode)>,
        key: Key,
        merges: Vec<ConfigNode>,
    },
}

pub(super) struct Builder<'e> {
    env: &'e dyn Environment,
    stack: Vec<Frame>,
    root: Option<ConfigNode>,
    anchors: HashMap<usize, (ConfigNode, Size)>,
    /// What alias copies added so far.
    expanded: Size,
    problems: Vec<ConfigError>,
    interpolated: Vec<Interpolated>,
    failed: Vec<Span>,
}

impl<'e> Builder<'e> {
    pub(super) fn new(env: &'e dyn Environment) -> Self {
        Self {
            env,
            stack: Vec::new(),
            root: None,
            anchors: HashMap::new(),
            expanded: Size::default(),
            problems: Vec::new(),
            interpolated: Vec::new(),
            failed: Vec::new(),
        }
    }

    pub(super) fn finish(self) -> Document {
        let root = self.root.unwrap_or(ConfigNode {
            kind: NodeKind::Null,
            span: Span { line: 1, column: 1 },
        });
        Document {
            root,
            problems: self.problems,
            interpolated: self.interpolated,
            failed: self.failed,
        }
    }

    /// The path of the node that starts next.
    fn next_path(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some(Frame {
                path,
                body: Body::Seq(items),
                ..
            }) => format!("{path}[{}]", items.len()),
            Some(Frame {
                path,
                body:
                    Body::Map {
                        key: Key::Valid { text, .. },
                        ..
                    },
                ..
            }) => join(path, text),
            Some(frame) => frame.path.clone(),
        }
    }

    fn at_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame {
                body: Body::Map {
                    key: Key::Awaiting,
                    ..
                },
                ..
            })
        )
    }

    /// Whether the value that starts next is a jq expression (under a key
    /// in [`CODE_KEYS`]): those are kept as written, never interpolated.
    fn at_code_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame {
                body: Body::Map {
                    key: Key::Valid { text, .. },
                    ..
                },
                ..
            }) if CODE_KEYS.contains(&text.as_str())
        )
    }

    pub(super) fn scalar(
        &mut self,
        value: &str,
        style: ScalarStyle,
        anchor: usize,
        tag: Option<&Tag>,
        span: Span,
    ) -> Result<(), ConfigError> {
        let plain = style == ScalarStyle::Plain && !is_str_tag(tag);
        let kind = if plain && is_null(value) {
            NodeKind::Null
        } else if self.at_key() || self.at_code_key() {
            NodeKind::Scalar {
                text: value.to_owned(),
                quoted: !plain,
            }
        } else {
            let expanded = expand(value, self.env);
            if !expanded.problems.is_empty() {
                self.failed.push(span);
                let path = self.next_path();
                for problem in &expanded.problems {
                    let (message, hint) = problem.describe();
                    self.problems.push(ConfigError {
                        span,
                        path: path.clone(),
                        message,
                        hint: Some(hint),
                    });
                }
            }
            if !expanded.from_env.is_empty() {
                self.interpolated.push(Interpolated {
                    span,
                    written: value.to_owned(),
                    text: expanded.text.clone(),
                    from_env: expanded.from_env,
                });
            }
            NodeKind::Scalar {
                text: expanded.text,
                quoted: !plain,
            }
        };
        self.complete(ConfigNode { kind, span }, anchor)
    }

    pub(super) fn open(&mut self, anchor: usize, span: Span, map: bool) -> Result<(), ConfigError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(fatal(
                span,
                &format!("lists and mappings are nested more than {MAX_DEPTH} deep here"),
                "a pipeline file needs far less nesting; check for a runaway `[` or `{`, or indentation",
            ));
        }
        let path = self.next_path();
        let body = if map {
            Body::Map {
                entries: Vec::new(),
                key: Key::Awaiting,
                merges: Vec::new(),
            }
        } else {
            Body::Seq(Vec::new())
        };
        self.stack.push(Frame {
            span,
            anchor,
            path,
            body,
        });
        Ok(())
    }

    pub(super) fn close(&mut self) -> Result<(), ConfigError> {
        let Some(frame) = self.stack.pop() else {
            return Ok(());
        };
        let kind = match frame.body {
            Body::Seq(items) => NodeKind::Seq(items),
            Body::Map {
                mut entries,
                merges,
                ..
            } => {
                self.merge(&frame.path, &mut entries, merges);
                NodeKind::Map(entries)
            }
        };
        self.complete(
            ConfigNode {
                kind,
                span: frame.span,
            },
            frame.anchor,
        )
    }

    /// Adds the keys of `<<` mappings that are not written explicitly; the
    /// first merged mapping that has a key wins.
    fn merge(
        &mut self,
        path: &str,
        entries: &mut Vec<(String, Span, ConfigNode)>,
        merges: Vec<ConfigNode>,
    ) {
        let explicit = entries.len();
        for merged in merges {
            let sources = match merged.kind {
                NodeKind::Seq(items) => items,
                _ => vec![merged],
            };
            for source in sources {
                let NodeKind::Map(more) = source.kind else {
                    self.problems.push(ConfigError {
                        span: source.span,
                        path: join(path, "<<"),
                        message: format!("`<<` merges mappings, found {}", source.type_name()),
                        hint: Some("write `<<: *name`, where `&name` marks a mapping".to_owned()),
                    });
                    continue;
                };
                for (key, span, value) in more {
                    if !entries.iter().any(|(k, _, _)| *k == key) {
                        entries.push((key, span, value));
                    }
                }
            }
        }
        // Explicit keys first, then merged ones, each in file order.
        entries[explicit..].sort_by_key(|(_, span, _)| *span);
    }

    pub(super) fn alias(&mut self, id: usize, span: Span) -> Result<(), ConfigError> {
        let Some(size) = self.anchors.get(&id).map(|(_, size)| *size) else {
            return Err(fatal(
                span,
                "this alias names no anchor",
                "define it with `&name` before `*name`",
            ));
        };
        self.count(size, span)?;
        let Some(mut copy) = self.anchors.get(&id).map(|(node, _)| node.clone()) else {
            return Ok(());
        };
        let original = copy.span;
        copy.span = span;
        if self.failed.contains(&original) {
            self.failed.push(span);
        }
        if let Some(value) = self.interpolated.iter().find(|v| v.span == original) {
            let value = Interpolated {
                span,
                ..value.clone()
            };
            self.interpolated.push(value);
        }
        self.deliver(copy);
        Ok(())
    }

    /// Adds an alias copy to what aliases expanded; past either bound the
    /// file is refused at this alias. Nodes written in the file are not
    /// counted: a file without aliases is never refused here.
    fn count(&mut self, size: Size, span: Span) -> Result<(), ConfigError> {
        self.expanded.values = self.expanded.values.saturating_add(size.values);
        self.expanded.bytes = self.expanded.bytes.saturating_add(size.bytes);
        if self.expanded.values > MAX_ALIAS_VALUES {
            return Err(fatal(
                span,
                &format!("aliases (`*name`) in this file add more than {MAX_ALIAS_VALUES} values; this one crosses that bound"),
                "use fewer or smaller aliases; write the repeated part once, or split the file",
            ));
        }
        if self.expanded.bytes > MAX_ALIAS_BYTES {
            return Err(fatal(
                span,
                &format!(
                    "aliases (`*name`) in this file add more than {} MiB of text; this one crosses that bound",
                    MAX_ALIAS_BYTES >> 20
                ),
                "use fewer or smaller aliases; write the repeated part once, or split the file",
            ));
        }
        Ok(())
    }

    fn complete(&mut self, node: ConfigNode, anchor: usize) -> Result<(), ConfigError> {
        if anchor != 0 {
            let size = size_of(&node);
            self.anchors.insert(anchor, (node.clone(), size));
        }
        self.deliver(node);
        Ok(())
    }

    fn deliver(&mut self, node: ConfigNode) {
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some(node);
            return;
        };
        let problem = match &mut frame.body {
            Body::Seq(items) => {
                items.push(node);
                None
            }
            Body::Map {
                entries,
                key,
                merges,
            } => match std::mem::replace(key, Key::Awaiting) {
                Key::Awaiting => match node.kind {
                    NodeKind::Scalar { text, quoted } => {
                        *key = Key::Valid {
                            text,
                            span: node.span,
                            plain: !quoted,
                        };
                        None
                    }
                    _ => {
                        *key = Key::Invalid;
                        Some(ConfigError {
                            span: node.span,
                            path: frame.path.clone(),
                            message: format!("a key must be text, found {}", node.type_name()),
                            hint: Some("write each key as `name: value`".to_owned()),
                        })
                    }
                },
                Key::Invalid => None,
                Key::Valid {
                    text, plain: true, ..
                } if text == "<<" => {
                    merges.push(node);
                    None
                }
                Key::Valid { text, span, .. } => {
                    if let Some((_, first, _)) = entries.iter().find(|(k, _, _)| *k == text) {
                        let container = if frame.path.is_empty() {
                            "the file"
                        } else {
                            &frame.path
                        };
                        Some(ConfigError {
                            span,
                            path: join(&frame.path, &text),
                            message: format!("duplicate key `{text}` in `{container}`"),
                            hint: Some(format!(
                                "write each key once; the first `{text}` (line {}) is the one used",
                                first.line
                            )),
                        })
                    } else {
                        entries.push((text, span, node));
                        None
                    }
                }
            },
        };
        self.problems.extend(problem);
    }
}
