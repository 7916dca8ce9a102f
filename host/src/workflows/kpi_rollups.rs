//! Daily roll-ups of the key figures, so that a year of `GET /kpis` on millions of purchases
//! reads a few hundred rows instead of every purchase and posting.
//!
//! The roll-up job closes each local day (days since 1970 at `[points] utc_offset_minutes`)
//! once it ended more than [`ROLLUP_GRACE_MS`] ago, in a transaction of its own: one row per
//! brand that had anything that day and one for the coalition (brand `""`), with orders,
//! sales, points issued, redeemed and expired (defined as in [`crate::workflows::kpis`]), and
//! two sets of members — the day's buyers and those who bought twice or more — as compressed
//! bitmaps (roaring) of dense member numbers the job assigns. Every distinct count the page
//! shows (active members per bucket, buyers and repeat buyers of a range, active 30/90, a
//! brand's members) is a union or an intersection of those sets: exact, not an estimate.
//!
//! Days the job has not closed yet are read from the purchases and postings themselves into
//! the same per-day [`DayRecord`]s, so a figure never depends on whether the job has run —
//! only its speed does. That holds because what a day's row sums never changes after the day:
//! purchases and postings are written at the server's clock and never rewritten (a refund is
//! a new posting; a purchase's amount, brand, member and time stay), and the grace is far
//! longer than any write transaction, so nothing commits into a day after it is closed. A new
//! offset starts the roll-up over.

use std::collections::HashMap;

use base64::Engine as _;
use roaring::RoaringBitmap;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::rfm;
use crate::foundation::clock::{local_day, local_day_start_ms, DAY_MS};
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::Store;

/// A day is closed this long after it ends: far longer than any write transaction (a purchase
/// commits within its request's timeout), so no row can still commit into a closed day.
pub const ROLLUP_GRACE_MS: i64 = 15 * 60_000;
/// Most days closed by one pass: a bounded pass (each day is its own transaction, so an
/// interrupted pass resumes where it stopped), long enough for a year's backlog at once.
pub const MAX_DAYS_PER_PASS: i64 = 400;
/// Closed days' rows read per query with their member sets: bounds the memory of a long
/// range (a coalition day's sets are up to ~256 KiB for a million members).
const LOAD_CHUNK_ROWS: i64 = 31;
/// Closed days' rows read per query without their sets (a few numbers each).
const LOAD_CHUNK_ROWS_WITHOUT_SETS: i64 = 2_000;
/// The coalition's rows.
pub const COALITION: &str = "";

/// What one local day adds to the figures of a scope (a brand, or the coalition).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DayRecord {
    /// Local days since 1970.
    pub day: i64,
    pub orders: i64,
    pub sales_cents: i64,
    pub points_issued: i64,
    pub points_redeemed: i64,
    pub points_expired: i64,
    /// Members with a purchase that day (empty when loaded without buyers).
    pub buyers: RoaringBitmap,
    /// Members with two or more purchases that day.
    pub repeat_buyers: RoaringBitmap,
}

/// What a pass of the roll-up job did.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct RollupReport {
    /// Days closed by this pass.
    pub days_closed: i64,
    /// Every local day before this one is rolled up (days since 1970), if any is.
    pub closed_before_day: Option<i64>,
    /// Rows written (a brand's or the coalition's day).
    pub rows: i64,
    /// Whether days were left for the next pass ([`MAX_DAYS_PER_PASS`]).
    pub more: bool,
}

fn encode(set: &RoaringBitmap) -> DomainResult<String> {
    let mut bytes = Vec::with_capacity(set.serialized_size());
    set.serialize_into(&mut bytes)
        .map_err(|e| DomainError::internal(anyhow::anyhow!("buyer set: {e}")))?;
    Ok(base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes))
}

fn decode(text: &str) -> DomainResult<RoaringBitmap> {
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text)
        .map_err(|e| DomainError::internal(anyhow::anyhow!("stored buyer set: {e}")))?;
    RoaringBitmap::deserialize_from(&bytes[..])
        .map_err(|e| DomainError::internal(anyhow::anyhow!("stored buyer set: {e}")))
}

