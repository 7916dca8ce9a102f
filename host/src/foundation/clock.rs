//! The clock is injected so that expiry, holds and tier windows can be tested by moving time;
//! the calendar turns its instants into the programme's local months.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::foundation::error::{DomainError, DomainResult};

/// Source of the current time, in Unix epoch milliseconds (UTC).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time in Unix epoch milliseconds.
    fn now_ms(&self) -> i64;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
    }
}

/// A clock that only moves when told to; for tests and replays.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock frozen at `now_ms`.
    pub fn new(now_ms: i64) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(now_ms)))
    }

    /// Moves the clock forward (or back, with a negative delta).
    pub fn advance_ms(&self, delta_ms: i64) {
        self.0.fetch_add(delta_ms, Ordering::SeqCst);
    }

    /// Sets the clock to an absolute time.
    pub fn set_ms(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Milliseconds in one day.
pub const DAY_MS: i64 = 86_400_000;

// ---------------------------------------------------------------------------------------------
// Calendar: local months in the programme's time zone

fn utc_offset(minutes: i64) -> DomainResult<time::UtcOffset> {
    let seconds = i32::try_from(minutes.saturating_mul(60)).map_err(DomainError::internal)?;
    time::UtcOffset::from_whole_seconds(seconds).map_err(DomainError::internal)
}

/// The local day (days since 1970-01-01 at the offset) an instant falls in.
pub fn local_day(at_ms: i64, utc_offset_minutes: i64) -> i64 {
    (at_ms + utc_offset_minutes * 60_000).div_euclid(DAY_MS)
}

/// The first instant of a local day.
pub fn local_day_start_ms(day: i64, utc_offset_minutes: i64) -> i64 {
    day * DAY_MS - utc_offset_minutes * 60_000
}

/// The local (year, month 1..=12) of an instant.
pub fn local_year_month(at_ms: i64, utc_offset_minutes: i64) -> DomainResult<(i32, u8)> {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
        .map_err(DomainError::internal)?
        .to_offset(utc_offset(utc_offset_minutes)?);
    Ok((at.year(), u8::from(at.month())))
}

/// The local calendar date (year, month, day) of an instant.
pub fn local_date(at_ms: i64, utc_offset_minutes: i64) -> DomainResult<(i32, u8, u8)> {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
        .map_err(DomainError::internal)?
        .to_offset(utc_offset(utc_offset_minutes)?);
    Ok((at.year(), u8::from(at.month()), at.day()))
}

/// The first instant of a local month given as `year * 12 + (month - 1)`.
pub fn local_month_start_ms(months: i64, utc_offset_minutes: i64) -> DomainResult<i64> {
    let year = i32::try_from(months.div_euclid(12)).map_err(DomainError::internal)?;
    let month = u8::try_from(months.rem_euclid(12) + 1).map_err(DomainError::internal)?;
    let month = time::Month::try_from(month).map_err(DomainError::internal)?;
    let date = time::Date::from_calendar_date(year, month, 1).map_err(DomainError::internal)?;
    let at = time::PrimitiveDateTime::new(date, time::Time::MIDNIGHT)
        .assume_offset(utc_offset(utc_offset_minutes)?);
    Ok(at.unix_timestamp().saturating_mul(1000))
}
