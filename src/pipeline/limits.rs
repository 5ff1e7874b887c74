//! Every numeric setting of a pipeline file with its default and its range:
//! the one place they are defined.
//!
//! The loader reads each setting through its [`Limit`], so a value outside
//! the range is an error at its line and column that names the range, and a
//! missing value takes the default written here. [`render_markdown`] prints
//! the table the README's "Limits" section holds; a test fails when the two
//! differ (`SPATE_BLESS_README=1 cargo test -p spate --lib limits`
//! rewrites the README's copy).
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
    use crate::pipeline::{env, yaml};
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
    .chain(evaluation_limits())
    .collect()
}

/// Bounds of expressions and decoding, whatever the payload.
fn evaluation_limits() -> Vec<[String; 3]> {
    use crate::format::{avro, avro_depth};
    use crate::handler::expr;
    let bytes = |n: usize| Bytes(u64::try_from(n).unwrap_or(u64::MAX)).show();
    vec![
        [
            "a jq expression's text".to_owned(),
            format!("at most {}", bytes(expr::MAX_EXPR_BYTES)),
            "spate::handler::expr::MAX_EXPR_BYTES".to_owned(),
        ],
        [
            "brackets nested in a jq expression".to_owned(),
            format!("at most {} levels", expr::MAX_NESTING),
            "spate::handler::expr::MAX_NESTING".to_owned(),
        ],
        [
            "a jq expression's parse tree".to_owned(),
            format!("at most {} levels", expr::MAX_DEPTH),
            "spate::handler::expr::MAX_DEPTH".to_owned(),
        ],
        [
            "results of one `map` evaluation".to_owned(),
            format!("at most {}", Count(expr::MAX_RESULTS as u64).show()),
            "spate::handler::expr::MAX_RESULTS".to_owned(),
        ],
        [
            "sandboxed evaluations at once (processes)".to_owned(),
            format!("{}", expr::sandbox::POOL_SIZE),
            "spate::handler::expr::sandbox::POOL_SIZE".to_owned(),
        ],
        [
            "stack of a sandboxed evaluation".to_owned(),
            bytes(expr::sandbox::CHILD_STACK),
            "spate::handler::expr::sandbox::CHILD_STACK".to_owned(),
        ],
        [
            "nesting of an Avro datum under a recursive schema".to_owned(),
            format!("at most {} levels", avro_depth::MAX_AVRO_DEPTH),
            "spate::format::avro_depth::MAX_AVRO_DEPTH".to_owned(),
        ],
        [
            "items of an Avro datum under a recursive schema".to_owned(),
            format!("at most {}", Count(avro_depth::MAX_AVRO_ITEMS).show()),
            "spate::format::avro_depth::MAX_AVRO_ITEMS".to_owned(),
        ],
        [
            "memory one Avro datum may allocate".to_owned(),
            format!("at most {}", bytes(avro::MAX_AVRO_ALLOCATION)),
            "spate::format::avro::MAX_AVRO_ALLOCATION".to_owned(),
        ],
    ]
}

