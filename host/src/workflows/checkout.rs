//! Coupons at the counter: a checkout validates a member's coupons against a cart, applies them
//! through each template's coupon plugin (`apply-coupon`, failing closed), and reserves them;
//! the purchase that names the checkout redeems them; a refund voids them.
//!
//! # Rules
//! - A coupon applies if it belongs to the member, is `issued` (or `reserved` by a checkout that
//!   lapsed), has not expired, its template is active and honoured at this brand.
//! - Stacking: at most `[perks] max_coupons_per_order` coupons; an `exclusive` template never
//!   combines with another coupon; the plugins add their own rules (they see the templates
//!   already applied, in order).
//! - Coupons are applied in the order given. Each plugin's discounts are validated by the
//!   runtime (never above a line); the host also caps each line's running total of discounts at
//!   the line's amount, so stacked coupons can never take a line below zero.
//! - Reserving is a guarded `UPDATE` per coupon; a reservation lapses after
//!   `[perks] checkout_ttl_ms` (lazily: a lapsed reservation counts as issued).
//! - The purchase must carry exactly the checkout's cart; it redeems each coupon with a guarded
//!   `UPDATE … WHERE reservation_id = <checkout> AND status = 'reserved'` and records one
//!   `coupon-honoured` event per coupon (funded by the template's brand, honoured by the
//!   counter's brand, value = the discount).
//! - A refund that leaves every line a coupon discounted fully refunded voids the coupon and
//!   reverses its `coupon-honoured` event; a coupon bought as a perk also gets its redemption
//!   reversed (points back, stock back). A partial refund keeps the coupon redeemed: the member
//!   gets back what they paid for the refunded units, after the discount.

use std::collections::{BTreeMap, HashSet};

use coalition_runtime::model::{Cart, Coupon, CouponDecision, Hook, OrderLine};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::domain::coupons::{HostRule, HOST_RULES};
use crate::domain::purchases::{self, LineRequest, PurchaseRequest};
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::{new_id, Backend};
use crate::ledger::outbox::{self, EventKind, NewEvent};
use crate::ledger::{self, PointsConfig};
use crate::workflows::Services;

/// Longest coupon code accepted in a request (codes are 16 characters).
pub const MAX_CODE_LEN: usize = 32;
/// Most params a template may carry (the plugin contract bounds them too).
pub const MAX_TEMPLATE_PARAMS: usize = 32;

/// A cart presented at a counter, with the coupons to apply.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    /// The member paying.
    pub member_id: String,
    /// The cart, exactly as the purchase will record it.
    pub lines: Vec<LineRequest>,
    /// Coupon codes, applied in this order.
    #[serde(default)]
    pub coupon_codes: Vec<String>,
}

/// One line's discount from one coupon.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LineDiscountView {
    /// The cart line.
    pub line_id: String,
    /// Cents off.
    pub discount_cents: i64,
}

/// A coupon applied to the cart.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppliedCoupon {
    /// Its code.
    pub code: String,
    /// Its template.
    pub template_id: String,
    /// Who funds the discount.
    pub funding_brand: String,
    /// Total cents off.
    pub discount_cents: i64,
    /// Per line.
    pub lines: Vec<LineDiscountView>,
}

/// A line of the checked-out cart.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CheckoutLine {
    /// Line id.
    pub line_id: String,
    /// quantity × unit price, cents.
    pub total_cents: i64,
    /// Coupon discounts on it, cents.
    pub discount_cents: i64,
    /// What is left to pay, cents.
    pub payable_cents: i64,
}

/// A checkout: the coupons reserved for this cart and what is left to pay.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CheckoutView {
    /// Checkout id: pass it as `checkout_id` in the purchase.
    pub id: String,
    /// Brand of the counter.
    pub brand_id: String,
    /// The member.
    pub member_id: String,
    /// `open` or `completed`.
    pub status: String,
    /// Until when the coupons stay reserved, Unix ms.
    pub expires_at_ms: i64,
    /// Cart total, cents.
    pub total_cents: i64,
    /// Coupon discounts, cents.
    pub discount_cents: i64,
    /// Left to pay, cents.
    pub payable_cents: i64,
    /// Most points the member may pay with on this order (tier cap and balance).
    pub max_points_payable: i64,
    /// Cents those points would pay.
    pub max_points_value_cents: i64,
    /// Lines.
    pub lines: Vec<CheckoutLine>,
    /// Coupons, in the order applied.
    pub coupons: Vec<AppliedCoupon>,
}

/// A coupon with its template, as checking it needs.
struct CouponRow {
    code: String,
    template_id: String,
    member_id: String,
    status: String,
    expires_at: i64,
    reserved_until: Option<i64>,
    funding_brand: String,
    honouring_brand: String,
    plugin: String,
    params: String,
    exclusive: bool,
    template_status: String,
}

