//! The mutations: byte-level ones for every target (flips, inserts,
//! deletes, splices of corpus pieces, a chunk repeated to find depth and
//! size blowups) and YAML-aware ones for the loader (duplicate keys,
//! anchors and aliases, deep nesting, absurd numbers, `${…}` forms).

use super::harness::Rng;

const INTERESTING: &[u8] = b"\0\xff{}[]:,\n &*$\"'!#-|>%@`\\~.0123456789";

/// Values that stress numeric settings.
const ABSURD: &[&str] = &[
    "0",
    "-1",
    "-0",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999999",
    "1e400",
    "-1e400",
    "NaN",
    ".inf",
    "1000000000h",
    "9999999TiB",
    "0ms",
    "1ns",
    "4294967296",
    "''",
];

/// Text pieces that exercise interpolation and YAML features.
const PIECES: &[&str] = &[
    "${A:-${B:-x}}",
    "${",
    "$${X}",
    "${HOST}",
    "${UNSET}",
    "${A:-${B:-${C:-${D:-${E:-${F:-${G:-${H:-${I:-x}}}}}}}}}",
    "<<: *a",
    "!!str ",
    "? [x]\n: 1\n",
    "---\n",
    "{a: 1, a: 2}",
    "'\\u0000'",
];

/// Applies one random mutation to `data`.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>], yaml: bool) {
    let kinds = if yaml { 12 } else { 7 };
    match rng.below(kinds) {
        0 => flip(rng, data),
        1 => set_byte(rng, data),
        2 => insert_bytes(rng, data),
        3 => delete(rng, data),
        4 => splice(rng, data, corpus),
        5 => repeat_chunk(rng, data),
        6 => truncate(rng, data),
        7 => duplicate_line(rng, data),
        8 => alias(rng, data),
        9 => nest(rng, data),
        10 => replace_number(rng, data),
        _ => {
            let piece = *rng.pick(PIECES);
            insert_text(rng, data, piece);
        }
    }
}

fn flip(rng: &mut Rng, data: &mut [u8]) {
    if !data.is_empty() {
        let at = rng.below(data.len());
        data[at] ^= 1 << rng.below(8);
    }
}

fn set_byte(rng: &mut Rng, data: &mut [u8]) {
    if !data.is_empty() {
        let at = rng.below(data.len());
        data[at] = *rng.pick(INTERESTING);
    }
}

fn insert_bytes(rng: &mut Rng, data: &mut Vec<u8>) {
    let at = rng.below(data.len() + 1);
    let count = 1 + rng.below(8);
    let bytes: Vec<u8> = (0..count)
        .map(|_| match rng.below(2) {
            0 => *rng.pick(INTERESTING),
            _ => rng.next() as u8,
        })
        .collect();
    data.splice(at..at, bytes);
}

fn delete(rng: &mut Rng, data: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    let at = rng.below(data.len());
    let len = 1 + rng.below((data.len() - at).min(64));
    data.drain(at..at + len);
}

fn truncate(rng: &mut Rng, data: &mut Vec<u8>) {
    let len = rng.below(data.len() + 1);
    data.truncate(len);
}

/// Replaces a range of `data` by a range of another corpus entry.
fn splice(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let other = rng.pick(corpus);
    if other.is_empty() {
        return;
    }
    let from = rng.below(other.len());
    let len = 1 + rng.below((other.len() - from).min(256));
    let at = rng.below(data.len() + 1);
    let cut = rng.below((data.len() - at).min(64) + 1);
    data.splice(at..at + cut, other[from..from + len].iter().copied());
}

/// Repeats one chunk many times: nesting depth and size blowups.
fn repeat_chunk(rng: &mut Rng, data: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    let at = rng.below(data.len());
    let len = 1 + rng.below((data.len() - at).min(16));
    let chunk = data[at..at + len].to_vec();
    let times = match rng.below(8) {
        0..=3 => 2 + rng.below(8),
        4..=6 => 10 + rng.below(200),
        _ => 200 + rng.below(20_000),
    };
    let repeated: Vec<u8> = chunk.iter().copied().cycle().take(len * times).collect();
    data.splice(at..at, repeated);
}