/// Connector and handler settings with a range, each checked by the
/// component that reads it: setting, range, the constant that bounds it.
pub fn component_limits() -> Vec<[String; 3]> {
    let row = |setting: &str, range: String, constant: &str| {
        [format!("`{setting}`"), range, constant.to_owned()]
    };
    let count = |n: u64| Count(n).show();
    vec![
        row(
            "generate: partitions",
            format!("1 – {}", count(spate_builtin::generate::MAX_PARTITIONS)),
            "spate_builtin::generate::MAX_PARTITIONS",
        ),
        row(
            "generate: payload_bytes",
            format!(
                "at most {}",
                Bytes(spate_builtin::generate::MAX_PAYLOAD_BYTES).show()
            ),
            "spate_builtin::generate::MAX_PAYLOAD_BYTES",
        ),
        row(
            "mqtt: partitions",
            format!("1 – {}", count(spate_mqtt::source::MAX_PARTITIONS)),
            "spate_mqtt::source::MAX_PARTITIONS",
        ),
        row(
            "mqtt: max_buffered",
            format!("1 – {}", count(spate_mqtt::source::MAX_MAX_BUFFERED as u64)),
            "spate_mqtt::source::MAX_MAX_BUFFERED",
        ),
        row(
            "jetstream: partitions",
            format!("1 – {}", count(spate_nats::jetstream::MAX_PARTITIONS)),
            "spate_nats::jetstream::MAX_PARTITIONS",
        ),
        row(
            "jetstream: max_ack_pending",
            format!("1 – {}", count(spate_nats::jetstream::MAX_ACK_PENDING)),
            "spate_nats::jetstream::MAX_ACK_PENDING",
        ),
        row(
            "postgres: batch_size",
            format!("1 – {}", count(spate_postgres::config::MAX_BATCH_SIZE)),
            "spate_postgres::config::MAX_BATCH_SIZE",
        ),
        row(
            &format!(
                "filter, map, route: limits.time (default {})",
                show_duration(crate::handler::expr::limits::DEFAULT_TIME)
            ),
            format!(
                "{} – {}",
                show_duration(crate::handler::expr::limits::MIN_TIME),
                show_duration(crate::handler::expr::limits::MAX_TIME)
            ),
            "spate::handler::expr::limits::{DEFAULT_TIME, MIN_TIME, MAX_TIME}",
        ),
        row(
            &format!(
                "filter, map, route: limits.memory (default {})",
                Bytes(crate::handler::expr::limits::DEFAULT_MEMORY).show()
            ),
            format!(
                "{} – {}",
                Bytes(crate::handler::expr::limits::MIN_MEMORY).show(),
                Bytes(crate::handler::expr::limits::MAX_MEMORY).show()
            ),
            "spate::handler::expr::limits::{DEFAULT_MEMORY, MIN_MEMORY, MAX_MEMORY}",
        ),
        row(
            &format!(
                "window: max_keys (default {})",
                count(crate::handler::window::config::DEFAULT_MAX_KEYS as u64)
            ),
            format!(
                "1 – {}",
                count(crate::handler::window::config::MAX_MAX_KEYS)
            ),
            "spate::handler::window::config::{DEFAULT_MAX_KEYS, MAX_MAX_KEYS}",
        ),
        row(
            "window: size, slide, allowed_lateness",
            format!(
                "at most {}",
                show_duration(Duration::from_millis(
                    u64::try_from(crate::handler::window::time::MAX_DURATION_MS).unwrap_or(0)
                ))
            ),
            "spate::handler::window::time::MAX_DURATION_MS",
        ),
    ]
}

/// One row of the settings table: name, default, range, what it bounds.
fn rows() -> Vec<[String; 4]> {
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

/// The README's "Limits" tables, rendered from the constants above.
pub fn render_markdown() -> String {
    let mut out = String::from("| Setting | Default | Range | Bounds |\n|---|---|---|---|\n");
    for [name, default, range, about] in rows() {
        out.push_str(&format!("| {name} | {default} | {range} | {about} |\n"));
    }
    out.push_str("\n| Bounded | Limit | Enforced by |\n|---|---|---|\n");
    for [what, bound, constant] in other_limits() {
        out.push_str(&format!("| {what} | {bound} | `{constant}` |\n"));
    }
    out.push_str("\n| Connector or handler setting | Range | Enforced by |\n|---|---|---|\n");
    for [setting, range, constant] in component_limits() {
        out.push_str(&format!("| {setting} | {range} | `{constant}` |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_limits_table_is_the_one_the_code_renders() {
        const START: &str = "<!-- limits:start -->\n";
        const END: &str = "<!-- limits:end -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).unwrap_or_default();
        let (Some(start), Some(end)) = (readme.find(START), readme.find(END)) else {
            panic!("README.md has no `{START}` … `{END}` section");
        };
        let written = &readme[start + START.len()..end];
        let rendered = render_markdown();
        if written == rendered {
            return;
        }
        if std::env::var_os("SPATE_BLESS_README").is_some() {
            let updated = format!(
                "{}{rendered}{}",
                &readme[..start + START.len()],
                &readme[end..]
            );
            if let Err(error) = std::fs::write(path, updated) {
                panic!("cannot write {path}: {error}");
            }
            return;
        }
        panic!(
            "README.md's Limits tables differ from src/pipeline/limits.rs; regenerate them with \
             `SPATE_BLESS_README=1 cargo test -p spate --lib limits`\n--- README\n{written}\n--- code\n{rendered}"
        );
    }

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
