//! Handlers usable from a pipeline file with no code.
//!
//! - `passthrough`: every event becomes one output with the same key,
//!   headers and payload.
//! - `filter`: keeps JSON events whose field meets one condition
//!   (`{name: filter, field: amount, gte: 0}`), or for which a jq
//!   expression holds (`{name: filter, expr: '.amount >= 0'}`; the two
//!   forms exclude each other), and drops the rest; a payload that is not
//!   JSON is a permanent error (a dead letter), never a retry.
//! - `map`: reshapes JSON events with a jq expression, one output per
//!   result (`{name: map, expr: '{id: .order, total: .amount}'}`).
//! - `route`: sends each JSON event unchanged to the output named by the
//!   first route whose jq condition holds, else to `default`, else drops it
//!   (`{name: route, routes: [{when: '.amount > 100', to: big}], default: small}`).
//!
//! The expression language and its rules are in [`super::expr`].

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use spate_connector::config::quote_list;
use spate_connector::{ConfigReader, Event};

use super::{expr, passthrough_output, Context, Handler, HandlerError, HandlerFactory, Output};

/// Every built-in handler, each registered under its own name.
pub fn handlers() -> Vec<Arc<dyn HandlerFactory>> {
    vec![
        Arc::new(PassthroughBuiltin),
        Arc::new(FilterBuiltin),
        Arc::new(expr::MapBuiltin),
        Arc::new(expr::RouteBuiltin),
        Arc::new(super::http::HttpBuiltin),
        Arc::new(super::window::WindowBuiltin),
    ]
}

struct PassthroughBuiltin;

struct Passthrough;

#[async_trait]
impl Handler for Passthrough {
    /// Copies the event: computation only.
    fn is_cpu_only(&self) -> bool {
        true
    }

    async fn handle(&self, event: Event, _ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        Ok(vec![passthrough_output(event)])
    }
}

impl HandlerFactory for PassthroughBuiltin {
    fn name(&self) -> &'static str {
        "passthrough"
    }

    fn configure(&self, _config: &mut ConfigReader<'_>) -> Option<Arc<dyn Handler>> {
        Some(Arc::new(Passthrough))
    }

    fn summary(&self) -> &'static str {
        "forwards every event unchanged"
    }
}

/// The comparison a `filter` applies to its field.
#[derive(Debug, Clone, PartialEq)]
enum Condition {
    Exists(bool),
    Equals(Value),
    NotEquals(Value),
    OneOf(Vec<Value>),
    Greater(f64),
    GreaterOrEqual(f64),
    Less(f64),
    LessOrEqual(f64),
}

const CONDITIONS: &[&str] = &[
    "exists",
    "equals",
    "not_equals",
    "one_of",
    "gt",
    "gte",
    "lt",
    "lte",
];

impl Condition {
    fn holds(&self, field: Option<&Value>) -> bool {
        let number = field.and_then(Value::as_f64);
        match self {
            Self::Exists(wanted) => field.is_some_and(|v| !v.is_null()) == *wanted,
            Self::Equals(expected) => field == Some(expected),
            Self::NotEquals(expected) => field != Some(expected),
            Self::OneOf(choices) => field.is_some_and(|v| choices.contains(v)),
            Self::Greater(bound) => number.is_some_and(|n| n > *bound),
            Self::GreaterOrEqual(bound) => number.is_some_and(|n| n >= *bound),
            Self::Less(bound) => number.is_some_and(|n| n < *bound),
            Self::LessOrEqual(bound) => number.is_some_and(|n| n <= *bound),
        }
    }
}

struct FilterBuiltin;

/// Keeps JSON events whose field meets the condition.
struct Filter {
    /// JSON pointer built from the dotted field path.
    pointer: String,
    field: String,
    condition: Condition,
}

#[async_trait]
impl Handler for Filter {
    /// Parses and compares: computation only.
    fn is_cpu_only(&self) -> bool {
        true
    }

    async fn handle(&self, event: Event, _ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        let document: Value = serde_json::from_slice(&event.payload).map_err(|e| {
            HandlerError::permanent(format!(
                "filter on `{}`: payload is not JSON: {e}",
                self.field
            ))
        })?;
        if self.condition.holds(document.pointer(&self.pointer)) {
            Ok(vec![passthrough_output(event)])
        } else {
            Ok(Vec::new())
        }
    }
}

fn json_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

