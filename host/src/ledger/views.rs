//! What members and brands read: the points view (balance, lots, upcoming expiries, holds) and the history.

use super::*;

/// Lot as shown to the member.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LotView {
    /// Lot id.
    pub id: String,
    /// `earn`, `bonus`, `adjustment` or `restore`.
    pub source: String,
    /// The brand that funded it; `None` = platform.
    pub brand_id: Option<String>,
    /// Points credited.
    pub points: i64,
    /// Points left.
    pub remaining: i64,
    /// When credited, Unix ms.
    pub earned_at_ms: i64,
    /// When it expires, Unix ms.
    pub expires_at_ms: i64,
}

pub(super) type LotRow = (String, String, Option<String>, i64, i64, i64, i64);

/// Points expiring at one instant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UpcomingExpiry {
    /// When, Unix ms.
    pub expires_at_ms: i64,
    /// How many points.
    pub points: i64,
}

/// A member's points.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PointsView {
    /// The member.
    pub member_id: String,
    /// Points owned: available + held.
    pub balance: i64,
    /// Points that can be spent now.
    pub available: i64,
    /// Points reserved by pending holds.
    pub held: i64,
    /// Points owed because a refund reversed points the member had already spent; paid from the
    /// next points earned.
    pub debt: i64,
    /// The soonest expiries (grouped by instant), soonest first.
    pub upcoming_expiry: Vec<UpcomingExpiry>,
    /// Spendable lots, soonest expiry first (at most 100).
    pub lots: Vec<LotView>,
    /// Number of spendable lots in total.
    pub lots_total: i64,
    /// Pending holds (at most 50).
    pub holds: Vec<Hold>,
    /// Points earned inside a brand's return window: visible, not spendable, not in `balance`;
    /// they become available when the window passes (a refund inside it cancels them).
    #[serde(default)]
    pub pending: i64,
    /// The pending earns, soonest first (at most 50).
    #[serde(default)]
    pub pending_earns: Vec<crate::ledger::pending::PendingView>,
}

/// Reads a member's points. Lots past due but not yet swept by the expiry job are already left
/// out of `available`.
pub async fn points_view(
    pool: &sqlx::AnyPool,
    member_id: &str,
    now_ms: i64,
) -> DomainResult<PointsView> {
    let exists: Option<(String,)> = sqlx::query_as("SELECT id FROM members WHERE id = $1")
        .bind(member_id)
        .fetch_optional(pool)
        .await?;
    if exists.is_none() {
        return Err(DomainError::not_found("member", member_id));
    }
    let wallet: Option<(i64, i64, i64)> =
        sqlx::query_as("SELECT balance, held, debt FROM point_wallets WHERE member_id = $1")
            .bind(member_id)
            .fetch_optional(pool)
            .await?;
    let (balance, held, debt) = wallet.unwrap_or((0, 0, 0));
    let (due,): (i64,) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(remaining), 0) AS BIGINT) FROM point_lots
         WHERE member_id = $1 AND remaining > 0 AND expires_at <= $2",
    )
    .bind(member_id)
    .bind(now_ms)
    .fetch_one(pool)
    .await?;
    let (lots_total,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM point_lots WHERE member_id = $1 AND remaining > 0 AND expires_at > $2",
    )
    .bind(member_id)
    .bind(now_ms)
    .fetch_one(pool)
    .await?;
    let rows: Vec<LotRow> = sqlx::query_as(
        "SELECT id, source, brand_id, amount, remaining, earned_at, expires_at FROM point_lots
         WHERE member_id = $1 AND remaining > 0 AND expires_at > $2
         ORDER BY expires_at, id LIMIT $3",
    )
    .bind(member_id)
    .bind(now_ms)
    .bind(MAX_LOTS_SHOWN)
    .fetch_all(pool)
    .await?;
    let upcoming: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT expires_at, CAST(SUM(remaining) AS BIGINT) FROM point_lots
         WHERE member_id = $1 AND remaining > 0 AND expires_at > $2
         GROUP BY expires_at ORDER BY expires_at LIMIT $3",
    )
    .bind(member_id)
    .bind(now_ms)
    .bind(i64::try_from(MAX_UPCOMING_EXPIRIES).unwrap_or(12))
    .fetch_all(pool)
    .await?;
    let holds: Vec<HoldRow> = sqlx::query_as(&format!(
        "SELECT {HOLD_COLUMNS} FROM point_holds WHERE member_id = $1 AND status = 'pending'
         ORDER BY expires_at, id LIMIT $2"
    ))
    .bind(member_id)
    .bind(MAX_HOLDS_SHOWN)
    .fetch_all(pool)
    .await?;
    let available = (balance - due).max(0);
    let (pending, pending_earns) = crate::ledger::pending::for_member(pool, member_id).await?;
    Ok(PointsView {
        pending,
        pending_earns,
        member_id: member_id.to_owned(),
        balance: available + held,
        available,
        held,
        debt,
        upcoming_expiry: upcoming
            .into_iter()
            .map(|(expires_at_ms, points)| UpcomingExpiry {
                expires_at_ms,
                points,
            })
            .collect(),
        lots: rows
            .into_iter()
            .map(
                |(id, source, brand_id, points, remaining, earned_at, expires_at)| LotView {
                    id,
                    source,
                    brand_id,
                    points,
                    remaining,
                    earned_at_ms: earned_at,
                    expires_at_ms: expires_at,
                },
            )
            .collect(),
        lots_total,
        holds: holds.into_iter().map(|r| hold_from_row(r).0).collect(),
    })
}

