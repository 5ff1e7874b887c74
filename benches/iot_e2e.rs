//! MQTT → per-device minute aggregates → PostgreSQL, end to end on a real
//! Mosquitto and PostgreSQL: `pipelines/iot-telemetry.yaml` (exactly-once)
//! beside raw loops doing the same transport on the same broker, database
//! and readings, in the same run.
//!
//! Contenders:
//! - `raw/copy`: the floor. A rumqttc QoS 1 subscriber (acknowledging on
//!   receipt) that writes every reading as a row with `COPY … FROM STDIN`,
//!   one COPY per 100 ms or 5,000 readings. No aggregation, no dead
//!   letters, no positions: the least work that moves readings from the
//!   broker into the database.
//! - `raw/aggregate`: the same subscriber aggregating per device and minute
//!   in memory and upserting the changed minutes every 100 ms — spate's
//!   work without exactly-once (no positions or state stored, acks on
//!   receipt: a crash loses or recounts).
//! - `spate/exactly_once`: the example pipeline, unchanged, in-process
//!   (the window handler, `emit: on_update`, rows + positions + state in one
//!   transaction every 100 ms).
//!
//! Two measurements per contender, each repeated (`SPATE_BENCH_REPEAT`, 3)
//! with the median reported:
//! - **throughput**: `SPATE_BENCH_EVENTS` readings (50,000) of 100 devices
//!   published as fast as Mosquitto acknowledges; readings/s from the first
//!   publish until the database holds them all;
//! - **latency**: readings published at a steady `SPATE_BENCH_RATE` (1,000/s)
//!   for `SPATE_BENCH_SECONDS` (15 s); the latency of reading k is the time
//!   from its publish until the database holds k readings (readings are
//!   committed about in publish order), sampled every 5 ms (raw loops count
//!   their commits in-process; spate's count is polled from the table).
//!
//! Every run is verified: the database holds exactly the readings published
//! (raw/copy: the row count; the aggregates: the sum of `readings`).
//! Run: `cargo bench --bench iot_e2e`.

use spate_testsupport::bench::{env_usize, median};
use spate_testsupport::iot as iot_common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::SinkExt;
use iot_common::{pg, Reading};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Mosquitto's `max_inflight_messages` (`SPATE_BENCH_INFLIGHT`, 0: no
/// limit): how many readings the broker sends a subscriber ahead of its
/// acks. spate acknowledges at commit, the raw loops on receipt.
fn inflight() -> u32 {
    env_usize("SPATE_BENCH_INFLIGHT", 0) as u32
}

/// `n` readings of 100 devices, 3 s apart per device (all counted).
fn readings(n: usize) -> Vec<Reading> {
    iot_common::readings(100, n.div_ceil(100), 0, 0, false)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Contender {
    RawCopy,
    RawAggregate,
    Spate,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Self::RawCopy => "raw/copy",
            Self::RawAggregate => "raw/aggregate",
            Self::Spate => "spate/exactly_once",
        }
    }
}

/// How many readings the contender has committed, as it can tell.
enum Progress {
    /// Counted in-process after each commit.
    Counter(Arc<AtomicI64>),
    /// `sum(readings)` of the minutes table, polled.
    Table(String),
}

impl Progress {
    async fn committed(&self, client: &tokio_postgres::Client) -> i64 {
        match self {
            Self::Counter(count) => count.load(Ordering::Acquire),
            Self::Table(schema) => client
                .query_one(
                    &format!(
                        "SELECT coalesce(sum(readings), 0)::bigint FROM {schema}.telemetry_minutes"
                    ),
                    &[],
                )
                .await
                .map(|r| r.get(0))
                .unwrap_or(0),
        }
    }
}

/// A device-minute as the raw aggregating loop keeps it.
#[derive(Clone, Copy)]
struct MinuteAgg {
    count: i64,
    sum: f64,
    min: f64,
    max: f64,
    last: f64,
    last_ts: i64,
}

