//! PostgreSQL sink (`postgres`), built on `tokio-postgres`.
//!
//! ```yaml
//! outputs:
//!   - type: postgres
//!     url: postgres://spate:${PG_PASSWORD}@db:5432/metrics
//!     table: telemetry                 # or schema.telemetry
//!     columns: {device_id: /device, temperature: /temperature, ts: /ts}
//!     key: [device_id, ts]             # upsert; without it, plain INSERT
//!     batch_size: 500
//!     batch_wait: 5ms
//!     offsets_table: spate_offsets     # exactly_once only (the defaults)
//!     state_table: spate_state
//! ```
//!
//! | what | where it is checked |
//! | --- | --- |
//! | keys, URL syntax, table name syntax, column sources (`/ptr`, `field`, `$key`, `$timestamp`, `$payload`, `$record_id`, `$header.NAME`), `key` ⊆ `columns` | when the file is loaded ([`config`], no I/O) |
//! | table exists, every mapped column exists (with a "did you mean"), is writable and can take its source, NOT NULL columns without default are mapped, `key` is a primary key or unique index | when the sink is built, and by `spate validate --connect` ([`check_table`]): `SinkError::Misconfigured`, every problem at its place in the pipeline file |
//! | each value fits its column (integer range, number, boolean, UUID, varchar length, JSON for json columns, …) | at [`Sink::send`](spate_connector::Sink::send) and [`Sink::check`](spate_connector::Sink::check): `Rejected` (dead letter), with a message naming the column |
//! | what only the server knows (CHECK, foreign keys, enum labels, date syntax) | at write: the refused rows alone are `Rejected`, see [`sink`]; under `exactly_once`, at commit (the transaction fails and nothing is written, see [`exactly_once`]) |
//!
//! Values are sent as text and cast to each column's type in the statement;
//! a missing or null value takes the column default when it has one.
//!
//! # Delivery
//!
//! Capabilities: sink `{exactly_once: true, durable_positions: true,
//! resumable: false}`.
//!
//! * **`at_least_once`**: a write resolves once its transaction committed.
//!   A redelivered event writes its row again, so `key:` (an upsert) makes
//!   that idempotent; without `key` a redelivery inserts a second row.
//! * **`exactly_once`**: the engine opens the session from the function's
//!   first postgres output ([`PgSink`]'s `begin_exactly_once`), and every
//!   output row (in any postgres table of the same database, the
//!   dead-letter table included), the source's positions (in
//!   `offsets_table`, under stable partition names) and handler state (in
//!   `state_table`) commit in one transaction or not at all. A source that
//!   can resume from stored positions (`resumable`) restarts from the
//!   offsets table, and stateful handlers from the state table. A second
//!   process committing the same partitions fences the first (it stops
//!   without writing), and a `COMMIT` whose answer was lost is resolved
//!   before anything more is written. See [`exactly_once`] for the exact
//!   rules.
//!
//! No TLS yet: the connection is plain (`sslmode=disable`/`prefer`
//! behave as no TLS).

#![warn(missing_docs)]

use std::sync::Arc;

use spate_connector::factory::ConnectorFamily;
use spate_connector::{Capabilities, ConfigReader, ConnectorFactory, SinkBuilder};

pub mod config;
pub mod exactly_once;
pub mod registry;
pub mod sink;
pub mod table;

pub use config::{Connection, SinkConfig, TableName, DEFAULT_OFFSETS_TABLE, DEFAULT_STATE_TABLE};
pub use exactly_once::{
    ensure_offsets_table, ensure_state_table, load_offsets, load_stored_state, PgSession,
    StoreError,
};
pub use sink::{PgSink, PgSinkBuilder};
pub use table::{check_table, CheckError, TablePlan};

/// The `type:` name.
pub const KIND: &str = "postgres";

/// Every connector family of this crate.
pub fn connectors() -> Vec<Arc<dyn ConnectorFactory>> {
    vec![Arc::new(PostgresFactory)]
}

/// The `postgres` connector family: a sink only.
#[derive(Debug, Clone, Copy, Default)]
pub struct PostgresFactory;

impl ConnectorFamily for PostgresFactory {
    const KIND: &'static str = KIND;
    const SINK: Option<Capabilities> = Some(
        Capabilities::NONE
            .with_exactly_once()
            .with_durable_positions(),
    );

    fn read_sink(&self, config: &mut ConfigReader<'_>) -> Option<Box<dyn SinkBuilder>> {
        SinkConfig::read(config).map(|c| Box::new(PgSinkBuilder::new(c)) as Box<dyn SinkBuilder>)
    }
}

/// A database error as `SQLSTATE: message (detail)`, anything else as its
/// text; never includes the password.
pub fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {}", db.code().code(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            text
        }
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

/// True for errors about the data (SQLSTATE classes 22 and 23): writing the
/// same row again fails the same way.
pub fn is_data_error(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"))
}