fn member_no(no: i64) -> DomainResult<u32> {
    u32::try_from(no).map_err(|_| DomainError::internal(anyhow::anyhow!("member number {no}")))
}

/// The first day not rolled up at `offset_minutes`, or `None` when nothing is (no state, or a
/// state for another offset).
pub async fn closed_before(pool: &sqlx::AnyPool, offset_minutes: i64) -> DomainResult<Option<i64>> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT offset_minutes, closed_before_day FROM kpi_rollup_state WHERE id = 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(offset, day)| (offset == offset_minutes).then_some(day)))
}

/// One pass of the roll-up job: closes the days that ended more than [`ROLLUP_GRACE_MS`]
/// before `now_ms`, oldest first, at most [`MAX_DAYS_PER_PASS`] and until `deadline`; then,
/// if it closed any (or there is no snapshot), retakes the RFM snapshot over the purchases of
/// the closed days ([`rfm::refresh_snapshot`]). Safe to run on several nodes at once: each
/// day's transaction advances the state only from the day it started at.
pub async fn run(
    store: &Store,
    offset_minutes: i64,
    now_ms: i64,
    deadline: Option<std::time::Instant>,
) -> DomainResult<RollupReport> {
    let closable = local_day(now_ms - ROLLUP_GRACE_MS, offset_minutes);
    let mut report = RollupReport::default();
    let mut next = match closed_before(store.read(), offset_minutes).await? {
        Some(day) => day,
        None => start_over(store, offset_minutes, closable, now_ms).await?,
    };
    while next < closable {
        let late = deadline.is_some_and(|d| std::time::Instant::now() >= d);
        if report.days_closed == MAX_DAYS_PER_PASS || late {
            report.more = true;
            break;
        }
        match close_day(store, offset_minutes, next, now_ms).await? {
            Some(rows) => report.rows += rows,
            // Another node closed it: continue from where the state now stands.
            None => match closed_before(store.read(), offset_minutes).await? {
                Some(day) => {
                    next = day;
                    continue;
                }
                None => break,
            },
        }
        report.days_closed += 1;
        next += 1;
    }
    report.closed_before_day = Some(next);
    // Retaken when days closed, or when there is none (a new programme, or one dropped by an
    // upgrade that changed its shape).
    if report.days_closed > 0 || rfm::snapshot_as_of(store.read()).await?.is_none() {
        let mut tx = store.begin().await?;
        rfm::refresh_snapshot(&mut tx, local_day_start_ms(next, offset_minutes), now_ms).await?;
        tx.commit().await?;
    }
    Ok(report)
}

/// No state, or one for another offset: forget the rows and start from the first day with a
/// purchase or a points posting (or from `closable` on an empty programme).
async fn start_over(
    store: &Store,
    offset_minutes: i64,
    closable: i64,
    now_ms: i64,
) -> DomainResult<i64> {
    let mut tx = store.begin().await?;
    let (first_purchase,): (Option<i64>,) =
        sqlx::query_as("SELECT CAST(MIN(created_at) AS BIGINT) FROM purchases")
            .fetch_one(&mut *tx)
            .await?;
    let (first_posting,): (Option<i64>,) = sqlx::query_as(
        "SELECT CAST(MIN(created_at) AS BIGINT) FROM ledger_postings
         WHERE account IN ('issuance', 'adjustment', 'redemption', 'expiry')",
    )
    .fetch_one(&mut *tx)
    .await?;
    let start = [first_purchase, first_posting]
        .into_iter()
        .flatten()
        .min()
        .map_or(closable, |ms| local_day(ms, offset_minutes).min(closable));
    sqlx::query("DELETE FROM kpi_days")
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM kpi_rollup_state")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO kpi_rollup_state (id, offset_minutes, closed_before_day, updated_at)
         VALUES (1, $1, $2, $3)",
    )
    .bind(offset_minutes)
    .bind(start)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(start)
}

