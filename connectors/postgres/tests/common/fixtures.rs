//! Tables, sinks, records and an engine-style driver for the exactly-once
//! tests: an output table and a dead-letter table without unique keys (so
//! a duplicate shows as a second row), sinks whose offsets and state tables
//! live in the test's schema, and the retry the engine does after a failed
//! commit (abort, write the same records again, commit).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use spate_connector::{
    dead_letter, CommitPosition, Record, SessionOwner, StateChange, StoredPosition,
    TransactionError, TransactionSession, TransactionalTarget, RECORD_ID_HEADER,
};
use spate_postgres::{PgSink, PgSinkBuilder, TableName};

use super::{config, sink_node, Schema};

/// The output columns: the device, the time, the temperature and the
/// record id (which tells duplicates apart from distinct records).
pub const TELEMETRY_COLUMNS: &[(&str, &str)] = &[
    ("device_id", "/device"),
    ("ts", "ts"),
    ("temperature", "/temperature"),
    ("record_id", "$record_id"),
];

/// The dead-letter columns.
pub const DLQ_COLUMNS: &[(&str, &str)] = &[
    ("payload", "$payload"),
    ("reason", "$header.spate-dlq-reason"),
    ("record_id", "$record_id"),
];

/// Creates `schema.telemetry` (plain inserts, `temperature < 1000`) and
/// `schema.dead_letters`; returns their names.
pub async fn eos_tables(client: &tokio_postgres::Client, schema: &Schema) -> (String, String) {
    let telemetry = format!("{}.telemetry", schema.name);
    let dlq = format!("{}.dead_letters", schema.name);
    client
        .batch_execute(&format!(
            "CREATE TABLE {telemetry} (device_id text NOT NULL, ts bigint NOT NULL, \
             temperature double precision CONSTRAINT not_too_hot CHECK (temperature < 1000), \
             record_id text NOT NULL); \
             CREATE TABLE {dlq} (id bigserial PRIMARY KEY, payload text NOT NULL, \
             reason text NOT NULL, record_id text NOT NULL)"
        ))
        .await
        .expect("tables created");
    (telemetry, dlq)
}

/// The offsets and state tables of a test's schema.
pub fn store_tables(schema: &Schema) -> (TableName, TableName) {
    (
        TableName::parse(&format!("{}.spate_offsets", schema.name)).unwrap(),
        TableName::parse(&format!("{}.spate_state", schema.name)).unwrap(),
    )
}

