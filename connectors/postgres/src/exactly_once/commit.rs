//! One commit of a [`PgSession`]: the transaction that stores rows,
//! positions and state together (fencing first), how its failures are
//! classified, and how a `COMMIT` whose answer was lost is resolved (see the
//! module docs of [`super`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use spate_connector::{SessionOwner, StoredPosition, TransactionError};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Transaction;

use super::positions::{decode, fenced};
use super::state::{reduce, Reduced};
use super::{Conn, Doubt, PgSession, SessionTable, Statements};
use crate::config::TableName;
use crate::describe_pg_error;
use crate::sink::{dedupe, insert_rows};
use crate::table::Row;

/// How long a resolution waits for a transaction the server still reports
/// in progress (its backend not yet gone) before calling it unknown.
const IN_PROGRESS_WAIT: Duration = Duration::from_secs(5);

/// What one commit writes.
struct Batch<'a> {
    offsets_table: &'a TableName,
    stored: &'a BTreeMap<String, u64>,
    known: &'a BTreeMap<String, u64>,
    /// Per table index: the rows to write (upsert keys de-duplicated).
    tables: Vec<(usize, Vec<&'a Row>)>,
    state: Reduced<'a>,
}

/// Why the transaction did not commit.
enum Failure {
    /// Before `COMMIT` was sent: nothing was written.
    Before(tokio_postgres::Error),
    /// Fenced (or the offsets table holds nonsense): nothing was written
    /// and the session must stop.
    Fatal(String),
    /// `COMMIT` was sent and failed; `txid` tells whether it landed.
    AtCommit {
        error: tokio_postgres::Error,
        txid: i64,
    },
}

/// A doubted transaction's outcome.
enum Outcome {
    Landed,
    NotLanded,
    /// Not known yet (the database cannot be reached, the transaction is
    /// still in progress).
    Unknown(String),
    /// Another process moved the positions meanwhile.
    Fenced(String),
}

fn before(e: tokio_postgres::Error) -> Failure {
    Failure::Before(e)
}

fn as_bigint(offsets: &[u64]) -> Vec<i64> {
    // Checked to fit before the transaction began.
    offsets
        .iter()
        .map(|&o| i64::try_from(o).unwrap_or(i64::MAX))
        .collect()
}

/// The transaction itself.
async fn run(conn: &mut Conn, owner: &SessionOwner, batch: &Batch<'_>) -> Result<(), Failure> {
    let Conn {
        client,
        st,
        inserts,
    } = conn;
    let tx = client.transaction().await.map_err(before)?;
    let who: [&(dyn ToSql + Sync); 3] = [&owner.pipeline, &owner.function, &owner.source];
    let partitions: Vec<&str> = batch.stored.keys().map(String::as_str).collect();
    let lock_params: [&(dyn ToSql + Sync); 4] = [who[0], who[1], who[2], &partitions];
    let (txid, locked) = tokio::try_join!(
        tx.query_one(&st.txid, &[]),
        tx.query(&st.lock, &lock_params),
    )
    .map_err(before)?;
    let txid: i64 = txid.get(0);
    let locked = decode(
        batch.offsets_table,
        locked.iter().map(|r| (r.get(0), r.get(1))),
    )
    .map_err(|e| Failure::Fatal(e.to_string()))?;
    if let Some(why) = fenced(owner, batch.stored, &locked, batch.known) {
        return Err(Failure::Fatal(why));
    }
    write_positions(&tx, st, owner, batch, &locked).await?;
    for (index, rows) in &batch.tables {
        let Some(statement) = inserts.get(index) else {
            continue; // prepared before the transaction; never missing
        };
        insert_rows(&tx, statement, rows).await.map_err(before)?;
    }
    write_state(&tx, st, owner, &batch.state).await?;
    tx.commit()
        .await
        .map_err(|error| Failure::AtCommit { error, txid })
}

