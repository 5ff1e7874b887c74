//! The `postgres` sink against a real server: upserts, batching, mapping
//! checks with their file locations, rejected values, a server restart, and
//! the exactly-once transaction with the offsets table.

mod common;

use std::time::Duration;

use common::{config, read_config, server, sink_node, Schema};
use spate_connector::{
    CommitPosition, ConnectorFactory, Record, Sink, SinkError, TransactionSession,
};
use spate_postgres::{
    load_offsets, OffsetsKey, PgSink, PgSinkBuilder, PgTransaction, PostgresFactory, SessionTable,
    TableName,
};

fn reading(device: &str, ts: i64, temperature: f64) -> Record {
    Record::from_payload(format!(
        r#"{{"device":"{device}","ts":{ts},"temperature":{temperature}}}"#
    ))
}

async fn count(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0)
}

async fn telemetry(client: &tokio_postgres::Client, schema: &Schema, key: bool) -> String {
    let table = format!("{}.telemetry", schema.name);
    let pk = if key {
        ", PRIMARY KEY (device_id, ts)"
    } else {
        ""
    };
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (device_id text NOT NULL, ts bigint NOT NULL, \
             temperature double precision CHECK (temperature < 1000), \
             written_at timestamptz NOT NULL DEFAULT now(){pk})"
        ))
        .await
        .expect("table created");
    table
}

const COLUMNS: &[(&str, &str)] = &[
    ("device_id", "/device"),
    ("ts", "ts"),
    ("temperature", "/temperature"),
];

async fn build(url: &str, table: &str, key: &[&str], extra: &[(&str, &str)]) -> PgSink {
    let mut entries = vec![("url", url), ("table", table)];
    entries.extend_from_slice(extra);
    PgSinkBuilder::new(config(&sink_node(&entries, COLUMNS, key)))
        .build_pg()
        .await
        .expect("sink builds")
}

async fn build_error(url: &str, table: &str, columns: &[(&str, &str)], key: &[&str]) -> String {
    let node = sink_node(&[("url", url), ("table", table)], columns, key);
    match PgSinkBuilder::new(config(&node)).build_pg().await {
        Ok(_) => panic!("the sink built despite a bad mapping"),
        Err(SinkError::Rejected { message, .. }) => message,
        Err(other) => panic!("expected a mapping error, got {other:?}"),
    }
}

