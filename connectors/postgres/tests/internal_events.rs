//! The `postgres` sink counts its own happenings through the contract's
//! internal events: against a real server, an exactly-once commit the
//! server refuses (a CHECK constraint) is a commit failure, and the commit
//! that lands once the constraint is gone records its latency.

use spate_connector::internal_events::names;
use spate_testsupport::metrics::Totals;
use spate_testsupport::postgres::eos::Fixture;
use spate_testsupport::postgres::fixtures::{output, Txn};

const POSTGRES: &[(&str, &str)] = &[("connector", "postgres")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_commit_is_counted_and_a_landed_one_timed() {
    let mut totals = Totals::install();

    let fx = Fixture::new("eos_events").await;
    let ((_out, out_t, mut session), _dl) = fx.open_with_dead_letters(&fx.url()).await;
    let txn = Txn {
        // 5000 is refused by the table's CHECK constraint `not_too_hot`.
        records: vec![(out_t.clone(), output(0, 0, 5000.0))],
        positions: vec![(0, 1)],
        ..Txn::default()
    };
    txn.write(&mut *session).await;
    txn.commit(&mut *session).await.expect_err("refused");
    assert_eq!(totals.get(names::COMMIT_ERRORS, POSTGRES), Some(1));
    assert_eq!(totals.get(names::COMMIT_DURATION, POSTGRES), None);

    let drop = format!("ALTER TABLE {} DROP CONSTRAINT not_too_hot", fx.telemetry);
    fx.client
        .batch_execute(&drop)
        .await
        .expect("constraint dropped");
    session.abort().await.expect("abort");
    txn.write(&mut *session).await;
    txn.commit(&mut *session).await.expect("commit lands");
    assert_eq!(totals.get(names::COMMIT_DURATION, POSTGRES), Some(1));
    fx.drop_now().await;
}
