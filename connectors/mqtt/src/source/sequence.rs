//! Per-topic sequences: how an `mqtt` source with `sequence:` tells a
//! message it already finished from a new one.
//!
//! MQTT 3.1.1 gives a message no identity that outlives its delivery (a
//! packet id is reused as soon as it is acknowledged), so a source cannot
//! on its own resume from positions stored elsewhere. With `sequence:` the
//! device supplies one: a number in the payload that grows with every
//! message of its topic (a counter, or an epoch-milliseconds timestamp).
//! MQTT keeps the order of one topic, so "every message of topic T up to
//! sequence S is finished" is a position, which a database stores with the
//! rows it produced (as `StoredPosition { partition: T, next_offset: S + 1 }`).
//!
//! A message whose sequence is not above its topic's last one (the highest
//! handed to the engine, or stored) is:
//! - a copy the broker redelivered (`DUP` flag): it was finished before a
//!   restart, so it is acknowledged and not handled again;
//! - otherwise out of sequence (the device resent it, or its clock went
//!   back): handed on marked undecodable, so it is dead-lettered with the
//!   reason, never silently dropped.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

/// What one message's sequence says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sequenced {
    /// Above its topic's last sequence: new.
    New(u64),
    /// Not above it, and flagged as a redelivery: already finished.
    Finished {
        /// The message's sequence.
        sequence: u64,
        /// Its topic's last sequence.
        last: u64,
    },
    /// Not above it, and not a redelivery: dead-letter it with this reason.
    OutOfSequence(String),
    /// No usable sequence: dead-letter it with this reason.
    Missing(String),
}

/// Per-topic last sequences of one source.
#[derive(Debug)]
pub struct Sequences {
    pointer: String,
    /// The highest sequence seen per topic (handed on, or stored).
    last: HashMap<Arc<str>, u64>,
    /// The last finished sequence per topic, as a database stored it.
    stored: HashMap<Arc<str>, u64>,
    /// Redelivered copies acknowledged without handling, since the start.
    pub(super) finished_copies: u64,
}

impl Sequences {
    /// Sequences read at the JSON pointer `pointer`.
    pub(super) fn new(pointer: String) -> Self {
        Self {
            pointer,
            last: HashMap::new(),
            stored: HashMap::new(),
            finished_copies: 0,
        }
    }

    /// The sequence of a payload, or why there is none.
    fn read(&self, payload: &[u8]) -> Result<u64, String> {
        let value: Value = serde_json::from_slice(payload).map_err(|e| {
            format!(
                "the payload is not JSON ({e}), so it has no sequence at `{}`",
                self.pointer
            )
        })?;
        let found = value.pointer(&self.pointer).ok_or_else(|| {
            format!(
                "the payload has no sequence at `{}` (the source's `sequence`)",
                self.pointer
            )
        })?;
        let number = match found {
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1.8e19)
                    .map(|f| f as u64)
            }),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        number.ok_or_else(|| {
            format!(
                "the sequence at `{}` is {found}, not a whole number of at least 0",
                self.pointer
            )
        })
    }

    /// Classifies a message of `topic`; a new one becomes its topic's last.
    pub(super) fn classify(&mut self, topic: &Arc<str>, payload: &[u8], dup: bool) -> Sequenced {
        let sequence = match self.read(payload) {
            Ok(sequence) => sequence,
            Err(why) => return Sequenced::Missing(why),
        };
        match self.last.get(topic).copied() {
            Some(last) if sequence <= last => {
                if dup {
                    self.finished_copies += 1;
                    Sequenced::Finished { sequence, last }
                } else {
                    Sequenced::OutOfSequence(format!(
                        "sequence {sequence} of topic `{topic}` is not above {last}, the last one seen: a message the device sent again, or out of order"
                    ))
                }
            }
            _ => {
                self.last.insert(topic.clone(), sequence);
                Sequenced::New(sequence)
            }
        }
    }

    /// Takes what a database stored for a topic (`next` is the first
    /// sequence not yet finished); its last sequence rises to it.
    pub(super) fn floor(&mut self, topic: &str, next: u64) {
        let Some(stored) = next.checked_sub(1) else {
            return;
        };
        let topic: Arc<str> = Arc::from(topic);
        let floor = self.stored.entry(topic.clone()).or_insert(stored);
        *floor = (*floor).max(stored);
        let last = self.last.entry(topic).or_insert(stored);
        *last = (*last).max(stored);
    }

    /// True when a database stored a position of `topic` at or past
    /// `sequence`: the message is finished.
    pub(super) fn is_finished(&self, topic: &str, sequence: u64) -> bool {
        self.stored.get(topic).is_some_and(|s| sequence <= *s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(t: &str) -> Arc<str> {
        Arc::from(t)
    }

    #[test]
    fn sequences_grow_per_topic() {
        let mut s = Sequences::new("/seq".to_owned());
        let (a, b) = (topic("d/a"), topic("d/b"));
        assert_eq!(s.classify(&a, br#"{"seq":1}"#, false), Sequenced::New(1));
        assert_eq!(s.classify(&b, br#"{"seq":1}"#, false), Sequenced::New(1));
        assert_eq!(s.classify(&a, br#"{"seq":"2"}"#, false), Sequenced::New(2));
        assert_eq!(
            s.classify(&a, br#"{"seq":2}"#, true),
            Sequenced::Finished {
                sequence: 2,
                last: 2
            }
        );
        assert!(matches!(
            s.classify(&a, br#"{"seq":1}"#, false),
            Sequenced::OutOfSequence(why) if why.contains("not above 2")
        ));
        assert_eq!(s.finished_copies, 1);
    }

    #[test]
    fn missing_or_unusable_sequences_say_why() {
        let mut s = Sequences::new("/seq".to_owned());
        let t = topic("t");
        for (payload, expected) in [
            (&b"not json"[..], "not JSON"),
            (br#"{"n":1}"#, "no sequence at `/seq`"),
            (br#"{"seq":-1}"#, "not a whole number"),
            (br#"{"seq":1.5}"#, "not a whole number"),
            (br#"{"seq":true}"#, "not a whole number"),
        ] {
            match s.classify(&t, payload, false) {
                Sequenced::Missing(why) => assert!(why.contains(expected), "{why}"),
                other => panic!("{payload:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn stored_positions_raise_the_floor_but_never_lower_it() {
        let mut s = Sequences::new("/ts".to_owned());
        s.floor("t", 11);
        assert!(s.is_finished("t", 10));
        assert!(!s.is_finished("t", 11));
        let t = topic("t");
        assert_eq!(s.classify(&t, br#"{"ts":12}"#, false), Sequenced::New(12));
        assert!(!s.is_finished("t", 12), "seen is not finished");
        s.floor("t", 5);
        assert!(s.is_finished("t", 10) && !s.is_finished("t", 11));
        s.floor("u", 0);
        assert!(!s.is_finished("u", 0));
        // Seen before the stored positions arrived (a restart's first
        // redeliveries): the floor decides what is finished.
        let mut s = Sequences::new("/seq".to_owned());
        let a = topic("a");
        for n in 1..=5 {
            assert_eq!(
                s.classify(&a, format!(r#"{{"seq":{n}}}"#).as_bytes(), true),
                Sequenced::New(n)
            );
        }
        s.floor("a", 3);
        assert!(s.is_finished("a", 2) && !s.is_finished("a", 3));
    }
}
