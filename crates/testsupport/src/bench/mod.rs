//! Pieces the benches share: the raw client-library floors (rdkafka and
//! async-nats loops doing what a no-op pipeline does) and the set-up of a
//! NATS bench case.
//!
//! Guarantees: see each module; all of them only read and write the
//! brokers, topics and streams their caller names.

pub mod nats_setup;
pub mod raw_kafka;
pub mod raw_nats;
