//! What the postgres sink tests share: a server with a fresh schema of the
//! test's own, and tables created in it.

use spate_testsupport::postgres::{Schema, Server};

/// A server, a client of it and a fresh schema.
pub struct Db {
    pub server: Server,
    pub client: tokio_postgres::Client,
    pub schema: Schema,
}

impl Db {
    /// A fresh schema named after `prefix` on `server`.
    pub async fn on(server: Server, prefix: &str) -> Self {
        let client = server.client().await;
        let schema = Schema::create(&client, prefix).await;
        Self {
            server,
            client,
            schema,
        }
    }

    /// Creates table `name` of the schema with these column definitions;
    /// its qualified name.
    pub async fn table(&self, name: &str, columns: &str) -> String {
        let table = format!("{}.{name}", self.schema.name);
        self.client
            .batch_execute(&format!("CREATE TABLE {table} ({columns})"))
            .await
            .expect("table created");
        table
    }
}
