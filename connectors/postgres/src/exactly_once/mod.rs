//! The database half of `exactly_once`: a function's output rows (in any of
//! its postgres tables, dead letters included), its source's positions and
//! its handler state commit in ONE PostgreSQL transaction, or not at all.
//!
//! [`PgSession`] is the contract's [`TransactionSession`], opened by
//! [`PgSink::begin_exactly_once`](crate::PgSink) for a [`SessionOwner`]
//! (pipeline, function, source):
//!
//! * **One database.** The session connects with the settings (user,
//!   password) of the sink that opened it, and writes the tables of every
//!   postgres sink of the same database — `host:port/db` as written in
//!   their URLs — so that user must be allowed to write them all. A sink of
//!   another kind, another database, or a mapping no sink built in this
//!   process is refused by [`accepts`](TransactionSession::accepts), which
//!   says which.
//! * **Writes only buffer.** [`write`](TransactionSession::write) turns the
//!   record into a row with its sink's checked plan (found in the
//!   process-wide [`crate::registry`] by the target's
//!   destination); [`write_state`](TransactionSession::write_state) keeps
//!   the change. Nothing reaches the database before the commit.
//! * **One transaction per commit.** [`commit`](TransactionSession::commit)
//!   locks the owner's offset rows of the committed partitions, checks them
//!   (fencing, below), stores the `stored` positions under their stable
//!   partition names, writes the rows of each table as one unnest statement
//!   (upsert keys de-duplicated, the last row wins), applies the state
//!   changes (last change per key wins; one upsert, one delete), and
//!   commits. Any failure before `COMMIT` rolls everything back.
//! * **Resume from the table.** [`load_positions`](TransactionSession::load_positions)
//!   returns every position stored for the owner, and
//!   [`load_state`](TransactionSession::load_state) the state of the
//!   partitions asked for; both reflect only committed transactions.
//! * **Fencing.** Each commit checks, under `SELECT … FOR UPDATE`, that
//!   every partition it moves still holds what this session last loaded or
//!   committed (a partition it never saw must still have no row, which the
//!   insert re-checks against a concurrent first commit). If another process
//!   moved one, the commit writes nothing and returns
//!   [`TransactionError::Fatal`]; the session refuses every later commit.
//!   `load_positions` (called after every assignment) refreshes that
//!   baseline.
//! * **A `COMMIT` whose answer was lost** (the connection broke during
//!   it): every transaction records its `txid_current()`, and the session
//!   reconnects and asks `txid_status`, waiting while the server still has
//!   it in progress; where the transaction moved positions, the offsets
//!   table has the last word (the new positions → it landed, the old ones →
//!   it did not, others → another process moved them: fenced). Landed →
//!   `Ok`; not landed → [`TransactionError::Abortable`]; not known yet (the
//!   server is down) → `Abortable`, and the next commit (or load) finds out
//!   before writing anything. If it turns out landed then, the engine has
//!   written the same records again after its abort: that prefix is dropped
//!   and the rest committed, so nothing is written twice; if the buffer
//!   does not start with exactly those records, the session stops
//!   (`Fatal`) — a restart resumes from the table, which is consistent
//!   either way.
//! * **Errors.** A lost connection or a failure before `COMMIT` is
//!   `Abortable` (nothing was written; the engine aborts, writes the same
//!   records again and retries). A row the server refuses (CHECK, foreign
//!   key, unique: SQLSTATE 22/23) is also `Abortable`, since nothing was
//!   written and a fixed table or a parent row arriving lets the retry
//!   commit; the message names the table and the server's reason. A
//!   missing table or privilege (SQLSTATE 42) is `Fatal`.

