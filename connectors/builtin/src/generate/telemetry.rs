//! Synthetic IoT telemetry as a pure function of `(seed, partition, offset)`.
//!
//! Nothing here keeps state, so any event can be regenerated on its own: a
//! restarted source that resumes a partition at a committed offset produces
//! exactly the events it would have produced the first time.
//!
//! * Device `d` belongs to partition `d % partitions`; a partition's devices
//!   report in turn, so event `offset` of partition `p` comes from device
//!   `p + (offset % n) × partitions` (where `n` is the partition's device
//!   count) and is that device's reading number `seq = offset / n`.
//! * Readings drift smoothly per device (a sine over `seq` around a
//!   per-device baseline) plus seeded noise; the battery drains slowly.
//! * Event time runs on a virtual clock so it is reproducible too: the
//!   event's global index `g = offset × partitions + partition` is stamped
//!   [`EPOCH_MS`]` + g × 1000 / rate` milliseconds (1 ms apart when `rate`
//!   is 0), which matches the pace at which a paced source releases them.
//! * With `malformed_every: n`, every event whose `g + 1` is a multiple of
//!   `n` carries a cut-off JSON text instead, which no JSON decoder accepts.
//! * With `payload_bytes`, a `"pad"` field brings the payload to about that
//!   size.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use spate_connector::{Event, Headers, PartitionId, Position};

/// Event time of the first event: 2023-11-14T22:13:20Z.
pub const EPOCH_MS: i64 = 1_700_000_000_000;

/// The shape of the generated data; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Telemetry {
    /// Number of devices (at least `partitions`).
    pub devices: u64,
    /// Number of partitions (at least 1).
    pub partitions: u32,
    /// Seed of every random choice.
    pub seed: u64,
    /// Target payload size, if padding is wanted.
    pub payload_bytes: Option<usize>,
    /// Every Nth event is malformed (0 = never).
    pub malformed_every: u64,
    /// Events per second over all partitions (0 = unpaced), for timestamps.
    pub rate: f64,
    /// Stream name of every position.
    pub stream: Arc<str>,
}

/// SplitMix64: a tiny, well-mixed, platform-independent hash.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform number in `[0, 1)` from 53 bits of `h`.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

impl Telemetry {
    /// Devices reporting to `partition`.
    pub fn devices_in(&self, partition: PartitionId) -> u64 {
        let (d, p, n) = (
            self.devices,
            u64::from(partition),
            u64::from(self.partitions.max(1)),
        );
        if p >= d {
            0
        } else {
            (d - p).div_ceil(n)
        }
    }

    /// The partition a device always reports to.
    pub fn partition_of(&self, device: u64) -> PartitionId {
        // The remainder is below `partitions`, a u32.
        (device % u64::from(self.partitions.max(1))) as PartitionId
    }

    /// The device name used as key and in the payload.
    pub fn device_name(device: u64) -> String {
        format!("device-{device:04}")
    }

    /// The device and its reading number for `(partition, offset)`.
    pub fn device_at(&self, partition: PartitionId, offset: u64) -> (u64, u64) {
        let n = self.devices_in(partition).max(1);
        let device = u64::from(partition) + (offset % n) * u64::from(self.partitions);
        (device, offset / n)
    }

    /// The event's global index, which orders pacing and timestamps.
    pub fn global_index(&self, partition: PartitionId, offset: u64) -> u64 {
        offset
            .saturating_mul(u64::from(self.partitions))
            .saturating_add(u64::from(partition))
    }

    /// Event time of `(partition, offset)`.
    pub fn timestamp_ms(&self, partition: PartitionId, offset: u64) -> i64 {
        let g = self.global_index(partition, offset) as f64;
        let step_ms = if self.rate > 0.0 {
            1000.0 / self.rate
        } else {
            1.0
        };
        EPOCH_MS.saturating_add((g * step_ms) as i64)
    }

    /// The event at `(partition, offset)`; the same arguments always give
    /// the same event.
    pub fn event(&self, partition: PartitionId, offset: u64) -> Event {
        let (device, seq) = self.device_at(partition, offset);
        let name = Self::device_name(device);
        let g = self.global_index(partition, offset);
        let ts = self.timestamp_ms(partition, offset);
        let payload = self.payload(&name, device, seq, g, ts);
        Event {
            key: Some(Bytes::from(name)),
            payload: Bytes::from(payload),
            headers: Headers::new(),
            timestamp_ms: Some(ts),
            position: Position {
                stream: self.stream.clone(),
                partition,
                offset,
            },
        }
    }

