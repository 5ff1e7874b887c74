//! The `postgres` sink: records become rows, batched into one multi-row
//! `INSERT` (or upsert) per transaction by one writer task.
//!
//! [`Sink::send`] turns the record into a row at once — a value that does not
//! fit its column is [`SinkError::Rejected`] there (a dead letter) — and
//! queues it; the returned [`PendingWrite`] resolves when the transaction
//! holding the row commits. The writer takes up to `batch_size` rows,
//! waiting at most `batch_wait` for a batch to fill, and writes them in
//! acceptance order:
//!
//! * **Committed**: every row's write resolves `Ok`.
//! * **A data error** (SQLSTATE class 22 or 23: a value the server refused,
//!   a NOT NULL, CHECK, foreign-key or unique violation): the batch is
//!   written again row by row, each under a savepoint, in one transaction;
//!   rows the server refuses resolve `Rejected` with its message, the others
//!   `Ok` at commit.
//! * **Anything else** (connection lost, server restarting, table locked
//!   away): the batch *and every row queued behind it* resolve
//!   `Unavailable`, so the engine retries them in their order; the writer
//!   reconnects with exponential backoff (100 ms doubling up to
//!   `max_backoff`) before the next batch.
//!
//! With `key:` rows of one batch that share a key are reduced to the last
//! one before the upsert (PostgreSQL refuses to update a row twice in one
//! statement); all of them resolve `Ok` when it commits. Under
//! `at_least_once` an upsert on `key` is what makes a redelivered event
//! harmless: its row is written again with the same values.
//!
//! Under `exactly_once` the writer task is not used: the engine checks each
//! record with [`Sink::check`] (the same conversion as `send`, so a value
//! that does not fit is dead-lettered alone) and writes it into the session
//! opened by [`Sink::begin_exactly_once`] (see [`crate::exactly_once`]).
//! Every sink registers its checked plan in [`crate::registry`] when built,
//! under its [`TransactionalTarget`]: `cluster` is `host:port/db`,
//! `destination` the table with its mapping
//! ([`crate::registry::destination`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use spate_connector::{
    PendingWrite, Record, SessionOwner, Sink, SinkBuilder, SinkError, TransactionSession,
    TransactionalTarget,
};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, NoTls, Statement};

use crate::config::{Connection, SinkConfig, TableName};
use crate::exactly_once::PgSession;
use crate::table::{check_table, CheckError, Row, TablePlan};
use crate::{describe_pg_error, is_data_error, registry};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Builds a [`PgSink`] when the pipeline starts.
#[derive(Debug)]
pub struct PgSinkBuilder {
    config: SinkConfig,
}

impl PgSinkBuilder {
    /// A builder for checked settings.
    pub fn new(config: SinkConfig) -> Self {
        Self { config }
    }

    /// Connects, checks the table (see [`crate::check_table`]), registers
    /// the checked plan for exactly-once sessions and starts the writer
    /// task.
    pub async fn build_pg(&self) -> Result<PgSink, SinkError> {
        let config = &self.config;
        let name = format!("postgres:{}", config.table);
        let (client, plan) = self.connect_and_check().await?;
        let plan = Arc::new(plan);
        let target = TransactionalTarget {
            kind: crate::KIND,
            cluster: config.connection.cluster().to_owned(),
            destination: registry::destination(&plan),
        };
        registry::register(&target.cluster, &target.destination, plan.clone());
        let statement =
            client
                .prepare(&plan.insert_sql)
                .await
                .map_err(|e| SinkError::Unavailable {
                    sink_name: name.clone(),
                    message: describe_pg_error(&e),
                })?;
        let (tx, rx) = mpsc::channel(config.batch_size.saturating_mul(4).max(64));
        let writer = Writer {
            name: name.clone(),
            connection: config.connection.clone(),
            plan: plan.clone(),
            client: Some((client, statement)),
            backoff: FIRST_BACKOFF,
            max_backoff: config.max_backoff,
            connect_failed: false,
            lost: false,
            batch_size: config.batch_size,
            batch_wait: config.batch_wait,
            rx,
            transactions: 0,
        };
        tokio::spawn(writer.run());
        Ok(PgSink {
            name,
            plan,
            target,
            connection: config.connection.clone(),
            offsets_table: config.offsets_table.clone(),
            state_table: config.state_table.clone(),
            tx,
        })
    }
}

