//! The format factories (`raw`, `json`, `avro`): each reads its own keys
//! from an input's or output's pipeline-file mapping.
//!
//! Guarantees: every problem is reported at the key that causes it (the
//! schema's parse error carries apache-avro's message at `schema`, a bad URL
//! is at `schema_registry.url`, …), all of them in one pass; every format
//! key is marked known to the reader, so the connector's unknown-key check
//! does not report them; no network request is made at load time; the
//! password is never copied into a message.

use std::sync::Arc;

use spate_connector::format::{Format, FormatFactory, FormatRole, RawFormat};
use spate_connector::{ConfigNode, ConfigReader, NodeKind};

use super::avro::{check_compatible, AvroSchema};
use super::registry::{parse_url, RegistryConfig, SchemaRegistry};
use super::{AvroFormat, JsonFormat};

const AVRO_KEYS: &[&str] = &[
    "schema",
    "schema_file",
    "reader_schema",
    "reader_schema_file",
    "schema_registry",
];

/// Declares a format factory that reads no keys and always gives one
/// format.
macro_rules! keyless_factory {
    ($(#[$doc:meta])* $factory:ident, $kind:literal, $format:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $factory;

        impl FormatFactory for $factory {
            fn kind(&self) -> &'static str {
                $kind
            }

            fn configure(&self, _: &mut ConfigReader<'_>, _: FormatRole) -> Option<Arc<dyn Format>> {
                Some(Arc::new($format))
            }
        }
    };
}

keyless_factory!(
    /// `format: raw`: bytes as they are.
    RawFactory,
    "raw",
    RawFormat
);

keyless_factory!(
    /// `format: json`: one well-formed JSON value per payload.
    JsonFactory,
    "json",
    JsonFormat
);

/// `format: avro`: `schema` / `schema_file`, `reader_schema` /
/// `reader_schema_file` and `schema_registry` (see the [crate docs](crate)).
#[derive(Debug, Clone, Copy, Default)]
pub struct AvroFactory;

impl FormatFactory for AvroFactory {
    fn kind(&self) -> &'static str {
        "avro"
    }

    fn keys(&self) -> &'static [&'static str] {
        AVRO_KEYS
    }

    fn configure(
        &self,
        config: &mut ConfigReader<'_>,
        role: FormatRole,
    ) -> Option<Arc<dyn Format>> {
        read_avro(config, role)
    }
}

fn read_avro(config: &mut ConfigReader<'_>, role: FormatRole) -> Option<Arc<dyn Format>> {
    let schema = read_schema(config, "schema", "schema_file");
    let reader_schema = read_schema(config, "reader_schema", "reader_schema_file");
    let registry = read_registry(config, role);
    let has_schema = config.has("schema") || config.has("schema_file");
    let has_reader = config.has("reader_schema") || config.has("reader_schema_file");
    let reader_key = if config.has("reader_schema") {
        "reader_schema"
    } else {
        "reader_schema_file"
    };

    if role == FormatRole::Output && has_reader {
        config.error_at_key(
            reader_key,
            format!("`{reader_key}` is only used by inputs"),
            Some("an output writes with `schema` (or the subject's latest schema)".to_owned()),
        );
    }
    let registry_written = config.has("schema_registry");
    if role == FormatRole::Input && registry_written && has_schema {
        let key = if config.has("schema") {
            "schema"
        } else {
            "schema_file"
        };
        config.error_at_key(
            key,
            "with `schema_registry`, an input takes the writer schema from each payload's schema id",
            Some("to decode into a schema of your own, name it `reader_schema`".to_owned()),
        );
    }
    if !registry_written && !has_schema {
        config.error_at_key(
            "format",
            "`format: avro` needs `schema`, `schema_file` or `schema_registry`",
            Some(
                "write the Avro schema inline under `schema:`, or point `schema_registry:` at a Confluent Schema Registry"
                    .to_owned(),
            ),
        );
        return None;
    }

    match registry {
        Some(Registry {
            config: rc,
            subject,
            auto_register,
        }) => {
            let registry = match SchemaRegistry::new(rc) {
                Ok(r) => r,
                Err(e) => {
                    config.error_at_key("schema_registry", e.to_string(), None);
                    return None;
                }
            };
            Some(Arc::new(AvroFormat::registry(
                Arc::new(registry),
                subject,
                schema,
                reader_schema,
                auto_register,
            )))
        }
        None if registry_written => None,
        None => {
            let writer = schema?;
            let reader = match reader_schema {
                Some(reader) if role == FormatRole::Input => {
                    if let Err(e) = check_compatible(&writer, &reader) {
                        config.error_at_key(
                            reader_key,
                            e.0,
                            Some(
                                "a field the writer lacks needs a `default` in the reader schema"
                                    .to_owned(),
                            ),
                        );
                        return None;
                    }
                    Some(reader)
                }
                _ => None,
            };
            Some(Arc::new(AvroFormat::inline(writer, reader)))
        }
    }
}

