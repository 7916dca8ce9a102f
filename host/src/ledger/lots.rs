//! Lots: drawing debits oldest-expiry first and restoring what a reversal gives back.

use super::*;

/// One draw from a lot by a debit.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Draw {
    /// The lot drawn from.
    pub lot_id: String,
    /// Points drawn.
    pub points: i64,
    /// The brand that funded the lot (`None` = platform).
    pub brand_id: Option<String>,
    /// The lot's expiry, Unix ms.
    pub expires_at_ms: i64,
}

/// Draws `amount` points from the member's spendable lots, oldest expiry first (lots earned by
/// `prefer_purchase` first, for refund claw-backs), recording each draw against the entry.
/// The caller has locked the wallet and already debited it.
pub async fn consume_lots(
    conn: &mut AnyConnection,
    entry: &Entry,
    amount: i64,
    prefer_purchase: Option<&str>,
    now_ms: i64,
) -> DomainResult<Vec<Draw>> {
    let mut needed = amount;
    let mut draws = Vec::new();
    while needed > 0 {
        let member_id = entry.member_id();
        let lots: Vec<(String, i64, Option<String>, i64)> = match prefer_purchase {
            Some(purchase_id) => {
                sqlx::query_as(
                    "SELECT id, remaining, brand_id, expires_at FROM point_lots
                     WHERE member_id = $1 AND remaining > 0
                     ORDER BY CASE WHEN purchase_id = $2 THEN 0 ELSE 1 END, expires_at, id
                     LIMIT $3",
                )
                .bind(member_id)
                .bind(purchase_id)
                .bind(LOT_BATCH)
                .fetch_all(&mut *conn)
                .await?
            }
            None => {
                sqlx::query_as(
                    "SELECT id, remaining, brand_id, expires_at FROM point_lots
                     WHERE member_id = $1 AND remaining > 0
                     ORDER BY expires_at, id LIMIT $2",
                )
                .bind(member_id)
                .bind(LOT_BATCH)
                .fetch_all(&mut *conn)
                .await?
            }
        };
        if lots.is_empty() {
            return Err(DomainError::internal(anyhow::anyhow!(
                "member {member_id} has {needed} points in the wallet that no lot backs"
            )));
        }
        let mut rows = Vec::new();
        for (lot_id, remaining, brand_id, expires_at) in lots {
            if needed == 0 {
                break;
            }
            let take = remaining.min(needed);
            let updated = sqlx::query(
                "UPDATE point_lots SET remaining = remaining - $1 WHERE id = $2 AND remaining >= $1",
            )
            .bind(take)
            .bind(&lot_id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if updated != 1 {
                return Err(DomainError::internal(anyhow::anyhow!(
                    "lot {lot_id} changed under a locked wallet"
                )));
            }
            needed -= take;
            rows.push(vec![
                Val::Text(new_id()),
                Val::Text(lot_id.clone()),
                Val::Text(entry.id.clone()),
                Val::Int(take),
                Val::Int(now_ms),
            ]);
            draws.push(Draw {
                lot_id,
                points: take,
                brand_id,
                expires_at_ms: expires_at,
            });
        }
        insert_rows(
            conn,
            "lot_consumptions (id, lot_id, entry_id, amount, created_at)",
            rows,
        )
        .await?;
    }
    Ok(draws)
}

/// How restored points are dated.
#[derive(Debug, Clone, Copy)]
pub enum RestoreExpiry {
    /// Exactly the original lot's expiry (hold releases: as if the hold never happened).
    Original,
    /// The original expiry, but no earlier than this instant (refunds).
    AtLeast(i64),
}

/// Gives back up to `amount` points drawn by `source_entry_id`, latest-expiring draws first,
/// as new lots on the wallet credit posting `posting_id`. Returns the points restored (less than
/// `amount` only if the source drew less than that and was already partly restored).
pub async fn restore_consumptions(
    conn: &mut AnyConnection,
    entry: &mut Entry,
    source_entry_id: &str,
    amount: i64,
    posting_id: &str,
    expiry: RestoreExpiry,
) -> DomainResult<i64> {
    let draws: Vec<(String, i64, Option<String>, i64)> = sqlx::query_as(
        "SELECT c.id, c.amount - CAST(COALESCE((SELECT SUM(r.amount) FROM point_lots r
                                    WHERE r.origin_consumption_id = c.id), 0) AS BIGINT),
                l.brand_id, l.expires_at
         FROM lot_consumptions c JOIN point_lots l ON l.id = c.lot_id
         WHERE c.entry_id = $1
         ORDER BY l.expires_at DESC, c.id DESC",
    )
    .bind(source_entry_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut left = amount;
    for (consumption_id, restorable, brand_id, expires_at) in draws {
        if left == 0 {
            break;
        }
        let take = restorable.min(left);
        if take <= 0 {
            continue;
        }
        left -= take;
        let expires_at = match expiry {
            RestoreExpiry::Original => expires_at,
            RestoreExpiry::AtLeast(floor) => expires_at.max(floor),
        };
        entry.add_lot(NewLot {
            posting_id: posting_id.to_owned(),
            brand_id,
            source: "restore",
            amount: take,
            expires_at,
            purchase_id: None,
            origin_consumption_id: Some(consumption_id),
        });
    }
    Ok(amount - left)
}