impl Default for MinuteAgg {
    fn default() -> Self {
        Self {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            last: 0.0,
            last_ts: i64::MIN,
        }
    }
}

/// (device, window start ms) → its aggregate.
type Minutes = HashMap<(String, i64), MinuteAgg>;

/// A raw subscriber: QoS 1, acknowledged on receipt, batching into the
/// database every 100 ms (or 5,000 readings).
async fn raw_loop(
    contender: Contender,
    port: u16,
    client_id: String,
    pg_url: String,
    committed: Arc<AtomicI64>,
    stop: CancellationToken,
) {
    let (db, connection) = tokio_postgres::connect(&pg_url, tokio_postgres::NoTls)
        .await
        .expect("raw loop connects to PostgreSQL");
    tokio::spawn(connection);
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_clean_session(false);
    options.set_inflight(1000);
    let (client, mut events) = AsyncClient::new(options, 10_000);
    client
        .subscribe("devices/+/telemetry", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let mut rows: Vec<(String, i64, i64, f64)> = Vec::new();
    let mut minutes: Minutes = HashMap::new();
    let mut changed: Vec<(String, i64)> = Vec::new();
    let mut pending = 0i64;
    let mut flush_at = tokio::time::Instant::now() + Duration::from_millis(100);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            event = events.poll() => {
                let Ok(MqttEvent::Incoming(Packet::Publish(publish))) = event else { continue };
                let device = publish.topic.split('/').nth(1).unwrap_or_default().to_owned();
                let value: serde_json::Value = serde_json::from_slice(&publish.payload).unwrap_or_default();
                let seq = value["seq"].as_i64().unwrap_or(0);
                let ts = value["ts"].as_i64().unwrap_or(0);
                let t = value["temperature"].as_f64().unwrap_or(0.0);
                pending += 1;
                match contender {
                    Contender::RawCopy => rows.push((device, seq, ts, t)),
                    _ => {
                        let key = (device, ts - ts.rem_euclid(60_000));
                        let m = minutes.entry(key.clone()).or_default();
                        m.count += 1;
                        m.sum += t;
                        m.min = m.min.min(t);
                        m.max = m.max.max(t);
                        if ts >= m.last_ts { m.last = t; m.last_ts = ts; }
                        changed.push(key);
                    }
                }
                if pending < 5_000 && tokio::time::Instant::now() < flush_at { continue; }
            }
            _ = tokio::time::sleep_until(flush_at) => {}
        }
        flush_at = tokio::time::Instant::now() + Duration::from_millis(100);
        if pending == 0 {
            continue;
        }
        match contender {
            Contender::RawCopy => copy_rows(&db, std::mem::take(&mut rows)).await,
            _ => upsert_minutes(&db, &minutes, std::mem::take(&mut changed)).await,
        }
        committed.fetch_add(pending, Ordering::AcqRel);
        pending = 0;
    }
}

async fn copy_rows(db: &tokio_postgres::Client, rows: Vec<(String, i64, i64, f64)>) {
    let mut text = String::with_capacity(rows.len() * 48);
    for (device, seq, ts, t) in rows {
        text.push_str(&format!("{device}\t{seq}\t{ts}\t{t}\n"));
    }
    let sink = db
        .copy_in("COPY bench_readings (device_id, seq, ts, temperature) FROM STDIN")
        .await
        .expect("COPY starts");
    futures::pin_mut!(sink);
    sink.send(Bytes::from(text)).await.expect("COPY data");
    sink.finish().await.expect("COPY ends");
}

