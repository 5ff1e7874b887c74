//! The `http` handler's settings, read from its `handler:` mapping.
//!
//! Every problem is recorded at the key it is about, with a hint; a value
//! that may have come from the environment (a header value, the auth
//! header) is never repeated in a message.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::Url;
use spate_connector::{ConfigNode, ConfigReader, Span};

use crate::mapping::{mapping, read_entries, EntryProblem};

/// What the request body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyMode {
    /// The event payload as is; metadata in `spate-*` request headers.
    Payload,
    /// A JSON envelope with the payload and all metadata.
    Event,
}

/// The settings, validated.
pub(super) struct Settings {
    pub url: Url,
    pub timeout: Duration,
    /// `headers:` plus `Authorization` from `auth_header:`, all marked
    /// sensitive.
    pub headers: HeaderMap,
    pub body: BodyMode,
    pub content_type: Option<HeaderValue>,
    pub max_response_size: usize,
}

/// Per-call timeout when `timeout:` is not written.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response body read when `max_response_size:` is not written.
pub(super) const DEFAULT_MAX_RESPONSE: usize = 16 << 20;

const URL_HINT: &str = "write the function's address, e.g. `url: https://fn.example/orders` or `url: ${ORDERS_FN_URL}`";

/// Header names the user may not set under `headers:`, and why.
fn reserved(name: &HeaderName) -> Option<&'static str> {
    let hint = match name.as_str() {
        "authorization" => {
            "write the credential as `auth_header:`; it is sent as `Authorization` and never logged"
        }
        "content-type" => "write it as `content_type:` (only for `body: payload`)",
        "host" | "content-length" | "transfer-encoding" | "connection" | "te" | "upgrade"
        | "trailer" | "keep-alive" | "proxy-connection" => {
            "the HTTP client sets this header itself; remove it"
        }
        other if other.starts_with("spate-") => {
            "`spate-` headers carry the event's metadata; use another name"
        }
        _ => return None,
    };
    Some(hint)
}

/// Reads every setting; `None` when any of them is invalid (each problem
/// is recorded in `config`).
pub(super) fn read(config: &mut ConfigReader<'_>) -> Option<Settings> {
    let url = read_url(config);
    let timeout = read_timeout(config);
    let headers = read_headers(config);
    let auth = read_auth(config);
    let body = match config.one_of("body", &["payload", "event"]) {
        Some("event") => Some(BodyMode::Event),
        Some(_) => Some(BodyMode::Payload),
        None if config.has("body") => None,
        None => Some(BodyMode::Payload),
    };
    let content_type = read_content_type(config, body);
    let max_response_size = read_max_response(config);

    let mut headers = headers?;
    if let Some(auth) = auth? {
        headers.insert(AUTHORIZATION, auth);
    }
    Some(Settings {
        url: url?,
        timeout: timeout?,
        headers,
        body: body?,
        content_type: content_type?,
        max_response_size: max_response_size?,
    })
}

fn read_url(config: &mut ConfigReader<'_>) -> Option<Url> {
    let text = config.required_string("url", Some(URL_HINT.to_owned()))?;
    // The parse error names what is wrong, never the text (which may hold a
    // token from the environment).
    let url = match Url::parse(text.trim()) {
        Ok(url) => url,
        Err(e) => {
            config.error_at_key(
                "url",
                format!("`url` is not a valid address: {e}"),
                Some(URL_HINT.to_owned()),
            );
            return None;
        }
    };
    if !matches!(url.scheme(), "http" | "https") {
        config.error_at_key(
            "url",
            format!(
                "`url` must be an http:// or https:// address, found scheme `{}`",
                url.scheme()
            ),
            Some(URL_HINT.to_owned()),
        );
        return None;
    }
    if url.host_str().is_none_or(str::is_empty) {
        config.error_at_key("url", "`url` has no host", Some(URL_HINT.to_owned()));
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        config.error_at_key(
            "url",
            "`url` must not carry credentials (`user:password@`)",
            Some(
                "put the credential in `auth_header:` (e.g. `auth_header: 'Basic ${FN_BASIC}'`), which is never logged"
                    .to_owned(),
            ),
        );
        return None;
    }
    if url.fragment().is_some() {
        config.error_at_key(
            "url",
            "`url` must not have a `#fragment`: it is never sent to the server",
            Some("remove the part from `#` on".to_owned()),
        );
        return None;
    }
    Some(url)
}

fn read_timeout(config: &mut ConfigReader<'_>) -> Option<Duration> {
    match config.duration("timeout") {
        Some(t) if t < Duration::from_millis(1) => {
            config.error_at_key(
                "timeout",
                "`timeout` must be at least 1ms",
                Some("give each call time to answer, e.g. `timeout: 5s`; keep it below the function's `retry.timeout`".to_owned()),
            );
            None
        }
        Some(t) => Some(t),
        None if config.has("timeout") => None,
        None => Some(DEFAULT_TIMEOUT),
    }
}

