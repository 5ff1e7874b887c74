//! Each event moves exactly its metrics, with the function's labels, and
//! its tally.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};

use super::*;
use crate::metrics as names;
use crate::worker::Tally;

/// A metric: its name and labels.
type Key = (String, Vec<(String, String)>);

/// Builds the scope of a function `f` (its handles registered under a
/// recorder of its own), runs `emit` with it, and returns every metric that
/// moved (zeros left out) and the function's tally.
fn moved(emit: impl FnOnce(&Scope)) -> (BTreeMap<Key, DebugValue>, Tally) {
    let (registered, tally) = registered(emit);
    let moved = registered
        .into_iter()
        .filter(|(_, value)| match value {
            DebugValue::Counter(n) => *n != 0,
            DebugValue::Gauge(v) => v.0 != 0.0,
            DebugValue::Histogram(v) => !v.is_empty(),
        })
        .collect();
    (moved, tally)
}

/// Like [`moved`], with every metric registered, zeros too.
fn registered(emit: impl FnOnce(&Scope)) -> (BTreeMap<Key, DebugValue>, Tally) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let scope = metrics::with_local_recorder(&recorder, || {
        let scope = Scope::new(Arc::from("f"));
        emit(&scope);
        scope
    });
    let metrics = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let labels = key.key().labels();
            let labels = labels.map(|l| (l.key().to_owned(), l.value().to_owned()));
            ((key.key().name().to_owned(), labels.collect()), value)
        })
        .collect();
    (metrics, scope.tally)
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
    let (got, _) = moved(|scope| {
        for _ in 0..3 {
            let read = &mut read;
            EventsRead { read, count: 1 }.emit(scope);
        }
        EventFinished.emit(scope);
        EventsAbandoned { count: 1 }.emit(scope);
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
    let (got, tally) = moved(|scope| {
        let error = "boom";
        AttemptFailed {
            attempt: 1,
            error,
            retrying: true,
        }
        .emit(scope);
        RetryScheduled.emit(scope);
        HandlerRan {
            elapsed: Duration::from_millis(2),
        }
        .emit(scope);
        OutputsAcknowledged { count: 2 }.emit(scope);
        EventHandled.emit(scope);
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
    let (got, tally) = moved(|scope| {
        let error = "too large";
        DeadLetterReduced {
            stream: "orders",
            partition: 0,
            offset: 7,
            payload_bytes: 3,
            error: &error,
        }
        .emit(scope);
        EventDeadLettered {
            stream: "orders",
            partition: 0,
            offset: 7,
            cause: Some(DeadLetterCause {
                reason: "handler-error",
                error: "boom",
            }),
        }
        .emit(scope);
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
    let (got, _) = moved(|scope| {
        ConcurrencyScaledUp {
            from: 0,
            added: 4,
            reason: "backlog",
        }
        .emit(scope);
        ConcurrencyScaledDown {
            tasks: 3,
            idle_for: Duration::from_secs(30),
        }
        .emit(scope);
        HandlerTaskEnded.emit(scope);
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
    let (got, tally) = moved(|scope| {
        let error = "broker away";
        CommitSucceeded {
            elapsed: Duration::from_millis(250),
        }
        .emit(scope);
        CommitFailed(&error).emit(scope.connector("in"));
        TransactionCommitted {
            elapsed: Duration::from_millis(500),
            outputs: 5,
        }
        .emit(scope);
        TransactionFailed {
            error: &error,
            during: "commit",
            fatal: false,
        }
        .emit(scope.connector("s"));
        PausedPartitions { paused: 2 }.emit(scope);
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
    let (got, _) = registered(|scope| {
        let mut gauges = scope.metrics.partition_gauges("in", 3);
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

    let (got, _) = moved(|scope| {
        let mut gauges = scope.metrics.partition_gauges("in", 3);
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
