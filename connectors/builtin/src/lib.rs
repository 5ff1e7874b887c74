//! Connectors that need no broker: `generate`, `file`, `stdout`.

use std::sync::Arc;

use spate_connector::ConnectorFactory;

/// Every connector family of this crate.
pub fn connectors() -> Vec<Arc<dyn ConnectorFactory>> {
    Vec::new()
}
