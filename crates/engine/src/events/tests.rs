//! Each event moves exactly its metrics, with the function's labels, and
//! its tally.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};

use super::*;
use crate::metrics::{self as names, FunctionMetrics};
use crate::worker::Tally;

/// A metric: its name and labels.
type Key = (String, Vec<(String, String)>);

/// Registers a function's handles under a recorder of its own, runs `emit`
/// with them, and returns every metric that moved (zeros left out).
fn moved(emit: impl FnOnce(&FunctionMetrics)) -> BTreeMap<Key, DebugValue> {
    registered(emit)
        .into_iter()
        .filter(|(_, value)| match value {
            DebugValue::Counter(n) => *n != 0,
            DebugValue::Gauge(v) => v.0 != 0.0,
            DebugValue::Histogram(v) => !v.is_empty(),
        })
        .collect()
}

/// Like [`moved`], with every metric registered, zeros too.
fn registered(emit: impl FnOnce(&FunctionMetrics)) -> BTreeMap<Key, DebugValue> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let metrics = FunctionMetrics::new(&Arc::from("f"));
        emit(&metrics);
    });
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let labels = key.key().labels();
            let labels = labels.map(|l| (l.key().to_owned(), l.value().to_owned()));
            ((key.key().name().to_owned(), labels.collect()), value)
        })
        .collect()
}

fn key(name: &str, labels: &[(&str, &str)]) -> Key {
    let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    (name.to_owned(), labels.collect())
}

fn of_f(name: &str) -> Key {
    key(name, &[("function", "f")])
}

fn gauge(v: f64) -> DebugValue {
    DebugValue::Gauge(v.into())
}

#[test]
fn an_event_read_then_finished_counts_in_and_leaves_nothing_in_flight() {
    let mut read = 0;
    let got = moved(|metrics| {
        for _ in 0..3 {
            let read = &mut read;
            EventRead { metrics, read }.emit();
        }
        EventFinished { metrics }.emit();
        EventsAbandoned { metrics, count: 1 }.emit();
    });
    let want = BTreeMap::from([
        (of_f(names::EVENTS_IN), DebugValue::Counter(3)),
        (of_f(names::IN_FLIGHT), gauge(1.0)),
    ]);
    assert_eq!(got, want);
    assert_eq!(read, 3, "the scheduler's count of events read");
}

#[test]
fn handling_retrying_and_acknowledging_count_metrics_and_tally_alike() {
    let tally = Tally::default();
    let got = moved(|metrics| {
        let tally = &tally;
        let error = "boom";
        AttemptFailed {
            metrics,
            function: "f",
            attempt: 1,
            error,
            retrying: true,
        }
        .emit();
        RetryScheduled { metrics, tally }.emit();
        HandlerRan {
            metrics,
            elapsed: Duration::from_millis(2),
        }
        .emit();
        OutputsAcknowledged {
            metrics,
            tally,
            count: 2,
        }
        .emit();
        EventHandled { metrics, tally }.emit();
    });
    let want = BTreeMap::from([
        (of_f(names::EVENTS_FAILED), DebugValue::Counter(1)),
        (of_f(names::RETRIES), DebugValue::Counter(1)),
        (
            of_f(names::HANDLER_SECONDS),
            DebugValue::Histogram(vec![0.002.into()]),
        ),
        (of_f(names::EVENTS_OUT), DebugValue::Counter(2)),
        (of_f(names::EVENTS_HANDLED), DebugValue::Counter(1)),
    ]);
    assert_eq!(got, want);
    let load = |n: &std::sync::atomic::AtomicU64| n.load(AtomicOrdering::Relaxed);
    assert_eq!(load(&tally.retries), 1);
    assert_eq!(load(&tally.outputs), 2);
    assert_eq!(load(&tally.handled), 1);
    assert_eq!(load(&tally.dead_lettered), 0);
}

