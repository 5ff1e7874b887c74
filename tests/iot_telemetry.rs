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

/// One test's world, set up in its turn: the broker, the database (with a
/// client) and a schema of the test's own, and the pipeline's environment,
/// whose client id has a persistent MQTT session on the telemetry.
struct Rig {
    _turn: tokio::sync::MutexGuard<'static, ()>,
    broker: iot_common::Broker,
    server: pg::Server,
    schema: pg::Schema,
    env: Vec<(String, String)>,
    /// Where spate logs (`spate.log`).
    dir: tempfile::TempDir,
}

impl Rig {
    /// Waits for the test's turn, then sets up on the database `server`
    /// gives, naming the schema and the client id after `name`.
    async fn new(server: fn() -> pg::Server, name: &str) -> (Rig, tokio_postgres::Client) {
        let turn = ONE_AT_A_TIME.lock().await;
        let broker = iot_common::broker();
        let server = server();
        let client = server.client().await;
        let schema = iot_common::prepare(&client, name).await;
        let client_id = pg::unique(&name.replace('_', "-"));
        broker
            .create_session(&client_id, "devices/+/telemetry")
            .await;
        let env = env(&broker, &iot_common::pg_url(&server, &schema), &client_id);
        let rig = Rig {
            _turn: turn,
            broker,
            server,
            schema,
            env,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        (rig, client)
    }

    /// Starts the pipeline.
    fn start(&self) -> SpateProcess {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        SpateProcess::start(
            env!("CARGO_BIN_EXE_spate"),
            &pipeline(),
            self.dir.path().join("spate.log"),
            &env,
        )
    }

    /// Publishes `readings` in the background, `per_second` of them a
    /// second.
    fn publishing(
        &self,
        readings: &[iot_common::Reading],
        per_second: u32,
    ) -> tokio::task::JoinHandle<()> {
        let (port, readings) = (self.broker.port, readings.to_vec());
        tokio::spawn(async move { iot_common::publish(port, &readings, per_second).await })
    }
}

/// How many of `readings` are counted, and how many dead-lettered.
fn fates(readings: &[iot_common::Reading]) -> (i64, i64) {
    let counted = readings.iter().filter(|r| r.fate == Fate::Counted).count() as i64;
    (counted, readings.len() as i64 - counted)
}

/// Waits until all of `readings` are stored in `schema`, stops `spate`
/// (which must still run), and checks that the tables hold exactly them;
/// `what` names the run in the failure.
async fn assert_all_stored(
    mut spate: SpateProcess,
    client: &tokio_postgres::Client,
    schema: &str,
    readings: &[iot_common::Reading],
    what: &str,
) {
    let (counted, dead) = fates(readings);
    let waited = iot_common::wait_until_stored(client, schema, counted, dead, PATIENCE).await;
    spate.assert_running();
    spate.stop();
    assert_eq!(waited.counted(), counted, "{what}");
    let stored = iot_common::stored(client, schema).await;
    iot_common::assert_exact(&stored, readings);
}

/// The heavy tests share two cores with PostgreSQL and Mosquitto: one at
/// a time keeps their timing honest.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PATIENCE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_readings_of_a_hundred_devices_aggregate_exactly() {
    let (rig, client) = Rig::new(pg::server, "iot_exact").await;
    let readings = iot_common::readings(100, 100, 10, 20, true);
    let (counted, _) = fates(&readings);
    assert_eq!(counted, 10_000);

    let spate = rig.start();
    iot_common::publish(rig.broker.port, &readings, 0).await;
    let arrived = "every reading arrived in time";
    assert_all_stored(spate, &client, &rig.schema.name, &readings, arrived).await;
    // Every reason is there, each with the reading as it came.
    let reasons: Vec<(String, String)> = client
        .query(
            &format!(
                "SELECT reason, convert_from(payload, 'UTF8') FROM {}.telemetry_dead_letters ORDER BY id",
                rig.schema.name
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
    rig.schema.drop_now(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_a_dozen_random_points_nothing_is_lost_or_counted_twice() {
    let (rig, client) = Rig::new(pg::server, "iot_kill").await;
    // No payload without a sequence here: such a reading cannot be told
    // from its redelivery, so its dead letter may repeat after a crash (the
    // documented limit).
    let readings = iot_common::readings(100, 100, 10, 20, false);
    let (counted, _) = fates(&readings);

    // Readings arrive over ~10 s while spate is killed and restarted.
    let publishing = rig.publishing(&readings, 1_000);
    let mut rng = rand::rng();
    let mut kills = 0;
    let mut spate = rig.start();
    while kills < 12 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1_500))).await;
        spate.kill(); // SIGKILL, wherever it is
        kills += 1;
        let now = iot_common::stored(&client, &rig.schema.name).await;
        // Whatever is committed is consistent: never more than was sent,
        // and the offsets table never runs ahead of what is stored.
        assert!(
            now.counted() <= counted,
            "after kill {kills}: counted twice"
        );
        spate = rig.start();
    }
    publishing.await.expect("publisher");
    let what = format!("after {kills} kills");
    assert_all_stored(spate, &client, &rig.schema.name, &readings, &what).await;
    rig.schema.drop_now(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_stream_loses_nothing() {
    let (rig, client) = Rig::new(pg::start_own, "iot_pg_restart").await;
    let readings = iot_common::readings(50, 60, 10, 20, false);
    let (counted, _) = fates(&readings);
    let spate = rig.start();
    let publishing = rig.publishing(&readings, 600);
    // Let some commit, then take the database away for two seconds.
    let partial =
        iot_common::wait_until_stored(&client, &rig.schema.name, counted / 4, 0, PATIENCE).await;
    assert!(
        partial.counted() < counted,
        "the restart must come mid-stream"
    );
    drop(client);
    let control = rig.server.control();
    tokio::task::spawn_blocking(move || {
        control.stop();
        std::thread::sleep(Duration::from_secs(2));
        control.start();
    })
    .await
    .expect("restart");
    publishing.await.expect("publisher");
    let client = rig.server.client().await;
    assert_all_stored(
        spate,
        &client,
        &rig.schema.name,
        &readings,
        "after the restart",
    )
    .await;
    let log = std::fs::read_to_string(rig.dir.path().join("spate.log")).unwrap_or_default();
    assert!(
        log.contains("transaction failed") || log.contains("cannot connect"),
        "spate noticed the outage"
    );
}
