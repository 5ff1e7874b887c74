//! The process-wide registry of checked table plans: every `postgres` sink
//! built in this process registers its [`TablePlan`] under its
//! transactional target, so the exactly-once session opened by one sink
//! writes the rows of every other postgres output (and the dead-letter
//! table) of the function with that sink's own checked mapping.
//!
//! A target is `(cluster, destination)`: the database (`host:port/db`,
//! never a password) and [`destination`], which names the table *and* the
//! mapping, so two sinks writing one table differently never share a plan.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::config::FieldSource;
use crate::table::TablePlan;

type Plans = HashMap<(String, String), Arc<TablePlan>>;

static PLANS: OnceLock<Mutex<Plans>> = OnceLock::new();

fn plans() -> MutexGuard<'static, Plans> {
    PLANS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The destination of a sink's transactional target: the table with its
/// mapped columns, each followed by its source unless that is the field of
/// the same name, and the upsert key, e.g.
/// `metrics.telemetry(device_id=/device, ts, temperature) on conflict (device_id, ts)`.
pub fn destination(plan: &TablePlan) -> String {
    let columns: Vec<String> = plan
        .columns
        .iter()
        .map(|c| {
            let name = &c.mapping.column;
            match &c.mapping.source {
                FieldSource::Pointer(p) if *p == same_name_pointer(name) => name.clone(),
                source => format!("{name}={}", source.describe()),
            }
        })
        .collect();
    let mut text = format!("{}({})", plan.table, columns.join(", "));
    if !plan.key.is_empty() {
        let key: Vec<&str> = plan
            .key
            .iter()
            .map(|&i| plan.columns[i].mapping.column.as_str())
            .collect();
        text.push_str(&format!(" on conflict ({})", key.join(", ")));
    }
    text
}

fn same_name_pointer(column: &str) -> String {
    format!("/{}", column.replace('~', "~0").replace('/', "~1"))
}

/// Registers (or replaces, when a sink is built again) the plan of a
/// target.
pub(crate) fn register(cluster: &str, destination: &str, plan: Arc<TablePlan>) {
    plans().insert((cluster.to_owned(), destination.to_owned()), plan);
}

/// The plan a sink built in this process registered for a target.
pub(crate) fn lookup(cluster: &str, destination: &str) -> Option<Arc<TablePlan>> {
    plans()
        .get(&(cluster.to_owned(), destination.to_owned()))
        .cloned()
}

/// The destinations registered for a database, sorted, for a message
/// about a target that is not among them.
pub(crate) fn destinations_in(cluster: &str) -> Vec<String> {
    let mut found: Vec<String> = plans()
        .keys()
        .filter(|(c, _)| c == cluster)
        .map(|(_, d)| d.clone())
        .collect();
    found.sort();
    found
}
