//! Helpers of the IoT end-to-end tests and bench: a Mosquitto of the test's
//! own, simulated devices and their readings, the aggregates computed
//! independently of spate, and what `pipelines/iot-telemetry.yaml` stored
//! in PostgreSQL.
//!
//! Guarantees: the broker is always one of the test's own (on a free port,
//! stopped on drop): a 10,000 reading burst needs a session queue larger
//! than Mosquitto's default of 1,000 (beyond which the broker itself drops
//! QoS 1 messages of a slow subscriber), and no in-flight window (see
//! [`broker`]). PostgreSQL is the shared server when one answers (each test
//! in a schema of its own, chosen through the connection's `search_path`),
//! or a temporary cluster.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, MqttOptions, Packet, QoS};

use crate::mqtt::{incoming, start_with, Settings};
pub use crate::postgres as pg;

/// The first reading's time: a minute boundary (2024-12-06T16:00:00Z).
pub const T0: i64 = 1_733_500_800_000;

pub use crate::mqtt::Broker;

/// Starts Mosquitto with no limit on messages in flight per client (0) and
/// a session queue of 10 million. With a limit, Mosquitto 2.0 queues what
/// arrives while a subscriber's window is full and may send newer messages
/// of a topic before those queued ones — out of the order the
/// `sequence`-based positions rely on (spate then dead-letters the
/// overtaken readings as out of sequence).
pub fn broker() -> Broker {
    broker_with_inflight(0)
}

/// Starts Mosquitto with `inflight` messages in flight per client and a
/// session queue of 10 million.
pub fn broker_with_inflight(inflight: u32) -> Broker {
    start_with(Settings {
        inflight,
        max_queued: Some(10_000_000),
        persistent: false,
    })
}

/// Starts Mosquitto as [`broker`] does, but keeping its sessions on disk
/// across a [`Broker::restart`].
pub fn broker_persistent() -> Broker {
    start_with(Settings {
        inflight: 0,
        max_queued: Some(10_000_000),
        persistent: true,
    })
}

/// Publishes readings to the broker on `port` in order at QoS 1, at most
/// `per_second` (0: as fast as the broker acknowledges), waiting for every
/// PUBACK.
pub async fn publish(port: u16, readings: &[Reading], per_second: u32) {
    {
        let mut options = MqttOptions::new(pg::unique("devices"), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_inflight(100);
        let (client, mut events) = AsyncClient::new(options, 256);
        let total = readings.len();
        let acks = tokio::spawn(async move {
            let mut acked = 0;
            while acked < total {
                if let Packet::PubAck(_) = incoming(events.poll().await) {
                    acked += 1;
                }
            }
            events
        });
        let started = Instant::now();
        for (n, reading) in readings.iter().enumerate() {
            if per_second > 0 {
                let due = started + Duration::from_secs_f64(n as f64 / f64::from(per_second));
                tokio::time::sleep_until(due.into()).await;
            }
            client
                .publish(
                    reading.topic(),
                    QoS::AtLeastOnce,
                    false,
                    reading.payload.clone().into_bytes(),
                )
                .await
                .expect("publish requested");
        }
        let mut events = tokio::time::timeout(Duration::from_secs(60), acks)
            .await
            .expect("every reading acknowledged in time")
            .expect("ack task");
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), events.poll()).await;
    }
}

/// What a reading is meant to come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Counted in its device's minute.
    Counted,
    /// Dead-lettered as `late`.
    Late,
    /// Dead-lettered as `invalid` (a temperature that is not a number).
    Invalid,
    /// Dead-lettered as `decode-error` (not JSON: no sequence).
    Garbage,
}

/// One published reading.
#[derive(Debug, Clone)]
pub struct Reading {
    /// Device id (topic level 2).
    pub device: String,
    /// Its `seq` (`None` for garbage).
    pub seq: Option<u64>,
    /// Event time, epoch ms.
    pub ts: i64,
    /// Temperature (quarter degrees: exact in binary, so sums are exact).
    pub temperature: f64,
    /// The payload as published.
    pub payload: String,
    /// What it should come to.
    pub fate: Fate,
}

impl Reading {
    /// `devices/<device>/telemetry`.
    pub fn topic(&self) -> String {
        format!("devices/{}/telemetry", self.device)
    }
}

