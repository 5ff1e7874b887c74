//! The database half of `exactly_once`: rows and source positions in one
//! PostgreSQL transaction.
//!
//! Positions live in an offsets table (default `spate_offsets`, see
//! [`ensure_offsets_table`]) keyed by pipeline, function, source and
//! partition; `next_offset` follows the contract's convention (every offset
//! below it is finished). [`PgTransaction`] implements the contract's
//! [`TransactionSession`]: [`write`](TransactionSession::write) only
//! buffers, [`commit`](TransactionSession::commit) writes every buffered row
//! and upserts the positions in one transaction. On start, a source resumes
//! from [`load_offsets`] (also returned by [`PgTransaction::open`]), not from
//! the broker's positions.
//!
//! **Fencing.** At commit the session locks its partitions' offset rows
//! (`SELECT … FOR UPDATE`) and checks that each still holds what this
//! session loaded or last committed. A mismatch means another process
//! committed those partitions since (it took them over): the session returns
//! [`TransactionError::Fatal`] and writes nothing.
//!
//! **A commit whose outcome is unknown** (the connection broke during
//! `COMMIT`): the session reconnects and reads the positions back. Stored
//! equal to the ones being committed → it landed, `Ok`; stored equal to the
//! previous ones → it did not, `Abortable`; unreadable → `Fatal` (a restart
//! resumes from the table, which is consistent either way).
//!
//! **A row that does not fit its column** is `Fatal` here: under
//! `exactly_once` the engine hands records to the session after deciding
//! their fate, so there is no dead letter left to take it.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use spate_connector::{
    CommitPosition, PartitionId, Record, StoredPosition, TransactionError, TransactionSession,
    TransactionalTarget,
};
use tokio_postgres::{Client, GenericClient};

use crate::config::{Connection, TableName};
use crate::sink::{connect, dedupe, insert_rows};
use crate::table::{Row, TablePlan};
use crate::{describe_pg_error, KIND};

/// The offsets table used when none is named.
pub const DEFAULT_OFFSETS_TABLE: &str = "spate_offsets";

/// Whose positions a row of the offsets table holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetsKey {
    /// The pipeline (file) name.
    pub pipeline: String,
    /// The function name.
    pub function: String,
    /// The source stream (topic, stream, subject).
    pub source: String,
}

/// Creates the offsets table if it does not exist.
pub async fn ensure_offsets_table(
    client: &impl GenericClient,
    table: &TableName,
) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {} (\
                pipeline text NOT NULL, \
                function text NOT NULL, \
                source text NOT NULL, \
                partition bigint NOT NULL, \
                next_offset bigint NOT NULL, \
                updated_at timestamptz NOT NULL DEFAULT now(), \
                PRIMARY KEY (pipeline, function, source, partition))",
            table.quoted()
        ))
        .await
}

/// The committed positions of one source of one function:
/// partition → next offset.
pub async fn load_offsets(
    client: &impl GenericClient,
    table: &TableName,
    key: &OffsetsKey,
) -> Result<BTreeMap<PartitionId, u64>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!(
                "SELECT partition, next_offset FROM {} \
                 WHERE pipeline = $1 AND function = $2 AND source = $3",
                table.quoted()
            ),
            &[&key.pipeline, &key.function, &key.source],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let partition: i64 = row.get(0);
            let next: i64 = row.get(1);
            (partition as PartitionId, next.max(0) as u64)
        })
        .collect())
}

/// One target table a session writes, with the sink's checked mapping.
#[derive(Debug, Clone)]
pub struct SessionTable {
    /// What the sink answers to `transactional_target`.
    pub target: TransactionalTarget,
    /// Its checked mapping ([`crate::PgSink::plan`]).
    pub plan: Arc<TablePlan>,
}

/// A PostgreSQL transaction session (see the module docs).
pub struct PgTransaction {
    name: String,
    connection: Connection,
    client: Option<Client>,
    offsets_table: TableName,
    key: OffsetsKey,
    tables: Vec<SessionTable>,
    pending: Vec<(usize, Row)>,
    known: BTreeMap<PartitionId, u64>,
}