    fn payload(&self, name: &str, device: u64, seq: u64, g: u64, ts: i64) -> String {
        let base = mix(self.seed ^ mix(device ^ 0xD5E1_CE00));
        let noise = mix(self.seed.rotate_left(17) ^ mix(g));
        let phase = unit(base) * std::f64::consts::TAU;
        let t = seq as f64;
        let temperature = 17.0
            + 8.0 * unit(mix(base ^ 1))
            + 2.5 * (t * 0.05 + phase).sin()
            + (unit(noise) - 0.5) * 0.6;
        let humidity = (30.0
            + 30.0 * unit(mix(base ^ 2))
            + 6.0 * (t * 0.03 + phase).cos()
            + (unit(mix(noise ^ 1)) - 0.5) * 2.0)
            .clamp(0.0, 100.0);
        let battery = (4.2 - 0.3 * unit(mix(base ^ 3)) - t * 0.000_05
            + (unit(mix(noise ^ 2)) - 0.5) * 0.01)
            .max(3.0);
        let mut text = String::with_capacity(self.payload_bytes.unwrap_or(0).max(128));
        // Writing into a String cannot fail.
        let _ = write!(
            text,
            "{{\"device\":\"{name}\",\"seq\":{seq},\"ts\":{ts},\"temperature\":{temperature:.1},\
             \"humidity\":{humidity:.1},\"battery\":{battery:.2}"
        );
        if self.malformed_every > 0 && (g + 1).is_multiple_of(self.malformed_every) {
            // A cut-off object: valid UTF-8, never valid JSON.
            text.truncate(text.len() / 2);
            return text;
        }
        const PAD_FIELD: &str = ",\"pad\":\"\"";
        if let Some(target) = self.payload_bytes {
            let used = text.len() + 1 + PAD_FIELD.len();
            if target > used {
                text.push_str(&PAD_FIELD[..PAD_FIELD.len() - 1]);
                text.extend(std::iter::repeat_n('x', target - used));
                text.push('"');
            }
        }
        text.push('}');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn telemetry(devices: u64, partitions: u32) -> Telemetry {
        Telemetry {
            devices,
            partitions,
            seed: 7,
            payload_bytes: None,
            malformed_every: 0,
            rate: 0.0,
            stream: Arc::from("t"),
        }
    }

    #[test]
    fn every_device_reports_to_one_partition_in_turn() {
        let t = telemetry(10, 4);
        assert_eq!(
            (0..4).map(|p| t.devices_in(p)).collect::<Vec<_>>(),
            vec![3, 3, 2, 2]
        );
        for p in 0..4 {
            for offset in 0..50 {
                let (device, seq) = t.device_at(p, offset);
                assert!(device < 10);
                assert_eq!(t.partition_of(device), p);
                assert_eq!(seq, offset / t.devices_in(p));
            }
        }
    }

    #[test]
    fn payloads_are_json_of_the_documented_shape() {
        let t = telemetry(100, 4);
        let event = t.event(2, 17);
        let value: serde_json::Value = serde_json::from_slice(&event.payload).expect("JSON");
        assert_eq!(value["device"], "device-0070");
        assert_eq!(event.key.as_deref(), Some(&b"device-0070"[..]));
        assert_eq!(value["seq"], 0);
        assert_eq!(value["ts"].as_i64(), event.timestamp_ms);
        for (field, low, high) in [
            ("temperature", 10.0, 30.0),
            ("humidity", 0.0, 100.0),
            ("battery", 3.0, 4.3),
        ] {
            let v = value[field].as_f64().expect(field);
            assert!((low..=high).contains(&v), "{field} = {v}");
        }
    }

    #[test]
    fn padding_and_malformed_events() {
        let mut t = telemetry(100, 4);
        t.payload_bytes = Some(1000);
        let padded = t.event(0, 0).payload;
        assert_eq!(padded.len(), 1000);
        assert!(serde_json::from_slice::<serde_json::Value>(&padded).is_ok());
        t.malformed_every = 3;
        let bad: Vec<u64> = (0..4)
            .flat_map(|o| (0..4).map(move |p| (p, o)))
            .filter(|(p, o)| {
                serde_json::from_slice::<serde_json::Value>(&t.event(*p, *o).payload).is_err()
            })
            .map(|(p, o)| t.global_index(p, o))
            .collect();
        assert_eq!(bad, vec![2, 5, 8, 11, 14]);
    }
}
