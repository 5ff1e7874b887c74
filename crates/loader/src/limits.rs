//! Every numeric setting of a pipeline file with its default and its range:
//! the one place they are defined.
//!
//! The loader reads each setting through its [`Limit`], so a value outside
//! the range is an error at its line and column that names the range, and a
//! missing value takes the default written here. [`rows`] and
//! [`other_limits`] are the first two of the tables the README's "Limits"
//! section holds (the binary renders them with the connectors' and
//! handlers' bounds, `spate::limits_table`).
//!
//! Bounds that are not a single setting (any duration, any byte size, YAML
//! alias expansion, pipeline file size) are listed by [`other_limits`],
//! rendered from the constant that enforces each.

use std::time::Duration;

use spate_connector::config::{MAX_BYTE_SIZE, MAX_DURATION};
use spate_connector::{ConfigNode, ConfigReader, NodeKind};
use spate_engine::TransactionPolicy;

/// A kind of numeric setting: how it is read and printed.
pub trait Setting: Copy + PartialOrd {
    /// Reads `key` (recording a problem if it is not of this kind).
    fn read(reader: &mut ConfigReader<'_>, key: &'static str) -> Option<Self>;
    /// The value as a user writes it.
    fn show(&self) -> String;
}

/// A count of things (events, tasks, attempts), written as a whole number.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Count(pub u64);

/// A size in bytes, written `16MiB`, `4096`, …
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Bytes(pub u64);

impl Setting for Count {
    fn read(reader: &mut ConfigReader<'_>, key: &'static str) -> Option<Self> {
        reader.u64(key).map(Count)
    }

    fn show(&self) -> String {
        let digits = self.0.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push('_');
            }
            out.push(c);
        }
        out
    }
}

impl Setting for Bytes {
    fn read(reader: &mut ConfigReader<'_>, key: &'static str) -> Option<Self> {
        reader.byte_size(key).map(Bytes)
    }

    fn show(&self) -> String {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        for (factor, unit) in UNITS {
            if self.0 >= factor && self.0.is_multiple_of(factor) {
                return format!("{}{unit}", self.0 / factor);
            }
        }
        self.0.to_string()
    }
}

impl Setting for Duration {
    fn read(reader: &mut ConfigReader<'_>, key: &'static str) -> Option<Self> {
        reader.duration(key)
    }

    fn show(&self) -> String {
        show_duration(*self)
    }
}

/// `250ms`, `30s`, `5m`, `24h`: the largest unit that divides it.
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    for (factor, unit) in [(3_600_000, "h"), (60_000, "m"), (1_000, "s")] {
        if ms.is_multiple_of(factor) {
            return format!("{}{unit}", ms / factor);
        }
    }
    format!("{ms}ms")
}

/// One numeric setting: where it is written, its default and range.
#[derive(Debug, Clone, Copy)]
pub struct Limit<T> {
    /// The setting as written in messages, e.g. `concurrency.max`.
    pub name: &'static str,
    /// The value when the file leaves it out.
    pub default: T,
    /// The smallest value accepted.
    pub min: T,
    /// The largest value accepted.
    pub max: T,
    /// What it bounds, in a few words (the hint of a range error).
    pub about: &'static str,
}

impl<T: Setting> Limit<T> {
    /// Reads `key` of `reader`: the default when absent, `None` (with the
    /// problem recorded at the value) when written but invalid or out of
    /// range.
    pub fn read(&self, reader: &mut ConfigReader<'_>, key: &'static str) -> Option<T> {
        if !reader.has(key) {
            return Some(self.default);
        }
        let node = reader.node(key);
        if let Some(text) = node.and_then(too_large_number) {
            self.out_of_range(reader, key, text);
            return None;
        }
        let written = node.and_then(ConfigNode::as_text).unwrap_or_default();
        let value = T::read(reader, key)?;
        if value < self.min || value > self.max {
            self.out_of_range(reader, key, written);
            return None;
        }
        Some(value)
    }

    fn out_of_range(&self, reader: &ConfigReader<'_>, key: &str, found: &str) {
        reader.error_at_key(
            key,
            format!("`{}` must be {}, found `{found}`", self.name, self.range()),
            Some(format!(
                "it bounds {}; the default is {}",
                self.about,
                self.default.show()
            )),
        );
    }

    /// "between 1 and 4_096".
    pub fn range(&self) -> String {
        format!("between {} and {}", self.min.show(), self.max.show())
    }
}

/// The text of a scalar made of digits only that does not fit in a `u64`.
fn too_large_number(node: &ConfigNode) -> Option<&str> {
    let NodeKind::Scalar { text, .. } = &node.kind else {
        return None;
    };
    let digits = text.replace('_', "");
    let all_digits = !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit());
    (all_digits && digits.parse::<u64>().is_err()).then_some(text.as_str())
}