impl PgTransaction {
    /// Connects, creates the offsets table if needed and loads the stored
    /// positions, which it returns: the source must resume from them.
    pub async fn open(
        connection: Connection,
        offsets_table: TableName,
        key: OffsetsKey,
        tables: Vec<SessionTable>,
    ) -> Result<(Self, BTreeMap<PartitionId, u64>), TransactionError> {
        let name = format!(
            "{KIND}:{}/{}/{}",
            connection.display(),
            key.function,
            key.source
        );
        let fail = |message: String| TransactionError::Abortable {
            session: name.clone(),
            message,
        };
        let client = connect(&connection).await.map_err(fail)?;
        ensure_offsets_table(&client, &offsets_table)
            .await
            .map_err(|e| fail(describe_pg_error(&e)))?;
        let known = load_offsets(&client, &offsets_table, &key)
            .await
            .map_err(|e| fail(describe_pg_error(&e)))?;
        let session = Self {
            name,
            connection,
            client: Some(client),
            offsets_table,
            key,
            tables,
            pending: Vec::new(),
            known: known.clone(),
        };
        Ok((session, known))
    }

    /// Rows buffered for the open transaction.
    pub fn pending_rows(&self) -> usize {
        self.pending.len()
    }

    fn abortable(&self, message: impl Into<String>) -> TransactionError {
        TransactionError::Abortable {
            session: self.name.clone(),
            message: message.into(),
        }
    }

    fn fatal(&self, message: impl Into<String>) -> TransactionError {
        TransactionError::Fatal {
            session: self.name.clone(),
            message: message.into(),
        }
    }

    fn table_of(&self, target: &TransactionalTarget) -> Result<usize, String> {
        if target.kind != KIND {
            return Err(format!(
                "a PostgreSQL transaction cannot write to a `{}` sink",
                target.kind
            ));
        }
        if target.cluster != self.connection.display() {
            return Err(format!(
                "sink database {} is not the session's database {}",
                target.cluster,
                self.connection.display()
            ));
        }
        self.tables
            .iter()
            .position(|t| t.target == *target)
            .ok_or_else(|| format!("table {} was not given to this session", target.destination))
    }

    async fn client(&mut self) -> Result<&mut Client, TransactionError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let client = connect(&self.connection)
                .await
                .map_err(|m| self.abortable(m))?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Writes rows and positions in one transaction.
    async fn try_commit(&mut self, positions: &[CommitPosition]) -> Result<(), Failure> {
        let table_sql = self.offsets_table.quoted();
        let pending = std::mem::take(&mut self.pending);
        let tables = self.tables.clone();
        let known = self.known.clone();
        let key = self.key.clone();
        let client = self.client.as_mut().expect("connected by commit");
        let result = async {
            let tx = client.transaction().await.map_err(Failure::before)?;
            for (index, table) in tables.iter().enumerate() {
                let rows: Vec<&Row> = pending
                    .iter()
                    .filter(|(t, _)| *t == index)
                    .map(|(_, r)| r)
                    .collect();
                if rows.is_empty() {
                    continue;
                }
                let statement = tx
                    .prepare(&table.plan.insert_sql)
                    .await
                    .map_err(Failure::before)?;
                let rows = dedupe(&table.plan, &rows);
                insert_rows(&tx, &statement, &rows)
                    .await
                    .map_err(Failure::before)?;
            }
            if !positions.is_empty() {
                let partitions: Vec<i64> = positions.iter().map(|p| i64::from(p.partition)).collect();
                let stored: BTreeMap<PartitionId, u64> = tx
                    .query(
                        &format!(
                            "SELECT partition, next_offset FROM {table_sql} \
                             WHERE pipeline = $1 AND function = $2 AND source = $3 AND partition = ANY($4) \
                             FOR UPDATE"
                        ),
                        &[&key.pipeline, &key.function, &key.source, &partitions],
                    )
                    .await
                    .map_err(Failure::before)?
                    .iter()
                    .map(|r| (r.get::<_, i64>(0) as PartitionId, r.get::<_, i64>(1) as u64))
                    .collect();
                for p in positions {
                    let have = stored.get(&p.partition);
                    let expected = known.get(&p.partition);
                    if have != expected {
                        let fenced = format!(
                            "partition {} of {}: the offsets table holds {}, but this session last saw {}: \
                             another process committed this partition (fenced); stopping without committing",
                            p.partition,
                            key.source,
                            have.map_or("nothing".to_owned(), u64::to_string),
                            expected.map_or("nothing".to_owned(), u64::to_string),
                        );
                        let _ = tx.rollback().await;
                        return Err(Failure::Fenced(fenced));
                    }
                }
                let offsets: Vec<i64> = positions
                    .iter()
                    .map(|p| i64::try_from(p.next_offset).unwrap_or(i64::MAX))
                    .collect();
                tx.execute(
                    &format!(
                        "INSERT INTO {table_sql} (pipeline, function, source, partition, next_offset) \
                         SELECT $1, $2, $3, p, o FROM unnest($4::bigint[], $5::bigint[]) AS u(p, o) \
                         ON CONFLICT (pipeline, function, source, partition) \
                         DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()"
                    ),
                    &[&key.pipeline, &key.function, &key.source, &partitions, &offsets],
                )
                .await
                .map_err(Failure::before)?;
            }
            tx.commit().await.map_err(Failure::at_commit)
        }
        .await;
        if result.is_err() {
            self.pending = pending;
        }
        result
    }

