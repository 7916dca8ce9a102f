//! Pricing and earn, pure: line totals, the points payment allocated across lines, base earn, bonus plans.

use super::*;

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
    /// Cents paid with cash on this line.
    pub cash_cents: i64,
    /// Cents of the stored-value payment allocated to this line.
    #[serde(default)]
    pub stored_value_alloc: i64,
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
    /// Cents paid with cash.
    pub cash_cents: i64,
    /// Cents paid with stored value.
    pub stored_value_cents: i64,
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

/// Checks the ids a purchase request names (before anything is locked or claimed).
pub fn check_request_ids(req: &PurchaseRequest) -> DomainResult<()> {
    check_id("order_id", &req.order_id, false)?;
    check_id("member_id", &req.member_id, false)
}

pub(super) fn check_id(field: &str, value: &str, allow_empty: bool) -> DomainResult<()> {
    if (!allow_empty && value.is_empty()) || value.len() > MAX_ID_LEN {
        let min = if allow_empty { 0 } else { 1 };
        return Err(DomainError::validation(format!(
            "{field} must be {min}..={MAX_ID_LEN} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(DomainError::validation(format!(
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
) -> DomainResult<Priced> {
    price_discounted(rule, points, lines, points_spent, 0, &[])
}

/// [`price`] with coupon discounts per line (same order as `lines`; empty = none): the points
/// payment is allocated over what is left of each line after its discount, and only the money
/// part of the discounted price earns.
pub fn price_discounted(
    rule: &EarnRule,
    points: &PointsConfig,
    lines: &[LineRequest],
    points_spent: i64,
    stored_value_cents: i64,
    discounts: &[i64],
) -> DomainResult<Priced> {
    if lines.is_empty() || lines.len() > MAX_LINES {
        return Err(DomainError::validation(format!(
            "a purchase has 1..={MAX_LINES} lines"
        )));
    }
    if !(0..=ledger::MAX_POINTS_PER_OPERATION).contains(&points_spent) {
        return Err(DomainError::validation(format!(
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
            return Err(DomainError::validation(format!(
                "line id {:?} appears twice",
                line.line_id
            )));
        }
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            return Err(DomainError::validation(format!(
                "lines[{i}].quantity must be 1..={MAX_QUANTITY}"
            )));
        }
        if !(0..=MAX_UNIT_PRICE_CENTS).contains(&line.unit_price_cents) {
            return Err(DomainError::validation(format!(
                "lines[{i}].unit_price_cents must be 0..={MAX_UNIT_PRICE_CENTS}"
            )));
        }
        let line_total = line
            .quantity
            .checked_mul(line.unit_price_cents)
            .ok_or_else(|| DomainError::validation(format!("lines[{i}] total overflows")))?;
        total_cents = total_cents
            .checked_add(line_total)
            .filter(|t| *t <= MAX_ORDER_TOTAL_CENTS)
            .ok_or_else(|| {
                DomainError::validation(format!(
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
        return Err(DomainError::internal(anyhow::anyhow!(
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
        DomainError::validation(format!(
            "points_spent must convert exactly to cents: {} points pay {} cents",
            points.redeem_points, points.redeem_cents
        ))
    })?;
    if points_value_cents > net_total {
        return Err(DomainError::unprocessable(
            "points_exceed_total",
            format!(
                "{points_spent} points pay {points_value_cents} cents, more than the order \
                 total of {net_total} cents"
            ),
        ));
    }
    if stored_value_cents < 0 {
        return Err(DomainError::validation("stored_value_cents must be ≥ 0"));
    }
    let money_total = net_total - points_value_cents;
    if stored_value_cents > money_total {
        return Err(DomainError::unprocessable(
            "stored_value_exceeds_total",
            format!(
                "{stored_value_cents} cents of stored value are more than the {money_total} \
                 cents left to pay after discounts and points"
            ),
        ));
    }
    let points_alloc = allocate(points_spent, &nets);
    let cents_alloc = allocate(points_value_cents, &nets);
    let money: Vec<i64> = nets.iter().zip(&cents_alloc).map(|(n, c)| n - c).collect();
    let stored_alloc = allocate(stored_value_cents, &money);
    let mut priced_lines = Vec::with_capacity(lines.len());
    let mut eligible_total: i64 = 0;
    for (i, line) in lines.iter().enumerate() {
        let excluded = rule.excluded_skus.contains(&line.sku)
            || (!line.category.is_empty() && rule.excluded_categories.contains(&line.category));
        // Stored value is money the member paid in advance: it earns like cash.
        let eligible = if excluded { 0 } else { money[i] };
        let cash = money[i] - stored_alloc[i];
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
            stored_value_alloc: stored_alloc[i],
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
        .map_err(|_| DomainError::validation("the earn overflows"))?
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
        cash_cents: money_total - stored_value_cents,
        stored_value_cents,
        eligible_cents: eligible_total,
        base_points,
        discount_cents: discount_total,
    })
}

/// Applies an active membership card's multiplier (percent, 100 = ×1) to the base earn:
/// `base × percent / 100`, rounded down, then allocated back to the lines by eligible spend
/// like the base itself, so refunds claw back exactly what each line earned.
pub fn apply_multiplier(priced: &mut Priced, percent: u32) -> DomainResult<()> {
    if percent <= 100 || priced.base_points == 0 {
        return Ok(());
    }
    priced.base_points = i64::try_from(i128::from(priced.base_points) * i128::from(percent) / 100)
        .map_err(|_| DomainError::validation("the earn overflows"))?;
    let weights: Vec<i64> = priced.lines.iter().map(|l| l.eligible_cents).collect();
    for (line, earned) in priced
        .lines
        .iter_mut()
        .zip(allocate(priced.base_points, &weights))
    {
        line.earned_points = earned;
    }
    Ok(())
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
pub fn plan_earn(base_points: i64, proposals: Vec<BonusProposal>) -> DomainResult<EarnPlan> {
    let reject = |detail: String| DomainError::unprocessable("invalid_bonus", detail);
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

pub(super) fn require_active_brand(brand_id: &str, brand: &BrandRule) -> DomainResult<()> {
    if brand.status != "active" {
        return Err(DomainError::unprocessable(
            "brand_suspended",
            format!("brand {brand_id:?} is suspended and cannot record purchases"),
        ));
    }
    Ok(())
}
