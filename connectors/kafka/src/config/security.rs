//! The TLS and SASL keys, written at the top level or inside a `security:`
//! mapping (a key set in both is an error), and the TLS and SASL settings
//! they make: certificate and key come as a pair, `tls: false` with TLS
//! files is an error, SASL needs mechanism, user name and password.
//! [`Sasl`]'s `Debug` never shows the password.

use std::fmt;
use std::path::PathBuf;

use spate_connector::ConfigReader;

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

/// The TLS and SASL keys as written in one mapping.
#[derive(Default)]
pub(super) struct SecurityKeys {
    tls: Option<bool>,
    tls_ca_file: Option<String>,
    tls_cert_file: Option<String>,
    tls_key_file: Option<String>,
    sasl_mechanism: Option<SaslMechanism>,
    sasl_username: Option<String>,
    sasl_password: Option<String>,
}

impl SecurityKeys {
    pub(super) fn read(config: &mut ConfigReader<'_>) -> Self {
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
    pub(super) fn merge(&mut self, nested: SecurityKeys, config: &ConfigReader<'_>) {
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

pub(super) fn security(
    keys: SecurityKeys,
    config: &ConfigReader<'_>,
) -> (Option<Tls>, Option<Sasl>) {
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
