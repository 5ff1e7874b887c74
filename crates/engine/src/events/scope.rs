//! What events happen in: a function ([`Scope`]), or one of its
//! connectors ([`ConnectorScope`]). An event holds only its own data and
//! is emitted in its scope, so what it happened to is said once, where the
//! scope is built.

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

use metrics::Counter;

use crate::metrics::FunctionMetrics;
use crate::worker::Tally;

/// A function as its events see it: its name (the `function` field of
/// their log lines), its metric handles and its tally.
///
/// Built once, when the function starts, and kept in its shared state
/// (`FunctionShared::scope`); the scheduler and every handler task emit
/// their events in it.
pub struct Scope {
    /// The function's name.
    pub name: Arc<str>,
    /// The function's metric handles, registered with the scope.
    pub metrics: FunctionMetrics,
    /// The function's end-of-run counters.
    pub tally: Tally,
}

impl Scope {
    /// The scope of `function`: registers its metric handles, with an
    /// empty tally.
    pub fn new(function: Arc<str>) -> Self {
        Self {
            metrics: FunctionMetrics::new(&function),
            tally: Tally::default(),
            name: function,
        }
    }

    /// The scope of the function's connector `name`: a source, an output
    /// or the exactly-once session.
    #[inline]
    pub fn connector<'a>(&'a self, name: &'a str) -> ConnectorScope<'a> {
        ConnectorScope {
            function: self,
            name,
        }
    }
}

/// One connector of a function, a source, an output or the exactly-once
/// session: its function's scope and the connector's name (the `source`,
/// `output` or `session` field of log lines).
#[derive(Clone, Copy)]
pub struct ConnectorScope<'a> {
    /// The function the connector serves.
    pub function: &'a Scope,
    /// The connector's name.
    pub name: &'a str,
}

/// Counts `n` on a metric and on its tally counter alike, so `/metrics`
/// and the end-of-run report agree.
#[inline]
pub(super) fn count(metric: &Counter, tally: &AtomicU64, n: u64) {
    metric.increment(n);
    tally.fetch_add(n, AtomicOrdering::Relaxed);
}
