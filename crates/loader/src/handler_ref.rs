//! The `handler:` key of a function: a registered name, or a mapping
//! `{name: <builtin>, <builtin settings>}`.
//!
//! A Rust function registered in code takes no settings, so a mapping that
//! gives it more than `name` is an error. A built-in reads its settings
//! through a [`ConfigReader`] over the mapping (an empty one when the
//! handler is named by a plain string), so its unknown keys are reported
//! like any other.

use std::sync::Arc;

use spate_connector::config::{did_you_mean, quote_list, ConfigErrors};
use spate_connector::{ConfigError, ConfigNode, ConfigReader, NodeKind, Span};

use crate::registry::{HandlerEntry, Registry};
use spate_connector::Handler;

const EXAMPLE: &str = "e.g. `handler: passthrough`, or a built-in with settings: `handler: {name: filter, field: temperature, gte: -40}`";

/// A configured handler as the loader keeps it.
pub(super) struct ReadHandler {
    /// Its registered name.
    pub name: String,
    /// The handler.
    pub handler: Arc<dyn Handler>,
    /// The output names it sends events to, where written (see
    /// [`HandlerFactory::output_names`](spate_connector::handler_factory::HandlerFactory::output_names)).
    pub targets: Vec<(String, Span)>,
}

/// Resolves and configures the handler written at `node` (the value of
/// `handler:` at `path`); every problem goes into `errors`.
pub(super) fn read_handler(
    node: &ConfigNode,
    path: &str,
    registry: &Registry,
    errors: &ConfigErrors,
) -> Option<ReadHandler> {
    let error = |node: &ConfigNode, path: String, message: String, hint: &str| {
        errors.borrow_mut().push(ConfigError {
            span: node.span,
            path,
            message,
            hint: Some(hint.to_owned()),
        });
    };
    let name_node = match &node.kind {
        NodeKind::Scalar { .. } => node,
        NodeKind::Map(_) => match node.get("name") {
            Some(name) if name.kind != NodeKind::Null => name,
            _ => {
                error(
                    node,
                    format!("{path}.name"),
                    format!("missing required field `name` in `{path}`"),
                    "name the handler to configure, e.g. `name: filter`",
                );
                return None;
            }
        },
        _ => {
            error(
                node,
                path.to_owned(),
                format!(
                    "`handler` must be a handler name or a mapping, found {}",
                    node.type_name()
                ),
                EXAMPLE,
            );
            return None;
        }
    };
    let Some(name) = name_node.as_text() else {
        error(
            name_node,
            format!("{path}.name"),
            format!(
                "the handler's `name` must be text, found {}",
                name_node.type_name()
            ),
            EXAMPLE,
        );
        return None;
    };
    let Some(entry) = registry.handler(name) else {
        let names: Vec<&str> = registry.handler_names().collect();
        let hint = match did_you_mean(name, names.iter().copied()) {
            Some(best) => format!("did you mean `{best}`? (registered: {})", quote_list(&names)),
            None if names.is_empty() => "register it with `Registry::register` before loading the file".to_owned(),
            None => format!(
                "registered handlers: {}; a Rust function must be registered with `Registry::register` before the file is loaded",
                quote_list(&names)
            ),
        };
        error(
            name_node,
            path.to_owned(),
            format!("unknown handler `{name}`"),
            &hint,
        );
        return None;
    };
    instantiate(entry, node, name_node, name, path, errors)
}

/// The handler `entry` names, configured from `node` (a function takes no
/// settings; a built-in reads its own).
fn instantiate(
    entry: &HandlerEntry,
    node: &ConfigNode,
    name_node: &ConfigNode,
    name: &str,
    path: &str,
    errors: &ConfigErrors,
) -> Option<ReadHandler> {
    match entry {
        HandlerEntry::Function(handler) => {
            if let NodeKind::Map(entries) = &node.kind {
                if let Some((key, span, _)) = entries.iter().find(|(k, _, _)| k != "name") {
                    errors.borrow_mut().push(ConfigError {
                        span: *span,
                        path: format!("{path}.{key}"),
                        message: format!("handler `{name}` takes no settings"),
                        hint: Some(format!(
                            "`{name}` is a function registered in code; write `handler: {name}`"
                        )),
                    });
                }
            }
            Some(ReadHandler {
                name: name.to_owned(),
                handler: handler.clone(),
                targets: Vec::new(),
            })
        }
        HandlerEntry::Builtin(builtin) => {
            let empty = ConfigNode {
                kind: NodeKind::Map(Vec::new()),
                span: node.span,
            };
            let settings = match node.kind {
                NodeKind::Map(_) => node,
                _ => &empty,
            };
            let mark = errors.borrow().len();
            let mut reader = ConfigReader::new(settings, path, errors);
            reader.string("name");
            let handler = builtin.configure(&mut reader);
            if handler.is_none() && errors.borrow().len() == mark {
                reader.error(
                    name_node.span,
                    path.to_owned(),
                    format!("handler `{name}` did not accept these settings"),
                    Some(builtin.summary().to_owned()),
                );
            }
            Some(ReadHandler {
                name: name.to_owned(),
                handler: handler?,
                targets: builtin.output_names(settings),
            })
        }
    }
}
