//! The handlers behind `filter` with `expr:`, `map` and `route`, and the
//! built-ins that configure them from a function's `handler:` mapping.
//!
//! Each handler parses the payload once, runs its compiled expressions on
//! it synchronously (jaq's values are not `Send`, so none is held across an
//! `.await`), and keeps the event's key, headers and timestamp on every
//! output.

use std::sync::Arc;

use async_trait::async_trait;
use spate_connector::{ConfigNode, ConfigReader, Event, NodeKind, Span};

use super::place::read_expr;
use super::{parse_json, EvalError, Expr};
use crate::handler::{passthrough_output, BuiltinHandler, Context, Handler, HandlerError, Output};

/// Longest part of an expression quoted in a runtime error message.
const QUOTED: usize = 60;

/// A runtime failure of `what` (e.g. "map") as a permanent handler error
/// that quotes the start of the expression: the event is dead-lettered
/// with the message. The message is one line (it travels in a header):
/// runs of white space, line breaks included, become one space.
fn failure(what: &str, expr: &Expr, error: EvalError) -> HandlerError {
    let source = one_line(expr.source());
    let quoted: String = source.chars().take(QUOTED).collect();
    let ellipsis = if quoted.len() < source.len() {
        "…"
    } else {
        ""
    };
    HandlerError::permanent(format!(
        "{what} `{quoted}{ellipsis}`: {}",
        one_line(&error.to_string())
    ))
}

/// A payload that is not JSON as a permanent handler error of `what`.
fn not_json(what: &str, error: EvalError) -> HandlerError {
    HandlerError::permanent(format!("{what}: {}", one_line(&error.to_string())))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Builds the `filter` handler for a `handler:` mapping with `expr:`.
pub(crate) fn configure_filter(config: &mut ConfigReader<'_>) -> Option<Arc<dyn Handler>> {
    let expr = read_expr(config, "expr")?;
    Some(Arc::new(ExprFilter { expr }))
}

/// Keeps the events for which the expression holds.
struct ExprFilter {
    expr: Expr,
}

impl ExprFilter {
    fn keeps(&self, event: &Event) -> Result<bool, HandlerError> {
        let value = parse_json(&event.payload).map_err(|e| not_json("filter", e))?;
        self.expr
            .holds(value)
            .map_err(|e| failure("filter", &self.expr, e))
    }
}

#[async_trait]
impl Handler for ExprFilter {
    async fn handle(&self, event: Event, _ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        Ok(if self.keeps(&event)? {
            vec![passthrough_output(event)]
        } else {
            Vec::new()
        })
    }
}

/// `map`: `{name: map, expr: '<jq>'}` — each result of the expression
/// becomes one output (compact JSON) with the event's key, headers and
/// timestamp; `empty` and `null` results give none.
pub struct MapBuiltin;

struct Map {
    expr: Expr,
}

impl Map {
    fn outputs(&self, event: &Event) -> Result<Vec<Output>, HandlerError> {
        let value = parse_json(&event.payload).map_err(|e| not_json("map", e))?;
        let results = self
            .expr
            .json_results(value)
            .map_err(|e| failure("map", &self.expr, e))?;
        Ok(results
            .into_iter()
            .map(|payload| Output::from_event(event, payload))
            .collect())
    }
}

#[async_trait]
impl Handler for Map {
    async fn handle(&self, event: Event, _ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        self.outputs(&event)
    }
}

impl BuiltinHandler for MapBuiltin {
    fn configure(&self, config: &mut ConfigReader<'_>) -> Option<Arc<dyn Handler>> {
        if !config.has("expr") {
            config.missing(
                "expr",
                Some(
                    "write the new payload as a jq expression, e.g. `expr: '{id: .order, total: .amount}'`"
                        .to_owned(),
                ),
            );
            return None;
        }
        let expr = read_expr(config, "expr")?;
        Some(Arc::new(Map { expr }))
    }

    fn summary(&self) -> &'static str {
        "reshapes JSON events with a jq expression: each result is one output"
    }
}

/// `route`: `{name: route, routes: [{when: '<jq>', to: <output>}, …],
/// default: <output>}` — sends the event unchanged to the output of the
/// first route whose `when` holds, else to `default`, else drops it.
///
/// The names are the `name:` of the function's outputs: the loader checks
/// them (through [`BuiltinHandler::output_names`]), so a name that is no
/// output is a validation error.
pub struct RouteBuiltin;

struct Route {
    routes: Vec<(Expr, Arc<str>)>,
    default: Option<Arc<str>>,
}

impl Route {
    fn target(&self, event: &Event) -> Result<Option<Arc<str>>, HandlerError> {
        let value = parse_json(&event.payload).map_err(|e| not_json("route", e))?;
        for (when, to) in &self.routes {
            let holds = when
                .holds(value.clone())
                .map_err(|e| failure(&format!("route to `{to}` when"), when, e))?;
            if holds {
                return Ok(Some(to.clone()));
            }
        }
        Ok(self.default.clone())
    }
}

