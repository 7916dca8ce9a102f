//! Reading a purchase back with its lines, bonuses, refunds and skipped plugin decisions.

use super::*;

pub(super) type PurchaseRow = (
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

pub(super) const PURCHASE_COLUMNS: &str = "id, order_id, member_id, total_cents, points_spent, \
    points_value_cents, cash_cents, eligible_cents, base_points, bonus_points, spend_entry_id, \
    created_at";

pub(super) type LineRow = (
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
    i64,
);

pub(super) async fn load_lines(
    conn: &mut AnyConnection,
    purchase_id: &str,
) -> DomainResult<Vec<PricedLine>> {
    let rows: Vec<LineRow> = sqlx::query_as(
        "SELECT line_no, line_id, sku, category, quantity, unit_price_cents, total_cents, excluded,
                points_alloc, points_cents_alloc, eligible_cents, earned_points, refunded_quantity,
                discount_cents, stored_value_alloc
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
                sv,
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
                    cash_cents: total - discount - pca - sv,
                    stored_value_alloc: sv,
                    eligible_cents: elig,
                    earned_points: earned,
                    refunded_quantity: rq,
                    discount_cents: discount,
                }
            },
        )
        .collect())
}

pub(super) type RefundRow = (
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
    i64,
    i64,
);

/// Reads a purchase with its lines, bonuses and refunds; unknown: 404.
pub async fn get_purchase(
    pool: &sqlx::AnyPool,
    brand_id: &str,
    order_id: &str,
) -> DomainResult<PurchaseView> {
    let mut conn = pool.acquire().await?;
    let row: Option<PurchaseRow> = sqlx::query_as(&format!(
        "SELECT {PURCHASE_COLUMNS} FROM purchases WHERE brand_id = $1 AND order_id = $2"
    ))
    .bind(brand_id)
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (id, order_id, member_id, total, spent, value, cash, eligible, base, bonus, _, created) =
        row.ok_or_else(|| DomainError::not_found("purchase", order_id))?;
    let lines = load_lines(&mut conn, &id).await?;
    let (discount_cents, checkout_id, stored_value_cents, points_multiplier_percent): (
        i64,
        Option<String>,
        i64,
        i64,
    ) = sqlx::query_as(
        "SELECT discount_cents, checkout_id, stored_value_cents, points_multiplier_percent
         FROM purchases WHERE id = $1",
    )
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
        .map(|(plugin, version, hook, code, detail)| SkippedDecision {
            plugin,
            version,
            hook,
            code,
            detail,
        })
        .collect();
    let expires: Option<(i64,)> = sqlx::query_as(
        "SELECT MIN(expires_at) FROM point_lots WHERE purchase_id = $1 AND source IN ('earn', 'bonus')",
    )
    .bind(&id)
    .fetch_optional(&mut *conn)
    .await
    .unwrap_or(None);
    let pending: Option<(i64, i64, String)> = sqlx::query_as(
        "SELECT base_points + bonus_points - cancelled_base - cancelled_bonus, available_at, status
         FROM pending_earns WHERE purchase_id = $1",
    )
    .bind(&id)
    .fetch_optional(&mut *conn)
    .await?;
    let refund_rows: Vec<RefundRow> = sqlx::query_as(
        "SELECT id, refund_id, cash_refund_cents, points_restored, points_reversed,
                points_clawed_back, shortfall_points, qualifying_reversed_cents, entry_id, created_at,
                stored_value_refund_cents, pending_cancelled
         FROM refunds WHERE purchase_id = $1 ORDER BY created_at, id",
    )
    .bind(&id)
    .fetch_all(&mut *conn)
    .await?;
    let mut refunds = Vec::with_capacity(refund_rows.len());
    for (
        rid,
        refund_id,
        cash_r,
        restored,
        reversed,
        clawed,
        shortfall,
        qual,
        entry,
        at,
        sv_r,
        pc,
    ) in refund_rows
    {
        let rlines: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT line_id, quantity, cash_refund_cents, points_restored, points_reversed,
                    stored_value_refund_cents
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
                .map(|(line_id, quantity, c, r, v, sv)| RefundLineView {
                    line_id,
                    quantity,
                    cash_refund_cents: c,
                    stored_value_refund_cents: sv,
                    points_restored: r,
                    points_reversed: v,
                })
                .collect(),
            cash_refund_cents: cash_r,
            stored_value_refund_cents: sv_r,
            points_restored: restored,
            points_reversed: reversed,
            bonus_reversed: reversed - base_reversed,
            points_clawed_back: clawed,
            shortfall_points: shortfall,
            qualifying_reversed_cents: qual,
            entry_id: entry,
            created_at_ms: at,
            pending_cancelled: pc,
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
        stored_value_cents,
        points_multiplier_percent,
        eligible_cents: eligible,
        base_points: base,
        bonus_points: bonus,
        points_earned: base + bonus,
        points_expire_at_ms: expires.map(|(e,)| e).filter(|_| base + bonus > 0),
        points_pending: pending
            .as_ref()
            .filter(|p| p.2 == "pending")
            .map_or(0, |p| p.0),
        points_available_at_ms: pending.as_ref().map(|p| p.1),
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
