//! Pipeline files: YAML in, validated [`PipelineSpec`]s out, with every
//! problem reported as `file:line:column: message` and a hint.
//!
//! - [`load_file()`] / [`load_str()`]: read, parse and validate a file;
//! - [`render()`] / [`render_load_error()`]: print what was wrong.
//!
//! The loader knows no connector, handler or format: it reads each through
//! the [`Registry`] it is given (the binary fills one with everything spate
//! ships). It depends on the contract and on the engine's policy types
//! only. A file's `tests:` block is read here too ([`samples`]), so the
//! test command depends on the loader, never the other way.

mod connector;
pub mod env;
mod handler_ref;
pub mod limits;
pub mod load;
pub mod registry;
pub mod render;
pub mod samples;
pub mod spec;
pub mod yaml;

pub use env::{Environment, ProcessEnv};
pub use load::{load_file, load_node, load_str, LoadError};
pub use registry::{HandlerEntry, Registry};
pub use render::{render, render_load_error, render_warnings};
pub use spec::*;
