//! The `http` built-in handler: each event is POSTed to a URL — a
//! serverless function (OpenFaaS, Knative, Lambda function URLs) or any web
//! service — and the response body becomes the outputs.
//!
//! ```yaml
//! handler:
//!   name: http
//!   url: ${ORDERS_FN_URL}                  # required, http:// or https://
//!   timeout: 5s                            # per call, default 10s, at least 1ms
//!   headers: {x-api-key: '${FN_KEY}'}      # optional, sent with every call
//!   auth_header: 'Bearer ${FN_TOKEN:-}'    # optional, sent as Authorization; empty = none
//!   body: payload                          # payload (default) | event
//!   content_type: application/json         # body: payload only; default: see below
//!   max_response_size: 16MiB               # default 16MiB
//! ```
//!
//! # The request
//!
//! One `POST` per event (the engine hands handlers one event at a time, so
//! there is no batch mode). Every call carries `spate-stream`,
//! `spate-partition`, `spate-offset` (together they name the event, the
//! same on every retry and redelivery, so a function can de-duplicate),
//! `spate-function` and `spate-attempt` (1, 2, …).
//!
//! - `body: payload`: the payload as is, with `Content-Type:
//!   application/json` when it parses as JSON, else
//!   `application/octet-stream` (or `content_type:` when written). The key
//!   goes in `spate-key` (as `spate-key-base64` when it is not printable
//!   ASCII), the timestamp in `spate-timestamp-ms`, and each event header as
//!   `spate-h-<lowercased name>`. An event header whose value is not
//!   printable ASCII, or whose name is not a valid HTTP header name, is not
//!   sent: `spate-skipped-headers: <n>` says how many were left out (and a
//!   `debug` log line names them). Use `body: event` to receive every header.
//! - `body: event`: `application/json`, the envelope
//!   `{function, attempt, stream, partition, offset, key, key_base64?,
//!   timestamp_ms, headers: [{name, value | value_base64}], payload |
//!   payload_base64}` — `payload` is the payload's JSON text byte for byte
//!   when it is JSON, otherwise `payload_base64` holds it; text that is not
//!   UTF-8 (key, header values) is given as `…_base64`.
//!
//! # The response
//!
//! | response | outcome |
//! | --- | --- |
//! | 2xx with an empty (or blank) body, or 204 | handled, no output |
//! | 2xx with a JSON array | one output per element (its JSON text as written; wrap in `[...]` to emit one array) |
//! | 2xx with any other body | one output: the body as is |
//! | 408, 429, 5xx | retryable failure (`Retry-After` is quoted in the message; the engine's backoff decides when) |
//! | no complete response within `timeout`, connection refused, DNS or TLS failure, connection lost | retryable failure |
//! | 3xx (redirects are not followed), other 4xx | permanent failure: dead letter |
//! | 2xx body larger than `max_response_size` | permanent failure: dead letter |
//!
//! Outputs keep the event's key, headers and timestamp and go to every
//! declared output. A failure's message — which the dead letter carries in
//! its error header — is `POST <scheme://host:port/path>: <status>` plus up
//! to 512 bytes of the response body on one line.
//!
//! # Guarantees
//!
//! - **Secrets stay secret.** Configured header values and `auth_header` are
//!   marked sensitive and appear in no message, log line or `Debug` output;
//!   messages show the address without its query string (where keys such
//!   as Azure's `?code=` live), and `user:password@` in `url` is refused.
//! - **Bounded.** Each call ends within `timeout` (connect, send, and the
//!   whole response body); a response body is read only up to
//!   `max_response_size`, and an error body only up to 512 bytes.
//! - **Pooled.** One HTTP client per configured handler keeps connections
//!   alive across events. Idle connections per host are not capped, so
//!   every connection the engine's tasks opened stays reusable: about one
//!   per task running at once (at most `concurrency.max`; a call starting
//!   just as another's connection is being handed back may open one more).
//!   Idle connections close after 90 s.
//! - **Timeouts compose.** The engine's `retry.timeout` bounds a whole
//!   attempt too; keep `timeout` below it so a slow call fails with this
//!   handler's message. If `retry.timeout` is shorter, the engine abandons
//!   the attempt (also retryable) and the request is cancelled.
//! - **At least once.** A call may be repeated (retries, redeliveries after a
//!   crash): with `delivery: exactly_once` the outputs are committed exactly
//!   once, but the function's own side effects are not — use the `spate-*`
//!   identity headers to make them idempotent.
//!
//! The client speaks HTTP/1.1 (keep-alive); TLS is rustls with the `ring`
//! provider and the platform's certificate store; the proxy environment variables (`HTTPS_PROXY`, `NO_PROXY`, …) are
//! honoured.

mod config;
mod request;
mod response;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use reqwest::{Client, Url};
use spate_connector::{ConfigReader, Event};
use tracing::debug;

use super::{Context, Handler, HandlerError, HandlerFactory, Output};
use config::{BodyMode, Settings};
use response::CallError;

/// The `http` built-in (see the module docs).
pub struct HttpBuiltin;

impl HandlerFactory for HttpBuiltin {
    fn name(&self) -> &'static str {
        "http"
    }

    fn configure(&self, config: &mut ConfigReader<'_>) -> Option<Arc<dyn Handler>> {
        let settings = config::read(config)?;
        match HttpHandler::new(settings) {
            Ok(handler) => Some(Arc::new(handler)),
            Err(error) => {
                config.error(
                    config.span(),
                    config.path().to_owned(),
                    error.to_string(),
                    Some("the TLS setup reads the platform's certificate store; check that it is readable".to_owned()),
                );
                None
            }
        }
    }

    fn summary(&self) -> &'static str {
        "POSTs each event to a URL (a serverless function or web service); the response body is the output"
    }
}

