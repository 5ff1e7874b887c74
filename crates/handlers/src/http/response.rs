//! What one call's response means: outputs, or a failure that says whether
//! to retry.

use bytes::{Bytes, BytesMut};
use reqwest::header::RETRY_AFTER;
use reqwest::{Response, StatusCode};
use serde_json::value::RawValue;
use spate_connector::Event;

use crate::{ErrorKind, Output};

/// Most bytes of an error response quoted in the failure message.
pub(super) const SNIPPET_BYTES: usize = 512;

/// Most characters of a `Retry-After` value quoted.
const RETRY_AFTER_CHARS: usize = 64;

/// Why a call failed. The messages name the method and the address without
/// its query (see [`super::Target`]), never a request header.
#[derive(Debug, thiserror::Error)]
pub(super) enum CallError {
    /// The server answered with a status other than 2xx.
    #[error("{target}: {status}{}{}", retry_after.as_ref().map(|r| format!(" (Retry-After: {r})")).unwrap_or_default(), if snippet.is_empty() { String::new() } else { format!(": {snippet}") })]
    Status {
        /// `POST <address>`.
        target: String,
        /// The status.
        status: StatusCode,
        /// The `Retry-After` header, quoted for the record only: the
        /// engine's backoff decides when to retry.
        retry_after: Option<String>,
        /// The start of the response body, one line.
        snippet: String,
    },
    /// No complete response within the handler's `timeout`.
    #[error("{target}: no complete response within {timeout:?} (the handler's `timeout`)")]
    Timeout {
        /// `POST <address>`.
        target: String,
        /// The configured timeout.
        timeout: std::time::Duration,
    },
    /// The connection could not be made (refused, DNS, TLS).
    #[error("{target}: cannot connect: {cause}")]
    Connect {
        /// `POST <address>`.
        target: String,
        /// The error chain.
        cause: String,
    },
    /// The request or the response broke off.
    #[error("{target}: {cause}")]
    Transport {
        /// `POST <address>`.
        target: String,
        /// The error chain.
        cause: String,
    },
    /// The response body is larger than `max_response_size`.
    #[error("{target}: response body is larger than `max_response_size` ({limit} bytes)")]
    TooLarge {
        /// `POST <address>`.
        target: String,
        /// The limit.
        limit: usize,
    },
}

impl CallError {
    /// Whether another attempt may succeed: 408, 429, 5xx and every
    /// transport failure may; other statuses and oversized responses will
    /// not.
    pub(super) fn kind(&self) -> ErrorKind {
        match self {
            Self::Status { status, .. } if retryable_status(*status) => ErrorKind::Retryable,
            Self::Status { .. } | Self::TooLarge { .. } => ErrorKind::Permanent,
            Self::Timeout { .. } | Self::Connect { .. } | Self::Transport { .. } => {
                ErrorKind::Retryable
            }
        }
    }

    /// Classifies a client error; the URL is stripped from it first.
    pub(super) fn from_reqwest(
        target: &str,
        timeout: std::time::Duration,
        error: reqwest::Error,
    ) -> Self {
        let target = target.to_owned();
        let error = error.without_url();
        if error.is_timeout() {
            return Self::Timeout { target, timeout };
        }
        let cause = chain(&error);
        if error.is_connect() {
            Self::Connect { target, cause }
        } else {
            Self::Transport { target, cause }
        }
    }
}

/// 408 Request Timeout, 429 Too Many Requests and every 5xx.
pub(super) fn retryable_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// `error: cause: cause…`, without repeats.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// Reads the body of a 2xx response, at most `limit` bytes.
pub(super) async fn read_body(
    mut response: Response,
    target: &str,
    timeout: std::time::Duration,
    limit: usize,
) -> Result<Bytes, CallError> {
    let too_large = || CallError::TooLarge {
        target: target.to_owned(),
        limit,
    };
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| CallError::from_reqwest(target, timeout, e))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The failure for a non-2xx response, quoting the start of its body
/// (best effort: a body that breaks off is quoted as far as it came).
pub(super) async fn status_error(mut response: Response, target: &str) -> CallError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(RETRY_AFTER_CHARS).collect());
    let mut start = Vec::new();
    let mut truncated = false;
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = SNIPPET_BYTES - start.len();
        if chunk.len() > room {
            start.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        start.extend_from_slice(&chunk);
    }
    CallError::Status {
        target: target.to_owned(),
        status,
        retry_after,
        snippet: snippet(&start, truncated),
    }
}