async fn upsert_minutes(
    db: &tokio_postgres::Client,
    minutes: &Minutes,
    mut changed: Vec<(String, i64)>,
) {
    changed.sort();
    changed.dedup();
    let (mut devices, mut starts, mut counts, mut avgs, mut mins, mut maxs, mut lasts) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for key in changed {
        let m = minutes[&key];
        devices.push(key.0.clone());
        starts.push(key.1);
        counts.push(m.count);
        avgs.push(m.sum / m.count as f64);
        mins.push(m.min);
        maxs.push(m.max);
        lasts.push(m.last);
    }
    db.execute(
        "INSERT INTO telemetry_minutes (device_id, window_start, window_end, readings, \
         temperature_avg, temperature_min, temperature_max, temperature_last) \
         SELECT d, to_timestamp(s / 1000.0), to_timestamp((s + 60000) / 1000.0), c, a, mn, mx, l \
         FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::float8[], $5::float8[], $6::float8[], $7::float8[]) \
         AS u(d, s, c, a, mn, mx, l) \
         ON CONFLICT (device_id, window_start) DO UPDATE SET readings = EXCLUDED.readings, \
         temperature_avg = EXCLUDED.temperature_avg, temperature_min = EXCLUDED.temperature_min, \
         temperature_max = EXCLUDED.temperature_max, temperature_last = EXCLUDED.temperature_last",
        &[&devices, &starts, &counts, &avgs, &mins, &maxs, &lasts],
    )
    .await
    .expect("upsert");
}

