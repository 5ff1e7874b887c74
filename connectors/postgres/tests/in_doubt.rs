//! A `COMMIT` whose answer was lost, made on purpose by a proxy between the
//! session and the server: after the server committed (the session must
//! find out it landed, and not write it again) and before the server saw
//! it (it did not land; the engine's retry commits it once).

use spate_testsupport::postgres::eos::Fixture;
use spate_testsupport::postgres::fixtures::{commit_until_ok, dead, output, outputs, put, Txn};
use spate_testsupport::postgres::proxy::{Cut, Proxy};

#[tokio::test]
async fn a_commit_whose_answer_was_lost_after_it_landed_is_ok_and_not_written_again() {
    let fx = Fixture::new("doubt_landed").await;
    let proxy = Proxy::start(&fx.server.addr).await;
    let ((_out, out_t, mut session), dl) = fx.open_with_dead_letters(&proxy.url()).await;
    let first = Txn::stateless(outputs(&out_t, &[(0, 0, 1.0)]), vec![(0, 1)]);
    first.land(&mut *session).await;

    proxy.arm(Cut::AfterCommit, None);
    let second = Txn {
        records: vec![
            (out_t.clone(), output(0, 1, 2.0)),
            (dl.target.clone(), dead(0, 2, "panic")),
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

    let third = Txn::stateless(outputs(&out_t, &[(0, 3, 3.0)]), vec![(0, 4)]);
    third.land(&mut *session).await;

    fx.assert_rows(&[(0, 0), (0, 1), (0, 3)]).await;
    assert_eq!(fx.dead_letters().await.len(), 1);
    fx.assert_offsets(&[(0, 4)]).await;
    assert_eq!(fx.state().await.len(), 1);
    fx.drop_now().await;
}

#[tokio::test]
async fn a_commit_lost_before_the_server_saw_it_did_not_land_and_the_retry_commits_once() {
    let fx = Fixture::new("doubt_lost").await;
    let proxy = Proxy::start(&fx.server.addr).await;
    let (_out, out_t, mut session) = fx.open(&proxy.url(), &[]).await;

    proxy.arm(Cut::BeforeCommit, None);
    let txn = Txn {
        records: outputs(&out_t, &[(1, 0, 1.0), (1, 1, 2.0)]),
        state: vec![("telemetry/1".into(), put("d1", "1"))],
        positions: vec![(1, 2)],
    };
    txn.write(&mut *session).await;
    let err = txn.commit(&mut *session).await.expect_err("not landed");
    assert!(err.is_abortable(), "{err}");
    assert!(err.to_string().contains("did not land"), "{err}");
    assert_eq!(proxy.fired(), 1);
    assert_eq!(fx.rows().await, vec![]);
    assert!(fx.offsets().await.is_empty());

    session.abort().await.unwrap();
    txn.write(&mut *session).await;
    let failures = commit_until_ok(&mut *session, &txn, 5).await;
    assert!(failures.is_empty(), "{failures:?}");
    fx.assert_rows(&[(1, 0), (1, 1)]).await;
    fx.assert_offsets(&[(1, 2)]).await;
    assert_eq!(fx.state().await.len(), 1);
    fx.drop_now().await;
}
