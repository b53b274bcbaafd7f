//! A circuit breaker per host: after N consecutive failures the host is
//! given a rest, and calls fail fast instead of hammering a server that is
//! down (and instead of a job spending its retries against an outage).
//!
//! ```text
//!  closed ──N consecutive failures──▶ open until T ──T passed──▶ half-open (one probe)
//!    ▲                                                             │ success │ failure
//!    └─────────────────────────────────────────────────────────────┘         └──▶ open until T' (cool-down doubled, capped)
//! ```
//! A state machine with an injected clock, so the tests never sleep.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the breaker reads the time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The machine's monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// When a breaker opens and how long it rests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures of a host that open its breaker.
    pub failures: u32,
    /// The first rest; each failed probe doubles it, up to `max_cool_down`.
    pub cool_down: Duration,
    pub max_cool_down: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failures: 10,
            cool_down: Duration::from_secs(30),
            max_cool_down: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
        rest: Duration,
    },
    /// One probe is out; others wait for its outcome (they fail fast).
    HalfOpen {
        rest: Duration,
    },
}

/// Why a call may not go out now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub host: String,
    pub failures: u32,
    /// Time left until the next probe is allowed.
    pub retry_in: Duration,
}

/// One breaker per host, shared by every request of a job.
#[derive(Clone)]
pub struct Breakers {
    policy: BreakerPolicy,
    clock: Arc<dyn Clock>,
    /// Per host: its state and its consecutive failures since the last success.
    hosts: Arc<Mutex<HashMap<String, (State, u32)>>>,
}

impl std::fmt::Debug for Breakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breakers")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Breakers {
    pub fn new(policy: BreakerPolicy) -> Self {
        Self::with_clock(policy, Arc::new(SystemClock))
    }

    pub fn with_clock(policy: BreakerPolicy, clock: Arc<dyn Clock>) -> Self {
        Self {
            policy,
            clock,
            hosts: Arc::default(),
        }
    }

    pub fn policy(&self) -> BreakerPolicy {
        self.policy
    }

    /// Whether a call to `host` may go out now. In half-open state the first
    /// caller gets the probe; the rest are refused until it reports.
    pub fn admit(&self, host: &str) -> Result<(), Refused> {
        let now = self.clock.now();
        let mut hosts = self.hosts.lock().expect("breaker lock");
        let (state, failures) = hosts
            .entry(host.to_owned())
            .or_insert((State::Closed { failures: 0 }, 0));
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until, rest } if now >= until => {
                *state = State::HalfOpen { rest };
                Ok(())
            }
            State::Open { until, .. } => Err(Refused {
                host: host.to_owned(),
                failures: *failures,
                retry_in: until - now,
            }),
            State::HalfOpen { .. } => Err(Refused {
                host: host.to_owned(),
                failures: *failures,
                retry_in: Duration::ZERO,
            }),
        }
    }

    /// The server answered (whatever the status): the host is up.
    pub fn succeeded(&self, host: &str) {
        let mut hosts = self.hosts.lock().expect("breaker lock");
        hosts.insert(host.to_owned(), (State::Closed { failures: 0 }, 0));
    }

    /// A call failed in a way that says the host is down (network error,
    /// 5xx). Returns true when this failure opened the breaker.
    pub fn failed(&self, host: &str) -> bool {
        let now = self.clock.now();
        let policy = self.policy;
        let mut hosts = self.hosts.lock().expect("breaker lock");
        let (state, total) = hosts
            .entry(host.to_owned())
            .or_insert((State::Closed { failures: 0 }, 0));
        *total += 1;
        match *state {
            State::Closed { failures } if failures + 1 >= policy.failures => {
                *state = State::Open {
                    until: now + policy.cool_down,
                    rest: policy.cool_down,
                };
                true
            }
            State::Closed { failures } => {
                *state = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            State::HalfOpen { rest } => {
                let rest = (rest * 2).min(policy.max_cool_down);
                *state = State::Open {
                    until: now + rest,
                    rest,
                };
                true
            }
            // A call admitted before the breaker opened, failing late.
            State::Open { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock the test moves by hand.
    struct FakeClock(Mutex<Instant>);

    impl FakeClock {
        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    fn breakers() -> (Breakers, Arc<FakeClock>) {
        let clock = Arc::new(FakeClock(Mutex::new(Instant::now())));
        let policy = BreakerPolicy {
            failures: 3,
            cool_down: Duration::from_secs(10),
            max_cool_down: Duration::from_secs(25),
        };
        (Breakers::with_clock(policy, clock.clone()), clock)
    }

    #[test]
    fn opens_after_consecutive_failures_and_fails_fast_until_the_cool_down() {
        let (b, clock) = breakers();
        assert!(!b.failed("ehr"));
        assert!(!b.failed("ehr"));
        b.succeeded("ehr");
        // A success in between resets the count.
        assert!(!b.failed("ehr"));
        assert!(!b.failed("ehr"));
        assert_eq!(b.admit("ehr"), Ok(()));
        assert!(b.failed("ehr"), "the third consecutive failure opens it");
        let refused = b.admit("ehr").unwrap_err();
        assert_eq!(refused.retry_in, Duration::from_secs(10));
        assert_eq!(
            refused.failures, 3,
            "consecutive failures since the last success"
        );
        // Other hosts are not affected.
        assert_eq!(b.admit("other"), Ok(()));
        clock.advance(Duration::from_secs(4));
        assert_eq!(b.admit("ehr").unwrap_err().retry_in, Duration::from_secs(6));
    }

    #[test]
    fn half_open_lets_one_probe_through_and_its_outcome_decides() {
        let (b, clock) = breakers();
        for _ in 0..3 {
            b.failed("ehr");
        }
        clock.advance(Duration::from_secs(10));
        assert_eq!(b.admit("ehr"), Ok(()), "the probe");
        assert!(b.admit("ehr").is_err(), "others wait for the probe");
        // The probe fails: open again, resting twice as long.
        assert!(b.failed("ehr"));
        assert_eq!(
            b.admit("ehr").unwrap_err().retry_in,
            Duration::from_secs(20)
        );
        clock.advance(Duration::from_secs(20));
        assert_eq!(b.admit("ehr"), Ok(()));
        assert!(b.failed("ehr"));
        // Capped.
        assert_eq!(
            b.admit("ehr").unwrap_err().retry_in,
            Duration::from_secs(25)
        );
        clock.advance(Duration::from_secs(25));
        assert_eq!(b.admit("ehr"), Ok(()));
        b.succeeded("ehr");
        assert_eq!(b.admit("ehr"), Ok(()));
        assert_eq!(b.admit("ehr"), Ok(()), "closed again: everyone goes");
    }
}