#[async_trait]
impl Handler for Route {
    async fn handle(&self, event: Event, _ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        Ok(match self.target(&event)? {
            Some(to) => {
                let mut output = passthrough_output(event);
                output.to = Some(to);
                vec![output]
            }
            None => Vec::new(),
        })
    }
}

const ROUTE_EXAMPLE: &str =
    "e.g. `routes: [{when: '.amount > 100', to: big}]`, where `big` is the `name:` of an output";

impl BuiltinHandler for RouteBuiltin {
    fn configure(&self, config: &mut ConfigReader<'_>) -> Option<Arc<dyn Handler>> {
        let default = config.string("default").map(Arc::from);
        let Some(items) = config.list("routes") else {
            config.missing("routes", Some(ROUTE_EXAMPLE.to_owned()));
            return None;
        };
        if items.is_empty() {
            config.error_at_key(
                "routes",
                "`routes` is empty",
                Some(format!("give at least one route, {ROUTE_EXAMPLE}")),
            );
            return None;
        }
        let mut routes = Vec::with_capacity(items.len());
        let mut valid = true;
        for (index, node) in items.into_iter().enumerate() {
            let path = format!("{}[{index}]", config.child_path("routes"));
            let mut item = ConfigReader::new(node, path, config.errors());
            if !item.has("when") {
                item.missing(
                    "when",
                    Some(
                        "write the condition as a jq expression, e.g. `when: '.amount > 100'`"
                            .to_owned(),
                    ),
                );
            }
            let when = read_expr(&mut item, "when");
            let to = item.required_string(
                "to",
                Some("name the output to send matching events to (its `name:`)".to_owned()),
            );
            match (when, to) {
                (Some(when), Some(to)) => routes.push((when, Arc::from(to))),
                _ => valid = false,
            }
        }
        valid.then(|| Arc::new(Route { routes, default }) as Arc<dyn Handler>)
    }

    fn summary(&self) -> &'static str {
        "sends each JSON event to the output of the first route whose jq condition holds"
    }

    fn output_names(&self, settings: &ConfigNode) -> Vec<(String, Span)> {
        let targets = match settings.get("routes").map(|routes| &routes.kind) {
            Some(NodeKind::Seq(items)) => items.iter().filter_map(|r| r.get("to")).collect(),
            _ => Vec::new(),
        };
        targets
            .into_iter()
            .chain(settings.get("default"))
            .filter_map(|node| Some((node.as_text()?.to_owned(), node.span)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::ErrorKind;
    use bytes::Bytes;
    use spate_connector::{Headers, Position};

    fn event(payload: &str) -> Event {
        Event {
            key: Some(Bytes::from_static(b"k")),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            headers: Headers::new(),
            timestamp_ms: Some(7),
            position: Position {
                stream: Arc::from("t"),
                partition: 0,
                offset: 0,
            },
        }
    }

    fn expr(source: &str) -> Expr {
        Expr::compile(source).unwrap_or_else(|e| panic!("{source:?}: {e:?}"))
    }

    #[test]
    fn route_picks_the_first_match_then_the_default() {
        let route = Route {
            routes: vec![
                (expr(".amount > 100"), Arc::from("big")),
                (expr(".country == \"DE\""), Arc::from("de")),
            ],
            default: Some(Arc::from("small")),
        };
        let to = |payload: &str| {
            route
                .target(&event(payload))
                .map(|t| t.map(|t| t.to_string()))
        };
        assert_eq!(
            to(r#"{"amount": 500, "country": "DE"}"#),
            Ok(Some("big".into()))
        );
        assert_eq!(
            to(r#"{"amount": 5, "country": "DE"}"#),
            Ok(Some("de".into()))
        );
        assert_eq!(to(r#"{"amount": 5}"#), Ok(Some("small".into())));
        let error = to("nope").err().unwrap_or_else(|| panic!("accepted"));
        assert_eq!(error.kind, ErrorKind::Permanent);
        assert_eq!(
            error.message,
            "route: payload is not JSON: expected ident at line 1 column 2"
        );
    }

    #[test]
    fn map_keeps_the_event_metadata_on_every_output() {
        let map = Map {
            expr: expr(".items[] | {sku}"),
        };
        let outputs = map
            .outputs(&event(r#"{"items": [{"sku": "a"}, {"sku": "b"}]}"#))
            .unwrap_or_default();
        assert_eq!(outputs.len(), 2);
        assert_eq!(
            outputs[1].record.payload,
            Bytes::from_static(br#"{"sku":"b"}"#)
        );
        assert_eq!(outputs[1].record.key, Some(Bytes::from_static(b"k")));
        assert_eq!(outputs[1].record.timestamp_ms, Some(7));
        assert_eq!(outputs[1].to, None);
    }
}
