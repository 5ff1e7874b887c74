//! Named internal events of the engine: one type per happening, whose
//! `emit` updates its metric (through the per-function handles of
//! [`FunctionMetrics`](crate::metrics::FunctionMetrics)), writes its log line
//! (tracing, with fields) and bumps the function's tally (the end-of-run
//! [`FunctionReport`](crate::FunctionReport) and `spate test`), all in one
//! place.
//!
//! # The rule
//!
//! Engine code never writes a metric, a tally or a log line for a happening
//! by hand: it builds the event where the happening is seen and calls its
//! `emit` with the [`Scope`] it happened in (the function: its name, metric
//! handles and tally, built once per function) or a [`ConnectorScope`]
//! (one of the function's sources or outputs, or its exactly-once
//! session). The event itself holds only its own data. So a metric and
//! its log line cannot drift apart, the tally always agrees with
//! `/metrics`, and this module is the one list of what the engine reports. Metric names live in [`crate::metrics`], with their
//! handles, registered once per function.
//!
//! # Cost
//!
//! Events are plain structs of references and numbers, and a scope is
//! built once (a connector's is two references): building an event
//! allocates nothing, and `emit` is `#[inline]`. A metric update bumps a
//! pre-registered handle (an atomic), never a lookup by name; a log line's
//! fields are formatted only when its level is enabled (the tracing macros
//! check first). The per-event path (reading, handling, retrying,
//! acknowledging, finishing) costs what it cost when written by hand.
//!
//! Labels stay as [`crate::metrics`] defines them: `function` (and
//! `direction` on scale changes; `stream` and `partition` on the
//! per-partition gauges). Never a key or a payload.

mod commit;
mod dead_letters;
mod intake;
mod lifecycle;
mod scope;
mod work;

#[cfg(test)]
mod tests;

pub use commit::*;
pub use dead_letters::*;
pub use intake::*;
pub use lifecycle::*;
pub use scope::{ConnectorScope, Scope};
pub use work::*;
