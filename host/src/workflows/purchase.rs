//! One purchase from the counter to the ledger and back, and its refund: the walk every
//! purchase takes, whether it arrives online, from an offline sync or from the demo.
//!
//! 1. [`propose_bonuses`]: outside any transaction, the brand's `points-bonus` plugins are asked
//!    (fail-open) for bonuses on the priced order (`plugins`).
//! 2. [`record`]: in the write transaction, the risk check (`domain::risk`), the checkout's
//!    coupons claimed (`checkout`), the purchase recorded with its spend, earn and tier effect
//!    (`domain::purchases` → `ledger`), the coupons redeemed, the plugins' receipts and skipped
//!    decisions stored (`plugins`).
//! 3. [`refund`]: the refund recorded (`domain::purchases` → `ledger`), then the coupons of the
//!    fully refunded lines voided (`checkout`).

use coalition_runtime::model::{Hook, Order, OrderLine};
use sqlx::AnyConnection;

use crate::domain::purchases::{self, PurchaseRequest, PurchaseView, RefundRequest, RefundView};
use crate::foundation::error::DomainResult;
use crate::plugins::{self, context, dryrun, AcceptedBonuses};
use crate::workflows::{checkout, Services};

/// Asks every active plugin that implements `points-bonus` and involves the brand for bonuses
/// on this purchase (fail-open: see [`crate::plugins`]).
pub async fn propose_bonuses(
    state: &Services,
    brand_id: &str,
    req: &PurchaseRequest,
) -> DomainResult<AcceptedBonuses> {
    let interested = state
        .plugins
        .active()
        .iter()
        .any(|p| p.plugin.implements(Hook::PointsBonus) && p.involves(brand_id));
    if !interested {
        return Ok(AcceptedBonuses::default());
    }
    let discounts = match &req.checkout_id {
        Some(checkout_id) => {
            let mut conn = state.store.read().acquire().await?;
            checkout::line_discounts(&mut conn, brand_id, checkout_id, &req.lines).await?
        }
        None => Vec::new(),
    };
    let now_ms = state.now_ms();
    let priced = purchases::quote(
        state.store.read(),
        &state.settings.points,
        brand_id,
        req,
        &discounts,
        now_ms,
    )
    .await?;
    let mut conn = state.store.read().acquire().await?;
    let (member, blocked) =
        context::member_context(&mut conn, &state.settings.tiers, &req.member_id, now_ms).await?;
    let invocation =
        state
            .plugins
            .invocation(now_ms, brand_id, &format!("purchase:{}", req.order_id));
    let active = state.plugins.active();
    let invocation = state
        .plugins
        .with_budgets(
            invocation,
            &mut conn,
            active
                .iter()
                .filter(|p| p.plugin.implements(Hook::PointsBonus) && p.involves(brand_id))
                .map(|p| &p.plugin),
        )
        .await?;
    drop(conn);
    if blocked {
        // The write refuses blocked members with `member_blocked`; no point asking plugins.
        return Ok(AcceptedBonuses::default());
    }
    let order = Order {
        order_id: req.order_id.clone(),
        brand: brand_id.to_owned(),
        lines: priced
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
            .collect(),
        total_cents: priced.total_cents,
        paid_with_points_cents: priced.points_value_cents,
        base_points: priced.base_points,
    };
    let shadow_input = (invocation.clone(), member.clone(), order.clone());
    let outcomes = state
        .plugins
        .purchase_bonuses(invocation, member, order)
        .await;
    dryrun::spawn_shadow_bonuses(
        &state.store,
        &state.plugins,
        &state.clock,
        &outcomes,
        shadow_input,
    );
    Ok(plugins::accept_bonuses(outcomes, priced.base_points))
}

/// Records a purchase with the bonuses the plugins proposed, in the caller's write transaction
/// (see the module docs).
pub async fn record(
    state: &Services,
    conn: &mut AnyConnection,
    brand_id: &str,
    req: &PurchaseRequest,
    accepted: &AcceptedBonuses,
) -> DomainResult<PurchaseView> {
    let now_ms = state.now_ms();
    let backend = state.store.backend();
    purchases::check_request_ids(req)?;
    crate::domain::risk::check_earning(conn, &state.settings.risk, &req.member_id, now_ms).await?;
    // A checkout's coupons discount the lines: checked and locked here, redeemed below.
    let claimed = match &req.checkout_id {
        Some(checkout_id) => {
            Some(checkout::claim(conn, backend, brand_id, checkout_id, req, now_ms).await?)
        }
        None => None,
    };
    let discounts = claimed
        .as_ref()
        .map(|c| c.line_discounts.clone())
        .unwrap_or_default();
    let mut view = purchases::record_purchase(
        conn,
        backend,
        &state.settings.points,
        &state.settings.tiers,
        brand_id,
        req,
        &discounts,
        accepted.proposals(),
        now_ms,
    )
    .await?;
    if let Some(claimed) = &claimed {
        checkout::complete(conn, claimed, brand_id, &view.id, now_ms).await?;
    }
    accepted.store_receipts(conn, &view.id, now_ms).await?;
    // The plugins' skipped decisions first, then the host's own cuts (partner budgets).
    let mut skipped = accepted.skipped.clone();
    skipped.append(&mut view.skipped_decisions);
    plugins::AcceptedBonuses::store_skipped(conn, &view.id, &skipped).await?;
    view.skipped_decisions = skipped;
    // A referral the invitee's first qualifying purchase decides, in the same transaction.
    crate::domain::referrals::on_purchase(conn, backend, &state.settings.points, &view, now_ms)
        .await?;
    Ok(view)
}

/// Refunds lines of a purchase and voids the coupons of the lines now fully refunded (giving
/// their perks' points back), in the caller's write transaction.
pub async fn refund(
    state: &Services,
    conn: &mut AnyConnection,
    brand_id: &str,
    order_id: &str,
    req: &RefundRequest,
) -> DomainResult<RefundView> {
    let now_ms = state.now_ms();
    let backend = state.store.backend();
    let points = &state.settings.points;
    let (mut view, purchase_id) =
        purchases::refund_purchase(conn, backend, points, brand_id, order_id, req, now_ms).await?;
    let coupons = checkout::after_refund(
        conn,
        backend,
        points,
        &purchase_id,
        &view.id,
        &view.member_id,
        now_ms,
    )
    .await?;
    view.coupons_voided = coupons.voided;
    view.perk_points_restored = coupons.perk_points_restored;
    // A referral rewarded on this purchase is clawed back if it no longer qualifies.
    crate::domain::referrals::on_refund(conn, backend, points, &purchase_id, &view.id, now_ms)
        .await?;
    Ok(view)
}