    /// After a `COMMIT` whose answer was lost: did it land?
    async fn resolve_doubt(&mut self, positions: &[CommitPosition]) -> Result<bool, String> {
        if positions.is_empty()
            || positions
                .iter()
                .all(|p| self.known.get(&p.partition) == Some(&p.next_offset))
        {
            return Err("the positions did not move, so the table cannot tell".to_owned());
        }
        self.client = None;
        let client = connect(&self.connection).await?;
        let stored = load_offsets(&client, &self.offsets_table, &self.key)
            .await
            .map_err(|e| describe_pg_error(&e))?;
        self.client = Some(client);
        if positions
            .iter()
            .all(|p| stored.get(&p.partition) == Some(&p.next_offset))
        {
            return Ok(true);
        }
        if positions
            .iter()
            .all(|p| stored.get(&p.partition) == self.known.get(&p.partition))
        {
            return Ok(false);
        }
        Err("the offsets table holds neither the old nor the new positions".to_owned())
    }
}

/// Why [`PgTransaction::try_commit`] failed.
enum Failure {
    /// A database error; `commit_sent`: it answered the `COMMIT` itself, so
    /// the outcome is unknown.
    Pg {
        error: tokio_postgres::Error,
        commit_sent: bool,
    },
    /// Another process moved the positions.
    Fenced(String),
}

impl Failure {
    fn before(error: tokio_postgres::Error) -> Self {
        Self::Pg {
            error,
            commit_sent: false,
        }
    }

    fn at_commit(error: tokio_postgres::Error) -> Self {
        Self::Pg {
            error,
            commit_sent: true,
        }
    }
}

#[async_trait]
impl TransactionSession for PgTransaction {
    fn name(&self) -> &str {
        &self.name
    }

    fn accepts(&self, target: &TransactionalTarget) -> Result<(), String> {
        self.table_of(target).map(|_| ())
    }

    async fn write(
        &mut self,
        target: &TransactionalTarget,
        record: Record,
    ) -> Result<(), TransactionError> {
        let index = self.table_of(target).map_err(|m| self.fatal(m))?;
        let row = self.tables[index]
            .plan
            .row(&record)
            .map_err(|m| self.fatal(format!("record for {}: {m}", target.destination)))?;
        self.pending.push((index, row));
        Ok(())
    }

    async fn commit(
        &mut self,
        positions: &[CommitPosition],
        _stored: &[StoredPosition],
    ) -> Result<(), TransactionError> {
        if self.pending.is_empty() && positions.is_empty() {
            return Ok(());
        }
        self.client().await?;
        match self.try_commit(positions).await {
            Ok(()) => {
                self.pending.clear();
                for p in positions {
                    self.known.insert(p.partition, p.next_offset);
                }
                Ok(())
            }
            Err(Failure::Fenced(fenced)) => Err(self.fatal(fenced)),
            Err(Failure::Pg {
                error: e,
                commit_sent,
            }) => {
                let message = describe_pg_error(&e);
                if crate::is_data_error(&e) {
                    return Err(self.fatal(format!("the database refused a row: {message}")));
                }
                if !commit_sent {
                    if e.is_closed() || e.code().is_none() {
                        self.client = None;
                    }
                    return Err(self.abortable(message));
                }
                match self.resolve_doubt(positions).await {
                    Ok(true) => {
                        self.pending.clear();
                        for p in positions {
                            self.known.insert(p.partition, p.next_offset);
                        }
                        Ok(())
                    }
                    Ok(false) => Err(self.abortable(message)),
                    Err(why) => Err(self.fatal(format!(
                        "COMMIT failed ({message}) and its outcome is unknown: {why}; \
                         restart: the source resumes from the offsets table"
                    ))),
                }
            }
        }
    }

    async fn abort(&mut self) -> Result<(), TransactionError> {
        // Nothing is sent before commit, and a failed commit rolled back.
        self.pending.clear();
        Ok(())
    }
}
