//! Purchases and refunds at brand counters: earning points, paying with points, and giving
//! both back on refund.
//!
//! # A purchase, in one transaction
//! 1. **Price** ([`price`]): line totals with checked arithmetic; the points payment (converted
//!    at `[points] redeem_points`/`redeem_cents`, exactly) is allocated across lines in
//!    proportion to their totals, largest remainder first, so the per-line shares add up to the
//!    cent and the point. Eligible spend = the part of each non-excluded line paid with money.
//! 2. **Base earn**: the brand's rule (`earn_points` per `earn_unit_cents`, rounded down) on the
//!    eligible total, allocated back to lines the same way (a refund reverses per line).
//! 3. **Bonuses** ([`plan_earn`]): proposals (from plugins) validated by the host and posted as
//!    their own posting pairs and lots, each with its reason.
//! 4. **Ledger**: points spent are debited first (oldest-expiry lots), so a purchase can never be
//!    paid with the points it earns; then the earn is credited as new lots.
//! 5. **Tiers**: the eligible spend joins the qualifying pool; a crossed threshold upgrades at once.
//!
//! # Return windows
//! At a brand with `return_window_days`, a purchase's earn (base and bonuses) is recorded as
//! **pending** ([`crate::ledger::pending`]): shown, not spendable, not issued, not yet
//! qualifying. A refund inside the window cancels its share of the pending earn — nothing to
//! claw back, so never debt. When the window passes, [`release_due`] credits what is left as
//! ordinary lots (expiring from the release), records the `points-issued` event, and counts the
//! qualifying spend, dated at the purchase; an upgrade happens then. A refund after the release
//! claws back as usual.
//!
//! Plugin hooks must not run inside the write transaction (on SQLite it is the only writer): call
//! [`quote`] first to get the base earn the plugin needs, run the plugin, then pass its proposals
//! to [`record_purchase`], which recomputes and re-validates everything inside the transaction.
//!
//! # Layout
//! - [`pricing`]: Pricing and earn, pure: line totals, the points payment allocated across lines, base earn, bonus plans.
//! - [`record`]: Recording a purchase in the caller's transaction: spend, earn, lines, bonuses, outbox events, tier effect.
//! - [`read`]: Reading a purchase back with its lines, bonuses, refunds and skipped plugin decisions.
//! - [`refund`]: Refunds by line and quantity: restore, claw back, debt, outbox reversals.
//! - [`release`]: Releasing pending points when a brand's return window has passed.
//!
//! # Refunds
//! By line and quantity (or everything not yet refunded). Cumulative refunded quantity per line
//! is guarded in SQL (`refunded_quantity + q <= quantity`, plus a `CHECK`), so a refund can never
//! exceed the purchase and never reverses twice. Every amount a refund gives back is the
//! difference of a cumulative share, `floor(x · refunded_after / qty) − floor(x · refunded_before
//! / qty)`, so partial refunds add up exactly to the full amounts.
//!
//! - **Restore first, then claw back.** Points the refunded lines spent are restored as new lots
//!   that keep the original lot's expiry but live at least `restore_min_validity_days`. Then the
//!   points they earned (base and a proportional share of bonuses) are clawed back: from the
//!   purchase's own lots first, then oldest-expiry first.
//! - **Refund after partial spend.** If the member no longer has enough, the available part is
//!   clawed back and the rest is recorded as **debt** (a `receivable` posting), never as a
//!   negative balance; debt is paid automatically from the member's next earned or credited
//!   points.
//! - Qualifying spend is reversed (dated at the purchase, so it nets out in the same window);
//!   refunds never downgrade on their own — the next evaluation does.
//! - Refunds are allowed for blocked members: they give back what the member paid.

pub mod pricing;
pub mod read;
pub mod record;
pub mod refund;
pub mod release;

pub use pricing::*;
pub use read::*;
pub use record::*;
pub use refund::*;
pub use release::*;

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::domain::brands::{load_brand, BrandRule, EarnRule};
use crate::domain::membership;
use crate::domain::tiers::{self, TierChange, TiersConfig};
use crate::foundation::clock::DAY_MS;
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::{new_id, Backend, UniqueAsConflict};
use crate::ledger::outbox::{self, EventKind, NewEvent};
use crate::ledger::{
    self, credit_lot, debit_fifo, lock_wallet, points_value_cents, Account, Entry, EntryKind,
    EntryRefs, PointsConfig, RestoreExpiry, Val,
};

