//! Key figures over a date range, per day, week or month, coalition-wide or for one brand,
//! from per-day records: SQL aggregates of each day's purchases and points postings, with the
//! day's buyers as compressed member sets, rolled up once a day is closed
//! ([`crate::workflows::kpi_rollups`]) and read from the purchases and postings until then.
//! Distinct counts (active members, buyers, repeat buyers, a brand's members) are exact
//! unions and intersections of those sets.
//!
//! Dates are the programme's local calendar days (`[points] utc_offset_minutes`), `from` and
//! `to` both included; weeks start on Monday (a bucket is labelled by its Monday, and the first
//! and last weeks are cut to the range); months are calendar months. Money is in cents, points
//! in points, rates in basis points (1/100 of a percent); every ratio is rounded down and is 0
//! when its denominator is 0. Sales are as recorded at the counter, before refunds.
//!
//! # Definitions
//! - **Member share of sales**: every purchase the coalition records names a member (a sale
//!   without one is never recorded), so a scope's share is of the coalition's member sales:
//!   the scope's sales ÷ all member sales in the range (10,000 coalition-wide).
//! - **Members** (the base of the rates): coalition-wide, every member registered before the
//!   end of the range; for a brand, the members who bought from it before the end.
//! - **Active rate 30/90**: members of the base with a purchase (in scope) in the 30/90 days
//!   that end with the range ÷ members.
//! - **Repurchase rate**: of the members who bought (in scope) in the range, those with two or
//!   more purchases.
//! - **LTV**: member spend to date (in scope, up to the end of the range) ÷ members.
//! - **Points** from the ledger's system accounts, net of reversals: issued = credits from
//!   issuance and adjustment accounts less claw-backs and debits (a brand: points it funded);
//!   redeemed = points spent at counters and on perks less restores (a brand: at its counters);
//!   expired = points posted to expiry. **Outstanding** is the liability now (points left in
//!   unexpired lots; a brand: lots it funded). **Breakage** = expired ÷ issued, in the range.
//! - **Campaign ROI**: per campaign (a brand: campaigns it funds), the sales (in scope) of the
//!   members who received its coupon, made at or after receiving it and inside the range,
//!   against the discounts its redeemed coupons gave: `roi_bp = (sales − spent) × 10,000 ÷
//!   spent`, absent when nothing was spent.
//! - **Perk redemptions** by funding and honouring brand (a brand: pairs it is part of), from
//!   the settlement outbox: count, points and face value.
//! - **Journey ROI**: per journey (a brand: journeys it owns), the sales (in scope) of the
//!   members it touched, at or after their first touch and inside the range, against what its
//!   actions cost: the discounts of its redeemed coupons plus the face value of the points it
//!   granted (their `points-issued` events); `roi_bp` as for campaigns.

use serde::Serialize;
use utoipa::ToSchema;

use crate::foundation::clock::{local_day, local_day_start_ms, local_month_start_ms, DAY_MS};
use crate::foundation::error::{DomainError, DomainResult};
use crate::workflows::{kpi_rollups, Services};
use roaring::RoaringBitmap;

/// Longest range at day granularity: a year of daily rows.
pub const MAX_DAYS_BY_DAY: i64 = 366;
/// Longest range at week granularity: five years of weekly rows (~262).
pub const MAX_DAYS_BY_WEEK: i64 = 5 * 366;
/// Longest range at month granularity: ten years of monthly rows.
pub const MAX_DAYS_BY_MONTH: i64 = 10 * 366;
/// Default range when `from` is omitted: the 30 days ending with `to`.
pub const DEFAULT_RANGE_DAYS: i64 = 30;
/// Most campaigns listed (newest first): the ROI table of one page.
pub const MAX_CAMPAIGNS: i64 = 100;
/// Most journeys listed (newest first).
pub const MAX_JOURNEYS: i64 = 100;
/// Most (funding, honouring) brand pairs listed for perk redemptions.
pub const MAX_PERK_PAIRS: i64 = 500;

/// The size of a series bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// Local days.
    Day,
    /// Weeks from Monday.
    Week,
    /// Calendar months.
    Month,
}

