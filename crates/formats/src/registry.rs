//! A Confluent Schema Registry client: the subset of its REST API that
//! Avro encoding and decoding need.
//!
//! | call | request | answer used |
//! | --- | --- | --- |
//! | [`SchemaRegistry::schema_by_id`] | `GET /schemas/ids/{id}` | `schema`, `schemaType` |
//! | [`SchemaRegistry::register`] | `POST /subjects/{subject}/versions` `{"schema": …}` | `id` |
//! | [`SchemaRegistry::lookup`] | `POST /subjects/{subject}` `{"schema": …}` | `id` |
//! | [`SchemaRegistry::latest`] | `GET /subjects/{subject}/versions/latest` | `id`, `schema`, `schemaType` |
//!
//! Requests carry `Content-Type: application/vnd.schemaregistry.v1+json`
//! and, when configured, HTTP basic auth. Guarantees:
//!
//! - schemas are cached by id, and ids by (subject, schema text), for the
//!   life of the client; concurrent misses for one key make one request;
//!   a failed request caches nothing;
//! - connection failures, timeouts, HTTP 5xx, 401/403 (credentials can be
//!   fixed without touching the data), 408 and 429 are
//!   [retryable](RegistryError::is_retryable), and so is an HTTP 404 that
//!   carries no registry error code (a wrong base URL, not a missing
//!   schema); an unknown schema id (HTTP 404, error code 40403) and other
//!   refusals are not;
//! - the password is never in `Debug` output, logs or error messages, and a
//!   URL carrying credentials is refused (use `username` / `password`);
//! - schema references (`references`) are not followed: a schema that uses
//!   them fails to parse, permanently.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use tokio::sync::OnceCell;

use super::avro::AvroSchema;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
const ACCEPT: &str =
    "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json, application/json";
/// Longest registry message quoted in an error.
const MESSAGE_LIMIT: usize = 300;

/// How to reach a schema registry.
#[derive(Clone)]
pub struct RegistryConfig {
    /// Base URL, `http` or `https`, without credentials; may have a path.
    pub url: String,
    /// Basic-auth user (Confluent Cloud: the API key).
    pub username: Option<String>,
    /// Basic-auth password (Confluent Cloud: the API secret).
    pub password: Option<String>,
    /// Limit for each request.
    pub timeout: Duration,
}

impl RegistryConfig {
    /// Default per-request limit.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// A registry at `url` without credentials.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            username: None,
            password: None,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

impl fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Checks a registry URL: `http`/`https`, a host, no credentials in it.
pub(crate) fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "the schema registry URL must be http or https, found `{}`",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the schema registry URL has no host".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the schema registry URL must not carry credentials".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the schema registry URL must not have a query or fragment".to_owned());
    }
    Ok(url)
}

/// Why a registry call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The configuration cannot work (bad URL, TLS setup).
    #[error("schema registry settings: {0}")]
    Config(String),
    /// The registry could not be reached or is failing; try again later.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
    /// The registry does not know this schema id.
    #[error("schema id {id} is unknown to the schema registry (error code {code})")]
    UnknownId {
        /// The id asked for.
        id: u32,
        /// The registry's error code (40403 for "schema not found").
        code: u32,
    },
    /// A subject, or the schema under it, is not registered.
    #[error("subject `{subject}`: {message} (error code {code})")]
    NotFound {
        /// The subject asked for.
        subject: String,
        /// 40401 subject not found, 40403 schema not found, …
        code: u32,
        /// The registry's message.
        message: String,
    },
    /// The registry refused the request (invalid or incompatible schema, …).
    #[error(
        "the schema registry refused the request: HTTP {status}, error code {code}: {message}"
    )]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The registry's error code (42201 invalid schema, 409 incompatible, …).
        code: u32,
        /// The registry's message.
        message: String,
    },
    /// The schema under this id is not Avro.
    #[error("schema id {id} is a {kind} schema, not Avro")]
    NotAvro {
        /// The id.
        id: u32,
        /// `schemaType` as the registry gave it.
        kind: String,
    },
    /// The registry's schema does not parse as Avro.
    #[error("schema id {id} from the registry does not parse: {message}")]
    BadSchema {
        /// The id.
        id: u32,
        /// apache-avro's message.
        message: String,
    },
    /// The answer was not what the API documents (a proxy page, say).
    #[error("unexpected answer from the schema registry: {0}")]
    Protocol(String),
}

impl RegistryError {
    /// True when the same call may succeed later without any change to the
    /// data: the registry was unreachable, failing, rate-limiting or
    /// refusing the credentials, or answered garbage.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Protocol(_))
    }
}

/// A schema the registry holds, parsed.
#[derive(Debug)]
pub struct RegistrySchema {
    id: u32,
    schema: Arc<AvroSchema>,
}

