//! Pending points: an earn waiting out its brand's return window. Nothing is posted while it
//! waits, so it is visible (the points view, the purchase) but cannot be spent, and a refund
//! inside the window cancels part of it without touching the wallet — no claw-back, no debt.
//! The release (in the purchases domain, which knows how to post an earn) credits what is left
//! as ordinary lots once, guarded by `status = 'pending'`.

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::foundation::error::{DomainError, DomainResult};

/// A pending earn to record with its purchase.
#[derive(Debug, Clone)]
pub struct NewPending<'a> {
    /// The purchase.
    pub purchase_id: &'a str,
    /// The member.
    pub member_id: &'a str,
    /// The brand whose window applies.
    pub brand_id: &'a str,
    /// Base points.
    pub base_points: i64,
    /// Bonus points.
    pub bonus_points: i64,
    /// Eligible spend, cents (qualifies for tiers at the release).
    pub eligible_cents: i64,
    /// When the window ends, Unix ms.
    pub available_at: i64,
}

/// A pending earn, as the member sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PendingView {
    /// The purchase.
    pub purchase_id: String,
    /// Where it was bought.
    pub brand_id: String,
    /// Points still pending (net of refunds inside the window).
    pub points: i64,
    /// When they become available, Unix ms.
    pub available_at_ms: i64,
}

/// A pending row, locked for its release or a refund.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingRow {
    /// The purchase.
    pub purchase_id: String,
    /// The member.
    pub member_id: String,
    /// The brand.
    pub brand_id: String,
    /// Base points.
    pub base_points: i64,
    /// Bonus points.
    pub bonus_points: i64,
    /// Eligible spend, cents.
    pub eligible_cents: i64,
    /// Cancelled base.
    pub cancelled_base: i64,
    /// Cancelled bonus.
    pub cancelled_bonus: i64,
    /// Cancelled eligible spend.
    pub cancelled_eligible_cents: i64,
    /// Window end.
    pub available_at: i64,
    /// `pending` or `released`.
    pub status: String,
}

const COLUMNS: &str = "purchase_id, member_id, brand_id, base_points, bonus_points, \
    eligible_cents, cancelled_base, cancelled_bonus, cancelled_eligible_cents, available_at, status";

/// Records a pending earn in the caller's transaction.
pub async fn create(conn: &mut AnyConnection, p: &NewPending<'_>, now_ms: i64) -> DomainResult<()> {
    sqlx::query(
        "INSERT INTO pending_earns (purchase_id, member_id, brand_id, base_points, bonus_points,
            eligible_cents, available_at, status, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8)",
    )
    .bind(p.purchase_id)
    .bind(p.member_id)
    .bind(p.brand_id)
    .bind(p.base_points)
    .bind(p.bonus_points)
    .bind(p.eligible_cents)
    .bind(p.available_at)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The purchase's pending earn, if it is still pending (the caller holds the purchase's lock).
pub async fn still_pending(
    conn: &mut AnyConnection,
    purchase_id: &str,
) -> DomainResult<Option<PendingRow>> {
    Ok(sqlx::query_as::<_, PendingRow>(&format!(
        "SELECT {COLUMNS} FROM pending_earns WHERE purchase_id = $1 AND status = 'pending'"
    ))
    .bind(purchase_id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Cancels part of a pending earn (a refund inside the window), guarded so the cancelled parts
/// never pass what was pending and a released earn is never touched.
pub async fn cancel(
    conn: &mut AnyConnection,
    purchase_id: &str,
    base: i64,
    bonus: i64,
    eligible_cents: i64,
) -> DomainResult<()> {
    let updated = sqlx::query(
        "UPDATE pending_earns SET cancelled_base = cancelled_base + $1,
            cancelled_bonus = cancelled_bonus + $2,
            cancelled_eligible_cents = cancelled_eligible_cents + $3
         WHERE purchase_id = $4 AND status = 'pending'
           AND cancelled_base + $1 <= base_points AND cancelled_bonus + $2 <= bonus_points
           AND cancelled_eligible_cents + $3 <= eligible_cents",
    )
    .bind(base)
    .bind(bonus)
    .bind(eligible_cents)
    .bind(purchase_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated != 1 {
        return Err(DomainError::internal(anyhow::anyhow!(
            "pending earn of purchase {purchase_id} refused a cancellation of {base}+{bonus}"
        )));
    }
    Ok(())
}

/// Marks a due pending earn released, once: `None` if it is not pending or not due (released
/// by another run, or not yet due). The caller credits what it returns in the same transaction.
pub async fn claim_release(
    conn: &mut AnyConnection,
    purchase_id: &str,
    now_ms: i64,
) -> DomainResult<Option<PendingRow>> {
    let claimed = sqlx::query(
        "UPDATE pending_earns SET status = 'released', released_at = $1
         WHERE purchase_id = $2 AND status = 'pending' AND available_at <= $1",
    )
    .bind(now_ms)
    .bind(purchase_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if claimed != 1 {
        return Ok(None);
    }
    Ok(Some(
        sqlx::query_as::<_, PendingRow>(&format!(
            "SELECT {COLUMNS} FROM pending_earns WHERE purchase_id = $1"
        ))
        .bind(purchase_id)
        .fetch_one(&mut *conn)
        .await?,
    ))
}

/// Records the entry that credited a released earn.
pub async fn set_entry(
    conn: &mut AnyConnection,
    purchase_id: &str,
    entry_id: Option<&str>,
) -> DomainResult<()> {
    sqlx::query("UPDATE pending_earns SET entry_id = $1 WHERE purchase_id = $2")
        .bind(entry_id)
        .bind(purchase_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Purchases whose pending earn is due, after `after` (paging), at most `limit`.
pub async fn due(
    pool: &sqlx::AnyPool,
    now_ms: i64,
    after: &str,
    limit: i64,
) -> DomainResult<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT purchase_id FROM pending_earns
         WHERE status = 'pending' AND available_at <= $1 AND purchase_id > $2
         ORDER BY purchase_id LIMIT $3",
    )
    .bind(now_ms)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Most pending earns listed in a points view (the total counts them all).
pub const VIEW_PENDING: i64 = 50;

/// A member's pending earns (soonest first, at most [`VIEW_PENDING`]) and their total.
pub async fn for_member<'e, E>(exec: E, member_id: &str) -> DomainResult<(i64, Vec<PendingView>)>
where
    E: sqlx::Executor<'e, Database = sqlx::Any> + Copy,
{
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT purchase_id, brand_id,
                base_points + bonus_points - cancelled_base - cancelled_bonus, available_at
         FROM pending_earns WHERE member_id = $1 AND status = 'pending'
           AND base_points + bonus_points > cancelled_base + cancelled_bonus
         ORDER BY available_at, purchase_id LIMIT $2",
    )
    .bind(member_id)
    .bind(VIEW_PENDING)
    .fetch_all(exec)
    .await?;
    let (total,): (i64,) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(base_points + bonus_points - cancelled_base - cancelled_bonus),
                0) AS BIGINT)
         FROM pending_earns WHERE member_id = $1 AND status = 'pending'",
    )
    .bind(member_id)
    .fetch_one(exec)
    .await?;
    Ok((
        total,
        rows.into_iter()
            .map(|(purchase_id, brand_id, points, at)| PendingView {
                purchase_id,
                brand_id,
                points,
                available_at_ms: at,
            })
            .collect(),
    ))
}
