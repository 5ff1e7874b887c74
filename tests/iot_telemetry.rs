//! `pipelines/iot-telemetry.yaml` end to end, as a user runs it: the `spate`
//! binary, a real Mosquitto and a real PostgreSQL. 100 simulated devices
//! publish 10,000 readings; the per-device minutes in PostgreSQL must equal
//! the aggregates computed here independently, late and malformed readings
//! must end in the dead-letter table with their reasons, and the offsets
//! table must hold each device's last sequence — also when spate is killed
//! with SIGKILL at random points and restarted, and when PostgreSQL restarts
//! mid-stream.

use spate_testsupport::iot as iot_common;

use std::path::PathBuf;
use std::time::Duration;

use iot_common::{pg, Fate};
use rand::Rng;
use spate_testsupport::spate_process::SpateProcess;

/// The example pipeline itself, unchanged.
fn pipeline() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/pipelines/iot-telemetry.yaml"
    ))
}

/// The pipeline's environment for a broker, a database and a client id.
fn env(broker: &iot_common::Broker, pg_url: &str, client_id: &str) -> Vec<(String, String)> {
    vec![
        ("MQTT_URL".to_owned(), broker.url.clone()),
        ("PG_URL".to_owned(), pg_url.to_owned()),
        ("MQTT_CLIENT_ID".to_owned(), client_id.to_owned()),
        ("SPATE_METRICS_ADDRESS".to_owned(), "127.0.0.1:0".to_owned()),
    ]
}

fn start(dir: &tempfile::TempDir, env: &[(String, String)]) -> SpateProcess {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    SpateProcess::start(
        env!("CARGO_BIN_EXE_spate"),
        &pipeline(),
        dir.path().join("spate.log"),
        &env,
    )
}

