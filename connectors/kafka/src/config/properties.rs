//! librdkafka properties passed through as written: every one checked
//! against librdkafka when the file is loaded (no I/O), the ones spate
//! manages itself refused with the spate key to use instead, and the values
//! of secret-looking ones never printed.

use rdkafka::ClientConfig;
use spate_connector::{ConfigNode, ConfigReader, NodeKind};

/// librdkafka properties spate sets itself, each with what to write instead.
pub const MANAGED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "`bootstrap_servers`"),
    ("metadata.broker.list", "`bootstrap_servers`"),
    ("group.id", "`group_id`"),
    ("group.instance.id", "`group_instance_id`"),
    (
        "transactional.id",
        "`transactional_id` (read by sources with `delivery: exactly_once`)",
    ),
    (
        "enable.auto.commit",
        "nothing: spate commits offsets itself once events are finished",
    ),
    (
        "enable.auto.offset.store",
        "nothing: spate commits offsets itself once events are finished",
    ),
    (
        "enable.idempotence",
        "nothing: spate's Kafka producers are always idempotent",
    ),
    ("isolation.level", "`isolation`"),
    ("auto.offset.reset", "`start`"),
    ("partition.assignment.strategy", "`assignment`"),
    ("session.timeout.ms", "`session_timeout`"),
    (
        "acks",
        "nothing: spate's Kafka sinks always wait for every in-sync replica (`acks=all`)",
    ),
    (
        "request.required.acks",
        "nothing: spate's Kafka sinks always wait for every in-sync replica (`acks=all`)",
    ),
    ("linger.ms", "`linger`"),
    ("queue.buffering.max.ms", "`linger`"),
    ("delivery.timeout.ms", "`delivery_timeout`"),
    ("message.timeout.ms", "`delivery_timeout`"),
    ("compression.type", "`compression`"),
    ("compression.codec", "`compression`"),
    ("security.protocol", "`tls` and `sasl_mechanism`"),
    ("sasl.mechanism", "`sasl_mechanism`"),
    ("sasl.mechanisms", "`sasl_mechanism`"),
    ("sasl.username", "`sasl_username`"),
    ("sasl.password", "`sasl_password`"),
    ("ssl.ca.location", "`tls_ca_file`"),
    ("ssl.certificate.location", "`tls_cert_file`"),
    ("ssl.key.location", "`tls_key_file`"),
];

/// True for property names whose values must never be printed.
pub fn is_secret_property(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password",
        "secret",
        "pem",
        "token",
        "sasl.oauthbearer.config",
    ]
    .iter()
    .any(|word| name.contains(word))
}

pub(super) fn read_properties(config: &mut ConfigReader<'_>) -> Vec<(String, String)> {
    let path = config.child_path("properties");
    let Some(node) = config.node("properties") else {
        return Vec::new();
    };
    let NodeKind::Map(entries) = &node.kind else {
        config.error(
            node.span,
            path,
            format!("`properties` must be a mapping, found {}", node.type_name()),
            Some("write librdkafka properties as `name: value` lines under it".to_owned()),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, key_span, value) in entries {
        let key_path = format!("{path}.{key}");
        if let Some((_, instead)) = MANAGED_PROPERTIES.iter().find(|(k, _)| k == key) {
            config.error(
                *key_span,
                key_path,
                format!("`{key}` is managed by spate and cannot be set in `properties`"),
                Some(format!("use {instead}")),
            );
            continue;
        }
        let Some(text) = scalar_text(value) else {
            config.error(
                value.span,
                key_path,
                format!(
                    "property `{key}` must be a single value, found {}",
                    value.type_name()
                ),
                Some("write a string, number or boolean".to_owned()),
            );
            continue;
        };
        if let Err(message) = check_property(key, &text) {
            config.error(
                value.span,
                key_path,
                message,
                Some(
                    "see librdkafka's CONFIGURATION.md for the properties and their values"
                        .to_owned(),
                ),
            );
            continue;
        }
        out.push((key.clone(), text));
    }
    out
}

fn scalar_text(node: &ConfigNode) -> Option<String> {
    match &node.kind {
        NodeKind::Scalar { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// Asks librdkafka whether it knows the property and accepts the value
/// (no I/O: this only fills a configuration object).
pub(super) fn check_property(key: &str, value: &str) -> Result<(), String> {
    let mut probe = ClientConfig::new();
    probe.set(key, value);
    match probe.create_native_config() {
        Ok(_) => Ok(()),
        Err(rdkafka::error::KafkaError::ClientConfig(_, description, _, _)) => {
            let description = if is_secret_property(key) {
                description.replace(value, "***")
            } else {
                description
            };
            Err(format!(
                "librdkafka refuses property `{key}`: {description}"
            ))
        }
        Err(other) => Err(format!("librdkafka refuses property `{key}`: {other}")),
    }
}
