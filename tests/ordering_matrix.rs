//! The failure matrix of the delivery and ordering contract (README,
//! "Ordering under failure"): for each row — a source, an ordering mode and
//! a delivery mode — the real `spate` binary runs as child processes with
//! an `http` handler that records every call (`ordering_matrix/recorder.rs`,
//! 503 to about 1 % of first attempts), the broker is fed through its own
//! client library, and a seeded chaos schedule kills (-9), hands over
//! (SIGTERM), scales to three processes and back and restarts the broker,
//! as the row allows. Then per key: nothing lost (where promised), after
//! dropping copies strictly increasing, copies only where allowed, and never
//! two calls of one key at once.
//!
//! The default run uses a fixed seed; `SPATE_MATRIX_SEED=random` (and the
//! soak run) draw one. The seed of each row is printed;
//! `SPATE_MATRIX_SEED=<seed>` replays it.
//! `SPATE_MATRIX_SOAK=1` (or `scripts/soak-ordering`) runs 10x the events
//! and 3x the chaos.

mod common;
mod iot_common;
mod kafka_common;
#[path = "../connectors/nats/tests/common/mod.rs"]
mod nats_common;

#[allow(dead_code)]
#[path = "ordering_matrix/check.rs"]
mod check;
#[path = "ordering_matrix/core_nats.rs"]
mod core_nats;
#[allow(dead_code)]
#[path = "ordering_matrix/harness.rs"]
mod harness;
#[path = "ordering_matrix/jetstream.rs"]
mod jetstream;
#[path = "ordering_matrix/kafka.rs"]
mod kafka;
#[path = "ordering_matrix/mqtt.rs"]
mod mqtt;
#[allow(dead_code)]
#[path = "ordering_matrix/recorder.rs"]
mod recorder;