/// Most lines in one purchase: a large supermarket basket; bounds per-request work.
pub const MAX_LINES: usize = 500;
/// Largest quantity on one line.
pub const MAX_QUANTITY: i64 = 10_000;
/// Largest unit price, cents (1,000,000.00): above any single item at a mall counter.
pub const MAX_UNIT_PRICE_CENTS: i64 = 100_000_000;
/// Largest order total, cents (100,000,000.00), keeping every product far from `i64` overflow.
pub const MAX_ORDER_TOTAL_CENTS: i64 = 10_000_000_000;
/// Longest order id, refund id, line id, sku or category.
pub const MAX_ID_LEN: usize = 100;
/// The bonus bounds are the plugin contract's (one definition, in `coalition_runtime::limits`):
/// at most 16 bonuses per purchase, totalling at most 10× the base earn and 1,000,000 points.
pub use coalition_runtime::limits::{
    MAX_BONUSES, MAX_BONUS_MULTIPLE_OF_BASE, MAX_BONUS_POINTS_PER_ORDER,
};
/// Longest bonus code (stable machine name).
const MAX_BONUS_CODE_LEN: usize = 64;
/// Longest bonus source (plugin id and version).
const MAX_BONUS_SOURCE_LEN: usize = 200;

// ---------------------------------------------------------------------------------------------
// Requests

/// A purchase recorded at a counter.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseRequest {
    /// The brand's order id, unique per brand, 1..=100 bytes.
    pub order_id: String,
    /// The member who bought.
    pub member_id: String,
    /// The lines, 1..=500.
    pub lines: Vec<LineRequest>,
    /// Points used to pay, ≥ 0; converted at the configured rate and must convert exactly.
    #[serde(default)]
    pub points_spent: i64,
    /// Cents paid with the member's stored value, ≥ 0, at most what is left after coupon
    /// discounts and points; the rest is cash. The stored-value part earns like cash.
    #[serde(default)]
    pub stored_value_cents: i64,
    /// A checkout of this cart at this brand (`POST /brands/{b}/checkouts`): its coupons are
    /// redeemed with the purchase and their discounts reduce what the member pays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout_id: Option<String>,
}

/// One line of a purchase.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    /// Line id, unique within the order, 1..=100 bytes.
    pub line_id: String,
    /// Stock-keeping unit, 1..=100 bytes.
    pub sku: String,
    /// Category, 0..=100 bytes.
    #[serde(default)]
    pub category: String,
    /// Quantity, 1..=10,000.
    pub quantity: i64,
    /// Unit price in cents, 0..=100,000,000.
    pub unit_price_cents: i64,
}

/// A refund of a purchase.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// The brand's refund id, unique per brand, 1..=100 bytes.
    pub refund_id: String,
    /// Lines and quantities to refund; empty or omitted = everything not yet refunded.
    #[serde(default)]
    pub lines: Vec<RefundLineRequest>,
}

/// One refunded line.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundLineRequest {
    /// The purchase line.
    pub line_id: String,
    /// Quantity to refund, ≥ 1 and within what is left of the line.
    pub quantity: i64,
}

/// A bonus proposed for a purchase (by a brand plugin's `points-bonus` hook).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BonusProposal {
    /// Bonus points, > 0.
    pub points: i64,
    /// Stable machine code, 1..=64 bytes.
    pub code: String,
    /// Reason shown to the member, 1..=200 bytes.
    pub reason: String,
    /// Who proposed it (e.g. `coffee-perks@1.2.0`), 1..=200 bytes.
    pub source: String,
}

// ---------------------------------------------------------------------------------------------
// Views

/// A plugin decision the host refused, cut or skipped, as the answer and the record show it:
/// a member's dispute is answered from this, not from logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SkippedDecision {
    /// The plugin.
    pub plugin: String,
    /// Its version.
    pub version: String,
    /// The hook, e.g. `points-bonus`.
    pub hook: String,
    /// Stable reason code: a plugin failure (`fuel_exhausted`, `deadline`, `trap`,
    /// `invariant_violation`, `hook_error`, `circuit_open`, `overloaded`, …) or a host cap
    /// (`bonus_capped`: cut to fit the order's bonus cap; `bonus_cap_reached`: dropped, the cap
    /// was already reached; `too_many_bonuses`: dropped past the order's bonus count; and the
    /// funding brand's budgets: `budget_clipped`, cut to what the budget has left this period;
    /// `budget_exhausted`, dropped, nothing left).
    pub code: String,
    /// What happened, for people.
    pub detail: String,
}

