//! The member as plugins see them: tier, tags, birthday month, balance, qualifying spend and
//! recent spend per brand — never the phone number, name, email or full birthday.

use coalition_runtime::model::{BrandSpend, MemberContext};
use sqlx::AnyConnection;

use crate::domain::tiers::{self, TierBasis, TiersConfig};
use crate::foundation::clock::DAY_MS;
use crate::foundation::error::{DomainError, DomainResult};

/// Most tags passed to a plugin (the contract's bound).
pub const MAX_TAGS: i64 = 64;
/// Most brands in `spend` (a coalition has tens of brands).
pub const MAX_BRANDS: i64 = 64;

/// The context of `member_id` at `now_ms`, and whether the member is blocked.
pub async fn member_context(
    conn: &mut AnyConnection,
    tiers_config: &TiersConfig,
    member_id: &str,
    now_ms: i64,
) -> DomainResult<(MemberContext, bool)> {
    let row: Option<(String, Option<String>, String, i64)> =
        sqlx::query_as("SELECT tier, birthday, status, created_at FROM members WHERE id = $1")
            .bind(member_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((tier, birthday, status, created_at)) = row else {
        return Err(DomainError::not_found("member", member_id));
    };
    let ladder = tiers::load_ladder(&mut *conn, tiers_config).await?;
    let tier_rank = u32::try_from(tiers::rank_of(&ladder, &tier)).unwrap_or(0);

    let tags: Vec<(String,)> =
        sqlx::query_as("SELECT tag FROM member_tags WHERE member_id = $1 ORDER BY tag LIMIT $2")
            .bind(member_id)
            .bind(MAX_TAGS)
            .fetch_all(&mut *conn)
            .await?;

    let balance: Option<(i64,)> =
        sqlx::query_as("SELECT balance FROM point_wallets WHERE member_id = $1")
            .bind(member_id)
            .fetch_optional(&mut *conn)
            .await?;

    let window_start = now_ms.saturating_sub(tiers_config.window_days.saturating_mul(DAY_MS));
    let qualifying = tiers::qualifying_between(
        &mut *conn,
        TierBasis::Spend,
        member_id,
        window_start,
        now_ms,
    )
    .await?;

    let since_7d = now_ms.saturating_sub(7 * DAY_MS);
    let since_30d = now_ms.saturating_sub(30 * DAY_MS);
    let spend_rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT p.brand_id,
                CAST(COALESCE(SUM(CASE WHEN q.occurred_at > $2 THEN q.spend_cents ELSE 0 END), 0)
                     AS BIGINT),
                CAST(COALESCE(SUM(q.spend_cents), 0) AS BIGINT)
         FROM qualifying_events q JOIN purchases p ON p.id = q.purchase_id
         WHERE q.member_id = $1 AND q.occurred_at > $3 AND q.occurred_at <= $4
         GROUP BY p.brand_id ORDER BY p.brand_id LIMIT $5",
    )
    .bind(member_id)
    .bind(since_7d)
    .bind(since_30d)
    .bind(now_ms)
    .bind(MAX_BRANDS)
    .fetch_all(&mut *conn)
    .await?;
    let visit_rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT brand_id, COUNT(*) FROM purchases
         WHERE member_id = $1 AND created_at > $2 AND created_at <= $3
         GROUP BY brand_id ORDER BY brand_id LIMIT $4",
    )
    .bind(member_id)
    .bind(since_30d)
    .bind(now_ms)
    .bind(MAX_BRANDS)
    .fetch_all(&mut *conn)
    .await?;
    let mut spend: Vec<BrandSpend> = spend_rows
        .into_iter()
        .map(|(brand, s7, s30)| BrandSpend {
            visits_30d: visit_rows
                .iter()
                .find(|(b, _)| *b == brand)
                .map_or(0, |(_, n)| u32::try_from(*n).unwrap_or(u32::MAX)),
            brand,
            spend_7d_cents: s7.max(0),
            spend_30d_cents: s30.max(0),
        })
        .collect();
    for (brand, n) in &visit_rows {
        if !spend.iter().any(|s| &s.brand == brand) {
            spend.push(BrandSpend {
                brand: brand.clone(),
                spend_7d_cents: 0,
                spend_30d_cents: 0,
                visits_30d: u32::try_from(*n).unwrap_or(u32::MAX),
            });
        }
    }
    spend.sort_by(|a, b| a.brand.cmp(&b.brand));

    let context = MemberContext {
        member_ref: member_id.to_owned(),
        tier,
        tier_rank,
        tags: tags.into_iter().map(|(t,)| t).collect(),
        birthday_month: birthday.as_deref().and_then(birthday_month),
        points_balance: balance.map_or(0, |(b,)| b.max(0)),
        qualifying_spend_cents: qualifying.max(0),
        spend,
        member_since_ms: created_at,
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
