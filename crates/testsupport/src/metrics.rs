//! The metrics a test binary records, read back through a debugging
//! recorder: what the connectors' `tests/internal_events.rs` check their
//! internal events against.
//!
//! Guarantees: [`Totals::install`] makes its recorder the binary's global
//! one (a second install fails the test); a total is a counter's count or a
//! histogram's number of samples (a gauge adds nothing), summed over every
//! snapshot since the install, since a snapshot resets what it read.

use std::collections::BTreeMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// A metric's name and its labels (sorted by name).
type Series = (String, Vec<(String, String)>);

/// Totals of every metric series recorded since [`Totals::install`].
pub struct Totals {
    snapshotter: Snapshotter,
    seen: BTreeMap<Series, u64>,
}

impl Totals {
    /// Installs a debugging recorder as this test binary's global recorder
    /// and reads what it records from then on.
    pub fn install() -> Totals {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("first recorder of this test binary");
        Totals {
            snapshotter,
            seen: BTreeMap::new(),
        }
    }

    /// The total of `metric` over its series whose labels match `labels`,
    /// or `None` if no such series was ever recorded. A label given with
    /// the empty value matches a series without that label too.
    pub fn get(&mut self, metric: &str, labels: &[(&str, &str)]) -> Option<u64> {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let n = match value {
                DebugValue::Counter(n) => n,
                DebugValue::Histogram(samples) => samples.len() as u64,
                DebugValue::Gauge(_) => 0,
            };
            let mut series_labels: Vec<(String, String)> = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            series_labels.sort();
            let series = (key.key().name().to_owned(), series_labels);
            *self.seen.entry(series).or_default() += n;
        }
        let label_matches = |series_labels: &[(String, String)], (name, value): &(&str, &str)| {
            let found = series_labels.iter().find(|(k, _)| k == name);
            found.map_or("", |(_, v)| v.as_str()) == *value
        };
        self.seen
            .iter()
            .filter(|((name, series_labels), _)| {
                name == metric && labels.iter().all(|l| label_matches(series_labels, l))
            })
            .map(|(_, n)| *n)
            .reduce(|a, b| a + b)
    }

    /// Waits (up to 20 s) until `metric` with `labels` (as for
    /// [`Totals::get`]) was counted at least once.
    pub async fn wait_for(&mut self, metric: &str, labels: &[(&str, &str)]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.get(metric, labels).unwrap_or(0) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{metric} {labels:?} never counted: {:?}",
                self.seen
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
