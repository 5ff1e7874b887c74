//! Unit tests of the `window` handler: window assignment at the
//! boundaries, every aggregate, lateness, both emit modes and invalid
//! input. The state contract is tested in [`restore`], the settings in
//! [`settings`], the stored form in [`stored`].

mod keys;
mod restore;
mod settings;
mod stored;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};
use spate_connector::config::ConfigErrors;
use spate_connector::{ConfigError, ConfigNode, ConfigReader, Event, StateChange};

use super::config::{self, Settings};
use super::*;
use crate::ErrorKind;

const AGGREGATES: &str = "aggregates:\n  n: count\n  sum: {sum: /v}\n  min: {min: /v}\n  max: {max: /v}\n  avg: {avg: /v}\n  last: {last: /v}\n";

/// Reads a `handler:` mapping: the settings, if valid, and every problem.
fn read_node(root: &ConfigNode) -> (Option<Settings>, Vec<ConfigError>) {
    let errors = ConfigErrors::default();
    let settings = {
        let mut reader = ConfigReader::new(root, "handler", &errors);
        config::read(&mut reader)
    };
    (settings, errors.into_inner())
}

/// [`read_node`] of the YAML of a `handler:` mapping.
fn read(yaml: &str) -> (Option<Settings>, Vec<ConfigError>) {
    let document = spate_loader::yaml::parse(yaml, &|_: &str| None).expect("YAML");
    read_node(&document.root)
}

/// Settings from the YAML of a `handler:` mapping; panics on any problem.
fn settings(yaml: &str) -> Settings {
    let (settings, errors) = read(yaml);
    assert!(errors.is_empty(), "{yaml}\n{errors:#?}");
    settings.expect("settings")
}

/// A handler over `/device`, `/ts` and `/v` with every aggregate.
fn handler(size: &str, slide: &str, lateness: &str, emit: &str) -> WindowHandler {
    WindowHandler::new(settings(&format!(
        "key: /device\ntime: /ts\nsize: {size}\nslide: {slide}\nallowed_lateness: {lateness}\nemit: {emit}\n{AGGREGATES}"
    )))
}

fn event(partition: u32, payload: &str) -> Event {
    crate::testing::event("readings", partition, 0, payload.as_bytes())
}