async fn load_coupon(conn: &mut AnyConnection, code: &str) -> DomainResult<Option<CouponRow>> {
    type Row = (
        String,
        String,
        String,
        String,
        i64,
        Option<i64>,
        String,
        String,
        String,
        String,
        i64,
        String,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT c.code, c.template_id, c.member_id, c.status, c.expires_at, c.reserved_until,
                t.funding_brand, t.honouring_brand, t.plugin, t.params, t.exclusive, t.status
         FROM coupons c JOIN coupon_templates t ON t.id = c.template_id WHERE c.code = $1",
    )
    .bind(code)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| CouponRow {
        code: r.0,
        template_id: r.1,
        member_id: r.2,
        status: r.3,
        expires_at: r.4,
        reserved_until: r.5,
        funding_brand: r.6,
        honouring_brand: r.7,
        plugin: r.8,
        params: r.9,
        exclusive: r.10 != 0,
        template_status: r.11,
    }))
}

/// Why `coupon` cannot be used by `member_id` at `brand_id` now.
fn coupon_refusal(
    c: &CouponRow,
    member_id: &str,
    brand_id: &str,
    now_ms: i64,
) -> Option<DomainError> {
    let code = &c.code;
    if c.member_id != member_id {
        // Same answer as an unknown code: a code never tells whose it is.
        return Some(DomainError::not_found("coupon", code));
    }
    let lapsed = c.status == "reserved" && c.reserved_until.is_some_and(|u| u <= now_ms);
    match c.status.as_str() {
        "issued" => {}
        "reserved" if lapsed => {}
        "reserved" => {
            return Some(DomainError::conflict(
                "coupon_reserved",
                format!("coupon {code} is held by another checkout"),
            ))
        }
        "redeemed" => {
            return Some(DomainError::conflict(
                "coupon_redeemed",
                format!("coupon {code} was already used"),
            ))
        }
        "voided" => {
            return Some(DomainError::unprocessable(
                "coupon_voided",
                format!("coupon {code} was voided"),
            ))
        }
        _ => {
            return Some(DomainError::unprocessable(
                "coupon_expired",
                format!("coupon {code} has expired"),
            ))
        }
    }
    if c.expires_at <= now_ms {
        return Some(DomainError::unprocessable(
            "coupon_expired",
            format!("coupon {code} has expired"),
        ));
    }
    if c.template_status != "active" {
        return Some(DomainError::unprocessable(
            "coupon_template_retired",
            format!("coupon {code}'s template {} is retired", c.template_id),
        ));
    }
    if c.honouring_brand != brand_id {
        return Some(DomainError::unprocessable(
            "coupon_not_honoured_here",
            format!("coupon {code} is honoured at {:?}", c.honouring_brand),
        ));
    }
    None
}

/// Canonical hash of a cart's lines: the purchase must present the same cart.
pub fn lines_sha256(lines: &[LineRequest]) -> String {
    let mut hasher = Sha256::new();
    for l in lines {
        for part in [&l.line_id, &l.sku, &l.category] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        hasher.update(l.quantity.to_le_bytes());
        hasher.update(l.unit_price_cents.to_le_bytes());
    }
    hex::encode(hasher.finalize())
}

/// A checkout computed outside the write transaction (plugins never run inside it).
pub struct Prepared {
    view: CheckoutView,
    lines_sha256: String,
    receipts: Vec<(coalition_runtime::Receipt, String)>,
}

