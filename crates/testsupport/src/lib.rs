//! Test-only support shared by every crate's tests and by the benches: one
//! harness per broker the tests run against (Tansu for Kafka, nats-server,
//! Mosquitto, PostgreSQL) and the helpers their test files share.
//!
//! Guarantees: a broker this crate starts runs on a free port and is
//! stopped when its guard drops; a broker on its standard port is used
//! instead only where the harness says so (never stopped, never
//! reconfigured); names from [`names::unique`] differ between tests and
//! runs. Never a dependency of production code (`publish = false`).

pub mod bench;
pub mod builtin;
pub mod connector;
#[cfg(feature = "engine")]
pub mod engine;
#[cfg(feature = "http")]
pub mod http;
pub mod iot;
pub mod kafka;
pub mod metrics;
pub mod mqtt;
pub mod names;
pub mod nats;
pub mod orders;
pub mod positions;
pub mod postgres;
pub mod process;
pub mod spate_process;
