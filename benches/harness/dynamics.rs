//! Scenarios 4 (backpressure) and 5 (scaling after a step in input rate),
//! spate alone on Tansu, input written live by the harness.
//!
//! 4. Input at a steady rate (1 KB records, 4 partitions) for the slow
//!    phase; the handler (`bench-sleep`, 20 ms, `ordering: partition`, so 4
//!    at a time: 200 events/s) is 10× slower than the input until the slow
//!    phase ends, then a pass-through, so the backlog drains. The
//!    contender's RSS is sampled throughout; checked: every record's output
//!    arrived (nothing lost), every offset committed.
//! 5. `ordering: key` (1,000 keys, 4 partitions), handler awaiting 5 ms,
//!    `concurrency: {min: 1, max: 256}`; input at a low rate, then a step to
//!    a high one. The harness scrapes `spate_handler_concurrency` from
//!    spate's metrics endpoint and computes lag (records written − distinct
//!    outputs seen) every 200 ms. Reported: seconds from the step until the
//!    concurrency stays within ±20 % (at least ±2) of its final level (the
//!    median of the step phase's last 5 s), and until the lag peaks (after
//!    which it stops growing). Checked like scenario 4.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::kafka::{self, Checker, Pacer};
use super::kafka_cases::{sleep_report, spate_pipeline, Names, SpateKafka};
use super::proc::Contender;
use super::report::{Row, Run};
use super::tally::{self, median, quantile_ms, Tally};
use super::{run_rounds, wait_progress, Case, Ctx};
use crate::kafka_common::Tansu;
use spate_testsupport::process::free_port;

const PARTITIONS: i32 = 4;

/// One live-input run: writes `phases` (count, rate) one after the other
/// while `sample` is called every 200 ms with (seconds since start,
/// records written, the tally); then waits for every output and commit.
struct Live<'a> {
    slug: &'a str,
    size: usize,
    phases: Vec<(u64, f64)>,
    spate: SpateKafka<'a>,
    env: Vec<(String, String)>,
}

struct LiveOutcome {
    run: Run,
    start: Instant,
    samples: Vec<super::proc::ProcSample>,
    /// (seconds since the input started, probe value, written, distinct
    /// outputs seen).
    series: Vec<(f64, f64, u64, usize)>,
    log: String,
}

