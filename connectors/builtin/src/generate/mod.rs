//! The `generate` connector (source only): synthetic IoT telemetry for
//! demos, tests and benchmarks, with no broker.
//!
//! ```text
//! key: device-0042
//! payload: {"device":"device-0042","seq":17,"ts":1700000000123,"temperature":21.7,"humidity":40.2,"battery":3.71}
//! ```
//!
//! Every event is a pure function of `(seed, partition, offset)` (see
//! [`telemetry`]), so the source is replayable: a restarted source resumes
//! each partition at its committed position and regenerates exactly the
//! events it would have produced. Offsets run 0, 1, 2, … per partition with
//! no gaps, a device always reports to the same partition, and event time
//! comes from a virtual clock (see [`telemetry`]) so it replays too.
//!
//! Committed positions are kept in memory by the builder, so they survive a
//! rebuild of the source *within the process* only. Set `state_file` to
//! persist them (written atomically on every commit) across restarts.
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `devices` | `100` | number of devices (keys `device-0000` …); at least `partitions` |
//! | `partitions` | `4` | number of partitions; device `d` reports to partition `d % partitions` |
//! | `count` | unbounded | total events over all partitions; then `next` returns `End` |
//! | `rate` | `0` | events per second over all partitions; `0` = as fast as possible |
//! | `payload_bytes` | none | pad payloads to about this size |
//! | `malformed_every` | `0` | every Nth event carries a payload that is not JSON; `0` = never |
//! | `seed` | `42` | seed of every random choice, so runs are reproducible |
//! | `state_file` | none | where committed positions are persisted |

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use spate_connector::factory::ConnectorFamily;
use spate_connector::{
    Capabilities, ConfigReader, PartitionId, Source, SourceBuilder, SourceError,
};

pub mod source;
pub mod telemetry;

pub use source::GenerateSource;
pub use telemetry::Telemetry;

use crate::state::StateFile;
use crate::{error_mark, has_new_errors};
use source::Positions;

/// What generate sources promise: replayable positions, no transactions.
pub const CAPABILITIES: Capabilities = Capabilities::NONE.with_durable_positions();

/// Default `devices`.
pub const DEFAULT_DEVICES: u64 = 100;
/// Default `partitions`.
pub const DEFAULT_PARTITIONS: u64 = 4;
/// Default `seed`.
pub const DEFAULT_SEED: u64 = 42;
/// Most partitions a generate source may have.
pub const MAX_PARTITIONS: u64 = 4096;
/// Largest `payload_bytes`.
pub const MAX_PAYLOAD_BYTES: u64 = 64 << 20;

/// Stream name of every generated position.
const STREAM: &str = "telemetry";

/// A generate source's settings (see the [module docs](self) for the keys).
#[derive(Debug, Clone)]
pub struct GenerateSettings {
    /// Number of devices (at least `partitions`).
    pub devices: u64,
    /// Number of partitions (1 to [`MAX_PARTITIONS`]).
    pub partitions: u32,
    /// Total events, or unbounded.
    pub count: Option<u64>,
    /// Events per second over all partitions (0 = unpaced).
    pub rate: f64,
    /// Target payload size.
    pub payload_bytes: Option<usize>,
    /// Every Nth event is malformed (0 = never).
    pub malformed_every: u64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Where committed positions are persisted, if anywhere.
    pub state_file: Option<PathBuf>,
}

impl Default for GenerateSettings {
    fn default() -> Self {
        Self {
            devices: DEFAULT_DEVICES,
            partitions: DEFAULT_PARTITIONS as u32,
            count: None,
            rate: 0.0,
            payload_bytes: None,
            malformed_every: 0,
            seed: DEFAULT_SEED,
            state_file: None,
        }
    }
}

impl GenerateSettings {
    /// The pure event function these settings describe.
    pub fn telemetry(&self) -> Telemetry {
        Telemetry {
            devices: self.devices,
            partitions: self.partitions,
            seed: self.seed,
            payload_bytes: self.payload_bytes,
            malformed_every: self.malformed_every,
            rate: self.rate,
            stream: Arc::from(STREAM),
        }
    }
}

/// What a `state_file` holds.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct GenerateState {
    /// The next offset to read per partition.
    pub(crate) next_offsets: BTreeMap<PartitionId, u64>,
}