/// Validates the cart and coupons and applies them through the coupon plugins.
pub async fn prepare(
    state: &Services,
    brand_id: &str,
    req: &CheckoutRequest,
) -> DomainResult<Prepared> {
    let now_ms = state.now_ms();
    let max = state.settings.perks.max_coupons_per_order;
    if req.coupon_codes.len() > max {
        return Err(DomainError::unprocessable(
            "too_many_coupons",
            format!("at most {max} coupons per order"),
        )
        .with_extra(serde_json::json!({ "max_coupons_per_order": max })));
    }
    let mut seen = HashSet::new();
    for code in &req.coupon_codes {
        if code.is_empty()
            || code.len() > MAX_CODE_LEN
            || !code.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(DomainError::validation(format!(
                "coupon codes are 1..={MAX_CODE_LEN} letters and digits"
            )));
        }
        if !seen.insert(code.to_ascii_uppercase()) {
            return Err(DomainError::validation(format!(
                "coupon {code} appears twice"
            )));
        }
    }
    let mut conn = state.store.read().acquire().await?;
    let brand = crate::domain::brands::load_brand(&mut conn, brand_id).await?;
    if brand.status != "active" {
        return Err(DomainError::unprocessable(
            "brand_suspended",
            format!("brand {brand_id:?} is suspended"),
        ));
    }
    let priced = purchases::price(&brand.rule, &state.settings.points, &req.lines, 0)?;
    let member: Option<(String, String)> =
        sqlx::query_as("SELECT status, tier FROM members WHERE id = $1")
            .bind(&req.member_id)
            .fetch_optional(&mut *conn)
            .await?;
    let (status, tier_code) =
        member.ok_or_else(|| DomainError::not_found("member", &req.member_id))?;
    if status != "active" {
        return Err(ledger::member_blocked(&req.member_id));
    }
    let mut coupons = Vec::with_capacity(req.coupon_codes.len());
    for code in &req.coupon_codes {
        let code = code.to_ascii_uppercase();
        let row = load_coupon(&mut conn, &code)
            .await?
            .ok_or_else(|| DomainError::not_found("coupon", &code))?;
        if let Some(refusal) = coupon_refusal(&row, &req.member_id, brand_id, now_ms) {
            return Err(refusal);
        }
        coupons.push(row);
    }
    if coupons.len() > 1 {
        if let Some(solo) = coupons.iter().find(|c| c.exclusive) {
            return Err(DomainError::unprocessable(
                "coupons_not_combinable",
                format!(
                    "coupon {} (template {}) cannot be combined with other coupons",
                    solo.code, solo.template_id
                ),
            ));
        }
    }
    let ladder = crate::domain::tiers::load_ladder(&mut conn, &state.settings.tiers).await?;
    let balance: Option<(i64,)> =
        sqlx::query_as("SELECT balance FROM point_wallets WHERE member_id = $1")
            .bind(&req.member_id)
            .fetch_optional(&mut *conn)
            .await?;
    drop(conn);

    let order_lines: Vec<OrderLine> = priced
        .lines
        .iter()
        .map(|l| OrderLine {
            line_id: l.line_id.clone(),
            sku: l.sku.clone(),
            category: l.category.clone(),
            quantity: u32::try_from(l.quantity).unwrap_or(u32::MAX),
            unit_price_cents: l.unit_price_cents,
            excluded: l.excluded,
        })
        .collect();
    let serving = state.plugins.serving(&req.member_id);
    let mut left: BTreeMap<String, i64> = priced
        .lines
        .iter()
        .map(|l| (l.line_id.clone(), l.total_cents))
        .collect();
    let mut applied_templates = Vec::new();
    let mut applied = Vec::new();
    let mut receipts = Vec::new();
    for c in &coupons {
        let discounts: Vec<(String, i64)> = if c.plugin == HOST_RULES {
            let rule = HostRule::from_params(&c.params).ok_or_else(|| {
                DomainError::internal(anyhow::anyhow!(
                    "host-made coupon template {} has unreadable params",
                    c.template_id
                ))
            })?;
            host_rule_discounts(&rule, &order_lines, &left)
        } else {
            let (discounts, receipt) = plugin_discounts(
                state,
                &serving,
                c,
                brand_id,
                &order_lines,
                priced.total_cents,
                &applied_templates,
                &req.lines,
                now_ms,
            )
            .await?;
            receipts.push(receipt);
            discounts
        };
        let mut lines = Vec::new();
        for (line_id, cents) in discounts {
            let room = left.get_mut(&line_id).ok_or_else(|| {
                DomainError::internal(anyhow::anyhow!("validated discount names unknown line"))
            })?;
            let take = cents.min(*room).max(0);
            if take > 0 {
                *room -= take;
                lines.push(LineDiscountView {
                    line_id,
                    discount_cents: take,
                });
            }
        }
        let total: i64 = lines.iter().map(|l| l.discount_cents).sum();
        if total == 0 {
            return Err(DomainError::unprocessable(
                "coupon_rejected",
                format!(
                    "coupon {} gives no discount on what is left of this cart",
                    c.code
                ),
            ));
        }
        applied_templates.push(c.template_id.clone());
        applied.push(AppliedCoupon {
            code: c.code.clone(),
            template_id: c.template_id.clone(),
            funding_brand: c.funding_brand.clone(),
            discount_cents: total,
            lines,
        });
    }
    let discount_cents: i64 = applied.iter().map(|a| a.discount_cents).sum();
    let payable_cents = priced.total_cents - discount_cents;
    let tier = &ladder[crate::domain::tiers::rank_of(&ladder, &tier_code)];
    let cap_cents =
        i64::try_from(i128::from(payable_cents) * i128::from(tier.points_pay_max_percent) / 100)
            .unwrap_or(0);
    let points = &state.settings.points;
    // Whole redeem units only: points pay exactly `redeem_cents` per `redeem_points`.
    let units = (cap_cents / points.redeem_cents.max(1))
        .min(balance.map_or(0, |(b,)| b.max(0)) / points.redeem_points.max(1));
    let lines = priced
        .lines
        .iter()
        .map(|l| {
            let payable = left.get(&l.line_id).copied().unwrap_or(l.total_cents);
            CheckoutLine {
                line_id: l.line_id.clone(),
                total_cents: l.total_cents,
                discount_cents: l.total_cents - payable,
                payable_cents: payable,
            }
        })
        .collect();
    Ok(Prepared {
        view: CheckoutView {
            id: new_id(),
            brand_id: brand_id.to_owned(),
            member_id: req.member_id.clone(),
            status: "open".to_owned(),
            expires_at_ms: now_ms.saturating_add(state.settings.perks.checkout_ttl_ms),
            total_cents: priced.total_cents,
            discount_cents,
            payable_cents,
            max_points_payable: units * points.redeem_points,
            max_points_value_cents: units * points.redeem_cents,
            lines,
            coupons: applied,
        },
        lines_sha256: lines_sha256(&req.lines),
        receipts,
    })
}