impl Granularity {
    /// Parses `day`, `week` or `month`.
    pub fn parse(text: &str) -> DomainResult<Self> {
        match text {
            "day" => Ok(Self::Day),
            "week" => Ok(Self::Week),
            "month" => Ok(Self::Month),
            other => Err(DomainError::bad_request(
                "invalid_granularity",
                format!("granularity {other:?}: expected day, week or month"),
            )),
        }
    }

    fn max_days(self) -> i64 {
        match self {
            Self::Day => MAX_DAYS_BY_DAY,
            Self::Week => MAX_DAYS_BY_WEEK,
            Self::Month => MAX_DAYS_BY_MONTH,
        }
    }
}

/// What a KPI page asks for, validated by [`range`].
#[derive(Debug, Clone)]
pub struct KpiRange {
    /// First local day, `YYYY-MM-DD`.
    pub from: String,
    /// Last local day, included.
    pub to: String,
    /// Start of `from`, Unix ms.
    pub from_ms: i64,
    /// End of `to` (start of the next day), Unix ms.
    pub to_ms: i64,
    /// Bucket size.
    pub granularity: Granularity,
}

/// The figures of a range.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Kpis {
    /// The brand they are limited to; absent = the whole coalition.
    pub brand_id: Option<String>,
    /// First local day.
    pub from: String,
    /// Last local day (included).
    pub to: String,
    /// Start of the range, Unix ms.
    pub from_ms: i64,
    /// End of the range (exclusive), Unix ms.
    pub to_ms: i64,
    /// Bucket size of `series`.
    pub granularity: Granularity,
    /// Figures of the whole range.
    pub totals: KpiTotals,
    /// Per bucket, oldest first, empty buckets included.
    pub series: Vec<KpiBucket>,
    /// Campaign ROI.
    pub campaigns: Vec<CampaignRoi>,
    /// Journey ROI.
    pub journeys: Vec<JourneyRoi>,
    /// Perk redemptions by funding and honouring brand.
    pub perk_redemptions: Vec<PerkRedemptions>,
}

/// Figures of the whole range (see the module doc for each definition).
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct KpiTotals {
    /// Purchases.
    pub orders: i64,
    /// Their total, cents.
    pub sales_cents: i64,
    /// `sales_cents ÷ orders`.
    pub average_order_cents: i64,
    /// The scope's share of the coalition's member sales, bp.
    pub member_share_of_sales_bp: i64,
    /// The base of the rates.
    pub members: i64,
    /// Members who bought in the range.
    pub buyers: i64,
    /// Of them, those with two or more purchases, bp of `buyers`.
    pub repurchase_rate_bp: i64,
    /// Members who bought in the 30 days ending with the range.
    pub active_30d: i64,
    /// `active_30d ÷ members`, bp.
    pub active_rate_30d_bp: i64,
    /// Members who bought in the 90 days ending with the range.
    pub active_90d: i64,
    /// `active_90d ÷ members`, bp.
    pub active_rate_90d_bp: i64,
    /// Average member spend to the end of the range, cents.
    pub ltv_cents: i64,
    /// Points issued, net.
    pub points_issued: i64,
    /// Points redeemed, net.
    pub points_redeemed: i64,
    /// Points expired.
    pub points_expired: i64,
    /// `points_expired ÷ points_issued`, bp.
    pub breakage_bp: i64,
    /// The points liability now.
    pub points_outstanding: i64,
}

/// One bucket of the series.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct KpiBucket {
    /// First local day of the bucket, `YYYY-MM-DD` (a week: its Monday).
    pub period: String,
    /// Its first instant, Unix ms.
    pub start_ms: i64,
    /// Purchases.
    pub orders: i64,
    /// Their total, cents.
    pub sales_cents: i64,
    /// `sales_cents ÷ orders`.
    pub average_order_cents: i64,
    /// Distinct members who bought.
    pub active_members: i64,
    /// Points issued, net.
    pub points_issued: i64,
    /// Points redeemed, net.
    pub points_redeemed: i64,
    /// Points expired.
    pub points_expired: i64,
}