/// A schema written inline under `key` or in the file under `file_key`.
fn read_schema(
    config: &mut ConfigReader<'_>,
    key: &'static str,
    file_key: &'static str,
) -> Option<AvroSchema> {
    let inline = config.node(key);
    let file = config.string(file_key);
    let (text, at, yaml) = match (inline, file) {
        (Some(_), Some(_)) => {
            config.error_at_key(
                file_key,
                format!("give `{key}` or `{file_key}`, not both"),
                None,
            );
            return None;
        }
        (Some(node), None) => {
            let (text, yaml) = schema_text(node);
            (text, key, yaml)
        }
        (None, Some(path)) => match std::fs::read_to_string(&path) {
            Ok(text) => (text, file_key, false),
            Err(e) => {
                config.error_at_key(
                    file_key,
                    format!("cannot read Avro schema file `{path}`: {e}"),
                    Some("a relative path is taken from the working directory".to_owned()),
                );
                return None;
            }
        },
        (None, None) => return None,
    };
    match AvroSchema::parse(&text) {
        Ok(schema) => Some(schema),
        Err(e) => {
            let hint = if yaml {
                "in a schema written as YAML, quote \"null\" where you mean the Avro type `null`"
            } else {
                "the schema is Avro's JSON schema language, e.g. {\"type\": \"record\", \"name\": \"Order\", \"fields\": [...]}"
            };
            config.error_at_key(
                at,
                format!("invalid Avro schema: {e}"),
                Some(hint.to_owned()),
            );
            None
        }
    }
}

/// The schema JSON of a node, and whether it was written as YAML structure.
fn schema_text(node: &ConfigNode) -> (String, bool) {
    match &node.kind {
        NodeKind::Scalar { text, .. } => (text.clone(), false),
        _ => (node.to_json_text(), true),
    }
}

struct Registry {
    config: RegistryConfig,
    subject: Option<String>,
    auto_register: bool,
}

fn read_registry(config: &mut ConfigReader<'_>, role: FormatRole) -> Option<Registry> {
    let mut section = config.section("schema_registry")?;
    let url = section.required_string(
        "url",
        Some("the registry's base URL, e.g. `url: http://localhost:8081`".to_owned()),
    );
    let username = section.string("username");
    let password = section.string("password");
    let timeout = section.duration("timeout");
    let auto_register = section.bool("auto_register");
    let subject = match role {
        FormatRole::Output => section.required_string(
            "subject",
            Some(
                "outputs register their schema under a subject, e.g. `subject: orders-value`"
                    .to_owned(),
            ),
        ),
        FormatRole::Input => {
            for key in ["subject", "auto_register"] {
                if section.node(key).is_some() {
                    section.error_at_key(
                        key,
                        format!("`{key}` is only used by outputs"),
                        Some("an input reads the schema id from each payload".to_owned()),
                    );
                }
            }
            None
        }
    };
    let mut ok = true;
    if let Some(text) = &url {
        if let Err(message) = parse_url(text) {
            section.error_at_key(
                "url",
                message,
                Some("e.g. `https://registry.example:8081`".to_owned()),
            );
            ok = false;
        }
    }
    match (&username, &password) {
        (Some(_), None) | (None, Some(_)) => {
            let (present, absent) = if username.is_some() {
                ("username", "password")
            } else {
                ("password", "username")
            };
            section.error_at_key(
                present,
                format!("`{present}` needs `{absent}` too"),
                Some("HTTP basic auth takes both (or remove both)".to_owned()),
            );
            ok = false;
        }
        _ => {}
    }
    if timeout.is_some_and(|t| t.is_zero()) {
        section.error_at_key("timeout", "`timeout` must be more than zero", None);
        ok = false;
    }
    if subject.as_deref().is_some_and(str::is_empty) {
        section.error_at_key("subject", "`subject` must not be empty", None);
        ok = false;
    }
    if !ok || url.is_none() || (role == FormatRole::Output && subject.is_none()) {
        return None;
    }
    Some(Registry {
        config: RegistryConfig {
            url: url?,
            username,
            password,
            timeout: timeout.unwrap_or(RegistryConfig::DEFAULT_TIMEOUT),
        },
        subject,
        auto_register: auto_register.unwrap_or(true),
    })
}
