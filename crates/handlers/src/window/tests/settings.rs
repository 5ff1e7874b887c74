//! Reading the `window` settings: the example from the docs, defaults,
//! and every problem reported at its key with a hint.

use super::super::config::{Aggregate, AggregateKind, Emit, KeySource, Settings, TimeSource};
use super::{read, read_node, settings};

/// The problems reading `yaml` reports, one line each: `line:column path:
/// message (hint)`.
fn problems(yaml: &str) -> Vec<String> {
    let (settings, errors) = read(yaml);
    assert!(settings.is_none(), "{yaml}\nread despite {errors:#?}");
    let mut lines: Vec<String> = errors
        .into_iter()
        .map(|e| {
            format!(
                "{} {}: {} ({})",
                e.span,
                e.path,
                e.message,
                e.hint.unwrap_or_default()
            )
        })
        .collect();
    lines.sort();
    lines
}

fn aggregate(name: &str, kind: AggregateKind, field: Option<&str>) -> Aggregate {
    Aggregate {
        name: name.to_owned(),
        kind,
        field: field.map(str::to_owned),
    }
}

#[test]
fn the_documented_example_reads_in_order() {
    let read = settings(
        "key: /device\ntime: /ts\nsize: 1m\nslide: 15s\nallowed_lateness: 30s\nemit: on_close\naggregates:\n  readings: count\n  temperature_sum: {sum: /temperature}\n  temperature_min: {min: /temperature}\n  temperature_max: {max: /temperature}\n  temperature_avg: {avg: /temperature}\n  temperature_last: {last: /temperature}\n",
    );
    assert_eq!(
        read,
        Settings {
            key: KeySource::Pointer("/device".to_owned()),
            time: TimeSource::Pointer("/ts".to_owned()),
            size_ms: 60_000,
            slide_ms: 15_000,
            lateness_ms: 30_000,
            emit: Emit::OnClose,
            aggregates: vec![
                aggregate("readings", AggregateKind::Count, None),
                aggregate("temperature_sum", AggregateKind::Sum, Some("/temperature")),
                aggregate("temperature_min", AggregateKind::Min, Some("/temperature")),
                aggregate("temperature_max", AggregateKind::Max, Some("/temperature")),
                aggregate("temperature_avg", AggregateKind::Avg, Some("/temperature")),
                aggregate(
                    "temperature_last",
                    AggregateKind::Last,
                    Some("/temperature")
                ),
            ],
            max_keys: crate::window::config::DEFAULT_MAX_KEYS,
        }
    );
    assert!(read.reads_payload());
}

#[test]
fn defaults_are_the_event_key_and_timestamp_tumbling_no_lateness_on_close() {
    let read = settings("size: 5m\naggregates: {n: count}");
    assert_eq!(
        (
            read.key,
            read.time,
            read.slide_ms,
            read.lateness_ms,
            read.emit
        ),
        (
            KeySource::EventKey,
            TimeSource::EventTimestamp,
            300_000,
            0,
            Emit::OnClose
        )
    );
    let explicit = settings("key: $key\ntime: $timestamp\nsize: 5m\naggregates: {n: count}");
    assert!(!explicit.reads_payload());
}

#[test]
fn the_fingerprint_follows_what_the_state_depends_on_only() {
    let base = settings("size: 1m\nslide: 30s\naggregates: {n: count, t: {sum: /t}}");
    let same = settings(
        "size: 1m\nslide: 30s\nallowed_lateness: 1h\nemit: on_update\naggregates: {count: count, total: {sum: /t}}",
    );
    assert_eq!(base.fingerprint(), same.fingerprint());
    for other in [
        "size: 2m\nslide: 30s\naggregates: {n: count, t: {sum: /t}}",
        "size: 1m\nslide: 20s\naggregates: {n: count, t: {sum: /t}}",
        "size: 1m\nslide: 30s\naggregates: {n: count, t: {avg: /t}}",
        "size: 1m\nslide: 30s\naggregates: {n: count, t: {sum: /u}}",
        "size: 1m\nslide: 30s\naggregates: {t: {sum: /t}, n: count}",
    ] {
        assert_ne!(base.fingerprint(), settings(other).fingerprint(), "{other}");
    }
}

#[test]
fn durations_are_required_above_zero_whole_milliseconds_and_in_range() {
    assert_eq!(
        problems("aggregates: {n: count}"),
        ["1:1 handler.size: missing required field `size` in `handler` (give the window length, e.g. `size: 1m` (add `slide: 15s` for sliding windows))"]
    );
    assert_eq!(
        problems("size: 0s\nslide: 1.5ms\nallowed_lateness: soon\naggregates: {n: count}"),
        [
            "1:7 handler.size: `size` must be longer than zero (write e.g. `size: 1m`)",
            "2:8 handler.slide: `slide` must be a whole number of milliseconds (windows are aligned to milliseconds; write e.g. `slide: 15s`)",
            "3:19 handler.allowed_lateness: `allowed_lateness` must be a duration, found `soon` (write a number with a unit: `250ms`, `5s`, `2m`, `1h`)",
        ]
    );
    assert_eq!(
        problems("size: 876001h\naggregates: {n: count}"),
        ["1:7 handler.size: `size` must be at most 876000h, found `876001h` (876000h is the largest value of any setting of this kind; see \"Limits\" in the README)"]
    );
    assert_eq!(
        problems("size: 1m\nslide: 0s\naggregates: {n: count}"),
        ["2:8 handler.slide: `slide` must be longer than zero (write e.g. `slide: 15s`)"]
    );
}

