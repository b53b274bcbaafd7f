//! How long to wait before trying a request again: the server's
//! `Retry-After` (capped), else exponential backoff with full jitter.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;

/// `Retry-After` as seconds or an HTTP date, relative to `now`.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// Exponential backoff with full jitter: `unit` is a random number in [0, 1).
pub fn backoff_delay(attempt: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    let exp = base.saturating_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX));
    exp.min(cap).mul_f64(unit.clamp(0.0, 1.0))
}

/// A number in [0, 1) for jitter; no RNG crate needed for this.
pub fn jitter() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

/// Whether a status is worth retrying as is.
pub fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
}

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries per request (the first included).
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
    /// Longest Retry-After honoured; longer ones are cut to this.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 8,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
            max_wait: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    pub fn backoff(&self, attempt: u32) -> Duration {
        backoff_delay(attempt, self.base, self.cap, jitter())
    }

    /// The wait before retry `attempt`: the server's Retry-After (capped), else backoff.
    pub fn wait(&self, attempt: u32, retry_after: Option<&str>) -> Duration {
        retry_after
            .and_then(|v| parse_retry_after(v, Utc::now()))
            .map(|d| d.min(self.max_wait))
            .unwrap_or_else(|| self.backoff(attempt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let (base, cap) = (Duration::from_millis(500), Duration::from_secs(30));
        assert_eq!(backoff_delay(0, base, cap, 1.0), base);
        assert_eq!(backoff_delay(3, base, cap, 1.0), Duration::from_secs(4));
        assert_eq!(backoff_delay(20, base, cap, 1.0), cap);
        assert_eq!(backoff_delay(20, base, cap, 0.5), cap / 2);
    }

    #[test]
    fn jitter_is_a_unit_interval() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
