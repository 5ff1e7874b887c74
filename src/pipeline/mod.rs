//! Pipeline files: YAML in, validated [`PipelineSpec`]s out, with every
//! problem reported as `file:line:column: message` and a hint.
//!
//! - [`load_file()`] / [`load_str()`]: read, parse and validate a file;
//! - [`render()`] / [`render_load_error()`]: print what was wrong.

mod connector;
pub mod env;
mod handler_ref;
pub mod limits;
pub mod load;
pub mod render;
pub mod spec;
pub mod yaml;

pub use env::{Environment, ProcessEnv};
pub use load::{load_file, load_node, load_str, LoadError};
pub use render::{render, render_load_error, render_warnings};
pub use spec::*;
