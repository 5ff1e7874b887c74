//! One entry of `functions:`: its name, inputs, handler, outputs, dead
//! letter and run settings, then the delivery rules between them. Every
//! part is read even when an earlier one failed, so all problems of a
//! function are reported together.

use spate_connector::config::{did_you_mean, quote_list, ConfigErrors};
use spate_connector::{ConfigError, ConfigNode, ConfigReader, NodeKind, Span};

use super::is_valid_name;
use super::tuning::{read_concurrency, read_limits, read_retry};
use crate::connector::{self, LoadedSink, LoadedSource, Role};
use crate::handler_ref::{read_handler, ReadHandler};
use crate::limits;
use crate::registry::Registry;
use crate::spec::{Delivery, FunctionSpec, Ordering, RunPolicy, TransactionPolicy};

/// Reads the `functions:` list; `None` if any function is invalid.
pub(super) fn read_functions(
    node: &ConfigNode,
    registry: &Registry,
    errors: &ConfigErrors,
) -> Option<Vec<FunctionSpec>> {
    let push = |message: String, hint: &str| {
        errors.borrow_mut().push(ConfigError {
            span: node.span,
            path: "functions".to_owned(),
            message,
            hint: Some(hint.to_owned()),
        });
    };
    let NodeKind::Seq(items) = &node.kind else {
        push(
            format!("`functions` must be a list, found {}", node.type_name()),
            "start each function with `- name: ...` under `functions:`",
        );
        return None;
    };
    if items.is_empty() {
        push(
            "`functions` is empty".to_owned(),
            "declare at least one function: `- name: ...`",
        );
        return None;
    }
    let mut names: Vec<(String, Span)> = Vec::new();
    let mut functions = Vec::new();
    let mut complete = true;
    for (index, item) in items.iter().enumerate() {
        match read_function(
            item,
            &format!("functions[{index}]"),
            registry,
            errors,
            &mut names,
        ) {
            Some(function) => functions.push(function),
            None => complete = false,
        }
    }
    complete.then_some(functions)
}

fn read_function(
    node: &ConfigNode,
    path: &str,
    registry: &Registry,
    errors: &ConfigErrors,
    names: &mut Vec<(String, Span)>,
) -> Option<FunctionSpec> {
    if !matches!(node.kind, NodeKind::Map(_)) {
        errors.borrow_mut().push(ConfigError {
            span: node.span,
            path: path.to_owned(),
            message: format!(
                "`{path}` must be a function mapping, found {}",
                node.type_name()
            ),
            hint: Some(
                "write `- name: ...` followed by `input:`, `handler:` and `dead_letter:` lines"
                    .to_owned(),
            ),
        });
        return None;
    }
    let mut f = ConfigReader::new(node, path, errors);
    let name = read_name(&mut f, names);
    let inputs = read_inputs(&mut f, registry);
    let handler = match f.node("handler") {
        Some(handler) => read_handler(handler, &f.child_path("handler"), registry, errors),
        None => {
            f.missing(
                "handler",
                Some("name a registered handler, e.g. `handler: passthrough`".to_owned()),
            );
            None
        }
    };
    let outputs = read_outputs(&mut f, registry);
    let dead_letter = read_dead_letter(&mut f, registry, errors);
    let delivery = read_delivery(&mut f);
    let ordering = read_ordering(&mut f);
    let concurrency = read_concurrency(f.section("concurrency"));
    let retry = read_retry(f.section("retry"));
    let max_in_flight = read_limits(
        f.section("max_in_flight"),
        (&limits::FUNCTION_EVENTS, &limits::FUNCTION_BYTES),
    );
    let commit_interval = limits::COMMIT_INTERVAL.read(&mut f, "commit_interval");
    let drain_timeout = limits::DRAIN_TIMEOUT.read(&mut f, "drain_timeout");
    let transaction = read_transaction(&mut f, delivery);

    if let (Some(delivery), Some(inputs), Some(outputs), Some(dead_letter)) = (
        delivery,
        inputs.as_deref(),
        outputs.as_deref(),
        dead_letter.as_ref(),
    ) {
        let mut sinks: Vec<(&LoadedSink, Role)> =
            outputs.iter().map(|o| (o, Role::Output)).collect();
        sinks.push((dead_letter, Role::DeadLetter));
        connector::check_delivery(delivery, inputs, &sinks, registry, errors);
    }
    if let (Some(handler), Some(outputs)) = (handler.as_ref(), outputs.as_deref()) {
        check_targets(&f, handler, outputs);
    }
    if let Some(handler) = handler.as_ref() {
        check_state(
            &f,
            handler,
            ordering,
            delivery,
            outputs.as_deref(),
            dead_letter.as_ref(),
        );
    }
    let ReadHandler {
        name: handler_name,
        handler,
        ..
    } = handler?;
    Some(FunctionSpec {
        name: name?,
        span: node.span,
        inputs: inputs?.into_iter().map(|i| i.spec).collect(),
        handler_name,
        handler,
        outputs: outputs?.into_iter().map(|o| o.spec).collect(),
        dead_letter: dead_letter?.spec,
        policy: RunPolicy {
            delivery: delivery?,
            ordering: ordering?,
            concurrency: concurrency?,
            retry: retry?,
            max_in_flight: max_in_flight?,
            commit_interval: commit_interval?,
            drain_timeout: drain_timeout?,
            transaction: transaction?,
        },
    })
}

