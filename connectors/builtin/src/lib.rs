//! Connectors that need no broker: `generate`, `file`, `stdout`.
//!
//! | kind | source | sink | positions |
//! | --- | --- | --- | --- |
//! | [`generate`] | synthetic IoT telemetry, replayable from `(seed, partition, offset)` | — | in memory, optionally a `state_file` |
//! | [`file`](mod@file) | JSON Lines, one partition, offset = line number | JSON Lines, group commit | in memory, optionally a `commit_file` |
//! | [`stdout`] | — | payload or envelope lines | none |
//!
//! Every factory reads its settings through the contract's
//! [`ConfigReader`]: the keys it asks for are
//! its schema, every problem is recorded, and an invalid configuration makes
//! the factory return `None` without any I/O.

#![warn(missing_docs)]

use std::sync::Arc;

use spate_connector::{ConfigReader, ConnectorFactory};

pub mod file;
pub mod generate;
mod state;
pub mod stdout;

pub use file::FileFactory;
pub use generate::GenerateFactory;
pub use stdout::StdoutFactory;

/// Every connector family of this crate.
pub fn connectors() -> Vec<Arc<dyn ConnectorFactory>> {
    vec![
        Arc::new(GenerateFactory),
        Arc::new(FileFactory),
        Arc::new(StdoutFactory),
    ]
}

/// How many configuration problems were recorded so far; compare with
/// [`has_new_errors`] to know whether the settings a factory read are valid.
fn error_mark(config: &ConfigReader<'_>) -> usize {
    config.errors().borrow().len()
}

/// True when problems were recorded since `mark` was taken.
fn has_new_errors(config: &ConfigReader<'_>, mark: usize) -> bool {
    config.errors().borrow().len() > mark
}