fn read_headers(config: &mut ConfigReader<'_>) -> Option<HeaderMap> {
    let mut headers = HeaderMap::new();
    let what = "a mapping of header name to value";
    let hint = "e.g. `headers: {x-api-key: '${FN_KEY}'}`";
    let Some((_, entries)) = mapping(config, "headers", what, hint)? else {
        return Some(headers);
    };
    let ok = read_entries(config, "headers", entries, |name, name_span, value| {
        let (header, value) = header_entry(&headers, name, name_span, value)?;
        headers.insert(header, value);
        Ok(())
    });
    ok.then_some(headers)
}

/// One entry of `headers:`: a name that is valid, may be set and is not
/// already in `headers`, and a valid value (marked sensitive).
fn header_entry(
    headers: &HeaderMap,
    name: &str,
    name_span: Span,
    value: &ConfigNode,
) -> Result<(HeaderName, HeaderValue), EntryProblem> {
    let at_name = |message: String, hint: &str| EntryProblem::new(name_span, message, hint);
    let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        at_name(
            format!("`{name}` is not a valid HTTP header name"),
            "use letters, digits and `-` (e.g. `x-api-key`)",
        )
    })?;
    if let Some(hint) = reserved(&header) {
        return Err(at_name(
            format!("header `{name}` cannot be set under `headers`"),
            hint,
        ));
    }
    if headers.contains_key(&header) {
        return Err(at_name(
            format!("header `{name}` is given twice (header names ignore case)"),
            "keep one of them",
        ));
    }
    let at_value = |message: String, hint: &str| EntryProblem::new(value.span, message, hint);
    let text = value.as_text().ok_or_else(|| {
        at_value(
            format!(
                "the value of header `{name}` must be text, found {}",
                value.type_name()
            ),
            "quote it: `x-api-key: '${FN_KEY}'`",
        )
    })?;
    let mut value = HeaderValue::from_str(text).map_err(|_| {
        at_value(
            format!("the value of header `{name}` is not a valid HTTP header value"),
            "header values are one line of visible characters; check for line breaks or control characters (in the environment variable too)",
        )
    })?;
    value.set_sensitive(true);
    Ok((header, value))
}

/// `Some(None)` when no credential is configured (absent or empty — so
/// `'${FN_AUTH:-}'` makes it optional).
fn read_auth(config: &mut ConfigReader<'_>) -> Option<Option<HeaderValue>> {
    let present = config.has("auth_header");
    let Some(text) = config.string("auth_header") else {
        return (!present).then_some(None);
    };
    if text.is_empty() {
        return Some(None);
    }
    match HeaderValue::from_str(&text) {
        Ok(mut value) => {
            value.set_sensitive(true);
            Some(Some(value))
        }
        Err(_) => {
            config.error_at_key(
                "auth_header",
                "`auth_header` is not a valid HTTP header value",
                Some(
                    "write the whole `Authorization` value on one line, e.g. `auth_header: 'Bearer ${FN_TOKEN}'`; check the environment variable for line breaks"
                        .to_owned(),
                ),
            );
            None
        }
    }
}

fn read_content_type(
    config: &mut ConfigReader<'_>,
    body: Option<BodyMode>,
) -> Option<Option<HeaderValue>> {
    let present = config.has("content_type");
    let Some(text) = config.string("content_type") else {
        return (!present).then_some(None);
    };
    if body == Some(BodyMode::Event) {
        config.error_at_key(
            "content_type",
            "`content_type` applies to `body: payload` only",
            Some("`body: event` always sends `application/json`; remove `content_type`".to_owned()),
        );
        return None;
    }
    match HeaderValue::from_str(&text) {
        Ok(value) if text.contains('/') => Some(Some(value)),
        _ => {
            config.error_at_key(
                "content_type",
                format!("`content_type` must be a media type, found `{text}`"),
                Some("e.g. `content_type: application/cloudevents+json` or `text/plain; charset=utf-8`".to_owned()),
            );
            None
        }
    }
}

fn read_max_response(config: &mut ConfigReader<'_>) -> Option<usize> {
    match config.byte_size("max_response_size") {
        Some(0) => {
            config.error_at_key(
                "max_response_size",
                "`max_response_size` must be at least 1 byte",
                Some("e.g. `max_response_size: 1MiB`".to_owned()),
            );
            None
        }
        Some(size) => Some(usize::try_from(size).unwrap_or(usize::MAX)),
        None if config.has("max_response_size") => None,
        None => Some(DEFAULT_MAX_RESPONSE),
    }
}
