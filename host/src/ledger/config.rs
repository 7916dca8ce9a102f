//! The `[points]` configuration: expiry policy, redeem rate, the programme's time zone, and what points are worth in cents.

use super::*;

/// When an earned point expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryPolicy {
    /// `expiry_days` after the day it was earned.
    DaysAfterEarn,
    /// At the end of the month, `expiry_periods_after` months after the earning month.
    EndOfMonth,
    /// At the end of the year, `expiry_periods_after` years after the earning year.
    EndOfYear,
}

/// The `[points]` configuration section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PointsConfig {
    /// Expiry policy for earned and credited points.
    pub expiry_policy: ExpiryPolicy,
    /// For `days_after_earn`: lifetime of a lot in days.
    pub expiry_days: i64,
    /// For `end_of_month` / `end_of_year`: whole months / years after the earning one
    /// (0 = the end of the earning month or year itself).
    pub expiry_periods_after: i64,
    /// The programme's local time zone as an offset from UTC in minutes (e.g. 480 for UTC+8):
    /// months and years end, and monthly tier evaluations start, at local midnight.
    pub utc_offset_minutes: i64,
    /// `redeem_points` points pay for `redeem_cents` cents at a counter.
    pub redeem_points: i64,
    /// See `redeem_points`.
    pub redeem_cents: i64,
    /// Hold lifetime when the request does not give one.
    pub hold_default_ttl_ms: i64,
    /// Longest hold a client may ask for; a forgotten hold must not lock points for long.
    pub hold_max_ttl_ms: i64,
    /// Restored refund points keep their original expiry but live at least this long.
    pub restore_min_validity_days: i64,
}

impl Default for PointsConfig {
    fn default() -> Self {
        Self {
            expiry_policy: ExpiryPolicy::DaysAfterEarn,
            expiry_days: 365,
            expiry_periods_after: 1,
            utc_offset_minutes: 0,
            redeem_points: 100,
            redeem_cents: 100,
            hold_default_ttl_ms: 15 * 60 * 1000,
            hold_max_ttl_ms: DAY_MS,
            restore_min_validity_days: 30,
        }
    }
}

/// Largest accepted `expiry_days` / periods: a century is already "never".
pub(super) const MAX_EXPIRY_DAYS: i64 = 36_500;
pub(super) const MAX_EXPIRY_PERIODS: i64 = 100;
/// UTC offsets in use span -12:00 to +14:00.
pub(super) const MAX_UTC_OFFSET_MINUTES: i64 = 14 * 60;
/// Bounds the conversion rate so `points × cents` stays far from overflow.
pub(super) const MAX_REDEEM_RATE_PART: i64 = 1_000_000;

impl PointsConfig {
    /// Checks the section's values; called before the server or a job starts.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=MAX_EXPIRY_DAYS).contains(&self.expiry_days),
            "points.expiry_days must be 1..={MAX_EXPIRY_DAYS}"
        );
        anyhow::ensure!(
            (0..=MAX_EXPIRY_PERIODS).contains(&self.expiry_periods_after),
            "points.expiry_periods_after must be 0..={MAX_EXPIRY_PERIODS}"
        );
        anyhow::ensure!(
            self.utc_offset_minutes.abs() <= MAX_UTC_OFFSET_MINUTES,
            "points.utc_offset_minutes must be within ±{MAX_UTC_OFFSET_MINUTES}"
        );
        anyhow::ensure!(
            (1..=MAX_REDEEM_RATE_PART).contains(&self.redeem_points)
                && (1..=MAX_REDEEM_RATE_PART).contains(&self.redeem_cents),
            "points.redeem_points and points.redeem_cents must be 1..={MAX_REDEEM_RATE_PART}"
        );
        anyhow::ensure!(
            MIN_HOLD_TTL_MS <= self.hold_default_ttl_ms
                && self.hold_default_ttl_ms <= self.hold_max_ttl_ms
                && self.hold_max_ttl_ms <= 30 * DAY_MS,
            "points.hold_default_ttl_ms must be {MIN_HOLD_TTL_MS}..=hold_max_ttl_ms <= 30 days"
        );
        anyhow::ensure!(
            (0..=MAX_EXPIRY_DAYS).contains(&self.restore_min_validity_days),
            "points.restore_min_validity_days must be 0..={MAX_EXPIRY_DAYS}"
        );
        Ok(())
    }

    /// When points credited at `earned_at_ms` expire (the first instant they are gone).
    pub fn expiry_for(&self, earned_at_ms: i64) -> DomainResult<i64> {
        match self.expiry_policy {
            ExpiryPolicy::DaysAfterEarn => earned_at_ms
                .checked_add(self.expiry_days.saturating_mul(DAY_MS))
                .ok_or_else(|| DomainError::internal(anyhow::anyhow!("expiry overflows"))),
            ExpiryPolicy::EndOfMonth => {
                let (year, month) = local_year_month(earned_at_ms, self.utc_offset_minutes)?;
                // The end of month m is the start of month m + 1.
                let months =
                    i64::from(year) * 12 + i64::from(month) - 1 + self.expiry_periods_after + 1;
                local_month_start_ms(months, self.utc_offset_minutes)
            }
            ExpiryPolicy::EndOfYear => {
                let (year, _) = local_year_month(earned_at_ms, self.utc_offset_minutes)?;
                let months = (i64::from(year) + self.expiry_periods_after + 1) * 12;
                local_month_start_ms(months, self.utc_offset_minutes)
            }
        }
    }

    /// The cents that `points` pay for, if the rate converts them exactly.
    pub fn points_to_cents(&self, points: i64) -> Option<i64> {
        let product = i128::from(points) * i128::from(self.redeem_cents);
        let rate = i128::from(self.redeem_points);
        if product % rate != 0 {
            return None;
        }
        i64::try_from(product / rate).ok()
    }
}

/// What `points` are worth in cents at the redeem rate, rounded down (settlement values).
pub fn points_value_cents(points: &PointsConfig, amount: i64) -> i64 {
    let value = i128::from(amount.max(0)) * i128::from(points.redeem_cents)
        / i128::from(points.redeem_points.max(1));
    i64::try_from(value).unwrap_or(i64::MAX)
}
