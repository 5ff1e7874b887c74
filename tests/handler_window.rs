//! The `window` built-in as a pipeline file declares it, run by the engine
//! over an in-memory log with `ordering: key`: 1,000 jittered readings of
//! 20 devices come out as exactly the windows a plain reading of the rules
//! computes, byte for byte, each once and in order per device; late
//! readings are dead-lettered as `late`, malformed ones as `invalid`. And
//! `spate test` runs a `tests:` block over the same handler.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use spate::handler::Handler;
use spate::pipeline::Ordering;
use spate_connector::dead_letter;
use spate_connector::testkit::{MemoryLog, MemorySink};
use spate_testsupport::engine::{load_handler, plan, run_to_end};

/// 2023-11-14T22:13:20Z.
const T0: i64 = 1_700_000_000_000;
const SIZE: i64 = 60_000;
const SLIDE: i64 = 20_000;
const LATENESS: i64 = 5_000;
const DEVICES: usize = 20;
const PER_DEVICE: i64 = 50;

const HANDLER: &str = "      name: window
      key: /device
      time: /ts
      size: 1m
      slide: 20s
      allowed_lateness: 5s
      aggregates:
        readings: count
        temperature_sum: {sum: /temperature}
        temperature_min: {min: /temperature}
        temperature_max: {max: /temperature}
        temperature_avg: {avg: /temperature}
        temperature_last: {last: /temperature}
        last_seq: {last: /seq}
";

/// The handler, configured from a pipeline file.
fn window_handler() -> Arc<dyn Handler> {
    let text = format!(
        "functions:\n  - name: device-minutes\n    input: {{type: generate, count: 1}}\n    ordering: key\n    handler:\n{HANDLER}    outputs: [{{type: stdout}}]\n    dead_letter: {{type: stdout}}\n"
    );
    load_handler(&text, "window.yaml", &|_: &str| None).unwrap_or_else(|errors| panic!("{errors}"))
}

fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *seed >> 33
}

