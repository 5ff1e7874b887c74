//! The settings of an expression handler beyond its expressions: `limits:`
//! (time and memory of one evaluation in the sandbox) and `vars:` (values
//! bound as jq variables), each read and range-checked when the file loads.
//!
//! ```yaml
//! handler:
//!   name: filter
//!   expr: '.device == $dev'
//!   vars: {dev: '${DEVICE}'}
//!   limits: {time: 1s, memory: 256MiB}
//! ```

use std::ops::RangeInclusive;
use std::time::Duration;

use spate_connector::{ConfigReader, NodeKind};

use crate::mapping::{mapping, read_entries, EntryProblem};

/// Default time one sandboxed evaluation may take.
pub const DEFAULT_TIME: Duration = Duration::from_secs(1);
/// Shortest `limits.time` accepted.
pub const MIN_TIME: Duration = Duration::from_millis(1);
/// Longest `limits.time` accepted.
pub const MAX_TIME: Duration = Duration::from_secs(60);
/// Default memory one sandboxed evaluation may add.
pub const DEFAULT_MEMORY: u64 = 256 << 20;
/// Smallest `limits.memory` accepted.
pub const MIN_MEMORY: u64 = 16 << 20;
/// Largest `limits.memory` accepted.
pub const MAX_MEMORY: u64 = 16 << 30;
/// Most entries in `vars:`.
pub const MAX_VARS: usize = 64;

/// Bounds of one evaluation that runs in the sandbox. Expressions proven
/// bounded run inline and need none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time of one evaluation.
    pub time: Duration,
    /// Bytes one evaluation may add to its process's address space.
    pub memory: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            time: DEFAULT_TIME,
            memory: DEFAULT_MEMORY,
        }
    }
}

fn mib(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{}GiB", bytes >> 30)
    } else {
        format!("{}MiB", bytes >> 20)
    }
}

/// Reads `limits:` (optional); `None` when a value is wrong (recorded).
pub(crate) fn read_limits(config: &mut ConfigReader<'_>) -> Option<Limits> {
    let Some(mut section) = config.section("limits") else {
        return Some(Limits::default());
    };
    let time = section.duration("time");
    let time = within(&mut section, "time", time, MIN_TIME..=MAX_TIME, |time| {
        (
            format!("`time` is {time:?}, outside {MIN_TIME:?} to {MAX_TIME:?}"),
            format!("the default is {DEFAULT_TIME:?}"),
        )
    });
    let memory = section.byte_size("memory");
    let memory = within(
        &mut section,
        "memory",
        memory,
        MIN_MEMORY..=MAX_MEMORY,
        |memory| {
            (
                format!(
                    "`memory` is {memory} bytes, outside {} to {}",
                    mib(MIN_MEMORY),
                    mib(MAX_MEMORY)
                ),
                format!("the default is {}", mib(DEFAULT_MEMORY)),
            )
        },
    );
    Some(Limits {
        time: time.ok()?.unwrap_or(DEFAULT_TIME),
        memory: memory.ok()?.unwrap_or(DEFAULT_MEMORY),
    })
}

/// `value` (of `key`, if given) when it lies in `range`; otherwise `Err`,
/// with the (message, hint) that `problem` gives recorded at the key.
fn within<T: PartialOrd>(
    section: &mut ConfigReader<'_>,
    key: &str,
    value: Option<T>,
    range: RangeInclusive<T>,
    problem: impl FnOnce(&T) -> (String, String),
) -> Result<Option<T>, ()> {
    match value {
        Some(value) if !range.contains(&value) => {
            let (message, hint) = problem(&value);
            section.error_at_key(key, message, Some(hint));
            Err(())
        }
        value => Ok(value),
    }
}

/// Whether `name` can be a jq variable name.
fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Reads `vars:` (optional): each value is text (`${…}` interpolated as
/// usual), bound in the expressions as `$name` holding that string.
/// Returns `(name, value as JSON text)`; `None` when an entry is wrong.
pub(crate) fn read_vars(config: &mut ConfigReader<'_>) -> Option<Vec<(String, String)>> {
    let hint = "write `vars: {dev: '${DEVICE}'}` and use `$dev` in the expression";
    let Some((span, entries)) = mapping(config, "vars", "a mapping", hint)? else {
        return Some(Vec::new());
    };
    let mut valid = true;
    if entries.len() > MAX_VARS {
        config.error(
            span,
            config.child_path("vars"),
            format!("`vars` has {} entries, more than {MAX_VARS}", entries.len()),
            None,
        );
        valid = false;
    }
    let mut vars = Vec::with_capacity(entries.len());
    valid &= read_entries(config, "vars", entries, |name, span, value| {
        if !is_name(name) {
            return Err(EntryProblem::new(
                span,
                format!("`{name}` cannot be a jq variable name"),
                "use letters, digits and `_`, not starting with a digit",
            ));
        }
        let NodeKind::Scalar { text, .. } = &value.kind else {
            return Err(EntryProblem::new(
                value.span,
                format!("`vars.{name}` must be text, found {}", value.type_name()),
                "a variable holds one string; convert it in the expression, e.g. `$n | tonumber`",
            ));
        };
        vars.push((
            name.to_owned(),
            serde_json::Value::String(text.clone()).to_string(),
        ));
        Ok(())
    });
    valid.then_some(vars)
}