#[async_trait]
impl SinkBuilder for PgSinkBuilder {
    async fn build(&self) -> Result<Box<dyn Sink>, SinkError> {
        Ok(Box::new(self.build_pg().await?))
    }

    /// Connects and checks the mapping against the table, writing nothing.
    async fn check(&self) -> Result<(), SinkError> {
        self.connect_and_check().await.map(|_| ())
    }
}

impl PgSinkBuilder {
    /// Connects and checks the table (see [`crate::check_table`]); a
    /// mapping that does not fit is [`SinkError::Misconfigured`], every
    /// problem at its place in the pipeline file.
    async fn connect_and_check(&self) -> Result<(Client, TablePlan), SinkError> {
        let config = &self.config;
        let name = format!("postgres:{}", config.table);
        let client =
            connect(&config.connection)
                .await
                .map_err(|message| SinkError::Unavailable {
                    sink_name: name.clone(),
                    message,
                })?;
        let plan = check_table(&client, config).await.map_err(|e| match e {
            CheckError::Unavailable(message) => SinkError::Unavailable {
                sink_name: name.clone(),
                message,
            },
            CheckError::Mapping(problems) => SinkError::Misconfigured {
                sink_name: name.clone(),
                problems,
            },
        })?;
        Ok((client, plan))
    }
}

enum Msg {
    Row(Row, oneshot::Sender<Result<(), SinkError>>),
    Flush(oneshot::Sender<u64>),
}

/// A batched, acknowledged PostgreSQL table writer (see the module docs).
pub struct PgSink {
    name: String,
    plan: Arc<TablePlan>,
    target: TransactionalTarget,
    connection: Connection,
    offsets_table: TableName,
    state_table: TableName,
    tx: mpsc::Sender<Msg>,
}

impl PgSink {
    /// The checked mapping this sink writes with.
    pub fn plan(&self) -> Arc<TablePlan> {
        self.plan.clone()
    }

    /// Where an exactly-once session opened by this sink stores positions.
    pub fn offsets_table(&self) -> &TableName {
        &self.offsets_table
    }

    /// Where an exactly-once session opened by this sink stores state.
    pub fn state_table(&self) -> &TableName {
        &self.state_table
    }

    /// The exactly-once session as its concrete type (what
    /// [`Sink::begin_exactly_once`] boxes).
    pub async fn open_session(&self, owner: &SessionOwner) -> Result<PgSession, SinkError> {
        PgSession::open(
            &self.name,
            self.connection.clone(),
            &self.offsets_table,
            &self.state_table,
            owner.clone(),
        )
        .await
    }

    /// How many transactions the writer has committed so far (waits for
    /// everything queued before the call).
    pub async fn committed_transactions(&self) -> Result<u64, SinkError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Msg::Flush(done))
            .await
            .map_err(|_| self.stopped())?;
        wait.await.map_err(|_| self.stopped())
    }

    fn stopped(&self) -> SinkError {
        SinkError::Unavailable {
            sink_name: self.name.clone(),
            message: "the writer task stopped".to_owned(),
        }
    }
}

#[async_trait]
impl Sink for PgSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&self, record: Record) -> Result<(), SinkError> {
        self.send(record).await?.await
    }

    async fn send(&self, record: Record) -> Result<PendingWrite, SinkError> {
        let row = self
            .plan
            .row(&record)
            .map_err(|message| SinkError::Rejected {
                sink_name: self.name.clone(),
                message,
            })?;
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Msg::Row(row, done))
            .await
            .map_err(|_| self.stopped())?;
        let stopped = self.stopped();
        Ok(Box::pin(async move { wait.await.unwrap_or(Err(stopped)) }))
    }

    fn transactional_target(&self) -> Option<TransactionalTarget> {
        Some(self.target.clone())
    }

    fn check(&self, record: &Record) -> Result<(), SinkError> {
        self.plan
            .row(record)
            .map(|_| ())
            .map_err(|message| SinkError::Rejected {
                sink_name: self.name.clone(),
                message,
            })
    }

    async fn begin_exactly_once(
        &self,
        owner: &SessionOwner,
    ) -> Result<Box<dyn TransactionSession>, SinkError> {
        Ok(Box::new(self.open_session(owner).await?))
    }

    async fn flush(&self) -> Result<(), SinkError> {
        self.committed_transactions().await.map(|_| ())
    }
}