/// Applies one coupon through its template's plugin (`apply-coupon`, failing closed): the
/// validated per-line discounts and the call's receipt with its output.
#[allow(clippy::too_many_arguments)]
async fn plugin_discounts(
    state: &Services,
    serving: &[crate::plugins::ActivePlugin],
    c: &CouponRow,
    brand_id: &str,
    order_lines: &[OrderLine],
    total_cents: i64,
    applied_templates: &[String],
    request_lines: &[LineRequest],
    now_ms: i64,
) -> DomainResult<(Vec<(String, i64)>, (coalition_runtime::Receipt, String))> {
    let active = serving
        .iter()
        .find(|p| p.plugin.name() == c.plugin && p.plugin.implements(Hook::ApplyCoupon))
        .cloned()
        .ok_or_else(|| {
            DomainError::unavailable(
                "coupon_plugin_unavailable",
                format!(
                    "coupon plugin {:?} of template {} is not active",
                    c.plugin, c.template_id
                ),
            )
        })?;
    let params: BTreeMap<String, String> = serde_json::from_str(&c.params).unwrap_or_default();
    let coupon = Coupon {
        code: c.code.clone(),
        template_id: c.template_id.clone(),
        funding_brand: c.funding_brand.clone(),
        params: params.into_iter().take(MAX_TEMPLATE_PARAMS).collect(),
    };
    let cart = Cart {
        brand: brand_id.to_owned(),
        lines: order_lines.to_vec(),
        total_cents,
        applied_templates: applied_templates.to_vec(),
    };
    let invocation = state.plugins.invocation(
        now_ms,
        brand_id,
        &format!("coupon:{}:{}", c.code, lines_sha256(request_lines)),
    );
    let mut conn = state.store.read().acquire().await?;
    let invocation = state
        .plugins
        .with_budgets(invocation, &mut conn, std::iter::once(&active.plugin))
        .await?;
    drop(conn);
    let ctx = coalition_runtime::CallContext {
        invocation,
        config: active.config.clone(),
    };
    let plugin = active.plugin.clone();
    let decision = tokio::task::spawn_blocking(move || plugin.apply_coupon(&ctx, &coupon, &cart))
        .await
        .map_err(DomainError::internal)?
        .map_err(|err| {
            crate::plugins::fail_closed_problem(
                &err,
                Hook::ApplyCoupon,
                "coupon_input_invalid",
                "coupon_plugin_failed",
                "the coupon was not applied",
            )
        })?;
    crate::plugins::dryrun::spawn_shadow(
        &state.store,
        &state.plugins,
        &state.clock,
        &active,
        &decision.receipt,
        &serde_json::to_string(&decision.value).unwrap_or_default(),
        &c.code,
    );
    let discounts = match &decision.value {
        CouponDecision::Rejected(reason) => {
            let mut extra = crate::plugins::plugin_problem_extra(
                &decision.receipt.plugin,
                &decision.receipt.version,
                Hook::ApplyCoupon,
                "rejected",
            );
            extra["code"] = serde_json::json!(c.code);
            extra["template_id"] = serde_json::json!(c.template_id);
            return Err(
                DomainError::unprocessable("coupon_rejected", reason.clone()).with_extra(extra),
            );
        }
        CouponDecision::Applied(discounts) => discounts
            .iter()
            .map(|d| (d.line_id.clone(), d.discount_cents))
            .collect(),
    };
    let output = serde_json::to_string(&decision.value).unwrap_or_default();
    Ok((discounts, (decision.receipt, output)))
}

/// What a host-made template (a perk's free item or discount) takes off the cart, given what
/// is left of each line after the coupons before it. A free item is one unit of the first
/// non-excluded line with its sku; a discount is spread over the non-excluded lines in order.
/// Lines are never taken below zero; an empty answer means the coupon does not apply.
pub fn host_rule_discounts(
    rule: &HostRule,
    lines: &[OrderLine],
    left: &BTreeMap<String, i64>,
) -> Vec<(String, i64)> {
    let room = |l: &OrderLine| left.get(&l.line_id).copied().unwrap_or(0).max(0);
    match rule {
        HostRule::FreeItem { sku } => lines
            .iter()
            .filter(|l| !l.excluded && &l.sku == sku && l.quantity > 0)
            .map(|l| (l.line_id.clone(), l.unit_price_cents.min(room(l))))
            .find(|(_, cents)| *cents > 0)
            .into_iter()
            .collect(),
        HostRule::DiscountCents(cents) => {
            let mut to_give = (*cents).max(0);
            let mut out = Vec::new();
            for l in lines.iter().filter(|l| !l.excluded) {
                if to_give == 0 {
                    break;
                }
                let take = to_give.min(room(l));
                if take > 0 {
                    out.push((l.line_id.clone(), take));
                    to_give -= take;
                }
            }
            out
        }
    }
}

