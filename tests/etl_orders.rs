//! `pipelines/etl-orders.yaml` end to end, as a user runs it: the `spate`
//! binary, a real Kafka-protocol broker (Tansu) and a real PostgreSQL.
//!
//! Exactly-once into a database is fully checkable even on Tansu (which
//! shows aborted transactional records to every reader): the database is
//! the truth. Orders flow while spate is killed with SIGKILL at random
//! points and restarted; in the end `orders` holds the latest version of
//! every valid order, `orders_rejected` holds each rejected record exactly
//! once (a plain insert: a record handled twice would show twice), and the
//! offsets table holds each partition's end. `spate validate --connect`
//! names a mapping that does not fit the table at its line and column.

use spate_testsupport::iot as iot_common;
use spate_testsupport::kafka::blocking as kafka_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use iot_common::pg;
use kafka_common::Tansu;
use rand::Rng;
use spate_testsupport::spate_process::SpateProcess;

const PARTITIONS: i32 = 4;

fn pipeline() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/pipelines/etl-orders.yaml"
    ))
}

/// One produced order record.
#[derive(Debug, Clone)]
struct Order {
    id: usize,
    version: i32,
    amount_cents: i64,
    /// Rejected: a negative amount, or not JSON.
    rejected: bool,
    payload: Vec<u8>,
}

/// Version 1 of orders `0..n`, then version 2 of every 10th; every 97th
/// record has a negative amount and the 500th is not JSON.
fn orders(n: usize) -> Vec<Order> {
    let mut out = Vec::new();
    let versions = (0..n)
        .map(|id| (id, 1))
        .chain((0..n).step_by(10).map(|id| (id, 2)));
    for (index, (id, version)) in versions.enumerate() {
        let amount_cents = (id as i64 * 37 + i64::from(version) * 1_000) % 90_000 - 1;
        let negative = index % 97 == 5;
        let amount = if negative {
            -1.5
        } else {
            amount_cents as f64 / 100.0
        };
        let payload = if index == 500 {
            b"{not json".to_vec()
        } else {
            format!(
                r#"{{"order":"o-{id}","version":{version},"customer":"c-{}","amount":{amount},"currency":"EUR","lines":[{{"sku":"s","qty":{}}}],"ts":{}}}"#,
                id % 50,
                id % 5 + 1,
                1_733_500_800_000i64 + id as i64 * 1_000
            )
            .into_bytes()
        };
        out.push(Order {
            id,
            version,
            amount_cents,
            rejected: negative || index == 500,
            payload,
        });
    }
    out
}

/// Records keyed by order id, each order's versions in one partition.
fn records(orders: &[Order]) -> Vec<(i32, String, Vec<u8>)> {
    orders
        .iter()
        .map(|o| {
            (
                (o.id % PARTITIONS as usize) as i32,
                format!("o-{}", o.id),
                o.payload.clone(),
            )
        })
        .collect()
}

/// order id → (version, amount in cents) of the latest loaded version.
fn expected_orders(orders: &[Order]) -> BTreeMap<String, (i32, i64)> {
    let mut out = BTreeMap::new();
    for o in orders.iter().filter(|o| !o.rejected) {
        out.insert(format!("o-{}", o.id), (o.version, o.amount_cents));
    }
    out
}

async fn loaded_orders(
    client: &tokio_postgres::Client,
    schema: &str,
) -> BTreeMap<String, (i32, i64)> {
    client
        .query(
            &format!("SELECT order_id, version, amount_cents FROM {schema}.orders"),
            &[],
        )
        .await
        .expect("orders")
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                (r.get::<_, i32>(1), r.get::<_, i64>(2)),
            )
        })
        .collect()
}

async fn rejections(client: &tokio_postgres::Client, schema: &str) -> Vec<(i32, i64, String)> {
    client
        .query(
            &format!(
                "SELECT kafka_partition, kafka_offset, reason FROM {schema}.orders_rejected \
                 ORDER BY kafka_partition, kafka_offset"
            ),
            &[],
        )
        .await
        .expect("rejections")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

async fn positions(client: &tokio_postgres::Client, schema: &str) -> BTreeMap<String, i64> {
    client
        .query(
            &format!("SELECT partition, next_offset FROM {schema}.spate_offsets"),
            &[],
        )
        .await
        .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        .unwrap_or_default()
}

async fn prepare(client: &tokio_postgres::Client) -> pg::Schema {
    let schema = pg::Schema::create(client, "etl").await;
    let ddl = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/pipelines/sql/etl-orders.sql"
    ))
    .expect("the pipeline's SQL");
    client
        .batch_execute(&format!(
            "SET search_path TO {}; {ddl}; SET search_path TO DEFAULT",
            schema.name
        ))
        .await
        .expect("tables created");
    schema
}