/// Opens a connection and drives it on its own task; `Err` says why not
/// (without the password).
pub(crate) async fn connect(connection: &Connection) -> Result<Client, String> {
    let attempt = connection.config.connect(NoTls);
    let (client, conn) = match tokio::time::timeout(connection.connect_timeout, attempt).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            return Err(format!(
                "cannot connect to {}: {}",
                connection.display(),
                describe_pg_error(&e)
            ))
        }
        Err(_) => {
            return Err(format!(
                "cannot connect to {}: no answer within {:?}",
                connection.display(),
                connection.connect_timeout
            ))
        }
    };
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    });
    Ok(client)
}

/// Writes rows with the plan's batch statement (no transaction handling).
pub(crate) async fn insert_rows<C: GenericClient>(
    client: &C,
    statement: &Statement,
    rows: &[&Row],
) -> Result<u64, tokio_postgres::Error> {
    let width = statement.params().len();
    let mut columns: Vec<Vec<Option<&str>>> = vec![Vec::with_capacity(rows.len()); width];
    for row in rows {
        for (i, value) in row.iter().enumerate() {
            columns[i].push(value.as_deref());
        }
    }
    let params: Vec<&(dyn ToSql + Sync)> =
        columns.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
    client.execute(statement, &params).await
}

/// The rows to write for a batch: for an upsert, the last row of each key.
pub(crate) fn dedupe<'r>(plan: &TablePlan, rows: &[&'r Row]) -> Vec<&'r Row> {
    if plan.key.is_empty() {
        return rows.to_vec();
    }
    let mut last: HashMap<Vec<Option<&str>>, usize> = HashMap::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        last.insert(plan.key_of(row), i);
    }
    rows.iter()
        .enumerate()
        .filter(|(i, row)| last.get(&plan.key_of(row)) == Some(i))
        .map(|(_, row)| *row)
        .collect()
}

struct Writer {
    name: String,
    connection: Connection,
    plan: Arc<TablePlan>,
    client: Option<(Client, Statement)>,
    backoff: Duration,
    max_backoff: Duration,
    connect_failed: bool,
    /// The connection was lost and not yet established again.
    lost: bool,
    batch_size: usize,
    batch_wait: Duration,
    rx: mpsc::Receiver<Msg>,
    transactions: u64,
}

type Waiter = oneshot::Sender<Result<(), SinkError>>;

impl Writer {
    async fn run(mut self) {
        while let Some(first) = self.rx.recv().await {
            let mut rows: Vec<Row> = Vec::new();
            let mut waiters: Vec<Waiter> = Vec::new();
            let mut flush = None;
            match first {
                Msg::Row(row, done) => {
                    rows.push(row);
                    waiters.push(done);
                }
                Msg::Flush(done) => flush = Some(done),
            }
            if flush.is_none() {
                let deadline = tokio::time::Instant::now() + self.batch_wait;
                while rows.len() < self.batch_size {
                    match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                        Ok(Some(Msg::Row(row, done))) => {
                            rows.push(row);
                            waiters.push(done);
                        }
                        Ok(Some(Msg::Flush(done))) => {
                            flush = Some(done);
                            break;
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            if !rows.is_empty() {
                self.write_batch(rows, waiters).await;
            }
            if let Some(done) = flush {
                let _ = done.send(self.transactions);
            }
        }
    }

    fn unavailable(&self, message: String) -> SinkError {
        SinkError::Unavailable {
            sink_name: self.name.clone(),
            message,
        }
    }

    /// Fails every row queued behind a failed batch, so the engine retries
    /// them in order after it.
    fn fail_queued(&mut self, message: &str) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Row(_, done) => {
                    let _ = done.send(Err(self.unavailable(message.to_owned())));
                }
                Msg::Flush(done) => {
                    let _ = done.send(self.transactions);
                }
            }
        }
    }

    fn fail_all(&mut self, waiters: Vec<Waiter>, message: String) {
        tracing::debug!(sink = %self.name, rows = waiters.len(), "postgres write failed");
        spate_connector::internal_events::ProduceError {
            connector: "postgres",
            name: &self.name,
            error: &message,
            context: "postgres write failed; the engine retries",
        }
        .emit();
        for done in waiters {
            let _ = done.send(Err(self.unavailable(message.clone())));
        }
        self.fail_queued(&message);
    }

