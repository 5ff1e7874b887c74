//! The stored form of one key's window state: a small versioned binary
//! format that round-trips exactly (floats as their bits, JSON values of
//! `last` included), and a decoder that refuses anything it did not write.
//!
//! ```text
//! state   = version:u8 (1) fingerprint:u64 max_time:i64 windows:u32 window*
//! window  = start:i64 count:u64 acc*            (one per aggregate, in order)
//! acc     = 0 (count) | 1 num (sum) | 2 opt (min) | 3 opt (max)
//!         | 4 num (avg) | 5 (0 | 1 time:i64 value) (last)
//! num     = 0 i64 | 1 f64-bits:u64          opt = 2 (none) | num
//! value   = 0 null | 1 false | 2 true | 3 i64 | 4 u64 | 5 f64-bits:u64
//!         | 6 string | 7 n:u32 value* | 8 n:u32 (string value)*
//! string  = len:u32 utf-8 bytes
//! ```
//!
//! Integers are little-endian. The fingerprint is
//! [`Settings::fingerprint`]: state written under another window size,
//! slide or list of aggregates is refused rather than misread.

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

use super::config::Settings;
use super::state::{Acc, KeyState, Num, Window};

const VERSION: u8 = 1;

/// Deepest `last` value decoded (`serde_json` reads payloads at most 128
/// levels deep, so no stored value is deeper).
const MAX_DEPTH: usize = 128;

/// Why stored state could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Written by another version of the format.
    #[error("unknown state format version {0}")]
    Version(u8),
    /// Written under other settings.
    #[error("the state was written with another window size, slide or list of aggregates")]
    OtherSettings,
    /// Cut short.
    #[error("the state is truncated")]
    Truncated,
    /// Malformed.
    #[error("the state is malformed: {0}")]
    Malformed(&'static str),
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    /// Writes a tag, for what follows it to be written on the result.
    fn tag(&mut self, tag: u8) -> &mut Self {
        self.u8(tag);
        self
    }
    fn u32(&mut self, v: usize) {
        // Lengths come from values that were parsed from payloads far
        // smaller than 4 GiB.
        self.0
            .extend_from_slice(&u32::try_from(v).unwrap_or(u32::MAX).to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn num(&mut self, n: Num) {
        match n {
            Num::Int(i) => self.tag(0).i64(i),
            Num::Float(f) => self.tag(1).u64(f.to_bits()),
        }
    }
    fn opt(&mut self, n: Option<Num>) {
        match n {
            None => self.u8(2),
            Some(n) => self.num(n),
        }
    }
    fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.u8(0),
            Value::Bool(b) => self.u8(1 + u8::from(*b)),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    self.tag(3).i64(i);
                } else if let Some(u) = n.as_u64() {
                    self.tag(4).u64(u);
                } else {
                    self.tag(5).u64(n.as_f64().unwrap_or(0.0).to_bits());
                }
            }
            Value::String(s) => self.tag(6).str(s),
            Value::Array(items) => {
                self.tag(7).u32(items.len());
                for item in items {
                    self.value(item);
                }
            }
            Value::Object(map) => {
                self.tag(8).u32(map.len());
                for (k, item) in map {
                    self.str(k);
                    self.value(item);
                }
            }
        }
    }
}

/// The tag an accumulator starts with (`acc` in the grammar above).
fn acc_tag(acc: &Acc) -> u8 {
    match acc {
        Acc::Count => 0,
        Acc::Sum(_) => 1,
        Acc::Min(_) => 2,
        Acc::Max(_) => 3,
        Acc::Avg(_) => 4,
        Acc::Last(_) => 5,
    }
}