/// One posting in a member's history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HistoryItem {
    /// Posting id (also the paging cursor).
    pub id: String,
    /// The journal entry it belongs to.
    pub entry_id: String,
    /// `earn`, `spend`, `hold`, `capture`, `release`, `hold_timeout`, `expiry`, `adjustment`,
    /// `refund` or `debt_settlement`.
    pub kind: String,
    /// `wallet`, `held` or `receivable`.
    pub account: String,
    /// Points in (> 0) or out (< 0) of the account.
    pub points: i64,
    /// What this posting is (e.g. `base`, a bonus reason, `clawback`).
    pub memo: String,
    /// The entry's reason.
    pub reason: String,
    /// Brand of the event, if any.
    pub brand_id: Option<String>,
    /// The brand's order id, for purchase and refund entries.
    pub order_id: Option<String>,
    /// The hold, for hold entries.
    pub hold_id: Option<String>,
    /// When, Unix ms.
    pub at_ms: i64,
}

/// A page of history, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HistoryPage {
    /// Postings, newest first.
    pub items: Vec<HistoryItem>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    pub next_before: Option<String>,
}

pub(super) type HistoryRow = (
    String,
    String,
    String,
    String,
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
);

/// A page of the member's postings (wallet, held and receivable), newest first.
pub async fn history(
    pool: &sqlx::AnyPool,
    member_id: &str,
    before: Option<&str>,
    limit: i64,
) -> DomainResult<HistoryPage> {
    let exists: Option<(String,)> = sqlx::query_as("SELECT id FROM members WHERE id = $1")
        .bind(member_id)
        .fetch_optional(pool)
        .await?;
    if exists.is_none() {
        return Err(DomainError::not_found("member", member_id));
    }
    let limit = limit.clamp(1, MAX_HISTORY_PAGE);
    let rows: Vec<HistoryRow> = sqlx::query_as(
        "SELECT p.id, p.entry_id, e.kind, p.account, p.amount, p.memo, e.reason, e.brand_id,
                pu.order_id, e.hold_id, p.created_at
         FROM ledger_postings p
         JOIN ledger_entries e ON e.id = p.entry_id
         LEFT JOIN purchases pu ON pu.id = e.purchase_id
         WHERE p.member_id = $1 AND p.id < $2
         ORDER BY p.id DESC LIMIT $3",
    )
    .bind(member_id)
    // Ids are lowercase hex, so "g" sorts after every id: no cursor means "from the newest".
    .bind(before.unwrap_or("g"))
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit;
    let items: Vec<HistoryItem> = rows
        .into_iter()
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(
            |(
                id,
                entry_id,
                kind,
                account,
                points,
                memo,
                reason,
                brand_id,
                order_id,
                hold_id,
                at,
            )| {
                HistoryItem {
                    id,
                    entry_id,
                    kind,
                    account,
                    points,
                    memo,
                    reason,
                    brand_id,
                    order_id,
                    hold_id,
                    at_ms: at,
                }
            },
        )
        .collect();
    let next_before = if more {
        items.last().map(|i| i.id.clone())
    } else {
        None
    };
    Ok(HistoryPage { items, next_before })
}
