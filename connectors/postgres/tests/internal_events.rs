//! The `postgres` sink counts its own happenings through the contract's
//! internal events: against a real server, an exactly-once commit the
//! server refuses (a CHECK constraint) is a commit failure, and the commit
//! that lands once the constraint is gone records its latency.

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use spate_connector::internal_events::names;
use spate_testsupport::postgres::eos::Fixture;
use spate_testsupport::postgres::fixtures::{output, Txn};

/// The `connector="postgres"` value of `metric` in a fresh snapshot: a
/// counter's count or a histogram's number of samples.
fn postgres_metric(snapshotter: &Snapshotter, metric: &str) -> Option<u64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find_map(|(key, _, _, value)| {
            let postgres = key
                .key()
                .labels()
                .any(|l| l.key() == "connector" && l.value() == "postgres");
            (postgres && key.key().name() == metric).then_some(match value {
                DebugValue::Counter(n) => n,
                DebugValue::Histogram(samples) => samples.len() as u64,
                DebugValue::Gauge(_) => 0,
            })
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_commit_is_counted_and_a_landed_one_timed() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("first recorder of this test binary");

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
    assert_eq!(postgres_metric(&snapshotter, names::COMMIT_ERRORS), Some(1));
    assert_eq!(postgres_metric(&snapshotter, names::COMMIT_DURATION), None);

    let drop = format!("ALTER TABLE {} DROP CONSTRAINT not_too_hot", fx.telemetry);
    fx.client
        .batch_execute(&drop)
        .await
        .expect("constraint dropped");
    session.abort().await.expect("abort");
    txn.write(&mut *session).await;
    txn.commit(&mut *session).await.expect("commit lands");
    assert_eq!(
        postgres_metric(&snapshotter, names::COMMIT_DURATION),
        Some(1)
    );
    fx.drop_now().await;
}
