//! Connection settings shared by every Kafka source, sink and transaction
//! session: where the cluster is, how to reach it securely, and librdkafka
//! properties passed through as written.
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `bootstrap_servers` | `127.0.0.1:9092` | `host:port` of one or more brokers, as a comma-separated string or a list |
//! | `connect_timeout` | `10s` | how long building a source or sink waits for the cluster's first answer |
//! | `tls` | `true` when a `tls_*` file is set, else `false` | encrypt connections (trusting the system CAs unless `tls_ca_file` says otherwise) |
//! | `tls_ca_file` | system CAs | PEM file of the CA(s) that signed the brokers' certificates |
//! | `tls_cert_file` / `tls_key_file` | none | PEM client certificate and its key, for mutual TLS (both or neither) |
//! | `sasl_mechanism` | none | `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` |
//! | `sasl_username` / `sasl_password` | none | SASL credentials; required with `sasl_mechanism` |
//! | `properties` | none | a mapping of any librdkafka property, passed through verbatim (numbers and booleans as text) |
//!
//! The TLS and SASL keys may be written at the top level or inside a
//! `security:` mapping (not both for the same key). `security.protocol`
//! follows from them: `SASL_SSL`, `SASL_PLAINTEXT`, `SSL` or `PLAINTEXT`.
//!
//! Secrets come from the environment through the loader's `${VAR}`
//! interpolation. They never appear in logs, errors or `Debug` output: the
//! password and every property whose name looks secret (`password`,
//! `secret`, `pem`, `token`, `sasl.oauthbearer.config`) print as `***`.
//!
//! `properties` are checked against librdkafka when the file is loaded
//! (unknown names and invalid values are errors there, not at start-up), and
//! applied after spate's own settings. A property spate manages itself is an
//! error naming the spate key to use instead; see [`MANAGED_PROPERTIES`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use rdkafka::ClientConfig;
use spate_connector::{ConfigNode, ConfigReader, NodeKind};

/// Default `bootstrap_servers`.
pub const DEFAULT_BOOTSTRAP_SERVERS: &str = "127.0.0.1:9092";
/// Default `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// A SASL mechanism spate configures by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `PLAIN`: user name and password, sent as they are (use it with TLS).
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl SaslMechanism {
    const NAMES: [&'static str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

    /// The librdkafka name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "PLAIN" => Some(Self::Plain),
            "SCRAM-SHA-256" => Some(Self::ScramSha256),
            "SCRAM-SHA-512" => Some(Self::ScramSha512),
            _ => None,
        }
    }
}

/// SASL credentials. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Sasl {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// The user name.
    pub username: String,
    /// The password (secret).
    pub password: String,
}

impl fmt::Debug for Sasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// TLS settings; present means connections are encrypted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// CA bundle; `None` trusts the system CAs.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Where the cluster is and how to talk to it.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// `bootstrap_servers` as configured (entries joined with `,`).
    pub bootstrap_servers: String,
    /// How long building waits for the first metadata answer.
    pub connect_timeout: Duration,
    /// TLS, when enabled.
    pub tls: Option<Tls>,
    /// SASL, when enabled.
    pub sasl: Option<Sasl>,
    /// Extra librdkafka properties, in file order.
    pub properties: Vec<(String, String)>,
}

impl fmt::Debug for ConnectionSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: Vec<(&str, &str)> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret_property(k) { "***" } else { v };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("ConnectionSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls)
            .field("sasl", &self.sasl)
            .field("properties", &properties)
            .finish()
    }
}

/// The TLS and SASL keys as written in one mapping.
#[derive(Default)]
struct SecurityKeys {
    tls: Option<bool>,
    tls_ca_file: Option<String>,
    tls_cert_file: Option<String>,
    tls_key_file: Option<String>,
    sasl_mechanism: Option<SaslMechanism>,
    sasl_username: Option<String>,
    sasl_password: Option<String>,
}

impl SecurityKeys {
    fn read(config: &mut ConfigReader<'_>) -> Self {
        let mechanism = config.string("sasl_mechanism");
        let sasl_mechanism = mechanism.and_then(|name| {
            let found = SaslMechanism::from_name(&name.to_ascii_uppercase());
            if found.is_none() {
                config.error_at_key(
                    "sasl_mechanism",
                    format!("unknown sasl_mechanism `{name}`"),
                    Some(format!(
                        "use one of {}",
                        spate_connector::config::quote_list(&SaslMechanism::NAMES)
                    )),
                );
            }
            found
        });
        Self {
            tls: config.bool("tls"),
            tls_ca_file: config.string("tls_ca_file"),
            tls_cert_file: config.string("tls_cert_file"),
            tls_key_file: config.string("tls_key_file"),
            sasl_mechanism,
            sasl_username: config.string("sasl_username"),
            sasl_password: config.string("sasl_password"),
        }
    }