/// The return of one coupon campaign.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CampaignRoi {
    /// The campaign.
    pub campaign_id: String,
    /// Its funding brand.
    pub funding_brand: String,
    /// Members who received its coupon.
    pub recipients: i64,
    /// Coupons redeemed.
    pub redeemed: i64,
    /// Discounts given by its redeemed coupons, cents.
    pub coupon_value_spent_cents: i64,
    /// Recipients' purchases in the range, at or after receiving the coupon.
    pub orders: i64,
    /// Their total, cents.
    pub sales_cents: i64,
    /// `(sales − spent) × 10,000 ÷ spent`; absent when nothing was spent.
    pub roi_bp: Option<i64>,
}

/// The return of one journey.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JourneyRoi {
    /// The journey.
    pub journey_id: String,
    /// Its owning brand; absent = the platform's.
    pub owner_brand: Option<String>,
    /// Members it touched.
    pub members_touched: i64,
    /// Discounts given by its redeemed coupons, cents.
    pub coupon_value_spent_cents: i64,
    /// Face value of the points it granted, cents.
    pub points_value_granted_cents: i64,
    /// Touched members' purchases in the range, at or after their first touch.
    pub orders: i64,
    /// Their total, cents.
    pub sales_cents: i64,
    /// `(sales − cost) × 10,000 ÷ cost`; absent when nothing was spent.
    pub roi_bp: Option<i64>,
}

/// Perk redemptions between two brands.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PerkRedemptions {
    /// Who pays.
    pub funding_brand: String,
    /// Who hands the perk over.
    pub honouring_brand: String,
    /// Redemptions.
    pub redemptions: i64,
    /// Points spent on them.
    pub points: i64,
    /// Face value, cents.
    pub value_cents: i64,
}

fn ratio_bp(part: i64, whole: i64) -> i64 {
    if whole <= 0 {
        0
    } else {
        i64::try_from(i128::from(part) * 10_000 / i128::from(whole)).unwrap_or(i64::MAX)
    }
}

fn per(total: i64, count: i64) -> i64 {
    if count > 0 {
        total / count
    } else {
        0
    }
}

/// Days from 1970-01-01 to a calendar date.
fn epoch_day(date: time::Date) -> i64 {
    i64::from(date.to_julian_day()) - 2_440_588
}

fn parse_date(field: &str, text: &str) -> DomainResult<time::Date> {
    let bad = || {
        DomainError::bad_request(
            "invalid_date",
            format!("{field} {text:?}: expected a date YYYY-MM-DD"),
        )
    };
    let mut parts = text.splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let year: i32 = y.parse().map_err(|_| bad())?;
    let month: u8 = m.parse().map_err(|_| bad())?;
    let day: u8 = d.parse().map_err(|_| bad())?;
    let month = time::Month::try_from(month).map_err(|_| bad())?;
    time::Date::from_calendar_date(year, month, day).map_err(|_| bad())
}

fn date_of_epoch_day(day: i64) -> String {
    i32::try_from(day + 2_440_588)
        .ok()
        .and_then(|j| time::Date::from_julian_day(j).ok())
        .map(|d| format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()))
        .unwrap_or_default()
}

/// Validates a request's range: `to` defaults to today, `from` to 29 days before `to`; `from`
/// must not be after `to`, and the range must fit the granularity's limit.
pub fn range(
    services: &Services,
    from: Option<&str>,
    to: Option<&str>,
    granularity: Option<&str>,
) -> DomainResult<KpiRange> {
    let granularity = Granularity::parse(granularity.unwrap_or("day"))?;
    let offset_minutes = services.settings.points.utc_offset_minutes;
    let today = local_day(services.now_ms(), offset_minutes);
    let to_day = match to {
        Some(text) => epoch_day(parse_date("to", text)?),
        None => today,
    };
    let from_day = match from {
        Some(text) => epoch_day(parse_date("from", text)?),
        None => to_day - (DEFAULT_RANGE_DAYS - 1),
    };
    if from_day > to_day {
        return Err(DomainError::bad_request(
            "invalid_range",
            "from must not be after to",
        ));
    }
    let days = to_day - from_day + 1;
    if days > granularity.max_days() {
        return Err(DomainError::bad_request(
            "range_too_long",
            format!(
                "{days} days at {granularity:?} granularity: at most {}",
                granularity.max_days()
            ),
        )
        .with_extra(serde_json::json!({ "max_days": granularity.max_days() })));
    }
    Ok(KpiRange {
        from: date_of_epoch_day(from_day),
        to: date_of_epoch_day(to_day),
        from_ms: local_day_start_ms(from_day, offset_minutes),
        to_ms: local_day_start_ms(to_day + 1, offset_minutes),
        granularity,
    })
}