/// Writes a prepared checkout and reserves its coupons, in the caller's transaction.
pub async fn reserve(
    conn: &mut AnyConnection,
    prepared: Prepared,
    now_ms: i64,
) -> DomainResult<CheckoutView> {
    let view = prepared.view;
    sqlx::query(
        "INSERT INTO checkouts (id, brand_id, member_id, lines_sha256, total_cents, discount_cents,
            status, expires_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $8)",
    )
    .bind(&view.id)
    .bind(&view.brand_id)
    .bind(&view.member_id)
    .bind(&prepared.lines_sha256)
    .bind(view.total_cents)
    .bind(view.discount_cents)
    .bind(view.expires_at_ms)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    for (position, c) in view.coupons.iter().enumerate() {
        let reserved = sqlx::query(
            "UPDATE coupons SET status = 'reserved', reservation_id = $1, reserved_until = $2,
                updated_at = $3
             WHERE code = $4 AND member_id = $5 AND expires_at > $3
               AND (status = 'issued' OR (status = 'reserved' AND reserved_until <= $3))",
        )
        .bind(&view.id)
        .bind(view.expires_at_ms)
        .bind(now_ms)
        .bind(&c.code)
        .bind(&view.member_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if reserved != 1 {
            return Err(DomainError::conflict(
                "coupon_unavailable",
                format!("coupon {} was taken by another checkout meanwhile", c.code),
            ));
        }
        for l in &c.lines {
            sqlx::query(
                "INSERT INTO checkout_discounts (checkout_id, code, position, template_id, line_id,
                    discount_cents)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&view.id)
            .bind(&c.code)
            .bind(i64::try_from(position).unwrap_or(0))
            .bind(&c.template_id)
            .bind(&l.line_id)
            .bind(l.discount_cents)
            .execute(&mut *conn)
            .await?;
        }
    }
    for (receipt, output) in &prepared.receipts {
        crate::plugins::receipts::store_receipt(
            conn, receipt, output, "checkout", &view.id, now_ms,
        )
        .await?;
    }
    Ok(view)
}

/// Per-line discounts of a checkout for `lines` (in their order), without checking it: the
/// purchase's quote for bonus plugins. Unknown checkout: no discounts (the write refuses it).
pub async fn line_discounts(
    conn: &mut AnyConnection,
    brand_id: &str,
    checkout_id: &str,
    lines: &[LineRequest],
) -> DomainResult<Vec<i64>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT d.line_id, CAST(SUM(d.discount_cents) AS BIGINT)
         FROM checkout_discounts d JOIN checkouts c ON c.id = d.checkout_id
         WHERE d.checkout_id = $1 AND c.brand_id = $2 GROUP BY d.line_id",
    )
    .bind(checkout_id)
    .bind(brand_id)
    .fetch_all(&mut *conn)
    .await?;
    let by_line: BTreeMap<String, i64> = rows.into_iter().collect();
    Ok(lines
        .iter()
        .map(|l| by_line.get(&l.line_id).copied().unwrap_or(0))
        .collect())
}

/// A checkout locked for the purchase that completes it.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Checkout id.
    pub checkout_id: String,
    /// Discount per purchase line, in the request's line order.
    pub line_discounts: Vec<i64>,
    /// `(code, template, funding brand, plugin, discount)` per coupon.
    coupons: Vec<(String, String, String, String, i64)>,
    member_id: String,
}

