//! The test kit's own connectors as conformance fixtures: [`MemoryFixture`]
//! (a [`MemoryLog`] per check, with a sink that appends to it and a
//! [`MemorySink`] its transactions write to) and [`MemoryDatabaseFixture`]
//! (a [`MemoryDatabase`] table per check). They keep the contract, so the
//! suite passes on them; the suite's own tests use them.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Fixture, TestStream};
use crate::error::SinkError;
use crate::event::{PartitionId, Record};
use crate::factory::Capabilities;
use crate::sink::Sink;
use crate::source::Source;
use crate::testkit::{MemoryDatabase, MemoryLog, MemorySink};

/// What a [`MemoryLog`]'s source keeps: everything.
pub const MEMORY_SOURCE: Capabilities = Capabilities::NONE
    .with_exactly_once()
    .with_durable_positions()
    .with_resumable();

/// What a [`MemoryDatabase`] table keeps: records and positions together.
pub const MEMORY_TABLE: Capabilities = Capabilities::NONE
    .with_exactly_once()
    .with_durable_positions();

/// A fresh [`MemoryLog`] of `partitions` partitions per check.
pub struct MemoryFixture {
    partitions: u32,
}

impl MemoryFixture {
    /// Logs of `partitions` partitions (at least 1).
    pub fn new(partitions: u32) -> Self {
        Self {
            partitions: partitions.max(1),
        }
    }
}

#[async_trait]
impl Fixture for MemoryFixture {
    async fn stream(&self, label: &str) -> Result<Box<dyn TestStream>, String> {
        Ok(Box::new(LogStream {
            log: MemoryLog::new(label, self.partitions),
            label: label.to_owned(),
            partitions: self.partitions,
        }))
    }
}

struct LogStream {
    log: MemoryLog,
    label: String,
    partitions: u32,
}

#[async_trait]
impl TestStream for LogStream {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    async fn source(&self) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(self.log.source()))
    }

    async fn produce(&self, partition: u32, payloads: Vec<Bytes>) -> Result<(), String> {
        for payload in payloads {
            self.log.append(partition, None, payload);
        }
        Ok(())
    }

    async fn sink(&self) -> Result<Box<dyn Sink>, String> {
        Ok(Box::new(LogSink {
            log: self.log.clone(),
            name: format!("memory:{}", self.label),
            partitions: self.partitions,
            next: AtomicU32::new(0),
        }))
    }

    async fn transaction_output(&self) -> Result<Box<dyn TestStream>, String> {
        let sink = MemorySink::new(&format!("{}-output", self.label));
        self.log.attach(&sink);
        Ok(Box::new(SinkStream(sink)))
    }

    /// Revokes every partition, and assigns them to the same session again
    /// once it released them all.
    async fn rebalance(&self) -> Result<Option<Box<dyn Source>>, String> {
        let all: Vec<PartitionId> = (0..self.partitions).collect();
        self.log.revoke(&all);
        let log = self.log.clone();
        tokio::spawn(async move {
            for _ in 0..6000 {
                if all.iter().all(|p| log.released().contains(p)) {
                    log.assign(&all);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Ok(None)
    }
}

/// Appends each record to the log, round robin over its partitions.
struct LogSink {
    log: MemoryLog,
    name: String,
    partitions: u32,
    next: AtomicU32,
}

#[async_trait]
impl Sink for LogSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&self, record: Record) -> Result<(), SinkError> {
        let partition = self.next.fetch_add(1, Ordering::Relaxed) % self.partitions;
        self.log.append(partition, None, record.payload);
        Ok(())
    }
}

/// A [`MemorySink`] as a stream read back through its records.
struct SinkStream(MemorySink);

#[async_trait]
impl TestStream for SinkStream {
    async fn sink(&self) -> Result<Box<dyn Sink>, String> {
        Ok(Box::new(self.0.clone()))
    }

    async fn stored(&self) -> Result<Option<Vec<Bytes>>, String> {
        Ok(Some(
            self.0.records().into_iter().map(|r| r.payload).collect(),
        ))
    }
}

/// A table of a fresh [`MemoryDatabase`] per check.
#[derive(Default)]
pub struct MemoryDatabaseFixture;

#[async_trait]
impl Fixture for MemoryDatabaseFixture {
    async fn stream(&self, label: &str) -> Result<Box<dyn TestStream>, String> {
        Ok(Box::new(TableStream {
            database: MemoryDatabase::new(),
            table: label.to_owned(),
        }))
    }
}

struct TableStream {
    database: MemoryDatabase,
    table: String,
}

#[async_trait]
impl TestStream for TableStream {
    async fn sink(&self) -> Result<Box<dyn Sink>, String> {
        Ok(Box::new(self.database.table(&self.table)))
    }

    async fn stored(&self) -> Result<Option<Vec<Bytes>>, String> {
        let rows = self.database.rows(&self.table);
        Ok(Some(rows.into_iter().map(|r| r.payload).collect()))
    }
}
