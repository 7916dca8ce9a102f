//! Circuit breaker per plugin version, with an injectable clock.
//!
//! Closed: calls run; consecutive plugin faults are counted, a success resets the count.
//! After [`BREAKER_FAILURE_THRESHOLD`] consecutive faults the breaker opens: calls are refused
//! at once with `CircuitOpen` for [`BREAKER_COOL_DOWN`]. Then it is half-open: one probe call
//! runs (others are refused); success closes it, a fault opens it for another cool-down.
//!
//! A **retry** of a call that already failed (a settlement event parked after its plugin failed
//! on it) is admitted by [`Breaker::admit_retry`]: never while open; while closed it runs
//! outside the accounting (its first failure was counted already, and counting the same bad
//! input again would open the breaker against healthy calls); while half-open it may take a
//! free probe slot, but its failure hands the slot back instead of reopening the breaker, and
//! only its success counts (it closes the breaker like any successful probe).

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Consecutive faults that open the breaker: one bad call is noise, five in a row is a pattern.
pub const BREAKER_FAILURE_THRESHOLD: u32 = 5;
/// How long an open breaker refuses calls: long enough for an admin to notice and act.
pub const BREAKER_COOL_DOWN: Duration = Duration::from_secs(30);

/// A source of "now" for the breaker; tests move a [`ManualClock`] instead of sleeping.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    offset: Mutex<Duration>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock {
            base: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        }
    }
}

impl ManualClock {
    /// A clock frozen at the moment of creation.
    pub fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock::default())
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut offset = self.offset.lock().unwrap_or_else(PoisonError::into_inner);
        *offset = offset.saturating_add(by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        let offset = *self.offset.lock().unwrap_or_else(PoisonError::into_inner);
        self.base + offset
    }
}

/// Breaker settings.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Consecutive plugin faults that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before a probe.
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: BREAKER_FAILURE_THRESHOLD,
            cool_down: BREAKER_COOL_DOWN,
        }
    }
}

/// The observable state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    /// Calls run.
    Closed,
    /// Calls are refused.
    Open,
    /// The cool-down is over; the next call is a probe.
    HalfOpen,
}

impl BreakerState {
    /// Gauge value for metrics: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

#[derive(Debug)]
enum State {
    Closed { consecutive_faults: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// Permission to run one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Normal,
    Probe,
    /// Replays and other calls outside the breaker's accounting.
    Unmetered,
    /// A retry while the breaker is closed: outside the accounting.
    Retry,
    /// A retry that took a half-open breaker's probe slot: its success closes the breaker, its
    /// failure hands the slot back (the breaker stays half-open).
    RetryProbe,
}

/// What recording an outcome did to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    None,
    Tripped,
    Recovered,
}

/// The breaker of one plugin version.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig, clock: Arc<dyn Clock>) -> Breaker {
        Breaker {
            state: Mutex::new(State::Closed {
                consecutive_faults: 0,
            }),
            config,
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-written (every
        // update is one assignment), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        let now = self.clock.now();
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Admits a call, or says how long until one may run.
    pub(crate) fn admit(&self) -> Result<Admission, Duration> {
        let now = self.clock.now();
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(Admission::Normal),
            State::Open { until } if now < until => Err(until - now),
            State::Open { .. } | State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                Ok(Admission::Probe)
            }
            // One probe at a time: the others wait for its verdict.
            State::HalfOpen { probing: true } => Err(Duration::ZERO),
        }
    }

