//! [`MemorySink`]: a sink that keeps every acknowledged record in memory,
//! with failures, size limits and latency to inject. A write resolves `Ok`
//! only once its record is in the list, so what it acknowledged is exactly
//! what [`MemorySink::records`] shows.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::SinkError;
use crate::event::Record;
use crate::sink::Sink;
use crate::transaction::TransactionalTarget;

#[derive(Default)]
struct SinkState {
    records: Vec<Record>,
    failing: bool,
    attempts: u64,
    /// Records whose payload is longer are rejected for good.
    max_payload: Option<usize>,
}

/// A sink that keeps every acknowledged record in memory; failures and
/// latency can be injected.
#[derive(Clone, Default)]
pub struct MemorySink {
    state: Arc<Mutex<SinkState>>,
    latency: Arc<Mutex<Duration>>,
    pub(super) name: Arc<str>,
}

impl MemorySink {
    /// An empty sink called `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: Arc::from(format!("memory:{name}")),
            ..Self::default()
        }
    }

    fn state(&self) -> MutexGuard<'_, SinkState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every acknowledged record, in acknowledgement order.
    pub fn records(&self) -> Vec<Record> {
        self.state().records.clone()
    }

    /// Number of acknowledged records.
    pub fn len(&self) -> usize {
        self.state().records.len()
    }

    /// True when nothing was acknowledged.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Write attempts so far, failed ones included.
    pub fn attempts(&self) -> u64 {
        self.state().attempts
    }

    /// While `failing`, every write fails with a retryable error.
    pub fn set_failing(&self, failing: bool) {
        self.state().failing = failing;
    }

    /// Rejects for good ([`SinkError::Rejected`]) every record whose
    /// payload is longer than `max` bytes, at write and at
    /// [`Sink::check`], like a broker's size limit; `None` lifts it.
    pub fn set_max_payload(&self, max: Option<usize>) {
        self.state().max_payload = max;
    }

    /// The rejection of a record over the size limit, if it is over.
    fn over_limit(&self, state: &SinkState, record: &Record) -> Result<(), SinkError> {
        match state.max_payload {
            Some(max) if record.payload.len() > max => Err(SinkError::Rejected {
                sink_name: self.name.to_string(),
                message: format!(
                    "the payload ({} bytes) is larger than the test kit's `max_payload` ({max} bytes); raise `max_payload`",
                    record.payload.len()
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Appends records committed by a transaction, all at once.
    pub(super) fn append_committed(&self, records: Vec<Record>) {
        self.state().records.extend(records);
    }

    /// Every write waits this long before it is acknowledged.
    pub fn set_latency(&self, latency: Duration) {
        *self.latency.lock().unwrap_or_else(|e| e.into_inner()) = latency;
    }
}

#[async_trait]
impl Sink for MemorySink {
    fn name(&self) -> &str {
        &self.name
    }

    fn transactional_target(&self) -> Option<TransactionalTarget> {
        Some(TransactionalTarget {
            kind: "memory",
            cluster: "memory".to_owned(),
            destination: self.name.to_string(),
        })
    }

    async fn write(&self, record: Record) -> Result<(), SinkError> {
        let latency = *self.latency.lock().unwrap_or_else(|e| e.into_inner());
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut state = self.state();
        state.attempts += 1;
        if state.failing {
            return Err(SinkError::Unavailable {
                sink_name: self.name.to_string(),
                message: "write failed (injected)".to_owned(),
            });
        }
        self.over_limit(&state, &record)?;
        state.records.push(record);
        Ok(())
    }

    fn check(&self, record: &Record) -> Result<(), SinkError> {
        self.over_limit(&self.state(), record)
    }
}