/// One line of text from the start of a body: invalid UTF-8 replaced,
/// control characters turned into spaces, `…` when cut.
pub(super) fn snippet(start: &[u8], truncated: bool) -> String {
    let text = String::from_utf8_lossy(start);
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if truncated {
        // A cut in the middle of a UTF-8 sequence shows as U+FFFD; drop it.
        if line.ends_with('\u{fffd}') {
            line.pop();
        }
        line.push('…');
    }
    line
}

/// The outputs of a 2xx response: none for 204 or an empty (or blank)
/// body; one per element for a JSON array (each element's JSON text as
/// written); else one output with the body as is. Every output keeps the
/// event's key, headers and timestamp.
pub(super) fn outputs(event: &Event, status: StatusCode, body: Bytes) -> Vec<Output> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => Vec::new(),
        _ if status == StatusCode::NO_CONTENT => Vec::new(),
        Some(b'[') => match serde_json::from_slice::<Vec<&RawValue>>(&body) {
            Ok(items) => items
                .into_iter()
                .map(|item| {
                    Output::from_event(event, Bytes::copy_from_slice(item.get().as_bytes()))
                })
                .collect(),
            Err(_) => vec![Output::from_event(event, body)],
        },
        Some(_) => vec![Output::from_event(event, body)],
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use spate_connector::Headers;

    use super::*;

    fn event() -> Event {
        let mut headers = Headers::new();
        headers.push("tenant", "acme");
        Event {
            key: Some(Bytes::from_static(b"order-7")),
            headers,
            timestamp_ms: Some(99),
            ..crate::testing::event("orders", 0, 1, b"{}")
        }
    }

    fn payloads(outputs: &[Output]) -> Vec<&str> {
        outputs
            .iter()
            .map(|o| std::str::from_utf8(&o.record.payload).unwrap())
            .collect()
    }

    #[test]
    fn arrays_split_other_bodies_stay_whole_and_empty_means_none() {
        let ok = StatusCode::OK;
        let many = outputs(
            &event(),
            ok,
            Bytes::from_static(b" [{\"n\": 1.50}, \"two\", [3]]\n"),
        );
        assert_eq!(payloads(&many), [r#"{"n": 1.50}"#, r#""two""#, "[3]"]);
        for output in &many {
            assert_eq!(output.record.key.as_deref(), Some(&b"order-7"[..]));
            assert_eq!(output.record.headers.get_str("tenant"), Some("acme"));
            assert_eq!(output.record.timestamp_ms, Some(99));
            assert_eq!(output.to, None);
        }
        let one = outputs(&event(), ok, Bytes::from_static(b"{\"score\": 7}"));
        assert_eq!(payloads(&one), [r#"{"score": 7}"#]);
        let broken = outputs(&event(), ok, Bytes::from_static(b"[not json"));
        assert_eq!(payloads(&broken), ["[not json"]);
        assert!(outputs(&event(), ok, Bytes::from_static(b"[]")).is_empty());
        assert!(outputs(&event(), ok, Bytes::new()).is_empty());
        assert!(outputs(&event(), ok, Bytes::from_static(b" \n")).is_empty());
        assert!(outputs(&event(), StatusCode::NO_CONTENT, Bytes::from_static(b"x")).is_empty());
    }

    #[test]
    fn statuses_are_classified() {
        let kind = |code: u16| {
            CallError::Status {
                target: "POST x".to_owned(),
                status: StatusCode::from_u16(code).unwrap(),
                retry_after: None,
                snippet: String::new(),
            }
            .kind()
        };
        for code in [408, 429, 500, 502, 503, 504] {
            assert_eq!(kind(code), ErrorKind::Retryable, "{code}");
        }
        for code in [301, 400, 401, 403, 404, 409, 413, 422] {
            assert_eq!(kind(code), ErrorKind::Permanent, "{code}");
        }
        let timeout = CallError::Timeout {
            target: "POST x".to_owned(),
            timeout: Duration::from_millis(5),
        };
        assert_eq!(timeout.kind(), ErrorKind::Retryable);
    }

    #[test]
    fn messages_quote_status_retry_after_and_one_line_of_body() {
        let error = CallError::Status {
            target: "POST http://fn/orders".to_owned(),
            status: StatusCode::TOO_MANY_REQUESTS,
            retry_after: Some("2".to_owned()),
            snippet: snippet(b"slow\r\n  down", false),
        };
        assert_eq!(
            error.to_string(),
            "POST http://fn/orders: 429 Too Many Requests (Retry-After: 2): slow down"
        );
        assert_eq!(snippet("caf\u{e9}".as_bytes()[..4].as_ref(), true), "caf…");
    }
}