/// A well-formed reading as the test generated it.
#[derive(Debug, Clone)]
struct Reading {
    device: String,
    time: i64,
    /// Even devices report whole degrees, odd ones quarter degrees.
    temperature: Temperature,
    seq: i64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Temperature {
    Whole(i64),
    Quarter(f64),
}

impl Temperature {
    fn json(self) -> String {
        match self {
            Self::Whole(t) => t.to_string(),
            Self::Quarter(t) => format!("{t:.2}"),
        }
    }
}

/// `2023-11-14T22:MM:SS.mmmZ` for a time within that hour.
fn rfc3339(ms: i64) -> String {
    let into_hour = ms - (T0 - (13 * 60 + 20) * 1000);
    assert!((0..3_600_000).contains(&into_hour));
    format!(
        "2023-11-14T22:{:02}:{:02}.{:03}Z",
        into_hour / 60_000,
        into_hour / 1000 % 60,
        into_hour % 1000
    )
}

impl Reading {
    fn payload(&self, device_index: usize) -> String {
        // Every fifth device writes its time as RFC 3339.
        let ts = if device_index.is_multiple_of(5) {
            format!("\"{}\"", rfc3339(self.time))
        } else {
            self.time.to_string()
        };
        format!(
            r#"{{"device":"{}","ts":{ts},"temperature":{},"seq":{}}}"#,
            self.device,
            self.temperature.json(),
            self.seq
        )
    }
}

/// What was appended, per device in order (what the handler sees of each
/// key), and the payloads that must be refused as malformed.
struct Fixture {
    by_device: BTreeMap<String, Vec<Reading>>,
    malformed: Vec<String>,
}

fn fill(log: &MemoryLog) -> Fixture {
    let mut seed = 2024;
    let mut by_device: BTreeMap<String, Vec<Reading>> = BTreeMap::new();
    let mut malformed = Vec::new();
    for n in 0..PER_DEVICE {
        for d in 0..DEVICES {
            let device = format!("d{d:02}");
            let partition = (d % 4) as u32;
            // Whole seconds, so that a device's readings sometimes tie.
            let jitter = (lcg(&mut seed) % 31) as i64 * 1_000 - 15_000;
            let temperature = if d.is_multiple_of(2) {
                Temperature::Whole((lcg(&mut seed) % 30) as i64 - 5)
            } else {
                Temperature::Quarter((lcg(&mut seed) % 120) as f64 / 4.0 - 5.0)
            };
            let reading = Reading {
                device: device.clone(),
                time: T0 + n * 5_000 + jitter,
                temperature,
                seq: n,
            };
            log.append(partition, Some(&device), reading.payload(d));
            by_device.entry(device.clone()).or_default().push(reading);
            // Three devices upload a reading from two minutes ago: late.
            if n == 30 && [3, 7, 11].contains(&d) {
                let late = Reading {
                    device: device.clone(),
                    time: T0 + n * 5_000 - 120_000,
                    temperature,
                    seq: 1_000 + n,
                };
                log.append(partition, Some(&device), late.payload(d));
                by_device.entry(device.clone()).or_default().push(late);
            }
            // Five devices send something malformed once.
            let bad = match (n, d) {
                (10, 0) => "temperature=21".to_owned(),
                (12, 5) => format!(r#"{{"device":"{device}","ts":{},"seq":1}}"#, T0 + 60_000),
                (14, 9) => format!(
                    r#"{{"device":"{device}","ts":{},"temperature":"21.5","seq":1}}"#,
                    T0 + 70_000
                ),
                (16, 14) => format!(r#"{{"device":"{device}","temperature":3,"seq":1}}"#),
                (18, 2) => format!(r#"{{"ts":{},"temperature":3,"seq":1}}"#, T0 + 90_000),
                _ => continue,
            };
            log.append(partition, Some(&device), bad.clone());
            malformed.push(bad);
        }
    }
    Fixture {
        by_device,
        malformed,
    }
}

/// One window as a plain reading of the rules computes it.
#[derive(Default)]
struct Expected {
    count: u64,
    temperatures: Vec<Temperature>,
    /// (time, temperature, seq) of the latest reading; a tie goes to the
    /// later one.
    last: Option<(i64, Temperature, i64)>,
}

fn number(value: f64) -> String {
    Value::from(value).to_string()
}

impl Expected {
    /// The output line, fields in the declared order.
    fn line(&self, device: &str, start: i64) -> String {
        let whole: Option<Vec<i64>> = self
            .temperatures
            .iter()
            .map(|t| match t {
                Temperature::Whole(w) => Some(*w),
                Temperature::Quarter(_) => None,
            })
            .collect();
        let floats: Vec<f64> = self
            .temperatures
            .iter()
            .map(|t| match t {
                Temperature::Whole(w) => *w as f64,
                Temperature::Quarter(q) => *q,
            })
            .collect();
        let (sum, min, max, sum_f) = match whole {
            Some(w) => {
                let sum: i64 = w.iter().sum();
                let min = w.iter().min().copied().unwrap_or_default();
                let max = w.iter().max().copied().unwrap_or_default();
                (
                    sum.to_string(),
                    min.to_string(),
                    max.to_string(),
                    sum as f64,
                )
            }
            None => {
                let sum: f64 = floats.iter().sum();
                let min = floats.iter().copied().fold(f64::INFINITY, f64::min);
                let max = floats.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                (number(sum), number(min), number(max), sum)
            }
        };
        let (_, last, seq) = self.last.expect("a window has a reading");
        let last = match last {
            Temperature::Whole(w) => w.to_string(),
            Temperature::Quarter(q) => number(q),
        };
        format!(
            r#"{{"key":"{device}","window_start":{start},"window_end":{},"readings":{},"temperature_sum":{sum},"temperature_min":{min},"temperature_max":{max},"temperature_avg":{},"temperature_last":{last},"last_seq":{seq}}}"#,
            start + SIZE,
            self.count,
            number(sum_f / self.count as f64),
        )
    }
}

/// Per device, the lines written in order, and the late readings.
fn by_the_rules(fixture: &Fixture) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let mut lines = BTreeMap::new();
    let mut late = Vec::new();
    for (device, readings) in &fixture.by_device {
        let mut max_time: Option<i64> = None;
        let mut open: BTreeMap<i64, Expected> = BTreeMap::new();
        let mut written = Vec::new();
        for r in readings {
            let is_open = |start: i64| max_time.is_none_or(|m| m - LATENESS < start + SIZE);
            let starts: Vec<i64> = (-5..=5)
                .map(|k| (r.time / SLIDE + k) * SLIDE)
                .filter(|s| *s <= r.time && r.time < s + SIZE && is_open(*s))
                .collect();
            if starts.is_empty() {
                late.push(r.device.clone());
                continue;
            }
            for start in starts {
                let window = open.entry(start).or_default();
                window.count += 1;
                window.temperatures.push(r.temperature);
                if window.last.is_none_or(|(t, _, _)| r.time >= t) {
                    window.last = Some((r.time, r.temperature, r.seq));
                }
            }
            let m = max_time.map_or(r.time, |m| m.max(r.time));
            max_time = Some(m);
            let closed: Vec<i64> = open
                .keys()
                .copied()
                .filter(|s| m - LATENESS >= s + SIZE)
                .collect();
            for start in closed {
                if let Some(window) = open.remove(&start) {
                    written.push(window.line(device, start));
                }
            }
        }
        lines.insert(device.clone(), written);
    }
    (lines, late)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_readings_of_twenty_devices_give_exactly_the_windows_of_the_rules() {
    let log = MemoryLog::new("readings", 4);
    let fixture = fill(&log);
    log.end();
    let (expected, expected_late) = by_the_rules(&fixture);
    assert_eq!(
        expected_late,
        ["d03", "d07", "d11"],
        "only the planted readings are late"
    );
    let expected_count: usize = expected.values().map(Vec::len).sum();
    assert!(expected_count > 200, "{expected_count} windows");

    let (out, dlq) = (MemorySink::new("out"), MemorySink::new("dlq"));
    let report = run_function(&log, &out, &dlq).await;
    assert_eq!(report.events_in, 1_000 + 3 + 5);
    assert_eq!(report.dead_lettered, 3 + 5);
    assert_eq!(report.outputs, expected_count as u64);

    let mut written: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for record in out.records() {
        let line = String::from_utf8_lossy(&record.payload).into_owned();
        let parsed: Value = serde_json::from_str(&line).expect("JSON output");
        let device = parsed["key"].as_str().expect("key").to_owned();
        assert_eq!(record.key, Some(Bytes::from(device.clone())));
        assert_eq!(record.timestamp_ms, parsed["window_end"].as_i64());
        written.entry(device).or_default().push(line);
    }
    for (device, lines) in &expected {
        let got = written.remove(device).unwrap_or_default();
        assert_eq!(&got, lines, "windows of {device}");
    }
    assert!(written.is_empty(), "outputs for unknown keys: {written:?}");

    let mut late = Vec::new();
    let mut invalid = BTreeSet::new();
    for record in dlq.records() {
        let payload = String::from_utf8_lossy(&record.payload).into_owned();
        let error = record
            .headers
            .get_str(dead_letter::ERROR)
            .unwrap_or_default();
        match record.headers.get_str(dead_letter::REASON) {
            Some("late") => {
                assert!(error.contains("late event for key `"), "{error}");
                let parsed: Value = serde_json::from_str(&payload).expect("a late reading is JSON");
                assert!(parsed["seq"].as_i64() >= Some(1_000), "{payload}");
                late.push(parsed["device"].as_str().unwrap_or_default().to_owned());
            }
            Some("invalid") => {
                assert!(error.starts_with("window: "), "{error}");
                invalid.insert(payload);
            }
            other => panic!("dead letter with reason {other:?}: {payload} ({error})"),
        }
    }
    late.sort();
    assert_eq!(late, expected_late);
    assert_eq!(invalid, fixture.malformed.into_iter().collect());
}

async fn run_function(
    log: &MemoryLog,
    out: &MemorySink,
    dlq: &MemorySink,
) -> spate::engine::FunctionReport {
    let plan = plan(log, window_handler(), Ordering::Key, out, dlq);
    run_to_end(plan).await
}

#[test]
fn spate_test_runs_a_tests_block_over_the_window_handler() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("minutes.yaml"),
        r#"functions:
  - name: device-minutes
    input: {type: generate, count: 1}
    ordering: key
    handler:
      name: window
      key: /device
      time: /ts
      size: 1m
      aggregates:
        readings: count
        avg: {avg: /t}
    outputs: [{type: stdout, name: minutes}]
    dead_letter: {type: stdout}
tests:
  - name: a minute is written when its device's clock passes it
    function: device-minutes
    events:
      - input: {payload: {device: d1, ts: 1000, t: 20}}
        expect: {outputs: []}
      - input: {payload: {device: d1, ts: "1970-01-01T00:00:59.999Z", t: 21}}
        expect: {outputs: []}
      - input: {payload: {device: d2, ts: 120000, t: 5}}
        expect: {outputs: []}
      - input: {payload: {device: d1, ts: 60000, t: 30}}
        expect: {outputs: [{key: d1, payload: {key: d1, window_start: 0, window_end: 60000, readings: 2, avg: 20.5}}]}
      - input: {payload: {device: d1, ts: 30000, t: 1}}
        expect: {dead_letter: {reason: late, error_contains: "late event for key `d1`"}}
      - input: {payload: {device: d1, ts: 61000, t: "hot"}}
        expect: {dead_letter: {reason: invalid, error_contains: "`/t` must be a number"}}
  - name: each test starts with no window state
    function: device-minutes
    events:
      - input: {payload: {device: d1, ts: 1000, t: 20}}
        expect: {outputs: []}
      - input: {payload: {device: d1, ts: 60000, t: 30}}
        expect: {outputs: [{key: d1, payload: {key: d1, window_start: 0, window_end: 60000, readings: 1, avg: 20}}]}
"#,
    )
    .expect("write the pipeline");
    let output = Command::new(env!("CARGO_BIN_EXE_spate"))
        .args(["test", "minutes.yaml"])
        .current_dir(dir.path())
        .env("SPATE_LOG", "warn")
        .output()
        .expect("spate runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    assert_eq!(text.matches("ok   minutes.yaml:").count(), 8, "{text}");
    assert!(!text.contains("FAIL"), "{text}");
}
