//! Retry delays: exponential backoff with full jitter, capped.
//!
//! The delay before retry `n` (n = 1 for the first retry) is drawn uniformly
//! from `[base/2, base]` where `base = min(initial × 2^(n-1), max)`: half
//! fixed so retries never collapse to zero, half random so a burst of
//! failures does not retry in lock-step against a recovering dependency.

use std::time::Duration;

use rand::Rng;

/// The delay before retry number `retry` (1-based).
pub fn delay(initial: Duration, max: Duration, retry: u32) -> Duration {
    let base = exponential(initial, max, retry);
    let half = base / 2;
    let jitter_nanos =
        rand::rng().random_range(0..=half.as_nanos().min(u128::from(u64::MAX)) as u64);
    half + Duration::from_nanos(jitter_nanos)
}

/// The capped exponential delay without jitter.
pub fn exponential(initial: Duration, max: Duration, retry: u32) -> Duration {
    let factor = 2u32.saturating_pow(retry.saturating_sub(1).min(31));
    initial.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_doubles_and_caps() {
        let i = Duration::from_millis(100);
        let m = Duration::from_secs(1);
        assert_eq!(exponential(i, m, 1), Duration::from_millis(100));
        assert_eq!(exponential(i, m, 2), Duration::from_millis(200));
        assert_eq!(exponential(i, m, 4), Duration::from_millis(800));
        assert_eq!(exponential(i, m, 5), m);
        assert_eq!(exponential(i, m, 1000), m);
    }

    #[test]
    fn jitter_stays_between_half_and_full() {
        let i = Duration::from_millis(100);
        let m = Duration::from_secs(10);
        for retry in 1..8 {
            let base = exponential(i, m, retry);
            for _ in 0..50 {
                let d = delay(i, m, retry);
                assert!(
                    d >= base / 2 && d <= base,
                    "{d:?} outside [{:?}, {base:?}]",
                    base / 2
                );
            }
        }
    }
}
