//! Records, transactions and an engine-style driver for the exactly-once
//! tests: the column mappings of the output and dead-letter tables (which
//! [`super::eos::Fixture`] creates), output records, dead letters, state
//! changes and positions, one transaction's writes ([`Txn`]), the retry the
//! engine does after a failed commit (abort, write the same records again,
//! commit), and the rows those records make.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use spate_connector::{
    dead_letter, CommitPosition, Record, SessionOwner, StateChange, StoredPosition,
    TransactionError, TransactionSession, TransactionalTarget, RECORD_ID_HEADER,
};
use tokio::task::JoinHandle;

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

/// The output records of events (partition, offset, temperature), for
/// `target`.
pub fn outputs(
    target: &TransactionalTarget,
    events: &[(u32, u64, f64)],
) -> Vec<(TransactionalTarget, Record)> {
    events
        .iter()
        .map(|&(p, o, t)| (target.clone(), output(p, o, t)))
        .collect()
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
    /// A transaction of records and positions that changes no state.
    pub fn stateless(
        records: Vec<(TransactionalTarget, Record)>,
        positions: Vec<(u32, u64)>,
    ) -> Self {
        Self {
            records,
            state: Vec::new(),
            positions,
        }
    }

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

    /// Commits on a task of its own (the caller can act while the commit
    /// blocks); the task gives back the session and the outcome.
    pub fn commit_in_background(
        &self,
        mut session: Box<dyn TransactionSession>,
    ) -> JoinHandle<(Box<dyn TransactionSession>, Result<(), TransactionError>)> {
        let txn = self.clone();
        tokio::spawn(async move {
            let result = txn.commit(&mut *session).await;
            (session, result)
        })
    }

    /// Writes and commits; panics if the commit fails.
    pub async fn land(&self, session: &mut dyn TransactionSession) {
        self.write(session).await;
        self.commit(session).await.expect("committed");
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

/// `(device_id, ts, record_id)` of what `output(p, o, _)` writes, sorted.
pub fn expected_rows(events: &[(u32, u64)]) -> Vec<(String, i64, String)> {
    let mut rows: Vec<(String, i64, String)> = events
        .iter()
        .map(|&(p, o)| (format!("d{p}"), o as i64, format!("telemetry/{p}/{o}/0")))
        .collect();
    rows.sort();
    rows
}
