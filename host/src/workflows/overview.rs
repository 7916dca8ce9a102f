//! The programme in numbers: members, activity, repurchase, order value, points outstanding
//! and expiring, per brand and per day, computed by SQL aggregates over the window.
//!
//! Days are the programme's local days (`[points] utc_offset_minutes`), as settlement periods
//! are. Orders and sales are as recorded at the counter, before refunds. Rates are integers in
//! basis points (1/100 of a percent), like every other figure here.
//! Coalition-wide for admins; a brand sees the same figures over its own purchases, the
//! members who bought from it and the points it funded.

use serde::Serialize;
use utoipa::ToSchema;

use crate::foundation::clock::{self, DAY_MS};
use crate::foundation::error::DomainResult;
use crate::workflows::Services;

/// Longest window an overview covers: the daily series has one row per day.
pub const MAX_WINDOW_DAYS: i64 = 366;

/// The overview of a window that ends now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Overview {
    /// The brand it is limited to; absent = the whole coalition.
    pub brand_id: Option<String>,
    /// The window's first instant, Unix ms (the start of a local day).
    pub from_ms: i64,
    /// Now, Unix ms.
    pub to_ms: i64,
    /// Days in the window.
    pub window_days: i64,
    /// Members: all registered (coalition) or all who ever bought from the brand.
    pub members: i64,
    /// Members who joined in the window (coalition only; 0 for a brand).
    pub members_joined: i64,
    /// Members with a purchase in the window.
    pub active_members: i64,
    /// `active_members / members`, basis points.
    pub active_rate_bp: i64,
    /// Of the active members, those with two or more purchases in the window, basis points.
    pub repurchase_rate_bp: i64,
    /// Purchases in the window.
    pub orders: i64,
    /// Their total, cents.
    pub sales_cents: i64,
    /// `sales_cents / orders` (0 without orders).
    pub average_order_cents: i64,
    /// Points members hold now: the liability (coalition: every wallet; a brand: the
    /// remaining points of lots it funded).
    pub points_outstanding: i64,
    /// Of those, points whose lots expire within the next 30 days. Lots already past their
    /// expiry that the expiry job has not reached yet count in neither figure.
    pub points_expiring_30d: i64,
    /// Per brand, in the window (a brand sees only its own row).
    pub by_brand: Vec<BrandFigures>,
    /// Per local day of the window, oldest first (days without activity included, as zeros).
    pub daily: Vec<DayFigures>,
}

/// One brand's figures in the window.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BrandFigures {
    /// The brand.
    pub brand_id: String,
    /// Purchases.
    pub orders: i64,
    /// Their total, cents.
    pub sales_cents: i64,
    /// Distinct members who bought.
    pub members: i64,
    /// `sales_cents / orders`.
    pub average_order_cents: i64,
    /// Points earned on its purchases (base and bonus).
    pub points_issued: i64,
}

/// One day's figures.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DayFigures {
    /// Start of the local day, Unix ms.
    pub day_ms: i64,
    /// Purchases.
    pub orders: i64,
    /// Their total, cents.
    pub sales_cents: i64,
    /// Distinct members who bought that day.
    pub active_members: i64,
    /// Points earned on that day's purchases.
    pub points_issued: i64,
    /// Points spent from wallets that day (at checkout and on perks).
    pub points_redeemed: i64,
}

fn ratio_bp(part: i64, whole: i64) -> i64 {
    if whole <= 0 {
        0
    } else {
        part.saturating_mul(10_000) / whole
    }
}

