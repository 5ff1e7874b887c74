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

//!
//! `security` reads the TLS and SASL keys, `properties` the librdkafka
//! pass-through and the properties spate manages itself.

use std::fmt;
use std::time::Duration;

use rdkafka::ClientConfig;
use spate_connector::ConfigReader;

mod properties;
mod security;
#[cfg(test)]
mod tests;

pub use properties::{is_secret_property, MANAGED_PROPERTIES};
pub use security::{Sasl, SaslMechanism, Tls};

use properties::read_properties;
use security::{security, SecurityKeys};

/// Default `bootstrap_servers`.
pub const DEFAULT_BOOTSTRAP_SERVERS: &str = "127.0.0.1:9092";
/// Default `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

impl ConnectionSettings {
    /// Reads the connection keys, recording every problem in `config`.
    pub fn read(config: &mut ConfigReader<'_>) -> Self {
        let bootstrap_servers = read_bootstrap_servers(config);
        let connect_timeout =
            crate::duration_at_least(config, "connect_timeout", Duration::from_millis(100))
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
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