fn lines(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, b) in data.iter().enumerate() {
        if *b == b'\n' {
            out.push((start, i + 1));
            start = i + 1;
        }
    }
    if start < data.len() {
        out.push((start, data.len()));
    }
    out
}

/// Writes a line twice: duplicate keys.
fn duplicate_line(rng: &mut Rng, data: &mut Vec<u8>) {
    let lines = lines(data);
    if lines.is_empty() {
        return;
    }
    let (start, end) = *rng.pick(&lines);
    let line = data[start..end].to_vec();
    data.splice(end..end, line);
}

/// Anchors the value of one `key: value` line and makes another line's
/// value an alias of it (sometimes many aliases).
fn alias(rng: &mut Rng, data: &mut Vec<u8>) {
    let with_value: Vec<(usize, usize)> = lines(data)
        .into_iter()
        .filter(|(s, e)| data[*s..*e].windows(2).any(|w| w == b": "))
        .collect();
    if with_value.len() < 2 {
        return;
    }
    let first = *rng.pick(&with_value);
    let second = *rng.pick(&with_value);
    let value_at = |(s, e): (usize, usize)| {
        data[s..e]
            .windows(2)
            .position(|w| w == b": ")
            .map(|p| s + p + 2)
    };
    let (Some(anchor_at), Some(alias_at)) = (value_at(first), value_at(second)) else {
        return;
    };
    if alias_at <= anchor_at {
        data.splice(anchor_at..anchor_at, b"&a ".iter().copied());
        return;
    }
    let alias_end = second.1 - usize::from(data[second.1 - 1] == b'\n');
    let aliases = match rng.below(8) {
        0..=3 => "*a".to_owned(),
        4..=6 => format!("[{}]", vec!["*a"; 2 + rng.below(50)].join(", ")),
        _ => format!("[{}]", vec!["*a"; 1000 + rng.below(50_000)].join(",")),
    };
    data.splice(alias_at..alias_end, aliases.bytes());
    data.splice(anchor_at..anchor_at, b"&a ".iter().copied());
}

/// Wraps a spot in many `[` or `{k: ` levels.
fn nest(rng: &mut Rng, data: &mut Vec<u8>) {
    let depth = match rng.below(8) {
        0..=3 => 1 + rng.below(20),
        4..=6 => 100 + rng.below(100),
        _ => 1000 + rng.below(100_000),
    };
    let (open, close): (&[u8], &[u8]) = match rng.below(3) {
        0 => (b"[", b"]"),
        1 => (b"{k: ", b"}"),
        _ => (b"- ", b""),
    };
    let at = rng.below(data.len() + 1);
    let mut text = open.repeat(depth);
    text.extend_from_slice(b"x");
    text.extend(close.repeat(depth));
    data.splice(at..at, text);
}

/// Replaces a run of digits by an absurd value.
fn replace_number(rng: &mut Rng, data: &mut Vec<u8>) {
    let starts: Vec<usize> = (0..data.len())
        .filter(|&i| data[i].is_ascii_digit() && (i == 0 || !data[i - 1].is_ascii_digit()))
        .collect();
    let Some(&start) = (!starts.is_empty()).then(|| rng.pick(&starts)) else {
        return;
    };
    let mut end = start;
    while end < data.len() && (data[end].is_ascii_alphanumeric() || data[end] == b'.') {
        end += 1;
    }
    data.splice(start..end, rng.pick(ABSURD).bytes());
}

fn insert_text(rng: &mut Rng, data: &mut Vec<u8>, text: &str) {
    let at = rng.below(data.len() + 1);
    data.splice(at..at, text.bytes());
}
