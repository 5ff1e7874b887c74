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

use spate_testsupport::iot as iot_common;
use spate_testsupport::kafka::blocking as kafka_common;
use spate_testsupport::nats as nats_common;

mod check;
mod core_nats;
mod harness;
mod jetstream;
mod kafka;
mod mqtt;
mod recorder;
