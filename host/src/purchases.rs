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
//! Plugin hooks must not run inside the write transaction (on SQLite it is the only writer): call
//! [`quote`] first to get the base earn the plugin needs, run the plugin, then pass its proposals
//! to [`record_purchase`], which recomputes and re-validates everything inside the transaction.
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

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::clock::DAY_MS;
use crate::error::{ApiError, ApiResult};
use crate::ledger::{
    self, credit_lot, debit_fifo, lock_wallet, Account, Entry, EntryKind, EntryRefs, PointsConfig,
    RestoreExpiry, Val,
};
use crate::settlement::{
    self,
    events::{EventKind, NewEvent},
};
use crate::store::{is_unique_violation, new_id, Backend};
use crate::tiers::{self, TierChange, TiersConfig};

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
/// Most bonuses on one purchase (matches the plugin contract).
pub const MAX_BONUSES: usize = 16;
/// Bonuses may total at most this multiple of the base earn (matches the plugin contract).
pub const MAX_BONUS_MULTIPLE_OF_BASE: i64 = 10;
/// Hard cap on bonus points per purchase, whatever the base.
pub const MAX_BONUS_POINTS_PER_ORDER: i64 = 1_000_000;
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
// Pricing and earn (pure)

/// A brand's base earn rule and exclusions.
#[derive(Debug, Clone, Default)]
pub struct EarnRule {
    /// Points per `earn_unit_cents` of eligible spend.
    pub earn_points: i64,
    /// See `earn_points`.
    pub earn_unit_cents: i64,
    /// SKUs that earn nothing (gift cards, delivery fees).
    pub excluded_skus: HashSet<String>,
    /// Categories that earn nothing.
    pub excluded_categories: HashSet<String>,
}

/// A priced line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PricedLine {
    /// Line id.
    pub line_id: String,
    /// SKU.
    pub sku: String,
    /// Category.
    pub category: String,
    /// Quantity bought.
    pub quantity: i64,
    /// Unit price, cents.
    pub unit_price_cents: i64,
    /// quantity × unit price, cents.
    pub total_cents: i64,
    /// Excluded from earning (by SKU or category).
    pub excluded: bool,
    /// Points of the points payment allocated to this line.
    pub points_alloc: i64,
    /// Cents of the points payment allocated to this line.
    pub points_cents_alloc: i64,
    /// Cents paid with money on this line.
    pub cash_cents: i64,
    /// Cents that earn (0 if excluded, else the money part).
    pub eligible_cents: i64,
    /// Base points this line earned.
    pub earned_points: i64,
    /// Quantity refunded so far.
    pub refunded_quantity: i64,
    /// Coupon discount on this line, cents (the member did not pay it; it earns nothing).
    #[serde(default)]
    pub discount_cents: i64,
}

/// A priced purchase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    /// Lines.
    pub lines: Vec<PricedLine>,
    /// Order total, cents.
    pub total_cents: i64,
    /// Points paid.
    pub points_spent: i64,
    /// Cents the points paid for.
    pub points_value_cents: i64,
    /// Cents paid with money.
    pub cash_cents: i64,
    /// Eligible spend, cents.
    pub eligible_cents: i64,
    /// Base earn, points.
    pub base_points: i64,
    /// Coupon discounts, cents.
    pub discount_cents: i64,
}

/// Splits `amount` across `weights` in proportion, exactly: each share is rounded down and the
/// leftover units go to the largest remainders (ties to the earlier line). All weights zero:
/// everything to nobody (the caller guarantees `amount` is 0 then).
pub fn allocate(amount: i64, weights: &[i64]) -> Vec<i64> {
    let total: i128 = weights.iter().map(|w| i128::from(*w)).sum();
    if total <= 0 || amount == 0 {
        return vec![0; weights.len()];
    }
    let amount = i128::from(amount);
    let mut shares: Vec<i64> = Vec::with_capacity(weights.len());
    let mut remainders: Vec<(i128, usize)> = Vec::with_capacity(weights.len());
    let mut given: i128 = 0;
    for (i, w) in weights.iter().enumerate() {
        let product = amount * i128::from(*w);
        let share = product / total;
        given += share;
        shares.push(i64::try_from(share).unwrap_or(i64::MAX));
        remainders.push((product % total, i));
    }
    let mut left = amount - given;
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in remainders {
        if left <= 0 {
            break;
        }
        shares[i] += 1;
        left -= 1;
    }
    shares
}

/// The cumulative-share step: `floor(x·after/n) − floor(x·before/n)`; over a sequence of
/// refunds reaching `n` these add up to exactly `x`.
pub fn share_step(x: i64, before: i64, after: i64, n: i64) -> i64 {
    if n <= 0 {
        return 0;
    }
    let f = |k: i64| (i128::from(x) * i128::from(k)) / i128::from(n);
    i64::try_from(f(after) - f(before)).unwrap_or(0)
}