/// Why the HTTP client could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpSetupError {
    /// The client refused its settings (TLS initialisation, mostly).
    #[error("cannot set up the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// The configured handler: one pooled client, one address.
pub(crate) struct HttpHandler {
    client: Client,
    url: Url,
    /// `POST scheme://host:port/path`, for messages.
    target: String,
    timeout: Duration,
    body: BodyMode,
    content_type: Option<HeaderValue>,
    max_response_size: usize,
    /// Names of the configured headers (values are secret).
    header_names: Vec<String>,
    has_auth: bool,
}

impl fmt::Debug for HttpHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpHandler")
            .field("target", &self.target)
            .field("timeout", &self.timeout)
            .field("body", &self.body)
            .field("content_type", &self.content_type)
            .field("max_response_size", &self.max_response_size)
            .field("headers", &self.header_names)
            .field(
                "auth_header",
                &if self.has_auth { "<redacted>" } else { "none" },
            )
            .finish_non_exhaustive()
    }
}

/// The address as messages show it: no credentials, no query, no fragment.
fn shown_address(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let query = if url.query().is_some() { "?…" } else { "" };
    format!("{}://{host}{port}{}{query}", url.scheme(), url.path())
}

/// rustls needs one crypto provider per process; spate uses `ring`. An
/// embedding program that installed another one first keeps its own.
fn install_crypto_provider() {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}

impl HttpHandler {
    fn new(settings: Settings) -> Result<Self, HttpSetupError> {
        let Settings {
            url,
            timeout,
            headers,
            body,
            content_type,
            max_response_size,
        } = settings;
        let header_names = headers
            .keys()
            .filter(|name| *name != AUTHORIZATION)
            .map(|name| name.as_str().to_owned())
            .collect();
        let has_auth = headers.contains_key(AUTHORIZATION);
        let mut headers = headers;
        if !headers.contains_key(USER_AGENT) {
            headers.insert(
                USER_AGENT,
                HeaderValue::from_static(concat!("spate/", env!("CARGO_PKG_VERSION"))),
            );
        }
        install_crypto_provider();
        let client = Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(usize::MAX)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| HttpSetupError::Client(e.without_url()))?;
        Ok(Self {
            client,
            target: format!("POST {}", shown_address(&url)),
            url,
            timeout,
            body,
            content_type,
            max_response_size,
            header_names,
            has_auth,
        })
    }

    async fn call(&self, event: &Event, ctx: &Context) -> Result<Vec<Output>, CallError> {
        let mut headers = HeaderMap::new();
        request::identity_headers(event, ctx, &mut headers);
        let (body, content_type) = match self.body {
            BodyMode::Event => (
                request::envelope(event, ctx),
                HeaderValue::from_static("application/json"),
            ),
            BodyMode::Payload => {
                let skipped = request::metadata_headers(event, &mut headers);
                if !skipped.is_empty() {
                    debug!(
                        function = %ctx.function,
                        skipped = ?skipped,
                        "http handler: event headers not sent (not printable ASCII or not a valid header name)"
                    );
                }
                let content_type = match &self.content_type {
                    Some(value) => value.clone(),
                    None if request::is_json(&event.payload) => {
                        HeaderValue::from_static("application/json")
                    }
                    None => HeaderValue::from_static("application/octet-stream"),
                };
                (event.payload.clone(), content_type)
            }
        };
        headers.insert(CONTENT_TYPE, content_type);
        let response = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| CallError::from_reqwest(&self.target, self.timeout, e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(response::status_error(response, &self.target).await);
        }
        let body =
            response::read_body(response, &self.target, self.timeout, self.max_response_size)
                .await?;
        Ok(response::outputs(event, status, body))
    }
}

#[async_trait]
impl Handler for HttpHandler {
    async fn handle(&self, event: Event, ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        self.call(&event, ctx).await.map_err(|error| HandlerError {
            kind: error.kind(),
            message: error.to_string(),
            reason: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_names_headers_but_never_their_values() {
        let node = spate_connector::testkit::config_map(&[
            ("url", "http://127.0.0.1:9/orders?code=query-secret"),
            ("auth_header", "Bearer auth-secret"),
        ]);
        let errors = spate_connector::config::ConfigErrors::default();
        let settings = {
            let mut reader = ConfigReader::new(&node, "handler", &errors);
            config::read(&mut reader)
        };
        assert!(errors.into_inner().is_empty());
        let handler = HttpHandler::new(settings.expect("valid settings")).expect("client");
        let shown = format!("{handler:?}");
        assert!(shown.contains("auth_header: \"<redacted>\""), "{shown}");
        assert!(
            shown.contains("POST http://127.0.0.1:9/orders?…"),
            "{shown}"
        );
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn messages_show_the_address_without_query_or_credentials() {
        let url = Url::parse("https://fn.example:8443/api/orders?code=s3cret#x").unwrap();
        assert_eq!(shown_address(&url), "https://fn.example:8443/api/orders?…");
        let url = Url::parse("http://127.0.0.1/").unwrap();
        assert_eq!(shown_address(&url), "http://127.0.0.1/");
    }
}