mod commit;
mod positions;
mod schema;
mod state;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use spate_connector::{
    CommitPosition, Record, SessionOwner, SinkError, StateChange, StateEntry, StoredPosition,
    TransactionError, TransactionSession, TransactionalTarget,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

pub use positions::{ensure_offsets_table, load_offsets};
pub use schema::StoreError;
pub use state::{ensure_state_table, load_stored_state};

use crate::config::{Connection, TableName};
use crate::sink::connect;
use crate::table::{Row, TablePlan};
use crate::{describe_pg_error, registry, KIND};

/// A table the session writes: its target's destination and its sink's
/// checked plan.
struct SessionTable {
    destination: String,
    plan: Arc<TablePlan>,
}

/// The session's statements, prepared on each connection.
struct Statements {
    txid: Statement,
    status: Statement,
    load: Statement,
    lock: Statement,
    insert: Statement,
    update: Statement,
    state_load: Statement,
    put: Statement,
    remove: Statement,
}

/// A connection with its prepared statements (and each table's insert,
/// prepared on first use).
struct Conn {
    client: Client,
    st: Statements,
    inserts: HashMap<usize, Statement>,
}

/// The SQL of the session's statements.
struct Sql {
    offsets: positions::Sql,
    state: state::Sql,
}

/// A commit whose answer was lost, kept until its outcome is known.
struct Doubt {
    txid: i64,
    stored: BTreeMap<String, u64>,
    rows: Vec<(usize, Row)>,
    changes: Vec<(String, StateChange)>,
    /// It turned out committed; its records are still to be dropped from
    /// the front of the buffer, where the engine wrote them again.
    landed: bool,
}

/// A PostgreSQL exactly-once session (see the module docs).
pub struct PgSession {
    name: String,
    connection: Connection,
    owner: SessionOwner,
    offsets_table: TableName,
    sql: Sql,
    conn: Option<Conn>,
    tables: Vec<SessionTable>,
    rows: Vec<(usize, Row)>,
    changes: Vec<(String, StateChange)>,
    /// Positions as this session last loaded or committed them.
    known: BTreeMap<String, u64>,
    doubt: Option<Doubt>,
    /// Why the session can never commit again (fenced).
    dead: Option<String>,
}

impl Conn {
    async fn prepare(client: Client, sql: &Sql) -> Result<Self, tokio_postgres::Error> {
        let (txid, status, load, lock, insert, update, state_load, put, remove) = tokio::try_join!(
            client.prepare("SELECT txid_current()"),
            client.prepare("SELECT txid_status($1::bigint)"),
            client.prepare(&sql.offsets.load),
            client.prepare(&sql.offsets.lock),
            client.prepare(&sql.offsets.insert),
            client.prepare(&sql.offsets.update),
            client.prepare(&sql.state.load),
            client.prepare(&sql.state.put),
            client.prepare(&sql.state.remove),
        )?;
        Ok(Self {
            client,
            st: Statements {
                txid,
                status,
                load,
                lock,
                insert,
                update,
                state_load,
                put,
                remove,
            },
            inserts: HashMap::new(),
        })
    }
}

impl PgSession {
    /// Connects, creates the offsets and state tables if missing (checking
    /// the shape of existing ones) and loads the owner's positions as the
    /// fencing baseline. `Unavailable` when the database cannot be reached;
    /// `Rejected` when a table has another shape.
    pub(crate) async fn open(
        sink_name: &str,
        connection: Connection,
        offsets_table: &TableName,
        state_table: &TableName,
        owner: SessionOwner,
    ) -> Result<Self, SinkError> {
        let unavailable = |message: String| SinkError::Unavailable {
            sink_name: sink_name.to_owned(),
            message,
        };
        let store = |e: StoreError| {
            let message = format!("opening the exactly-once session: {e}");
            if e.is_retryable() {
                unavailable(message)
            } else {
                SinkError::Rejected {
                    sink_name: sink_name.to_owned(),
                    message,
                }
            }
        };
        let client = connect(&connection).await.map_err(unavailable)?;
        ensure_offsets_table(&client, offsets_table)
            .await
            .map_err(store)?;
        ensure_state_table(&client, state_table)
            .await
            .map_err(store)?;
        let sql = Sql {
            offsets: positions::Sql::new(offsets_table),
            state: state::Sql::new(state_table),
        };
        let conn = Conn::prepare(client, &sql)
            .await
            .map_err(|e| store(e.into()))?;
        let known = load_offsets(&conn.client, offsets_table, &owner)
            .await
            .map_err(store)?;
        Ok(Self {
            name: format!(
                "{KIND}:{}/{}/{}@{}",
                owner.pipeline,
                owner.function,
                owner.source,
                connection.cluster()
            ),
            connection,
            owner,
            offsets_table: offsets_table.clone(),
            sql,
            conn: Some(conn),
            tables: Vec::new(),
            rows: Vec::new(),
            changes: Vec::new(),
            known,
            doubt: None,
            dead: None,
        })
    }

    /// Rows and state changes buffered for the open transaction.
    pub fn pending(&self) -> (usize, usize) {
        (self.rows.len(), self.changes.len())
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

    fn check_alive(&self) -> Result<(), TransactionError> {
        match &self.dead {
            Some(why) => Err(self.fatal(why.clone())),
            None => Ok(()),
        }
    }

    /// The plan of a target, or why this session cannot write it.
    fn plan_of(&self, target: &TransactionalTarget) -> Result<Arc<TablePlan>, String> {
        let cluster = self.connection.cluster();
        if target.kind != KIND {
            return Err(format!(
                "a PostgreSQL session commits only PostgreSQL tables with its positions, \
                 and `{}` is a `{}` sink; write it with `at_least_once`, or to a postgres table",
                target.destination, target.kind
            ));
        }
        if target.cluster != cluster {
            return Err(format!(
                "table {} is in database {}, but the session commits in database {cluster}: \
                 one transaction covers one database",
                target.destination, target.cluster
            ));
        }
        if let Some(table) = self
            .tables
            .iter()
            .find(|t| t.destination == target.destination)
        {
            return Ok(table.plan.clone());
        }
        registry::lookup(cluster, &target.destination).ok_or_else(|| {
            let known = registry::destinations_in(cluster);
            format!(
                "no postgres sink mapping {} was built in this process, so its checked mapping \
                 is unknown (built for {cluster}: {})",
                target.destination,
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join("; ")
                }
            )
        })
    }