    /// Admits a retry of a call that failed before (see the module doc), or says how long
    /// until one may run (zero: a probe is in flight).
    pub(crate) fn admit_retry(&self) -> Result<Admission, Duration> {
        let now = self.clock.now();
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(Admission::Retry),
            State::Open { until } if now < until => Err(until - now),
            State::Open { .. } | State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                Ok(Admission::RetryProbe)
            }
            State::HalfOpen { probing: true } => Err(Duration::ZERO),
        }
    }

    /// Records the outcome of an admitted call. `fault` is `None` when the call failed for a
    /// reason that says nothing about the plugin (the probe slot is then handed back).
    pub(crate) fn record(&self, admission: Admission, fault: Option<bool>) -> Transition {
        if matches!(admission, Admission::Unmetered | Admission::Retry) {
            return Transition::None;
        }
        let now = self.clock.now();
        let mut state = self.lock();
        if admission == Admission::RetryProbe {
            // Only a success counts; anything else gives the probe slot back untouched.
            return match (fault, &mut *state) {
                (Some(false), current @ State::HalfOpen { .. }) => {
                    *current = State::Closed {
                        consecutive_faults: 0,
                    };
                    Transition::Recovered
                }
                (_, State::HalfOpen { probing }) => {
                    *probing = false;
                    Transition::None
                }
                _ => Transition::None,
            };
        }
        match (fault, &mut *state) {
            (None, State::HalfOpen { probing }) if admission == Admission::Probe => {
                *probing = false;
                Transition::None
            }
            (None, _) => Transition::None,
            (Some(false), current) => {
                let recovered = !matches!(current, State::Closed { .. });
                *current = State::Closed {
                    consecutive_faults: 0,
                };
                if recovered {
                    Transition::Recovered
                } else {
                    Transition::None
                }
            }
            (Some(true), State::Closed { consecutive_faults }) => {
                *consecutive_faults = consecutive_faults.saturating_add(1);
                if *consecutive_faults >= self.config.failure_threshold {
                    *state = State::Open {
                        until: now + self.config.cool_down,
                    };
                    Transition::Tripped
                } else {
                    Transition::None
                }
            }
            (Some(true), current) => {
                // A failed probe, or a straggler admitted before the breaker opened.
                let was_open = matches!(current, State::Open { .. });
                *current = State::Open {
                    until: now + self.config.cool_down,
                };
                if was_open {
                    Transition::None
                } else {
                    Transition::Tripped
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(clock: &Arc<ManualClock>) -> Breaker {
        Breaker::new(
            BreakerConfig {
                failure_threshold: 3,
                cool_down: Duration::from_secs(10),
            },
            clock.clone(),
        )
    }

    #[test]
    fn trips_after_threshold_consecutive_faults() {
        let clock = ManualClock::new();
        let b = breaker(&clock);
        for _ in 0..2 {
            assert_eq!(
                b.record(b.admit().expect("closed"), Some(true)),
                Transition::None
            );
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(
            b.record(b.admit().expect("closed"), Some(true)),
            Transition::Tripped
        );
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(), Err(Duration::from_secs(10)));
    }

    #[test]
    fn a_success_resets_the_count() {
        let clock = ManualClock::new();
        let b = breaker(&clock);
        b.record(b.admit().expect("closed"), Some(true));
        b.record(b.admit().expect("closed"), Some(true));
        b.record(b.admit().expect("closed"), Some(false));
        b.record(b.admit().expect("closed"), Some(true));
        b.record(b.admit().expect("closed"), Some(true));
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_admits_one_probe_then_closes_on_success() {
        let clock = ManualClock::new();
        let b = breaker(&clock);
        for _ in 0..3 {
            b.record(b.admit().expect("closed"), Some(true));
        }
        clock.advance(Duration::from_secs(9));
        assert!(b.admit().is_err(), "still cooling down");
        clock.advance(Duration::from_secs(1));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let probe = b.admit().expect("probe admitted");
        assert_eq!(probe, Admission::Probe);
        assert_eq!(b.admit(), Err(Duration::ZERO), "one probe at a time");
        assert_eq!(b.record(probe, Some(false)), Transition::Recovered);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_failed_probe_reopens_for_a_full_cool_down() {
        let clock = ManualClock::new();
        let b = breaker(&clock);
        for _ in 0..3 {
            b.record(b.admit().expect("closed"), Some(true));
        }
        clock.advance(Duration::from_secs(10));
        let probe = b.admit().expect("probe admitted");
        assert_eq!(b.record(probe, Some(true)), Transition::Tripped);
        assert_eq!(b.admit(), Err(Duration::from_secs(10)));
    }

    #[test]
    fn retries_are_not_counted_while_closed_and_wait_while_open() {
        let clock = ManualClock::new();
        let b = breaker(&clock);
        // Failed retries, however many, never open a closed breaker.
        for _ in 0..10 {
            let retry = b.admit_retry().expect("closed");
            assert_eq!(retry, Admission::Retry);
            assert_eq!(b.record(retry, Some(true)), Transition::None);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        for _ in 0..3 {
            b.record(b.admit().expect("closed"), Some(true));
        }
        assert_eq!(
            b.admit_retry(),
            Err(Duration::from_secs(10)),
            "open: no retry"
        );
    }

    #[test]
    fn a_failed_retry_hands_the_probe_back_and_a_healthy_call_closes_the_breaker() {
        let clock = ManualClock::new();
        let b = breaker(&clock);
        for _ in 0..3 {
            b.record(b.admit().expect("closed"), Some(true));
        }
        clock.advance(Duration::from_secs(10));
        let retry = b.admit_retry().expect("half-open: the probe slot is free");
        assert_eq!(retry, Admission::RetryProbe);
        assert_eq!(b.admit(), Err(Duration::ZERO), "one probe at a time");
        assert_eq!(b.record(retry, Some(true)), Transition::None);
        assert_eq!(b.state(), BreakerState::HalfOpen, "not reopened");
        let probe = b.admit().expect("the slot was handed back");
        assert_eq!(probe, Admission::Probe);
        assert_eq!(b.record(probe, Some(false)), Transition::Recovered);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_successful_retry_probe_closes_the_breaker() {
        let clock = ManualClock::new();
        let b = breaker(&clock);
        for _ in 0..3 {
            b.record(b.admit().expect("closed"), Some(true));
        }
        clock.advance(Duration::from_secs(10));
        let retry = b.admit_retry().expect("probe slot");
        assert_eq!(b.record(retry, Some(false)), Transition::Recovered);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_probe_that_fails_for_host_reasons_hands_the_slot_back() {
        let clock = ManualClock::new();
        let b = breaker(&clock);
        for _ in 0..3 {
            b.record(b.admit().expect("closed"), Some(true));
        }
        clock.advance(Duration::from_secs(10));
        let probe = b.admit().expect("probe admitted");
        b.record(probe, None);
        assert_eq!(b.admit(), Ok(Admission::Probe));
    }
}
