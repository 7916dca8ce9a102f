//! Helper methods on the WIT records: totals with overflow checks, calendar shortcuts and
//! constructors that keep texts within the contract's limits.

use crate::calendar::{self, LocalDate, Weekday};
use crate::limits::{clip_owned, MAX_CODE_BYTES, MAX_REASON_BYTES};
use crate::money::checked_sum;
use crate::{
    Bonus, BrandSpend, Cart, CouponDecision, Hook, HookError, Invocation, MemberContext, Order,
    OrderLine, PluginInfo, RedeemDecision, SettlementLine,
};

/// The party name for the platform operator in settlement lines.
pub const PLATFORM: &str = "platform";

impl Invocation {
    /// The local calendar date of the call.
    pub fn local_date(&self) -> LocalDate {
        calendar::local_date(self.now_ms, self.utc_offset_minutes)
    }

    /// The local day of the week of the call.
    pub fn weekday(&self) -> Weekday {
        self.local_date().weekday()
    }

    /// Whether `at_ms` falls in the same local ISO week as the call.
    pub fn same_iso_week_as(&self, at_ms: i64) -> bool {
        calendar::same_iso_week(self.now_ms, at_ms, self.utc_offset_minutes)
    }

    /// UTC milliseconds of the last millisecond of the call's local day.
    pub fn end_of_local_day_ms(&self) -> i64 {
        let tomorrow = LocalDate::from_days_since_epoch(
            self.local_date().days_since_epoch().saturating_add(1),
        );
        calendar::start_of_local_day_ms(tomorrow, self.utc_offset_minutes).saturating_sub(1)
    }
}

impl OrderLine {
    /// `quantity × unit-price-cents`.
    ///
    /// # Errors
    /// [`HookError::InvalidInput`] when the price is negative or the product overflows.
    pub fn total_cents(&self) -> Result<i64, HookError> {
        if self.unit_price_cents < 0 {
            return Err(HookError::invalid_input(format!(
                "line {} has a negative unit price",
                self.line_id
            )));
        }
        self.unit_price_cents
            .checked_mul(i64::from(self.quantity))
            .ok_or_else(|| {
                HookError::invalid_input(format!("line {} total overflows", self.line_id))
            })
    }
}

/// Sum of the line totals of `lines` that `keep` selects, with overflow checks.
///
/// # Errors
/// [`HookError::InvalidInput`] on a negative price or an overflow.
pub fn lines_total_cents(
    lines: &[OrderLine],
    mut keep: impl FnMut(&OrderLine) -> bool,
) -> Result<i64, HookError> {
    let mut totals = Vec::with_capacity(lines.len());
    for line in lines.iter().filter(|line| keep(line)) {
        totals.push(line.total_cents()?);
    }
    checked_sum(totals).ok_or_else(|| HookError::invalid_input("lines total overflows"))
}

impl Order {
    /// Sum of all line totals, recomputed with overflow checks (use it rather than trusting
    /// `total-cents` when a decision depends on the lines).
    ///
    /// # Errors
    /// [`HookError::InvalidInput`] on a negative price or an overflow.
    pub fn lines_total_cents(&self) -> Result<i64, HookError> {
        lines_total_cents(&self.lines, |_| true)
    }

    /// The spend that earns points: non-excluded lines minus the part paid with points,
    /// never below 0. Excluded lines (gift cards, delivery fees) and points earn nothing.
    ///
    /// # Errors
    /// [`HookError::InvalidInput`] on a negative price, a negative points payment or an overflow.
    pub fn earning_cents(&self) -> Result<i64, HookError> {
        if self.paid_with_points_cents < 0 {
            return Err(HookError::invalid_input(
                "paid-with-points-cents is negative",
            ));
        }
        let earning_lines = lines_total_cents(&self.lines, |line| !line.excluded)?;
        Ok(earning_lines
            .saturating_sub(self.paid_with_points_cents)
            .max(0))
    }
}