/// Builds a sink whose offsets and state tables are in `schema`.
pub async fn eos_sink(
    url: &str,
    schema: &Schema,
    table: &str,
    columns: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> PgSink {
    let offsets = format!("{}.spate_offsets", schema.name);
    let state = format!("{}.spate_state", schema.name);
    let mut entries = vec![
        ("url", url),
        ("table", table),
        ("offsets_table", offsets.as_str()),
        ("state_table", state.as_str()),
    ];
    entries.extend_from_slice(extra);
    PgSinkBuilder::new(config(&sink_node(&entries, columns, &[])))
        .build_pg()
        .await
        .expect("sink builds")
}

/// The owner every test uses (a Kafka-like source).
pub fn owner() -> SessionOwner {
    SessionOwner {
        pipeline: "demo".into(),
        function: "store".into(),
        source: "kafka:telemetry".into(),
    }
}

/// An output record of event `offset` of partition `partition`.
pub fn output(partition: u32, offset: u64, temperature: f64) -> Record {
    let mut record = Record::from_payload(format!(
        r#"{{"device":"d{partition}","ts":{offset},"temperature":{temperature}}}"#
    ));
    record.headers.set(
        RECORD_ID_HEADER,
        format!("telemetry/{partition}/{offset}/0"),
    );
    record
}

/// The dead letter of event `offset` of partition `partition`.
pub fn dead(partition: u32, offset: u64, reason: &str) -> Record {
    let mut record = Record::from_payload(format!("poison {partition}/{offset}"));
    record.headers.set(dead_letter::REASON, reason.to_owned());
    record.headers.set(
        RECORD_ID_HEADER,
        format!("telemetry/{partition}/{offset}/dead-letter"),
    );
    record
}

/// A state change.
pub fn put(key: &str, value: &str) -> StateChange {
    StateChange {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
    }
}

/// A state removal.
pub fn remove(key: &str) -> StateChange {
    StateChange {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: None,
    }
}

/// Positions under stable names (`telemetry/P`), and the numeric ones the
/// engine passes beside them (deliberately different numbers, so a session
/// that stored the numeric ones would be caught).
pub fn positions(pairs: &[(u32, u64)]) -> (Vec<CommitPosition>, Vec<StoredPosition>) {
    let numeric = pairs
        .iter()
        .map(|&(p, o)| CommitPosition {
            partition: p + 100,
            next_offset: o + 1000,
        })
        .collect();
    let stored = pairs
        .iter()
        .map(|&(p, o)| StoredPosition {
            partition: format!("telemetry/{p}"),
            next_offset: o,
        })
        .collect();
    (numeric, stored)
}

/// The positions as [`spate_postgres::load_offsets`] returns them.
pub fn stored_map(pairs: &[(u32, u64)]) -> BTreeMap<String, u64> {
    pairs
        .iter()
        .map(|&(p, o)| (format!("telemetry/{p}"), o))
        .collect()
}

/// What one transaction writes.
#[derive(Clone, Default)]
pub struct Txn {
    pub records: Vec<(TransactionalTarget, Record)>,
    pub state: Vec<(String, StateChange)>,
    pub positions: Vec<(u32, u64)>,
}

impl Txn {
    /// Writes the records and state changes into the session.
    pub async fn write(&self, session: &mut dyn TransactionSession) {
        for (target, record) in &self.records {
            session
                .write(target, record.clone())
                .await
                .expect("write buffers");
        }
        for (partition, change) in &self.state {
            session
                .write_state(partition, change.clone())
                .await
                .expect("write_state buffers");
        }
    }

    /// Commits what was written with the positions.
    pub async fn commit(
        &self,
        session: &mut dyn TransactionSession,
    ) -> Result<(), TransactionError> {
        let (numeric, stored) = positions(&self.positions);
        session.commit(&numeric, &stored).await
    }
}

/// What the engine does: commit; on an abortable failure abort, write the
/// same records again and retry (every 50 ms, at most `attempts` times).
/// Assumes `txn` was written already. Returns the failures seen.
pub async fn commit_until_ok(
    session: &mut dyn TransactionSession,
    txn: &Txn,
    attempts: u32,
) -> Vec<TransactionError> {
    let mut failures = Vec::new();
    loop {
        match txn.commit(session).await {
            Ok(()) => return failures,
            Err(e) => {
                assert!(e.is_abortable(), "not abortable: {e}");
                failures.push(e);
                assert!(
                    failures.len() < attempts as usize,
                    "no commit after {attempts} attempts: {:?}",
                    failures.last()
                );
                session.abort().await.expect("abort");
                tokio::time::sleep(Duration::from_millis(50)).await;
                txn.write(session).await;
            }
        }
    }
}

/// `(device_id, ts, record_id)` of every telemetry row, sorted.
pub async fn telemetry_rows(
    client: &tokio_postgres::Client,
    table: &str,
) -> Vec<(String, i64, String)> {
    client
        .query(
            &format!(
                "SELECT device_id, ts, record_id FROM {table} ORDER BY device_id, ts, record_id"
            ),
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// `(device_id, ts, record_id)` of what `output(p, o, _)` writes, sorted.
pub fn expected_rows(events: &[(u32, u64)]) -> Vec<(String, i64, String)> {
    let mut rows: Vec<(String, i64, String)> = events
        .iter()
        .map(|&(p, o)| (format!("d{p}"), o as i64, format!("telemetry/{p}/{o}/0")))
        .collect();
    rows.sort();
    rows
}

/// `(payload, reason, record_id)` of every dead-letter row, in id order.
pub async fn dead_letter_rows(
    client: &tokio_postgres::Client,
    table: &str,
) -> Vec<(String, String, String)> {
    client
        .query(
            &format!("SELECT payload, reason, record_id FROM {table} ORDER BY id"),
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}