    /// Takes every key of `nested` that is set, recording a conflict for a
    /// key set in both places.
    fn merge(&mut self, nested: SecurityKeys, config: &ConfigReader<'_>) {
        fn take<T>(outer: &mut Option<T>, inner: Option<T>, key: &str, config: &ConfigReader<'_>) {
            if inner.is_none() {
                return;
            }
            if outer.is_some() {
                config.error_at_key(
                    key,
                    format!("`{key}` is set both here and in `security`"),
                    Some("keep one of the two".to_owned()),
                );
                return;
            }
            *outer = inner;
        }
        take(&mut self.tls, nested.tls, "tls", config);
        take(
            &mut self.tls_ca_file,
            nested.tls_ca_file,
            "tls_ca_file",
            config,
        );
        take(
            &mut self.tls_cert_file,
            nested.tls_cert_file,
            "tls_cert_file",
            config,
        );
        take(
            &mut self.tls_key_file,
            nested.tls_key_file,
            "tls_key_file",
            config,
        );
        take(
            &mut self.sasl_mechanism,
            nested.sasl_mechanism,
            "sasl_mechanism",
            config,
        );
        take(
            &mut self.sasl_username,
            nested.sasl_username,
            "sasl_username",
            config,
        );
        take(
            &mut self.sasl_password,
            nested.sasl_password,
            "sasl_password",
            config,
        );
    }
}

impl ConnectionSettings {
    /// Reads the connection keys, recording every problem in `config`.
    pub fn read(config: &mut ConfigReader<'_>) -> Self {
        let bootstrap_servers = read_bootstrap_servers(config);
        let connect_timeout = config
            .duration("connect_timeout")
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        if connect_timeout < Duration::from_millis(100) {
            config.error_at_key(
                "connect_timeout",
                "`connect_timeout` must be at least 100ms",
                None,
            );
        }
        let mut keys = SecurityKeys::read(config);
        if let Some(mut section) = config.section("security") {
            let nested = SecurityKeys::read(&mut section);
            drop(section);
            keys.merge(nested, config);
        }
        let (tls, sasl) = security(keys, config);
        let properties = read_properties(config);
        Self {
            bootstrap_servers,
            connect_timeout,
            tls,
            sasl,
            properties,
        }
    }

    /// The bootstrap servers in a canonical form (trimmed, lower-case,
    /// sorted, without duplicates), to tell whether two settings name the
    /// same cluster.
    pub fn cluster_identity(&self) -> String {
        cluster_identity(&self.bootstrap_servers)
    }

    /// A librdkafka configuration with the connection settings and the
    /// user's properties; roles add their own keys with
    /// [`ConnectionSettings::finish`].
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        config.set("client.id", "spate");
        let protocol = match (&self.tls, &self.sasl) {
            (Some(_), Some(_)) => "SASL_SSL",
            (None, Some(_)) => "SASL_PLAINTEXT",
            (Some(_), None) => "SSL",
            (None, None) => "PLAINTEXT",
        };
        config.set("security.protocol", protocol);
        if let Some(tls) = &self.tls {
            if let Some(ca) = &tls.ca_file {
                config.set("ssl.ca.location", ca.to_string_lossy());
            }
            if let Some((cert, key)) = &tls.client_cert {
                config.set("ssl.certificate.location", cert.to_string_lossy());
                config.set("ssl.key.location", key.to_string_lossy());
            }
        }
        if let Some(sasl) = &self.sasl {
            config.set("sasl.mechanism", sasl.mechanism.as_str());
            config.set("sasl.username", &sasl.username);
            config.set("sasl.password", &sasl.password);
        }
        config
    }

    /// Applies the user's `properties` last, so they win over defaults spate
    /// chose (but never over managed keys, which `read` refused).
    pub fn finish(&self, config: &mut ClientConfig) {
        for (key, value) in &self.properties {
            config.set(key, value);
        }
    }

    /// True when `properties` sets `key`.
    pub fn has_property(&self, key: &str) -> bool {
        self.properties.iter().any(|(k, _)| k == key)
    }
}

/// See [`ConnectionSettings::cluster_identity`].
pub fn cluster_identity(servers: &str) -> String {
    let mut entries: Vec<String> = servers
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    entries.sort();
    entries.dedup();
    entries.join(",")
}