/// `spate_handler_concurrency` from a metrics endpoint.
fn scrape_concurrency(address: &str) -> Option<f64> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.lines()
        .find(|l| l.starts_with("spate_handler_concurrency"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

fn live_run(
    ctx: &Ctx,
    broker: &Tansu,
    live: &Live,
    probe: &dyn Fn() -> f64,
) -> Result<LiveOutcome, String> {
    let names = Names::new(live.slug);
    broker.create_topic(&names.input, PARTITIONS);
    broker.create_topic(&names.output, 1);
    broker.create_topic(&names.dead, 1);
    let total: u64 = live.phases.iter().map(|(count, _)| count).sum();
    let tally = Tally::shared(total as usize, 0, &[total as usize]);
    let checker = Checker::start(broker, &names.output, tally.clone());
    let path = spate_pipeline(ctx, broker, &names, &live.spate);
    let mut command = ctx.child(&["spate", &path.display().to_string()]);
    command.envs(live.env.iter().map(|(k, v)| (k, v)));
    let log = ctx.file(&format!("{}.log", names.group));
    let mut contender = Contender::spawn(live.slug, command, &log);
    // Let the group join before the clock starts (a few seconds on Tansu).
    std::thread::sleep(Duration::from_millis(
        u64::from(ctx.config.session_ms) / 2 + 1_500,
    ));
    contender.assert_alive();
    let pacer = Pacer::new(broker, &names.input, PARTITIONS, 1_000, live.size);
    let written = Arc::new(AtomicU64::new(0));
    let writing = Arc::new(AtomicBool::new(true));
    let start = Instant::now();
    let writer = {
        let (written, writing) = (written.clone(), writing.clone());
        let phases = live.phases.clone();
        std::thread::spawn(move || {
            let mut first = 0;
            for (count, rate) in phases {
                pacer.run(first, count, rate, &written);
                first += count;
            }
            writing.store(false, Ordering::SeqCst);
        })
    };
    let mut series = Vec::new();
    let unique_now = || tally.lock().expect("tally").unique;
    while writing.load(Ordering::SeqCst) {
        contender.assert_alive();
        let seen = unique_now();
        let value = probe();
        series.push((
            start.elapsed().as_secs_f64(),
            value,
            written.load(Ordering::SeqCst),
            seen,
        ));
        std::thread::sleep(Duration::from_millis(200));
    }
    writer.join().map_err(|_| "writer panicked".to_owned())?;
    wait_progress(
        live.slug,
        Duration::from_secs(30),
        &unique_now,
        &|| unique_now() >= total as usize,
        &mut || contender.assert_alive(),
    )?;
    let committed = kafka::await_commits(
        broker,
        &names.group,
        &names.input,
        PARTITIONS,
        total as i64,
        Duration::from_secs(20),
    );
    let stopped = contender.stop(Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    checker.stop();
    kafka::delete_topics(broker, &[&names.input, &names.output, &names.dead]);
    let tally = tally.lock().expect("tally");
    if committed < total as i64 {
        return Err(format!(
            "{}: only {committed} of {total} offsets committed",
            live.slug
        ));
    }
    let first = tally.first.ok_or("no output")?;
    let done = tally.last_new.ok_or("no output")?;
    let run = Run {
        rate: total as f64 / done.duration_since(first).as_secs_f64().max(1e-3),
        p50_ms: quantile_ms(&tally.latencies_us, 0.5),
        p99_ms: quantile_ms(&tally.latencies_us, 0.99),
        cpu_s: stopped.cpu_between(first, done),
        events: total,
        rss_mib: stopped.peak_rss_mib(),
        duplicates: tally.duplicates,
        ..Default::default()
    };
    Ok(LiveOutcome {
        run,
        start,
        samples: stopped.samples.clone(),
        series,
        log: stopped.log,
    })
}

/// Scenario 4: backpressure.
pub fn scenario_4(ctx: &Ctx, broker: &Tansu) -> Vec<Row> {
    let (secs, rate) = ctx.config.backpressure;
    let mut row = Row::new(
        &format!("4 backpressure: input {rate:.0}/s of 1 KB for {secs} s, handler 10× slower"),
        "spate",
        "at-least-once, ordering partition",
    );
    row.bound = None;
    let mut cases: Vec<Case> = vec![(
        row,
        Box::new(move |_round| {
            let until = tally::now_us() + (secs * 1_000_000) + 4_000_000;
            let live = Live {
                slug: "s4",
                size: 1024,
                phases: vec![(secs * rate as u64, rate)],
                spate: SpateKafka {
                    delivery: "at_least_once",
                    ordering: "partition",
                    handler: "bench-sleep",
                    concurrency: (1, 64),
                    in_flight: 1_000,
                    metrics: "off",
                },
                env: vec![
                    ("SPATE_BENCH_SLEEP_US".into(), "20000".into()),
                    ("SPATE_BENCH_SLEEP_UNTIL_US".into(), until.to_string()),
                ],
            };
            let outcome = live_run(ctx, broker, &live, &|| 0.0)?;
            let mut run = outcome.run;
            let slow_end = outcome.start + Duration::from_secs(secs);
            // RSS over the slow phase, one point a second.
            let rss: Vec<(f64, f64)> = outcome
                .samples
                .iter()
                .filter(|s| s.at >= outcome.start)
                .map(|s| {
                    (
                        s.at.duration_since(outcome.start).as_secs_f64(),
                        s.rss_kib as f64 / 1024.0,
                    )
                })
                .collect();
            let at = |t: f64| {
                rss.iter()
                    .find(|(s, _)| *s >= t)
                    .map_or(f64::NAN, |(_, v)| *v)
            };
            let slow_max = outcome
                .samples
                .iter()
                .filter(|s| s.at <= slow_end)
                .map(|s| s.rss_kib as f64 / 1024.0)
                .fold(0.0, f64::max);
            run.extra = vec![
                ("rss_mib_at_10s".into(), at(10.0)),
                ("rss_mib_at_slow_end".into(), at(secs as f64 - 0.5)),
                ("rss_mib_max_slow_phase".into(), slow_max),
            ];
            let backlog_end = outcome
                .series
                .iter()
                .rev()
                .find(|(t, ..)| *t <= secs as f64)
                .map_or(0, |(_, _, w, s)| w.saturating_sub(*s as u64));
            run.extra
                .push(("backlog_at_slow_end".into(), backlog_end as f64));
            run.series = outcome
                .series
                .iter()
                .map(|(t, _, written, seen)| {
                    [*t, at(*t), written.saturating_sub(*seen as u64) as f64]
                })
                .collect();
            if let Some((calls, mean_us)) = sleep_report(&outcome.log) {
                run.note = format!("{calls} slow calls, mean {mean_us} µs");
            }
            Ok(run)
        }),
    )];
    run_rounds(&mut cases, ctx.config.repeat);
    cases.into_iter().map(|(row, _)| row).collect()
}

/// Scenario 5: a step in input rate.
pub fn scenario_5(ctx: &Ctx, broker: &Tansu) -> Vec<Row> {
    let (before, after, low, high) = ctx.config.step;
    let row = Row::new(
        &format!("5 scaling: step {low:.0}/s → {high:.0}/s, handler 5 ms"),
        "spate",
        "at-least-once, ordering key",
    );
    let mut cases: Vec<Case> = vec![(
        row,
        Box::new(move |_round| {
            let port = free_port();
            let address = format!("127.0.0.1:{port}");
            let live = Live {
                slug: "s5",
                size: 128,
                phases: vec![(before * low as u64, low), (after * high as u64, high)],
                spate: SpateKafka {
                    delivery: "at_least_once",
                    ordering: "key",
                    handler: "bench-sleep",
                    concurrency: (1, 256),
                    in_flight: 10_000,
                    metrics: &address,
                },
                env: vec![("SPATE_BENCH_SLEEP_US".into(), "5000".into())],
            };
            let outcome = live_run(ctx, broker, &live, &|| {
                scrape_concurrency(&address).unwrap_or(f64::NAN)
            })?;
            Ok(settle(outcome, before as f64, (before + after) as f64))
        }),
    )];
    run_rounds(&mut cases, ctx.config.repeat);
    cases.into_iter().map(|(row, _)| row).collect()
}

/// Settle times of a step run; see the module docs.
fn settle(outcome: LiveOutcome, step: f64, end: f64) -> Run {
    let mut run = outcome.run;
    let points: Vec<(f64, f64, f64)> = outcome
        .series
        .iter()
        .map(|(t, c, w, s)| (*t, *c, w.saturating_sub(*s as u64) as f64))
        .collect();
    let in_step: Vec<&(f64, f64, f64)> = points
        .iter()
        .filter(|(t, c, _)| *t >= step && *t <= end && c.is_finite())
        .collect();
    let last: Vec<f64> = in_step
        .iter()
        .filter(|(t, ..)| *t >= end - 5.0)
        .map(|(_, c, _)| *c)
        .collect();
    let before: Vec<f64> = points
        .iter()
        .filter(|(t, c, _)| *t >= step - 3.0 && *t < step && c.is_finite())
        .map(|(_, c, _)| *c)
        .collect();
    let level = median(&last);
    let tolerance = (level * 0.2).max(2.0);
    // The first moment after which every sample stays within tolerance.
    let settled = in_step
        .iter()
        .rposition(|(_, c, _)| (c - level).abs() > tolerance)
        .map_or(Some(step), |i| in_step.get(i + 1).map(|(t, ..)| *t));
    let peak = in_step
        .iter()
        .copied()
        .fold(None::<(f64, f64, f64)>, |best, p| match best {
            Some(b) if b.2 >= p.2 => Some(b),
            _ => Some(*p),
        });
    run.extra = vec![
        ("concurrency_before_step".into(), median(&before)),
        ("concurrency_final".into(), level),
        (
            "concurrency_settle_s".into(),
            settled.map_or(f64::NAN, |t| t - step),
        ),
        (
            "lag_stops_growing_s".into(),
            peak.map_or(f64::NAN, |p| p.0 - step),
        ),
        ("lag_peak_events".into(), peak.map_or(f64::NAN, |p| p.2)),
    ];
    run.series = points.iter().map(|(t, c, l)| [*t, *c, *l]).collect();
    run.note = format!(
        "concurrency {:.0} → {:.0}, settled {:.1} s after the step; lag peaked at {:.0} events {:.1} s after the step",
        median(&before),
        level,
        run.extra("concurrency_settle_s").unwrap_or(f64::NAN),
        run.extra("lag_peak_events").unwrap_or(f64::NAN),
        run.extra("lag_stops_growing_s").unwrap_or(f64::NAN),
    );
    run
}
