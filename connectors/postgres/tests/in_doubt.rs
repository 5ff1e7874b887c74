//! A `COMMIT` whose answer was lost, made on purpose by a proxy between the
//! session and the server: after the server committed (the session must
//! find out it landed, and not write it again) and before the server saw
//! it (it did not land; the engine's retry commits it once).

mod common;

use common::fixtures::{
    commit_until_ok, dead, dead_letter_rows, eos_sink, eos_tables, expected_rows, output, owner,
    put, store_tables, stored_map, telemetry_rows, Txn, DLQ_COLUMNS, TELEMETRY_COLUMNS,
};
use common::proxy::{Cut, Proxy};
use common::{server, Schema};
use spate_connector::Sink;
use spate_postgres::{load_offsets, load_stored_state};

#[tokio::test]
async fn a_commit_whose_answer_was_lost_after_it_landed_is_ok_and_not_written_again() {
    let server = server();
    let client = server.client().await;
    let schema = Schema::create(&client, "doubt_landed").await;
    let (telemetry, dlq) = eos_tables(&client, &schema).await;
    let proxy = Proxy::start(&server.addr).await;
    let out = eos_sink(&proxy.url(), &schema, &telemetry, TELEMETRY_COLUMNS, &[]).await;
    let dl = eos_sink(&proxy.url(), &schema, &dlq, DLQ_COLUMNS, &[]).await;
    let (out_t, dl_t) = (
        out.transactional_target().unwrap(),
        dl.transactional_target().unwrap(),
    );
    let mut session = out.begin_exactly_once(&owner()).await.unwrap();
    let first = Txn {
        records: vec![(out_t.clone(), output(0, 0, 1.0))],
        state: vec![],
        positions: vec![(0, 1)],
    };
    first.write(&mut *session).await;
    first.commit(&mut *session).await.unwrap();

    proxy.arm(Cut::AfterCommit, None);
    let second = Txn {
        records: vec![
            (out_t.clone(), output(0, 1, 2.0)),
            (dl_t.clone(), dead(0, 2, "panic")),
        ],
        state: vec![("telemetry/0".into(), put("d0", "2"))],
        positions: vec![(0, 3)],
    };
    second.write(&mut *session).await;
    second
        .commit(&mut *session)
        .await
        .expect("the session finds out the lost COMMIT landed");
    assert_eq!(proxy.fired(), 1, "the COMMIT's answer was cut");

    let third = Txn {
        records: vec![(out_t.clone(), output(0, 3, 3.0))],
        state: vec![],
        positions: vec![(0, 4)],
    };
    third.write(&mut *session).await;
    third.commit(&mut *session).await.unwrap();

    let (offsets, state) = store_tables(&schema);
    assert_eq!(
        telemetry_rows(&client, &telemetry).await,
        expected_rows(&[(0, 0), (0, 1), (0, 3)])
    );
    assert_eq!(dead_letter_rows(&client, &dlq).await.len(), 1);
    assert_eq!(
        load_offsets(&client, &offsets, &owner()).await.unwrap(),
        stored_map(&[(0, 4)])
    );
    assert_eq!(
        load_stored_state(&client, &state, &owner())
            .await
            .unwrap()
            .len(),
        1
    );
    schema.drop_now(&client).await;
}

#[tokio::test]
async fn a_commit_lost_before_the_server_saw_it_did_not_land_and_the_retry_commits_once() {
    let server = server();
    let client = server.client().await;
    let schema = Schema::create(&client, "doubt_lost").await;
    let (telemetry, _) = eos_tables(&client, &schema).await;
    let proxy = Proxy::start(&server.addr).await;
    let out = eos_sink(&proxy.url(), &schema, &telemetry, TELEMETRY_COLUMNS, &[]).await;
    let out_t = out.transactional_target().unwrap();
    let mut session = out.begin_exactly_once(&owner()).await.unwrap();

    proxy.arm(Cut::BeforeCommit, None);
    let txn = Txn {
        records: vec![
            (out_t.clone(), output(1, 0, 1.0)),
            (out_t.clone(), output(1, 1, 2.0)),
        ],
        state: vec![("telemetry/1".into(), put("d1", "1"))],
        positions: vec![(1, 2)],
    };
    txn.write(&mut *session).await;
    let err = txn.commit(&mut *session).await.expect_err("not landed");
    assert!(err.is_abortable(), "{err}");
    assert!(err.to_string().contains("did not land"), "{err}");
    assert_eq!(proxy.fired(), 1);
    let (offsets, state) = store_tables(&schema);
    assert_eq!(telemetry_rows(&client, &telemetry).await, vec![]);
    assert!(load_offsets(&client, &offsets, &owner())
        .await
        .unwrap()
        .is_empty());

    session.abort().await.unwrap();
    txn.write(&mut *session).await;
    let failures = commit_until_ok(&mut *session, &txn, 5).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        telemetry_rows(&client, &telemetry).await,
        expected_rows(&[(1, 0), (1, 1)])
    );
    assert_eq!(
        load_offsets(&client, &offsets, &owner()).await.unwrap(),
        stored_map(&[(1, 2)])
    );
    assert_eq!(
        load_stored_state(&client, &state, &owner())
            .await
            .unwrap()
            .len(),
        1
    );
    schema.drop_now(&client).await;
}
