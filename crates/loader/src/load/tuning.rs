//! The tuning sections of a pipeline file — `settings:`, and a function's
//! `concurrency:`, `retry:` and `max_in_flight:` — with their defaults and
//! the rules between their values. A value that is written but invalid is
//! reported once; relations (`min <= max`, `initial_backoff <= max_backoff`)
//! are only checked between values that are valid. Defaults and ranges are
//! those of [`crate::limits`].

use std::net::{Ipv4Addr, SocketAddr};

use spate_connector::ConfigReader;

use crate::limits::{self, Bytes, Count, Limit};
use crate::spec::{ConcurrencySpec, InFlightLimits, RetryPolicy, SettingsSpec};

pub(super) fn read_settings(section: Option<ConfigReader<'_>>) -> Option<SettingsSpec> {
    let default_address = SocketAddr::from((Ipv4Addr::LOCALHOST, 9464));
    let Some(mut settings) = section else {
        return Some(SettingsSpec {
            metrics_address: Some(default_address),
            max_in_flight: InFlightLimits {
                events: count(limits::PROCESS_EVENTS.default),
                bytes: limits::PROCESS_BYTES.default.0,
            },
        });
    };
    let metrics_address = match settings.string("metrics_address").as_deref() {
        None => Some(Some(default_address)),
        Some("off") => Some(None),
        Some(text) => match parse_address(text) {
            Some(address) => Some(Some(address)),
            None => {
                settings.error_at_key(
                    "metrics_address",
                    format!("`metrics_address` must be `ip:port` or `off`, found `{text}`"),
                    Some("e.g. `metrics_address: 127.0.0.1:9464`, or `0.0.0.0:9464` to serve every interface".to_owned()),
                );
                None
            }
        },
    };
    let max_in_flight = read_limits(
        settings.section("max_in_flight"),
        (&limits::PROCESS_EVENTS, &limits::PROCESS_BYTES),
    );
    Some(SettingsSpec {
        metrics_address: metrics_address?,
        max_in_flight: max_in_flight?,
    })
}

/// A count checked against a [`limits`] range, which keeps it far below
/// `usize::MAX` on every platform spate builds for.
fn count(value: Count) -> usize {
    usize::try_from(value.0).unwrap_or(usize::MAX)
}

fn parse_address(text: &str) -> Option<SocketAddr> {
    if let Some(port) = text.strip_prefix("localhost:") {
        return port
            .parse::<u16>()
            .ok()
            .map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)));
    }
    text.parse().ok()
}

/// `max_in_flight` of the process or of a function, read through its two
/// limits (events, bytes).
pub(super) fn read_limits(
    section: Option<ConfigReader<'_>>,
    (events, bytes): (&Limit<Count>, &Limit<Bytes>),
) -> Option<InFlightLimits> {
    let Some(mut reader) = section else {
        return Some(InFlightLimits {
            events: count(events.default),
            bytes: bytes.default.0,
        });
    };
    let events = events.read(&mut reader, "events");
    let bytes = bytes.read(&mut reader, "bytes");
    Some(InFlightLimits {
        events: count(events?),
        bytes: bytes?.0,
    })
}

pub(super) fn read_concurrency(section: Option<ConfigReader<'_>>) -> Option<ConcurrencySpec> {
    let Some(mut c) = section else {
        return Some(ConcurrencySpec {
            min: count(limits::CONCURRENCY_MIN.default),
            max: count(limits::CONCURRENCY_MAX.default),
        });
    };
    let max_written = c.has("max");
    let min = limits::CONCURRENCY_MIN.read(&mut c, "min");
    let max = limits::CONCURRENCY_MAX.read(&mut c, "max");
    let (Some(min), Some(max)) = (min, max) else {
        return None;
    };
    if min > max {
        c.error_at_key(
            "min",
            format!(
                "`concurrency.min` ({}) is greater than `concurrency.max` ({})",
                min.0, max.0
            ),
            Some(match max_written {
                true => "lower `min` or raise `max`".to_owned(),
                false => format!("lower `min`, or raise `max` ({} when not given)", max.0),
            }),
        );
        return None;
    }
    Some(ConcurrencySpec {
        min: count(min),
        max: count(max),
    })
}

pub(super) fn read_retry(section: Option<ConfigReader<'_>>) -> Option<RetryPolicy> {
    let Some(mut r) = section else {
        return Some(RetryPolicy {
            max_attempts: attempts(limits::RETRY_ATTEMPTS.default),
            initial_backoff: limits::RETRY_INITIAL_BACKOFF.default,
            max_backoff: limits::RETRY_MAX_BACKOFF.default,
            timeout: limits::RETRY_TIMEOUT.default,
        });
    };
    let max_attempts = limits::RETRY_ATTEMPTS.read(&mut r, "max_attempts");
    let initial = limits::RETRY_INITIAL_BACKOFF.read(&mut r, "initial_backoff");
    let max = limits::RETRY_MAX_BACKOFF.read(&mut r, "max_backoff");
    let timeout = limits::RETRY_TIMEOUT.read(&mut r, "timeout");
    if let (Some(initial), Some(max)) = (initial, max) {
        if initial > max {
            r.error_at_key(
                "initial_backoff",
                format!("`retry.initial_backoff` ({initial:?}) is longer than `retry.max_backoff` ({max:?})"),
                Some("shorten `initial_backoff` or lengthen `max_backoff`".to_owned()),
            );
            return None;
        }
    }
    Some(RetryPolicy {
        max_attempts: attempts(max_attempts?),
        initial_backoff: initial?,
        max_backoff: max?,
        timeout: timeout?,
    })
}

/// `retry.max_attempts`, whose range keeps it inside a `u32`.
fn attempts(value: Count) -> u32 {
    u32::try_from(value.0).unwrap_or(u32::MAX)
}
