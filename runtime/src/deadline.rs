//! How a call's deadline is measured: on the CPU time of the thread running the guest, with a
//! wall-clock backstop.
//!
//! A pure wall-clock deadline blames the plugin for the host's load: on a busy 2-core machine a
//! thread descheduled for 20 ms fails a call that needed 50 µs of guest work. Charging the guest
//! only for the CPU its thread actually spent keeps the deadline about the plugin, and the
//! backstop ([`MAX_WALL_MS_PER_CALL`]) still bounds how long a counter can wait for any call.
//!
//! The epoch ticker wakes the store once the deadline's ticks have passed in wall time; since CPU
//! time never runs ahead of wall time, that is the earliest moment the budget can be spent. The
//! callback then reads the thread's CPU clock and either traps or extends by the ticks still
//! owed — so a call that finishes in time (nearly all of them) never runs the callback at all.

use std::time::{Duration, Instant};

use wasmtime::UpdateDeadline;

use crate::engine;
use crate::limits::MAX_WALL_MS_PER_CALL;

/// The clocks of one call, started when its store is created.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallClock {
    budget: Duration,
    backstop: Duration,
    wall_start: Instant,
    /// `None` where thread CPU time cannot be read: the budget then falls back to wall time.
    cpu_start: Option<Duration>,
}

impl CallClock {
    /// Starts the clocks for a call with `deadline_ms` of CPU time.
    pub fn start(deadline_ms: u32) -> CallClock {
        CallClock {
            budget: Duration::from_millis(u64::from(deadline_ms)),
            backstop: Duration::from_millis(u64::from(MAX_WALL_MS_PER_CALL.max(deadline_ms))),
            wall_start: Instant::now(),
            cpu_start: thread_cpu_time(),
        }
    }

    /// The epoch ticks to wait before the first check: the budget itself.
    pub fn first_ticks(&self) -> u64 {
        engine::deadline_ticks(duration_ms(self.budget))
    }

    /// Decides at an epoch deadline: interrupt when the CPU budget or the wall backstop is
    /// spent, otherwise wait the ticks still owed by the nearer of the two.
    pub fn check(&self) -> UpdateDeadline {
        let wall = self.wall_start.elapsed();
        let spent = match (self.cpu_start, thread_cpu_time()) {
            (Some(start), Some(now)) => now.saturating_sub(start),
            _ => wall,
        };
        let Some(cpu_left) = self.budget.checked_sub(spent).filter(|d| !d.is_zero()) else {
            return UpdateDeadline::Interrupt;
        };
        let Some(wall_left) = self.backstop.checked_sub(wall).filter(|d| !d.is_zero()) else {
            return UpdateDeadline::Interrupt;
        };
        UpdateDeadline::Continue(engine::deadline_ticks(duration_ms(cpu_left.min(wall_left))))
    }
}

/// Whole milliseconds, rounded up, saturating.
fn duration_ms(d: Duration) -> u32 {
    let ms = d.as_micros().div_ceil(1000);
    u32::try_from(ms).unwrap_or(u32::MAX)
}

/// CPU time consumed by the calling thread so far.
#[cfg(unix)]
fn thread_cpu_time() -> Option<Duration> {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u32::try_from(ts.tv_nsec).ok()?;
    Some(Duration::new(secs, nanos))
}

#[cfg(not(unix))]
fn thread_cpu_time() -> Option<Duration> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn burn(d: Duration) {
        let start = thread_cpu_time().expect("cpu clock");
        while thread_cpu_time().expect("cpu clock") - start < d {
            std::hint::black_box(0u64);
        }
    }

    #[test]
    fn sleeping_does_not_spend_the_budget() {
        let clock = CallClock::start(5);
        std::thread::sleep(Duration::from_millis(20));
        // 20 ms of wall time passed but almost no CPU: the call may go on.
        assert!(matches!(clock.check(), UpdateDeadline::Continue(t) if t >= 1));
    }

    #[test]
    fn burning_the_cpu_spends_it() {
        let clock = CallClock::start(2);
        burn(Duration::from_millis(3));
        assert!(matches!(clock.check(), UpdateDeadline::Interrupt));
    }

    #[test]
    fn the_wall_backstop_interrupts_a_starved_call() {
        let mut clock = CallClock::start(5);
        clock.wall_start -= Duration::from_millis(u64::from(MAX_WALL_MS_PER_CALL) + 1);
        assert!(matches!(clock.check(), UpdateDeadline::Interrupt));
    }

    #[test]
    fn rounding_up_never_returns_zero_ticks() {
        assert_eq!(duration_ms(Duration::from_micros(1)), 1);
        assert_eq!(duration_ms(Duration::from_millis(7)), 7);
    }
}