    /// The session's index of a target's table, adding it on first use.
    fn table_index(&mut self, target: &TransactionalTarget) -> Result<usize, String> {
        let plan = self.plan_of(target)?;
        if let Some(i) = self
            .tables
            .iter()
            .position(|t| t.destination == target.destination)
        {
            return Ok(i);
        }
        self.tables.push(SessionTable {
            destination: target.destination.clone(),
            plan,
        });
        Ok(self.tables.len() - 1)
    }

    /// The open connection, connecting (and preparing) if there is none.
    async fn conn(&mut self) -> Result<&mut Conn, String> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let client = connect(&self.connection).await?;
            let conn = Conn::prepare(client, &self.sql)
                .await
                .map_err(|e| describe_pg_error(&e))?;
            self.conn = Some(conn);
        }
        self.conn.as_mut().ok_or_else(|| "not connected".to_owned())
    }

    /// Runs one of the session's reads for its owner (`extra` parameters
    /// follow the pipeline, function and source) once any commit in doubt
    /// is settled; a failure drops the connection and is retryable.
    async fn read_owned(
        &mut self,
        statement: fn(&Statements) -> &Statement,
        extra: &[&(dyn ToSql + Sync)],
        what: &str,
    ) -> Result<Vec<tokio_postgres::Row>, TransactionError> {
        self.settle_doubt().await?;
        let owner = self.owner.clone();
        let result = match self.conn().await {
            Ok(conn) => {
                let mut params: Vec<&(dyn ToSql + Sync)> =
                    vec![&owner.pipeline, &owner.function, &owner.source];
                params.extend_from_slice(extra);
                conn.client.query(statement(&conn.st), &params).await
            }
            Err(why) => return Err(self.unreachable(why)),
        };
        result.map_err(|e| {
            self.conn = None;
            self.abortable(format!("{what} failed: {}", describe_pg_error(&e)))
        })
    }

    fn unreachable(&self, why: String) -> TransactionError {
        self.abortable(format!(
            "cannot reach the database: {why}; nothing was written"
        ))
    }
}

#[async_trait]
impl TransactionSession for PgSession {
    fn name(&self) -> &str {
        &self.name
    }

    fn accepts(&self, target: &TransactionalTarget) -> Result<(), String> {
        self.plan_of(target).map(|_| ())
    }

    async fn write(
        &mut self,
        target: &TransactionalTarget,
        record: Record,
    ) -> Result<(), TransactionError> {
        self.check_alive()?;
        let index = self.table_index(target).map_err(|m| self.fatal(m))?;
        let row = self.tables[index].plan.row(&record).map_err(|m| {
            self.fatal(format!(
                "a record for {} does not fit its table: {m} (records are checked before they \
                 are staged, so this one cannot be dead-lettered any more)",
                target.destination
            ))
        })?;
        self.rows.push((index, row));
        Ok(())
    }

    async fn commit(
        &mut self,
        _positions: &[CommitPosition],
        stored: &[StoredPosition],
    ) -> Result<(), TransactionError> {
        let timer = spate_connector::internal_events::CommitTimer::start("postgres");
        let outcome = self.commit_stored(stored).await;
        timer.finish(&self.name, &outcome, "postgres exactly-once commit failed");
        outcome
    }

    async fn abort(&mut self) -> Result<(), TransactionError> {
        // Nothing is sent before the commit, and a failed commit rolled
        // back; a commit in doubt stays in `doubt` until it is resolved.
        self.rows.clear();
        self.changes.clear();
        Ok(())
    }

    async fn load_positions(&mut self) -> Result<Vec<StoredPosition>, TransactionError> {
        let rows = self
            .read_owned(|st| &st.load, &[], "reading the positions")
            .await?;
        let known = positions::decode(
            &self.offsets_table,
            rows.iter().map(|r| (r.get(0), r.get(1))),
        )
        .map_err(|e| self.fatal(e.to_string()))?;
        self.known = known.clone();
        Ok(StoredPosition::from_map(known))
    }

    fn stores_state(&self) -> bool {
        true
    }

    async fn write_state(
        &mut self,
        partition: &str,
        change: StateChange,
    ) -> Result<(), TransactionError> {
        self.check_alive()?;
        self.changes.push((partition.to_owned(), change));
        Ok(())
    }

    async fn load_state(
        &mut self,
        partitions: &[String],
    ) -> Result<Vec<StateEntry>, TransactionError> {
        let rows = self
            .read_owned(
                |st| &st.state_load,
                &[&partitions],
                "reading the handler state",
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| StateEntry {
                partition: r.get(0),
                key: r.get::<_, Vec<u8>>(1).into(),
                value: r.get::<_, Vec<u8>>(2).into(),
            })
            .collect())
    }
}