/// `concurrency.min`.
pub const CONCURRENCY_MIN: Limit<Count> = Limit {
    name: "concurrency.min",
    default: Count(0),
    min: Count(0),
    max: Count(4096),
    about: "the handler tasks kept even when idle",
};

/// `concurrency.max`.
pub const CONCURRENCY_MAX: Limit<Count> = Limit {
    name: "concurrency.max",
    default: Count(16),
    min: Count(1),
    max: Count(4096),
    about: "the handler tasks of one function at once",
};

/// A function's `max_in_flight.events`.
pub const FUNCTION_EVENTS: Limit<Count> = Limit {
    name: "max_in_flight.events",
    default: Count(1000),
    min: Count(1),
    max: Count(1_000_000),
    about: "the events one partition holds at once",
};

/// A function's `max_in_flight.bytes`.
pub const FUNCTION_BYTES: Limit<Bytes> = Limit {
    name: "max_in_flight.bytes",
    default: Bytes(16 << 20),
    min: Bytes(1),
    max: Bytes(64 << 30),
    about: "the payload bytes one partition holds at once",
};

/// `settings.max_in_flight.events`.
pub const PROCESS_EVENTS: Limit<Count> = Limit {
    name: "settings.max_in_flight.events",
    default: Count(100_000),
    min: Count(1),
    max: Count(100_000_000),
    about: "the events the whole process holds at once",
};

/// `settings.max_in_flight.bytes`.
pub const PROCESS_BYTES: Limit<Bytes> = Limit {
    name: "settings.max_in_flight.bytes",
    default: Bytes(256 << 20),
    min: Bytes(1),
    max: Bytes(1 << 40),
    about: "the payload bytes the whole process holds at once",
};

/// `retry.max_attempts`.
pub const RETRY_ATTEMPTS: Limit<Count> = Limit {
    name: "retry.max_attempts",
    default: Count(3),
    min: Count(1),
    max: Count(1000),
    about: "the attempts per event, the first one included (`1` means no retry)",
};

/// `retry.initial_backoff`.
pub const RETRY_INITIAL_BACKOFF: Limit<Duration> = Limit {
    name: "retry.initial_backoff",
    default: Duration::from_millis(100),
    min: Duration::ZERO,
    max: Duration::from_secs(3600),
    about: "the wait before the first retry",
};

/// `retry.max_backoff`.
pub const RETRY_MAX_BACKOFF: Limit<Duration> = Limit {
    name: "retry.max_backoff",
    default: Duration::from_secs(10),
    min: Duration::ZERO,
    max: Duration::from_secs(24 * 3600),
    about: "the longest wait between retries",
};

/// `retry.timeout`.
pub const RETRY_TIMEOUT: Limit<Duration> = Limit {
    name: "retry.timeout",
    default: Duration::from_secs(30),
    min: Duration::from_millis(1),
    max: Duration::from_secs(24 * 3600),
    about: "the time one attempt may take",
};

/// `commit_interval`.
pub const COMMIT_INTERVAL: Limit<Duration> = Limit {
    name: "commit_interval",
    default: Duration::from_secs(1),
    min: Duration::from_millis(1),
    max: Duration::from_secs(3600),
    about: "how often positions are committed",
};

/// `drain_timeout`.
pub const DRAIN_TIMEOUT: Limit<Duration> = Limit {
    name: "drain_timeout",
    default: Duration::from_secs(30),
    min: Duration::ZERO,
    max: Duration::from_secs(3600),
    about: "how long a stopping function may finish the events it holds",
};

/// `transaction_interval`.
pub const TRANSACTION_INTERVAL: Limit<Duration> = Limit {
    name: "transaction_interval",
    default: TransactionPolicy::DEFAULT.interval,
    min: Duration::from_millis(1),
    max: Duration::from_secs(3600),
    about: "how often an `exactly_once` transaction commits at least",
};

/// `transaction_max_events`.
pub const TRANSACTION_MAX_EVENTS: Limit<Count> = Limit {
    name: "transaction_max_events",
    default: Count(TransactionPolicy::DEFAULT.max_events as u64),
    min: Count(1),
    max: Count(1_000_000),
    about: "the events one `exactly_once` transaction holds at most",
};

