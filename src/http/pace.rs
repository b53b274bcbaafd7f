//! Requests spaced to a rate a server asked for (a terminology server's
//! fair-use limit): each caller takes the next free slot, one every
//! `1/rate` seconds, whatever thread it is on.
//!
//! A single shared slot clock is all a job needs (one host, a few threads),
//! so this is a dozen lines rather than a token-bucket crate.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Pace {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pace {
    /// `per_second` requests a second at most; 0 or less: no limit.
    pub fn new(per_second: f64) -> Self {
        let interval = if per_second > 0.0 {
            Duration::from_secs_f64(1.0 / per_second)
        } else {
            Duration::ZERO
        };
        Self {
            interval,
            next: Mutex::new(None),
        }
    }

    /// How long the caller must wait for its slot (taken now, so the next
    /// caller gets the one after).
    pub fn take(&self) -> Duration {
        if self.interval.is_zero() {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let mut next = self.next.lock().expect("pace lock");
        let slot = next.map_or(now, |t| t.max(now));
        *next = Some(slot + self.interval);
        slot - now
    }

    /// Waits for the caller's slot.
    pub async fn wait(&self) {
        let wait = self.take();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_spaced_by_the_interval() {
        let pace = Pace::new(10.0);
        let waits: Vec<Duration> = (0..4).map(|_| pace.take()).collect();
        assert_eq!(waits[0], Duration::ZERO);
        // Taken back to back: each waits about 100 ms more than the last.
        for (i, w) in waits.iter().enumerate().skip(1) {
            let expected = Duration::from_millis(100 * i as u64);
            assert!(
                *w <= expected && *w + Duration::from_millis(20) > expected,
                "{i}: {w:?}"
            );
        }
        assert_eq!(Pace::new(0.0).take(), Duration::ZERO);
    }
}