impl RegistrySchema {
    /// Its registry id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Its JSON text as the registry gave it.
    pub fn text(&self) -> &str {
        self.schema.text()
    }

    pub(crate) fn schema(&self) -> &AvroSchema {
        &self.schema
    }

    pub(crate) fn schema_arc(&self) -> Arc<AvroSchema> {
        self.schema.clone()
    }
}

type Cell<T> = Arc<OnceCell<T>>;

/// A schema registry client with its caches. Share it behind an `Arc`.
pub struct SchemaRegistry {
    http: reqwest::Client,
    base: Url,
    username: Option<String>,
    password: Option<String>,
    by_id: Mutex<HashMap<u32, Cell<Arc<RegistrySchema>>>>,
    by_subject: Mutex<HashMap<(String, String), Cell<u32>>>,
}

impl fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("url", &self.base.as_str())
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct SchemaAnswer {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

#[derive(Deserialize)]
struct IdAnswer {
    id: u32,
}

#[derive(Deserialize)]
struct VersionAnswer {
    id: u32,
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

#[derive(Deserialize, Default)]
struct ErrorAnswer {
    error_code: Option<u32>,
    message: Option<String>,
}

/// A non-2xx answer.
struct Refusal {
    status: StatusCode,
    code: u32,
    message: String,
}

impl SchemaRegistry {
    /// A client for `config`; makes no request yet.
    pub fn new(config: RegistryConfig) -> Result<Self, RegistryError> {
        let base = parse_url(&config.url).map_err(RegistryError::Config)?;
        if config.username.is_some() != config.password.is_some() {
            return Err(RegistryError::Config(
                "give both username and password, or neither".to_owned(),
            ));
        }
        ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| RegistryError::Config(e.without_url().to_string()))?;
        Ok(Self {
            http,
            base,
            username: config.username,
            password: config.password,
            by_id: Mutex::default(),
            by_subject: Mutex::default(),
        })
    }

    /// The schema registered under `id`, from the cache or the registry.
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<RegistrySchema>, RegistryError> {
        if let Some(schema) = self.cached(id) {
            return Ok(schema);
        }
        // The fetch future is large; boxing it keeps every caller's future
        // (awaited once per event) small.
        let cell = cell(&self.by_id, id);
        Box::pin(cell.get_or_try_init(|| self.fetch_by_id(id)))
            .await
            .cloned()
    }

    /// The schema under `id` if it is cached, without waiting.
    pub fn cached(&self, id: u32) -> Option<Arc<RegistrySchema>> {
        let map = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&id).and_then(|cell| cell.get()).cloned()
    }

    async fn fetch_by_id(&self, id: u32) -> Result<Arc<RegistrySchema>, RegistryError> {
        let id_text = id.to_string();
        let answer = match self
            .call(Method::GET, &["schemas", "ids", &id_text], None)
            .await?
        {
            Ok(body) => parse::<SchemaAnswer>(&body)?,
            Err(r) if r.status == StatusCode::NOT_FOUND => {
                return Err(RegistryError::UnknownId { id, code: r.code });
            }
            Err(r) => return Err(refused(r)),
        };
        tracing::debug!(schema_id = id, "fetched schema from the schema registry");
        parsed(id, &answer.schema, answer.schema_type.as_deref()).map(Arc::new)
    }

    /// Registers `schema` under `subject` (the registry returns the existing
    /// id when it is already there) and caches the id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        self.subject_id(subject, schema, &["subjects", subject, "versions"])
            .await
    }

    /// The id of `schema` under `subject`, which must already be registered.
    pub async fn lookup(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        self.subject_id(subject, schema, &["subjects", subject])
            .await
    }

    async fn subject_id(
        &self,
        subject: &str,
        schema: &str,
        path: &[&str],
    ) -> Result<u32, RegistryError> {
        let id_cell = cell(&self.by_subject, (subject.to_owned(), schema.to_owned()));
        id_cell
            .get_or_try_init(|| async {
                let body = serde_json::to_vec(&serde_json::json!({ "schema": schema }))
                    .map_err(|e| RegistryError::Protocol(e.to_string()))?;
                let id = match self.call(Method::POST, path, Some(body)).await? {
                    Ok(body) => parse::<IdAnswer>(&body)?.id,
                    Err(r) => return Err(subject_refused(subject, r)),
                };
                tracing::debug!(
                    subject,
                    schema_id = id,
                    "schema id from the schema registry"
                );
                // The schema is now known by its id without a fetch.
                if let Ok(parsed) = parsed(id, schema, None) {
                    let _ = cell(&self.by_id, id).set(Arc::new(parsed));
                }
                Ok(id)
            })
            .await
            .copied()
    }

    /// The latest version registered under `subject` (not cached: callers
    /// keep what they need).
    pub async fn latest(&self, subject: &str) -> Result<Arc<RegistrySchema>, RegistryError> {
        let path = ["subjects", subject, "versions", "latest"];
        let answer = match self.call(Method::GET, &path, None).await? {
            Ok(body) => parse::<VersionAnswer>(&body)?,
            Err(r) => return Err(subject_refused(subject, r)),
        };
        let schema = Arc::new(parsed(
            answer.id,
            &answer.schema,
            answer.schema_type.as_deref(),
        )?);
        let _ = cell(&self.by_id, answer.id).set(schema.clone());
        Ok(schema)
    }

    /// One request. Transport failures and "try later" statuses are
    /// `Err(Unavailable)`; other non-2xx answers are `Ok(Err(refusal))`.
    async fn call(
        &self,
        method: Method,
        path: &[&str],
        body: Option<Vec<u8>>,
    ) -> Result<Result<Bytes, Refusal>, RegistryError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| RegistryError::Config("the URL cannot take a path".to_owned()))?
            .pop_if_empty()
            .extend(path);
        let mut request = self
            .http
            .request(method, url)
            .header(reqwest::header::ACCEPT, ACCEPT);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                .body(body);
        }
        if let Some(user) = &self.username {
            request = request.basic_auth(user, self.password.as_ref());
        }
        let unavailable = |e: reqwest::Error| RegistryError::Unavailable(describe(e));
        let response = request.send().await.map_err(unavailable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unavailable)?;
        if status.is_success() {
            return Ok(Ok(body));
        }
        let answer: ErrorAnswer = serde_json::from_slice(&body).unwrap_or_default();
        if status == StatusCode::NOT_FOUND && answer.error_code.is_none() {
            // Not the registry saying "no such schema" (that comes with an
            // error code): most likely a wrong base URL. Never dead-letter
            // events over it.
            return Err(RegistryError::Protocol(
                "HTTP 404 without a schema registry error code; is schema_registry.url the registry's base URL?"
                    .to_owned(),
            ));
        }
        let code = answer.error_code.unwrap_or(u32::from(status.as_u16()));
        let mut message = answer
            .message
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("no message").to_owned());
        limit(&mut message);
        let try_later = status.is_server_error()
            || matches!(
                status,
                StatusCode::UNAUTHORIZED
                    | StatusCode::FORBIDDEN
                    | StatusCode::REQUEST_TIMEOUT
                    | StatusCode::TOO_MANY_REQUESTS
            );
        if try_later {
            let hint = match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    " (check schema_registry.username and password)"
                }
                _ => "",
            };
            return Err(RegistryError::Unavailable(format!(
                "HTTP {}, error code {code}: {message}{hint}",
                status.as_u16()
            )));
        }
        Ok(Err(Refusal {
            status,
            code,
            message,
        }))
    }
}

