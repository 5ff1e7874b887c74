//! The conformance suite ([`spate_connector::testkit::conformance`]) against
//! the `nats` (core) and `jetstream` connectors on a real nats-server (the
//! one at `NATS_URL`, or one of our own; see `spate_testsupport::nats`).
//!
//! Core NATS is at-most-once: it claims no durable positions, so only the
//! rules every source and sink keep apply. JetStream runs with two subject
//! partitions whose leases a second process can take over (the group
//! rules), a fresh stream and durable per check, and an output stream for
//! its idempotent exactly-once session.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use spate_connector::testkit::conformance::{self, Fixture, Harness, TestStream};
use spate_connector::testkit::read_source_config;
use spate_connector::{Sink, Source, SourceBuilder};
use spate_testsupport::nats::{create_stream, factory, read_sink, server, unique, Server};

/// Producer partitions (and JetStream subject partitions) per stream.
const PARTITIONS: u32 = 2;

static NAMES: AtomicU32 = AtomicU32::new(0);

/// A name no other stream of this run has (NATS names allow `_`, not `-`).
fn name(label: &str) -> String {
    let n = NAMES.fetch_add(1, Ordering::Relaxed);
    unique(&format!("{}{n}", label.replace('-', "_")))
}

fn builder(kind: &str, entries: &[(&str, &str)]) -> Result<Box<dyn SourceBuilder>, String> {
    let (builder, errors) = read_source_config(&*factory(kind), entries);
    if !errors.is_empty() {
        return Err(format!("{errors:?}"));
    }
    builder.ok_or_else(|| "no source builder".to_owned())
}

async fn sink(kind: &str, url: &str, subject: &str) -> Result<Box<dyn Sink>, String> {
    let (builder, errors) = read_sink(kind, &[("url", url), ("subject", subject)]);
    if !errors.is_empty() {
        return Err(format!("{errors:?}"));
    }
    let builder = builder.ok_or("no sink builder")?;
    builder.build().await.map_err(|e| e.to_string())
}

/// Core NATS: a subject tree per check.
struct CoreFixture {
    server: Server,
}

#[async_trait]
impl Fixture for CoreFixture {
    async fn stream(&self, label: &str) -> Result<Box<dyn TestStream>, String> {
        let prefix = name(label);
        let filter = format!("{prefix}.>");
        let source = builder(
            "nats",
            &[("url", self.server.url.as_str()), ("subject", &filter)],
        )?;
        Ok(Box::new(NatsStream {
            url: self.server.url.clone(),
            prefix,
            source,
            jetstream: None,
        }))
    }
}

/// One check's stream: core subjects `{prefix}.{partition}`, or JetStream
/// subjects `{prefix}.{partition}.test` of a stream of its own (with the
/// client that publishes into it).
struct NatsStream {
    url: String,
    prefix: String,
    source: Box<dyn SourceBuilder>,
    jetstream: Option<async_nats::Client>,
}

#[async_trait]
impl TestStream for NatsStream {
    fn partitions(&self) -> u32 {
        PARTITIONS
    }

    async fn source(&self) -> Result<Box<dyn Source>, String> {
        self.source.build().await.map_err(|e| e.to_string())
    }

    /// Core: publishes through the connector's own sink. JetStream: waits
    /// for each publish ack.
    async fn produce(&self, partition: u32, payloads: Vec<Bytes>) -> Result<(), String> {
        let Some(client) = &self.jetstream else {
            let sink = sink("nats", &self.url, &format!("{}.{partition}", self.prefix)).await?;
            return spate_testsupport::connector::write_payloads(&*sink, payloads).await;
        };
        let context = async_nats::jetstream::new(client.clone());
        let subject = format!("{}.{partition}.test", self.prefix);
        for payload in payloads {
            context
                .publish(subject.clone(), payload)
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn sink(&self) -> Result<Box<dyn Sink>, String> {
        match self.jetstream {
            None => sink("nats", &self.url, &format!("{}.0", self.prefix)).await,
            Some(_) => sink("jetstream", &self.url, &format!("{}.0.test", self.prefix)).await,
        }
    }

    async fn transaction_output(&self) -> Result<Box<dyn TestStream>, String> {
        match &self.jetstream {
            None => Err("this stream has no output for transactions".to_owned()),
            Some(client) => {
                create_jetstream(&self.url, client, &format!("{}_out", self.prefix)).await
            }
        }
    }

    /// JetStream: a second process on the same durable takes its share of
    /// the partitions' leases.
    async fn rebalance(&self) -> Result<Option<Box<dyn Source>>, String> {
        match self.jetstream {
            None => Err("this stream's source has no group".to_owned()),
            Some(_) => Ok(Some(self.source().await?)),
        }
    }
}

#[tokio::test]
async fn the_core_nats_connector_keeps_the_contract() {
    let nats = factory("nats");
    conformance::run(
        Harness::new("nats", CoreFixture { server: server() })
            .source(nats.source_capabilities().unwrap())
            .sink(nats.sink_capabilities().unwrap()),
    )
    .await;
}

/// JetStream: a stream with two subject partitions per check.
struct JetStreamFixture {
    server: Server,
    client: async_nats::Client,
}

async fn create_jetstream(
    url: &str,
    client: &async_nats::Client,
    label: &str,
) -> Result<Box<dyn TestStream>, String> {
    let stream = name(label);
    let prefix = stream.to_lowercase();
    create_stream(client, &stream, &[format!("{prefix}.>")]).await;
    let durable = format!("{stream}_durable");
    let partition_subject = format!("{prefix}.{{partition}}.*");
    let source = builder(
        "jetstream",
        &[
            ("url", url),
            ("stream", &stream),
            ("durable", &durable),
            ("partitions", "2"),
            ("partition_subject", &partition_subject),
            ("lease_ttl", "2s"),
            ("ack_wait", "3s"),
            ("fetch_wait", "300ms"),
        ],
    )?;
    Ok(Box::new(NatsStream {
        url: url.to_owned(),
        prefix,
        source,
        jetstream: Some(client.clone()),
    }))
}

#[async_trait]
impl Fixture for JetStreamFixture {
    async fn stream(&self, label: &str) -> Result<Box<dyn TestStream>, String> {
        create_jetstream(&self.server.url, &self.client, label).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jetstream_connector_keeps_the_contract() {
    let server = server();
    let client = server.client().await;
    let jetstream = factory("jetstream");
    conformance::run(
        Harness::new("jetstream", JetStreamFixture { server, client })
            .source(jetstream.source_capabilities().unwrap())
            .sink(jetstream.sink_capabilities().unwrap())
            .idempotent_transactions()
            .group()
            .wait(Duration::from_secs(20))
            .budget(Duration::from_secs(120)),
    )
    .await;
}