/// `delivery:` (default `at_least_once`).
fn read_delivery(f: &mut ConfigReader<'_>) -> Option<Delivery> {
    match f.has("delivery") {
        false => Some(Delivery::AtLeastOnce),
        true => match f.one_of(
            "delivery",
            &["at_least_once", "exactly_once", "at_most_once"],
        ) {
            Some("exactly_once") => Some(Delivery::ExactlyOnce),
            Some("at_most_once") => Some(Delivery::AtMostOnce),
            Some(_) => Some(Delivery::AtLeastOnce),
            None => None,
        },
    }
}

/// `ordering:` (default `partition`).
fn read_ordering(f: &mut ConfigReader<'_>) -> Option<Ordering> {
    match f.has("ordering") {
        false => Some(Ordering::Partition),
        true => match f.one_of("ordering", &["partition", "key", "none"]) {
            Some("key") => Some(Ordering::Key),
            Some("none") => Some(Ordering::None),
            Some(_) => Some(Ordering::Partition),
            None => None,
        },
    }
}

/// `dead_letter:`, required.
fn read_dead_letter(
    f: &mut ConfigReader<'_>,
    registry: &Registry,
    errors: &ConfigErrors,
) -> Option<LoadedSink> {
    match f.node("dead_letter") {
        Some(node) => connector::read_sink(
            node,
            &f.child_path("dead_letter"),
            Role::DeadLetter,
            registry,
            errors,
        ),
        None => {
            f.missing(
                "dead_letter",
                Some("say where events that cannot be handled go, e.g. `dead_letter: {type: file, path: out/dead.jsonl}`".to_owned()),
            );
            None
        }
    }
}

/// Every output name the handler routes to is an output of the function
/// (otherwise every event routed there would be dead-lettered at run time).
fn check_targets(f: &ConfigReader<'_>, handler: &ReadHandler, outputs: &[LoadedSink]) {
    let names: Vec<&str> = outputs.iter().map(|o| o.spec.name.as_str()).collect();
    for (target, span) in &handler.targets {
        if names.contains(&target.as_str()) {
            continue;
        }
        let hint = match (did_you_mean(target, names.iter().copied()), names.is_empty()) {
            (_, true) => "this function has no `outputs:`; add one with `name: ...`".to_owned(),
            (Some(best), false) => format!(
                "did you mean `{best}`? (outputs: {})",
                quote_list(&names)
            ),
            (None, false) => format!(
                "name one of the function's outputs: {} (an output without `name:` is named by its `type`)",
                quote_list(&names)
            ),
        };
        f.error(
            *span,
            f.child_path("handler"),
            format!(
                "handler `{}` sends events to `{target}`, which is not an output of this function",
                handler.name
            ),
            Some(hint),
        );
    }
}

/// A handler that keeps state per key needs its events of one key in
/// order, and under `exactly_once` a session that commits the state with
/// the positions (a database output): the engine refuses to start
/// otherwise.
fn check_state(
    f: &ConfigReader<'_>,
    handler: &ReadHandler,
    ordering: Option<Ordering>,
    delivery: Option<Delivery>,
    outputs: Option<&[LoadedSink]>,
    dead_letter: Option<&LoadedSink>,
) {
    if handler.handler.state().is_none() {
        return;
    }
    if ordering == Some(Ordering::None) {
        f.error_at_key(
            "ordering",
            format!(
                "handler `{}` keeps state per key, and `ordering: none` would run one key's events at the same time and out of order",
                handler.name
            ),
            Some("use `ordering: key` (keys in parallel) or `partition`".to_owned()),
        );
    }
    let (Some(Delivery::ExactlyOnce), Some(outputs), Some(dead_letter)) =
        (delivery, outputs, dead_letter)
    else {
        return;
    };
    let in_database = outputs
        .iter()
        .chain(std::iter::once(dead_letter))
        .all(|sink| {
            sink.spec.capabilities.exactly_once && sink.spec.capabilities.durable_positions
        });
    if !in_database {
        f.error_at_key(
            "delivery",
            format!(
                "handler `{}` keeps state between events, and under `exactly_once` that state must commit with the positions, which only a database output stores",
                handler.name
            ),
            Some("write this function's outputs and dead letter to a database that stores positions (postgres), or use `delivery: at_least_once` (state kept in memory, rebuilt from nothing after a restart)".to_owned()),
        );
    }
}

