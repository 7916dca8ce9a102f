//! RFM segments: each member who has bought scores 1..=5 on recency (the last purchase),
//! frequency (purchases) and monetary value (spend, cents), by quintile — 5 is the most
//! recent, most frequent, highest spending fifth. Computed in SQL with `NTILE(5)` window
//! functions (SQLite ≥ 3.25 and PostgreSQL), over every purchase to date (for a brand: its
//! own purchases). Ties are broken by member id, so equal members may straddle a quintile
//! boundary but the scores are deterministic. Members who never bought have no score.
//!
//! Campaigns (and journeys, which reuse the campaign segment) target a score range with
//! [`RfmRange`] (see [`crate::domain::campaigns::Segment`]).

use serde::{Deserialize, Serialize};
use sqlx::AnyPool;
use utoipa::ToSchema;

use crate::foundation::error::{DomainError, DomainResult};

/// Most members one page of scores lists.
pub const MAX_PAGE: i64 = 500;
/// Default page of scores.
pub const DEFAULT_PAGE: i64 = 100;

/// A member's three figures over a group of their purchases, as SQL select columns: the last
/// purchase, the purchases and the spend — what recency, frequency and monetary rank.
const MEMBER_FIGURES: &str = "CAST(MAX(created_at) AS BIGINT) AS last_at,
    CAST(COUNT(*) AS BIGINT) AS orders,
    CAST(COALESCE(SUM(total_cents), 0) AS BIGINT) AS spend_cents";

/// Each score and the figure it ranks (by that figure, then member id).
const DIMENSIONS: [(&str, &str); 3] = [("r", "last_at"), ("f", "orders"), ("m", "spend_cents")];

/// The per-member scores as a SQL subquery with columns `member_id, last_at, orders,
/// spend_cents, r, f, m`, over the purchases `purchase_filter` selects (a `WHERE` clause or
/// nothing; it may use bound parameters).
pub fn scores_sql(purchase_filter: &str) -> String {
    format!(
        "SELECT member_id, last_at, orders, spend_cents,
            CAST(NTILE(5) OVER (ORDER BY last_at, member_id) AS BIGINT) AS r,
            CAST(NTILE(5) OVER (ORDER BY orders, member_id) AS BIGINT) AS f,
            CAST(NTILE(5) OVER (ORDER BY spend_cents, member_id) AS BIGINT) AS m
         FROM (SELECT member_id, {MEMBER_FIGURES}
               FROM purchases {purchase_filter} GROUP BY member_id) per_member"
    )
}

/// The same scores per brand, as a SQL subquery with columns `brand_id, member_id, last_at,
/// orders, spend_cents, r, f, m`: each brand's members ranked among that brand's buyers only.
fn scores_by_brand_sql(purchase_filter: &str) -> String {
    format!(
        "SELECT brand_id, member_id, last_at, orders, spend_cents,
            CAST(NTILE(5) OVER (PARTITION BY brand_id ORDER BY last_at, member_id) AS BIGINT)
                AS r,
            CAST(NTILE(5) OVER (PARTITION BY brand_id ORDER BY orders, member_id) AS BIGINT)
                AS f,
            CAST(NTILE(5) OVER (PARTITION BY brand_id ORDER BY spend_cents, member_id)
                AS BIGINT) AS m
         FROM (SELECT brand_id, member_id, {MEMBER_FIGURES}
               FROM purchases {purchase_filter} GROUP BY brand_id, member_id) per_member"
    )
}