/// A broker with the `orders` topic, and the pipeline's tables in a
/// schema of their own.
async fn start() -> (Tansu, pg::Server, tokio_postgres::Client, pg::Schema) {
    let tansu = tokio::task::spawn_blocking(|| {
        let tansu = Tansu::start();
        tansu.create_topic("orders", PARTITIONS);
        tansu
    })
    .await
    .expect("broker");
    let server = pg::server();
    let client = server.client().await;
    let schema = prepare(&client).await;
    (tansu, server, client, schema)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_ten_random_points_every_order_is_loaded_once() {
    let (tansu, server, client, schema) = start().await;
    let orders = orders(2_000);
    let records = records(&orders);
    let dir = tempfile::tempdir().expect("temp dir");
    let env = [
        ("KAFKA_BOOTSTRAP", tansu.bootstrap.clone()),
        ("KAFKA_GROUP", pg::unique("etl")),
        // Tansu answers a group join after half the session timeout.
        ("KAFKA_SESSION_TIMEOUT", "6s".to_owned()),
        ("PG_URL", iot_common::pg_url(&server, &schema)),
        ("SPATE_METRICS_ADDRESS", "127.0.0.1:0".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let start = || {
        SpateProcess::start(
            env!("CARGO_BIN_EXE_spate"),
            &pipeline(),
            dir.path().join("spate.log"),
            &env,
        )
    };

    // Orders arrive in 20 batches while spate is killed and restarted.
    let producing = {
        let bootstrap = tansu.bootstrap.clone();
        let records = records.clone();
        std::thread::spawn(move || {
            let producer = kafka_common::Producer::new(&bootstrap);
            for batch in records.chunks(records.len() / 20 + 1) {
                producer.produce_to("orders", batch);
                std::thread::sleep(Duration::from_millis(400));
            }
        })
    };
    let mut spate = start();
    let mut rng = rand::rng();
    for kill in 1..=10 {
        // Long enough, now and then, for a group join (3 s on Tansu).
        let wait = if kill % 3 == 0 {
            4_000
        } else {
            rng.random_range(300..2_000)
        };
        tokio::time::sleep(Duration::from_millis(wait)).await;
        spate.kill();
        let loaded = loaded_orders(&client, &schema.name).await;
        assert!(
            loaded.len() <= expected_orders(&orders).len(),
            "after kill {kill}: more orders than were sent"
        );
        spate = start();
    }
    producing.join().expect("producer");
    let expected = expected_orders(&orders);
    let rejected: usize = orders.iter().filter(|o| o.rejected).count();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let stored = positions(&client, &schema.name).await;
        let done = stored.values().sum::<i64>() == records.len() as i64;
        if done || Instant::now() > deadline {
            break;
        }
        spate.assert_running();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    spate.stop();

    assert_eq!(loaded_orders(&client, &schema.name).await, expected);
    let rejected_rows = rejections(&client, &schema.name).await;
    let distinct: BTreeSet<(i32, i64)> = rejected_rows.iter().map(|(p, o, _)| (*p, *o)).collect();
    assert_eq!(
        distinct.len(),
        rejected_rows.len(),
        "a rejection was committed twice: {rejected_rows:?}"
    );
    assert_eq!(rejected_rows.len(), rejected);
    assert!(rejected_rows
        .iter()
        .all(|(_, _, reason)| reason == "handler-error"));
    // Each partition's position is its end: every record of it.
    let mut per_partition = BTreeMap::new();
    for (partition, _, _) in &records {
        *per_partition
            .entry(format!("orders/{partition}"))
            .or_insert(0i64) += 1;
    }
    assert_eq!(positions(&client, &schema.name).await, per_partition);
    schema.drop_now(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_connect_names_a_mapping_the_table_does_not_fit() {
    // `--connect` checks the Kafka input too: its topic must exist.
    let (tansu, server, client, schema) = start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(pipeline())
        .expect("pipeline")
        .replace(
            "          item_count: /item_count",
            "          items: /item_count",
        )
        .replace("        key: [order_id]", "        key: [customer_id]");
    let bad = dir.path().join("etl-orders.yaml");
    std::fs::write(&bad, text).expect("written");
    let output = Command::new(env!("CARGO_BIN_EXE_spate"))
        .args(["validate", "--connect"])
        .arg(&bad)
        .env("PG_URL", iot_common::pg_url(&server, &schema))
        .env("KAFKA_BOOTSTRAP", &tansu.bootstrap)
        .env("SPATE_LOG", "warn")
        .output()
        .expect("spate runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let file = bad.display().to_string();
    assert!(
        stderr.contains(&format!("{file}:62:11: table orders has no column `items`")),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: did you mean `item_count`?"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}:65:15: table orders has no primary key or unique index on exactly (customer_id)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}:58:11: column `item_count` of table orders is NOT NULL without a default"
        )),
        "{stderr}"
    );
    // The example itself fits.
    let output = Command::new(env!("CARGO_BIN_EXE_spate"))
        .args(["validate", "--connect"])
        .arg(pipeline())
        .env("PG_URL", iot_common::pg_url(&server, &schema))
        .env("KAFKA_BOOTSTRAP", &tansu.bootstrap)
        .env("SPATE_LOG", "warn")
        .output()
        .expect("spate runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    schema.drop_now(&client).await;
}