fn cell<K: std::hash::Hash + Eq, V>(map: &Mutex<HashMap<K, Cell<V>>>, key: K) -> Cell<V> {
    map.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key)
        .or_default()
        .clone()
}

fn refused(r: Refusal) -> RegistryError {
    RegistryError::Rejected {
        status: r.status.as_u16(),
        code: r.code,
        message: r.message,
    }
}

/// A refusal of a request about `subject`: HTTP 404 says the subject, or
/// the schema under it, is not registered.
fn subject_refused(subject: &str, r: Refusal) -> RegistryError {
    if r.status == StatusCode::NOT_FOUND {
        RegistryError::NotFound {
            subject: subject.to_owned(),
            code: r.code,
            message: r.message,
        }
    } else {
        refused(r)
    }
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, RegistryError> {
    serde_json::from_slice(body).map_err(|e| RegistryError::Protocol(e.to_string()))
}

fn parsed(id: u32, text: &str, kind: Option<&str>) -> Result<RegistrySchema, RegistryError> {
    if let Some(kind) = kind.filter(|k| !k.eq_ignore_ascii_case("AVRO")) {
        return Err(RegistryError::NotAvro {
            id,
            kind: kind.to_owned(),
        });
    }
    let schema =
        AvroSchema::parse(text).map_err(|e| RegistryError::BadSchema { id, message: e.0 })?;
    Ok(RegistrySchema {
        id,
        schema: Arc::new(schema),
    })
}

/// A transport error in words with its causes, without the URL.
fn describe(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let error = error.without_url();
    let mut text = format!("{kind}: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    limit(&mut text);
    text
}

/// Cuts `text` to [`MESSAGE_LIMIT`] bytes at a character boundary.
fn limit(text: &mut String) {
    if text.len() > MESSAGE_LIMIT {
        let cut = (0..=MESSAGE_LIMIT)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
}

/// reqwest's TLS needs a process-wide rustls crypto provider; install ring
/// unless the process already chose one.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race only means another provider was installed first.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
