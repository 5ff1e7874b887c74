//! Avro `decimal` values as JSON strings, at any precision.
//!
//! Avro stores a decimal as the big-endian two's-complement bytes of its
//! *unscaled* integer; the scale lives in the schema. Handlers see the
//! decimal as a JSON string with exactly `scale` digits after the point
//! (`"12.30"` for scale 2), so no precision is lost to floating point.
//! Guarantees: [`to_string`] and [`from_text`] are exact inverses for every
//! byte string and every text within the precision, with no size limit
//! other than the schema's.

/// The decimal text of an unscaled two's-complement big-endian integer
/// with `scale` digits after the point.
pub(crate) fn to_string(bytes: &[u8], scale: usize) -> String {
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let magnitude = if negative {
        negate(bytes)
    } else {
        bytes.to_vec()
    };
    let digits = magnitude_digits(&magnitude);
    let mut out = String::with_capacity(digits.len() + scale + 3);
    if negative && digits != "0" {
        out.push('-');
    }
    if scale == 0 {
        out.push_str(&digits);
        return out;
    }
    if digits.len() <= scale {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale - digits.len()));
        out.push_str(&digits);
    } else {
        let (whole, fraction) = digits.split_at(digits.len() - scale);
        out.push_str(whole);
        out.push('.');
        out.push_str(fraction);
    }
    out
}

/// The unscaled two's-complement big-endian bytes (shortest form) of a
/// decimal text such as `-12.5`, `0.05` or `1000`, for a schema of the
/// given precision and scale. Errors say what is wrong in words.
pub(crate) fn from_text(text: &str, precision: usize, scale: usize) -> Result<Vec<u8>, String> {
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (whole, fraction) = body.split_once('.').unwrap_or((body, ""));
    let well_formed = !(whole.is_empty() && fraction.is_empty())
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit());
    if !well_formed {
        return Err(format!(
            "`{text}` is not a decimal number (write digits with an optional sign and `.`)"
        ));
    }
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > scale {
        return Err(format!(
            "`{text}` has {} digits after the point, the schema's scale is {scale}",
            fraction.len()
        ));
    }
    let mut digits: Vec<u8> = whole
        .bytes()
        .chain(fraction.bytes())
        .map(|b| b - b'0')
        .collect();
    digits.extend(std::iter::repeat_n(0, scale - fraction.len()));
    let first = digits.iter().position(|d| *d != 0).unwrap_or(digits.len());
    let significant = &digits[first..];
    if significant.len() > precision {
        return Err(format!(
            "`{text}` needs {} digits, the schema's precision is {precision}",
            significant.len()
        ));
    }
    let magnitude = digits_to_bytes(significant);
    Ok(twos_complement(
        &magnitude,
        negative && !significant.is_empty(),
    ))
}

/// The magnitude (big-endian) of a negative two's-complement number.
fn negate(bytes: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = bytes.iter().map(|b| !b).collect();
    for byte in out.iter_mut().rev() {
        let (sum, carry) = byte.overflowing_add(1);
        *byte = sum;
        if !carry {
            break;
        }
    }
    out
}

/// Decimal digits of a big-endian unsigned magnitude.
fn magnitude_digits(magnitude: &[u8]) -> String {
    let mut number: Vec<u8> = magnitude.iter().copied().skip_while(|b| *b == 0).collect();
    if number.is_empty() {
        return "0".to_owned();
    }
    // Repeated division by 10^9 of the big-endian base-256 number.
    let mut chunks: Vec<u32> = Vec::new();
    while !number.is_empty() {
        let mut remainder: u64 = 0;
        let mut quotient = Vec::with_capacity(number.len());
        for byte in &number {
            let current = (remainder << 8) | u64::from(*byte);
            let digit = current / 1_000_000_000;
            remainder = current % 1_000_000_000;
            if !(quotient.is_empty() && digit == 0) {
                // `current` < 256 * 10^9, so `digit` < 256.
                quotient.push(digit as u8);
            }
        }
        // remainder < 10^9 fits u32.
        chunks.push(remainder as u32);
        number = quotient;
    }
    let mut out = String::with_capacity(chunks.len() * 9);
    for (index, chunk) in chunks.iter().rev().enumerate() {
        if index == 0 {
            out.push_str(&chunk.to_string());
        } else {
            out.push_str(&format!("{chunk:09}"));
        }
    }
    out
}

/// Big-endian unsigned bytes of decimal digits (each 0..=9).
fn digits_to_bytes(digits: &[u8]) -> Vec<u8> {
    // Little-endian base-256 accumulator: value = value * 10 + digit.
    let mut little: Vec<u8> = Vec::new();
    for digit in digits {
        let mut carry = u16::from(*digit);
        for limb in little.iter_mut() {
            let value = u16::from(*limb) * 10 + carry;
            *limb = (value & 0xff) as u8;
            carry = value >> 8;
        }
        while carry > 0 {
            little.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    little.reverse();
    little
}

/// Shortest two's-complement big-endian form of ±`magnitude`.
fn twos_complement(magnitude: &[u8], negative: bool) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(magnitude.len() + 1);
    bytes.push(0);
    bytes.extend_from_slice(magnitude);
    if negative {
        bytes = negate(&bytes);
    }
    let filler = if negative { 0xff } else { 0x00 };
    let mut start = 0;
    while start + 1 < bytes.len()
        && bytes[start] == filler
        && (bytes[start + 1] & 0x80 != 0) == negative
    {
        start += 1;
    }
    bytes.split_off(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encodings() {
        assert_eq!(from_text("0", 5, 0), Ok(vec![0x00]));
        assert_eq!(from_text("127", 5, 0), Ok(vec![0x7f]));
        assert_eq!(from_text("128", 5, 0), Ok(vec![0x00, 0x80]));
        assert_eq!(from_text("-128", 5, 0), Ok(vec![0x80]));
        assert_eq!(from_text("-129", 5, 0), Ok(vec![0xff, 0x7f]));
        assert_eq!(from_text("-1", 5, 0), Ok(vec![0xff]));
        assert_eq!(from_text("1.5", 5, 2), Ok(vec![0x00, 0x96]));
        assert_eq!(to_string(&[0x00, 0x96], 2), "1.50");
        assert_eq!(to_string(&[0xff], 2), "-0.01");
        assert_eq!(to_string(&[0x00], 3), "0.000");
        assert_eq!(to_string(&[], 0), "0");
    }

    #[test]
    fn round_trips_at_any_size() {
        let cases = [
            ("0.00", 2),
            ("-0.05", 2),
            ("12345678901234567890123456789.123456789", 9),
            ("-98765432109876543210987654321098765432", 0),
            ("4294967296", 0),
            ("-4294967296", 0),
            ("1000000000", 0),
        ];
        for (text, scale) in cases {
            let bytes = from_text(text, 60, scale).expect(text);
            assert_eq!(to_string(&bytes, scale), text, "{bytes:02x?}");
        }
    }

    #[test]
    fn rejects_what_the_schema_cannot_hold() {
        assert!(from_text("1.234", 10, 2)
            .unwrap_err()
            .contains("scale is 2"));
        assert!(from_text("123456", 5, 0)
            .unwrap_err()
            .contains("precision is 5"));
        assert!(from_text("1e5", 10, 0).is_err());
        assert!(from_text("", 10, 0).is_err());
        assert!(from_text("-", 10, 0).is_err());
        assert_eq!(from_text("1.200", 10, 1), Ok(vec![12]));
        assert_eq!(from_text(".5", 10, 1), Ok(vec![5]));
    }
}
