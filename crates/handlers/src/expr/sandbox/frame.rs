//! The wire format between the parent and a sandbox child: one request
//! frame, one reply frame, each a little-endian `u32` length followed by
//! the body. Strings and byte strings are a `u32` length and the bytes.

use std::io::{self, Read, Write};

use super::super::{EvalError, Mode, Outcome};

/// What a child is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The expression's source.
    pub source: String,
    /// Bound variables: name (without `$`) and value as JSON text.
    pub vars: Vec<(String, String)>,
    /// Whether the first result's truth or every result is wanted.
    pub mode: Mode,
    /// The event's payload (JSON text, parsed by the child).
    pub payload: Vec<u8>,
    /// How many bytes the evaluation may add to the child's address space.
    pub memory: u64,
}

/// Longest frame accepted (a payload the engine holds is far smaller).
const MAX_FRAME: usize = 1 << 30;

#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }
    fn u32(&mut self, value: usize) {
        let value = u32::try_from(value).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn bytes(&mut self, value: &[u8]) {
        self.u32(value.len());
        self.0.extend_from_slice(value);
    }
    /// The frame: length, then body.
    fn frame(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() + 4);
        let len = u32::try_from(self.0.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&self.0);
        out
    }
}

struct Dec<'a>(&'a [u8]);

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("bad sandbox frame: {what}"),
    )
}

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(invalid("too short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> io::Result<usize> {
        let mut raw = [0; 4];
        raw.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(raw) as usize)
    }
    fn u64(&mut self) -> io::Result<u64> {
        let mut raw = [0; 8];
        raw.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(raw))
    }
    fn bytes(&mut self) -> io::Result<&'a [u8]> {
        let n = self.u32()?;
        self.take(n)
    }
    fn string(&mut self) -> io::Result<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| invalid("text is not UTF-8"))
    }
}

/// The length a frame's first four bytes announce, checked.
pub fn frame_len(head: [u8; 4]) -> io::Result<usize> {
    let len = u32::from_le_bytes(head) as usize;
    if len > MAX_FRAME {
        return Err(invalid("too long"));
    }
    Ok(len)
}

/// Reads one frame's body; `Ok(None)` at a clean end of stream.
pub fn read_frame(reader: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut head = [0; 4];
    match reader.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut body = vec![0; frame_len(head)?];
    reader.read_exact(&mut body)?;
    Ok(Some(body))
}

/// Writes a whole frame.
pub fn write_frame(writer: &mut impl Write, frame: &[u8]) -> io::Result<()> {
    writer.write_all(frame)?;
    writer.flush()
}

impl Request {
    /// The request as a frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut enc = Enc::default();
        enc.u8(match self.mode {
            Mode::Holds => 0,
            Mode::Results => 1,
        });
        enc.u64(self.memory);
        enc.bytes(self.source.as_bytes());
        enc.u32(self.vars.len());
        for (name, value) in &self.vars {
            enc.bytes(name.as_bytes());
            enc.bytes(value.as_bytes());
        }
        enc.bytes(&self.payload);
        enc.frame()
    }

    /// A request from a frame's body.
    pub fn decode(body: &[u8]) -> io::Result<Self> {
        let mut dec = Dec(body);
        let mode = match dec.u8()? {
            0 => Mode::Holds,
            1 => Mode::Results,
            _ => return Err(invalid("unknown mode")),
        };
        let memory = dec.u64()?;
        let source = dec.string()?;
        let count = dec.u32()?;
        let mut vars = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            vars.push((dec.string()?, dec.string()?));
        }
        let payload = dec.bytes()?.to_vec();
        Ok(Self {
            source,
            vars,
            mode,
            payload,
            memory,
        })
    }
}

/// A reply as a frame.
pub fn encode_reply(reply: &Result<Outcome, EvalError>) -> Vec<u8> {
    let mut enc = Enc::default();
    match reply {
        Ok(Outcome::Holds(holds)) => enc.u8(u8::from(*holds)),
        Ok(Outcome::Results(results)) => {
            enc.u8(2);
            enc.u32(results.len());
            for result in results {
                enc.bytes(result);
            }
        }
        Err(EvalError::Failed(message)) => {
            enc.u8(3);
            enc.bytes(message.as_bytes());
        }
        Err(EvalError::Halted(code)) => {
            enc.u8(4);
            enc.u64(*code as u32 as u64);
        }
        Err(EvalError::TooManyResults) => enc.u8(5),
        Err(EvalError::NotJson(message)) => {
            enc.u8(6);
            enc.bytes(message.as_bytes());
        }
        Err(other) => {
            enc.u8(7);
            enc.bytes(other.to_string().as_bytes());
        }
    }
    enc.frame()
}

/// A reply from a frame's body.
pub fn decode_reply(body: &[u8]) -> io::Result<Result<Outcome, EvalError>> {
    let mut dec = Dec(body);
    Ok(match dec.u8()? {
        0 => Ok(Outcome::Holds(false)),
        1 => Ok(Outcome::Holds(true)),
        2 => {
            let count = dec.u32()?;
            let mut results = Vec::with_capacity(count.min(1024));
            for _ in 0..count {
                results.push(dec.bytes()?.to_vec());
            }
            Ok(Outcome::Results(results))
        }
        3 => Err(EvalError::Failed(dec.string()?)),
        4 => Err(EvalError::Halted(dec.u64()? as u32 as i32)),
        5 => Err(EvalError::TooManyResults),
        6 => Err(EvalError::NotJson(dec.string()?)),
        7 => Err(EvalError::Failed(dec.string()?)),
        _ => return Err(invalid("unknown reply")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_survive_the_wire() {
        let request = Request {
            source: ".a == $dev".to_owned(),
            vars: vec![("dev".to_owned(), "\"x\"".to_owned())],
            mode: Mode::Results,
            payload: br#"{"a": "x"}"#.to_vec(),
            memory: 1 << 28,
        };
        let frame = request.encode();
        let body = read_frame(&mut &frame[..])
            .ok()
            .flatten()
            .unwrap_or_default();
        assert_eq!(Request::decode(&body).ok(), Some(request));
        for reply in [
            Ok(Outcome::Holds(true)),
            Ok(Outcome::Results(vec![b"1".to_vec(), b"{}".to_vec()])),
            Err(EvalError::Failed("boom".to_owned())),
            Err(EvalError::Halted(-3)),
            Err(EvalError::TooManyResults),
            Err(EvalError::NotJson("nope".to_owned())),
        ] {
            let frame = encode_reply(&reply);
            let body = read_frame(&mut &frame[..])
                .ok()
                .flatten()
                .unwrap_or_default();
            assert_eq!(decode_reply(&body).ok(), Some(reply));
        }
    }
}
