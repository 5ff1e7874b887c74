//! The one place that lists every connector, built-in handler and format
//! spate ships: [`registry()`]. The loader knows none of them; it reads a
//! pipeline file against the registry the binary (or a library user)
//! passes in.

use std::ops::{Deref, DerefMut};

/// Every connector, built-in handler and format, registered.
pub fn registry() -> spate_loader::Registry {
    let mut registry = spate_loader::Registry::empty();
    for factory in spate_handlers::handlers() {
        registry.add_handler(factory);
    }
    let connectors = [
        spate_builtin::connectors(),
        spate_kafka::connectors(),
        spate_nats::connectors(),
        spate_mqtt::connectors(),
        spate_postgres::connectors(),
    ];
    for factory in connectors.into_iter().flatten() {
        registry.add_connector(factory);
    }
    for factory in spate_formats::formats() {
        registry.add_format(factory);
    }
    registry
}

/// The loader's [`spate_loader::Registry`] with a constructor that fills
/// it from [`registry()`]; it dereferences to the loader's type, so it is
/// passed wherever that is taken.
#[derive(Clone, Default)]
pub struct Registry(spate_loader::Registry);

impl Registry {
    /// An empty registry (no built-ins, no connectors, no formats).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Every connector, built-in handler and format spate ships.
    pub fn with_builtins() -> Self {
        Self(registry())
    }
}

impl Deref for Registry {
    type Target = spate_loader::Registry;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Registry {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl From<spate_loader::Registry> for Registry {
    fn from(registry: spate_loader::Registry) -> Self {
        Self(registry)
    }
}