/// Recomputes the snapshot of the distribution — coalition-wide and per brand — over the
/// purchases before `as_of_ms`, replacing the previous one: the members per (R, F, M) cell and
/// where each quintile starts. The KPI roll-up job calls it whenever it closes days, so the
/// distribution page reads at most 125 rows a scope, and a page of members only its members'
/// purchases, instead of ranking every buyer. Each scope is ranked once, into a temporary
/// table both tables are filled from.
pub async fn refresh_snapshot(
    conn: &mut sqlx::AnyConnection,
    as_of_ms: i64,
    now_ms: i64,
) -> DomainResult<()> {
    for table in [
        "rfm_snapshot_cells",
        "rfm_snapshot_bounds",
        "rfm_snapshot_state",
    ] {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&mut *conn)
            .await?;
    }
    for (scope, scores) in [
        ("'' AS brand_id", scores_sql("WHERE created_at < $1")),
        ("brand_id", scores_by_brand_sql("WHERE created_at < $1")),
    ] {
        // Not kept as prepared statements: the table they name is a new one each time.
        sqlx::query(&format!(
            "CREATE TEMPORARY TABLE rfm_scored AS
             SELECT {scope}, member_id, last_at, orders, spend_cents, r, f, m
             FROM ({scores}) scored"
        ))
        .bind(as_of_ms)
        .persistent(false)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "INSERT INTO rfm_snapshot_cells (brand_id, r, f, m, members)
             SELECT brand_id, r, f, m, CAST(COUNT(*) AS BIGINT) FROM rfm_scored
             GROUP BY brand_id, r, f, m",
        )
        .persistent(false)
        .execute(&mut *conn)
        .await?;
        sqlx::query(&bounds_sql())
            .persistent(false)
            .execute(&mut *conn)
            .await?;
        sqlx::query("DROP TABLE rfm_scored")
            .persistent(false)
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("INSERT INTO rfm_snapshot_state (id, as_of_ms, computed_at) VALUES (1, $1, $2)")
        .bind(as_of_ms)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Fills `rfm_snapshot_bounds` from the scores in `rfm_scored`: for each brand (or the
/// coalition's ''), dimension and score above 1, the first member in NTILE's order (value,
/// then member id) who got it.
fn bounds_sql() -> String {
    let starts = DIMENSIONS
        .map(|(score, value)| {
            format!(
                "SELECT brand_id, '{score}' AS dimension, {score} AS score, {value} AS value,
                        member_id,
                        ROW_NUMBER() OVER (PARTITION BY brand_id, {score}
                                           ORDER BY {value}, member_id) AS rn
                 FROM rfm_scored"
            )
        })
        .join(" UNION ALL ");
    format!(
        "INSERT INTO rfm_snapshot_bounds (brand_id, dimension, score, value, member_id)
         SELECT brand_id, dimension, score, value, member_id FROM ({starts}) starts
         WHERE rn = 1 AND score > 1"
    )
}

/// When the RFM snapshot was taken (its purchases are those before it), if there is one.
pub async fn snapshot_as_of(pool: &AnyPool) -> DomainResult<Option<i64>> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT as_of_ms FROM rfm_snapshot_state WHERE id = 1")
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(at,)| at))
}

/// A range of RFM scores a campaign targets: each bound 1..=5, omitted = open.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RfmRange {
    /// Lowest recency score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recency_min: Option<i64>,
    /// Highest recency score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recency_max: Option<i64>,
    /// Lowest frequency score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_min: Option<i64>,
    /// Highest frequency score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_max: Option<i64>,
    /// Lowest monetary score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monetary_min: Option<i64>,
    /// Highest monetary score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monetary_max: Option<i64>,
}

impl RfmRange {
    fn bounds(&self) -> [(&'static str, Option<i64>, Option<i64>); 3] {
        [
            ("r", self.recency_min, self.recency_max),
            ("f", self.frequency_min, self.frequency_max),
            ("m", self.monetary_min, self.monetary_max),
        ]
    }

    /// 400 `invalid_rfm_range` unless every bound is 1..=5 and no minimum exceeds its maximum.
    pub fn validate(&self) -> DomainResult<()> {
        for (name, min, max) in self.bounds() {
            let lo = min.unwrap_or(1);
            let hi = max.unwrap_or(5);
            if !(1..=5).contains(&lo) || !(1..=5).contains(&hi) || lo > hi {
                return Err(DomainError::bad_request(
                    "invalid_rfm_range",
                    format!("rfm {name}: scores are 1..=5 and the minimum is at most the maximum"),
                ));
            }
        }
        Ok(())
    }

    /// The condition (on members `m`) that a member's coalition-wide scores are in range.
    /// Only validated integers are spliced in.
    pub fn member_condition(&self) -> String {
        let mut cond = String::from("1 = 1");
        for (name, min, max) in self.bounds() {
            cond.push_str(&format!(
                " AND s.{name} BETWEEN {} AND {}",
                min.unwrap_or(1).clamp(1, 5),
                max.unwrap_or(5).clamp(1, 5)
            ));
        }
        format!(
            "m.id IN (SELECT s.member_id FROM ({}) s WHERE {cond})",
            scores_sql("")
        )
    }
}

/// Members per score of one dimension: `counts[i]` have score `i + 1`.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct RfmDistribution {
    /// The brand the scores are limited to; absent = the coalition.
    pub brand_id: Option<String>,
    /// The distribution's (and the page's) purchases are those before this instant (Unix ms):
    /// the snapshot the KPI roll-up job takes when it closes days. Absent: ranked live over
    /// every purchase to date (no snapshot yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of_ms: Option<i64>,
    /// Members scored (those who bought).
    pub members: i64,
    /// Members per recency score 1..=5.
    pub recency: [i64; 5],
    /// Members per frequency score 1..=5.
    pub frequency: [i64; 5],
    /// Members per monetary score 1..=5.
    pub monetary: [i64; 5],
    /// Members per (R, F, M) combination that occurs.
    pub cells: Vec<RfmCell>,
    /// On request (`members=true`): one page of members with their scores, by member id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<Vec<RfmScore>>,
    /// The member id to pass as `after` for the next page, if there may be one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// Members with one (R, F, M) combination.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RfmCell {
    /// Recency score.
    pub r: i64,
    /// Frequency score.
    pub f: i64,
    /// Monetary score.
    pub m: i64,
    /// Members.
    pub members: i64,
}