/// Closes `day`: numbers its new buyers, writes its rows and advances the state, in one
/// transaction. `None` when the state had moved on (another node closed the day).
async fn close_day(
    store: &Store,
    offset_minutes: i64,
    day: i64,
    now_ms: i64,
) -> DomainResult<Option<i64>> {
    let (start, end) = (
        local_day_start_ms(day, offset_minutes),
        local_day_start_ms(day + 1, offset_minutes),
    );
    let mut tx = store.begin().await?;
    // Claim the day first: a concurrent pass blocks here (or fails its guard) instead of
    // numbering the same members twice.
    let claimed = sqlx::query(
        "UPDATE kpi_rollup_state SET closed_before_day = $1, updated_at = $2
         WHERE id = 1 AND offset_minutes = $3 AND closed_before_day = $4",
    )
    .bind(day + 1)
    .bind(now_ms)
    .bind(offset_minutes)
    .bind(day)
    .execute(&mut *tx)
    .await?;
    if claimed.rows_affected() != 1 {
        return Ok(None);
    }
    let (base,): (i64,) =
        sqlx::query_as("SELECT CAST(COALESCE(MAX(no), 0) AS BIGINT) FROM kpi_member_numbers")
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query(
        "INSERT INTO kpi_member_numbers (member_id, no)
         SELECT member_id, $3 + ROW_NUMBER() OVER (ORDER BY member_id)
         FROM (SELECT DISTINCT p.member_id FROM purchases p
               WHERE p.created_at >= $1 AND p.created_at < $2
                 AND NOT EXISTS (SELECT 1 FROM kpi_member_numbers n
                                 WHERE n.member_id = p.member_id)) m",
    )
    .bind(start)
    .bind(end)
    .bind(base)
    .execute(&mut *tx)
    .await?;
    let bought: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT p.brand_id, n.no, CAST(COUNT(*) AS BIGINT),
                CAST(COALESCE(SUM(p.total_cents), 0) AS BIGINT)
         FROM purchases p JOIN kpi_member_numbers n ON n.member_id = p.member_id
         WHERE p.created_at >= $1 AND p.created_at < $2
         GROUP BY p.brand_id, n.no",
    )
    .bind(start)
    .bind(end)
    .fetch_all(&mut *tx)
    .await?;
    let points: Vec<(Option<String>, i64, i64, i64)> = sqlx::query_as(&format!(
        "SELECT brand_id, {POINT_SUMS} FROM ledger_postings
         WHERE account IN ('issuance', 'adjustment', 'redemption', 'expiry')
           AND created_at >= $1 AND created_at < $2
         GROUP BY brand_id"
    ))
    .bind(start)
    .bind(end)
    .fetch_all(&mut *tx)
    .await?;

    let mut records: HashMap<String, DayRecord> = HashMap::new();
    let mut per_member: HashMap<u32, i64> = HashMap::new();
    for (brand, no, orders, sales) in bought {
        let no = member_no(no)?;
        *per_member.entry(no).or_default() += orders;
        for scope in [brand.as_str(), COALITION] {
            let r = records.entry(scope.to_owned()).or_default();
            r.sales_cents += sales;
            r.orders += orders;
            if scope != COALITION {
                r.buyers.insert(no);
                if orders >= 2 {
                    r.repeat_buyers.insert(no);
                }
            }
        }
    }
    if let Some(all) = records.get_mut(COALITION) {
        for (&no, &orders) in &per_member {
            all.buyers.insert(no);
            if orders >= 2 {
                all.repeat_buyers.insert(no);
            }
        }
    }
    for (brand, issued, redeemed, expired) in points {
        let scopes = match &brand {
            Some(b) => vec![b.as_str(), COALITION],
            None => vec![COALITION],
        };
        for scope in scopes {
            let r = records.entry(scope.to_owned()).or_default();
            r.points_issued += issued;
            r.points_redeemed += redeemed;
            r.points_expired += expired;
        }
    }
    sqlx::query("DELETE FROM kpi_days WHERE day = $1")
        .bind(day)
        .execute(&mut *tx)
        .await?;
    let rows = records.len() as i64;
    for (brand, r) in records {
        sqlx::query(
            "INSERT INTO kpi_days (brand_id, day, orders, sales_cents, points_issued,
                points_redeemed, points_expired, buyers, repeat_buyers)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&brand)
        .bind(day)
        .bind(r.orders)
        .bind(r.sales_cents)
        .bind(r.points_issued)
        .bind(r.points_redeemed)
        .bind(r.points_expired)
        .bind(encode(&r.buyers)?)
        .bind(encode(&r.repeat_buyers)?)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Some(rows))
}

