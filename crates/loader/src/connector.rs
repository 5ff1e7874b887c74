//! Connector mappings of a function (`input`, `inputs`, `outputs`,
//! `dead_letter`) and the delivery rules they must meet.
//!
//! A connector mapping is `{type: <kind>, <connector keys>}` (outputs may add
//! `name:`). The loader reads `type` and `name` with the same
//! [`ConfigReader`] it then hands to the connector's factory, so an unknown
//! key is reported once, with a "did you mean" drawn from every key either
//! side asked for. When the kind is unknown or used in the wrong role, the
//! other keys are not checked (nobody knows their schema) and no reader is
//! made.
//!
//! Delivery rules, each reported at the offending connector's `type:`:
//! `at_least_once` and `exactly_once` need every source to keep durable
//! positions; `exactly_once` needs one transaction to cover everything —
//! the input's (every output and the dead letter must join it) or a
//! database's that stores the positions (every output and the dead letter
//! in it, and an input that can resume from them). See
//! [`check_delivery`].

use std::sync::Arc;

use spate_connector::config::{did_you_mean, quote_list, ConfigErrors};
use spate_connector::{
    Capabilities, ConfigError, ConfigNode, ConfigReader, ConnectorFactory, NodeKind, Span,
};

use super::spec::{Delivery, SinkSpec, SourceSpec};
use crate::registry::Registry;
use spate_connector::format::{read_format, Format, FormatRole, RawFormat};

/// The part a connector plays in a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// `input` / `inputs[i]`.
    Input,
    /// `outputs[i]`.
    Output,
    /// `dead_letter`.
    DeadLetter,
}

impl Role {
    fn capabilities(self, factory: &dyn ConnectorFactory) -> Option<Capabilities> {
        match self {
            Self::Input => factory.source_capabilities(),
            Self::Output | Self::DeadLetter => factory.sink_capabilities(),
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Self::Input => "an input",
            Self::Output => "an output",
            Self::DeadLetter => "a dead letter",
        }
    }

    /// "an input can be" etc., before a list of kinds.
    fn can_be(self) -> String {
        format!("{} can be", self.noun())
    }
}

/// A loaded input and where its `type:` is written.
pub(super) struct LoadedSource {
    pub spec: SourceSpec,
    pub path: String,
    pub type_span: Span,
    /// How to lift what this source's settings hold back of its kind's
    /// capabilities (see `SourceBuilder::capabilities`).
    pub capability_hint: Option<String>,
}

/// A loaded output or dead letter and where its `type:` is written.
pub(super) struct LoadedSink {
    pub spec: SinkSpec,
    pub path: String,
    pub type_span: Span,
}

fn push(errors: &ConfigErrors, span: Span, path: &str, message: String, hint: Option<String>) {
    errors.borrow_mut().push(ConfigError {
        span,
        path: path.to_owned(),
        message,
        hint,
    });
}

/// Kinds usable in `role`, in name order.
fn kinds_for(registry: &Registry, role: Role) -> Vec<&'static str> {
    registry
        .connector_kinds()
        .filter(|kind| {
            registry
                .connector(kind)
                .is_some_and(|f| role.capabilities(f.as_ref()).is_some())
        })
        .collect()
}

/// Kinds usable in `role` whose capabilities pass `test`.
fn kinds_with(
    registry: &Registry,
    role: Role,
    test: fn(Capabilities) -> bool,
) -> Vec<&'static str> {
    registry
        .connector_kinds()
        .filter(|kind| {
            registry
                .connector(kind)
                .and_then(|f| role.capabilities(f.as_ref()))
                .is_some_and(test)
        })
        .collect()
}

/// `a, b` — kinds named in a hint.
fn plain_list(kinds: &[&str]) -> String {
    kinds.join(", ")
}