/// Encodes a key's state.
pub fn encode(settings: &Settings, state: &KeyState) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(24 + state.windows.len() * 32));
    w.u8(VERSION);
    w.u64(settings.fingerprint());
    w.i64(state.max_time);
    w.u32(state.windows.len());
    for (start, window) in &state.windows {
        w.i64(*start);
        w.u64(window.count);
        for acc in &window.accs {
            w.u8(acc_tag(acc));
            match acc {
                Acc::Count => {}
                Acc::Sum(n) | Acc::Avg(n) => w.num(*n),
                Acc::Min(n) | Acc::Max(n) => w.opt(*n),
                Acc::Last(None) => w.u8(0),
                Acc::Last(Some((time, value))) => {
                    w.tag(1).i64(*time);
                    w.value(value);
                }
            }
        }
    }
    w.0
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated)?;
        self.0 = rest;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }
    fn len(&mut self) -> Result<usize, DecodeError> {
        let n = u32::from_le_bytes(self.take()?) as usize;
        // Every item takes at least one byte: a longer count is a lie.
        if n > self.0.len() {
            return Err(DecodeError::Truncated);
        }
        Ok(n)
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.take()?))
    }
    fn str(&mut self) -> Result<String, DecodeError> {
        let n = self.len()?;
        let (bytes, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Malformed("text is not UTF-8"))
    }
    fn num_tagged(&mut self, tag: u8) -> Result<Num, DecodeError> {
        match tag {
            0 => Ok(Num::Int(self.i64()?)),
            1 => match f64::from_bits(self.u64()?) {
                // Finite values never sum to NaN (an overflow is infinite).
                f if f.is_nan() => Err(DecodeError::Malformed("a number is NaN")),
                f => Ok(Num::Float(f)),
            },
            _ => Err(DecodeError::Malformed("unknown number tag")),
        }
    }
    fn num(&mut self) -> Result<Num, DecodeError> {
        let tag = self.u8()?;
        self.num_tagged(tag)
    }
    fn opt(&mut self) -> Result<Option<Num>, DecodeError> {
        match self.u8()? {
            2 => Ok(None),
            tag => self.num_tagged(tag).map(Some),
        }
    }
    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::Malformed("value nested too deeply"));
        }
        Ok(match self.u8()? {
            0 => Value::Null,
            1 => Value::Bool(false),
            2 => Value::Bool(true),
            3 => Value::from(self.i64()?),
            4 => Value::from(self.u64()?),
            5 => Value::Number(
                Number::from_f64(f64::from_bits(self.u64()?))
                    .ok_or(DecodeError::Malformed("a value is not a finite number"))?,
            ),
            6 => Value::String(self.str()?),
            7 => {
                let n = self.len()?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::Array(items)
            }
            8 => {
                let n = self.len()?;
                let mut map = Map::new();
                for _ in 0..n {
                    let k = self.str()?;
                    map.insert(k, self.value(depth + 1)?);
                }
                Value::Object(map)
            }
            _ => return Err(DecodeError::Malformed("unknown value tag")),
        })
    }
}

/// Decodes a key's state written by [`encode`] under the same settings.
pub fn decode(settings: &Settings, bytes: &[u8]) -> Result<KeyState, DecodeError> {
    let mut r = Reader(bytes);
    let version = r.u8()?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    if r.u64()? != settings.fingerprint() {
        return Err(DecodeError::OtherSettings);
    }
    let max_time = r.i64()?;
    let count = r.len()?;
    let mut windows = BTreeMap::new();
    for _ in 0..count {
        let start = r.i64()?;
        if start.rem_euclid(settings.slide_ms) != 0 || windows.contains_key(&start) {
            return Err(DecodeError::Malformed(
                "a window start is not aligned or repeats",
            ));
        }
        let events = r.u64()?;
        if events == 0 {
            return Err(DecodeError::Malformed("an empty window"));
        }
        let mut accs = Vec::with_capacity(settings.aggregates.len());
        for aggregate in &settings.aggregates {
            let acc = match r.u8()? {
                0 => Acc::Count,
                1 => Acc::Sum(r.num()?),
                2 => Acc::Min(r.opt()?),
                3 => Acc::Max(r.opt()?),
                4 => Acc::Avg(r.num()?),
                5 => Acc::Last(match r.u8()? {
                    0 => None,
                    1 => Some((r.i64()?, r.value(0)?)),
                    _ => return Err(DecodeError::Malformed("unknown `last` tag")),
                }),
                _ => return Err(DecodeError::Malformed("unknown aggregate tag")),
            };
            if acc.kind() != aggregate.kind {
                return Err(DecodeError::OtherSettings);
            }
            accs.push(acc);
        }
        windows.insert(
            start,
            Window {
                count: events,
                accs,
            },
        );
    }
    if !r.0.is_empty() {
        return Err(DecodeError::Malformed("bytes after the last window"));
    }
    Ok(KeyState { max_time, windows })
}