    async fn ensure_connected(&mut self) -> Result<(), String> {
        if self.client.as_ref().is_some_and(|(c, _)| !c.is_closed()) {
            return Ok(());
        }
        if self.client.take().is_some() {
            spate_connector::internal_events::ConnectionLost {
                connector: "postgres",
                target: &self.name,
                error: None,
                context: "postgres connection lost; reconnecting",
            }
            .emit();
            self.lost = true;
        }
        if self.connect_failed {
            tokio::time::sleep(self.backoff).await;
        }
        let attempt = async {
            let client = connect(&self.connection).await?;
            let statement = client
                .prepare(&self.plan.insert_sql)
                .await
                .map_err(|e| describe_pg_error(&e))?;
            Ok::<_, String>((client, statement))
        };
        match attempt.await {
            Ok(pair) => {
                self.client = Some(pair);
                tracing::info!(sink = %self.name, "connected to {}", self.connection.display());
                self.connect_failed = false;
                if std::mem::take(&mut self.lost) {
                    spate_connector::internal_events::Reconnected {
                        connector: "postgres",
                        target: &self.name,
                        context: "postgres connection (re)established",
                    }
                    .emit();
                }
                self.backoff = FIRST_BACKOFF;
                Ok(())
            }
            Err(e) => {
                if self.connect_failed {
                    self.backoff = (self.backoff * 2).min(self.max_backoff);
                }
                self.connect_failed = true;
                Err(e)
            }
        }
    }

    async fn write_batch(&mut self, rows: Vec<Row>, waiters: Vec<Waiter>) {
        if let Err(message) = self.ensure_connected().await {
            return self.fail_all(waiters, message);
        }
        let Some((client, statement)) = self.client.as_mut() else {
            return self.fail_all(waiters, "not connected".to_owned());
        };
        let refs: Vec<&Row> = rows.iter().collect();
        let batch = dedupe(&self.plan, &refs);
        let result = async {
            let tx = client.transaction().await?;
            insert_rows(&tx, statement, &batch).await?;
            tx.commit().await
        }
        .await;
        match result {
            Ok(()) => {
                self.transactions += 1;
                for done in waiters {
                    let _ = done.send(Ok(()));
                }
            }
            Err(e) if is_data_error(&e) => {
                tracing::debug!(sink = %self.name, error = %describe_pg_error(&e), "batch refused; writing row by row");
                match isolate(client, statement, &refs).await {
                    Ok(outcomes) => {
                        self.transactions += 1;
                        for (done, outcome) in waiters.into_iter().zip(outcomes) {
                            let _ = done.send(outcome.map_err(|message| SinkError::Rejected {
                                sink_name: self.name.clone(),
                                message,
                            }));
                        }
                    }
                    Err(e) => {
                        self.client = None;
                        let message = describe_pg_error(&e);
                        self.fail_all(waiters, message);
                    }
                }
            }
            Err(e) => {
                // Unknown state (lost connection, plan invalidated by DDL):
                // start over on a fresh connection.
                self.client = None;
                let message = describe_pg_error(&e);
                self.fail_all(waiters, message);
            }
        }
    }
}

/// Writes rows one by one under savepoints in one transaction: `Ok(outcome
/// per row)`, each `Err` carrying the server's reason.
async fn isolate(
    client: &mut Client,
    statement: &Statement,
    rows: &[&Row],
) -> Result<Vec<Result<(), String>>, tokio_postgres::Error> {
    let mut tx = client.transaction().await?;
    let mut outcomes = Vec::with_capacity(rows.len());
    for row in rows {
        let savepoint = tx.savepoint("spate_row").await?;
        match insert_rows(&savepoint, statement, &[row]).await {
            Ok(_) => {
                savepoint.commit().await?;
                outcomes.push(Ok(()));
            }
            Err(e) if is_data_error(&e) => {
                savepoint.rollback().await?;
                outcomes.push(Err(describe_pg_error(&e)));
            }
            Err(e) => return Err(e),
        }
    }
    tx.commit().await?;
    Ok(outcomes)
}