#[test]
fn slide_must_divide_size_be_no_longer_and_not_make_too_many_windows() {
    assert_eq!(
        problems("size: 1m\nslide: 25s\naggregates: {n: count}"),
        ["2:8 handler.slide: `size` (1m) is not a whole number of `slide`s (25s) (each event falls in `size / slide` windows; did you mean `slide: 30s`?)"]
    );
    assert_eq!(
        problems("size: 1m\nslide: 2m\naggregates: {n: count}"),
        ["2:8 handler.slide: `slide` (2m) is longer than `size` (1m) (a window starts every `slide`; make it at most `size`, or leave it out for tumbling windows)"]
    );
    assert_eq!(
        problems("size: 1h\nslide: 1s\naggregates: {n: count}"),
        ["2:8 handler.slide: `size` (1h) / `slide` (1s) puts each event in 3600 windows, more than 1000 (make `slide` longer)"]
    );
}

#[test]
fn key_time_and_emit_are_checked() {
    assert_eq!(
        problems("key: device\ntime: $time\nemit: on_closed\nsize: 1m\naggregates: {n: count}"),
        [
            "1:6 handler.key: `key` must be `$key` or a JSON pointer, found `device`: a JSON pointer starts with `/` (write a JSON pointer: did you mean `/device`?)",
            "2:7 handler.time: unknown `time` `$time` (`$timestamp` is the event's timestamp; anything else is a JSON pointer into the payload, e.g. `/ts`)",
            "3:7 handler.emit: unknown emit `on_closed` (did you mean `on_close`? (one of `on_close` or `on_update`))",
        ]
    );
    assert_eq!(
        problems("key: /a~2b\nsize: 1m\naggregates: {n: count}"),
        ["1:6 handler.key: `key` must be `$key` or a JSON pointer, found `/a~2b`: `~` in a JSON pointer must be `~0` (for `~`) or `~1` (for `/`) (write a JSON pointer, e.g. `/device`)"]
    );
}

#[test]
fn every_aggregate_problem_is_reported_at_its_place() {
    let yaml = "size: 1m\naggregates:\n  a: coutn\n  b: sum\n  c: {summ: /t}\n  d: {sum: temperature.inside}\n  e: {count: /t}\n  key: count\n  window_end: {max: /t}\n  f: {sum: /t, min: /t}\n  g: [count]\n  h: {avg: [/t]}\n";
    assert_eq!(
        problems(yaml),
        [
            "10:6 handler.aggregates.f: aggregate `f` must be `count` or a one-key mapping such as `{sum: /temperature}`, found a mapping (aggregates are `count`, `sum`, `min`, `max`, `avg` or `last`)",
            "11:6 handler.aggregates.g: aggregate `g` must be `count` or a one-key mapping such as `{sum: /temperature}`, found a list (aggregates are `count`, `sum`, `min`, `max`, `avg` or `last`)",
            "12:12 handler.aggregates.h.avg: the field of `avg` must be a JSON pointer, found a list (e.g. `h: {avg: /temperature}`)",
            "3:6 handler.aggregates.a: unknown aggregate `coutn` (did you mean `count`? (one of `count`, `sum`, `min`, `max`, `avg` or `last`))",
            "4:6 handler.aggregates.b: `sum` needs the field it aggregates (write `b: {sum: /field}`)",
            "5:7 handler.aggregates.c: unknown aggregate `summ` (did you mean `sum`? (one of `count`, `sum`, `min`, `max`, `avg` or `last`))",
            "6:12 handler.aggregates.d.sum: the field of `sum` must be a JSON pointer, found `temperature.inside`: a JSON pointer starts with `/` (write a JSON pointer: did you mean `/temperature/inside`?)",
            "7:7 handler.aggregates.e: `count` takes no field: it counts the window's events (write `e: count`)",
            "8:3 handler.aggregates.key: output field `key` is written by the handler itself (every output has `key`, `window_start` or `window_end`; name the aggregate otherwise, e.g. `key_value`)",
            "9:3 handler.aggregates.window_end: output field `window_end` is written by the handler itself (every output has `key`, `window_start` or `window_end`; name the aggregate otherwise, e.g. `window_end_value`)",
        ]
    );
    assert_eq!(
        problems("size: 1m\naggregates: count"),
        ["2:13 handler.aggregates: `aggregates` must be a mapping of output field to aggregate, found a scalar (map output fields to aggregates, e.g. `aggregates: {readings: count, temperature_avg: {avg: /temperature}}`)"]
    );
    assert_eq!(
        problems("size: 1m"),
        ["1:1 handler.aggregates: missing required field `aggregates` in `handler` (map output fields to aggregates, e.g. `aggregates: {readings: count, temperature_avg: {avg: /temperature}}`)"]
    );
}

#[test]
fn a_duplicate_output_field_is_reported_even_from_a_tree_built_in_code() {
    use spate_connector::{ConfigNode, NodeKind, Span};
    let at = |line| Span { line, column: 3 };
    let scalar = |text: &str, line| ConfigNode {
        kind: NodeKind::Scalar {
            text: text.to_owned(),
            quoted: false,
        },
        span: at(line),
    };
    let aggregates = ConfigNode {
        kind: NodeKind::Map(vec![
            ("n".to_owned(), at(3), scalar("count", 3)),
            ("n".to_owned(), at(4), scalar("count", 4)),
        ]),
        span: at(3),
    };
    let root = ConfigNode {
        kind: NodeKind::Map(vec![
            ("size".to_owned(), at(1), scalar("1m", 1)),
            ("aggregates".to_owned(), at(2), aggregates),
        ]),
        span: at(1),
    };
    let (read, errors) = read_node(&root);
    assert!(read.is_none());
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].message, "output field `n` is declared twice");
    assert_eq!(errors[0].span.line, 4);
}
