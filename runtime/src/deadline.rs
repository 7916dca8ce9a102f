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

    /// Decides at an epoch deadline from the real clocks: see [`CallClock::decide`].
    pub fn check(&self) -> UpdateDeadline {
        let spent_cpu = match (self.cpu_start, thread_cpu_time()) {
            (Some(start), Some(now)) => Some(now.saturating_sub(start)),
            _ => None,
        };
        self.decide(self.wall_start.elapsed(), spent_cpu)
    }

    /// Interrupts when the CPU budget or the wall backstop is spent, otherwise waits the ticks
    /// still owed by the nearer of the two. `cpu` is the CPU time the call's thread spent
    /// (`None` where it cannot be read: the budget is then charged in wall time). Pure, so the
    /// rule is tested with any readings, whatever the machine's load.
    pub fn decide(&self, wall: Duration, cpu: Option<Duration>) -> UpdateDeadline {
        let spent = cpu.unwrap_or(wall);
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
///
/// Through libc's `clock_gettime` (vDSO or system call): rustix's own vDSO parser faulted under
/// valgrind, which the benchmarks use to count a call's instructions.
#[cfg(unix)]
#[allow(unsafe_code)]
pub fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the whole call; the clock id is a
    // constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u32::try_from(ts.tv_nsec).ok()?;
    Some(Duration::new(secs, nanos))
}

#[cfg(not(unix))]
pub fn thread_cpu_time() -> Option<Duration> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn continues(d: UpdateDeadline) -> Option<u64> {
        match d {
            UpdateDeadline::Continue(ticks) => Some(ticks),
            _ => None,
        }
    }

    /// A starved host (the thread waited for a core) does not fail a call whose own work fits
    /// its budget: 20 ms of wall time, 1 ms of CPU, budget 2 ms.
    #[test]
    fn a_starved_call_within_its_cpu_budget_goes_on() {
        let clock = CallClock::start(2);
        let ticks = continues(clock.decide(MS(20), Some(MS(1)))).expect("continues");
        assert_eq!(
            ticks,
            engine::deadline_ticks(1),
            "waits the 1 ms still owed"
        );
    }

    #[test]
    fn spending_the_cpu_budget_interrupts() {
        let clock = CallClock::start(2);
        assert!(matches!(
            clock.decide(MS(2), Some(MS(2))),
            UpdateDeadline::Interrupt
        ));
        assert!(matches!(
            clock.decide(MS(50), Some(MS(3))),
            UpdateDeadline::Interrupt
        ));
    }

    #[test]
    fn the_wall_backstop_interrupts_a_starved_call() {
        let clock = CallClock::start(5);
        let backstop = MS(u64::from(MAX_WALL_MS_PER_CALL));
        assert!(matches!(
            clock.decide(backstop, Some(MS(1))),
            UpdateDeadline::Interrupt
        ));
        // Just before it, the nearer of the two limits sets the wait.
        let ticks = continues(clock.decide(backstop - MS(1), Some(MS(1)))).expect("continues");
        assert_eq!(ticks, engine::deadline_ticks(1));
    }

    #[test]
    fn without_a_cpu_clock_the_budget_is_wall_time() {
        let clock = CallClock::start(5);
        assert!(matches!(
            clock.decide(MS(5), None),
            UpdateDeadline::Interrupt
        ));
        assert!(continues(clock.decide(MS(4), None)).is_some());
    }

    #[test]
    fn the_thread_cpu_clock_reads_and_moves_forward() {
        // Only that the clock exists on this platform and is monotonic, never how fast it runs.
        let a = thread_cpu_time().expect("a thread CPU clock on unix");
        let mut x = 0u64;
        for i in 0..100_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        let b = thread_cpu_time().expect("cpu clock");
        assert!(b >= a);
    }

    #[test]
    fn rounding_up_never_returns_zero_ticks() {
        assert_eq!(duration_ms(Duration::from_micros(1)), 1);
        assert_eq!(duration_ms(Duration::from_millis(7)), 7);
    }
}