/// A validated bonus on a purchase.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BonusView {
    /// Points.
    pub points: i64,
    /// Code.
    pub code: String,
    /// Reason.
    pub reason: String,
    /// Who proposed it.
    pub source: String,
}

/// A refund, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RefundView {
    /// Internal id.
    pub id: String,
    /// The brand's refund id.
    pub refund_id: String,
    /// The brand.
    pub brand_id: String,
    /// The refunded order.
    pub order_id: String,
    /// The member.
    pub member_id: String,
    /// Lines refunded by this refund.
    pub lines: Vec<RefundLineView>,
    /// Cash to give back, cents (the part paid neither with points nor with stored value).
    pub cash_refund_cents: i64,
    /// Stored value given back to the member's balance, cents.
    #[serde(default)]
    pub stored_value_refund_cents: i64,
    /// Points restored to the member (the refunded lines' share of `points_spent`).
    pub points_restored: i64,
    /// Earned points reversed (base and bonus).
    pub points_reversed: i64,
    /// Of which bonus points.
    pub bonus_reversed: i64,
    /// Points actually taken from the wallet.
    pub points_clawed_back: i64,
    /// Pending points cancelled (a refund inside the return window): never debt.
    #[serde(default)]
    pub pending_cancelled: i64,
    /// Points the member no longer had, recorded as debt.
    pub shortfall_points: i64,
    /// Qualifying spend removed from the tier pool, cents.
    pub qualifying_reversed_cents: i64,
    /// The ledger entry (absent if no points moved).
    pub entry_id: Option<String>,
    /// When, Unix ms.
    pub created_at_ms: i64,
    /// Coupons voided because every line they discounted is now refunded.
    #[serde(default)]
    pub coupons_voided: Vec<String>,
    /// Points given back for perks whose coupons were voided (their redemptions are reversed).
    #[serde(default)]
    pub perk_points_restored: i64,
}

/// One line of a refund.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RefundLineView {
    /// The purchase line.
    pub line_id: String,
    /// Quantity refunded.
    pub quantity: i64,
    /// Cash back, cents.
    pub cash_refund_cents: i64,
    /// Stored value back, cents.
    #[serde(default)]
    pub stored_value_refund_cents: i64,
    /// Points restored.
    pub points_restored: i64,
    /// Base points reversed.
    pub points_reversed: i64,
}

fn hundred() -> i64 {
    100
}