/// Points issued, redeemed and expired of a set of postings, as the KPI page defines them.
const POINT_SUMS: &str =
    "CAST(COALESCE(SUM(CASE WHEN account IN ('issuance', 'adjustment') THEN -amount
          ELSE 0 END), 0) AS BIGINT),
     CAST(COALESCE(SUM(CASE WHEN account = 'redemption' THEN amount ELSE 0 END), 0) AS BIGINT),
     CAST(COALESCE(SUM(CASE WHEN account = 'expiry' THEN amount ELSE 0 END), 0) AS BIGINT)";

/// A `kpi_days` row: day, orders, sales, points issued, redeemed and expired, the two sets.
type StoredDay = (i64, i64, i64, i64, i64, i64, String, String);

/// Reads per-day records for one page: the roll-up state is read once, so every call of the
/// page splits closed and open days at the same day, and members the job has not numbered
/// yet keep one stand-in number across the calls (counting down from `u32::MAX`, which the
/// job's numbers, counting up from 1, never reach).
pub struct DayReader<'a> {
    pool: &'a sqlx::AnyPool,
    offset_minutes: i64,
    /// The first day not rolled up, if any is.
    closed: Option<i64>,
    unnumbered: HashMap<String, u32>,
}

impl<'a> DayReader<'a> {
    /// A reader at `offset_minutes`, with the roll-up state as it is now.
    pub async fn new(pool: &'a sqlx::AnyPool, offset_minutes: i64) -> DomainResult<Self> {
        Ok(Self {
            pool,
            offset_minutes,
            closed: closed_before(pool, offset_minutes).await?,
            unnumbered: HashMap::new(),
        })
    }

    /// Calls `each` with the records of the local days `from_day..to_day` (end excluded) that
    /// had anything, oldest first, for `brand` (or the coalition): closed days from their rows,
    /// the others from the purchases and postings. Without `buyers`, the records' sets are
    /// empty and cost nothing to read.
    pub async fn each_day(
        &mut self,
        brand: Option<&str>,
        from_day: i64,
        to_day: i64,
        buyers: bool,
        mut each: impl FnMut(DayRecord),
    ) -> DomainResult<()> {
        let closed = self.closed.unwrap_or(from_day);
        let scope = brand.unwrap_or(COALITION);
        let until = to_day.min(closed);
        let (sets, chunk) = if buyers {
            ("buyers, repeat_buyers", LOAD_CHUNK_ROWS)
        } else {
            ("'', ''", LOAD_CHUNK_ROWS_WITHOUT_SETS)
        };
        let set = |text: &str| {
            if buyers {
                decode(text)
            } else {
                Ok(RoaringBitmap::new())
            }
        };
        let mut day = from_day;
        while day < until {
            let rows: Vec<StoredDay> = sqlx::query_as(&format!(
                "SELECT day, orders, sales_cents, points_issued, points_redeemed, points_expired,
                        {sets}
                 FROM kpi_days WHERE brand_id = $1 AND day >= $2 AND day < $3
                 ORDER BY day LIMIT {chunk}"
            ))
            .bind(scope)
            .bind(day)
            .bind(until)
            .fetch_all(self.pool)
            .await?;
            day = match rows.last() {
                Some(last) if rows.len() as i64 == chunk => last.0 + 1,
                _ => until,
            };
            for (d, orders, sales_cents, issued, redeemed, expired, once, twice) in rows {
                each(DayRecord {
                    day: d,
                    orders,
                    sales_cents,
                    points_issued: issued,
                    points_redeemed: redeemed,
                    points_expired: expired,
                    buyers: set(&once)?,
                    repeat_buyers: set(&twice)?,
                });
            }
        }
        let open_from = from_day.max(closed);
        if open_from < to_day {
            for record in self.open_days(brand, open_from, to_day, buyers).await? {
                each(record);
            }
        }
        Ok(())
    }

