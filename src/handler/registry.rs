//! The registry of everything a pipeline file can name: handlers (Rust
//! functions and built-ins) and connector kinds.

use std::collections::BTreeMap;
use std::sync::Arc;

use spate_connector::format::FormatFactory;
use spate_connector::{ConfigNode, ConfigReader, ConnectorFactory, Span};

use super::{FnHandler, Handler, HandlerFn};

/// A handler that is configured from the pipeline file (`handler:` keys
/// beside `name:`).
pub trait BuiltinHandler: Send + Sync {
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

/// A named handler.
#[derive(Clone)]
pub enum HandlerEntry {
    /// A Rust function registered through the library API; takes no settings.
    Function(Arc<dyn Handler>),
    /// A built-in configured from YAML.
    Builtin(Arc<dyn BuiltinHandler>),
}

/// Handlers, connectors and formats by name.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, HandlerEntry>,
    connectors: BTreeMap<&'static str, Arc<dyn ConnectorFactory>>,
    /// In registration order: the order messages list them in.
    formats: Vec<Arc<dyn FormatFactory>>,
}

impl Registry {
    /// An empty registry (no built-ins, no connectors).
    pub fn empty() -> Self {
        Self::default()
    }

    /// A registry with spate's built-in handlers and broker-less connectors.
    pub fn with_builtins() -> Self {
        let mut registry = Self::empty();
        super::builtin::register_all(&mut registry);
        for factory in spate_builtin::connectors() {
            registry.add_connector(factory);
        }
        for factory in spate_kafka::connectors() {
            registry.add_connector(factory);
        }
        for factory in spate_nats::connectors() {
            registry.add_connector(factory);
        }
        for factory in spate_mqtt::connectors() {
            registry.add_connector(factory);
        }
        for factory in spate_postgres::connectors() {
            registry.add_connector(factory);
        }
        for factory in spate_formats::formats() {
            registry.add_format(factory);
        }
        registry
    }

    /// Registers an `async fn(Event, &Context) -> Result<Vec<Output>, HandlerError>`.
    pub fn register<F>(&mut self, name: &str, function: F) -> &mut Self
    where
        F: for<'a> HandlerFn<'a>,
    {
        self.register_handler(name, FnHandler(function))
    }

    /// Registers any [`Handler`] implementation.
    pub fn register_handler(&mut self, name: &str, handler: impl Handler) -> &mut Self {
        self.handlers
            .insert(name.to_owned(), HandlerEntry::Function(Arc::new(handler)));
        self
    }

    /// Registers a built-in configured from YAML.
    pub fn register_builtin(
        &mut self,
        name: &str,
        builtin: impl BuiltinHandler + 'static,
    ) -> &mut Self {
        self.handlers
            .insert(name.to_owned(), HandlerEntry::Builtin(Arc::new(builtin)));
        self
    }

    /// Registers a connector family under its kind.
    pub fn add_connector(&mut self, factory: Arc<dyn ConnectorFactory>) -> &mut Self {
        self.connectors.insert(factory.kind(), factory);
        self
    }

    /// Registers a format under its kind (replacing one of the same kind).
    pub fn add_format(&mut self, factory: Arc<dyn FormatFactory>) -> &mut Self {
        match self.formats.iter_mut().find(|f| f.kind() == factory.kind()) {
            Some(slot) => *slot = factory,
            None => self.formats.push(factory),
        }
        self
    }

    /// Every format, in registration order.
    pub fn formats(&self) -> &[Arc<dyn FormatFactory>] {
        &self.formats
    }

    /// The handler registered as `name`.
    pub fn handler(&self, name: &str) -> Option<&HandlerEntry> {
        self.handlers.get(name)
    }

    /// Every registered handler name.
    pub fn handler_names(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }

    /// The connector family of this kind.
    pub fn connector(&self, kind: &str) -> Option<&Arc<dyn ConnectorFactory>> {
        self.connectors.get(kind)
    }

    /// Every connector kind.
    pub fn connector_kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.connectors.keys().copied()
    }
}