fn reading(device: &str, ts: i64, v: impl std::fmt::Display) -> String {
    format!(r#"{{"device":"{device}","ts":{ts},"v":{v}}}"#)
}

/// Handles one event: the output payloads, or the error.
async fn feed(
    h: &WindowHandler,
    partition: u32,
    payload: &str,
) -> (Result<Vec<String>, HandlerError>, Vec<StateChange>) {
    let ctx = Context::new(Arc::from("f"), 1);
    let result = h.handle(event(partition, payload), &ctx).await;
    let outputs = result.map(|outputs| {
        outputs
            .into_iter()
            .map(|o| String::from_utf8_lossy(&o.record.payload).into_owned())
            .collect()
    });
    (outputs, ctx.take_state_changes())
}

/// Handles one event that must be accepted: its outputs as JSON.
async fn ok(h: &WindowHandler, payload: &str) -> Vec<Value> {
    let (result, changes) = feed(h, 0, payload).await;
    let outputs = result.unwrap_or_else(|e| panic!("{payload}: {e}"));
    assert_eq!(changes.len(), 1, "one state change per accepted event");
    outputs
        .iter()
        .map(|o| serde_json::from_str(o).expect("outputs are JSON"))
        .collect()
}

fn snapshot(h: &WindowHandler) -> HashMap<(usize, PartitionId), HashMap<Bytes, KeyState>> {
    h.partitions()
        .iter()
        .map(|(slot, partition)| (*slot, partition.keys.clone()))
        .collect()
}

/// (window_start, n) of outputs.
fn counts(outputs: &[Value]) -> Vec<(i64, u64)> {
    outputs
        .iter()
        .map(|o| {
            (
                o["window_start"].as_i64().expect("start"),
                o["n"].as_u64().expect("n"),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_tumbling_window_holds_its_start_and_its_end_minus_one() {
    let h = handler("10s", "10s", "0s", "on_close");
    assert!(ok(&h, &reading("d", 10_000, 1)).await.is_empty());
    assert!(ok(&h, &reading("d", 19_999, 2)).await.is_empty());
    let ctx = Context::new(Arc::from("f"), 1);
    let outputs = h
        .handle(event(0, &reading("d", 20_000, 3)), &ctx)
        .await
        .expect("accepted");
    assert_eq!(outputs.len(), 1);
    let record = &outputs[0].record;
    assert_eq!(
        String::from_utf8_lossy(&record.payload),
        r#"{"key":"d","window_start":10000,"window_end":20000,"n":2,"sum":3,"min":1,"max":2,"avg":1.5,"last":2}"#
    );
    assert_eq!(record.key, Some(Bytes::from_static(b"d")));
    assert_eq!(record.timestamp_ms, Some(20_000));
    assert!(record.headers.is_empty());
    assert_eq!(outputs[0].to, None);
}

#[tokio::test]
async fn sliding_windows_take_an_event_in_each_window_that_contains_it() {
    let h = handler("10s", "5s", "0s", "on_update");
    // t = 5000 is the start of [5000, 15000) and inside [0, 10000).
    assert_eq!(
        counts(&ok(&h, &reading("d", 5_000, 1)).await),
        vec![(0, 1), (5_000, 1)]
    );
    // t = 9999 is the last millisecond of [0, 10000).
    assert_eq!(
        counts(&ok(&h, &reading("d", 9_999, 1)).await),
        vec![(0, 2), (5_000, 2)]
    );
    // t = 10000 has left [0, 10000), which closes silently (on_update).
    assert_eq!(
        counts(&ok(&h, &reading("d", 10_000, 1)).await),
        vec![(5_000, 3), (10_000, 1)]
    );
    let state = &snapshot(&h)[&(0, 0)][&Bytes::from_static(b"d")];
    assert_eq!(
        state.windows.keys().copied().collect::<Vec<_>>(),
        [5_000, 10_000]
    );
}

#[tokio::test]
async fn integer_aggregates_stay_integers_and_a_float_makes_them_floats() {
    let h = handler("10s", "10s", "0s", "on_update");
    for (t, v) in [(1, "3"), (2, "1"), (3, "2")] {
        ok(&h, &reading("d", t, v)).await;
    }
    let ints = ok(&h, &reading("d", 4, "2")).await;
    assert_eq!(
        ints[0],
        json!({"key": "d", "window_start": 0, "window_end": 10000, "n": 4, "sum": 8, "min": 1, "max": 3, "avg": 2.0, "last": 2})
    );
    let mixed = ok(&h, &reading("d", 5, "0.5")).await;
    assert_eq!(
        mixed[0],
        json!({"key": "d", "window_start": 0, "window_end": 10000, "n": 5, "sum": 8.5, "min": 0.5, "max": 3.0, "avg": 1.7, "last": 0.5})
    );
    // An integer sum that overflows goes on as a float.
    let h = handler("10s", "10s", "0s", "on_update");
    ok(&h, &reading("d", 1, i64::MAX)).await;
    let big = ok(&h, &reading("d", 2, 1)).await;
    assert_eq!(big[0]["sum"], json!(9.223372036854776e18));
    assert_eq!(big[0]["max"], json!(i64::MAX));
}

#[tokio::test]
async fn last_is_the_value_at_the_greatest_event_time_and_a_tie_goes_to_the_later_event() {
    let h = handler("10s", "10s", "5s", "on_update");
    ok(&h, &reading("d", 1_000, 1)).await;
    ok(&h, &reading("d", 3_000, 2)).await;
    // Earlier in event time: counted, but `last` stays 2.
    let out = ok(&h, &reading("d", 2_000, 3)).await;
    assert_eq!(
        (out[0]["last"].clone(), out[0]["n"].clone()),
        (json!(2), json!(3))
    );
    // Same time as the latest: the later event wins.
    let out = ok(&h, &reading("d", 3_000, 4)).await;
    assert_eq!(out[0]["last"], json!(4));
    // `last` takes any JSON value; `sum` and friends would refuse these,
    // so use a handler with `last` alone.
    let h = WindowHandler::new(settings(
        "key: /device\ntime: /ts\nsize: 10s\nemit: on_update\naggregates: {latest: {last: /v}}",
    ));
    for (v, shown) in [
        (r#""warm""#, json!("warm")),
        ("null", Value::Null),
        (r#"{"a":[1,2.5]}"#, json!({"a": [1, 2.5]})),
    ] {
        let out = ok(&h, &reading("d", 1_000, v)).await;
        assert_eq!(out[0]["latest"], shown);
    }
}

#[tokio::test]
async fn an_event_within_the_allowed_lateness_counts_and_one_beyond_is_refused_unchanged() {
    let h = handler("10s", "10s", "2s", "on_close");
    ok(&h, &reading("d", 5_000, 1)).await;
    // max_time 11000 - 2000 = 9000 < 10000: [0, 10000) is still open.
    assert!(ok(&h, &reading("d", 11_000, 1)).await.is_empty());
    assert!(ok(&h, &reading("d", 9_000, 1)).await.is_empty());
    // 12000 - 2000 >= 10000: the window closes with both early events.
    let closed = ok(&h, &reading("d", 12_000, 1)).await;
    assert_eq!(counts(&closed), vec![(0, 2)]);
    let before = snapshot(&h);
    let (result, changes) = feed(&h, 0, &reading("d", 9_500, 1)).await;
    let error = result.expect_err("late");
    assert_eq!(error.kind, ErrorKind::Permanent);
    assert_eq!(error.reason, Some("late"));
    assert_eq!(
        error.message,
        "window: late event for key `d`: event time 9500 (1970-01-01T00:00:09.500Z), window [0, 10000) closed at 12000 (1970-01-01T00:00:12.000Z), allowed lateness 2s; the key's event time is 12000 (1970-01-01T00:00:12.000Z)"
    );
    assert!(changes.is_empty(), "a refused event records no state");
    assert_eq!(snapshot(&h), before, "a refused event changes nothing");
    // Another key has its own clock: the same time is fine for it.
    assert!(ok(&h, &reading("e", 9_500, 1)).await.is_empty());
}

#[tokio::test]
async fn a_sliding_event_whose_older_windows_closed_counts_in_the_open_ones_only() {
    let h = handler("10s", "5s", "0s", "on_close");
    ok(&h, &reading("d", 1_000, 1)).await;
    // Closes [-5000, 5000).
    assert_eq!(
        counts(&ok(&h, &reading("d", 7_000, 1)).await),
        vec![(-5_000, 1)]
    );
    // 4000 belongs to [-5000, 5000) (closed) and [0, 10000) (open).
    assert!(ok(&h, &reading("d", 4_000, 1)).await.is_empty());
    assert_eq!(
        counts(&ok(&h, &reading("d", 16_000, 1)).await),
        vec![(0, 3), (5_000, 1)]
    );
    // 4000 again: both of its windows are closed now.
    let (result, _) = feed(&h, 0, &reading("d", 4_000, 1)).await;
    assert_eq!(result.expect_err("late").reason, Some("late"));

    let h = handler("10s", "5s", "0s", "on_update");
    ok(&h, &reading("d", 1_000, 1)).await;
    ok(&h, &reading("d", 7_000, 1)).await;
    assert_eq!(counts(&ok(&h, &reading("d", 4_000, 1)).await), vec![(0, 3)]);
}

/// Deterministic pseudo-random numbers for the longer sequences.
fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *seed >> 33
}

/// The windows a plain reading of the rules writes for events at `times`
/// (size 10s, slide 2s, lateness 3s, on_close): per event, `None` if it is
/// late, else the (start, count) of each window it closes.
fn by_the_rules(times: &[i64]) -> Vec<Option<Vec<(i64, u64)>>> {
    let (size, slide, lateness) = (10_000, 2_000, 3_000);
    let mut max: Option<i64> = None;
    let mut open: BTreeMap<i64, u64> = BTreeMap::new();
    let mut result = Vec::new();
    for &t in times {
        let is_open = |s: i64| max.is_none_or(|m| m - lateness < s + size);
        let starts: Vec<i64> = (-100..100)
            .map(|i| i * slide)
            .filter(|s| *s <= t && t < s + size && is_open(*s))
            .collect();
        if starts.is_empty() {
            result.push(None);
            continue;
        }
        for s in starts {
            *open.entry(s).or_default() += 1;
        }
        let m = max.map_or(t, |m| m.max(t));
        max = Some(m);
        let closed: Vec<i64> = open
            .keys()
            .copied()
            .filter(|s| m - lateness >= s + size)
            .collect();
        result.push(Some(
            closed
                .iter()
                .map(|s| (*s, open.remove(s).unwrap_or(0)))
                .collect(),
        ));
    }
    result
}

#[tokio::test]
async fn on_close_writes_each_window_once_in_order_with_exactly_its_accepted_events() {
    let h = handler("10s", "2s", "3s", "on_close");
    let mut seed = 7;
    let times: Vec<i64> = (0..200)
        .map(|n| n * 700 + (lcg(&mut seed) % 12_000) as i64 - 6_000)
        .collect();
    let expected = by_the_rules(&times);
    let mut written = Vec::new();
    for (t, expected) in times.iter().zip(expected) {
        let (result, _) = feed(&h, 0, &reading("d", *t, 1)).await;
        match (result, expected) {
            (Ok(outputs), Some(closed)) => {
                let outputs: Vec<Value> = outputs
                    .iter()
                    .map(|o| serde_json::from_str(o).expect("JSON"))
                    .collect();
                assert_eq!(counts(&outputs), closed, "event at {t}");
                written.extend(closed);
            }
            (Err(e), None) => assert_eq!(e.reason, Some("late"), "{e}"),
            (result, expected) => panic!("event at {t}: {result:?}, expected {expected:?}"),
        }
    }
    let starts: Vec<i64> = written.iter().map(|(s, _)| *s).collect();
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "each once, in order"
    );
    assert!(written.len() > 50, "only {} windows written", written.len());
}

#[tokio::test]
async fn on_update_writes_the_current_value_and_drops_closed_windows_silently() {
    let h = handler("10s", "10s", "0s", "on_update");
    let first = ok(&h, &reading("d", 1_000, 1)).await;
    assert_eq!(
        (first[0]["n"].clone(), first[0]["sum"].clone()),
        (json!(1), json!(1))
    );
    let second = ok(&h, &reading("d", 2_000, 2)).await;
    assert_eq!(
        (second[0]["n"].clone(), second[0]["sum"].clone()),
        (json!(2), json!(3))
    );
    let next = ok(&h, &reading("d", 11_000, 5)).await;
    assert_eq!(
        counts(&next),
        vec![(10_000, 1)],
        "no output for the closed window"
    );
    let state = &snapshot(&h)[&(0, 0)][&Bytes::from_static(b"d")];
    assert_eq!(state.windows.keys().copied().collect::<Vec<_>>(), [10_000]);
    assert_eq!(state.max_time, 11_000);
}

#[tokio::test]
async fn invalid_events_are_refused_with_what_was_wrong_and_change_nothing() {
    let h = handler("10s", "10s", "0s", "on_update");
    ok(&h, &reading("d", 1_000, 1)).await;
    let before = snapshot(&h);
    for (payload, message) in [
        ("not json", "window: the payload is not JSON: expected ident at line 1 column 2"),
        (r#"{"ts":1,"v":1}"#, "window: key `/device` is missing from the payload"),
        (r#"{"device":{"id":1},"ts":1,"v":1}"#, "window: key `/device` must be a string or a number, found an object"),
        (r#"{"device":"d","v":1}"#, "window: time `/ts` is missing from the payload"),
        (r#"{"device":"d","ts":1.5,"v":1}"#, "window: time `/ts` must be epoch milliseconds (an integer) or an RFC 3339 string, found 1.5"),
        (r#"{"device":"d","ts":"yesterday","v":1}"#, "window: time `/ts` = \"yesterday\" is not an RFC 3339 time: expected YYYY-MM-DDTHH:MM:SS[.fraction] then Z or ±HH:MM"),
        (r#"{"device":"d","ts":"2024-02-30T00:00:00Z","v":1}"#, "window: time `/ts` = \"2024-02-30T00:00:00Z\" is not an RFC 3339 time: day 30 is out of range"),
        (r#"{"device":"d","ts":[1],"v":1}"#, "window: time `/ts` must be epoch milliseconds (an integer) or an RFC 3339 string, found a list"),
        (r#"{"device":"d","ts":99999999999999999,"v":1}"#, "window: event time `/ts` = 99999999999999999 is outside the years 0001 to 9999"),
        (r#"{"device":"d","ts":1}"#, "window: `sum` (sum of `/v`): `/v` is missing from the payload"),
        (r#"{"device":"d","ts":1,"v":"7"}"#, "window: `sum` (sum of `/v`): `/v` must be a number, found the string \"7\""),
        (r#"{"device":"d","ts":1,"v":null}"#, "window: `sum` (sum of `/v`): `/v` must be a number, found null"),
    ] {
        let (result, changes) = feed(&h, 0, payload).await;
        let error = result.expect_err(payload);
        assert_eq!((error.kind, error.reason), (ErrorKind::Permanent, Some("invalid")), "{payload}");
        assert_eq!(error.message, message);
        assert!(changes.is_empty(), "{payload} recorded state");
        assert_eq!(snapshot(&h), before, "{payload} changed the state");
    }
}

#[tokio::test]
async fn the_event_key_and_timestamp_are_the_defaults_and_count_alone_needs_no_json() {
    let h = WindowHandler::new(settings("size: 1s\naggregates: {n: count}"));
    let ctx = Context::new(Arc::from("f"), 1);
    let mut e = event(0, "not json at all");
    let error = h.handle(e.clone(), &ctx).await.expect_err("no key");
    assert_eq!(error.reason, Some("invalid"));
    assert!(
        error.message.contains("the event has no key"),
        "{}",
        error.message
    );
    e.key = Some(Bytes::from_static(b"k\xff"));
    let error = h.handle(e.clone(), &ctx).await.expect_err("no timestamp");
    assert!(
        error.message.contains("the event has no timestamp"),
        "{}",
        error.message
    );
    e.timestamp_ms = Some(1_500);
    assert!(h
        .handle(e.clone(), &ctx)
        .await
        .expect("accepted")
        .is_empty());
    e.timestamp_ms = Some(2_000);
    let out = h.handle(e, &ctx).await.expect("accepted");
    assert_eq!(
        String::from_utf8_lossy(&out[0].record.payload),
        r#"{"key":"k�","window_start":1000,"window_end":2000,"n":1}"#
    );
    assert_eq!(out[0].record.key, Some(Bytes::from_static(b"k\xff")));
}

#[tokio::test]
async fn rfc3339_times_and_number_keys_are_read_from_the_payload() {
    let h = WindowHandler::new(settings(
        "key: /meta/id\ntime: /at\nsize: 1m\nemit: on_update\naggregates: {n: count}",
    ));
    let out = ok(
        &h,
        r#"{"meta":{"id":17},"at":"2023-11-14T23:13:20.5+01:00"}"#,
    )
    .await;
    assert_eq!(
        out[0],
        json!({"key": "17", "window_start": 1_699_999_980_000i64, "window_end": 1_700_000_040_000i64, "n": 1})
    );
}