/// Locks and checks the checkout a purchase names, in the purchase's transaction.
pub async fn claim(
    conn: &mut AnyConnection,
    backend: Backend,
    brand_id: &str,
    checkout_id: &str,
    req: &PurchaseRequest,
    now_ms: i64,
) -> DomainResult<Claimed> {
    let row: Option<(String, String, String, String, i64)> = sqlx::query_as(&format!(
        "SELECT brand_id, member_id, lines_sha256, status, expires_at FROM checkouts
         WHERE id = $1{}",
        crate::foundation::store::for_update(backend)
    ))
    .bind(checkout_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (brand, member, hash, status, expires_at) = row
        .filter(|r| r.0 == brand_id)
        .ok_or_else(|| DomainError::not_found("checkout", checkout_id))?;
    let _ = brand;
    if is_cancelled(conn, checkout_id).await? {
        return Err(DomainError::conflict(
            "checkout_cancelled",
            format!("checkout {checkout_id} was cancelled; check the cart out again"),
        ));
    }
    if status != "open" {
        return Err(DomainError::conflict(
            "checkout_completed",
            format!("checkout {checkout_id} already completed a purchase"),
        ));
    }
    if expires_at <= now_ms {
        return Err(DomainError::conflict(
            "checkout_expired",
            format!("checkout {checkout_id} expired; check the cart out again"),
        ));
    }
    if member != req.member_id || hash != lines_sha256(&req.lines) {
        return Err(DomainError::unprocessable(
            "checkout_mismatch",
            "the purchase must carry the member and exactly the cart of its checkout",
        ));
    }
    let line_discounts = line_discounts(conn, brand_id, checkout_id, &req.lines).await?;
    let coupons: Vec<(String, String, String, String, i64)> = sqlx::query_as(
        "SELECT d.code, d.template_id, t.funding_brand, t.plugin,
                CAST(SUM(d.discount_cents) AS BIGINT)
         FROM checkout_discounts d JOIN coupon_templates t ON t.id = d.template_id
         WHERE d.checkout_id = $1
         GROUP BY d.code, d.template_id, t.funding_brand, t.plugin, d.position
         ORDER BY d.position",
    )
    .bind(checkout_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Claimed {
        checkout_id: checkout_id.to_owned(),
        line_discounts,
        coupons,
        member_id: member,
    })
}

async fn is_cancelled(conn: &mut AnyConnection, checkout_id: &str) -> DomainResult<bool> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT checkout_id FROM checkout_cancellations WHERE checkout_id = $1")
            .bind(checkout_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.is_some())
}

/// Longest cancellation reason kept.
pub const MAX_CANCEL_REASON_LEN: usize = 200;

/// A cancellation request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Why (kept for the audit of the counter), at most 200 bytes.
    #[serde(default)]
    pub reason: String,
}

/// A cancelled checkout.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CancelledCheckout {
    /// The checkout.
    pub id: String,
    /// Always `cancelled`.
    pub status: String,
    /// Coupons whose reservation was released (usable again at once).
    pub coupons_released: Vec<String>,
    /// When, Unix ms.
    pub cancelled_at_ms: i64,
}

