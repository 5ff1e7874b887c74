//! The registry of everything a pipeline file can name: handlers (Rust
//! functions and configured built-ins), connector kinds and formats. The
//! loader reads a file against one [`Registry`] value; the binary fills it
//! (`spate::registry()`), a library user may fill their own.

use std::collections::BTreeMap;
use std::sync::Arc;

use spate_connector::format::FormatFactory;
use spate_connector::handler_factory::HandlerFactory;
use spate_connector::{
    ConnectorFactory, Context, Event, FnHandler, Handler, HandlerError, HandlerFn, Output,
    SyncFnHandler,
};

/// A named handler.
#[derive(Clone)]
pub enum HandlerEntry {
    /// A Rust function registered through the library API; takes no settings.
    Function(Arc<dyn Handler>),
    /// A built-in configured from YAML.
    Builtin(Arc<dyn HandlerFactory>),
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
    /// An empty registry (no built-ins, no connectors, no formats).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Registers an `async fn(Event, &Context) -> Result<Vec<Output>, HandlerError>`.
    pub fn register<F>(&mut self, name: &str, function: F) -> &mut Self
    where
        F: for<'a> HandlerFn<'a>,
    {
        self.register_handler(name, FnHandler(function))
    }

    /// Registers a synchronous `Fn(Event, &Context) -> Result<Vec<Output>,
    /// HandlerError>`: a CPU-only handler the engine may run without
    /// handing each event to a task (see [`Handler::is_cpu_only`]).
    pub fn register_sync<F>(&mut self, name: &str, function: F) -> &mut Self
    where
        F: Fn(Event, &Context) -> Result<Vec<Output>, HandlerError> + Send + Sync + 'static,
    {
        self.register_handler(name, SyncFnHandler(function))
    }

    /// Registers any [`Handler`] implementation.
    pub fn register_handler(&mut self, name: &str, handler: impl Handler) -> &mut Self {
        self.handlers
            .insert(name.to_owned(), HandlerEntry::Function(Arc::new(handler)));
        self
    }

    /// Registers a built-in configured from YAML under `name`.
    pub fn register_builtin(
        &mut self,
        name: &str,
        builtin: impl HandlerFactory + 'static,
    ) -> &mut Self {
        self.handlers
            .insert(name.to_owned(), HandlerEntry::Builtin(Arc::new(builtin)));
        self
    }

    /// Registers a built-in under its own name.
    pub fn add_handler(&mut self, factory: Arc<dyn HandlerFactory>) -> &mut Self {
        self.handlers
            .insert(factory.name().to_owned(), HandlerEntry::Builtin(factory));
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

    /// Every format, in registration order.
    pub fn formats(&self) -> &[Arc<dyn FormatFactory>] {
        &self.formats
    }
}
