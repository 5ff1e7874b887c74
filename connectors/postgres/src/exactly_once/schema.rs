//! The offsets and state tables' shape: created if missing, and checked when
//! they exist, so a table of another shape (an older spate's numeric
//! partitions, a missing primary key) is refused at start with a message
//! saying what differs, instead of failing every commit.

use std::collections::BTreeSet;
use std::fmt;

use tokio_postgres::GenericClient;

use crate::config::TableName;
use crate::describe_pg_error;
use crate::table::unique_column_sets;

/// Reading or preparing the offsets or state table failed.
#[derive(Debug)]
pub enum StoreError {
    /// The database could not be asked (described without the password).
    Database(tokio_postgres::Error),
    /// The table exists with another shape; the message says what differs.
    Shape(String),
    /// The table holds something spate never writes (a negative offset).
    Corrupt(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Database(e) => f.write_str(&describe_pg_error(e)),
            Self::Shape(message) | Self::Corrupt(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Database(e) => Some(e),
            Self::Shape(_) | Self::Corrupt(_) => None,
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Database(e)
    }
}

impl StoreError {
    /// True when asking again may succeed (the database was unreachable or
    /// busy), false for a table that must be fixed first.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Database(e) if !e.code().is_some_and(|c| c.code().starts_with("42")))
    }
}

/// What one of spate's tables must look like.
pub(crate) struct Shape {
    /// What the table is for, in messages (`offsets table`).
    pub what: &'static str,
    /// `(column, format_type)` of every column spate reads or writes.
    pub columns: &'static [(&'static str, &'static str)],
    /// The primary key (or a unique index) the upserts conflict on.
    pub key: &'static [&'static str],
    /// The `CREATE TABLE` body (between the parentheses).
    pub ddl: &'static str,
}

/// Creates the table if it does not exist, then checks its shape.
pub(crate) async fn ensure_table(
    client: &impl GenericClient,
    table: &TableName,
    shape: &Shape,
) -> Result<(), StoreError> {
    let create = format!(
        "CREATE TABLE IF NOT EXISTS {} ({})",
        table.quoted(),
        shape.ddl
    );
    if let Err(e) = client.batch_execute(&create).await {
        // Two processes creating it at once: one of them gets a unique
        // violation on the catalog (23505) or `duplicate_table` (42P07);
        // the table exists either way, which the shape check confirms.
        let raced = e
            .code()
            .is_some_and(|c| matches!(c.code(), "23505" | "42P07"));
        if !raced {
            return Err(e.into());
        }
    }
    check_shape(client, table, shape).await
}

async fn check_shape(
    client: &impl GenericClient,
    table: &TableName,
    shape: &Shape,
) -> Result<(), StoreError> {
    let oid: Option<u32> = client
        .query_opt(
            "SELECT c.oid FROM pg_class c WHERE c.oid = to_regclass($1::text) AND c.relkind IN ('r', 'p')",
            &[&table.quoted()],
        )
        .await?
        .map(|row| row.get(0));
    let Some(oid) = oid else {
        return Err(StoreError::Shape(format!(
            "the {} {table} is not a table",
            shape.what
        )));
    };
    let columns: Vec<(String, String)> = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
            &[&oid],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let mut problems = Vec::new();
    for (name, sql_type) in shape.columns {
        match columns.iter().find(|(n, _)| n == name) {
            None => problems.push(format!("it has no column `{name}` ({sql_type})")),
            Some((_, found)) if found != sql_type => problems.push(format!(
                "its column `{name}` is {found}, spate stores {sql_type} there"
            )),
            Some(_) => {}
        }
    }
    let unique = unique_column_sets(client, oid).await?;
    let key: BTreeSet<String> = shape.key.iter().map(|k| (*k).to_owned()).collect();
    if !unique.contains(&key) {
        problems.push(format!(
            "it has no primary key or unique index on exactly ({})",
            shape.key.join(", ")
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(StoreError::Shape(format!(
        "the {} {table} exists with another shape: {}; drop or rename it (spate creates it), \
         or name another one in the sink settings",
        shape.what,
        problems.join("; ")
    )))
}
