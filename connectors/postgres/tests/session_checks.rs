//! What an exactly-once session refuses, and says why: targets of another
//! kind, another database or a mapping no sink built; an offsets table of
//! another shape.

use spate_connector::{Sink, SinkError, TransactionalTarget};
use spate_testsupport::postgres::eos::Fixture;
use spate_testsupport::postgres::fixtures::owner;

#[tokio::test]
async fn accepts_refuses_other_kinds_databases_and_unknown_mappings() {
    let fx = Fixture::new("eos_accepts").await;
    let ((_out, out_t, session), dl) = fx.open_with_dead_letters(&fx.url()).await;
    session.accepts(&out_t).unwrap();
    session.accepts(&dl.target).unwrap();

    let kafka = TransactionalTarget {
        kind: "kafka",
        cluster: "broker:9092".into(),
        destination: "telemetry".into(),
    };
    let why = session.accepts(&kafka).unwrap_err();
    assert!(why.contains("`kafka` sink"), "{why}");

    let elsewhere = TransactionalTarget {
        cluster: "db.example:5432/metrics".into(),
        ..out_t.clone()
    };
    let why = session.accepts(&elsewhere).unwrap_err();
    assert!(
        why.contains("is in database db.example:5432/metrics")
            && why.contains("one transaction covers one database"),
        "{why}"
    );

    // The same table mapped differently, by a sink never built here.
    let unknown = TransactionalTarget {
        destination: format!("{}(device_id=/dev, ts)", fx.telemetry),
        ..out_t.clone()
    };
    let why = session.accepts(&unknown).unwrap_err();
    assert!(
        why.contains("no postgres sink mapping") && why.contains(&out_t.destination),
        "{why}"
    );
    fx.drop_now().await;
}

#[tokio::test]
async fn an_offsets_table_of_another_shape_is_refused_at_begin() {
    let fx = Fixture::new("eos_shape").await;
    fx.client
        .batch_execute(&format!(
            "CREATE TABLE {0}.spate_offsets (pipeline text, function text, source text, \
             partition bigint, next_offset bigint, PRIMARY KEY (pipeline, function, source, partition))",
            fx.schema.name
        ))
        .await
        .unwrap();
    let out = fx.out_sink(&fx.url(), &[]).await;
    match out.begin_exactly_once(&owner()).await {
        Err(SinkError::Rejected { message, .. }) => assert!(
            message.contains("its column `partition` is bigint, spate stores text there"),
            "{message}"
        ),
        Err(other) => panic!("expected Rejected, got {other}"),
        Ok(_) => panic!("a session opened on an offsets table of another shape"),
    }
    fx.drop_now().await;
}
