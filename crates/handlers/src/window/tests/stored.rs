//! The stored form of a key's state: exact round trips, and refusals
//! (never panics) for anything else.

use serde_json::json;

use super::super::codec::{decode, encode, DecodeError};
use super::super::state::{Input, KeyState, Num};
use super::{lcg, settings};

fn rich_state() -> (super::super::config::Settings, KeyState) {
    let settings = settings(
        "size: 10s\nslide: 5s\nallowed_lateness: 1h\naggregates: {n: count, s: {sum: /v}, lo: {min: /v}, hi: {max: /v}, a: {avg: /v}, l: {last: /v}}",
    );
    let mut state = KeyState::new(0);
    let values = [
        json!(0.1),
        json!(-7),
        json!(u64::MAX),
        json!({"nested": [null, true, false, "text ✓", 1e-300, {"deeper": []}]}),
        json!(f64::MAX),
    ];
    for (n, value) in values.iter().enumerate() {
        let number = match value {
            serde_json::Value::Number(n) => Num::from_json(n),
            _ => Num::Float(0.30000000000000004),
        };
        let inputs = [
            Input::Nothing,
            Input::Number(number),
            Input::Number(number),
            Input::Number(number),
            Input::Number(number),
            Input::Any(value.clone()),
        ];
        state
            .add(&settings, n as i64 * 3_000 - 2_000, &inputs)
            .expect("accepted");
    }
    (settings, state)
}

#[test]
fn a_state_round_trips_exactly_floats_and_json_values_included() {
    let (settings, state) = rich_state();
    assert!(state.windows.len() >= 3);
    let bytes = encode(&settings, &state);
    let decoded = decode(&settings, &bytes).expect("decodes");
    assert_eq!(decoded, state);
    // Bit for bit, not just ==: the encoding of the decoded state is the same.
    assert_eq!(encode(&settings, &decoded), bytes);
}

#[test]
fn a_truncated_or_extended_state_is_refused() {
    let (settings, state) = rich_state();
    let bytes = encode(&settings, &state);
    for cut in 0..bytes.len() {
        assert!(decode(&settings, &bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        decode(&settings, &longer),
        Err(DecodeError::Malformed("bytes after the last window"))
    );
}

#[test]
fn another_version_or_other_settings_are_refused() {
    let (settings, state) = rich_state();
    let mut bytes = encode(&settings, &state);
    let other = super::settings("size: 10s\nslide: 5s\naggregates: {n: count}");
    assert_eq!(decode(&other, &bytes), Err(DecodeError::OtherSettings));
    bytes[0] = 9;
    assert_eq!(decode(&settings, &bytes), Err(DecodeError::Version(9)));
}

#[test]
fn corrupted_bytes_never_panic() {
    let (settings, state) = rich_state();
    let bytes = encode(&settings, &state);
    let mut seed = 3;
    for _ in 0..20_000 {
        let mut corrupt = bytes.clone();
        for _ in 0..1 + lcg(&mut seed) % 4 {
            let at = (lcg(&mut seed) as usize) % corrupt.len();
            corrupt[at] = lcg(&mut seed) as u8;
        }
        // Whatever it decodes to (a flipped float bit is still a state),
        // it must not panic, and what it accepts must encode back.
        if let Ok(decoded) = decode(&settings, &corrupt) {
            let again = encode(&settings, &decoded);
            assert_eq!(decode(&settings, &again), Ok(decoded));
        }
    }
}