/// The `generate` connector family.
#[derive(Debug, Clone, Copy, Default)]
pub struct GenerateFactory;

impl ConnectorFamily for GenerateFactory {
    const KIND: &'static str = "generate";
    const SOURCE: Option<Capabilities> = Some(CAPABILITIES);

    fn read_source(&self, config: &mut ConfigReader<'_>) -> Option<Box<dyn SourceBuilder>> {
        let mark = error_mark(config);
        let devices = config.u64("devices").unwrap_or(DEFAULT_DEVICES);
        let partitions = config.u64("partitions").unwrap_or(DEFAULT_PARTITIONS);
        let count = config.u64("count");
        let rate = config.f64("rate").unwrap_or(0.0);
        let payload_bytes = config.byte_size("payload_bytes");
        let malformed_every = config.u64("malformed_every").unwrap_or(0);
        let seed = config.u64("seed").unwrap_or(DEFAULT_SEED);
        let state_file = config.string("state_file");
        if devices == 0 {
            config.error_at_key("devices", "`devices` must be at least 1", None);
        }
        if partitions == 0 || partitions > MAX_PARTITIONS {
            config.error_at_key(
                "partitions",
                format!("`partitions` must be between 1 and {MAX_PARTITIONS}, found {partitions}"),
                None,
            );
        } else if devices > 0 && partitions > devices {
            config.error_at_key(
                "partitions",
                format!("`partitions` ({partitions}) must not exceed `devices` ({devices}): every partition needs a device"),
                Some(format!("raise `devices` to at least {partitions} or lower `partitions`")),
            );
        }
        if rate < 0.0 {
            config.error_at_key(
                "rate",
                "`rate` must not be negative",
                Some(
                    "events per second over all partitions; 0 means as fast as possible".to_owned(),
                ),
            );
        }
        if payload_bytes.is_some_and(|b| b > MAX_PAYLOAD_BYTES) {
            config.error_at_key(
                "payload_bytes",
                format!("`payload_bytes` must be at most {MAX_PAYLOAD_BYTES} (64MiB)"),
                None,
            );
        }
        if state_file.as_deref() == Some("") {
            config.error_at_key("state_file", "`state_file` is empty", None);
        }
        if has_new_errors(config, mark) {
            return None;
        }
        let settings = GenerateSettings {
            devices,
            partitions: u32::try_from(partitions).ok()?,
            count,
            rate,
            payload_bytes: payload_bytes.and_then(|b| usize::try_from(b).ok()),
            malformed_every,
            seed,
            state_file: state_file.map(PathBuf::from),
        };
        Some(Box::new(GenerateBuilder::new(settings)))
    }
}

/// Builds generate sources; keeps committed positions in memory so a
/// rebuilt source resumes where the last one committed.
pub struct GenerateBuilder {
    settings: GenerateSettings,
    committed: Positions,
}

impl GenerateBuilder {
    /// A builder for these settings with no positions committed yet.
    pub fn new(settings: GenerateSettings) -> Self {
        Self {
            settings,
            committed: Positions::default(),
        }
    }

    /// Positions committed so far (next offset per partition).
    pub fn committed(&self) -> BTreeMap<PartitionId, u64> {
        source::lock(&self.committed).clone()
    }

    /// Starts a session: each partition resumes at its committed position,
    /// taken from memory or else from the `state_file`.
    pub async fn open(&self) -> Result<GenerateSource, SourceError> {
        let state_file = self.settings.state_file.as_ref().map(StateFile::new);
        if let Some(state) = &state_file {
            if source::lock(&self.committed).is_empty() {
                let loaded: Option<GenerateState> =
                    state.load().await.map_err(|e| SourceError::Fatal {
                        source_name: format!("generate:{STREAM}"),
                        message: e.to_string(),
                    })?;
                if let Some(loaded) = loaded {
                    let mut committed = source::lock(&self.committed);
                    if committed.is_empty() {
                        *committed = loaded.next_offsets;
                    }
                }
            }
        }
        Ok(GenerateSource::new(
            self.settings.telemetry(),
            self.settings.count,
            self.committed.clone(),
            state_file,
        ))
    }
}

#[async_trait]
impl SourceBuilder for GenerateBuilder {
    async fn build(&self) -> Result<Box<dyn Source>, SourceError> {
        Ok(Box::new(self.open().await?))
    }
}
