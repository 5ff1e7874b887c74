//! Pipeline files: YAML in, validated [`PipelineSpec`]s out, with every
//! problem reported as `file:line:column: message` and a hint.

pub mod spec;

pub use spec::*;