/// Readings of `devices` devices, `per_device` counted ones each, in
/// publish order (devices interleaved). Every `late_every`-th device sends
/// one late reading after its 60th, every `invalid_every`-th one reading
/// whose temperature is text, and with `garbage` the first two devices one
/// payload that is not JSON.
pub fn readings(
    devices: usize,
    per_device: usize,
    late_every: usize,
    invalid_every: usize,
    garbage: bool,
) -> Vec<Reading> {
    let mut seqs = vec![0u64; devices];
    let mut out = Vec::new();
    for n in 0..per_device {
        for d in 0..devices {
            let device = format!("d{d:03}");
            let mut push = |fate: Fate, ts: i64, temperature: f64, seqs: &mut Vec<u64>| {
                let seq = match fate {
                    Fate::Garbage => None,
                    _ => {
                        seqs[d] += 1;
                        Some(seqs[d])
                    }
                };
                let payload = match (fate, seq) {
                    (Fate::Garbage, _) => format!("<reading {d}/{n}>"),
                    (Fate::Invalid, Some(seq)) => {
                        format!(r#"{{"seq":{seq},"ts":{ts},"temperature":"hot"}}"#)
                    }
                    (_, Some(seq)) => {
                        format!(r#"{{"seq":{seq},"ts":{ts},"temperature":{temperature}}}"#)
                    }
                    (_, None) => unreachable!("only garbage has no sequence"),
                };
                out.push(Reading {
                    device: device.clone(),
                    seq,
                    ts,
                    temperature,
                    payload,
                    fate,
                });
            };
            // 3 s apart per device, staggered: 100 readings span 5 minutes.
            let ts = T0 + n as i64 * 3_000 + d as i64 * 7;
            let temperature = 15.0 + ((d * 31 + n * 17) % 80) as f64 * 0.25;
            push(Fate::Counted, ts, temperature, &mut seqs);
            if n == 60 && late_every > 0 && d % late_every == 0 {
                // Minute 0 closed at 90 s of event time; this is at 180 s.
                push(Fate::Late, T0 + 5_000, 99.0, &mut seqs);
            }
            if n == 30 && invalid_every > 0 && d % invalid_every == 1 {
                push(Fate::Invalid, ts + 1, 0.0, &mut seqs);
            }
            if n == 10 && garbage && d < 2 {
                push(Fate::Garbage, ts + 1, 0.0, &mut seqs);
            }
        }
    }
    out
}

/// One device-minute's aggregates.
#[derive(Debug, Clone, PartialEq)]
pub struct Minute {
    /// Readings counted.
    pub readings: i64,
    /// Their average temperature.
    pub avg: f64,
    /// Lowest.
    pub min: f64,
    /// Highest.
    pub max: f64,
    /// The temperature of the reading with the latest time.
    pub last: f64,
}

/// The aggregates the pipeline's rules give, computed here without spate:
/// (device, window start ms) → minute.
pub fn expected_minutes(readings: &[Reading]) -> BTreeMap<(String, i64), Minute> {
    let mut groups: BTreeMap<(String, i64), Vec<(i64, f64)>> = BTreeMap::new();
    for r in readings.iter().filter(|r| r.fate == Fate::Counted) {
        let start = r.ts - r.ts.rem_euclid(60_000);
        groups
            .entry((r.device.clone(), start))
            .or_default()
            .push((r.ts, r.temperature));
    }
    groups
        .into_iter()
        .map(|(key, values)| {
            let sum: f64 = values.iter().map(|(_, t)| t).sum();
            let last = values
                .iter()
                .max_by_key(|(ts, _)| *ts)
                .map_or(f64::NAN, |(_, t)| *t);
            let minute = Minute {
                readings: values.len() as i64,
                avg: sum / values.len() as f64,
                min: values.iter().map(|(_, t)| *t).fold(f64::INFINITY, f64::min),
                max: values
                    .iter()
                    .map(|(_, t)| *t)
                    .fold(f64::NEG_INFINITY, f64::max),
                last,
            };
            (key, minute)
        })
        .collect()
}

/// Dead letters expected per reason.
pub fn expected_dead_letters(readings: &[Reading]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for r in readings {
        let reason = match r.fate {
            Fate::Counted => continue,
            Fate::Late => "late",
            Fate::Invalid => "invalid",
            Fate::Garbage => "decode-error",
        };
        *out.entry(reason.to_owned()).or_insert(0) += 1;
    }
    out
}

/// The position each topic should end at: its last sequence + 1.
pub fn expected_positions(readings: &[Reading]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for r in readings {
        if let Some(seq) = r.seq {
            let entry = out.entry(r.topic()).or_insert(0);
            *entry = (*entry).max(seq as i64 + 1);
        }
    }
    out
}

/// A schema holding the pipeline's tables (`pipelines/sql/iot-telemetry.sql`).
pub async fn prepare(client: &tokio_postgres::Client, prefix: &str) -> pg::Schema {
    let schema = pg::Schema::create(client, prefix).await;
    let ddl = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../pipelines/sql/iot-telemetry.sql"
    ))
    .expect("the pipeline's SQL");
    client
        .batch_execute(&format!("SET search_path TO {}; {ddl}", schema.name))
        .await
        .expect("tables created");
    client
        .batch_execute("SET search_path TO DEFAULT")
        .await
        .expect("search path reset");
    schema
}