impl Cart {
    /// Sum of all line totals, recomputed with overflow checks.
    ///
    /// # Errors
    /// [`HookError::InvalidInput`] on a negative price or an overflow.
    pub fn lines_total_cents(&self) -> Result<i64, HookError> {
        lines_total_cents(&self.lines, |_| true)
    }

    /// Whether a coupon of template `template_id` is already applied to the cart.
    pub fn has_applied(&self, template_id: &str) -> bool {
        self.applied_templates.iter().any(|t| t == template_id)
    }
}

impl MemberContext {
    /// The member's recent activity at `brand`, if any.
    pub fn spend_at(&self, brand: &str) -> Option<&BrandSpend> {
        self.spend.iter().find(|s| s.brand == brand)
    }

    /// Net qualifying spend at `brand` in the last 7 days, cents; 0 without activity.
    pub fn spend_7d_cents_at(&self, brand: &str) -> i64 {
        self.spend_at(brand).map_or(0, |s| s.spend_7d_cents)
    }

    /// Net qualifying spend at `brand` in the last 30 days, cents; 0 without activity.
    pub fn spend_30d_cents_at(&self, brand: &str) -> i64 {
        self.spend_at(brand).map_or(0, |s| s.spend_30d_cents)
    }

    /// Whether the member carries `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

impl Hook {
    /// Every hook, in WIT order.
    pub const ALL: [Hook; 5] = [
        Hook::PointsBonus,
        Hook::ListPerks,
        Hook::RedeemPerk,
        Hook::ApplyCoupon,
        Hook::Settle,
    ];

    /// The WIT (and manifest) name, for example `"points-bonus"`.
    pub fn name(self) -> &'static str {
        match self {
            Hook::PointsBonus => "points-bonus",
            Hook::ListPerks => "list-perks",
            Hook::RedeemPerk => "redeem-perk",
            Hook::ApplyCoupon => "apply-coupon",
            Hook::Settle => "settle",
        }
    }

    /// Parses a WIT name such as `"settle"`.
    pub fn from_name(name: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|hook| hook.name() == name)
    }
}

impl PluginInfo {
    /// Whether the plugin says it implements `hook`.
    pub fn implements(&self, hook: Hook) -> bool {
        self.hooks.contains(&hook)
    }
}

impl HookError {
    /// An [`HookError::InvalidInput`], its reason clipped to the contract's 200 bytes.
    pub fn invalid_input(reason: impl Into<String>) -> HookError {
        HookError::InvalidInput(clip_owned(reason, MAX_REASON_BYTES))
    }

    /// A [`HookError::Failed`], its reason clipped to the contract's 200 bytes.
    pub fn failed(reason: impl Into<String>) -> HookError {
        HookError::Failed(clip_owned(reason, MAX_REASON_BYTES))
    }
}

impl Bonus {
    /// A bonus; the code is clipped to 64 bytes and the reason to 200.
    pub fn new(points: i64, code: impl Into<String>, reason: impl Into<String>) -> Bonus {
        Bonus {
            points,
            code: clip_owned(code, MAX_CODE_BYTES),
            reason: clip_owned(reason, MAX_REASON_BYTES),
        }
    }
}

impl SettlementLine {
    /// `payer` owes `payee` `amount_cents`; the reason is clipped to 200 bytes.
    pub fn new(
        payer: impl Into<String>,
        payee: impl Into<String>,
        amount_cents: i64,
        reason: impl Into<String>,
    ) -> SettlementLine {
        SettlementLine {
            payer: payer.into(),
            payee: payee.into(),
            amount_cents,
            reason: clip_owned(reason, MAX_REASON_BYTES),
        }
    }
}

impl RedeemDecision {
    /// A refusal shown to the member, clipped to 200 bytes.
    pub fn refused(reason: impl Into<String>) -> RedeemDecision {
        RedeemDecision::Refused(clip_owned(reason, MAX_REASON_BYTES))
    }
}

impl CouponDecision {
    /// A rejection shown at the counter, clipped to 200 bytes.
    pub fn rejected(reason: impl Into<String>) -> CouponDecision {
        CouponDecision::Rejected(clip_owned(reason, MAX_REASON_BYTES))
    }
}