    /// The records of days not rolled up, from the purchases and postings.
    async fn open_days(
        &mut self,
        brand: Option<&str>,
        from_day: i64,
        to_day: i64,
        buyers: bool,
    ) -> DomainResult<Vec<DayRecord>> {
        let (pool, offset_minutes) = (self.pool, self.offset_minutes);
        let (start, end) = (
            local_day_start_ms(from_day, offset_minutes),
            local_day_start_ms(to_day, offset_minutes),
        );
        let offset_ms = offset_minutes * 60_000;
        let day_sql = format!("CAST((created_at + {offset_ms}) / {DAY_MS} AS BIGINT)");
        let mut records: std::collections::BTreeMap<i64, DayRecord> = Default::default();
        if buyers {
            let rows: Vec<(i64, String, Option<i64>, i64, i64)> = sqlx::query_as(&format!(
                "SELECT d, member_id, no, CAST(COUNT(*) AS BIGINT),
                    CAST(COALESCE(SUM(total_cents), 0) AS BIGINT)
             FROM (SELECT {} AS d, p.member_id, n.no, p.total_cents
                   FROM purchases p LEFT JOIN kpi_member_numbers n ON n.member_id = p.member_id
                   WHERE p.created_at >= $1 AND p.created_at < $2
                     AND ($3 IS NULL OR p.brand_id = $3)) t
             GROUP BY d, member_id, no",
                day_sql.replace("created_at", "p.created_at")
            ))
            .bind(start)
            .bind(end)
            .bind(brand)
            .fetch_all(pool)
            .await?;
            for (d, member, no, orders, sales) in rows {
                let no = match no {
                    Some(no) => member_no(no)?,
                    None => {
                        let next = u32::MAX - self.unnumbered.len() as u32;
                        *self.unnumbered.entry(member).or_insert(next)
                    }
                };
                let r = records.entry(d).or_default();
                r.day = d;
                r.orders += orders;
                r.sales_cents += sales;
                r.buyers.insert(no);
                if orders >= 2 {
                    r.repeat_buyers.insert(no);
                }
            }
        } else {
            let rows: Vec<(i64, i64, i64)> = sqlx::query_as(&format!(
                "SELECT d, CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM(total_cents), 0) AS BIGINT)
             FROM (SELECT {day_sql} AS d, total_cents FROM purchases
                   WHERE created_at >= $1 AND created_at < $2
                     AND ($3 IS NULL OR brand_id = $3)) t
             GROUP BY d"
            ))
            .bind(start)
            .bind(end)
            .bind(brand)
            .fetch_all(pool)
            .await?;
            for (d, orders, sales) in rows {
                let r = records.entry(d).or_default();
                r.day = d;
                r.orders = orders;
                r.sales_cents = sales;
            }
        }
        let points: Vec<(i64, i64, i64, i64)> = sqlx::query_as(&format!(
            "SELECT d, {POINT_SUMS}
         FROM (SELECT {day_sql} AS d, account, amount FROM ledger_postings
               WHERE account IN ('issuance', 'adjustment', 'redemption', 'expiry')
                 AND created_at >= $1 AND created_at < $2 AND ($3 IS NULL OR brand_id = $3)) t
         GROUP BY d"
        ))
        .bind(start)
        .bind(end)
        .bind(brand)
        .fetch_all(pool)
        .await?;
        for (d, issued, redeemed, expired) in points {
            let r = records.entry(d).or_default();
            r.day = d;
            r.points_issued = issued;
            r.points_redeemed = redeemed;
            r.points_expired = expired;
        }
        Ok(records.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buyer_sets_round_trip_through_text() -> DomainResult<()> {
        let mut set = RoaringBitmap::new();
        set.extend([1u32, 2, 70_000, u32::MAX - 3]);
        assert_eq!(decode(&encode(&set)?)?, set);
        assert_eq!(
            decode(&encode(&RoaringBitmap::new())?)?,
            RoaringBitmap::new()
        );
        assert!(decode("not base64!").is_err());
        Ok(())
    }

    #[test]
    fn local_days_follow_the_offset() {
        // 2026-03-02 00:00 at UTC+8 is 2026-03-01 16:00 UTC.
        let midnight = 1_772_409_600_000 - 8 * 3_600_000;
        assert_eq!(local_day(midnight, 480), 20_514);
        assert_eq!(local_day(midnight - 1, 480), 20_513);
        assert_eq!(local_day_start_ms(20_514, 480), midnight);
    }
}