/// `transaction_interval` and `transaction_max_events`, which only mean
/// something under `exactly_once`.
fn read_transaction(
    f: &mut ConfigReader<'_>,
    delivery: Option<Delivery>,
) -> Option<TransactionPolicy> {
    for key in ["transaction_interval", "transaction_max_events"] {
        if f.has(key) && delivery.is_some_and(|d| d != Delivery::ExactlyOnce) {
            f.error_at_key(
                key,
                format!("`{key}` only applies to `delivery: exactly_once`"),
                Some(format!("remove `{key}`, or set `delivery: exactly_once`")),
            );
        }
    }
    let interval = limits::TRANSACTION_INTERVAL.read(f, "transaction_interval");
    let max_events = limits::TRANSACTION_MAX_EVENTS.read(f, "transaction_max_events");
    Some(TransactionPolicy {
        interval: interval?,
        max_events: usize::try_from(max_events?.0).ok()?,
    })
}

fn read_name(f: &mut ConfigReader<'_>, names: &mut Vec<(String, Span)>) -> Option<String> {
    let name = f.required_string(
        "name",
        Some("give each function a unique name, e.g. `name: enrich-telemetry`".to_owned()),
    )?;
    let span = f.node("name").map_or(f.span(), |n| n.span);
    if !is_valid_name(&name) {
        f.error_at_key(
            "name",
            format!("function name `{name}` may only hold letters, digits, `_`, `.` and `-`"),
            Some(
                "it names the function in logs and metrics, e.g. `name: enrich-telemetry`"
                    .to_owned(),
            ),
        );
        return None;
    }
    if let Some((_, first)) = names.iter().find(|(n, _)| *n == name) {
        f.error_at_key(
            "name",
            format!("duplicate function name `{name}`"),
            Some(format!(
                "function names must be unique in a file; the other `{name}` is at line {}",
                first.line
            )),
        );
        return None;
    }
    names.push((name.clone(), span));
    Some(name)
}

fn read_inputs(f: &mut ConfigReader<'_>, registry: &Registry) -> Option<Vec<LoadedSource>> {
    let errors = f.errors();
    let one = f.node("input");
    let many = f.node("inputs");
    let mut loaded = Vec::new();
    let mut complete = true;
    if let Some(node) = one {
        match connector::read_source(node, &f.child_path("input"), registry, errors) {
            Some(source) => loaded.push(source),
            None => complete = false,
        }
    }
    if let Some(node) = many {
        let NodeKind::Seq(items) = &node.kind else {
            f.error_at_key(
                "inputs",
                format!("`inputs` must be a list of connectors, found {}", node.type_name()),
                Some("write one connector as `input: {type: ...}`, or a list as `inputs:` then `- type: ...` items".to_owned()),
            );
            return None;
        };
        if items.is_empty() {
            f.error_at_key(
                "inputs",
                "`inputs` is empty",
                Some("list at least one connector to read from: `- type: ...`".to_owned()),
            );
            complete = false;
        }
        for (index, item) in items.iter().enumerate() {
            let path = format!("{}[{index}]", f.child_path("inputs"));
            match connector::read_source(item, &path, registry, errors) {
                Some(source) => loaded.push(source),
                None => complete = false,
            }
        }
    }
    match (one, many) {
        (Some(_), Some(_)) => {
            f.error_at_key(
                "inputs",
                "a function takes `input` or `inputs`, not both",
                Some("move the `input` connector into the `inputs` list, or drop one".to_owned()),
            );
            None
        }
        (None, None) => {
            f.missing(
                "input",
                Some("name the connector to read from, e.g. `input: {type: generate}` (or a list under `inputs:`)".to_owned()),
            );
            None
        }
        _ => complete.then_some(loaded),
    }
}

fn read_outputs(f: &mut ConfigReader<'_>, registry: &Registry) -> Option<Vec<LoadedSink>> {
    let errors = f.errors();
    let Some(node) = f.node("outputs") else {
        return Some(Vec::new());
    };
    let NodeKind::Seq(items) = &node.kind else {
        f.error_at_key(
            "outputs",
            format!(
                "`outputs` must be a list of connectors, found {}",
                node.type_name()
            ),
            Some("write `outputs:` then one `- type: ...` item per output".to_owned()),
        );
        return None;
    };
    let mut loaded = Vec::new();
    let mut complete = true;
    for (index, item) in items.iter().enumerate() {
        let path = format!("{}[{index}]", f.child_path("outputs"));
        match connector::read_sink(item, &path, Role::Output, registry, errors) {
            Some(sink) => loaded.push(sink),
            None => complete = false,
        }
    }
    connector::check_output_names(items, &f.child_path("outputs"), errors);
    complete.then_some(loaded)
}