#[test]
fn dead_letters_count_written_and_reduced_ones() {
    let tally = Tally::default();
    let got = moved(|metrics| {
        let error = "too large";
        DeadLetterReduced {
            metrics,
            function: "f",
            stream: "orders",
            partition: 0,
            offset: 7,
            payload_bytes: 3,
            error: &error,
        }
        .emit();
        EventDeadLettered {
            metrics,
            tally: &tally,
            function: "f",
            stream: "orders",
            partition: 0,
            offset: 7,
            cause: Some(DeadLetterCause {
                reason: "handler-error",
                error: "boom",
            }),
        }
        .emit();
    });
    let want = BTreeMap::from([
        (of_f(names::DEAD_LETTERS_REDUCED), DebugValue::Counter(1)),
        (of_f(names::EVENTS_DEAD_LETTERED), DebugValue::Counter(1)),
    ]);
    assert_eq!(got, want);
    assert_eq!(tally.dead_lettered.load(AtomicOrdering::Relaxed), 1);
}

#[test]
fn scaling_counts_each_direction_and_tracks_the_tasks_alive() {
    let got = moved(|metrics| {
        ConcurrencyScaledUp {
            metrics,
            function: "f",
            from: 0,
            added: 4,
            reason: "backlog",
        }
        .emit();
        ConcurrencyScaledDown {
            metrics,
            function: "f",
            tasks: 3,
            idle_for: Duration::from_secs(30),
        }
        .emit();
        HandlerTaskEnded { metrics }.emit();
    });
    let scale = |direction| {
        let labels = [("function", "f"), ("direction", direction)];
        key(names::SCALE_CHANGES, &labels)
    };
    let want = BTreeMap::from([
        (of_f(names::CONCURRENCY), gauge(2.0)),
        (scale("up"), DebugValue::Counter(1)),
        (scale("down"), DebugValue::Counter(1)),
    ]);
    assert_eq!(got, want);
}

#[test]
fn commits_count_successes_with_latency_and_failures() {
    let tally = Tally::default();
    let got = moved(|metrics| {
        let error = "broker away";
        CommitSucceeded {
            metrics,
            elapsed: Duration::from_millis(250),
        }
        .emit();
        CommitFailed {
            metrics,
            function: "f",
            source: "in",
            error: &error,
        }
        .emit();
        TransactionCommitted {
            metrics,
            tally: &tally,
            elapsed: Duration::from_millis(500),
            outputs: 5,
        }
        .emit();
        TransactionFailed {
            metrics,
            function: "f",
            session: "s",
            error: &error,
            during: "commit",
            fatal: false,
        }
        .emit();
        PausedPartitions { metrics, paused: 2 }.emit();
    });
    let want = BTreeMap::from([
        (of_f(names::COMMITS), DebugValue::Counter(2)),
        (
            of_f(names::COMMIT_SECONDS),
            DebugValue::Histogram(vec![0.25.into(), 0.5.into()]),
        ),
        (of_f(names::COMMIT_FAILURES), DebugValue::Counter(2)),
        (of_f(names::EVENTS_OUT), DebugValue::Counter(5)),
        (of_f(names::PAUSED_PARTITIONS), gauge(2.0)),
    ]);
    assert_eq!(got, want);
    assert_eq!(tally.outputs.load(AtomicOrdering::Relaxed), 5);
}

#[test]
fn partition_lag_sets_its_gauges_and_the_event_lag_only_when_known() {
    let got = registered(|metrics| {
        let mut gauges = metrics.partition_gauges("in", 3);
        PartitionLagMeasured {
            gauges: &mut gauges,
            uncommitted: 4,
            lag: None,
            age_secs: 1.5,
        }
        .emit();
    });
    let labels = [("function", "f"), ("stream", "in"), ("partition", "3")];
    let want = BTreeMap::from([
        (key(names::PARTITION_UNCOMMITTED, &labels), gauge(4.0)),
        (key(names::PARTITION_LAG_SECONDS, &labels), gauge(1.5)),
    ]);
    let per_partition = got.into_iter().filter(|((_, l), _)| l.len() == 3);
    assert_eq!(per_partition.collect::<BTreeMap<_, _>>(), want);

    let got = moved(|metrics| {
        let mut gauges = metrics.partition_gauges("in", 3);
        for lag in [Some(9), None] {
            let gauges = &mut gauges;
            PartitionLagMeasured {
                gauges,
                uncommitted: 4,
                lag,
                age_secs: 1.5,
            }
            .emit();
        }
    });
    let lag = (key(names::PARTITION_LAG_EVENTS, &labels), gauge(9.0));
    assert!(got.contains_key(&lag.0), "{got:?}");
    assert_eq!(got[&lag.0], lag.1, "a lag unknown later leaves the last");
}
