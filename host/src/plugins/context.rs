//! The member as plugins see them: tier, tags, birthday month, balance, qualifying spend,
//! recent spend per brand, and (for `coalition:plugin@0.2.0`) stored value, pending points and
//! the paid card — never the phone number, name, email or full birthday.

use coalition_runtime::model::{BrandSpend, MemberContext, Membership};
use sqlx::AnyConnection;

use crate::domain::tiers::{self, TiersConfig};
use crate::foundation::clock::DAY_MS;
use crate::foundation::error::{DomainError, DomainResult};

/// Most tags passed to a plugin (the contract's bound).
pub const MAX_TAGS: i64 = 64;
/// Most brands in `spend` (a coalition has tens of brands).
pub const MAX_BRANDS: i64 = 64;

/// The member row with everything that is one number per member: the wallet balance, the
/// qualifying spend in the tier window, the tier's rank on the stored ladder (with the
/// ladder's size, 0 when the configured ladder applies), the stored-value balance and the
/// pending points. One round trip instead of six: the context is built for every listing,
/// purchase and redemption.
type MemberRow = (
    String,
    Option<String>,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
);

/// Spend in the last 7 and 30 days and visits in the last 30 days, per brand, in one grouped
/// read over the member's qualifying events and purchases.
const SPEND_SQL: &str = "SELECT brand_id, CAST(SUM(s7) AS BIGINT), CAST(SUM(s30) AS BIGINT),
            CAST(SUM(v) AS BIGINT)
     FROM (SELECT p.brand_id AS brand_id,
                  CASE WHEN q.occurred_at > $2 THEN q.spend_cents ELSE 0 END AS s7,
                  q.spend_cents AS s30, 0 AS v
           FROM qualifying_events q JOIN purchases p ON p.id = q.purchase_id
           WHERE q.member_id = $1 AND q.occurred_at > $3 AND q.occurred_at <= $4
           UNION ALL
           SELECT brand_id, 0, 0, 1 FROM purchases
           WHERE member_id = $1 AND created_at > $3 AND created_at <= $4) x
     GROUP BY brand_id ORDER BY brand_id LIMIT $5";