/// The pipeline's `PG_URL` for a server and schema.
pub fn pg_url(server: &pg::Server, schema: &pg::Schema) -> String {
    format!(
        "{}?options=-c%20search_path%3D{}",
        server.url(),
        schema.name
    )
}

/// What spate stored: minutes, dead letters per reason, positions.
pub struct Stored {
    /// (device, window start ms) → minute.
    pub minutes: BTreeMap<(String, i64), Minute>,
    /// Reason → count.
    pub dead_letters: BTreeMap<String, i64>,
    /// Topic → next sequence.
    pub positions: BTreeMap<String, i64>,
}

impl Stored {
    /// Readings counted in all minutes.
    pub fn counted(&self) -> i64 {
        self.minutes.values().map(|m| m.readings).sum()
    }

    /// Dead letters of every reason.
    pub fn dead(&self) -> i64 {
        self.dead_letters.values().sum()
    }
}

/// Reads what the pipeline stored in `schema`.
pub async fn stored(client: &tokio_postgres::Client, schema: &str) -> Stored {
    let rows = client
        .query(
            &format!(
                "SELECT device_id, (extract(epoch FROM window_start) * 1000)::bigint, readings, \
                 temperature_avg, temperature_min, temperature_max, temperature_last \
                 FROM {schema}.telemetry_minutes"
            ),
            &[],
        )
        .await
        .expect("minutes");
    let minutes = rows
        .iter()
        .map(|r| {
            (
                (r.get::<_, String>(0), r.get::<_, i64>(1)),
                Minute {
                    readings: r.get(2),
                    avg: r.get(3),
                    min: r.get(4),
                    max: r.get(5),
                    last: r.get(6),
                },
            )
        })
        .collect();
    let dead_letters = client
        .query(
            &format!(
                "SELECT reason, count(*) FROM {schema}.telemetry_dead_letters GROUP BY reason"
            ),
            &[],
        )
        .await
        .expect("dead letters")
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect();
    let positions = client
        .query(
            &format!(
                "SELECT partition, next_offset FROM {schema}.spate_offsets \
                 WHERE pipeline = 'iot-telemetry' AND function = 'device-minutes'"
            ),
            &[],
        )
        .await
        .map(|rows| {
            rows.iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
                .collect()
        })
        .unwrap_or_default(); // not created before spate's first start
    Stored {
        minutes,
        dead_letters,
        positions,
    }
}

/// Waits until spate stored `counted` readings and `dead` dead letters, or
/// `patience` runs out (then returns what is there).
pub async fn wait_until_stored(
    client: &tokio_postgres::Client,
    schema: &str,
    counted: i64,
    dead: i64,
    patience: Duration,
) -> Stored {
    let deadline = Instant::now() + patience;
    loop {
        let now = stored(client, schema).await;
        if (now.counted() >= counted && now.dead() >= dead) || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asserts that spate stored exactly what the readings come to.
pub fn assert_exact(stored: &Stored, readings: &[Reading]) {
    let expected = expected_minutes(readings);
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !stored.minutes.contains_key(*k))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "minutes missing: {missing:?}");
    let extra: Vec<_> = stored
        .minutes
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .take(5)
        .collect();
    assert!(extra.is_empty(), "minutes that should not exist: {extra:?}");
    for (key, want) in &expected {
        let got = &stored.minutes[key];
        assert_eq!(got, want, "minute {key:?}");
    }
    assert_eq!(
        stored.dead_letters,
        expected_dead_letters(readings),
        "dead letters per reason"
    );
    assert_eq!(
        stored.positions,
        expected_positions(readings),
        "the offsets table holds each device's last sequence"
    );
}
