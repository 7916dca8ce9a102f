//! Releasing pending points once a brand's return window has passed: what refunds inside the
//! window left of the earn is credited as ordinary lots, issued (a settle event) and counted
//! for tiers, once per purchase.

use utoipa::ToSchema;

use super::*;
use crate::foundation::store::Store;

/// Purchases released per batch; bounds memory whatever the backlog.
const RELEASE_BATCH: i64 = 500;

/// What a release run did.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
pub struct ReleaseReport {
    /// Purchases whose pending points were released.
    pub purchases: i64,
    /// Points credited.
    pub points: i64,
    /// When it ran, Unix ms.
    pub ran_at_ms: i64,
}

/// Releases every pending earn that is due, each purchase in its own short transaction.
/// Idempotent: a released earn is never released again, whichever node or run gets there first.
pub async fn release_due(
    store: &Store,
    points: &PointsConfig,
    tiers_config: &TiersConfig,
    now_ms: i64,
) -> DomainResult<ReleaseReport> {
    let mut report = ReleaseReport {
        ran_at_ms: now_ms,
        ..ReleaseReport::default()
    };
    let mut after = String::new();
    loop {
        let due = ledger::pending::due(store.read(), now_ms, &after, RELEASE_BATCH).await?;
        let Some(last) = due.last() else {
            break;
        };
        after = last.clone();
        for purchase_id in due {
            let mut tx = store.begin().await?;
            let released = release_one(
                &mut tx,
                store.backend(),
                points,
                tiers_config,
                &purchase_id,
                now_ms,
            )
            .await?;
            tx.commit().await?;
            if let Some(points) = released {
                report.purchases += 1;
                report.points += points;
            }
        }
    }
    Ok(report)
}

/// Releases one purchase's pending earn in the caller's transaction; `None` if another run (or
/// nothing) was there to release.
async fn release_one(
    conn: &mut AnyConnection,
    backend: Backend,
    points: &PointsConfig,
    tiers_config: &TiersConfig,
    purchase_id: &str,
    now_ms: i64,
) -> DomainResult<Option<i64>> {
    // The purchase row first: the lock order refunds use, so a refund and the release of the
    // same purchase queue instead of both deciding on the pending earn.
    let purchase: Option<(i64,)> = sqlx::query_as(&format!(
        "SELECT created_at FROM purchases WHERE id = $1{}",
        crate::foundation::store::for_update(backend)
    ))
    .bind(purchase_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((bought_at,)) = purchase else {
        return Ok(None);
    };
    let Some(row) = ledger::pending::claim_release(conn, purchase_id, now_ms).await? else {
        return Ok(None);
    };
    let base = row.base_points - row.cancelled_base;
    let bonus = row.bonus_points - row.cancelled_bonus;
    let earned = base + bonus;
    let eligible = row.eligible_cents - row.cancelled_eligible_cents;
    let wallet = lock_wallet(conn, backend, &row.member_id, now_ms).await?;
    if earned > 0 {
        // Each bonus keeps its own posting and reason, scaled to what the window left of the
        // bonuses (exact: largest remainder).
        let recorded: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT code, reason, source, points FROM purchase_bonuses
             WHERE purchase_id = $1 ORDER BY id",
        )
        .bind(purchase_id)
        .fetch_all(&mut *conn)
        .await?;
        let weights: Vec<i64> = recorded.iter().map(|b| b.3).collect();
        let bonuses = recorded
            .into_iter()
            .zip(allocate(bonus, &weights))
            .filter(|(_, share)| *share > 0)
            .map(|((code, reason, source, _), share)| BonusProposal {
                points: share,
                code,
                reason,
                source,
            })
            .collect();
        let plan = EarnPlan {
            base_points: base,
            bonuses,
        };
        let refs = EntryRefs {
            brand_id: Some(row.brand_id.clone()),
            purchase_id: Some(purchase_id.to_owned()),
            ..EntryRefs::default()
        };
        let expires_at = points.expiry_for(now_ms)?;
        let (entry_id, _) = post_earn(
            conn,
            &plan,
            &row.member_id,
            &row.brand_id,
            &refs,
            expires_at,
            now_ms,
        )
        .await?;
        ledger::pending::set_entry(conn, purchase_id, Some(&entry_id)).await?;
        sqlx::query("UPDATE purchases SET earn_entry_id = $1 WHERE id = $2")
            .bind(&entry_id)
            .bind(purchase_id)
            .execute(&mut *conn)
            .await?;
        outbox::record(
            conn,
            &NewEvent {
                kind: EventKind::PointsIssued,
                brand_id: &row.brand_id,
                funding_brand: &row.brand_id,
                honouring_brand: &row.brand_id,
                reference: None,
                plugin: None,
                points: earned,
                value_cents: points_value_cents(points, earned),
                member_id: Some(&row.member_id),
                subject_kind: "purchase",
                subject_id: purchase_id,
                reverses_event_id: None,
                occurred_at: now_ms,
            },
            now_ms,
        )
        .await?;
    }
    // Qualifying spend counts from the release (an upgrade happens now), dated at the purchase
    // so a later refund's reversal, also dated at the purchase, nets out in the same window.
    tiers::record_qualifying(
        conn,
        &row.member_id,
        purchase_id,
        None,
        eligible,
        earned,
        bought_at,
        now_ms,
    )
    .await?;
    let ladder = tiers::load_ladder(conn, tiers_config).await?;
    tiers::upgrade_after_purchase(
        conn,
        tiers_config,
        &ladder,
        &row.member_id,
        &wallet.tier,
        purchase_id,
        now_ms,
    )
    .await?;
    Ok(Some(earned))
}