/// A purchase.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PurchaseView {
    /// Internal id.
    pub id: String,
    /// The brand.
    pub brand_id: String,
    /// The brand's order id.
    pub order_id: String,
    /// The member.
    pub member_id: String,
    /// Order total, cents.
    pub total_cents: i64,
    /// Points used to pay.
    pub points_spent: i64,
    /// Cents those points paid.
    pub points_value_cents: i64,
    /// Cents paid with cash.
    pub cash_cents: i64,
    /// Cents paid with stored value.
    #[serde(default)]
    pub stored_value_cents: i64,
    /// Spend that earned points (and counts towards tiers), cents.
    pub eligible_cents: i64,
    /// The paid membership card's multiplier applied to the base earn, percent (100 = none).
    #[serde(default = "hundred")]
    pub points_multiplier_percent: i64,
    /// Base points earned (after the card's multiplier).
    pub base_points: i64,
    /// Bonus points earned.
    pub bonus_points: i64,
    /// Base + bonus.
    pub points_earned: i64,
    /// When the earned points expire, Unix ms (absent if nothing was earned or they are
    /// still pending).
    pub points_expire_at_ms: Option<i64>,
    /// Of `points_earned`, what is still pending in the brand's return window (net of
    /// refunds inside it); 0 once released.
    #[serde(default)]
    pub points_pending: i64,
    /// When pending points become available, Unix ms (absent without a return window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points_available_at_ms: Option<i64>,
    /// Lines with their allocations and refunded quantities.
    pub lines: Vec<PricedLine>,
    /// Validated bonuses.
    pub bonuses: Vec<BonusView>,
    /// Refunds so far (on reads).
    pub refunds: Vec<RefundView>,
    /// The tier change this purchase caused, if any (on the recording response).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_change: Option<TierChange>,
    /// Refund debt paid from this purchase's earn.
    pub debt_settled: i64,
    /// When, Unix ms.
    pub created_at_ms: i64,
    /// Coupon discounts, cents (`total_cents - discount_cents` is what the member paid).
    #[serde(default)]
    pub discount_cents: i64,
    /// The checkout whose coupons this purchase redeemed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout_id: Option<String>,
    /// Plugin decisions the host refused, cut or skipped for this purchase (a failed bonus
    /// plugin, a bonus over the order's cap), each with the plugin, version, hook and a reason
    /// code; empty when every decision was applied as proposed.
    #[serde(default)]
    pub skipped_decisions: Vec<SkippedDecision>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, sku: &str, category: &str, quantity: i64, unit: i64) -> LineRequest {
        LineRequest {
            line_id: id.to_owned(),
            sku: sku.to_owned(),
            category: category.to_owned(),
            quantity,
            unit_price_cents: unit,
        }
    }

    fn rule() -> EarnRule {
        EarnRule {
            earn_points: 1,
            earn_unit_cents: 100,
            excluded_skus: ["GIFTCARD".to_owned()].into_iter().collect(),
            excluded_categories: ["delivery".to_owned()].into_iter().collect(),
        }
    }

    #[test]
    fn allocation_is_exact_and_proportional() {
        assert_eq!(allocate(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(allocate(100, &[50, 25, 25]), vec![50, 25, 25]);
        assert_eq!(allocate(7, &[0, 0]), vec![0, 0]);
        let shares = allocate(999_999, &[3, 7, 11, 13]);
        assert_eq!(shares.iter().sum::<i64>(), 999_999);
    }

    #[test]
    fn cumulative_shares_add_up() {
        let x = 101;
        let n = 7;
        let total: i64 = (0..n).map(|k| share_step(x, k, k + 1, n)).sum();
        assert_eq!(total, x);
        assert_eq!(share_step(x, 0, 3, n) + share_step(x, 3, 7, n), x);
    }

    #[test]
    fn excluded_and_points_paid_parts_earn_nothing() {
        let points = PointsConfig::default();
        let lines = [
            line("1", "SHOE", "apparel", 1, 10_000),
            line("2", "GIFTCARD", "gifts", 1, 5_000),
            line("3", "SHIP", "delivery", 1, 1_000),
        ];
        let p = price(&rule(), &points, &lines, 1_600).expect("priced");
        assert_eq!(p.total_cents, 16_000);
        // 1,600 points pay 1,600 cents, split 10:5:1.
        assert_eq!(p.lines[0].points_cents_alloc, 1_000);
        assert_eq!(p.lines[1].points_cents_alloc, 500);
        assert_eq!(p.lines[2].points_cents_alloc, 100);
        // Only line 1's money part earns: 9,000 cents → 90 points.
        assert_eq!(p.eligible_cents, 9_000);
        assert_eq!(p.base_points, 90);
        assert_eq!(p.lines[0].earned_points, 90);
        assert_eq!(p.lines[1].earned_points + p.lines[2].earned_points, 0);
    }

    #[test]
    fn points_cannot_pay_more_than_the_total() {
        let points = PointsConfig::default();
        let err =
            price(&rule(), &points, &[line("1", "A", "", 1, 100)], 101).expect_err("over total");
        assert_eq!(err.code, "points_exceed_total");
    }

    #[test]
    fn bonus_caps() {
        let ok = plan_earn(
            10,
            vec![BonusProposal {
                points: 100,
                code: "x2".into(),
                reason: "weekend".into(),
                source: "p@1".into(),
            }],
        );
        assert!(ok.is_ok());
        let too_much = plan_earn(
            10,
            vec![BonusProposal {
                points: 101,
                code: "x2".into(),
                reason: "weekend".into(),
                source: "p@1".into(),
            }],
        );
        assert_eq!(
            too_much.map(|_| ()).map_err(|e| e.code),
            Err("invalid_bonus")
        );
    }
}