/// Inserts the positions of partitions not stored yet and updates the
/// others, fenced: a first position another process inserted meanwhile
/// stops the session.
async fn write_positions(
    tx: &Transaction<'_>,
    st: &Statements,
    owner: &SessionOwner,
    batch: &Batch<'_>,
    locked: &BTreeMap<String, u64>,
) -> Result<(), Failure> {
    let who: [&(dyn ToSql + Sync); 3] = [&owner.pipeline, &owner.function, &owner.source];
    let (mut new, mut moved) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    for (partition, &offset) in batch.stored {
        let side = if locked.contains_key(partition) {
            &mut moved
        } else {
            &mut new
        };
        side.0.push(partition.as_str());
        side.1.push(offset);
    }
    if !new.0.is_empty() {
        let inserted = tx
            .query(
                &st.insert,
                &[who[0], who[1], who[2], &new.0, &as_bigint(&new.1)],
            )
            .await
            .map_err(before)?;
        if inserted.len() != new.0.len() {
            let inserted: Vec<String> = inserted.iter().map(|r| r.get(0)).collect();
            let raced: Vec<&str> = new
                .0
                .iter()
                .filter(|p| !inserted.iter().any(|i| i == *p))
                .copied()
                .collect();
            return Err(Failure::Fatal(format!(
                "fenced: another process committed the first positions of partition(s) {} of \
                 source {} of function {} meanwhile; nothing of this transaction was written, \
                 and this session stops",
                raced.join(", "),
                owner.source,
                owner.function
            )));
        }
    }
    if !moved.0.is_empty() {
        tx.execute(
            &st.update,
            &[who[0], who[1], who[2], &moved.0, &as_bigint(&moved.1)],
        )
        .await
        .map_err(before)?;
    }
    Ok(())
}

/// Removes and puts the handler state the batch changed.
async fn write_state(
    tx: &Transaction<'_>,
    st: &Statements,
    owner: &SessionOwner,
    state: &Reduced<'_>,
) -> Result<(), Failure> {
    let who: [&(dyn ToSql + Sync); 3] = [&owner.pipeline, &owner.function, &owner.source];
    if !state.remove.0.is_empty() {
        tx.execute(
            &st.remove,
            &[who[0], who[1], who[2], &state.remove.0, &state.remove.1],
        )
        .await
        .map_err(before)?;
    }
    if !state.put.0.is_empty() {
        tx.execute(
            &st.put,
            &[
                who[0],
                who[1],
                who[2],
                &state.put.0,
                &state.put.1,
                &state.put.2,
            ],
        )
        .await
        .map_err(before)?;
    }
    Ok(())
}

/// The rows of each table, in table order, de-duplicated for upserts.
fn group<'a>(tables: &[SessionTable], rows: &'a [(usize, Row)]) -> Vec<(usize, Vec<&'a Row>)> {
    let mut grouped = Vec::new();
    for (index, table) in tables.iter().enumerate() {
        let mine: Vec<&Row> = rows
            .iter()
            .filter(|(t, _)| *t == index)
            .map(|(_, r)| r)
            .collect();
        if !mine.is_empty() {
            grouped.push((index, dedupe(&table.plan, &mine)));
        }
    }
    grouped
}

/// The SQLSTATE class of an error the server answered with.
fn class(e: &tokio_postgres::Error) -> Option<&str> {
    e.code().map(|c| &c.code()[..2])
}

