//! Deterministic local calendar math from `now-ms` and `utc-offset-minutes`.
//!
//! Plugins have no clock and no time zone database: the host passes the frozen call time
//! (`Invocation::now_ms`, UTC) and the coalition's offset from UTC. Everything here is pure
//! integer civil-date arithmetic (proleptic Gregorian calendar), so the same input gives the same
//! date on every machine and on replay.
//!
//! ```
//! use coalition_sdk::calendar::{local_date, Weekday};
//!
//! // 2025-03-16T17:00:00Z is already Monday 17 March at 01:00 in UTC+8.
//! let now_ms = 1_742_144_400_000;
//! let date = local_date(now_ms, 480);
//! assert_eq!((date.year, date.month, date.day), (2025, 3, 17));
//! assert_eq!(date.weekday(), Weekday::Monday);
//! // ...but still Sunday in UTC.
//! assert_eq!(local_date(now_ms, 0).weekday(), Weekday::Sunday);
//! ```

/// Milliseconds in a civil day (no leap seconds: Unix time has none).
pub const MS_PER_DAY: i64 = 86_400_000;
/// Milliseconds in a minute.
pub const MS_PER_MINUTE: i64 = 60_000;

/// Day of the week, Monday first as in ISO 8601.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Weekday {
    /// Monday.
    Monday,
    /// Tuesday.
    Tuesday,
    /// Wednesday.
    Wednesday,
    /// Thursday.
    Thursday,
    /// Friday.
    Friday,
    /// Saturday.
    Saturday,
    /// Sunday.
    Sunday,
}

impl Weekday {
    /// All days, Monday first.
    pub const ALL: [Weekday; 7] = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ];

    /// ISO number: Monday is 1, Sunday is 7.
    pub fn number_from_monday(self) -> u8 {
        match self {
            Weekday::Monday => 1,
            Weekday::Tuesday => 2,
            Weekday::Wednesday => 3,
            Weekday::Thursday => 4,
            Weekday::Friday => 5,
            Weekday::Saturday => 6,
            Weekday::Sunday => 7,
        }
    }

    /// Lowercase English name, for example `"monday"`.
    pub fn name(self) -> &'static str {
        match self {
            Weekday::Monday => "monday",
            Weekday::Tuesday => "tuesday",
            Weekday::Wednesday => "wednesday",
            Weekday::Thursday => "thursday",
            Weekday::Friday => "friday",
            Weekday::Saturday => "saturday",
            Weekday::Sunday => "sunday",
        }
    }

    /// Parses a full or three-letter English name, any case (`"Monday"`, `"mon"`).
    ///
    /// ```
    /// use coalition_sdk::calendar::Weekday;
    /// assert_eq!(Weekday::from_name("Tue"), Some(Weekday::Tuesday));
    /// assert_eq!(Weekday::from_name("someday"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Weekday> {
        let name = name.trim().to_ascii_lowercase();
        Weekday::ALL
            .into_iter()
            .find(|day| day.name() == name || (name.len() == 3 && day.name().starts_with(&name)))
    }

    /// Whether this is Saturday or Sunday.
    pub fn is_weekend(self) -> bool {
        matches!(self, Weekday::Saturday | Weekday::Sunday)
    }

    fn from_days_since_epoch(days: i64) -> Weekday {
        // 1970-01-01 was a Thursday, index 3 counting from Monday = 0.
        Weekday::ALL[usize::try_from((days + 3).rem_euclid(7)).unwrap_or(0)]
    }
}

/// A local calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalDate {
    /// Year, for example 2025.
    pub year: i64,
    /// Month, 1..=12.
    pub month: u8,
    /// Day of the month, 1..=31.
    pub day: u8,
}

impl LocalDate {
    /// The date `days` days after 1970-01-01.
    pub fn from_days_since_epoch(days: i64) -> LocalDate {
        let (year, month, day) = civil_from_days(days);
        LocalDate { year, month, day }
    }

    /// Days since 1970-01-01 (negative before).
    pub fn days_since_epoch(self) -> i64 {
        days_from_civil(self.year, self.month, self.day)
    }

    /// Day of the week.
    pub fn weekday(self) -> Weekday {
        Weekday::from_days_since_epoch(self.days_since_epoch())
    }