/// The buckets' starts (local days since 1970), oldest first, cut to the range.
fn bucket_days(r: &KpiRange, offset_minutes: i64) -> DomainResult<Vec<i64>> {
    let first = local_day(r.from_ms, offset_minutes);
    let last = local_day(r.to_ms, offset_minutes) - 1;
    let mut starts = vec![first];
    let mut day = first;
    loop {
        day = match r.granularity {
            Granularity::Day => day + 1,
            // The next Monday (1970-01-01 was a Thursday: day 4 was a Monday).
            Granularity::Week => (day - 4).div_euclid(7) * 7 + 4 + 7,
            Granularity::Month => {
                let (y, m, _) = crate::foundation::clock::local_date(day * DAY_MS, 0)?;
                let months = i64::from(y) * 12 + i64::from(m) - 1 + 1;
                (local_month_start_ms(months, 0)?).div_euclid(DAY_MS)
            }
        };
        if day > last {
            break;
        }
        starts.push(day);
    }
    Ok(starts)
}

/// Per-bucket sums of the series while the days are folded in.
#[derive(Default)]
struct BucketSums {
    orders: i64,
    sales_cents: i64,
    points_issued: i64,
    points_redeemed: i64,
    points_expired: i64,
    active: RoaringBitmap,
}

/// The figures of a validated range for `brand` (or the coalition). Sales, points and every
/// distinct count come from per-day records (`kpi_rollups`): rolled-up rows for closed days,
/// the purchases and postings themselves for the others.
pub async fn kpis(services: &Services, brand: Option<&str>, r: &KpiRange) -> DomainResult<Kpis> {
    let pool = services.store.read();
    let offset_minutes = services.settings.points.utc_offset_minutes;
    let starts = bucket_days(r, offset_minutes)?;
    let brand = brand.map(str::to_owned);
    let (from, to) = (r.from_ms, r.to_ms);
    let from_day = local_day(from, offset_minutes);
    let to_day = local_day(to, offset_minutes);
    // The active rates look back 90 days from the end, which may start before the range.
    let window_start = from_day.min(to_day - 90);

    let mut buckets: Vec<BucketSums> = starts.iter().map(|_| BucketSums::default()).collect();
    let (mut bought_once, mut bought_twice) = (RoaringBitmap::new(), RoaringBitmap::new());
    let (mut active_30d, mut active_90d) = (RoaringBitmap::new(), RoaringBitmap::new());
    let mut ever = RoaringBitmap::new();
    let mut spend_to_date = 0i64;
    let mut days = kpi_rollups::DayReader::new(pool, offset_minutes).await?;
    days.each_day(brand.as_deref(), window_start, to_day, true, |d| {
        spend_to_date += d.sales_cents;
        if d.day >= to_day - 90 {
            active_90d |= &d.buyers;
        }
        if d.day >= to_day - 30 {
            active_30d |= &d.buyers;
        }
        if d.day >= from_day {
            // Bought twice in the range: twice on one day, or on this day and before.
            bought_twice |= &d.repeat_buyers;
            bought_twice |= &bought_once & &d.buyers;
            bought_once |= &d.buyers;
            let at = starts.partition_point(|&s| s <= d.day).saturating_sub(1);
            let b = &mut buckets[at];
            b.orders += d.orders;
            b.sales_cents += d.sales_cents;
            b.points_issued += d.points_issued;
            b.points_redeemed += d.points_redeemed;
            b.points_expired += d.points_expired;
            b.active |= &d.buyers;
        }
        if brand.is_some() {
            ever |= &d.buyers;
        }
    })
    .await?;
    // Everything before the window: spend to date, and a brand's members (its buyers ever).
    days.each_day(brand.as_deref(), 0, window_start, brand.is_some(), |d| {
        spend_to_date += d.sales_cents;
        ever |= &d.buyers;
    })
    .await?;
    let series: Vec<KpiBucket> = starts
        .iter()
        .zip(&buckets)
        .map(|(&day, b)| KpiBucket {
            period: date_of_epoch_day(day),
            start_ms: local_day_start_ms(day, offset_minutes),
            orders: b.orders,
            sales_cents: b.sales_cents,
            average_order_cents: per(b.sales_cents, b.orders),
            active_members: b.active.len() as i64,
            points_issued: b.points_issued,
            points_redeemed: b.points_redeemed,
            points_expired: b.points_expired,
        })
        .collect();

    let mut totals = KpiTotals {
        orders: series.iter().map(|b| b.orders).sum(),
        sales_cents: series.iter().map(|b| b.sales_cents).sum(),
        points_issued: series.iter().map(|b| b.points_issued).sum(),
        points_redeemed: series.iter().map(|b| b.points_redeemed).sum(),
        points_expired: series.iter().map(|b| b.points_expired).sum(),
        ..KpiTotals::default()
    };
    totals.average_order_cents = per(totals.sales_cents, totals.orders);
    totals.breakage_bp = ratio_bp(totals.points_expired, totals.points_issued);
    let all_sales = match &brand {
        None => totals.sales_cents,
        Some(_) => {
            let mut all = 0;
            days.each_day(None, from_day, to_day, false, |d| all += d.sales_cents)
                .await?;
            all
        }
    };
    totals.member_share_of_sales_bp = ratio_bp(totals.sales_cents, all_sales);
    totals.buyers = bought_once.len() as i64;
    totals.repurchase_rate_bp = ratio_bp(bought_twice.len() as i64, totals.buyers);
    let members = match &brand {
        None => {
            let (members,): (i64,) = sqlx::query_as(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM members WHERE created_at < $1",
            )
            .bind(to)
            .fetch_one(pool)
            .await?;
            members
        }
        Some(_) => ever.len() as i64,
    };
    totals.members = members;
    totals.active_30d = active_30d.len() as i64;
    totals.active_90d = active_90d.len() as i64;
    totals.active_rate_30d_bp = ratio_bp(totals.active_30d, members);
    totals.active_rate_90d_bp = ratio_bp(totals.active_90d, members);
    totals.ltv_cents = per(spend_to_date, members);
    // Coalition-wide, the wallets hold the sum of every lot's remaining points (the ledger's
    // invariant), so a million wallets are read instead of every lot, less the lots past
    // their expiry that the expiry job has not posted yet (few: it runs hourly). One
    // statement, one snapshot. A brand's share is in its lots (an index covers them).
    let (outstanding,): (i64,) = match &brand {
        None => {
            sqlx::query_as(
                "SELECT CAST((SELECT COALESCE(SUM(balance), 0) FROM point_wallets)
                     - (SELECT COALESCE(SUM(remaining), 0) FROM point_lots
                        WHERE remaining > 0 AND expires_at <= $1) AS BIGINT)",
            )
            .bind(services.now_ms())
            .fetch_one(pool)
            .await?
        }
        Some(b) => {
            sqlx::query_as(
                "SELECT CAST(COALESCE(SUM(remaining), 0) AS BIGINT) FROM point_lots
                 WHERE brand_id = $2 AND remaining > 0 AND expires_at > $1",
            )
            .bind(services.now_ms())
            .bind(b)
            .fetch_one(pool)
            .await?
        }
    };
    totals.points_outstanding = outstanding;

    Ok(Kpis {
        brand_id: brand.clone(),
        from: r.from.clone(),
        to: r.to.clone(),
        from_ms: from,
        to_ms: to,
        granularity: r.granularity,
        totals,
        series,
        campaigns: campaigns(pool, brand.as_deref(), from, to).await?,
        journeys: journeys(pool, brand.as_deref(), from, to).await?,
        perk_redemptions: perks(pool, brand.as_deref(), from, to).await?,
    })
}

