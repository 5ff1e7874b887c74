//! One exactly-once test's setup and checks: a [`Fixture`] holds the
//! server, a client, the test's schema with an output table and a
//! dead-letter table (without unique keys, so a duplicate shows as a second
//! row), builds the sinks that write them (offsets and state tables in the
//! same schema) and opens the session; and it reads back, and asserts, what
//! got stored: rows, positions and handler state.

use std::collections::BTreeMap;

use bytes::Bytes;
use spate_connector::{Sink, TransactionSession, TransactionalTarget};
use spate_postgres::{load_offsets, load_stored_state, PgSink, PgSinkBuilder, TableName};

use tokio_postgres::types::FromSql;

use super::fixtures::{expected_rows, owner, stored_map, DLQ_COLUMNS, TELEMETRY_COLUMNS};
use super::{config, server, sink_node, Schema, Server};

/// A test's server, client and schema, with `schema.telemetry` (plain
/// inserts, `temperature < 1000`) and `schema.dead_letters` created.
pub struct Fixture {
    /// The server the test runs against.
    pub server: Server,
    /// A plain client for setting up and checking.
    pub client: tokio_postgres::Client,
    /// The test's schema.
    pub schema: Schema,
    /// The output table, `schema.telemetry`.
    pub telemetry: String,
    /// The dead-letter table, `schema.dead_letters`.
    pub dlq: String,
}

/// The sink writing [`Fixture::telemetry`], its transactional target and
/// the exactly-once session it opened (for [`owner`]), in that order.
pub type Opened = (PgSink, TransactionalTarget, Box<dyn TransactionSession>);

/// The dead-letter sink, built beside an [`Opened`] output sink.
pub struct DeadLetters {
    /// The sink writing [`Fixture::dlq`].
    pub sink: PgSink,
    /// Its transactional target.
    pub target: TransactionalTarget,
}

impl Fixture {
    /// A fresh schema named after `prefix` on the shared server (or a
    /// temporary one, see [`server`]).
    pub async fn new(prefix: &str) -> Self {
        Self::on(server(), prefix).await
    }

    /// A fresh schema named after `prefix` on `server`.
    pub async fn on(server: Server, prefix: &str) -> Self {
        let client = server.client().await;
        let schema = Schema::create(&client, prefix).await;
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
        Self {
            server,
            client,
            schema,
            telemetry,
            dlq,
        }
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The offsets and state tables of the schema.
    pub fn store_tables(&self) -> (TableName, TableName) {
        (
            TableName::parse(&format!("{}.spate_offsets", self.schema.name)).unwrap(),
            TableName::parse(&format!("{}.spate_state", self.schema.name)).unwrap(),
        )
    }

    /// Builds a sink connecting to `url` that writes `table` with
    /// `columns`, its offsets and state tables in the schema; `extra`
    /// entries are added to its configuration.
    async fn sink(
        &self,
        url: &str,
        table: &str,
        columns: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) -> PgSink {
        let offsets = format!("{}.spate_offsets", self.schema.name);
        let state = format!("{}.spate_state", self.schema.name);
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

    /// The sink writing the output table through `url`.
    pub async fn out_sink(&self, url: &str, extra: &[(&str, &str)]) -> PgSink {
        self.sink(url, &self.telemetry, TELEMETRY_COLUMNS, extra)
            .await
    }

    /// Builds the output sink and opens its session.
    pub async fn open(&self, url: &str, extra: &[(&str, &str)]) -> Opened {
        let out = self.out_sink(url, extra).await;
        Self::begin(out).await
    }

    /// Builds the output sink and the dead-letter sink (both through
    /// `url`), then opens the output sink's session.
    pub async fn open_with_dead_letters(&self, url: &str) -> (Opened, DeadLetters) {
        let out = self.out_sink(url, &[]).await;
        let sink = self.sink(url, &self.dlq, DLQ_COLUMNS, &[]).await;
        let target = sink.transactional_target().unwrap();
        (Self::begin(out).await, DeadLetters { sink, target })
    }

    async fn begin(out: PgSink) -> Opened {
        let out_t = out.transactional_target().unwrap();
        let session = out.begin_exactly_once(&owner()).await.expect("session");
        (out, out_t, session)
    }

    /// Opens a new connection whose transaction holds an `ACCESS EXCLUSIVE`
    /// lock on the output table, so that a commit blocks inside its
    /// transaction; `ROLLBACK` on it, or dropping it, releases the lock.
    pub async fn lock_output(&self) -> tokio_postgres::Client {
        let locker = self.server.client().await;
        locker
            .batch_execute(&format!(
                "BEGIN; LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
                self.telemetry
            ))
            .await
            .expect("output table locked");
        locker
    }

    /// Replaces the client by a new connection (after a server restart).
    pub async fn reconnect(&mut self) {
        self.client = self.server.client().await;
    }

    /// The three columns of every row `sql` returns, in its order.
    async fn select3<A, B, C>(&self, sql: &str) -> Vec<(A, B, C)>
    where
        A: for<'a> FromSql<'a>,
        B: for<'a> FromSql<'a>,
        C: for<'a> FromSql<'a>,
    {
        self.client
            .query(sql, &[])
            .await
            .expect("rows")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    /// `(device_id, ts, record_id)` of every output row, sorted.
    pub async fn rows(&self) -> Vec<(String, i64, String)> {
        self.select3(&format!(
            "SELECT device_id, ts, record_id FROM {} ORDER BY device_id, ts, record_id",
            self.telemetry
        ))
        .await
    }

    /// `(payload, reason, record_id)` of every dead-letter row, in id order.
    pub async fn dead_letters(&self) -> Vec<(String, String, String)> {
        self.select3(&format!(
            "SELECT payload, reason, record_id FROM {} ORDER BY id",
            self.dlq
        ))
        .await
    }

    /// The positions stored for [`owner`].
    pub async fn offsets(&self) -> BTreeMap<String, u64> {
        let (offsets, _) = self.store_tables();
        load_offsets(&self.client, &offsets, &owner())
            .await
            .unwrap()
    }

    /// The handler state stored for [`owner`].
    pub async fn state(&self) -> BTreeMap<(String, Bytes), Bytes> {
        let (_, state) = self.store_tables();
        load_stored_state(&self.client, &state, &owner())
            .await
            .unwrap()
    }

    /// Asserts that the output rows are those of `events`, once each.
    pub async fn assert_rows(&self, events: &[(u32, u64)]) {
        assert_eq!(self.rows().await, expected_rows(events));
    }

    /// Asserts that the stored positions are `pairs` under their stable
    /// names.
    pub async fn assert_offsets(&self, pairs: &[(u32, u64)]) {
        assert_eq!(self.offsets().await, stored_map(pairs));
    }

    /// Asserts that no row, dead letter, position or state is stored.
    pub async fn assert_nothing_stored(&self) {
        assert_eq!(self.rows().await, vec![]);
        assert_eq!(self.dead_letters().await, vec![]);
        assert!(self.offsets().await.is_empty());
        assert!(self.state().await.is_empty());
    }

    /// Drops the schema and everything in it.
    pub async fn drop_now(&self) {
        self.schema.drop_now(&self.client).await;
    }
}
