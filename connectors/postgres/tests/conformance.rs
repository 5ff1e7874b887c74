//! The conformance suite ([`spate_connector::testkit::conformance`]) against
//! the `postgres` sink on a real PostgreSQL (the shared server, or a
//! cluster of our own; see `spate_testsupport::postgres`).
//!
//! Each check gets its own table `(id bigserial, payload text)` in a schema
//! of the run, with the run's own offsets and state tables; the suite reads
//! what the table holds with a plain client, as no source of this
//! connector could.

use async_trait::async_trait;
use bytes::Bytes;
use spate_connector::config::ConfigErrors;
use spate_connector::testkit::conformance::{self, Fixture, Harness, TestStream};
use spate_connector::{ConfigReader, ConnectorFactory, Sink};
use spate_postgres::PostgresFactory;
use spate_testsupport::postgres::{server, sink_node, Schema, Server};

struct PostgresFixture {
    server: Server,
    client: tokio_postgres::Client,
    schema: Schema,
}

struct TableStream {
    url: String,
    client: tokio_postgres::Client,
    table: String,
    offsets: String,
    state: String,
}

#[async_trait]
impl Fixture for PostgresFixture {
    async fn stream(&self, label: &str) -> Result<Box<dyn TestStream>, String> {
        let table = format!("{}.{}", self.schema.name, label.replace('-', "_"));
        self.client
            .batch_execute(&format!(
                "CREATE TABLE {table} (id bigserial PRIMARY KEY, payload text NOT NULL)"
            ))
            .await
            .map_err(|e| e.to_string())?;
        Ok(Box::new(TableStream {
            url: self.server.url(),
            client: self.server.client().await,
            table,
            offsets: format!("{}.spate_offsets", self.schema.name),
            state: format!("{}.spate_state", self.schema.name),
        }))
    }
}

#[async_trait]
impl TestStream for TableStream {
    /// Built through the factory, as the pipeline loader does.
    async fn sink(&self) -> Result<Box<dyn Sink>, String> {
        let node = sink_node(
            &[
                ("url", &self.url),
                ("table", &self.table),
                ("offsets_table", &self.offsets),
                ("state_table", &self.state),
            ],
            &[("payload", "$payload")],
            &[],
        );
        let errors = ConfigErrors::default();
        let builder = {
            let mut reader = ConfigReader::new(&node, "outputs[0]", &errors);
            PostgresFactory.sink(&mut reader)
        };
        let errors = errors.into_inner();
        if !errors.is_empty() {
            return Err(format!("{errors:?}"));
        }
        let builder = builder.ok_or("no sink builder")?;
        builder.build().await.map_err(|e| e.to_string())
    }

    async fn stored(&self) -> Result<Option<Vec<Bytes>>, String> {
        let rows = self
            .client
            .query(
                &format!("SELECT payload FROM {} ORDER BY id", self.table),
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(Some(
            rows.iter()
                .map(|row| Bytes::from(row.get::<_, String>(0)))
                .collect(),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_connector_keeps_the_contract() {
    let server = server();
    let client = server.client().await;
    let schema = Schema::create(&client, "conformance").await;
    let cleanup = server.client().await;
    let name = schema.name.clone();
    conformance::run(
        Harness::new(
            "postgres",
            PostgresFixture {
                server,
                client,
                schema,
            },
        )
        .sink(PostgresFactory.sink_capabilities().unwrap()),
    )
    .await;
    Schema { name }.drop_now(&cleanup).await;
}