    /// ISO 8601 week: `(iso_year, week)`, week 1..=53; weeks start on Monday and week 1 holds
    /// the year's first Thursday (so 2024-12-30 is in week 1 of 2025).
    ///
    /// ```
    /// use coalition_sdk::calendar::LocalDate;
    /// let d = LocalDate { year: 2024, month: 12, day: 30 };
    /// assert_eq!(d.iso_week(), (2025, 1));
    /// ```
    pub fn iso_week(self) -> (i64, u8) {
        let days = self.days_since_epoch();
        let monday_offset = i64::from(self.weekday().number_from_monday()) - 1;
        let thursday = days - monday_offset + 3;
        let (iso_year, _, _) = civil_from_days(thursday);
        let week = (thursday - days_from_civil(iso_year, 1, 1)) / 7 + 1;
        (iso_year, u8::try_from(week).unwrap_or(53))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
///
/// Months outside 1..=12 and days outside 1..=31 are not checked; pass a real date.
pub fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let month = i64::from(month);
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date `days` days after 1970-01-01: `(year, month, day)`.
pub fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are in range by construction (1..=31, 1..=12).
    (
        year,
        u8::try_from(month).unwrap_or(1),
        u8::try_from(day).unwrap_or(1),
    )
}

/// Local milliseconds since the epoch: UTC `now_ms` shifted by the offset (saturating, so an
/// absurd input gives an absurd date rather than a panic).
fn local_ms(now_ms: i64, utc_offset_minutes: i32) -> i64 {
    now_ms.saturating_add(i64::from(utc_offset_minutes).saturating_mul(MS_PER_MINUTE))
}

/// Local days since 1970-01-01 at `now_ms` (UTC) in a zone `utc_offset_minutes` from UTC.
pub fn local_day_number(now_ms: i64, utc_offset_minutes: i32) -> i64 {
    local_ms(now_ms, utc_offset_minutes).div_euclid(MS_PER_DAY)
}

/// The local calendar date at `now_ms` (UTC) in a zone `utc_offset_minutes` from UTC.
pub fn local_date(now_ms: i64, utc_offset_minutes: i32) -> LocalDate {
    LocalDate::from_days_since_epoch(local_day_number(now_ms, utc_offset_minutes))
}

/// Local time of day at `now_ms`: `(hour 0..=23, minute 0..=59)`.
pub fn local_time_of_day(now_ms: i64, utc_offset_minutes: i32) -> (u8, u8) {
    let minute_of_day = local_ms(now_ms, utc_offset_minutes).rem_euclid(MS_PER_DAY) / MS_PER_MINUTE;
    (
        u8::try_from(minute_of_day / 60).unwrap_or(0),
        u8::try_from(minute_of_day % 60).unwrap_or(0),
    )
}

/// UTC milliseconds of local midnight at the start of `date`.
pub fn start_of_local_day_ms(date: LocalDate, utc_offset_minutes: i32) -> i64 {
    date.days_since_epoch()
        .saturating_mul(MS_PER_DAY)
        .saturating_sub(i64::from(utc_offset_minutes).saturating_mul(MS_PER_MINUTE))
}

/// Whether two instants fall in the same local ISO week (Monday to Sunday).
///
/// ```
/// use coalition_sdk::calendar::same_iso_week;
/// let sunday_noon_utc = 1_742_126_400_000; // 2025-03-16T12:00Z, a Sunday
/// let monday_noon_utc = sunday_noon_utc + 86_400_000;
/// assert!(!same_iso_week(sunday_noon_utc, monday_noon_utc, 0));
/// assert!(same_iso_week(sunday_noon_utc, sunday_noon_utc - 3 * 86_400_000, 0));
/// ```
pub fn same_iso_week(a_ms: i64, b_ms: i64, utc_offset_minutes: i32) -> bool {
    let monday = |ms: i64| {
        let day = local_day_number(ms, utc_offset_minutes);
        day - (day + 3).rem_euclid(7)
    };
    monday(a_ms) == monday(b_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trips_across_four_centuries_and_before_the_epoch() {
        for days in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 2, 29), 11_016);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(
            LocalDate {
                year: 2024,
                month: 2,
                day: 29
            }
            .weekday(),
            Weekday::Thursday
        );
        assert_eq!(
            LocalDate {
                year: 1969,
                month: 12,
                day: 31
            }
            .weekday(),
            Weekday::Wednesday
        );
    }

    #[test]
    fn offsets_move_the_local_date() {
        // 2025-01-01T23:30Z: Thursday 2 January in UTC+8, Wednesday 1 January in UTC-5.
        let ms = days_from_civil(2025, 1, 1) * MS_PER_DAY + (23 * 60 + 30) * MS_PER_MINUTE;
        assert_eq!(
            local_date(ms, 480),
            LocalDate {
                year: 2025,
                month: 1,
                day: 2
            }
        );
        assert_eq!(
            local_date(ms, -300),
            LocalDate {
                year: 2025,
                month: 1,
                day: 1
            }
        );
        assert_eq!(local_time_of_day(ms, 480), (7, 30));
        assert_eq!(local_time_of_day(ms, -300), (18, 30));
    }

    #[test]
    fn iso_weeks_at_year_boundaries() {
        assert_eq!(
            LocalDate {
                year: 2021,
                month: 1,
                day: 3
            }
            .iso_week(),
            (2020, 53)
        );
        assert_eq!(
            LocalDate {
                year: 2021,
                month: 1,
                day: 4
            }
            .iso_week(),
            (2021, 1)
        );
        assert_eq!(
            LocalDate {
                year: 2026,
                month: 12,
                day: 31
            }
            .iso_week(),
            (2026, 53)
        );
    }

    #[test]
    fn start_of_local_day_is_local_midnight() {
        let date = LocalDate {
            year: 2025,
            month: 3,
            day: 17,
        };
        let start = start_of_local_day_ms(date, 480);
        assert_eq!(local_date(start, 480), date);
        assert_eq!(local_date(start - 1, 480).day, 16);
        assert_eq!(local_time_of_day(start, 480), (0, 0));
    }
}