fn check_id(field: &str, value: &str, allow_empty: bool) -> ApiResult<()> {
    if (!allow_empty && value.is_empty()) || value.len() > MAX_ID_LEN {
        let min = if allow_empty { 0 } else { 1 };
        return Err(ApiError::validation(format!(
            "{field} must be {min}..={MAX_ID_LEN} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::validation(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

/// Prices a purchase and computes its base earn. Pure: no database, no clock.
pub fn price(
    rule: &EarnRule,
    points: &PointsConfig,
    lines: &[LineRequest],
    points_spent: i64,
) -> ApiResult<Priced> {
    price_discounted(rule, points, lines, points_spent, &[])
}

/// [`price`] with coupon discounts per line (same order as `lines`; empty = none): the points
/// payment is allocated over what is left of each line after its discount, and only the money
/// part of the discounted price earns.
pub fn price_discounted(
    rule: &EarnRule,
    points: &PointsConfig,
    lines: &[LineRequest],
    points_spent: i64,
    discounts: &[i64],
) -> ApiResult<Priced> {
    if lines.is_empty() || lines.len() > MAX_LINES {
        return Err(ApiError::validation(format!(
            "a purchase has 1..={MAX_LINES} lines"
        )));
    }
    if !(0..=ledger::MAX_POINTS_PER_OPERATION).contains(&points_spent) {
        return Err(ApiError::validation(format!(
            "points_spent must be 0..={}",
            ledger::MAX_POINTS_PER_OPERATION
        )));
    }
    let mut seen = HashSet::with_capacity(lines.len());
    let mut totals = Vec::with_capacity(lines.len());
    let mut total_cents: i64 = 0;
    for (i, line) in lines.iter().enumerate() {
        check_id(&format!("lines[{i}].line_id"), &line.line_id, false)?;
        check_id(&format!("lines[{i}].sku"), &line.sku, false)?;
        check_id(&format!("lines[{i}].category"), &line.category, true)?;
        if !seen.insert(line.line_id.as_str()) {
            return Err(ApiError::validation(format!(
                "line id {:?} appears twice",
                line.line_id
            )));
        }
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            return Err(ApiError::validation(format!(
                "lines[{i}].quantity must be 1..={MAX_QUANTITY}"
            )));
        }
        if !(0..=MAX_UNIT_PRICE_CENTS).contains(&line.unit_price_cents) {
            return Err(ApiError::validation(format!(
                "lines[{i}].unit_price_cents must be 0..={MAX_UNIT_PRICE_CENTS}"
            )));
        }
        let line_total = line
            .quantity
            .checked_mul(line.unit_price_cents)
            .ok_or_else(|| ApiError::validation(format!("lines[{i}] total overflows")))?;
        total_cents = total_cents
            .checked_add(line_total)
            .filter(|t| *t <= MAX_ORDER_TOTAL_CENTS)
            .ok_or_else(|| {
                ApiError::validation(format!(
                    "the order total must be at most {MAX_ORDER_TOTAL_CENTS} cents"
                ))
            })?;
        totals.push(line_total);
    }
    let line_discounts: Vec<i64> = (0..lines.len())
        .map(|i| discounts.get(i).copied().unwrap_or(0))
        .collect();
    if line_discounts
        .iter()
        .zip(&totals)
        .any(|(d, t)| *d < 0 || d > t)
    {
        return Err(ApiError::internal(anyhow::anyhow!(
            "a coupon discount outside 0..=its line reached pricing"
        )));
    }
    let discount_total: i64 = line_discounts.iter().sum();
    let nets: Vec<i64> = totals
        .iter()
        .zip(&line_discounts)
        .map(|(t, d)| t - d)
        .collect();
    let net_total = total_cents - discount_total;
    let points_value_cents = points.points_to_cents(points_spent).ok_or_else(|| {
        ApiError::validation(format!(
            "points_spent must convert exactly to cents: {} points pay {} cents",
            points.redeem_points, points.redeem_cents
        ))
    })?;
    if points_value_cents > net_total {
        return Err(ApiError::unprocessable(
            "points_exceed_total",
            format!(
                "{points_spent} points pay {points_value_cents} cents, more than the order \
                 total of {net_total} cents"
            ),
        ));
    }
    let points_alloc = allocate(points_spent, &nets);
    let cents_alloc = allocate(points_value_cents, &nets);
    let mut priced_lines = Vec::with_capacity(lines.len());
    let mut eligible_total: i64 = 0;
    for (i, line) in lines.iter().enumerate() {
        let excluded = rule.excluded_skus.contains(&line.sku)
            || (!line.category.is_empty() && rule.excluded_categories.contains(&line.category));
        let cash = nets[i] - cents_alloc[i];
        let eligible = if excluded { 0 } else { cash };
        eligible_total += eligible;
        priced_lines.push(PricedLine {
            line_id: line.line_id.clone(),
            sku: line.sku.clone(),
            category: line.category.clone(),
            quantity: line.quantity,
            unit_price_cents: line.unit_price_cents,
            total_cents: totals[i],
            excluded,
            points_alloc: points_alloc[i],
            points_cents_alloc: cents_alloc[i],
            cash_cents: cash,
            eligible_cents: eligible,
            earned_points: 0,
            refunded_quantity: 0,
            discount_cents: line_discounts[i],
        });
    }
    let base_points = if rule.earn_unit_cents > 0 {
        i64::try_from(
            i128::from(eligible_total) * i128::from(rule.earn_points)
                / i128::from(rule.earn_unit_cents),
        )
        .map_err(|_| ApiError::validation("the earn overflows"))?
    } else {
        0
    };
    let weights: Vec<i64> = priced_lines.iter().map(|l| l.eligible_cents).collect();
    for (line, earned) in priced_lines.iter_mut().zip(allocate(base_points, &weights)) {
        line.earned_points = earned;
    }
    Ok(Priced {
        lines: priced_lines,
        total_cents,
        points_spent,
        points_value_cents,
        cash_cents: net_total - points_value_cents,
        eligible_cents: eligible_total,
        base_points,
        discount_cents: discount_total,
    })
}

/// The earn of a purchase: the base and the validated bonuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarnPlan {
    /// Base earn.
    pub base_points: i64,
    /// Accepted bonuses.
    pub bonuses: Vec<BonusProposal>,
}

impl EarnPlan {
    /// Bonus points in total.
    pub fn bonus_points(&self) -> i64 {
        self.bonuses.iter().map(|b| b.points).sum()
    }
}

/// Validates proposed bonuses against the base earn (the host's hard invariants: each bonus
/// positive and labelled, at most 16, the total within 10× the base and 1,000,000 points).
/// Any violation rejects the purchase: bonuses come from a plugin the host must not trust.
pub fn plan_earn(base_points: i64, proposals: Vec<BonusProposal>) -> ApiResult<EarnPlan> {
    let reject = |detail: String| ApiError::unprocessable("invalid_bonus", detail);
    if proposals.len() > MAX_BONUSES {
        return Err(reject(format!(
            "at most {MAX_BONUSES} bonuses per purchase"
        )));
    }
    let mut total: i64 = 0;
    for (i, b) in proposals.iter().enumerate() {
        if b.points <= 0 {
            return Err(reject(format!("bonus[{i}] must be > 0 points")));
        }
        if b.code.is_empty() || b.code.len() > MAX_BONUS_CODE_LEN {
            return Err(reject(format!(
                "bonus[{i}].code must be 1..={MAX_BONUS_CODE_LEN} bytes"
            )));
        }
        if b.reason.trim().is_empty() || b.reason.len() > ledger::MAX_REASON_LEN {
            return Err(reject(format!(
                "bonus[{i}].reason must be 1..={} bytes",
                ledger::MAX_REASON_LEN
            )));
        }
        if b.source.is_empty() || b.source.len() > MAX_BONUS_SOURCE_LEN {
            return Err(reject(format!(
                "bonus[{i}].source must be 1..={MAX_BONUS_SOURCE_LEN} bytes"
            )));
        }
        total = total
            .checked_add(b.points)
            .ok_or_else(|| reject("bonus points overflow".to_owned()))?;
    }
    let cap = base_points
        .max(0)
        .saturating_mul(MAX_BONUS_MULTIPLE_OF_BASE)
        .min(MAX_BONUS_POINTS_PER_ORDER);
    if total > cap {
        return Err(reject(format!(
            "bonuses total {total} points, more than the cap of {cap}"
        )));
    }
    Ok(EarnPlan {
        base_points,
        bonuses: proposals,
    })
}

// ---------------------------------------------------------------------------------------------
// Brands

/// A brand as purchases need it.
#[derive(Debug, Clone)]
pub struct BrandRule {
    /// `active` or `suspended`.
    pub status: String,
    /// The earn rule.
    pub rule: EarnRule,
}

/// Loads a brand's status and earn rule; unknown brand: 404.
pub async fn load_brand(conn: &mut AnyConnection, brand_id: &str) -> ApiResult<BrandRule> {
    let row: Option<(String, i64, i64, String, String)> = sqlx::query_as(
        "SELECT status, earn_points, earn_unit_cents, excluded_skus, excluded_categories
         FROM brands WHERE id = $1",
    )
    .bind(brand_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (status, earn_points, earn_unit_cents, skus, categories) =
        row.ok_or_else(|| ApiError::not_found("brand", brand_id))?;
    let parse = |json: &str| -> ApiResult<HashSet<String>> {
        serde_json::from_str::<Vec<String>>(json)
            .map(|v| v.into_iter().collect())
            .map_err(|e| ApiError::internal(anyhow::anyhow!("brand {brand_id} exclusions: {e}")))
    };
    Ok(BrandRule {
        status,
        rule: EarnRule {
            earn_points,
            earn_unit_cents,
            excluded_skus: parse(&skus)?,
            excluded_categories: parse(&categories)?,
        },
    })
}

fn require_active_brand(brand_id: &str, brand: &BrandRule) -> ApiResult<()> {
    if brand.status != "active" {
        return Err(ApiError::unprocessable(
            "brand_suspended",
            format!("brand {brand_id:?} is suspended and cannot record purchases"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Views

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
    /// Money to give back, cents (the part not paid with points).
    pub cash_refund_cents: i64,
    /// Points restored to the member (the refunded lines' share of `points_spent`).
    pub points_restored: i64,
    /// Earned points reversed (base and bonus).
    pub points_reversed: i64,
    /// Of which bonus points.
    pub bonus_reversed: i64,
    /// Points actually taken from the wallet.
    pub points_clawed_back: i64,
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
    /// Money back, cents.
    pub cash_refund_cents: i64,
    /// Points restored.
    pub points_restored: i64,
    /// Base points reversed.
    pub points_reversed: i64,
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
    /// Cents paid with money.
    pub cash_cents: i64,
    /// Spend that earned points (and counts towards tiers), cents.
    pub eligible_cents: i64,
    /// Base points earned.
    pub base_points: i64,
    /// Bonus points earned.
    pub bonus_points: i64,
    /// Base + bonus.
    pub points_earned: i64,
    /// When the earned points expire, Unix ms (absent if nothing was earned).
    pub points_expire_at_ms: Option<i64>,
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
    pub skipped_decisions: Vec<crate::plugins::SkippedDecision>,
}

// ---------------------------------------------------------------------------------------------
// Recording

/// What a plugin needs to propose bonuses: the priced purchase, computed outside any write
/// transaction.
pub async fn quote(
    pool: &sqlx::AnyPool,
    points: &PointsConfig,
    brand_id: &str,
    req: &PurchaseRequest,
) -> ApiResult<Priced> {
    let mut conn = pool.acquire().await?;
    let brand = load_brand(&mut conn, brand_id).await?;
    let discounts = match &req.checkout_id {
        Some(checkout_id) => {
            crate::checkout::line_discounts(&mut conn, brand_id, checkout_id, &req.lines).await?
        }
        None => Vec::new(),
    };
    price_discounted(
        &brand.rule,
        points,
        &req.lines,
        req.points_spent,
        &discounts,
    )
}

/// Records a purchase with its spend, earn (base + validated `bonuses`) and tier effect, in the
/// caller's transaction.
#[allow(clippy::too_many_arguments)]
pub async fn record_purchase(
    conn: &mut AnyConnection,
    backend: Backend,
    points: &PointsConfig,
    tiers_config: &TiersConfig,
    brand_id: &str,
    req: &PurchaseRequest,
    bonuses: Vec<BonusProposal>,
    now_ms: i64,
) -> ApiResult<PurchaseView> {
    check_id("order_id", &req.order_id, false)?;
    check_id("member_id", &req.member_id, false)?;
    let brand = load_brand(conn, brand_id).await?;
    require_active_brand(brand_id, &brand)?;
    // A checkout's coupons discount the lines (checked and locked here, redeemed below).
    let claimed = match &req.checkout_id {
        Some(checkout_id) => {
            Some(crate::checkout::claim(conn, backend, brand_id, checkout_id, req, now_ms).await?)
        }
        None => None,
    };
    let discounts = claimed
        .as_ref()
        .map(|c| c.line_discounts.clone())
        .unwrap_or_default();
    let priced = price_discounted(
        &brand.rule,
        points,
        &req.lines,
        req.points_spent,
        &discounts,
    )?;
    let plan = plan_earn(priced.base_points, bonuses)?;

    let mut wallet = lock_wallet(conn, backend, &req.member_id, now_ms).await?;
    wallet.require_active()?;
    let ladder = tiers::load_ladder(conn, tiers_config).await?;
    let tier = &ladder[tiers::rank_of(&ladder, &wallet.tier)];
    // The cap applies to what the member pays, after coupon discounts.
    if i128::from(priced.points_value_cents) * 100
        > i128::from(priced.total_cents - priced.discount_cents)
            * i128::from(tier.points_pay_max_percent)
    {
        return Err(ApiError::unprocessable(
            "points_payment_over_limit",
            format!(
                "at {} points may pay at most {}% of an order",
                tier.name, tier.points_pay_max_percent
            ),
        )
        .with_extra(serde_json::json!({
            "tier": tier.code,
            "points_pay_max_percent": tier.points_pay_max_percent,
        })));
    }

    let purchase_id = new_id();
    let refs = EntryRefs {
        brand_id: Some(brand_id.to_owned()),
        purchase_id: Some(purchase_id.clone()),
        ..EntryRefs::default()
    };
    // Spend first: the points a purchase earns can never pay for it.
    let spend_entry_id = if priced.points_spent > 0 {
        let mut entry = Entry::open(
            conn,
            EntryKind::Spend,
            &req.member_id,
            &refs,
            &req.order_id,
            now_ms,
        )
        .await?;
        debit_fifo(
            conn,
            &mut entry,
            Account::Redemption(Some(brand_id)),
            priced.points_spent,
            "paid with points",
            now_ms,
        )
        .await?;
        wallet.balance -= priced.points_spent;
        Some(entry.close(conn, now_ms).await?)
    } else {
        None
    };
    let earned = plan.base_points + plan.bonus_points();
    let expires_at = config_expiry(points, earned, now_ms)?;
    let (earn_entry_id, debt_settled) = match expires_at {
        Some(expires_at) => {
            let (entry, debt_settled) = post_earn(
                conn,
                &plan,
                &req.member_id,
                brand_id,
                &refs,
                expires_at,
                now_ms,
            )
            .await?;
            wallet.balance += earned - debt_settled;
            (Some(entry), debt_settled)
        }
        None => (None, 0),
    };

    let inserted = sqlx::query(
        "INSERT INTO purchases (id, brand_id, order_id, member_id, total_cents, points_spent,
            points_value_cents, cash_cents, eligible_cents, base_points, bonus_points,
            earn_points, earn_unit_cents, spend_entry_id, earn_entry_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(&purchase_id)
    .bind(brand_id)
    .bind(&req.order_id)
    .bind(&req.member_id)
    .bind(priced.total_cents)
    .bind(priced.points_spent)
    .bind(priced.points_value_cents)
    .bind(priced.cash_cents)
    .bind(priced.eligible_cents)
    .bind(plan.base_points)
    .bind(plan.bonus_points())
    .bind(brand.rule.earn_points)
    .bind(brand.rule.earn_unit_cents)
    .bind(spend_entry_id.as_deref())
    .bind(earn_entry_id.as_deref())
    .bind(now_ms)
    .execute(&mut *conn)
    .await;
    match inserted {
        Ok(_) => {}
        Err(err) if is_unique_violation(&err) => {
            return Err(ApiError::conflict(
                "order_exists",
                format!(
                    "order {:?} is already recorded at brand {brand_id:?}",
                    req.order_id
                ),
            ))
        }
        Err(err) => return Err(err.into()),
    }
    insert_lines(conn, &purchase_id, &priced.lines).await?;
    if let Some(claimed) = &claimed {
        crate::checkout::complete(conn, claimed, brand_id, &purchase_id, now_ms).await?;
    }
    ledger::insert_rows(
        conn,
        "purchase_bonuses (id, purchase_id, code, reason, source, points)",
        plan.bonuses
            .iter()
            .map(|b| {
                vec![
                    Val::Text(new_id()),
                    Val::Text(purchase_id.clone()),
                    Val::Text(b.code.clone()),
                    Val::Text(b.reason.clone()),
                    Val::Text(b.source.clone()),
                    Val::Int(b.points),
                ]
            })
            .collect(),
    )
    .await?;
    // Settlement outbox: the points this brand issued and the points spent at its counter.
    for (kind, points_moved, value) in [
        (
            EventKind::PointsIssued,
            earned,
            points_value_cents(points, earned),
        ),
        (
            EventKind::PointsRedeemed,
            priced.points_spent,
            priced.points_value_cents,
        ),
    ] {
        settlement::events::record(
            conn,
            &NewEvent {
                kind,
                brand_id,
                funding_brand: brand_id,
                honouring_brand: brand_id,
                reference: None,
                plugin: None,
                points: points_moved,
                value_cents: value,
                member_id: Some(&req.member_id),
                subject_kind: "purchase",
                subject_id: &purchase_id,
                reverses_event_id: None,
                occurred_at: now_ms,
            },
            now_ms,
        )
        .await?;
    }
    tiers::record_qualifying(
        conn,
        &req.member_id,
        &purchase_id,
        None,
        priced.eligible_cents,
        earned,
        now_ms,
        now_ms,
    )
    .await?;
    let tier_change = tiers::upgrade_after_purchase(
        conn,
        tiers_config,
        &ladder,
        &req.member_id,
        &wallet.tier,
        &purchase_id,
        now_ms,
    )
    .await?;
    Ok(PurchaseView {
        id: purchase_id,
        brand_id: brand_id.to_owned(),
        order_id: req.order_id.clone(),
        member_id: req.member_id.clone(),
        total_cents: priced.total_cents,
        points_spent: priced.points_spent,
        points_value_cents: priced.points_value_cents,
        cash_cents: priced.cash_cents,
        eligible_cents: priced.eligible_cents,
        base_points: plan.base_points,
        bonus_points: plan.bonus_points(),
        points_earned: earned,
        points_expire_at_ms: expires_at,
        lines: priced.lines,
        bonuses: plan
            .bonuses
            .into_iter()
            .map(|b| BonusView {
                points: b.points,
                code: b.code,
                reason: b.reason,
                source: b.source,
            })
            .collect(),
        refunds: Vec::new(),
        tier_change,
        debt_settled,
        created_at_ms: now_ms,
        discount_cents: priced.discount_cents,
        checkout_id: req.checkout_id.clone(),
        skipped_decisions: Vec::new(),
    })
}

/// What `points` are worth in cents at the redeem rate, rounded down (settlement values).
pub fn points_value_cents(points: &PointsConfig, amount: i64) -> i64 {
    let value = i128::from(amount.max(0)) * i128::from(points.redeem_cents)
        / i128::from(points.redeem_points.max(1));
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn config_expiry(points: &PointsConfig, earned: i64, now_ms: i64) -> ApiResult<Option<i64>> {
    if earned > 0 {
        points.expiry_for(now_ms).map(Some)
    } else {
        Ok(None)
    }
}

/// Posts the earn of a purchase: one posting pair and one lot for the base, and one of each per
/// bonus with its reason, all from the brand's issuance account.
async fn post_earn(
    conn: &mut AnyConnection,
    plan: &EarnPlan,
    member_id: &str,
    brand_id: &str,
    refs: &EntryRefs,
    expires_at: i64,
    now_ms: i64,
) -> ApiResult<(String, i64)> {
    let purchase_id = refs.purchase_id.as_deref();
    let mut entry = Entry::open(conn, EntryKind::Earn, member_id, refs, "purchase", now_ms).await?;
    if plan.base_points > 0 {
        credit_lot(
            conn,
            &mut entry,
            Account::Issuance(Some(brand_id)),
            plan.base_points,
            "earn",
            "base",
            expires_at,
            purchase_id,
            Some(brand_id),
            now_ms,
        )
        .await?;
    }
    for bonus in &plan.bonuses {
        let memo = format!("bonus {}: {} ({})", bonus.code, bonus.reason, bonus.source);
        credit_lot(
            conn,
            &mut entry,
            Account::Issuance(Some(brand_id)),
            bonus.points,
            "bonus",
            &memo,
            expires_at,
            purchase_id,
            Some(brand_id),
            now_ms,
        )
        .await?;
    }
    entry.close_settling(conn, now_ms).await
}

async fn insert_lines(
    conn: &mut AnyConnection,
    purchase_id: &str,
    lines: &[PricedLine],
) -> ApiResult<()> {
    ledger::insert_rows(
        conn,
        "purchase_lines (purchase_id, line_no, line_id, sku, category, quantity, \
         unit_price_cents, total_cents, excluded, points_alloc, points_cents_alloc, \
         eligible_cents, earned_points, discount_cents)",
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                vec![
                    Val::Text(purchase_id.to_owned()),
                    Val::Int(i64::try_from(i).unwrap_or(0)),
                    Val::Text(l.line_id.clone()),
                    Val::Text(l.sku.clone()),
                    Val::Text(l.category.clone()),
                    Val::Int(l.quantity),
                    Val::Int(l.unit_price_cents),
                    Val::Int(l.total_cents),
                    Val::Int(i64::from(l.excluded)),
                    Val::Int(l.points_alloc),
                    Val::Int(l.points_cents_alloc),
                    Val::Int(l.eligible_cents),
                    Val::Int(l.earned_points),
                    Val::Int(l.discount_cents),
                ]
            })
            .collect(),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Reading

type PurchaseRow = (
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    Option<String>,
    i64,
);

const PURCHASE_COLUMNS: &str = "id, order_id, member_id, total_cents, points_spent, \
    points_value_cents, cash_cents, eligible_cents, base_points, bonus_points, spend_entry_id, \
    created_at";

type LineRow = (
    i64,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
);

async fn load_lines(conn: &mut AnyConnection, purchase_id: &str) -> ApiResult<Vec<PricedLine>> {
    let rows: Vec<LineRow> = sqlx::query_as(
        "SELECT line_no, line_id, sku, category, quantity, unit_price_cents, total_cents, excluded,
                points_alloc, points_cents_alloc, eligible_cents, earned_points, refunded_quantity,
                discount_cents
         FROM purchase_lines WHERE purchase_id = $1 ORDER BY line_no",
    )
    .bind(purchase_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                _,
                line_id,
                sku,
                category,
                quantity,
                unit,
                total,
                excluded,
                pa,
                pca,
                elig,
                earned,
                rq,
                discount,
            )| {
                PricedLine {
                    line_id,
                    sku,
                    category,
                    quantity,
                    unit_price_cents: unit,
                    total_cents: total,
                    excluded: excluded != 0,
                    points_alloc: pa,
                    points_cents_alloc: pca,
                    cash_cents: total - discount - pca,
                    eligible_cents: elig,
                    earned_points: earned,
                    refunded_quantity: rq,
                    discount_cents: discount,
                }
            },
        )
        .collect())
}

type RefundRow = (
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    Option<String>,
    i64,
);

/// Reads a purchase with its lines, bonuses and refunds; unknown: 404.
pub async fn get_purchase(
    pool: &sqlx::AnyPool,
    brand_id: &str,
    order_id: &str,
) -> ApiResult<PurchaseView> {
    let mut conn = pool.acquire().await?;
    let row: Option<PurchaseRow> = sqlx::query_as(&format!(
        "SELECT {PURCHASE_COLUMNS} FROM purchases WHERE brand_id = $1 AND order_id = $2"
    ))
    .bind(brand_id)
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (id, order_id, member_id, total, spent, value, cash, eligible, base, bonus, _, created) =
        row.ok_or_else(|| ApiError::not_found("purchase", order_id))?;
    let lines = load_lines(&mut conn, &id).await?;
    let (discount_cents, checkout_id): (i64, Option<String>) =
        sqlx::query_as("SELECT discount_cents, checkout_id FROM purchases WHERE id = $1")
            .bind(&id)
            .fetch_one(&mut *conn)
            .await?;
    let bonuses: Vec<(i64, String, String, String)> = sqlx::query_as(
        "SELECT points, code, reason, source FROM purchase_bonuses WHERE purchase_id = $1 ORDER BY id",
    )
    .bind(&id)
    .fetch_all(&mut *conn)
    .await?;
    let skipped: Vec<(String, String, String, String, String)> = sqlx::query_as(
        "SELECT plugin, version, hook, code, detail FROM purchase_skipped_decisions
         WHERE purchase_id = $1 ORDER BY position",
    )
    .bind(&id)
    .fetch_all(&mut *conn)
    .await?;
    let skipped_decisions = skipped
        .into_iter()
        .map(
            |(plugin, version, hook, code, detail)| crate::plugins::SkippedDecision {
                plugin,
                version,
                hook,
                code,
                detail,
            },
        )
        .collect();
    let expires: Option<(i64,)> = sqlx::query_as(
        "SELECT MIN(expires_at) FROM point_lots WHERE purchase_id = $1 AND source IN ('earn', 'bonus')",
    )
    .bind(&id)
    .fetch_optional(&mut *conn)
    .await
    .unwrap_or(None);
    let refund_rows: Vec<RefundRow> = sqlx::query_as(
        "SELECT id, refund_id, cash_refund_cents, points_restored, points_reversed,
                points_clawed_back, shortfall_points, qualifying_reversed_cents, entry_id, created_at
         FROM refunds WHERE purchase_id = $1 ORDER BY created_at, id",
    )
    .bind(&id)
    .fetch_all(&mut *conn)
    .await?;
    let mut refunds = Vec::with_capacity(refund_rows.len());
    for (rid, refund_id, cash_r, restored, reversed, clawed, shortfall, qual, entry, at) in
        refund_rows
    {
        let rlines: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT line_id, quantity, cash_refund_cents, points_restored, points_reversed
             FROM refund_lines WHERE refund_pk = $1 ORDER BY line_id",
        )
        .bind(&rid)
        .fetch_all(&mut *conn)
        .await?;
        let base_reversed: i64 = rlines.iter().map(|l| l.4).sum();
        refunds.push(RefundView {
            id: rid,
            refund_id,
            brand_id: brand_id.to_owned(),
            order_id: order_id.clone(),
            member_id: member_id.clone(),
            lines: rlines
                .into_iter()
                .map(|(line_id, quantity, c, r, v)| RefundLineView {
                    line_id,
                    quantity,
                    cash_refund_cents: c,
                    points_restored: r,
                    points_reversed: v,
                })
                .collect(),
            cash_refund_cents: cash_r,
            points_restored: restored,
            points_reversed: reversed,
            bonus_reversed: reversed - base_reversed,
            points_clawed_back: clawed,
            shortfall_points: shortfall,
            qualifying_reversed_cents: qual,
            entry_id: entry,
            created_at_ms: at,
            coupons_voided: Vec::new(),
            perk_points_restored: 0,
        });
    }
    Ok(PurchaseView {
        id,
        brand_id: brand_id.to_owned(),
        order_id,
        member_id,
        total_cents: total,
        points_spent: spent,
        points_value_cents: value,
        cash_cents: cash,
        eligible_cents: eligible,
        base_points: base,
        bonus_points: bonus,
        points_earned: base + bonus,
        points_expire_at_ms: expires.map(|(e,)| e).filter(|_| base + bonus > 0),
        lines,
        bonuses: bonuses
            .into_iter()
            .map(|(points, code, reason, source)| BonusView {
                points,
                code,
                reason,
                source,
            })
            .collect(),
        refunds,
        tier_change: None,
        debt_settled: 0,
        created_at_ms: created,
        discount_cents,
        checkout_id,
        skipped_decisions,
    })
}

// ---------------------------------------------------------------------------------------------
// Refunds

fn refund_exceeds(line_id: &str, asked: i64, left: i64) -> ApiError {
    ApiError::unprocessable(
        "refund_exceeds_purchase",
        format!("line {line_id:?}: {asked} to refund but only {left} left unrefunded"),
    )
    .with_extra(serde_json::json!({ "line_id": line_id, "requested": asked, "refundable": left }))
}

/// Refunds lines of a purchase (see the module doc for the rules), in the caller's transaction.
#[allow(clippy::too_many_arguments)]
pub async fn refund_purchase(
    conn: &mut AnyConnection,
    backend: Backend,
    points: &PointsConfig,
    brand_id: &str,
    order_id: &str,
    req: &RefundRequest,
    now_ms: i64,
) -> ApiResult<RefundView> {
    check_id("refund_id", &req.refund_id, false)?;
    if req.lines.len() > MAX_LINES {
        return Err(ApiError::validation(format!(
            "a refund has at most {MAX_LINES} lines"
        )));
    }
    // The purchase row lock serialises refunds of one purchase (purchase, then wallet: the same
    // order as recording a purchase).
    let row: Option<PurchaseRow> = sqlx::query_as(&format!(
        "SELECT {PURCHASE_COLUMNS} FROM purchases WHERE brand_id = $1 AND order_id = $2{}",
        ledger::for_update(backend)
    ))
    .bind(brand_id)
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (
        purchase_id,
        order_id,
        member_id,
        _,
        _,
        _,
        _,
        eligible_total,
        _,
        bonus_total,
        spend_entry,
        created_at,
    ) = row.ok_or_else(|| ApiError::not_found("purchase", order_id))?;
    let existing: Option<(String,)> =
        sqlx::query_as("SELECT id FROM refunds WHERE brand_id = $1 AND refund_id = $2")
            .bind(brand_id)
            .bind(&req.refund_id)
            .fetch_optional(&mut *conn)
            .await?;
    if existing.is_some() {
        return Err(refund_exists(brand_id, &req.refund_id));
    }
    let lines = load_lines(conn, &purchase_id).await?;
    let index: BTreeMap<&str, usize> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| (l.line_id.as_str(), i))
        .collect();
    let mut asked = vec![0i64; lines.len()];
    if req.lines.is_empty() {
        for (i, l) in lines.iter().enumerate() {
            asked[i] = l.quantity - l.refunded_quantity;
        }
        if asked.iter().all(|q| *q == 0) {
            return Err(ApiError::unprocessable(
                "refund_exceeds_purchase",
                format!("order {order_id:?} is already fully refunded"),
            ));
        }
    } else {
        for (k, rl) in req.lines.iter().enumerate() {
            let i = *index.get(rl.line_id.as_str()).ok_or_else(|| {
                ApiError::validation(format!(
                    "lines[{k}]: order {order_id:?} has no line {:?}",
                    rl.line_id
                ))
            })?;
            if asked[i] != 0 {
                return Err(ApiError::validation(format!(
                    "line {:?} appears twice",
                    rl.line_id
                )));
            }
            if !(1..=MAX_QUANTITY).contains(&rl.quantity) {
                return Err(ApiError::validation(format!(
                    "lines[{k}].quantity must be 1..={MAX_QUANTITY}"
                )));
            }
            let left = lines[i].quantity - lines[i].refunded_quantity;
            if rl.quantity > left {
                return Err(refund_exceeds(&rl.line_id, rl.quantity, left));
            }
            asked[i] = rl.quantity;
        }
    }

    // Bonus reversal follows the refunded share of the purchase's value (eligible spend, or the
    // total when nothing was eligible).
    let use_eligible = eligible_total > 0;
    let weight = |l: &PricedLine| {
        if use_eligible {
            l.eligible_cents
        } else {
            l.total_cents
        }
    };
    let weight_total: i64 = lines.iter().map(weight).sum();
    let mut value_before = 0i64;
    let mut value_after = 0i64;

    let refund_pk = new_id();
    let mut line_views = Vec::new();
    let (mut cash_total, mut restored_total, mut reversed_base, mut qualifying_total) =
        (0i64, 0i64, 0i64, 0i64);
    for (i, l) in lines.iter().enumerate() {
        let before = l.refunded_quantity;
        let after = before + asked[i];
        value_before += share_step(weight(l), 0, before, l.quantity);
        value_after += share_step(weight(l), 0, after, l.quantity);
        if asked[i] == 0 {
            continue;
        }
        let updated = sqlx::query(
            "UPDATE purchase_lines SET refunded_quantity = refunded_quantity + $1
             WHERE purchase_id = $2 AND line_id = $3 AND refunded_quantity + $1 <= quantity",
        )
        .bind(asked[i])
        .bind(&purchase_id)
        .bind(&l.line_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if updated != 1 {
            return Err(refund_exceeds(&l.line_id, asked[i], l.quantity - before));
        }
        let view = RefundLineView {
            line_id: l.line_id.clone(),
            quantity: asked[i],
            cash_refund_cents: share_step(l.cash_cents, before, after, l.quantity),
            points_restored: share_step(l.points_alloc, before, after, l.quantity),
            points_reversed: share_step(l.earned_points, before, after, l.quantity),
        };
        cash_total += view.cash_refund_cents;
        restored_total += view.points_restored;
        reversed_base += view.points_reversed;
        qualifying_total += share_step(l.eligible_cents, before, after, l.quantity);
        line_views.push(view);
    }
    let bonus_reversed = if weight_total > 0 {
        share_step(bonus_total, value_before, value_after, weight_total)
    } else if lines
        .iter()
        .zip(&asked)
        .all(|(l, a)| l.refunded_quantity + a == l.quantity)
    {
        bonus_total
    } else {
        0
    };
    let reversed_total = reversed_base + bonus_reversed;

    let mut wallet = lock_wallet(conn, backend, &member_id, now_ms).await?;
    let mut clawed = 0i64;
    let mut shortfall = 0i64;
    let entry_id = if restored_total > 0 || reversed_total > 0 {
        let refs = EntryRefs {
            brand_id: Some(brand_id.to_owned()),
            purchase_id: Some(purchase_id.clone()),
            refund_id: Some(refund_pk.clone()),
            ..EntryRefs::default()
        };
        let mut entry = Entry::open(
            conn,
            EntryKind::Refund,
            &member_id,
            &refs,
            &req.refund_id,
            now_ms,
        )
        .await?;
        if restored_total > 0 {
            let source = spend_entry.as_deref().ok_or_else(|| {
                ApiError::internal(anyhow::anyhow!(
                    "purchase {purchase_id} spent points without a spend entry"
                ))
            })?;
            entry
                .apply_wallet(conn, restored_total, 0, 0, now_ms)
                .await?;
            entry.post(
                Account::Redemption(Some(brand_id)),
                -restored_total,
                "restore",
            );
            let posting_id = entry.post(Account::Wallet, restored_total, "restore");
            let floor =
                now_ms.saturating_add(points.restore_min_validity_days.saturating_mul(DAY_MS));
            let restored = ledger::restore_consumptions(
                conn,
                &mut entry,
                source,
                restored_total,
                &posting_id,
                RestoreExpiry::AtLeast(floor),
            )
            .await?;
            if restored != restored_total {
                return Err(ApiError::internal(anyhow::anyhow!(
                    "purchase {purchase_id}: {restored} of {restored_total} points restorable"
                )));
            }
            wallet.balance += restored_total;
            // The restored lots must exist before the claw-back can draw from them.
            entry.flush(conn, now_ms).await?;
        }
        if reversed_total > 0 {
            clawed = reversed_total.min(wallet.balance);
            shortfall = reversed_total - clawed;
            entry
                .apply_wallet(conn, -clawed, 0, shortfall, now_ms)
                .await?;
            if clawed > 0 {
                ledger::consume_lots(conn, &entry, clawed, Some(&purchase_id), now_ms).await?;
                entry.post(Account::Wallet, -clawed, "clawback");
            }
            if shortfall > 0 {
                entry.post(Account::Receivable, -shortfall, "clawback shortfall");
            }
            entry.post(
                Account::Issuance(Some(brand_id)),
                reversed_total,
                "clawback",
            );
            wallet.balance -= clawed;
        }
        Some(entry.close(conn, now_ms).await?)
    } else {
        None
    };

    let inserted = sqlx::query(
        "INSERT INTO refunds (id, brand_id, refund_id, purchase_id, member_id, cash_refund_cents,
            points_restored, points_reversed, points_clawed_back, shortfall_points,
            qualifying_reversed_cents, entry_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&refund_pk)
    .bind(brand_id)
    .bind(&req.refund_id)
    .bind(&purchase_id)
    .bind(&member_id)
    .bind(cash_total)
    .bind(restored_total)
    .bind(reversed_total)
    .bind(clawed)
    .bind(shortfall)
    .bind(qualifying_total)
    .bind(entry_id.as_deref())
    .bind(now_ms)
    .execute(&mut *conn)
    .await;
    match inserted {
        Ok(_) => {}
        Err(err) if is_unique_violation(&err) => {
            return Err(refund_exists(brand_id, &req.refund_id))
        }
        Err(err) => return Err(err.into()),
    }
    ledger::insert_rows(
        conn,
        "refund_lines (refund_pk, line_id, quantity, cash_refund_cents, points_restored, \
         points_reversed)",
        line_views
            .iter()
            .map(|l| {
                vec![
                    Val::Text(refund_pk.clone()),
                    Val::Text(l.line_id.clone()),
                    Val::Int(l.quantity),
                    Val::Int(l.cash_refund_cents),
                    Val::Int(l.points_restored),
                    Val::Int(l.points_reversed),
                ]
            })
            .collect(),
    )
    .await?;
    // Settlement outbox: a refund reverses part of the purchase's issued and redeemed points.
    for (original, points_moved) in [
        (EventKind::PointsIssued, reversed_total),
        (EventKind::PointsRedeemed, restored_total),
    ] {
        let reverses =
            settlement::events::find(conn, "purchase", &purchase_id, original, None).await?;
        settlement::events::record(
            conn,
            &NewEvent {
                kind: EventKind::Refund,
                brand_id,
                funding_brand: brand_id,
                honouring_brand: brand_id,
                reference: Some(original.as_str()),
                plugin: None,
                points: points_moved,
                value_cents: points_value_cents(points, points_moved),
                member_id: Some(&member_id),
                subject_kind: "refund",
                subject_id: &refund_pk,
                reverses_event_id: reverses.as_deref(),
                occurred_at: now_ms,
            },
            now_ms,
        )
        .await?;
    }
    tiers::record_qualifying(
        conn,
        &member_id,
        &purchase_id,
        Some(&refund_pk),
        -qualifying_total,
        -reversed_total,
        created_at,
        now_ms,
    )
    .await?;
    // Coupons of the refunded lines: voided, and their perks' points given back.
    let coupons = crate::checkout::after_refund(
        conn,
        backend,
        points,
        &purchase_id,
        &refund_pk,
        &member_id,
        now_ms,
    )
    .await?;
    Ok(RefundView {
        id: refund_pk,
        refund_id: req.refund_id.clone(),
        brand_id: brand_id.to_owned(),
        order_id,
        member_id,
        lines: line_views,
        cash_refund_cents: cash_total,
        points_restored: restored_total,
        points_reversed: reversed_total,
        bonus_reversed,
        points_clawed_back: clawed,
        shortfall_points: shortfall,
        qualifying_reversed_cents: qualifying_total,
        entry_id,
        created_at_ms: now_ms,
        coupons_voided: coupons.voided,
        perk_points_restored: coupons.perk_points_restored,
    })
}

fn refund_exists(brand_id: &str, refund_id: &str) -> ApiError {
    ApiError::conflict(
        "refund_exists",
        format!("refund {refund_id:?} is already recorded at brand {brand_id:?}"),
    )
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