/// Checks the mapping and its `type:`; returns the factory, its
/// capabilities in `role` and the span of `type:`. Reports and returns
/// `None` when the kind cannot be used here.
fn resolve<'r>(
    node: &ConfigNode,
    path: &str,
    role: Role,
    registry: &'r Registry,
    errors: &ConfigErrors,
) -> Option<(&'r Arc<dyn ConnectorFactory>, Capabilities, Span)> {
    let usable = kinds_for(registry, role);
    let example = usable.first().copied().unwrap_or("file");
    if !matches!(node.kind, NodeKind::Map(_)) {
        let found = match node.as_text() {
            Some(text) => format!("`{text}`"),
            None => node.type_name().to_owned(),
        };
        let hint = match node.as_text() {
            Some(text) if registry.connector(text).is_some() => format!("write `{{type: {text}}}`"),
            _ => format!("write it as a mapping with a `type:`, e.g. `{{type: {example}}}`"),
        };
        push(
            errors,
            node.span,
            path,
            format!("`{path}` must be a connector mapping, found {found}"),
            Some(hint),
        );
        return None;
    }
    let known = if usable.is_empty() {
        format!("no connector registered here can be {}", role.noun())
    } else {
        format!("{} {}", role.can_be(), quote_list(&usable))
    };
    let Some(type_node) = node.get("type").filter(|n| n.kind != NodeKind::Null) else {
        push(
            errors,
            node.span,
            &format!("{path}.type"),
            format!("missing required field `type` in `{path}`"),
            Some(format!(
                "name the connector kind, e.g. `type: {example}` ({known})"
            )),
        );
        return None;
    };
    let Some(kind) = type_node.as_text() else {
        push(
            errors,
            type_node.span,
            &format!("{path}.type"),
            format!(
                "`type` must be a connector kind, found {}",
                type_node.type_name()
            ),
            Some(format!("e.g. `type: {example}` ({known})")),
        );
        return None;
    };
    let Some(factory) = registry.connector(kind) else {
        let hint = match did_you_mean(kind, usable.iter().copied()) {
            Some(best) => format!("did you mean `{best}`? ({known})"),
            None => known,
        };
        push(
            errors,
            type_node.span,
            &format!("{path}.type"),
            format!("unknown connector type `{kind}`"),
            Some(hint),
        );
        return None;
    };
    let Some(capabilities) = role.capabilities(factory.as_ref()) else {
        let is = match (factory.source_capabilities(), factory.sink_capabilities()) {
            (Some(_), _) => "it is only a source",
            (None, Some(_)) => "it is only a sink",
            (None, None) => "it has neither a source nor a sink",
        };
        let elsewhere = match role {
            Role::Input => "use it under `outputs:` or `dead_letter:`",
            Role::Output | Role::DeadLetter => "use it under `input:`",
        };
        push(
            errors,
            type_node.span,
            &format!("{path}.type"),
            format!("`{kind}` cannot be {}: {is}", role.noun()),
            Some(format!("{elsewhere}; {known}")),
        );
        return None;
    };
    Some((factory, capabilities, type_node.span))
}

/// Reads one input.
pub(super) fn read_source(
    node: &ConfigNode,
    path: &str,
    registry: &Registry,
    errors: &ConfigErrors,
) -> Option<LoadedSource> {
    let (factory, capabilities, type_span) = resolve(node, path, Role::Input, registry, errors)?;
    let mut reader = ConfigReader::new(node, path, errors);
    let kind = reader.string("type")?;
    let format = read_format(&mut reader, FormatRole::Input, registry.formats());
    let mark = errors.borrow().len();
    let builder = factory.source(&mut reader);
    note_silent_refusal(builder.is_none(), mark, &reader, type_span, &kind);
    let builder = builder?;
    let (capabilities, capability_hint) = match builder.capabilities() {
        Some(configured) => (configured.capabilities, Some(configured.hint)),
        None => (capabilities, None),
    };
    Some(LoadedSource {
        spec: SourceSpec {
            kind,
            builder,
            capabilities,
            format: format?,
            span: node.span,
        },
        path: path.to_owned(),
        type_span,
        capability_hint,
    })
}

/// Reads one output (`role` Output, which may carry `name:`) or the dead
/// letter.
pub(super) fn read_sink(
    node: &ConfigNode,
    path: &str,
    role: Role,
    registry: &Registry,
    errors: &ConfigErrors,
) -> Option<LoadedSink> {
    let (factory, capabilities, type_span) = resolve(node, path, role, registry, errors)?;
    let mut reader = ConfigReader::new(node, path, errors);
    let kind = reader.string("type")?;
    let name = match role {
        Role::Output if reader.has("name") => {
            let span = reader.node("name").map_or(type_span, |n| n.span);
            let name = reader.string("name");
            name.and_then(|n| check_output_name(&reader, n, span))
        }
        Role::Output | Role::Input | Role::DeadLetter => Some(kind.clone()),
    };
    let format = match role {
        Role::Output => read_format(&mut reader, FormatRole::Output, registry.formats()),
        Role::Input | Role::DeadLetter => Some(Arc::new(RawFormat) as Arc<dyn Format>),
    };
    let mark = errors.borrow().len();
    let builder = factory.sink(&mut reader);
    note_silent_refusal(builder.is_none(), mark, &reader, type_span, &kind);
    Some(LoadedSink {
        spec: SinkSpec {
            name: name?,
            kind,
            builder: Arc::from(builder?),
            capabilities,
            format: format?,
            span: node.span,
        },
        path: path.to_owned(),
        type_span,
    })
}

fn check_output_name(reader: &ConfigReader<'_>, name: String, span: Span) -> Option<String> {
    if super::load::is_valid_name(&name) {
        return Some(name);
    }
    reader.error(
        span,
        reader.child_path("name"),
        format!("output name `{name}` may only hold letters, digits, `_`, `.` and `-`"),
        Some("handlers route to outputs by this name, e.g. `name: valid`".to_owned()),
    );
    None
}