impl HandlerFactory for FilterBuiltin {
    fn name(&self) -> &'static str {
        "filter"
    }

    fn configure(&self, config: &mut ConfigReader<'_>) -> Option<Arc<dyn Handler>> {
        if config.has("expr") {
            for key in std::iter::once(&"field").chain(CONDITIONS) {
                if config.has(key) {
                    config.error_at_key(
                        key,
                        format!("`{key}` does not go with `expr`"),
                        Some(
                            "a filter takes either `expr: <jq condition>` or `field:` with one condition"
                                .to_owned(),
                        ),
                    );
                }
            }
            return expr::configure_filter(config);
        }
        let field = config.required_string(
            "field",
            Some(
                "name the JSON field to test, with dots for nesting: `field: reading.temperature`"
                    .to_owned(),
            ),
        );
        let mut conditions = Vec::new();
        if let Some(v) = config.bool("exists") {
            conditions.push(Condition::Exists(v));
        }
        if let Some(node) = config.node("equals") {
            conditions.push(Condition::Equals(json_value(&node.to_json_text())));
        }
        if let Some(node) = config.node("not_equals") {
            conditions.push(Condition::NotEquals(json_value(&node.to_json_text())));
        }
        if let Some(items) = config.list("one_of") {
            conditions.push(Condition::OneOf(
                items
                    .iter()
                    .map(|n| json_value(&n.to_json_text()))
                    .collect(),
            ));
        }
        for (key, make) in [
            ("gt", Condition::Greater as fn(f64) -> Condition),
            ("gte", Condition::GreaterOrEqual),
            ("lt", Condition::Less),
            ("lte", Condition::LessOrEqual),
        ] {
            if let Some(v) = config.f64(key) {
                conditions.push(make(v));
            }
        }
        let condition = match conditions.len() {
            1 => conditions.pop(),
            0 => {
                config.error(
                    config.span(),
                    config.path().to_owned(),
                    "filter needs a condition",
                    Some(format!("add one of {}", quote_list(CONDITIONS))),
                );
                None
            }
            _ => {
                config.error(
                    config.span(),
                    config.path().to_owned(),
                    "filter takes exactly one condition",
                    Some(
                        "use several functions, or a `map`/`route` handler, to combine conditions"
                            .to_owned(),
                    ),
                );
                None
            }
        };
        let field = field?;
        if field.split('.').any(str::is_empty) {
            config.error_at_key(
                "field",
                format!("`field` must name a JSON field, found `{field}`"),
                Some(
                    "write the field's name, with dots between nested names: `field: reading.temperature` (no empty name before, after or between dots)"
                        .to_owned(),
                ),
            );
            return None;
        }
        let pointer = format!(
            "/{}",
            field
                .replace('~', "~0")
                .replace('/', "~1")
                .replace('.', "/")
        );
        Some(Arc::new(Filter {
            pointer,
            field,
            condition: condition?,
        }))
    }

    fn summary(&self) -> &'static str {
        "keeps JSON events whose field meets a condition, or for which a jq `expr` holds; drops the rest"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(payload: &str) -> Event {
        crate::testing::event("t", 0, 0, payload.as_bytes())
    }

    fn ctx() -> Context {
        Context::new(Arc::from("f"), 1)
    }

    #[tokio::test]
    async fn filter_keeps_matching_drops_others_and_rejects_non_json() {
        let filter = Filter {
            pointer: "/reading/temperature".to_owned(),
            field: "reading.temperature".to_owned(),
            condition: Condition::GreaterOrEqual(-40.0),
        };
        let kept = filter
            .handle(event(r#"{"reading":{"temperature":21.5}}"#), &ctx())
            .await;
        assert_eq!(kept.map(|o| o.len()), Ok(1));
        let dropped = filter
            .handle(event(r#"{"reading":{"temperature":-90}}"#), &ctx())
            .await;
        assert_eq!(dropped.map(|o| o.len()), Ok(0));
        let missing = filter.handle(event(r#"{"reading":{}}"#), &ctx()).await;
        assert_eq!(missing.map(|o| o.len()), Ok(0));
        let error = filter.handle(event("not json"), &ctx()).await.unwrap_err();
        assert_eq!(error.kind, super::super::ErrorKind::Permanent);
        assert!(error
            .message
            .starts_with("filter on `reading.temperature`: payload is not JSON"));
    }
}