async fn campaigns(
    pool: &sqlx::AnyPool,
    brand: Option<&str>,
    from: i64,
    to: i64,
) -> DomainResult<Vec<CampaignRoi>> {
    let coupons: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(&format!(
        "SELECT k.id, k.funding_brand, CAST(COUNT(DISTINCT c.member_id) AS BIGINT),
                CAST(COALESCE(SUM(CASE WHEN c.status = 'redeemed' THEN 1 ELSE 0 END), 0) AS BIGINT),
                CAST(COALESCE(SUM(CASE WHEN c.status = 'redeemed'
                    THEN COALESCE(c.discount_cents, 0) ELSE 0 END), 0) AS BIGINT)
         FROM campaigns k LEFT JOIN coupons c
           ON c.source_kind = 'campaign' AND c.source_id = k.id
         WHERE ($1 IS NULL OR k.funding_brand = $1)
         GROUP BY k.id, k.funding_brand, k.created_at
         ORDER BY k.created_at DESC, k.id LIMIT {MAX_CAMPAIGNS}"
    ))
    .bind(brand.map(str::to_owned))
    .fetch_all(pool)
    .await?;
    let sales: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT c.source_id, CAST(COUNT(*) AS BIGINT),
                CAST(COALESCE(SUM(p.total_cents), 0) AS BIGINT)
         FROM coupons c JOIN purchases p
           ON p.member_id = c.member_id AND p.created_at >= c.issued_at
         WHERE c.source_kind = 'campaign' AND p.created_at >= $1 AND p.created_at < $2
           AND ($3 IS NULL OR p.brand_id = $3)
         GROUP BY c.source_id",
    )
    .bind(from)
    .bind(to)
    .bind(brand.map(str::to_owned))
    .fetch_all(pool)
    .await?;
    Ok(coupons
        .into_iter()
        .map(
            |(campaign_id, funding_brand, recipients, redeemed, spent)| {
                let s = sales.iter().find(|row| row.0 == campaign_id);
                let sales_cents = s.map_or(0, |row| row.2);
                CampaignRoi {
                    roi_bp: (spent > 0).then(|| ratio_bp(sales_cents - spent, spent)),
                    campaign_id,
                    funding_brand,
                    recipients,
                    redeemed,
                    coupon_value_spent_cents: spent,
                    orders: s.map_or(0, |row| row.1),
                    sales_cents,
                }
            },
        )
        .collect())
}