impl PgSession {
    /// [`TransactionSession::commit`](spate_connector::TransactionSession::commit)
    /// with the positions as stored.
    pub(super) async fn commit_stored(
        &mut self,
        stored: &[StoredPosition],
    ) -> Result<(), TransactionError> {
        self.check_alive()?;
        self.settle_doubt().await?;
        self.drop_landed_prefix()?;
        let mut target = BTreeMap::new();
        for p in stored {
            if i64::try_from(p.next_offset).is_err() {
                return Err(self.fatal(format!(
                    "position {} of partition {} does not fit a bigint",
                    p.next_offset, p.partition
                )));
            }
            target.insert(p.partition.clone(), p.next_offset);
        }
        if self.rows.is_empty()
            && self.changes.is_empty()
            && target.iter().all(|(p, o)| self.known.get(p) == Some(o))
        {
            return Ok(());
        }
        if let Err(why) = self.conn().await {
            return Err(self.unreachable(why));
        }
        self.prepare_inserts().await?;
        let outcome = match self.conn.as_mut() {
            Some(conn) => {
                let batch = Batch {
                    offsets_table: &self.offsets_table,
                    stored: &target,
                    known: &self.known,
                    tables: group(&self.tables, &self.rows),
                    state: reduce(&self.changes),
                };
                run(conn, &self.owner, &batch).await
            }
            None => return Err(self.unreachable("not connected".to_owned())),
        };
        match outcome {
            Ok(()) => {
                self.known.extend(target);
                self.rows.clear();
                self.changes.clear();
                Ok(())
            }
            Err(Failure::Fatal(why)) => {
                self.dead = Some(why.clone());
                Err(self.fatal(why))
            }
            Err(Failure::Before(e)) => Err(self.failed_before(&e)),
            Err(Failure::AtCommit { error, txid }) => {
                if matches!(class(&error), Some("22" | "23" | "40")) {
                    // The server answered COMMIT with the transaction's own
                    // failure (a deferred constraint, a serialization
                    // failure): it rolled back.
                    return Err(self.failed_before(&error));
                }
                self.conn = None;
                let lost = describe_pg_error(&error);
                self.doubt = Some(Doubt {
                    txid,
                    stored: target,
                    rows: std::mem::take(&mut self.rows),
                    changes: std::mem::take(&mut self.changes),
                    landed: false,
                });
                match self.settle_doubt().await {
                    Ok(()) => match self.doubt.take() {
                        // It landed: the records are committed.
                        Some(doubt) if doubt.landed => Ok(()),
                        _ => Err(self.abortable(format!(
                            "COMMIT failed ({lost}) and did not land: nothing was written"
                        ))),
                    },
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Prepares the insert of every table with buffered rows.
    async fn prepare_inserts(&mut self) -> Result<(), TransactionError> {
        let mut wanted: Vec<usize> = self.rows.iter().map(|(t, _)| *t).collect();
        wanted.sort_unstable();
        wanted.dedup();
        for index in wanted {
            let Some(conn) = self.conn.as_mut() else {
                return Err(self.unreachable("not connected".to_owned()));
            };
            if conn.inserts.contains_key(&index) {
                continue;
            }
            match conn
                .client
                .prepare(&self.tables[index].plan.insert_sql)
                .await
            {
                Ok(statement) => {
                    conn.inserts.insert(index, statement);
                }
                Err(e) => return Err(self.failed_before(&e)),
            }
        }
        Ok(())
    }

    /// Classifies a failure before `COMMIT` (nothing was written).
    fn failed_before(&mut self, e: &tokio_postgres::Error) -> TransactionError {
        let message = describe_pg_error(e);
        match class(e) {
            Some("22" | "23") => self.abortable(format!(
                "the database refused a row or state change, so nothing was written: {message}; \
                 the retry writes the same records, so it fails the same way until the table \
                 (or the data it refers to) is fixed"
            )),
            Some("40") => self.abortable(format!(
                "the transaction was rolled back ({message}); nothing was written"
            )),
            Some("42") => self.fatal(format!(
                "the database refused the session's statements ({message}): a table or \
                 column is missing or not writable; fix it and restart"
            )),
            _ => {
                // Connection lost, server shutting down, plan invalidated:
                // start over on a fresh connection.
                self.conn = None;
                self.abortable(format!(
                    "the transaction failed before COMMIT, so nothing was written: {message}"
                ))
            }
        }
    }

    /// Resolves a doubted commit, if any: `Ok` once its outcome is known
    /// (a landed one is marked and its positions become the baseline),
    /// `Abortable` while it is not.
    pub(super) async fn settle_doubt(&mut self) -> Result<(), TransactionError> {
        let Some(doubt) = &self.doubt else {
            return Ok(());
        };
        if doubt.landed {
            return Ok(());
        }
        let (txid, stored) = (doubt.txid, doubt.stored.clone());
        match self.resolve(txid, &stored).await {
            Outcome::Landed => {
                tracing::info!(session = %self.name, txid, "a COMMIT whose answer was lost did land");
                self.known.extend(stored);
                if let Some(doubt) = self.doubt.as_mut() {
                    doubt.landed = true;
                }
                Ok(())
            }
            Outcome::NotLanded => {
                tracing::info!(session = %self.name, txid, "a COMMIT whose answer was lost did not land");
                self.doubt = None;
                Ok(())
            }
            Outcome::Fenced(why) => {
                self.dead = Some(why.clone());
                Err(self.fatal(why))
            }
            Outcome::Unknown(why) => Err(self.abortable(format!(
                "a COMMIT's answer was lost and its outcome is not known yet ({why}); nothing \
                 more is written until it is"
            ))),
        }
    }

    /// After a doubted commit turned out committed: the engine, told it
    /// failed, aborted and wrote the same records again, so the buffer
    /// must start with exactly them; they are dropped (already committed).
    fn drop_landed_prefix(&mut self) -> Result<(), TransactionError> {
        let Some(doubt) = self.doubt.take_if(|d| d.landed) else {
            return Ok(());
        };
        if self.rows.starts_with(&doubt.rows) && self.changes.starts_with(&doubt.changes) {
            self.rows.drain(..doubt.rows.len());
            self.changes.drain(..doubt.changes.len());
            return Ok(());
        }
        let why = format!(
            "a COMMIT whose answer was lost did land (transaction {}), but the records written \
             since do not start with its records, so they cannot be told apart from new ones; \
             stopping without writing them: a restart resumes from the offsets table, which \
             is consistent",
            doubt.txid
        );
        self.dead = Some(why.clone());
        Err(self.fatal(why))
    }

    /// Finds out whether the doubted transaction `txid` (which would have
    /// moved the positions to `stored`) committed. The server's
    /// `txid_status` is asked first, waiting briefly while the transaction
    /// is still in progress. Where the positions moved, the offsets table
    /// then has the last word, since the transaction itself moved them:
    /// the new positions → landed; the old ones → not (even if a transaction
    /// id lost in a crash was reused since and reports committed); anything
    /// else → another process moved them (fenced).
    async fn resolve(&mut self, txid: i64, stored: &BTreeMap<String, u64>) -> Outcome {
        let deadline = Instant::now() + IN_PROGRESS_WAIT;
        let status = loop {
            let conn = match self.conn().await {
                Ok(conn) => conn,
                Err(why) => return Outcome::Unknown(format!("cannot reach the database: {why}")),
            };
            match conn.client.query_one(&conn.st.status, &[&txid]).await {
                Ok(row) => match row.get::<_, Option<String>>(0) {
                    Some(s) if s == "in progress" && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Some(s) if s == "in progress" => {
                        return Outcome::Unknown(format!("transaction {txid} is still in progress"))
                    }
                    status => break status,
                },
                // "transaction ID is in the future": the server lost it in
                // a crash before anything of it was durable.
                Err(e) if e.code() == Some(&SqlState::INVALID_PARAMETER_VALUE) => {
                    break Some("aborted".to_owned())
                }
                Err(e) => {
                    self.conn = None;
                    return Outcome::Unknown(describe_pg_error(&e));
                }
            }
        };
        let status = status.as_deref();
        let moved = stored.iter().any(|(p, o)| self.known.get(p) != Some(o));
        if !moved {
            return match status {
                Some("committed") => Outcome::Landed,
                Some("aborted") => Outcome::NotLanded,
                _ => Outcome::Unknown(format!(
                    "the server no longer knows transaction {txid}, and it moved no position, \
                     so the offsets table cannot tell"
                )),
            };
        }
        let owner = self.owner.clone();
        let table = self.offsets_table.clone();
        let now = match self.conn().await {
            Ok(conn) => super::load_offsets(&conn.client, &table, &owner).await,
            Err(why) => return Outcome::Unknown(format!("cannot reach the database: {why}")),
        };
        let now = match now {
            Ok(now) => now,
            Err(e) => {
                self.conn = None;
                return Outcome::Unknown(e.to_string());
            }
        };
        let landed = stored.iter().all(|(p, o)| now.get(p) == Some(o));
        let untouched = stored.keys().all(|p| now.get(p) == self.known.get(p));
        match (landed, untouched, status) {
            (true, _, Some("committed") | None) => Outcome::Landed,
            (false, true, _) => {
                if status == Some("committed") {
                    tracing::warn!(session = %self.name, txid, "txid_status says committed, but the positions did not move: the id was reused after a crash");
                }
                Outcome::NotLanded
            }
            _ => Outcome::Fenced(format!(
                "fenced: a COMMIT whose answer was lost (transaction {txid}, {}) left positions \
                 that are neither the old nor the new ones: another process committed this \
                 source's partitions meanwhile; this session stops",
                status.unwrap_or("unknown to the server")
            )),
        }
    }
}