/// The overview of the `window_days` up to now, for `brand` or the whole coalition.
pub async fn overview(
    services: &Services,
    brand: Option<&str>,
    window_days: i64,
) -> DomainResult<Overview> {
    let pool = services.store.read();
    let now = services.now_ms();
    let offset_minutes = services.settings.points.utc_offset_minutes;
    let today = clock::local_day(now, offset_minutes);
    let from = clock::local_day_start_ms(today - (window_days - 1), offset_minutes);
    let offset = offset_minutes * 60_000;
    // `$2 IS NULL OR brand_id = $2` keeps one statement for both scopes.
    let brand = brand.map(str::to_owned);
    let (members,): (i64,) = match &brand {
        None => {
            sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM members")
                .fetch_one(pool)
                .await?
        }
        Some(b) => sqlx::query_as(
            "SELECT CAST(COUNT(DISTINCT member_id) AS BIGINT) FROM purchases WHERE brand_id = $1",
        )
        .bind(b)
        .fetch_one(pool)
        .await?,
    };
    let (members_joined,): (i64,) = match &brand {
        None => {
            sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM members WHERE created_at >= $1")
                .bind(from)
                .fetch_one(pool)
                .await?
        }
        Some(_) => (0,),
    };
    // Active members and, of them, those with two or more purchases, counted in the database.
    let (active_members, repeaters): (i64, i64) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT),
                CAST(COALESCE(SUM(CASE WHEN n >= 2 THEN 1 ELSE 0 END), 0) AS BIGINT)
         FROM (SELECT member_id, COUNT(*) AS n FROM purchases
               WHERE created_at >= $1 AND ($2 IS NULL OR brand_id = $2)
               GROUP BY member_id) per_member",
    )
    .bind(from)
    .bind(brand.clone())
    .fetch_one(pool)
    .await?;
    let brands: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT brand_id, CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM(total_cents), 0) AS BIGINT),
                CAST(COUNT(DISTINCT member_id) AS BIGINT),
                CAST(COALESCE(SUM(base_points + bonus_points), 0) AS BIGINT)
         FROM purchases WHERE created_at >= $1 AND ($2 IS NULL OR brand_id = $2)
         GROUP BY brand_id ORDER BY brand_id",
    )
    .bind(from)
    .bind(brand.clone())
    .fetch_all(pool)
    .await?;
    let by_brand: Vec<BrandFigures> = brands
        .into_iter()
        .map(
            |(brand_id, orders, sales_cents, members, points_issued)| BrandFigures {
                brand_id,
                orders,
                sales_cents,
                members,
                average_order_cents: if orders > 0 { sales_cents / orders } else { 0 },
                points_issued,
            },
        )
        .collect();
    let orders: i64 = by_brand.iter().map(|b| b.orders).sum();
    let sales_cents: i64 = by_brand.iter().map(|b| b.sales_cents).sum();
    let (points_outstanding, points_expiring_30d): (i64, i64) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(remaining), 0) AS BIGINT),
                CAST(COALESCE(SUM(CASE WHEN expires_at < $1 THEN remaining ELSE 0 END), 0) AS BIGINT)
         FROM point_lots WHERE remaining > 0 AND expires_at > $3 AND ($2 IS NULL OR brand_id = $2)",
    )
    .bind(now + 30 * DAY_MS)
    .bind(brand.clone())
    .bind(now)
    .fetch_one(pool)
    .await?;
    // Local days in SQL: shifted by the offset, cut to whole days, shifted back (the offset is
    // a configured integer, never input).
    let day_sql =
        format!("CAST(((created_at + {offset}) / {DAY_MS}) * {DAY_MS} - {offset} AS BIGINT)");
    let sales: Vec<(i64, i64, i64, i64, i64)> = sqlx::query_as(&format!(
        "SELECT {day_sql} AS day, CAST(COUNT(*) AS BIGINT),
                CAST(COALESCE(SUM(total_cents), 0) AS BIGINT),
                CAST(COUNT(DISTINCT member_id) AS BIGINT),
                CAST(COALESCE(SUM(base_points + bonus_points), 0) AS BIGINT)
         FROM purchases WHERE created_at >= $1 AND ($2 IS NULL OR brand_id = $2)
         GROUP BY day ORDER BY day"
    ))
    .bind(from)
    .bind(brand.clone())
    .fetch_all(pool)
    .await?;
    let redeemed: Vec<(i64, i64)> = sqlx::query_as(&format!(
        "SELECT CAST(((e.created_at + {offset}) / {DAY_MS}) * {DAY_MS} - {offset} AS BIGINT) AS day,
                CAST(COALESCE(SUM(-p.amount), 0) AS BIGINT)
         FROM ledger_entries e JOIN ledger_postings p ON p.entry_id = e.id
         WHERE e.kind = 'spend' AND p.account = 'wallet' AND e.created_at >= $1
           AND ($2 IS NULL OR e.brand_id = $2)
         GROUP BY day ORDER BY day"
    ))
    .bind(from)
    .bind(brand.clone())
    .fetch_all(pool)
    .await?;
    let daily = (0..window_days)
        .map(|i| {
            let day_ms = from + i * DAY_MS;
            let s = sales.iter().find(|r| r.0 == day_ms);
            DayFigures {
                day_ms,
                orders: s.map_or(0, |r| r.1),
                sales_cents: s.map_or(0, |r| r.2),
                active_members: s.map_or(0, |r| r.3),
                points_issued: s.map_or(0, |r| r.4),
                points_redeemed: redeemed.iter().find(|r| r.0 == day_ms).map_or(0, |r| r.1),
            }
        })
        .collect();
    Ok(Overview {
        brand_id: brand,
        from_ms: from,
        to_ms: now,
        window_days,
        members,
        members_joined,
        active_members,
        active_rate_bp: ratio_bp(active_members, members),
        repurchase_rate_bp: ratio_bp(repeaters, active_members),
        orders,
        sales_cents,
        average_order_cents: if orders > 0 { sales_cents / orders } else { 0 },
        points_outstanding,
        points_expiring_30d,
        by_brand,
        daily,
    })
}
