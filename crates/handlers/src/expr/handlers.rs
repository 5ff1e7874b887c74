//! The handlers behind `filter` with `expr:`, `map` and `route`, and the
//! built-ins that configure them from a function's `handler:` mapping.
//!
//! Each handler evaluates its compiled expressions on the payload — inline
//! when they are proven bounded, else in the sandbox within the handler's
//! `limits:` — and keeps the event's key, headers and timestamp on every
//! output. jaq's values are not `Send`, so none is held across an `.await`.

use std::sync::Arc;

use async_trait::async_trait;
use spate_connector::{ConfigNode, ConfigReader, Event, NodeKind, Span};

use super::limits::{read_limits, read_vars};
use super::place::read_expr;
use super::{parse_json, EvalError, Expr, Limits, Mode, Outcome};
use crate::{passthrough_output, Context, Handler, HandlerError, HandlerFactory, Output};

/// Longest part of an expression quoted in a runtime error message.
const QUOTED: usize = 60;

/// Dead-letter reason of an evaluation that exceeded its stack or memory.
pub const REASON_RESOURCE_LIMIT: &str = "resource-limit";

/// Dead-letter reason of an evaluation that exceeded its time.
pub const REASON_TIMEOUT: &str = "timeout";

/// A failure of `what` (e.g. "map") as a handler error that quotes the
/// start of the expression: permanent (the event is dead-lettered with the
/// message, with reason `resource-limit` or `timeout` where they apply),
/// except a sandbox that could not start, which is retried. The message is
/// one line (it travels in a header): runs of white space, line breaks
/// included, become one space.
fn failure(what: &str, expr: &Expr, error: EvalError) -> HandlerError {
    if let EvalError::NotJson(_) = error {
        return HandlerError::permanent(format!("{what}: {}", one_line(&error.to_string())));
    }
    let source = one_line(expr.source());
    let quoted: String = source.chars().take(QUOTED).collect();
    let ellipsis = if quoted.len() < source.len() {
        "…"
    } else {
        ""
    };
    let message = format!(
        "{what} `{quoted}{ellipsis}`: {}",
        one_line(&error.to_string())
    );
    match error {
        EvalError::ResourceLimit(_) => {
            HandlerError::permanent(message).with_reason(REASON_RESOURCE_LIMIT)
        }
        EvalError::Timeout(_) => HandlerError::permanent(message).with_reason(REASON_TIMEOUT),
        EvalError::Unavailable(_) => HandlerError::retryable(message),
        _ => HandlerError::permanent(message),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads `vars:`, the expression under `key` and `limits:`.
fn read_one(config: &mut ConfigReader<'_>, key: &'static str) -> Option<(Expr, Limits)> {
    let vars = read_vars(config);
    let expr = read_expr(config, key, vars.as_deref().unwrap_or_default());
    let limits = read_limits(config);
    Some((expr?, limits?)).filter(|_| vars.is_some())
}

/// Builds the `filter` handler for a `handler:` mapping with `expr:`.
pub(crate) fn configure_filter(config: &mut ConfigReader<'_>) -> Option<Arc<dyn Handler>> {
    let (expr, limits) = read_one(config, "expr")?;
    Some(Arc::new(ExprFilter { expr, limits }))
}

/// Keeps the events for which the expression holds.
struct ExprFilter {
    expr: Expr,
    limits: Limits,
}

/// Whether `expr` holds on `payload`.
async fn holds(
    what: &str,
    expr: &Expr,
    limits: &Limits,
    payload: &[u8],
) -> Result<bool, HandlerError> {
    match expr.evaluate(payload, Mode::Holds, limits).await {
        Ok(Outcome::Holds(holds)) => Ok(holds),
        Ok(Outcome::Results(_)) => Err(failure(
            what,
            expr,
            EvalError::Failed("unexpected results".to_owned()),
        )),
        Err(error) => Err(failure(what, expr, error)),
    }
}

impl ExprFilter {
    async fn keeps(&self, event: &Event) -> Result<bool, HandlerError> {
        holds("filter", &self.expr, &self.limits, &event.payload).await
    }
}

#[async_trait]
impl Handler for ExprFilter {
    /// Inline when the expression was proven bounded; else it waits for the sandbox.
    fn is_cpu_only(&self) -> bool {
        self.expr.is_inline()
    }

    async fn handle(&self, event: Event, _ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        Ok(if self.keeps(&event).await? {
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
    limits: Limits,
}

impl Map {
    async fn outputs(&self, event: &Event) -> Result<Vec<Output>, HandlerError> {
        let results = match self
            .expr
            .evaluate(&event.payload, Mode::Results, &self.limits)
            .await
        {
            Ok(Outcome::Results(results)) => results,
            Ok(Outcome::Holds(_)) => Vec::new(),
            Err(error) => return Err(failure("map", &self.expr, error)),
        };
        Ok(results
            .into_iter()
            .map(|payload| Output::from_event(event, payload))
            .collect())
    }
}

#[async_trait]
impl Handler for Map {
    /// Inline when the expression was proven bounded; else it waits for the sandbox.
    fn is_cpu_only(&self) -> bool {
        self.expr.is_inline()
    }

    async fn handle(&self, event: Event, _ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        self.outputs(&event).await
    }
}

impl HandlerFactory for MapBuiltin {
    fn name(&self) -> &'static str {
        "map"
    }

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
        let (expr, limits) = read_one(config, "expr")?;
        Some(Arc::new(Map { expr, limits }))
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
/// them (through [`HandlerFactory::output_names`]), so a name that is no
/// output is a validation error.
pub struct RouteBuiltin;

struct Route {
    routes: Vec<(Expr, Arc<str>)>,
    default: Option<Arc<str>>,
    limits: Limits,
}

/// How far [`Route::scan`] got.
enum Scan {
    /// The route at this index holds.
    Holds(usize),
    /// The route at this index must run in the sandbox.
    Sandboxed(usize),
    /// No route from the start index on holds.
    End,
}

impl Route {
    /// Evaluates the inline conditions from `start` on (parsing the payload
    /// once) until one holds or one must run in the sandbox.
    fn scan(&self, payload: &[u8], start: usize) -> Result<Scan, HandlerError> {
        let mut value = None;
        for (index, (when, to)) in self.routes.iter().enumerate().skip(start) {
            if !when.is_inline() {
                return Ok(Scan::Sandboxed(index));
            }
            let value = match &mut value {
                Some(value) => value,
                None => value.insert(parse_json(payload).map_err(|e| failure("route", when, e))?),
            };
            let holds = when
                .holds(value.clone())
                .map_err(|e| failure(&format!("route to `{to}` when"), when, e))?;
            if holds {
                return Ok(Scan::Holds(index));
            }
        }
        Ok(Scan::End)
    }

    async fn target(&self, event: &Event) -> Result<Option<Arc<str>>, HandlerError> {
        let mut start = 0;
        loop {
            match self.scan(&event.payload, start)? {
                Scan::Holds(index) => return Ok(Some(self.routes[index].1.clone())),
                Scan::End => return Ok(self.default.clone()),
                Scan::Sandboxed(index) => {
                    let (when, to) = &self.routes[index];
                    let what = format!("route to `{to}` when");
                    if holds(&what, when, &self.limits, &event.payload).await? {
                        return Ok(Some(to.clone()));
                    }
                    start = index + 1;
                }
            }
        }
    }
}

#[async_trait]
impl Handler for Route {
    /// Inline when every expression was proven bounded; else they wait for the sandbox.
    fn is_cpu_only(&self) -> bool {
        self.routes.iter().all(|(expr, _)| expr.is_inline())
    }

    async fn handle(&self, event: Event, _ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        Ok(match self.target(&event).await? {
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

impl HandlerFactory for RouteBuiltin {
    fn name(&self) -> &'static str {
        "route"
    }

    fn configure(&self, config: &mut ConfigReader<'_>) -> Option<Arc<dyn Handler>> {
        let default = config.string("default").map(Arc::from);
        let vars = read_vars(config);
        let limits = read_limits(config);
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
        let mut valid = vars.is_some() && limits.is_some();
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
            let when = read_expr(&mut item, "when", vars.as_deref().unwrap_or_default());
            let to = item.required_string(
                "to",
                Some("name the output to send matching events to (its `name:`)".to_owned()),
            );
            match (when, to) {
                (Some(when), Some(to)) => routes.push((when, Arc::from(to))),
                _ => valid = false,
            }
        }
        let limits = limits?;
        valid.then(|| {
            Arc::new(Route {
                routes,
                default,
                limits,
            }) as Arc<dyn Handler>
        })
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
    use crate::ErrorKind;
    use bytes::Bytes;

    fn event(payload: &str) -> Event {
        Event {
            key: Some(Bytes::from_static(b"k")),
            timestamp_ms: Some(7),
            ..crate::testing::event("t", 0, 0, payload.as_bytes())
        }
    }

    fn expr(source: &str) -> Expr {
        Expr::compile(source).unwrap_or_else(|e| panic!("{source:?}: {e:?}"))
    }

    #[tokio::test]
    async fn route_picks_the_first_match_then_the_default() {
        let route = Route {
            routes: vec![
                (expr(".amount > 100"), Arc::from("big")),
                (expr(".country == \"DE\""), Arc::from("de")),
            ],
            default: Some(Arc::from("small")),
            limits: Limits::default(),
        };
        let to = |payload: &'static str| {
            let route = &route;
            async move {
                route
                    .target(&event(payload))
                    .await
                    .map(|t| t.map(|t| t.to_string()))
            }
        };
        assert_eq!(
            to(r#"{"amount": 500, "country": "DE"}"#).await,
            Ok(Some("big".into()))
        );
        assert_eq!(
            to(r#"{"amount": 5, "country": "DE"}"#).await,
            Ok(Some("de".into()))
        );
        assert_eq!(to(r#"{"amount": 5}"#).await, Ok(Some("small".into())));
        let error = to("nope").await.err().unwrap_or_else(|| panic!("accepted"));
        assert_eq!(error.kind, ErrorKind::Permanent);
        assert_eq!(
            error.message,
            "route: payload is not JSON: expected ident at line 1 column 2"
        );
    }

    #[tokio::test]
    async fn map_keeps_the_event_metadata_on_every_output() {
        let map = Map {
            expr: expr(".items[] | {sku}"),
            limits: Limits::default(),
        };
        let outputs = map
            .outputs(&event(r#"{"items": [{"sku": "a"}, {"sku": "b"}]}"#))
            .await
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