/// The context of `member_id` at `now_ms`, and whether the member is blocked: four reads, five
/// with a paid card whose plan has a tier floor (the ladder).
pub async fn member_context(
    conn: &mut AnyConnection,
    tiers_config: &TiersConfig,
    member_id: &str,
    now_ms: i64,
) -> DomainResult<(MemberContext, bool)> {
    let window_start = now_ms.saturating_sub(tiers_config.window_days.saturating_mul(DAY_MS));
    let row: Option<MemberRow> = sqlx::query_as(
        "SELECT m.tier, m.birthday, m.status, m.created_at,
                CAST(COALESCE((SELECT w.balance FROM point_wallets w WHERE w.member_id = m.id), 0)
                     AS BIGINT),
                CAST(COALESCE((SELECT SUM(q.spend_cents) FROM qualifying_events q
                               WHERE q.member_id = m.id AND q.occurred_at > $2
                                 AND q.occurred_at <= $3), 0) AS BIGINT),
                CAST((SELECT COUNT(*) FROM tier_ladder) AS BIGINT),
                CAST((SELECT COUNT(*) FROM tier_ladder l2 JOIN tier_ladder l ON l.code = m.tier
                      WHERE l2.rank < l.rank) AS BIGINT),
                CAST(COALESCE((SELECT s.balance FROM stored_value_wallets s
                               WHERE s.member_id = m.id), 0) AS BIGINT),
                CAST(COALESCE((SELECT SUM(e.base_points + e.bonus_points - e.cancelled_base
                                          - e.cancelled_bonus)
                               FROM pending_earns e
                               WHERE e.member_id = m.id AND e.status = 'pending'), 0) AS BIGINT)
         FROM members m WHERE m.id = $1",
    )
    .bind(member_id)
    .bind(window_start)
    .bind(now_ms)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((
        tier,
        birthday,
        status,
        created_at,
        balance,
        qualifying,
        stored_rungs,
        stored_rank,
        stored_value,
        pending,
    )) = row
    else {
        return Err(DomainError::not_found("member", member_id));
    };
    // The stored ladder overrides the configured one when it has any rung (as `load_ladder`).
    let tier_rank = if stored_rungs > 0 {
        u32::try_from(stored_rank).unwrap_or(0)
    } else {
        u32::try_from(tiers::rank_of(&tiers_config.ladder, &tier)).unwrap_or(0)
    };

    let tags: Vec<(String,)> =
        sqlx::query_as("SELECT tag FROM member_tags WHERE member_id = $1 ORDER BY tag LIMIT $2")
            .bind(member_id)
            .bind(MAX_TAGS)
            .fetch_all(&mut *conn)
            .await?;

    let since_7d = now_ms.saturating_sub(7 * DAY_MS);
    let since_30d = now_ms.saturating_sub(30 * DAY_MS);
    let spend_rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(SPEND_SQL)
        .bind(member_id)
        .bind(since_7d)
        .bind(since_30d)
        .bind(now_ms)
        .bind(MAX_BRANDS)
        .fetch_all(&mut *conn)
        .await?;
    let spend: Vec<BrandSpend> = spend_rows
        .into_iter()
        .map(|(brand, s7, s30, visits)| BrandSpend {
            brand,
            spend_7d_cents: s7.max(0),
            spend_30d_cents: s30.max(0),
            visits_30d: u32::try_from(visits).unwrap_or(u32::MAX),
        })
        .collect();

    // The paid card (0.2.0): its floor lifts the tier plugins see, as it lifts the member's view.
    let card = crate::domain::membership::active_card(&mut *conn, member_id, now_ms).await?;
    let (tier, tier_rank, membership) = match card {
        None => (tier, tier_rank, None),
        Some(card) => {
            let (mut tier, mut tier_rank) = (tier, tier_rank);
            if let Some(floor) = &card.tier_floor {
                let ladder = tiers::load_ladder(&mut *conn, tiers_config).await?;
                if let Some(rank) = ladder.iter().position(|t| &t.code == floor) {
                    let rank = u32::try_from(rank).unwrap_or(0);
                    if rank > tier_rank {
                        (tier, tier_rank) = (floor.clone(), rank);
                    }
                }
            }
            let membership = Membership {
                plan: card.plan_id,
                brand: card.brand_id,
                benefits: card.benefits,
                points_multiplier_percent: card.points_multiplier_percent,
                tier_floor: card.tier_floor,
                expires_at_ms: card.expires_at_ms,
            };
            (tier, tier_rank, Some(membership))
        }
    };

    let context = MemberContext {
        member_ref: member_id.to_owned(),
        tier,
        tier_rank,
        tags: tags.into_iter().map(|(t,)| t).collect(),
        birthday_month: birthday.as_deref().and_then(birthday_month),
        points_balance: balance.max(0),
        qualifying_spend_cents: qualifying.max(0),
        spend,
        member_since_ms: created_at,
        stored_value_cents: stored_value.max(0),
        pending_points: pending.max(0),
        membership,
    };
    Ok((context, status == "blocked"))
}

/// The month of a `YYYY-MM-DD` birthday.
fn birthday_month(birthday: &str) -> Option<u8> {
    let month: u8 = birthday.get(5..7)?.parse().ok()?;
    (1..=12).contains(&month).then_some(month)
}

#[cfg(test)]
mod tests {
    use super::birthday_month;

    #[test]
    fn birthday_month_reads_the_month_only() {
        assert_eq!(birthday_month("1990-03-14"), Some(3));
        assert_eq!(birthday_month("1990-12-01"), Some(12));
        assert_eq!(birthday_month("1990-13-01"), None);
        assert_eq!(birthday_month("bad"), None);
    }
}
