//! Warnings (not errors) for ordering a function asks for that its source
//! cannot keep under failures or with several processes: the delivery and
//! ordering contract in the README, as far as the file shows it.
//!
//! A warning never stops a pipeline: the file is valid and runs as written;
//! the warning says where the written `ordering:` promises more than the
//! source keeps, and what to change. Only an `ordering:` written in the file
//! is checked (the default, `partition`, is not something the file asks for).
//! Warnings are computed from the parsed tree alone, after the file loaded
//! without errors, so this module adds nothing to what makes a file valid.

use spate_connector::{ConfigError, ConfigNode, NodeKind};

/// Every warning of a file that loaded without errors, in file order.
pub(super) fn warnings(root: &ConfigNode) -> Vec<ConfigError> {
    let Some(NodeKind::Seq(functions)) = root.get("functions").map(|n| &n.kind) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for (index, function) in functions.iter().enumerate() {
        let Some(ordering) = function.get("ordering") else {
            continue;
        };
        let mode = ordering.as_text().unwrap_or_default();
        if !matches!(mode, "key" | "partition") {
            continue;
        }
        let path = format!("functions[{index}]");
        for (input_path, input) in inputs(function, &path) {
            if let Some((message, hint)) = caveat(input, mode) {
                found.push(ConfigError {
                    span: ordering.span,
                    path: format!("{path}.ordering"),
                    message: format!(
                        "`ordering: {mode}` with the input at `{input_path}`: {message}"
                    ),
                    hint: Some(hint.to_owned()),
                });
            }
        }
    }
    found
}

/// The function's inputs with their paths (`input`, or `inputs[i]`).
fn inputs<'n>(function: &'n ConfigNode, path: &str) -> Vec<(String, &'n ConfigNode)> {
    if let Some(input) = function.get("input") {
        return vec![(format!("{path}.input"), input)];
    }
    match function.get("inputs").map(|n| &n.kind) {
        Some(NodeKind::Seq(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| (format!("{path}.inputs[{i}]"), item))
            .collect(),
        _ => Vec::new(),
    }
}

/// What `input` cannot keep of `ordering: mode`, and what to do about it.
fn caveat(input: &ConfigNode, mode: &str) -> Option<(String, &'static str)> {
    let kind = input.get("type").and_then(ConfigNode::as_text)?;
    match kind {
        "jetstream" if input.get("partitions").is_none() => Some((
            format!(
                "a JetStream shared durable is a work queue: with several processes one {unit}'s \
                 events run in different processes, at once and out of order, and after a crash \
                 the unacknowledged events come back (after `ack_wait`) behind newer ones",
                unit = unit(mode)
            ),
            "to keep the order across processes and crashes use subject partitions \
             (`partitions:` and `partition_subject:`); with one process and no crash the order holds",
        )),
        "nats" if input.get("queue_group").is_some() => Some((
            format!(
                "with `queue_group` the processes share the subject, so one {}'s events run in \
                 several processes, out of order; and core NATS redelivers nothing: events in \
                 flight at a crash, and those published while the connection is down, are lost",
                unit(mode)
            ),
            "for order across processes and crashes use a `jetstream` input with `partitions:`",
        )),
        "nats" => Some((
            "core NATS redelivers nothing: the order holds, but events in flight at a crash, and \
             those published while the connection is down, are lost"
                .to_owned(),
            "use a `jetstream` input to keep every event through crashes and reconnects",
        )),
        "mqtt" | "mqtt_at_most_once" if shares_subscription(input) => Some((
            format!(
                "a shared subscription (`$share/...`) spreads the messages over every process \
                 of the group, so one {}'s events run in several processes, out of order",
                unit(mode)
            ),
            "subscribe without `$share/` and run one process per `client_id` to keep the order",
        )),
        _ => None,
    }
}

/// Whether an MQTT input's `topics` (one filter or a list) has a shared
/// subscription.
fn shares_subscription(input: &ConfigNode) -> bool {
    let shared = |node: &ConfigNode| node.as_text().is_some_and(|t| t.starts_with("$share/"));
    match input.get("topics").map(|n| (&n.kind, n)) {
        Some((NodeKind::Seq(items), _)) => items.iter().any(shared),
        Some((_, node)) => shared(node),
        None => false,
    }
}

fn unit(mode: &str) -> &'static str {
    if mode == "key" {
        "key"
    } else {
        "partition"
    }
}
