//! The tuning sections of a pipeline file — `settings:`, and a function's
//! `concurrency:`, `retry:` and `max_in_flight:` — with their defaults and
//! the rules between their values. A value that is written but invalid is
//! reported once; relations (`min <= max`, `initial_backoff <= max_backoff`)
//! are only checked between values that are valid.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use spate_connector::ConfigReader;

use crate::pipeline::spec::{ConcurrencySpec, InFlightLimits, RetryPolicy, SettingsSpec};

/// `key` read by `read`, its default when absent, `None` when written but
/// invalid (the problem is already recorded).
pub(super) fn or_default<'a, T>(
    reader: &mut ConfigReader<'a>,
    key: &'static str,
    default: T,
    read: fn(&mut ConfigReader<'a>, &'static str) -> Option<T>,
) -> Option<T> {
    if reader.has(key) {
        read(reader, key)
    } else {
        Some(default)
    }
}

pub(super) fn read_settings(section: Option<ConfigReader<'_>>) -> Option<SettingsSpec> {
    let defaults = InFlightLimits {
        events: 100_000,
        bytes: 256 << 20,
    };
    let Some(mut settings) = section else {
        return Some(SettingsSpec {
            metrics_address: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 9464))),
            max_in_flight: defaults,
        });
    };
    let metrics_address = match settings.string("metrics_address").as_deref() {
        None => Some(Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 9464)))),
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
        "settings.max_in_flight",
        defaults,
    );
    Some(SettingsSpec {
        metrics_address: metrics_address?,
        max_in_flight: max_in_flight?,
    })
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

/// `max_in_flight` of the process or of a function; `label` names it in
/// messages.
pub(super) fn read_limits(
    section: Option<ConfigReader<'_>>,
    label: &str,
    defaults: InFlightLimits,
) -> Option<InFlightLimits> {
    let Some(mut limits) = section else {
        return Some(defaults);
    };
    let events = or_default(
        &mut limits,
        "events",
        defaults.events as u64,
        ConfigReader::u64,
    );
    let bytes = or_default(
        &mut limits,
        "bytes",
        defaults.bytes,
        ConfigReader::byte_size,
    );
    let events = match events.map(usize::try_from) {
        Some(Ok(0)) | Some(Err(_)) => {
            limits.error_at_key(
                "events",
                format!("`{label}.events` must be at least 1"),
                Some("it bounds how many events are held at once, e.g. `events: 1000`".to_owned()),
            );
            None
        }
        Some(Ok(events)) => Some(events),
        None => None,
    };
    if bytes == Some(0) {
        limits.error_at_key(
            "bytes",
            format!("`{label}.bytes` must be at least 1"),
            Some("it bounds the bytes of the events held at once, e.g. `bytes: 16MiB`".to_owned()),
        );
    }
    Some(InFlightLimits {
        events: events?,
        bytes: bytes.filter(|b| *b > 0)?,
    })
}

pub(super) fn read_concurrency(section: Option<ConfigReader<'_>>) -> Option<ConcurrencySpec> {
    let (min, max) = (0, 16);
    let Some(mut c) = section else {
        return Some(ConcurrencySpec { min, max });
    };
    let max_written = c.has("max");
    let min = or_default(&mut c, "min", min as u64, ConfigReader::u64);
    let max = or_default(&mut c, "max", max as u64, ConfigReader::u64);
    let (Some(min), Some(max)) = (min, max) else {
        return None;
    };
    if max == 0 {
        c.error_at_key(
            "max",
            "`concurrency.max` must be at least 1",
            Some("it is the most handler tasks at once, e.g. `max: 16` (`min: 0` already lets an idle function hold none)".to_owned()),
        );
        return None;
    }
    if min > max {
        c.error_at_key(
            "min",
            format!("`concurrency.min` ({min}) is greater than `concurrency.max` ({max})"),
            Some(match max_written {
                true => "lower `min` or raise `max`".to_owned(),
                false => format!("lower `min`, or raise `max` ({max} when not given)"),
            }),
        );
        return None;
    }
    let (Ok(min), Ok(max)) = (usize::try_from(min), usize::try_from(max)) else {
        c.error_at_key("max", "`concurrency.max` is too large", None);
        return None;
    };
    Some(ConcurrencySpec { min, max })
}

pub(super) fn read_retry(section: Option<ConfigReader<'_>>) -> Option<RetryPolicy> {
    let defaults = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(10),
        timeout: Duration::from_secs(30),
    };
    let Some(mut r) = section else {
        return Some(defaults);
    };
    let attempts = or_default(
        &mut r,
        "max_attempts",
        u64::from(defaults.max_attempts),
        ConfigReader::u64,
    );
    let initial = or_default(
        &mut r,
        "initial_backoff",
        defaults.initial_backoff,
        ConfigReader::duration,
    );
    let max = or_default(
        &mut r,
        "max_backoff",
        defaults.max_backoff,
        ConfigReader::duration,
    );
    let timeout = or_default(&mut r, "timeout", defaults.timeout, ConfigReader::duration);
    let max_attempts = match attempts.map(u32::try_from) {
        Some(Ok(0)) => {
            r.error_at_key(
                "max_attempts",
                "`retry.max_attempts` must be at least 1",
                Some(
                    "it counts the first attempt too: `max_attempts: 1` means no retry".to_owned(),
                ),
            );
            None
        }
        Some(Err(_)) => {
            r.error_at_key(
                "max_attempts",
                "`retry.max_attempts` is too large",
                Some("e.g. `max_attempts: 10`".to_owned()),
            );
            None
        }
        Some(Ok(n)) => Some(n),
        None => None,
    };
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
    if timeout == Some(Duration::ZERO) {
        r.error_at_key(
            "timeout",
            "`retry.timeout` must be longer than zero",
            Some("it cuts off each attempt, e.g. `timeout: 30s`".to_owned()),
        );
        return None;
    }
    Some(RetryPolicy {
        max_attempts: max_attempts?,
        initial_backoff: initial?,
        max_backoff: max?,
        timeout: timeout?,
    })
}