/// Reports outputs of one function that share a name (`name:`, else the
/// kind), whether or not their settings were valid.
pub(super) fn check_output_names(items: &[ConfigNode], path: &str, errors: &ConfigErrors) {
    let named: Vec<(usize, &str, Span)> = items
        .iter()
        .enumerate()
        .filter_map(|(index, item)| {
            let name = item
                .get("name")
                .filter(|n| n.as_text().is_some())
                .or_else(|| item.get("type"))?;
            Some((index, name.as_text()?, name.span))
        })
        .collect();
    for (position, (index, name, span)) in named.iter().enumerate() {
        let Some((_, _, first)) = named[..position].iter().find(|(_, other, _)| other == name)
        else {
            continue;
        };
        push(
            errors,
            *span,
            &format!("{path}[{index}].name"),
            format!("two outputs are named `{name}`"),
            Some(format!(
                "give each output its own `name:` (handlers route by it); the other is at line {}",
                first.line
            )),
        );
    }
}

/// Checks what `delivery` asks of the function's connectors; one error per
/// connector that cannot give it, at its `type:`.
///
/// `exactly_once` commits through one transaction: either the input's own
/// (a Kafka transaction, JetStream de-duplication), which every output and
/// the dead letter must be able to join, or — when the outputs and the dead
/// letter are a database that stores positions itself — the database's,
/// from whose stored positions the input must then be able to resume.
pub(super) fn check_delivery(
    delivery: Delivery,
    inputs: &[LoadedSource],
    sinks: &[(&LoadedSink, Role)],
    registry: &Registry,
    errors: &ConfigErrors,
) {
    let word = match delivery {
        Delivery::AtMostOnce => return,
        Delivery::AtLeastOnce => "at_least_once",
        Delivery::ExactlyOnce => "exactly_once",
    };
    let exactly_once = delivery == Delivery::ExactlyOnce;
    // A database that stores positions hosts the transaction when it holds
    // the first output (or, with no outputs, the dead letter).
    let database = exactly_once
        .then(|| sinks.first())
        .flatten()
        .filter(|(sink, _)| hosts_transactions(&sink.spec.capabilities))
        .map(|(sink, _)| *sink);
    for input in inputs {
        check_input_delivery(input, word, database, registry, errors);
    }
    if !exactly_once {
        return;
    }
    if let [_, extra, ..] = inputs {
        push(
            errors,
            extra.type_span,
            &format!("{}.type", extra.path),
            format!(
                "`exactly_once` takes one input, but this function has {}: one transaction commits the positions of one source",
                inputs.len()
            ),
            Some("give each input a function of its own, or use `delivery: at_least_once`".to_owned()),
        );
    }
    for (sink, role) in sinks {
        check_sink_exactly_once(sink, *role, inputs, database, registry, errors);
    }
}

/// [`check_delivery`] of one input: it keeps durable positions, and, for
/// `exactly_once`, takes part in the transaction (or resumes from the
/// positions the database stores).
fn check_input_delivery(
    input: &LoadedSource,
    word: &str,
    database: Option<&LoadedSink>,
    registry: &Registry,
    errors: &ConfigErrors,
) {
    let exactly_once = word == "exactly_once";
    let kind = &input.spec.kind;
    let path = format!("{}.type", input.path);
    let capabilities = &input.spec.capabilities;
    if !capabilities.durable_positions {
        let durable = kinds_with(registry, Role::Input, |c| c.durable_positions);
        let hint = match durable.is_empty() {
            true => "use `delivery: at_most_once`".to_owned(),
            false => format!(
                "use `delivery: at_most_once`, or an input that keeps positions ({})",
                plain_list(&durable)
            ),
        };
        push(
            errors,
            input.type_span,
            &path,
            format!(
                "`{word}` needs committed positions to resume from, but source `{kind}` keeps no durable position, so it can only give `at_most_once`"
            ),
            Some(hint),
        );
        return;
    }
    match database {
        Some(host) if !capabilities.resumable => {
            let able = kinds_with(registry, Role::Input, |c| c.resumable);
            let hint = input.capability_hint.clone().unwrap_or_else(|| {
                format!(
                    "use `delivery: at_least_once` with an upsert `key` on the table (idempotent), or an input that can resume from stored positions ({})",
                    plain_list(&able)
                )
            });
            push(
                errors,
                input.type_span,
                &path,
                format!(
                    "`exactly_once` into `{}` stores this input's positions in the database with the rows and resumes from them, but input `{kind}` cannot resume from positions stored outside its broker",
                    host.spec.kind
                ),
                Some(hint),
            );
        }
        None if exactly_once && !capabilities.exactly_once => {
            let able = kinds_with(registry, Role::Input, |c| c.exactly_once);
            let hint = input
                .capability_hint
                .clone()
                .unwrap_or_else(|| exactly_once_hint("an input", &able));
            push(
                errors,
                input.type_span,
                &path,
                format!("`exactly_once` needs every input and output to take part in a transaction, but input `{kind}` cannot"),
                Some(hint),
            );
        }
        _ => {}
    }
}