async fn journeys(
    pool: &sqlx::AnyPool,
    brand: Option<&str>,
    from: i64,
    to: i64,
) -> DomainResult<Vec<JourneyRoi>> {
    let brand = brand.map(str::to_owned);
    let costs: Vec<(String, Option<String>, i64, i64, i64)> = sqlx::query_as(&format!(
        "SELECT j.id, j.owner_brand,
            CAST((SELECT COUNT(DISTINCT t.member_id) FROM journey_touches t
                  WHERE t.journey_id = j.id) AS BIGINT),
            CAST((SELECT COALESCE(SUM(COALESCE(c.discount_cents, 0)), 0)
                  FROM journey_touches t JOIN coupons c
                    ON c.source_kind = 'journey' AND c.source_id = t.id
                  WHERE t.journey_id = j.id AND c.status = 'redeemed') AS BIGINT),
            CAST((SELECT COALESCE(SUM(e.value_cents), 0)
                  FROM journey_touches t JOIN settle_events e
                    ON e.subject_kind = 'journey' AND e.subject_id = t.id
                  WHERE t.journey_id = j.id AND e.kind = 'points-issued') AS BIGINT)
         FROM journeys j WHERE ($1 IS NULL OR j.owner_brand = $1)
         ORDER BY j.created_at DESC, j.id LIMIT {MAX_JOURNEYS}"
    ))
    .bind(brand.clone())
    .fetch_all(pool)
    .await?;
    let sales: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT f.journey_id, CAST(COUNT(*) AS BIGINT),
                CAST(COALESCE(SUM(p.total_cents), 0) AS BIGINT)
         FROM (SELECT journey_id, member_id, MIN(created_at) AS first_at FROM journey_touches
               GROUP BY journey_id, member_id) f
         JOIN purchases p ON p.member_id = f.member_id AND p.created_at >= f.first_at
         WHERE p.created_at >= $1 AND p.created_at < $2 AND ($3 IS NULL OR p.brand_id = $3)
         GROUP BY f.journey_id",
    )
    .bind(from)
    .bind(to)
    .bind(brand)
    .fetch_all(pool)
    .await?;
    Ok(costs
        .into_iter()
        .map(
            |(journey_id, owner_brand, members_touched, coupons, points)| {
                let s = sales.iter().find(|row| row.0 == journey_id);
                let sales_cents = s.map_or(0, |row| row.2);
                let cost = coupons + points;
                JourneyRoi {
                    roi_bp: (cost > 0).then(|| ratio_bp(sales_cents - cost, cost)),
                    journey_id,
                    owner_brand,
                    members_touched,
                    coupon_value_spent_cents: coupons,
                    points_value_granted_cents: points,
                    orders: s.map_or(0, |row| row.1),
                    sales_cents,
                }
            },
        )
        .collect())
}

