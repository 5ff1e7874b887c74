//! The `postgres` sink against a real server: upserts, batching, mapping
//! checks with their file locations, rejected values (at `send` and at
//! `check`), and configuration problems found without I/O. The server
//! restart is in `restart.rs`, the exactly-once session in
//! `exactly_once.rs`.

use spate_connector::{ConnectorFactory, Record, Sink, SinkError};
use spate_postgres::{PgSink, PgSinkBuilder, PostgresFactory};
use spate_testsupport::postgres::{config, read_config, server, sink_node};

mod common;
use common::Db;

fn reading(device: &str, ts: i64, temperature: f64) -> Record {
    Record::from_payload(format!(
        r#"{{"device":"{device}","ts":{ts},"temperature":{temperature}}}"#
    ))
}

/// The single value `sql` selects.
async fn scalar<T: for<'a> tokio_postgres::types::FromSql<'a>>(
    client: &tokio_postgres::Client,
    sql: &str,
) -> T {
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

async fn count(client: &tokio_postgres::Client, table: &str) -> i64 {
    scalar(client, &format!("SELECT count(*) FROM {table}")).await
}

async fn temperature(client: &tokio_postgres::Client, table: &str, device: &str, ts: i64) -> f64 {
    let sql = format!("SELECT temperature FROM {table} WHERE device_id = '{device}' AND ts = {ts}");
    scalar(client, &sql).await
}

/// A fresh schema with a `telemetry` table (keyed by device and time, or
/// not) in it; the table's name.
async fn telemetry(prefix: &str, key: bool) -> (Db, String) {
    let pk = if key {
        ", PRIMARY KEY (device_id, ts)"
    } else {
        ""
    };
    let columns = format!(
        "device_id text NOT NULL, ts bigint NOT NULL, \
         temperature double precision CHECK (temperature < 1000), \
         written_at timestamptz NOT NULL DEFAULT now(){pk}"
    );
    schema_with(prefix, "telemetry", &columns).await
}

/// A fresh schema with one table `name` of these columns in it; the
/// table's name.
async fn schema_with(prefix: &str, name: &str, columns: &str) -> (Db, String) {
    let db = Db::on(server(), prefix).await;
    let table = db.table(name, columns).await;
    (db, table)
}

const COLUMNS: &[(&str, &str)] = &[
    ("device_id", "/device"),
    ("ts", "ts"),
    ("temperature", "/temperature"),
];

async fn build(db: &Db, table: &str, key: &[&str], extra: &[(&str, &str)]) -> PgSink {
    let url = db.server.url();
    let mut entries = vec![("url", url.as_str()), ("table", table)];
    entries.extend_from_slice(extra);
    PgSinkBuilder::new(config(&sink_node(&entries, COLUMNS, key)))
        .build_pg()
        .await
        .expect("sink builds")
}

async fn build_error(db: &Db, table: &str, columns: &[(&str, &str)], key: &[&str]) -> String {
    let node = sink_node(&[("url", &db.server.url()), ("table", table)], columns, key);
    match PgSinkBuilder::new(config(&node)).build_pg().await {
        Ok(_) => panic!("the sink built despite a bad mapping"),
        Err(SinkError::Misconfigured { problems, .. }) => problems
            .iter()
            .map(|p| {
                let hint = p
                    .hint
                    .as_deref()
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default();
                format!(
                    "{} (line {}, col {}): {}{hint}",
                    p.path, p.span.line, p.span.column, p.message
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Err(other) => panic!("expected a mapping error, got {other:?}"),
    }
}

#[tokio::test]
async fn upserts_are_idempotent() {
    let (db, table) = telemetry("upsert", true).await;
    let sink = build(&db, &table, &["device_id", "ts"], &[]).await;

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
    assert_eq!(count(&db.client, &table).await, 50);
    assert_eq!(temperature(&db.client, &table, "d0", 0).await, 99.5);
    assert_eq!(
        temperature(&db.client, &table, "d1", 1).await,
        21.0,
        "the second round updated the rows"
    );
    db.schema.drop_now(&db.client).await;
}

#[tokio::test]
async fn plain_inserts_are_batched() {
    let (db, table) = telemetry("batch", false).await;
    let batching = [("batch_size", "500"), ("batch_wait", "50ms")];
    let sink = build(&db, &table, &[], &batching).await;
    let before = sink.committed_transactions().await.unwrap();
    let mut pending = Vec::new();
    for i in 0..1000 {
        pending.push(sink.send(reading("d", i, 1.0)).await.expect("accepted"));
    }
    for p in pending {
        p.await.expect("written");
    }
    let transactions = sink.committed_transactions().await.unwrap() - before;
    assert_eq!(count(&db.client, &table).await, 1000);
    assert!(
        (2..=10).contains(&transactions),
        "1000 rows in {transactions} transactions"
    );
    let distinct: i64 = scalar(
        &db.client,
        &format!("SELECT count(DISTINCT ts) FROM {table}"),
    )
    .await;
    assert_eq!(distinct, 1000);
    sink.flush().await.unwrap();
    db.schema.drop_now(&db.client).await;
}

#[tokio::test]
async fn unknown_columns_are_named_with_their_line_and_column() {
    let (db, table) = telemetry("unknown", true).await;
    let misspelt = [
        ("device_id", "/device"),
        ("ts", "/ts"),
        ("temprature", "/temperature"),
    ];
    let message = build_error(&db, &table, &misspelt, &[]).await;
    assert!(
        message.contains("functions[0].outputs[0].columns.temprature (line 13, col 9)"),
        "{message}"
    );
    assert!(message.contains("has no column `temprature`"), "{message}");
    assert!(message.contains("did you mean `temperature`?"), "{message}");

    let message = build_error(&db, &format!("{}.nope", db.schema.name), COLUMNS, &[]).await;
    assert!(message.contains("does not exist"), "{message}");
    db.schema.drop_now(&db.client).await;
}

#[tokio::test]
async fn wrong_types_and_keys_are_named_with_their_line_and_column() {
    let (db, table) = schema_with(
        "types",
        "events",
        "id text PRIMARY KEY, seen boolean, tags text[], \
         small integer, body jsonb, required text NOT NULL",
    )
    .await;
    let columns = [
        ("id", "/id"),
        ("seen", "$timestamp"),
        ("tags", "/tags"),
        ("small", "$timestamp"),
        ("required", "/r"),
    ];
    let message = build_error(&db, &table, &columns, &["seen"]).await;
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
    let message = build_error(&db, &table, &[("id", "/id")], &[]).await;
    assert!(
        message.contains("column `required`") && message.contains("(line 11, col 9)"),
        "{message}"
    );
    db.schema.drop_now(&db.client).await;
}

#[tokio::test]
async fn values_that_do_not_fit_are_rejected_alone() {
    let (db, table) = telemetry("reject", false).await;
    let sink = build(&db, &table, &[], &[("batch_wait", "50ms")]).await;

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
    assert_eq!(count(&db.client, &table).await, 2);
    db.schema.drop_now(&db.client).await;
}

#[tokio::test]
async fn check_refuses_values_that_do_not_fit_naming_the_column() {
    let columns = "code varchar(4) NOT NULL, n integer, at timestamptz";
    let (db, table) = schema_with("check", "readings", columns).await;
    let node = sink_node(
        &[("url", &db.server.url()), ("table", &table)],
        &[("code", "/code"), ("n", "/n"), ("at", "/at")],
        &[],
    );
    let sink = PgSinkBuilder::new(config(&node)).build_pg().await.unwrap();
    let refused = |payload: &str| match sink.check(&Record::from_payload(payload.to_owned())) {
        Err(SinkError::Rejected { message, .. }) => message,
        other => panic!("{payload}: expected Rejected, got {other:?}"),
    };
    let message = refused(r#"{"code":"abcd","n":"many"}"#);
    assert!(
        message.contains("column `n` (integer)") && message.contains("not a whole number"),
        "{message}"
    );
    let message = refused(r#"{"code":"abcde","n":1}"#);
    assert!(
        message.contains("column `code` (character varying(4))")
            && message.contains("5 characters, at most 4 fit"),
        "{message}"
    );
    let message = refused(r#"{"code":"ab","n":3000000000}"#);
    assert!(message.contains("column `n`"), "{message}");
    let message = refused(r#"{"code":"ab","at":true}"#);
    assert!(message.contains("column `at`"), "{message}");
    let message = refused(r#"{"n":1}"#);
    assert!(message.contains("column `code` is NOT NULL"), "{message}");
    // What fits passes, and `check` writes nothing.
    sink.check(&Record::from_payload(r#"{"code":"abcd","n":7,"at":0}"#))
        .expect("a record that fits passes");
    assert_eq!(count(&db.client, &table).await, 0);
    db.schema.drop_now(&db.client).await;
}

#[test]
fn configuration_problems_are_reported_without_io() {
    let node = sink_node(
        &[
            ("url", "mysql://x"),
            ("table", "a.b.c"),
            ("batch_size", "0"),
            ("offsets_table", "x.\"y"),
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
    spate_testsupport::connector::assert_mentioned(
        &messages,
        "`batch_size` must be between 1 and 100000, found `0`",
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("5:12 unclosed quote in `x.\"y`")),
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
            exactly_once: true,
            durable_positions: true,
            resumable: false,
        })
    );
}