/// Bounds that apply to every value of a kind, or to the file itself:
/// what is bounded, the bound, and the constant that enforces it.
pub fn other_limits() -> Vec<[String; 3]> {
    use crate::{env, yaml};
    let bytes = |n: usize| Bytes(u64::try_from(n).unwrap_or(u64::MAX)).show();
    vec![
        [
            "any duration setting (connectors' too)".to_owned(),
            format!("at most {}", show_duration(MAX_DURATION)),
            "spate_connector::config::MAX_DURATION".to_owned(),
        ],
        [
            "any byte-size setting (connectors' too)".to_owned(),
            format!("at most {}", Bytes(MAX_BYTE_SIZE).show()),
            "spate_connector::config::MAX_BYTE_SIZE".to_owned(),
        ],
        [
            "a pipeline file".to_owned(),
            format!("at most {}", bytes(yaml::MAX_FILE_BYTES)),
            "spate::pipeline::yaml::MAX_FILE_BYTES".to_owned(),
        ],
        [
            "nesting of lists and mappings in a file".to_owned(),
            format!("at most {} levels", yaml::MAX_DEPTH),
            "spate::pipeline::yaml::MAX_DEPTH".to_owned(),
        ],
        [
            "values added by YAML aliases (`*name`), all together".to_owned(),
            format!(
                "at most {} values",
                Count(yaml::MAX_ALIAS_VALUES as u64).show()
            ),
            "spate::pipeline::yaml::MAX_ALIAS_VALUES".to_owned(),
        ],
        [
            "text added by YAML aliases (`*name`), all together".to_owned(),
            format!("at most {}", bytes(yaml::MAX_ALIAS_BYTES)),
            "spate::pipeline::yaml::MAX_ALIAS_BYTES".to_owned(),
        ],
        [
            "nested `${A:-${B:-x}}` defaults".to_owned(),
            format!("at most {} levels", env::MAX_DEFAULT_DEPTH),
            "spate::pipeline::env::MAX_DEFAULT_DEPTH".to_owned(),
        ],
    ]
    .into_iter()
    .collect()
}

/// The settings table, one row per setting: name, default, range, what
/// it bounds.
pub fn rows() -> Vec<[String; 4]> {
    fn row<T: Setting>(limit: &Limit<T>) -> [String; 4] {
        [
            format!("`{}`", limit.name),
            format!("`{}`", limit.default.show()),
            format!("`{}` – `{}`", limit.min.show(), limit.max.show()),
            limit.about.to_owned(),
        ]
    }
    vec![
        row(&PROCESS_EVENTS),
        row(&PROCESS_BYTES),
        row(&CONCURRENCY_MIN),
        row(&CONCURRENCY_MAX),
        row(&FUNCTION_EVENTS),
        row(&FUNCTION_BYTES),
        row(&RETRY_ATTEMPTS),
        row(&RETRY_INITIAL_BACKOFF),
        row(&RETRY_MAX_BACKOFF),
        row(&RETRY_TIMEOUT),
        row(&COMMIT_INTERVAL),
        row(&DRAIN_TIMEOUT),
        row(&TRANSACTION_INTERVAL),
        row(&TRANSACTION_MAX_EVENTS),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_shown_as_a_user_writes_them() {
        assert_eq!(Count(4096).show(), "4_096");
        assert_eq!(Count(100_000_000).show(), "100_000_000");
        assert_eq!(Count(3).show(), "3");
        assert_eq!(Bytes(16 << 20).show(), "16MiB");
        assert_eq!(Bytes(1).show(), "1");
        assert_eq!(Bytes(1500).show(), "1500");
        assert_eq!(show_duration(Duration::from_millis(100)), "100ms");
        assert_eq!(show_duration(Duration::from_secs(90)), "90s");
        assert_eq!(show_duration(Duration::from_secs(24 * 3600)), "24h");
        assert_eq!(show_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn every_default_is_inside_its_range() {
        fn inside<T: Setting>(limit: &Limit<T>) {
            assert!(
                limit.min <= limit.default && limit.default <= limit.max,
                "{}",
                limit.name
            );
        }
        for limit in [
            &CONCURRENCY_MIN,
            &CONCURRENCY_MAX,
            &FUNCTION_EVENTS,
            &PROCESS_EVENTS,
            &RETRY_ATTEMPTS,
            &TRANSACTION_MAX_EVENTS,
        ] {
            inside(limit);
        }
        for limit in [&FUNCTION_BYTES, &PROCESS_BYTES] {
            inside(limit);
        }
        for limit in [
            &RETRY_INITIAL_BACKOFF,
            &RETRY_MAX_BACKOFF,
            &RETRY_TIMEOUT,
            &COMMIT_INTERVAL,
            &DRAIN_TIMEOUT,
            &TRANSACTION_INTERVAL,
        ] {
            inside(limit);
        }
    }
}