/// The heavy tests share two cores with PostgreSQL and Mosquitto: one at
/// a time keeps their timing honest.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PATIENCE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_readings_of_a_hundred_devices_aggregate_exactly() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let broker = iot_common::broker();
    let server = pg::server();
    let client = server.client().await;
    let schema = iot_common::prepare(&client, "iot_exact").await;
    let client_id = pg::unique("iot-exact");
    broker
        .create_session(&client_id, "devices/+/telemetry")
        .await;
    let readings = iot_common::readings(100, 100, 10, 20, true);
    let counted = readings.iter().filter(|r| r.fate == Fate::Counted).count() as i64;
    assert_eq!(counted, 10_000);
    let dead = readings.len() as i64 - counted;

    let dir = tempfile::tempdir().expect("temp dir");
    let mut spate = start(
        &dir,
        &env(&broker, &iot_common::pg_url(&server, &schema), &client_id),
    );
    iot_common::publish(broker.port, &readings, 0).await;
    let waited =
        iot_common::wait_until_stored(&client, &schema.name, counted, dead, PATIENCE).await;
    spate.assert_running();
    spate.stop();
    assert_eq!(waited.counted(), counted, "every reading arrived in time");
    let stored = iot_common::stored(&client, &schema.name).await;
    iot_common::assert_exact(&stored, &readings);
    // Every reason is there, each with the reading as it came.
    let reasons: Vec<(String, String)> = client
        .query(
            &format!(
                "SELECT reason, convert_from(payload, 'UTF8') FROM {}.telemetry_dead_letters ORDER BY id",
                schema.name
            ),
            &[],
        )
        .await
        .expect("dead letters")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(reasons
        .iter()
        .any(|(reason, payload)| reason == "late" && payload.contains("\"temperature\":99")));
    assert!(reasons
        .iter()
        .any(|(reason, payload)| reason == "invalid" && payload.contains("\"hot\"")));
    assert!(reasons
        .iter()
        .any(|(reason, payload)| reason == "decode-error" && payload.starts_with("<reading")));
    schema.drop_now(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_a_dozen_random_points_nothing_is_lost_or_counted_twice() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let broker = iot_common::broker();
    let server = pg::server();
    let client = server.client().await;
    let schema = iot_common::prepare(&client, "iot_kill").await;
    let client_id = pg::unique("iot-kill");
    broker
        .create_session(&client_id, "devices/+/telemetry")
        .await;
    // No payload without a sequence here: such a reading cannot be told
    // from its redelivery, so its dead letter may repeat after a crash (the
    // documented limit).
    let readings = iot_common::readings(100, 100, 10, 20, false);
    let counted = readings.iter().filter(|r| r.fate == Fate::Counted).count() as i64;
    let dead = readings.len() as i64 - counted;
    let url = iot_common::pg_url(&server, &schema);
    let dir = tempfile::tempdir().expect("temp dir");
    let env = env(&broker, &url, &client_id);

    // Readings arrive over ~10 s while spate is killed and restarted.
    let publishing = {
        let readings = readings.clone();
        let port = broker.port;
        tokio::spawn(async move { iot_common::publish(port, &readings, 1_000).await })
    };
    let mut rng = rand::rng();
    let mut kills = 0;
    let mut spate = start(&dir, &env);
    while kills < 12 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1_500))).await;
        spate.kill(); // SIGKILL, wherever it is
        kills += 1;
        let now = iot_common::stored(&client, &schema.name).await;
        // Whatever is committed is consistent: never more than was sent,
        // and the offsets table never runs ahead of what is stored.
        assert!(
            now.counted() <= counted,
            "after kill {kills}: counted twice"
        );
        spate = start(&dir, &env);
    }
    publishing.await.expect("publisher");
    let stored =
        iot_common::wait_until_stored(&client, &schema.name, counted, dead, PATIENCE).await;
    spate.assert_running();
    spate.stop();
    assert_eq!(stored.counted(), counted, "after {kills} kills");
    let stored = iot_common::stored(&client, &schema.name).await;
    iot_common::assert_exact(&stored, &readings);
    schema.drop_now(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_stream_loses_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let broker = iot_common::broker();
    // Restarted by this test, so always a cluster of its own.
    let server = pg::start_own();
    let client = server.client().await;
    let schema = iot_common::prepare(&client, "iot_pg_restart").await;
    let client_id = pg::unique("iot-pg");
    broker
        .create_session(&client_id, "devices/+/telemetry")
        .await;
    let readings = iot_common::readings(50, 60, 10, 20, false);
    let counted = readings.iter().filter(|r| r.fate == Fate::Counted).count() as i64;
    let dead = readings.len() as i64 - counted;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut spate = start(
        &dir,
        &env(&broker, &iot_common::pg_url(&server, &schema), &client_id),
    );
    let publishing = {
        let readings = readings.clone();
        let port = broker.port;
        tokio::spawn(async move { iot_common::publish(port, &readings, 600).await })
    };
    // Let some commit, then take the database away for two seconds.
    let partial =
        iot_common::wait_until_stored(&client, &schema.name, counted / 4, 0, PATIENCE).await;
    assert!(
        partial.counted() < counted,
        "the restart must come mid-stream"
    );
    drop(client);
    let control = server.control();
    tokio::task::spawn_blocking(move || {
        control.stop();
        std::thread::sleep(Duration::from_secs(2));
        control.start();
    })
    .await
    .expect("restart");
    publishing.await.expect("publisher");
    let client = server.client().await;
    let stored =
        iot_common::wait_until_stored(&client, &schema.name, counted, dead, PATIENCE).await;
    spate.assert_running();
    spate.stop();
    assert_eq!(stored.counted(), counted);
    let stored = iot_common::stored(&client, &schema.name).await;
    iot_common::assert_exact(&stored, &readings);
    let log = std::fs::read_to_string(dir.path().join("spate.log")).unwrap_or_default();
    assert!(
        log.contains("transaction failed") || log.contains("cannot connect"),
        "spate noticed the outage"
    );
}
