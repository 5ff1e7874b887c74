//! Units in setting values: durations (`250ms`, `5s`, `2m`, `1h`) and byte
//! sizes (`64KiB`, `16MiB`, `1GB`), with the largest value of each that any
//! setting accepts.

use std::time::Duration;

/// The longest duration any setting accepts (876,000 hours: 100 years of
/// 365 days, the longest window): a longer one is a mistake, and deadlines
/// computed from it could overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(36_500 * 24 * 3600);

/// The largest byte size any setting accepts (1 TiB).
pub const MAX_BYTE_SIZE: u64 = 1 << 40;

/// Parses `250ms`, `5s`, `2m`, `1h`, `100us`, `1.5s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{text}` has no unit"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    let seconds = match unit.trim() {
        "us" | "µs" => value / 1_000_000.0,
        "ms" => value / 1_000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3_600.0,
        other => return Err(format!("unknown unit `{other}`")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

/// Parses `65536`, `64KiB`, `16MiB`, `1GB`, `10kb`.
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let text = text.trim().replace('_', "");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => return Err(format!("unknown unit `{other}`")),
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}