#[tokio::test]
async fn upserts_are_idempotent() {
    let server = server();
    let client = server.client().await;
    let schema = Schema::create(&client, "upsert").await;
    let table = telemetry(&client, &schema, true).await;
    let sink = build(&server.url(), &table, &["device_id", "ts"], &[]).await;

    for round in 0..2 {
        let mut pending = Vec::new();
        for i in 0..50 {
            let rec = reading(&format!("d{}", i % 5), i, 20.0 + f64::from(round as u8));
            pending.push(sink.send(rec).await.expect("accepted"));
        }
        // The same key twice in one batch: the last one wins.
        pending.push(sink.send(reading("d0", 0, 99.5)).await.expect("accepted"));
        for p in pending {
            p.await.expect("written");
        }
    }
    assert_eq!(count(&client, &table).await, 50);
    let t: f64 = client
        .query_one(
            &format!("SELECT temperature FROM {table} WHERE device_id = 'd0' AND ts = 0"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(t, 99.5);
    let t: f64 = client
        .query_one(
            &format!("SELECT temperature FROM {table} WHERE device_id = 'd1' AND ts = 1"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(t, 21.0, "the second round updated the rows");
    schema.drop_now(&client).await;
}

#[tokio::test]
async fn plain_inserts_are_batched() {
    let server = server();
    let client = server.client().await;
    let schema = Schema::create(&client, "batch").await;
    let table = telemetry(&client, &schema, false).await;
    let sink = build(
        &server.url(),
        &table,
        &[],
        &[("batch_size", "500"), ("batch_wait", "50ms")],
    )
    .await;
    let before = sink.committed_transactions().await.unwrap();
    let mut pending = Vec::new();
    for i in 0..1000 {
        pending.push(sink.send(reading("d", i, 1.0)).await.expect("accepted"));
    }
    for p in pending {
        p.await.expect("written");
    }
    let transactions = sink.committed_transactions().await.unwrap() - before;
    assert_eq!(count(&client, &table).await, 1000);
    assert!(
        (2..=10).contains(&transactions),
        "1000 rows in {transactions} transactions"
    );
    let distinct: i64 = client
        .query_one(&format!("SELECT count(DISTINCT ts) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(distinct, 1000);
    sink.flush().await.unwrap();
    schema.drop_now(&client).await;
}

#[tokio::test]
async fn unknown_columns_are_named_with_their_line_and_column() {
    let server = server();
    let client = server.client().await;
    let schema = Schema::create(&client, "unknown").await;
    let table = telemetry(&client, &schema, true).await;
    let message = build_error(
        &server.url(),
        &table,
        &[
            ("device_id", "/device"),
            ("ts", "/ts"),
            ("temprature", "/temperature"),
        ],
        &[],
    )
    .await;
    assert!(
        message.contains("functions[0].outputs[0].columns.temprature (line 13, col 9)"),
        "{message}"
    );
    assert!(message.contains("has no column `temprature`"), "{message}");
    assert!(message.contains("did you mean `temperature`?"), "{message}");

    let message = build_error(
        &server.url(),
        &format!("{}.nope", schema.name),
        COLUMNS,
        &[],
    )
    .await;
    assert!(message.contains("does not exist"), "{message}");
    schema.drop_now(&client).await;
}

#[tokio::test]
async fn wrong_types_and_keys_are_named_with_their_line_and_column() {
    let server = server();
    let client = server.client().await;
    let schema = Schema::create(&client, "types").await;
    let table = format!("{}.events", schema.name);
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id text PRIMARY KEY, seen boolean, tags text[], \
             small integer, body jsonb, required text NOT NULL)"
        ))
        .await
        .unwrap();
    let message = build_error(
        &server.url(),
        &table,
        &[
            ("id", "/id"),
            ("seen", "$timestamp"),
            ("tags", "/tags"),
            ("small", "$timestamp"),
            ("required", "/r"),
        ],
        &["seen"],
    )
    .await;
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(lines.len(), 4, "{message}");
    assert!(
        lines[0].starts_with("functions[0].outputs[0].columns.seen (line 12, col 9): `$timestamp` cannot be written to column `seen` of type boolean"),
        "{message}"
    );
    assert!(
        lines[1].starts_with("functions[0].outputs[0].columns.tags (line 13, col 9): `/tags` cannot be written to column `tags` of type text[]"),
        "{message}"
    );
    assert!(
        lines[2].starts_with("functions[0].outputs[0].columns.small (line 14, col 9)"),
        "{message}"
    );
    assert!(
        lines[3].starts_with("functions[0].outputs[0].key (line 30, col 12): table")
            && lines[3].contains("no primary key or unique index on exactly (seen)"),
        "{message}"
    );

    // An unmapped NOT NULL column without default.
    let message = build_error(&server.url(), &table, &[("id", "/id")], &[]).await;
    assert!(
        message.contains("column `required`") && message.contains("(line 11, col 9)"),
        "{message}"
    );
    schema.drop_now(&client).await;
}

#[tokio::test]
async fn values_that_do_not_fit_are_rejected_alone() {
    let server = server();
    let client = server.client().await;
    let schema = Schema::create(&client, "reject").await;
    let table = telemetry(&client, &schema, false).await;
    let sink = build(&server.url(), &table, &[], &[("batch_wait", "50ms")]).await;

    // Checked before queueing: a string for a double column, a missing
    // NOT NULL value, a payload that is not JSON.
    let bad = [
        Record::from_payload(r#"{"device":"d","ts":1,"temperature":"hot"}"#),
        Record::from_payload(r#"{"ts":1,"temperature":1}"#),
        Record::from_payload("not json"),
        Record::from_payload(r#"{"device":"d","ts":1.5,"temperature":1}"#),
    ];
    for record in bad {
        match sink.send(record).await {
            Err(SinkError::Rejected { message, .. }) => assert!(!message.is_empty()),
            Err(other) => panic!("expected Rejected, got {other:?}"),
            Ok(_) => panic!("a value that does not fit was accepted"),
        }
    }
    // Checked by the server (CHECK constraint): only that row is rejected,
    // the rows of the same batch around it are written.
    let ok1 = sink.send(reading("a", 1, 10.0)).await.unwrap();
    let bad = sink.send(reading("b", 2, 5000.0)).await.unwrap();
    let ok2 = sink.send(reading("c", 3, 30.0)).await.unwrap();
    ok1.await.expect("first row written");
    match bad.await {
        Err(SinkError::Rejected { message, .. }) => {
            assert!(message.contains("23514"), "{message}")
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    ok2.await.expect("third row written");
    assert_eq!(count(&client, &table).await, 2);
    schema.drop_now(&client).await;
}

#[tokio::test]
async fn a_server_restart_loses_nothing() {
    let server = server();
    if !server.is_own() {
        println!(
            "note: skipping the restart test: PostgreSQL at {} is shared, not restarted by tests \
             (set SPATE_PG_OWN_CLUSTER=1 to run it on a temporary cluster)",
            server.addr
        );
        return;
    }
    let client = server.client().await;
    let schema = Schema::create(&client, "restart").await;
    let table = telemetry(&client, &schema, true).await;
    drop(client);
    let sink = build(
        &server.url(),
        &table,
        &["device_id", "ts"],
        &[("max_backoff", "200ms"), ("connect_timeout", "2s")],
    )
    .await;

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
        write_until_ok(&sink, reading("r", i, 1.0)).await;
    }
    assert!(server.stop());
    let mut failures = 0;
    let restart = {
        let started = std::time::Instant::now();
        async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            tokio::task::spawn_blocking(move || {
                server.start();
                (server, started.elapsed())
            })
            .await
            .unwrap()
        }
    };
    let restart = tokio::spawn(restart);
    for i in 100..200 {
        failures += write_until_ok(&sink, reading("r", i, 1.0)).await;
    }
    let (server, _) = restart.await.unwrap();
    assert!(failures > 0, "the stop was not noticed");
    let client = server.client().await;
    assert_eq!(count(&client, &table).await, 200);
    schema.drop_now(&client).await;
}

#[tokio::test]
async fn offsets_commit_with_rows_or_not_at_all() {
    let server = server();
    let client = server.client().await;
    let schema = Schema::create(&client, "eos").await;
    let table = telemetry(&client, &schema, true).await;
    let sink = build(&server.url(), &table, &["device_id", "ts"], &[]).await;
    let target = sink.transactional_target().expect("a transactional target");
    let offsets = TableName::parse(&format!("{}.spate_offsets", schema.name)).unwrap();
    let key = OffsetsKey {
        pipeline: "demo".into(),
        function: "store".into(),
        source: "telemetry-topic".into(),
    };
    let cfg = config(&sink_node(
        &[("url", &server.url()), ("table", &table)],
        COLUMNS,
        &[],
    ));
    let open = || {
        PgTransaction::open(
            cfg.connection.clone(),
            offsets.clone(),
            key.clone(),
            vec![SessionTable {
                target: target.clone(),
                plan: sink.plan(),
            }],
        )
    };
    let (mut session, start) = open().await.expect("session opens");
    assert!(start.is_empty());
    session.accepts(&target).expect("accepts its table");
    let mut foreign = target.clone();
    foreign.cluster = "someone@elsewhere:5432/db".into();
    assert!(session.accepts(&foreign).is_err());

    // Commit: rows and positions both visible.
    for i in 0..3 {
        session.write(&target, reading("e", i, 1.0)).await.unwrap();
    }
    let positions = [
        CommitPosition {
            partition: 0,
            next_offset: 3,
        },
        CommitPosition {
            partition: 2,
            next_offset: 7,
        },
    ];
    session.commit(&positions, &[]).await.expect("committed");
    assert_eq!(count(&client, &table).await, 3);
    let stored = load_offsets(&client, &offsets, &key).await.unwrap();
    assert_eq!(stored.into_iter().collect::<Vec<_>>(), vec![(0, 3), (2, 7)]);

    // Abort: neither.
    session.write(&target, reading("e", 10, 1.0)).await.unwrap();
    session.abort().await.unwrap();
    session.commit(&[], &[]).await.unwrap();
    assert_eq!(count(&client, &table).await, 3);

    // A second session (another process took the partitions over) commits
    // first; the first one is fenced and commits neither rows nor positions.
    let (mut other, resumed) = open().await.expect("second session opens");
    assert_eq!(resumed.get(&0), Some(&3), "resumes from the table");
    other.write(&target, reading("o", 1, 1.0)).await.unwrap();
    other
        .commit(
            &[CommitPosition {
                partition: 0,
                next_offset: 5,
            }],
            &[],
        )
        .await
        .expect("second session commits");
    session.write(&target, reading("e", 20, 1.0)).await.unwrap();
    let err = session
        .commit(
            &[CommitPosition {
                partition: 0,
                next_offset: 4,
            }],
            &[],
        )
        .await
        .expect_err("the first session is fenced");
    assert!(!err.is_abortable(), "{err}");
    assert_eq!(count(&client, &table).await, 4);
    let stored = load_offsets(&client, &offsets, &key).await.unwrap();
    assert_eq!(stored.get(&0), Some(&5));
    let e20: i64 = client
        .query_one(&format!("SELECT count(*) FROM {table} WHERE ts = 20"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(e20, 0);
    schema.drop_now(&client).await;
}

#[test]
fn configuration_problems_are_reported_without_io() {
    let node = sink_node(
        &[
            ("url", "mysql://x"),
            ("table", "a.b.c"),
            ("batch_size", "0"),
        ],
        &[("a", "$timestmp"), ("b", "/b")],
        &["c"],
    );
    let (config, errors) = read_config(&node);
    assert!(config.is_none());
    let messages: Vec<String> = errors
        .iter()
        .map(|e| format!("{}:{} {}", e.span.line, e.span.column, e.message))
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("2:12 not a PostgreSQL connection URL")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("3:12 `a.b.c` has more than two parts")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m == "11:22 unknown record field `$timestmp`"),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m == "30:12 key column `c` is not in `columns`"),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("`batch_size` must be at least 1")),
        "{messages:?}"
    );

    // Through the factory, as the loader calls it; the password is never
    // shown.
    let node = sink_node(
        &[("url", "postgres://u:s3cret@h/db"), ("table", "t")],
        &[("a", "/a")],
        &[],
    );
    let errors = spate_connector::config::ConfigErrors::default();
    let builder = {
        let mut reader =
            spate_connector::ConfigReader::new(&node, "functions[0].outputs[0]", &errors);
        PostgresFactory.sink(&mut reader)
    };
    assert!(errors.into_inner().is_empty());
    let builder = builder.expect("a builder");
    drop(builder);
    let (config, _) = read_config(&node);
    let shown = format!("{:?}", config.expect("valid"));
    assert!(!shown.contains("s3cret"), "{shown}");
    assert_eq!(
        PostgresFactory.sink_capabilities(),
        Some(spate_connector::Capabilities {
            exactly_once: false,
            durable_positions: false,
            resumable: false,
        })
    );
}
