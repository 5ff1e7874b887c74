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

use std::time::Duration;

use spate_connector::{ConfigReader, NodeKind};

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
    let mut limits = Limits::default();
    let Some(mut section) = config.section("limits") else {
        return Some(limits);
    };
    let mut valid = true;
    if let Some(time) = section.duration("time") {
        if (MIN_TIME..=MAX_TIME).contains(&time) {
            limits.time = time;
        } else {
            valid = false;
            section.error_at_key(
                "time",
                format!("`time` is {time:?}, outside {MIN_TIME:?} to {MAX_TIME:?}"),
                Some(format!("the default is {DEFAULT_TIME:?}")),
            );
        }
    }
    if let Some(memory) = section.byte_size("memory") {
        if (MIN_MEMORY..=MAX_MEMORY).contains(&memory) {
            limits.memory = memory;
        } else {
            valid = false;
            section.error_at_key(
                "memory",
                format!(
                    "`memory` is {memory} bytes, outside {} to {}",
                    mib(MIN_MEMORY),
                    mib(MAX_MEMORY)
                ),
                Some(format!("the default is {}", mib(DEFAULT_MEMORY))),
            );
        }
    }
    valid.then_some(limits)
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
    let Some(node) = config.node("vars") else {
        return Some(Vec::new());
    };
    let path = config.child_path("vars");
    let NodeKind::Map(entries) = &node.kind else {
        config.error(
            node.span,
            path,
            format!("`vars` must be a mapping, found {}", node.type_name()),
            Some("write `vars: {dev: '${DEVICE}'}` and use `$dev` in the expression".to_owned()),
        );
        return None;
    };
    let mut vars = Vec::with_capacity(entries.len());
    let mut valid = true;
    if entries.len() > MAX_VARS {
        config.error(
            node.span,
            path.clone(),
            format!("`vars` has {} entries, more than {MAX_VARS}", entries.len()),
            None,
        );
        valid = false;
    }
    for (name, span, value) in entries {
        let at = format!("{path}.{name}");
        if !is_name(name) {
            config.error(
                *span,
                at,
                format!("`{name}` cannot be a jq variable name"),
                Some("use letters, digits and `_`, not starting with a digit".to_owned()),
            );
            valid = false;
            continue;
        }
        match &value.kind {
            NodeKind::Scalar { text, .. } => vars.push((
                name.clone(),
                serde_json::Value::String(text.clone()).to_string(),
            )),
            _ => {
                config.error(
                    value.span,
                    at,
                    format!("`vars.{name}` must be text, found {}", value.type_name()),
                    Some("a variable holds one string; convert it in the expression, e.g. `$n | tonumber`".to_owned()),
                );
                valid = false;
            }
        }
    }
    valid.then_some(vars)
}