/// [`check_delivery`] of one output or the dead letter under
/// `exactly_once`: it is inside the transaction that commits the input's
/// positions.
fn check_sink_exactly_once(
    sink: &LoadedSink,
    role: Role,
    inputs: &[LoadedSource],
    database: Option<&LoadedSink>,
    registry: &Registry,
    errors: &ConfigErrors,
) {
    let what = match role {
        Role::DeadLetter => format!("the dead letter `{}`", sink.spec.kind),
        Role::Output | Role::Input => {
            format!("output `{}` ({})", sink.spec.name, sink.spec.kind)
        }
    };
    let noun = match role {
        Role::DeadLetter => "a dead letter",
        Role::Output | Role::Input => "an output",
    };
    let path = format!("{}.type", sink.path);
    if let Some(host) = database {
        if !hosts_transactions(&sink.spec.capabilities) {
            push(
                errors,
                sink.type_span,
                &path,
                format!(
                    "`exactly_once` commits rows and positions in one transaction of the `{}` database that the first output writes to, but {what} is outside it",
                    host.spec.kind
                ),
                Some(format!(
                    "write it to the same database (a `{}` table), or use `delivery: at_least_once`",
                    host.spec.kind
                )),
            );
        }
        return;
    }
    if hosts_transactions(&sink.spec.capabilities) {
        push(
            errors,
            sink.type_span,
            &path,
            format!(
                "`exactly_once` commits through the input's transaction here, which cannot reach {what}: a database joins `exactly_once` only as the first output, with every other output and the dead letter in it"
            ),
            Some("make the database the first output and write the rest there too, or use `delivery: at_least_once`".to_owned()),
        );
        return;
    }
    if sink.spec.capabilities.exactly_once {
        // The input's session holds only records of its own kind (a
        // Kafka transaction Kafka records, JetStream de-duplication
        // JetStream messages); run refuses any other.
        if let Some(input) = inputs
            .first()
            .filter(|i| i.spec.capabilities.exactly_once && i.spec.kind != sink.spec.kind)
        {
            push(
                errors,
                sink.type_span,
                &path,
                format!(
                    "`exactly_once` commits through the `{}` input's transaction here, which can only hold `{}` records, not those of {what}",
                    input.spec.kind, input.spec.kind
                ),
                Some(format!(
                    "write it to `{}` too, or use `delivery: at_least_once`",
                    input.spec.kind
                )),
            );
        } else if let (Some(input), Some(target)) = (inputs.first(), sink.spec.builder.target()) {
            // The same rule the session applies when it opens (the
            // same cluster, say), from the settings alone.
            if let Err(why) = input.spec.builder.accepts(&target) {
                push(
                    errors,
                    sink.type_span,
                    &path,
                    format!("`exactly_once` cannot reach {what}: {why}"),
                    Some(
                        "point it at the input's cluster, or use `delivery: at_least_once`"
                            .to_owned(),
                    ),
                );
            }
        }
        return;
    }
    let able = kinds_with(registry, role, |c| c.exactly_once);
    push(
        errors,
        sink.type_span,
        &path,
        format!("`exactly_once` needs every input and output to take part in a transaction, but {what} cannot"),
        Some(exactly_once_hint(noun, &able)),
    );
}

/// A sink that stores source positions itself and so can carry an
/// exactly-once transaction (a database).
fn hosts_transactions(capabilities: &Capabilities) -> bool {
    capabilities.exactly_once && capabilities.durable_positions
}

fn exactly_once_hint(noun: &str, able: &[&str]) -> String {
    if able.is_empty() {
        format!("use `delivery: at_least_once`; no connector registered here can be {noun} with exactly-once")
    } else {
        format!(
            "use `delivery: at_least_once`, or {noun} that supports exactly-once ({})",
            plain_list(able)
        )
    }
}

/// A factory that returned nothing must have said why; if it recorded no
/// error, say at least which connector refused, so no problem goes unreported.
fn note_silent_refusal(
    refused: bool,
    mark: usize,
    reader: &ConfigReader<'_>,
    type_span: Span,
    kind: &str,
) {
    if refused && reader.errors().borrow().len() == mark {
        reader.error(
            type_span,
            reader.child_path("type"),
            format!("the `{kind}` connector did not accept these settings"),
            None,
        );
    }
}