/// One run: a fresh broker session and schema; returns (readings/s,
/// latencies in ms) after checking the database holds every reading.
async fn run(
    contender: Contender,
    server: &pg::Server,
    readings: &[Reading],
    per_second: u32,
) -> (f64, Vec<f64>) {
    let broker = iot_common::broker_with_inflight(inflight());
    let client = server.client().await;
    let schema = iot_common::prepare(&client, "iot_bench").await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {}.bench_readings (device_id text, seq bigint, ts bigint, temperature float8)",
            schema.name
        ))
        .await
        .expect("raw table");
    let client_id = pg::unique("iot-bench");
    broker
        .create_session(&client_id, "devices/+/telemetry")
        .await;
    let url = iot_common::pg_url(server, &schema);
    let stop = CancellationToken::new();
    let progress = match contender {
        Contender::Spate => {
            std::env::set_var("MQTT_URL", &broker.url);
            std::env::set_var("PG_URL", &url);
            std::env::set_var("MQTT_CLIENT_ID", &client_id);
            std::env::set_var("SPATE_METRICS_ADDRESS", "off");
            let runtime = spate::runtime::Runtime::new();
            let specs = runtime
                .load(&[concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/pipelines/iot-telemetry.yaml"
                )])
                .expect("the example pipeline loads");
            let shutdown = stop.clone();
            tokio::spawn(async move { runtime.run(specs, shutdown).await.expect("spate runs") });
            Progress::Table(schema.name.clone())
        }
        raw => {
            let committed = Arc::new(AtomicI64::new(0));
            tokio::spawn(raw_loop(
                raw,
                broker.port,
                client_id.clone(),
                url.clone(),
                committed.clone(),
                stop.clone(),
            ));
            Progress::Counter(committed)
        }
    };
    // Give the contender its first second to connect; timing starts at
    // the first publish.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let total = readings.len() as i64;
    let started = Instant::now();
    let port = broker.port;
    let published: Vec<Reading> = readings.to_vec();
    let publisher =
        tokio::spawn(async move { iot_common::publish(port, &published, per_second).await });
    // Sample the committed count every 5 ms.
    let mut reached: Vec<(i64, f64)> = Vec::new();
    let deadline = started + Duration::from_secs(600);
    loop {
        let now = progress.committed(&client).await;
        let at = started.elapsed().as_secs_f64();
        if reached.last().is_none_or(|(n, _)| *n < now) {
            reached.push((now, at));
        }
        if now >= total || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    publisher.await.expect("publisher");
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Verify: exactly every reading.
    let stored: i64 = match contender {
        Contender::RawCopy => client
            .query_one(
                &format!("SELECT count(*) FROM {}.bench_readings", schema.name),
                &[],
            )
            .await
            .expect("count")
            .get(0),
        _ => client
            .query_one(
                &format!(
                    "SELECT coalesce(sum(readings), 0)::bigint FROM {}.telemetry_minutes",
                    schema.name
                ),
                &[],
            )
            .await
            .expect("sum")
            .get(0),
    };
    if stored != total {
        let rows = client
            .query(
                &format!("SELECT device_id, sum(readings)::bigint FROM {}.telemetry_minutes GROUP BY 1 ORDER BY 1", schema.name),
                &[],
            )
            .await
            .expect("per device");
        let per_device: Vec<(String, i64)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .filter(|(_, n): &(String, i64)| *n != (total / 100))
            .collect();
        eprintln!("reached: {:?}", &reached[reached.len().saturating_sub(5)..]);
        eprintln!("devices off: {per_device:?}");
    }
    assert_eq!(
        stored,
        total,
        "{}: the database holds every reading exactly once",
        contender.name()
    );
    // Latency of reading k: when the count first reached k, minus when k
    // was due to be published.
    let mut latencies = Vec::with_capacity(readings.len());
    if per_second > 0 {
        let mut cursor = 0;
        for k in 1..=total {
            while reached[cursor].0 < k {
                cursor += 1;
            }
            let published_at = (k - 1) as f64 / f64::from(per_second);
            latencies.push(((reached[cursor].1 - published_at) * 1000.0).max(0.0));
        }
        latencies.sort_by(f64::total_cmp);
    }
    schema.drop_now(&client).await;
    (total as f64 / elapsed, latencies)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a listing; nothing to list.
    }
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("SPATE_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let events = env_usize("SPATE_BENCH_EVENTS", 50_000);
    let repeat = env_usize("SPATE_BENCH_REPEAT", 3);
    let rate = env_usize("SPATE_BENCH_RATE", 1_000) as u32;
    let seconds = env_usize("SPATE_BENCH_SECONDS", 15);
    let tokio = tokio::runtime::Runtime::new().expect("tokio");
    tokio.block_on(async {
        let server = pg::server();
        let burst = readings(events);
        let steady = readings(rate as usize * seconds);
        // SPATE_BENCH_CONTENDERS=spate (or raw) runs only those, to profile.
        let only = std::env::var("SPATE_BENCH_CONTENDERS").unwrap_or_default();
        let contenders: Vec<Contender> = [Contender::RawCopy, Contender::RawAggregate, Contender::Spate]
            .into_iter()
            .filter(|c| c.name().starts_with(&only))
            .collect();
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
        let mut p50s: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
        let mut p99s: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
        for round in 0..repeat {
            for (i, contender) in contenders.iter().enumerate() {
                let (throughput, _) = run(*contender, &server, &burst, 0).await;
                let (_, latencies) = run(*contender, &server, &steady, rate).await;
                let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
                eprintln!(
                    "round {round} {}: {throughput:.0} readings/s; at {rate}/s p50 {p50:.0} ms, p99 {p99:.0} ms",
                    contender.name()
                );
                rates[i].push(throughput);
                p50s[i].push(p50);
                p99s[i].push(p99);
            }
        }
        println!(
            "\nMQTT (Mosquitto, QoS 1) -> per-device minutes -> PostgreSQL {}; throughput: {events} readings of 100 devices as fast as published; latency: {rate} readings/s for {seconds} s; median of {repeat}\n",
            server.addr
        );
        println!("| contender | readings/s | / raw copy | p50 ms at {rate}/s | p99 ms at {rate}/s |");
        println!("| --- | ---: | ---: | ---: | ---: |");
        let floor = median(&mut rates[0].clone()); // the first contender's
        for (i, contender) in contenders.iter().enumerate() {
            let throughput = median(&mut rates[i]);
            println!(
                "| {} | {throughput:.0} | {:.2} | {:.0} | {:.0} |",
                contender.name(),
                throughput / floor,
                median(&mut p50s[i]),
                median(&mut p99s[i])
            );
        }
    });
}