/// One member's scores.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RfmScore {
    /// The member.
    pub member_id: String,
    /// Last purchase, Unix ms.
    pub last_purchase_ms: i64,
    /// Purchases.
    pub orders: i64,
    /// Spend, cents.
    pub spend_cents: i64,
    /// Recency score 1..=5.
    pub r: i64,
    /// Frequency score 1..=5.
    pub f: i64,
    /// Monetary score 1..=5.
    pub m: i64,
}

/// The distribution of scores (and a page of members on request), for `brand` or the
/// coalition.
pub async fn distribution(
    pool: &AnyPool,
    brand: Option<&str>,
    page: Option<(Option<&str>, i64)>,
) -> DomainResult<RfmDistribution> {
    let filter = "WHERE ($1 IS NULL OR brand_id = $1)";
    let snapshot = snapshot_as_of(pool).await?;
    let cells: Vec<(i64, i64, i64, i64)> = match snapshot {
        Some(_) => {
            sqlx::query_as(
                "SELECT r, f, m, members FROM rfm_snapshot_cells WHERE brand_id = $1
                 ORDER BY r, f, m",
            )
            .bind(brand.unwrap_or(""))
            .fetch_all(pool)
            .await?
        }
        None => {
            sqlx::query_as(&format!(
                "SELECT r, f, m, CAST(COUNT(*) AS BIGINT) FROM ({}) s GROUP BY r, f, m
                 ORDER BY r, f, m",
                scores_sql(filter)
            ))
            .bind(brand.map(str::to_owned))
            .fetch_all(pool)
            .await?
        }
    };
    let mut out = RfmDistribution {
        brand_id: brand.map(str::to_owned),
        as_of_ms: snapshot,
        ..RfmDistribution::default()
    };
    for (r, f, m, n) in cells {
        out.members += n;
        for (counts, score) in [
            (&mut out.recency, r),
            (&mut out.frequency, f),
            (&mut out.monetary, m),
        ] {
            if let Some(slot) = usize::try_from(score - 1)
                .ok()
                .and_then(|i| counts.get_mut(i))
            {
                *slot += n;
            }
        }
        out.cells.push(RfmCell {
            r,
            f,
            m,
            members: n,
        });
    }
    if let Some((after, limit)) = page {
        let limit = limit.clamp(1, MAX_PAGE);
        let rows: Vec<(String, i64, i64, i64, i64, i64, i64)> = match snapshot {
            // The page's members from their own purchases before the snapshot, scored
            // against where the snapshot's quintiles start: reads the page, ranks no one.
            Some(as_of_ms) => {
                let score = |dimension: &str, value: &str| {
                    format!(
                        "CAST(1 + (SELECT COUNT(*) FROM rfm_snapshot_bounds b
                                   WHERE b.brand_id = $4 AND b.dimension = '{dimension}'
                                     AND (b.value < p.{value}
                                          OR (b.value = p.{value}
                                              AND b.member_id <= p.member_id))) AS BIGINT)"
                    )
                };
                sqlx::query_as(&format!(
                    "SELECT p.member_id, p.last_at, p.orders, p.spend_cents, {}
                     FROM (SELECT member_id, {MEMBER_FIGURES}
                           FROM purchases
                           WHERE created_at < $1 AND ($2 IS NULL OR brand_id = $2)
                             AND member_id > $3
                           GROUP BY member_id ORDER BY member_id LIMIT {limit}) p
                     ORDER BY p.member_id",
                    DIMENSIONS
                        .map(|(dimension, value)| score(dimension, value))
                        .join(", "),
                ))
                .bind(as_of_ms)
                .bind(brand.map(str::to_owned))
                .bind(after.unwrap_or(""))
                .bind(brand.unwrap_or(""))
                .fetch_all(pool)
                .await?
            }
            None => {
                sqlx::query_as(&format!(
                    "SELECT member_id, last_at, orders, spend_cents, r, f, m FROM ({}) s
                     WHERE member_id > $2 ORDER BY member_id LIMIT {limit}",
                    scores_sql(filter)
                ))
                .bind(brand.map(str::to_owned))
                .bind(after.unwrap_or(""))
                .fetch_all(pool)
                .await?
            }
        };
        out.next_after = (i64::try_from(rows.len()).unwrap_or(0) == limit)
            .then(|| rows.last().map(|r| r.0.clone()))
            .flatten();
        out.page = Some(
            rows.into_iter()
                .map(
                    |(member_id, last_purchase_ms, orders, spend_cents, r, f, m)| RfmScore {
                        member_id,
                        last_purchase_ms,
                        orders,
                        spend_cents,
                        r,
                        f,
                        m,
                    },
                )
                .collect(),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        assert!(RfmRange::default().validate().is_ok());
        let high = RfmRange {
            recency_min: Some(4),
            ..RfmRange::default()
        };
        assert!(high.validate().is_ok());
        assert!(high.member_condition().contains("s.r BETWEEN 4 AND 5"));
        for bad in [
            RfmRange {
                recency_min: Some(0),
                ..RfmRange::default()
            },
            RfmRange {
                monetary_max: Some(6),
                ..RfmRange::default()
            },
            RfmRange {
                frequency_min: Some(4),
                frequency_max: Some(2),
                ..RfmRange::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