/// Cancels an open checkout of `brand_id` and releases its coupons, in the caller's
/// transaction. Cancelling twice answers the first cancellation again.
pub async fn cancel(
    conn: &mut AnyConnection,
    backend: Backend,
    brand_id: &str,
    checkout_id: &str,
    key_id: &str,
    reason: &str,
    now_ms: i64,
) -> DomainResult<CancelledCheckout> {
    if reason.len() > MAX_CANCEL_REASON_LEN {
        return Err(DomainError::validation(format!(
            "reason must be at most {MAX_CANCEL_REASON_LEN} bytes"
        )));
    }
    let row: Option<(String, String)> = sqlx::query_as(&format!(
        "SELECT brand_id, status FROM checkouts WHERE id = $1{}",
        crate::foundation::store::for_update(backend)
    ))
    .bind(checkout_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (_, status) = row
        .filter(|r| r.0 == brand_id)
        .ok_or_else(|| DomainError::not_found("checkout", checkout_id))?;
    let earlier: Option<(i64,)> =
        sqlx::query_as("SELECT cancelled_at FROM checkout_cancellations WHERE checkout_id = $1")
            .bind(checkout_id)
            .fetch_optional(&mut *conn)
            .await?;
    if let Some((cancelled_at_ms,)) = earlier {
        return Ok(CancelledCheckout {
            id: checkout_id.to_owned(),
            status: "cancelled".to_owned(),
            coupons_released: Vec::new(),
            cancelled_at_ms,
        });
    }
    if status != "open" {
        return Err(DomainError::conflict(
            "checkout_completed",
            format!("checkout {checkout_id} already completed a purchase; refund it instead"),
        ));
    }
    let reserved: Vec<(String,)> = sqlx::query_as(
        "SELECT code FROM coupons WHERE reservation_id = $1 AND status = 'reserved' ORDER BY code",
    )
    .bind(checkout_id)
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE coupons SET status = 'issued', reservation_id = NULL, reserved_until = NULL,
            updated_at = $1
         WHERE reservation_id = $2 AND status = 'reserved'",
    )
    .bind(now_ms)
    .bind(checkout_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO checkout_cancellations (checkout_id, cancelled_by, reason, cancelled_at)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(checkout_id)
    .bind(key_id)
    .bind(reason)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(CancelledCheckout {
        id: checkout_id.to_owned(),
        status: "cancelled".to_owned(),
        coupons_released: reserved.into_iter().map(|(c,)| c).collect(),
        cancelled_at_ms: now_ms,
    })
}

/// Redeems the claimed checkout's coupons for `purchase_id` and records their settle events.
/// The plugin that governs the settlement of honouring a coupon: for a coupon a member bought
/// as a perk, the perk's plugin (its settle hook already split the perk's face value when the
/// perk was redeemed, so honouring it must not be paid for twice); otherwise the template's.
pub(crate) async fn governing_plugin(
    conn: &mut AnyConnection,
    code: &str,
    template_plugin: &str,
) -> DomainResult<String> {
    let perk_plugin: Option<(String,)> = sqlx::query_as(
        "SELECT r.plugin FROM coupons c JOIN perk_redemptions r ON r.id = c.source_id
         WHERE c.code = $1 AND c.source_kind = 'perk'",
    )
    .bind(code)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(perk_plugin.map_or_else(|| template_plugin.to_owned(), |(plugin,)| plugin))
}

pub async fn complete(
    conn: &mut AnyConnection,
    claimed: &Claimed,
    brand_id: &str,
    purchase_id: &str,
    now_ms: i64,
) -> DomainResult<()> {
    let mut total = 0i64;
    for (code, template, funding, plugin, discount) in &claimed.coupons {
        let redeemed = sqlx::query(
            "UPDATE coupons SET status = 'redeemed', purchase_id = $1, discount_cents = $2,
                updated_at = $3
             WHERE code = $4 AND reservation_id = $5 AND status = 'reserved'",
        )
        .bind(purchase_id)
        .bind(discount)
        .bind(now_ms)
        .bind(code)
        .bind(&claimed.checkout_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if redeemed != 1 {
            return Err(DomainError::conflict(
                "checkout_expired",
                format!("coupon {code} is no longer reserved by this checkout; check out again"),
            ));
        }
        total += discount;
        let governing = governing_plugin(conn, code, plugin).await?;
        outbox::record(
            conn,
            &NewEvent {
                kind: EventKind::CouponHonoured,
                brand_id,
                funding_brand: funding,
                honouring_brand: brand_id,
                reference: Some(template),
                plugin: Some(&governing),
                points: 0,
                value_cents: *discount,
                member_id: Some(&claimed.member_id),
                subject_kind: "coupon",
                subject_id: code,
                reverses_event_id: None,
                occurred_at: now_ms,
            },
            now_ms,
        )
        .await?;
        // The honouring brand hears of it with its purchase; a funding brand that is another
        // hears of the coupon and its value only (the order is the honouring brand's record).
        let honoured = serde_json::json!({
            "template_id": template, "discount_cents": discount, "funding_brand": funding,
            "honouring_brand": brand_id, "created_at_ms": now_ms,
        });
        let mut own = honoured.clone();
        own["purchase_id"] = purchase_id.into();
        own["code"] = code.as_str().into();
        crate::domain::webhooks::record(
            conn,
            brand_id,
            crate::domain::webhooks::EventType::CouponHonoured,
            Some(&claimed.member_id),
            own,
        )
        .await?;
        if funding.as_str() != brand_id {
            crate::domain::webhooks::record(
                conn,
                funding,
                crate::domain::webhooks::EventType::CouponHonoured,
                Some(&claimed.member_id),
                honoured,
            )
            .await?;
        }
    }
    sqlx::query("UPDATE checkouts SET status = 'completed', purchase_id = $1 WHERE id = $2")
        .bind(purchase_id)
        .bind(&claimed.checkout_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE purchases SET discount_cents = $1, checkout_id = $2 WHERE id = $3")
        .bind(total)
        .bind(&claimed.checkout_id)
        .bind(purchase_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// What a refund did to a purchase's coupons.
#[derive(Debug, Clone, Default)]
pub struct RefundedCoupons {
    /// Codes voided.
    pub voided: Vec<String>,
    /// Points given back for perk redemptions reversed with them.
    pub perk_points_restored: i64,
}

/// Voids the coupons of `purchase_id` whose discounted lines are now all refunded (see the
/// module docs), in the refund's transaction.
pub async fn after_refund(
    conn: &mut AnyConnection,
    backend: Backend,
    points: &PointsConfig,
    purchase_id: &str,
    refund_pk: &str,
    member_id: &str,
    now_ms: i64,
) -> DomainResult<RefundedCoupons> {
    let _ = refund_pk;
    let mut out = RefundedCoupons::default();
    let coupons: Vec<(String, String, String, String, i64, String)> = sqlx::query_as(
        "SELECT c.code, c.template_id, c.source_kind, c.source_id, COALESCE(c.discount_cents, 0),
                p.brand_id
         FROM coupons c JOIN purchases p ON p.id = c.purchase_id
         WHERE c.purchase_id = $1 AND c.status = 'redeemed' ORDER BY c.code",
    )
    .bind(purchase_id)
    .fetch_all(&mut *conn)
    .await?;
    for (code, template, source_kind, source_id, discount, brand_id) in coupons {
        let (open,): (i64,) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM checkout_discounts d
             JOIN purchases p ON p.checkout_id = d.checkout_id
             JOIN purchase_lines l ON l.purchase_id = p.id AND l.line_id = d.line_id
             WHERE p.id = $1 AND d.code = $2 AND l.refunded_quantity < l.quantity",
        )
        .bind(purchase_id)
        .bind(&code)
        .fetch_one(&mut *conn)
        .await?;
        if open > 0 {
            continue;
        }
        let voided = sqlx::query(
            "UPDATE coupons SET status = 'voided', updated_at = $1 WHERE code = $2 AND status = 'redeemed'",
        )
        .bind(now_ms)
        .bind(&code)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if voided != 1 {
            continue;
        }
        let (funding, plugin): (String, String) =
            sqlx::query_as("SELECT funding_brand, plugin FROM coupon_templates WHERE id = $1")
                .bind(&template)
                .fetch_one(&mut *conn)
                .await?;
        let reverses = outbox::find(
            conn,
            "coupon",
            &code,
            EventKind::CouponHonoured,
            Some(&template),
        )
        .await?;
        let plugin = governing_plugin(conn, &code, &plugin).await?;
        outbox::record(
            conn,
            &NewEvent {
                kind: EventKind::Refund,
                brand_id: &brand_id,
                funding_brand: &funding,
                honouring_brand: &brand_id,
                reference: Some(EventKind::CouponHonoured.as_str()),
                plugin: Some(&plugin),
                points: 0,
                value_cents: discount,
                member_id: Some(member_id),
                subject_kind: "coupon",
                subject_id: &code,
                reverses_event_id: reverses.as_deref(),
                occurred_at: now_ms,
            },
            now_ms,
        )
        .await?;
        if source_kind == "perk" {
            out.perk_points_restored += crate::workflows::perks::reverse_redemption(
                conn, backend, points, &source_id, now_ms,
            )
            .await?;
        }
        out.voided.push(code);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, sku: &str, quantity: u32, unit: i64, excluded: bool) -> OrderLine {
        OrderLine {
            line_id: id.into(),
            sku: sku.into(),
            category: "c".into(),
            quantity,
            unit_price_cents: unit,
            excluded,
        }
    }

    fn left(lines: &[OrderLine]) -> BTreeMap<String, i64> {
        lines
            .iter()
            .map(|l| {
                (
                    l.line_id.clone(),
                    l.unit_price_cents * i64::from(l.quantity),
                )
            })
            .collect()
    }

    #[test]
    fn a_free_item_is_one_unit_of_its_first_line() {
        let lines = [
            line("1", "wash", 1, 3_000, false),
            line("2", "parking-2h", 3, 800, false),
            line("3", "parking-2h", 1, 800, false),
        ];
        let rule = HostRule::FreeItem {
            sku: "parking-2h".into(),
        };
        assert_eq!(
            host_rule_discounts(&rule, &lines, &left(&lines)),
            [("2".to_owned(), 800)]
        );
        // What earlier coupons left of the line caps it; an exhausted line is skipped.
        let mut partly = left(&lines);
        partly.insert("2".into(), 0);
        assert_eq!(
            host_rule_discounts(&rule, &lines, &partly),
            [("3".to_owned(), 800)]
        );
        partly.insert("3".into(), 300);
        assert_eq!(
            host_rule_discounts(&rule, &lines, &partly),
            [("3".to_owned(), 300)]
        );
        // Excluded lines and other skus never match.
        let excluded = [line("1", "parking-2h", 1, 800, true)];
        assert!(host_rule_discounts(&rule, &excluded, &left(&excluded)).is_empty());
    }

    #[test]
    fn a_discount_spreads_over_lines_in_order_never_below_zero() {
        let lines = [
            line("1", "a", 1, 300, false),
            line("2", "b", 1, 5_000, true),
            line("3", "c", 2, 400, false),
        ];
        assert_eq!(
            host_rule_discounts(&HostRule::DiscountCents(1_000), &lines, &left(&lines)),
            [("1".to_owned(), 300), ("3".to_owned(), 700)]
        );
        // Bigger than the cart: the cart's non-excluded total, no more.
        assert_eq!(
            host_rule_discounts(&HostRule::DiscountCents(99_999), &lines, &left(&lines)),
            [("1".to_owned(), 300), ("3".to_owned(), 800)]
        );
    }

    #[test]
    fn host_rules_round_trip_through_template_params() {
        for rule in [
            HostRule::FreeItem {
                sku: "parking-2h".into(),
            },
            HostRule::DiscountCents(1_500),
        ] {
            assert_eq!(
                HostRule::from_params(&rule.params().to_string()),
                Some(rule)
            );
        }
        assert_eq!(
            HostRule::from_params(r#"{"grant":"discount-cents","cents":"0"}"#),
            None
        );
        assert_eq!(HostRule::from_params(r#"{"kind":"percent-off"}"#), None);
    }
}
