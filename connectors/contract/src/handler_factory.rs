//! Handlers by name, registered like connectors: a [`HandlerFactory`]
//! reads its settings from the pipeline file (`handler:` keys beside
//! `name:`) and returns the configured [`Handler`].

use std::sync::Arc;

use crate::config::{ConfigNode, ConfigReader, Span};
use crate::handler::Handler;

/// A handler that is configured from the pipeline file (a built-in).
pub trait HandlerFactory: Send + Sync {
    /// The name a pipeline file gives in `handler:` (`filter`, `map`, …).
    fn name(&self) -> &'static str;

    /// Reads the handler's settings (recording every problem in `config`)
    /// and returns the configured handler, or `None` if they are invalid.
    fn configure(&self, config: &mut ConfigReader<'_>) -> Option<Arc<dyn Handler>>;

    /// One line saying what it does, for `--help` and error hints.
    fn summary(&self) -> &'static str;

    /// The output names the handler configured from `settings` (the
    /// mapping under `handler:`) sends events to, each where it is written.
    /// The loader checks each against the function's outputs, so a name
    /// that is no output is a validation error rather than a dead letter
    /// per event. The default is none (the handler routes nowhere by name).
    fn output_names(&self, _settings: &ConfigNode) -> Vec<(String, Span)> {
        Vec::new()
    }
}