fn read_bootstrap_servers(config: &mut ConfigReader<'_>) -> String {
    let Some(nodes) = config.list("bootstrap_servers") else {
        return DEFAULT_BOOTSTRAP_SERVERS.to_owned();
    };
    let mut servers = Vec::new();
    for node in nodes {
        let Some(text) = node.as_text() else {
            config.error(
                node.span,
                config.child_path("bootstrap_servers"),
                format!(
                    "each bootstrap server must be a `host:port` string, found {}",
                    node.type_name()
                ),
                None,
            );
            continue;
        };
        for entry in text.split(',') {
            let entry = entry.trim();
            if entry.is_empty() || entry.contains(char::is_whitespace) {
                config.error(
                    node.span,
                    config.child_path("bootstrap_servers"),
                    format!("`{text}` is not a list of `host:port` addresses"),
                    Some(format!(
                        "write addresses separated by commas, e.g. `{DEFAULT_BOOTSTRAP_SERVERS},10.0.0.2:9092`"
                    )),
                );
                break;
            }
            servers.push(entry.to_owned());
        }
    }
    servers.join(",")
}

fn security(keys: SecurityKeys, config: &ConfigReader<'_>) -> (Option<Tls>, Option<Sasl>) {
    let client_cert = match (keys.tls_cert_file, keys.tls_key_file) {
        (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
        (Some(_), None) => {
            config.missing(
                "tls_key_file",
                Some("`tls_cert_file` needs the key of that certificate".to_owned()),
            );
            None
        }
        (None, Some(_)) => {
            config.missing(
                "tls_cert_file",
                Some("`tls_key_file` needs the certificate it belongs to".to_owned()),
            );
            None
        }
        (None, None) => None,
    };
    let any_file = keys.tls_ca_file.is_some() || client_cert.is_some();
    let tls = match keys.tls {
        Some(false) if any_file => {
            config.error_at_key(
                "tls",
                "`tls: false` but TLS files are set",
                Some("remove the `tls_*` files or `tls: false`".to_owned()),
            );
            None
        }
        Some(true) => Some(true),
        Some(false) => None,
        None => any_file.then_some(true),
    }
    .map(|_| Tls {
        ca_file: keys.tls_ca_file.map(PathBuf::from),
        client_cert,
    });
    let sasl = match (keys.sasl_mechanism, keys.sasl_username, keys.sasl_password) {
        (Some(mechanism), Some(username), Some(password)) => Some(Sasl {
            mechanism,
            username,
            password,
        }),
        (None, None, None) => None,
        (mechanism, username, password) => {
            if mechanism.is_none() {
                config.missing(
                    "sasl_mechanism",
                    Some(format!(
                        "SASL credentials need a mechanism: {}",
                        spate_connector::config::quote_list(&SaslMechanism::NAMES)
                    )),
                );
            }
            if username.is_none() {
                config.missing("sasl_username", Some("SASL needs a user name".to_owned()));
            }
            if password.is_none() {
                config.missing(
                    "sasl_password",
                    Some(
                        "write `sasl_password: ${KAFKA_PASSWORD}` to take it from the environment"
                            .to_owned(),
                    ),
                );
            }
            None
        }
    };
    (tls, sasl)
}

fn read_properties(config: &mut ConfigReader<'_>) -> Vec<(String, String)> {
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
fn check_property(key: &str, value: &str) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_identity_ignores_order_case_and_spaces() {
        assert_eq!(
            cluster_identity("B:9092, a:9092,a:9092"),
            cluster_identity("a:9092,b:9092")
        );
        assert_ne!(cluster_identity("a:9092"), cluster_identity("a:9093"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let settings = ConnectionSettings {
            bootstrap_servers: "k:9092".into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            tls: None,
            sasl: Some(Sasl {
                mechanism: SaslMechanism::ScramSha512,
                username: "alice".into(),
                password: "s3cret".into(),
            }),
            properties: vec![
                ("ssl.key.password".into(), "hunter2".into()),
                ("fetch.wait.max.ms".into(), "50".into()),
            ],
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("alice") && shown.contains("fetch.wait.max.ms"));
    }

    #[test]
    fn librdkafka_checks_property_names_and_values() {
        assert!(check_property("fetch.wait.max.ms", "50").is_ok());
        let unknown = check_property("fetch.wait.max.msec", "50").unwrap_err();
        assert!(unknown.contains("fetch.wait.max.msec"), "{unknown}");
        assert!(check_property("fetch.wait.max.ms", "soon").is_err());
    }
}