async fn perks(
    pool: &sqlx::AnyPool,
    brand: Option<&str>,
    from: i64,
    to: i64,
) -> DomainResult<Vec<PerkRedemptions>> {
    let rows: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(&format!(
        "SELECT funding_brand, honouring_brand, CAST(COUNT(*) AS BIGINT),
                CAST(COALESCE(SUM(points), 0) AS BIGINT),
                CAST(COALESCE(SUM(value_cents), 0) AS BIGINT)
         FROM settle_events
         WHERE kind = 'perk-redeemed' AND occurred_at >= $1 AND occurred_at < $2
           AND ($3 IS NULL OR funding_brand = $3 OR honouring_brand = $3)
         GROUP BY funding_brand, honouring_brand
         ORDER BY funding_brand, honouring_brand LIMIT {MAX_PERK_PAIRS}"
    ))
    .bind(from)
    .bind(to)
    .bind(brand.map(str::to_owned))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(funding_brand, honouring_brand, redemptions, points, value_cents)| PerkRedemptions {
                funding_brand,
                honouring_brand,
                redemptions,
                points,
                value_cents,
            },
        )
        .collect())
}

/// The columns of the CSV series, in order.
pub const CSV_HEADER: &str = "period,start_ms,orders,sales_cents,average_order_cents,\
    active_members,points_issued,points_redeemed,points_expired";

/// The series as CSV: [`CSV_HEADER`], then one line per bucket (every field is a date or an
/// integer, so nothing needs quoting).
pub fn series_csv(kpis: &Kpis) -> String {
    let mut out = String::with_capacity(64 * (kpis.series.len() + 1));
    out.push_str(CSV_HEADER);
    out.push('\n');
    for b in &kpis.series {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            b.period,
            b.start_ms,
            b.orders,
            b.sales_cents,
            b.average_order_cents,
            b.active_members,
            b.points_issued,
            b.points_redeemed,
            b.points_expired
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(from: &str, to: &str, granularity: Granularity) -> KpiRange {
        let from_day = epoch_day(parse_date("from", from).expect("from"));
        let to_day = epoch_day(parse_date("to", to).expect("to"));
        KpiRange {
            from: from.into(),
            to: to.into(),
            from_ms: from_day * DAY_MS,
            to_ms: (to_day + 1) * DAY_MS,
            granularity,
        }
    }

    #[test]
    fn dates_parse_strictly() {
        assert!(parse_date("from", "2026-02-29").is_err());
        assert!(parse_date("from", "2026-1-05").is_err());
        assert!(parse_date("from", "yesterday").is_err());
        let day = epoch_day(parse_date("from", "2026-03-02").expect("date"));
        assert_eq!(date_of_epoch_day(day), "2026-03-02");
        assert_eq!(
            epoch_day(parse_date("from", "1970-01-02").expect("date")),
            1
        );
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        // 2026-03-04 is a Wednesday; the next Mondays are 03-09 and 03-16.
        let weeks =
            bucket_days(&r("2026-03-04", "2026-03-17", Granularity::Week), 0).expect("weeks");
        let labels: Vec<String> = weeks.iter().map(|d| date_of_epoch_day(*d)).collect();
        assert_eq!(labels, ["2026-03-04", "2026-03-09", "2026-03-16"]);
        let months =
            bucket_days(&r("2026-01-15", "2026-03-01", Granularity::Month), 0).expect("months");
        let labels: Vec<String> = months.iter().map(|d| date_of_epoch_day(*d)).collect();
        assert_eq!(labels, ["2026-01-15", "2026-02-01", "2026-03-01"]);
        let days = bucket_days(&r("2026-03-01", "2026-03-03", Granularity::Day), 0).expect("days");
        assert_eq!(days.len(), 3);
    }
}
