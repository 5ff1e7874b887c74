//! Server restarts, always on a temporary cluster of the test's own
//! (`start_own`: never the shared server, never skipped): the sink loses
//! nothing; the exactly-once session survives a stop between commits and
//! in the middle of a transaction; and a COMMIT whose answer was lost while
//! the server went down is resolved after it is back — landed or not — so
//! the engine's retry commits everything exactly once.

use std::sync::Arc;
use std::time::Duration;

use spate_connector::{Record, Sink, TransactionalTarget};
use spate_postgres::{PgSink, PgSinkBuilder};
use spate_testsupport::postgres::eos::Fixture;
use spate_testsupport::postgres::fixtures::{commit_until_ok, output, put, Txn};
use spate_testsupport::postgres::proxy::{Cut, Proxy};
use spate_testsupport::postgres::{config, sink_node, start_own, Control};

mod common;
use common::Db;

/// Starts the server again after `delay`, on a blocking thread.
fn restart_after(ctl: Arc<Control>, delay: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        tokio::task::spawn_blocking(move || ctl.start())
            .await
            .unwrap();
    })
}

#[tokio::test]
async fn a_server_restart_loses_nothing() {
    let db = Db::on(start_own(), "restart").await;
    let table = db
        .table(
            "telemetry",
            "device_id text NOT NULL, ts bigint NOT NULL, \
             temperature double precision, PRIMARY KEY (device_id, ts)",
        )
        .await;
    let Db { server, client, .. } = db;
    drop(client);
    let node = sink_node(
        &[
            ("url", &server.url()),
            ("table", &table),
            ("max_backoff", "200ms"),
            ("connect_timeout", "2s"),
        ],
        &[
            ("device_id", "/device"),
            ("ts", "ts"),
            ("temperature", "/temperature"),
        ],
        &["device_id", "ts"],
    );
    let sink = PgSinkBuilder::new(config(&node)).build_pg().await.unwrap();
    let reading =
        |ts: i64| Record::from_payload(format!(r#"{{"device":"r","ts":{ts},"temperature":1.0}}"#));

    // What the engine does: retry a write until it is acknowledged.
    async fn write_until_ok(sink: &PgSink, record: Record) -> u32 {
        let mut failures = 0;
        loop {
            match sink.write(record.clone()).await {
                Ok(()) => return failures,
                Err(e) => {
                    assert!(e.is_retryable(), "{e}");
                    failures += 1;
                    assert!(failures < 300, "no recovery: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    for i in 0..100 {
        write_until_ok(&sink, reading(i)).await;
    }
    server.stop();
    let restart = restart_after(server.control(), Duration::from_millis(700));
    let mut failures = 0;
    for i in 100..200 {
        failures += write_until_ok(&sink, reading(i)).await;
    }
    restart.await.unwrap();
    assert!(failures > 0, "the stop was not noticed");
    let client = server.client().await;
    let rows: Vec<i64> = client
        .query(&format!("SELECT ts FROM {table} ORDER BY ts"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, (0..200).collect::<Vec<i64>>());
}

fn events(partition: u32, offsets: std::ops::Range<u64>) -> Vec<(u32, u64)> {
    offsets.map(|o| (partition, o)).collect()
}

fn txn_of(target: &TransactionalTarget, evs: &[(u32, u64)], next: u64) -> Txn {
    Txn {
        records: evs
            .iter()
            .map(|&(p, o)| (target.clone(), output(p, o, 1.0)))
            .collect(),
        state: vec![("telemetry/0".into(), put("d0", &format!("next={next}")))],
        positions: vec![(0, next)],
    }
}

/// Checks, on a new connection, that exactly `evs` are stored, once each,
/// with position `next` and the state the last transaction left.
async fn assert_exactly(fx: &mut Fixture, evs: &[(u32, u64)], next: u64) {
    fx.reconnect().await;
    fx.assert_rows(evs).await;
    fx.assert_offsets(&[(0, next)]).await;
    let state = fx.state().await;
    assert_eq!(state.len(), 1);
    assert_eq!(
        state[&("telemetry/0".to_owned(), "d0".into())],
        format!("next={next}").as_bytes()
    );
}

#[tokio::test]
async fn the_session_survives_a_restart_between_commits_and_mid_transaction() {
    let mut fx = Fixture::on(start_own(), "eos_restart").await;
    let (_out, target, mut session) = fx.open(&fx.url(), &[("connect_timeout", "2s")]).await;
    let first = txn_of(&target, &events(0, 0..10), 10);
    first.land(&mut *session).await;

    // Stopped while records wait in the session: the commit fails with
    // nothing written, and the engine's retries land once it is back.
    let second = txn_of(&target, &events(0, 10..20), 20);
    second.write(&mut *session).await;
    fx.server.stop();
    let restart = restart_after(fx.server.control(), Duration::from_millis(700));
    let failures = commit_until_ok(&mut *session, &second, 400).await;
    restart.await.unwrap();
    assert!(!failures.is_empty(), "the stop was not noticed");
    assert_exactly(&mut fx, &events(0, 0..20), 20).await;

    // Stopped in the middle of a transaction: blocked on a lock after it
    // moved the positions.
    let third = txn_of(&target, &events(0, 20..30), 30);
    third.write(&mut *session).await;
    let locker = fx.lock_output().await;
    let committing = third.commit_in_background(session);
    let client = fx.server.client().await;
    loop {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ctl = fx.server.control();
    tokio::task::spawn_blocking(move || ctl.stop())
        .await
        .unwrap();
    let (mut session, result) = committing.await.unwrap();
    let err = result.expect_err("the server stopped mid-transaction");
    assert!(err.is_abortable(), "{err}");
    drop(locker);
    let restart = restart_after(fx.server.control(), Duration::from_millis(300));
    session.abort().await.unwrap();
    third.write(&mut *session).await;
    commit_until_ok(&mut *session, &third, 400).await;
    restart.await.unwrap();
    assert_exactly(&mut fx, &events(0, 0..30), 30).await;
}

/// A COMMIT cut at `cut` by a proxy that then stops the server, so the
/// session cannot find out at once; new events finish meanwhile, and the
/// engine keeps retrying with the same records first and the new ones
/// after. Everything must end up stored exactly once.
async fn commit_in_doubt_across_a_restart(cut: Cut) {
    let mut fx = Fixture::on(start_own(), "eos_doubt").await;
    let proxy = Proxy::start(&fx.server.addr).await;
    let (_out, target, mut session) = fx.open(&proxy.url(), &[("connect_timeout", "2s")]).await;
    let first = txn_of(&target, &events(0, 0..5), 5);
    first.land(&mut *session).await;

    let ctl = fx.server.control();
    proxy.arm(cut, Some(Box::new(move || ctl.stop())));
    let second = txn_of(&target, &events(0, 5..10), 10);
    second.write(&mut *session).await;
    let err = second.commit(&mut *session).await.expect_err("in doubt");
    assert!(err.is_abortable(), "{err}");
    assert!(err.to_string().contains("not known yet"), "{err}");
    assert_eq!(proxy.fired(), 1);

    // The engine aborts and writes the same records again, then the
    // records of events that finished meanwhile; the server is still down.
    let mut retry = second.clone();
    let later = txn_of(&target, &events(0, 10..15), 15);
    retry.records.extend(later.records);
    retry.state.extend(later.state);
    retry.positions = later.positions;
    session.abort().await.unwrap();
    retry.write(&mut *session).await;
    let err = retry.commit(&mut *session).await.expect_err("still down");
    assert!(err.is_abortable(), "{err}");
    session.abort().await.unwrap();
    retry.write(&mut *session).await;

    let restart = restart_after(fx.server.control(), Duration::from_millis(500));
    commit_until_ok(&mut *session, &retry, 400).await;
    restart.await.unwrap();
    assert_exactly(&mut fx, &events(0, 0..15), 15).await;

    // And the session goes on normally.
    let next = txn_of(&target, &events(0, 15..16), 16);
    next.land(&mut *session).await;
    assert_exactly(&mut fx, &events(0, 0..16), 16).await;
}

#[tokio::test]
async fn a_commit_that_landed_as_the_server_stopped_is_not_written_again_after_the_restart() {
    commit_in_doubt_across_a_restart(Cut::AfterCommit).await;
}

#[tokio::test]
async fn a_commit_lost_as_the_server_stopped_is_retried_once_after_the_restart() {
    commit_in_doubt_across_a_restart(Cut::BeforeCommit).await;
}
