//! Coupon campaigns: one coupon of a template to each member of a segment (by tier and/or tag),
//! up to a hard cap that holds under any concurrency.
//!
//! # Why the cap cannot be exceeded
//! Each coupon is counted by `UPDATE campaigns SET issued = issued + 1 WHERE id = $1 AND
//! issued < cap` in the transaction that inserts it: the database row, not application memory,
//! decides, so concurrent issue calls on any number of nodes can only ever take the slots that
//! are left (a `CHECK (issued <= cap)` backs the guard). A batch also locks the campaign row
//! before it picks its members, so two concurrent batches never pick the same member and one
//! member never gets two coupons of a campaign (the coupons' unique source key backs that).
//!
//! # Issuing in batches
//! Members are picked in id order, [`ISSUE_BATCH_MEMBERS`] per transaction, so no transaction
//! holds SQLite's single writer (or a PostgreSQL row lock) for long and every batch commits on
//! its own. A call stops when the cap is reached, the segment is exhausted, or its time budget
//! (half the request timeout) runs out; then it answers with `finished: false` and the caller
//! calls again — issuing resumes where it stopped, because members who have a coupon of the
//! campaign are never picked again.

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::for_update;
use crate::foundation::store::{new_id, Backend, Store};

/// Members issued per transaction: keeps each commit short (SQLite has one writer, and
/// concurrent calls queue for the campaign's row lock) while amortising that lock over many
/// coupons.
pub const ISSUE_BATCH_MEMBERS: i64 = 250;
/// Shortest wait for another call's batch on PostgreSQL, ms: less would give up on a lock
/// that is about to be released.
const MIN_LOCK_WAIT_MS: u128 = 100;
/// Internal code of a batch that could not get the campaign's lock in time (never sent: the
/// call then answers `finished: false`).
const LOCK_TIMEOUT_CODE: &str = "campaign_busy";
/// Most tiers in a segment: more than any real ladder has rungs.
pub const MAX_SEGMENT_TIERS: usize = 16;
/// Most tags in a segment: each is one bound parameter of the member query.
pub const MAX_SEGMENT_TAGS: usize = 32;
/// Longest campaign title.
pub const MAX_TITLE_CHARS: usize = 200;
/// Largest cap: ten million coupons is beyond any coalition's member base.
pub const MAX_CAP: i64 = 10_000_000;
/// Coupon source kind of campaign coupons.
pub const SOURCE_KIND: &str = "campaign";

/// Who a campaign targets: active, non-blacklisted members whose tier is one of `tiers` (any
/// tier when empty), who have at least one of `tags` (any tags when empty) and whose RFM
/// scores are within `rfm` (any when absent; see [`crate::domain::rfm`]). At least one of the
/// three must be given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// Tier codes, e.g. `["gold", "platinum"]`.
    #[serde(default)]
    pub tiers: Vec<String>,
    /// Tags, e.g. `["skincare-enthusiast"]` (normalised like member tags).
    #[serde(default)]
    pub tags: Vec<String>,
    /// RFM score ranges (coalition-wide scores at issue time), e.g. `{"recency_min": 4}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rfm: Option<crate::domain::rfm::RfmRange>,
}

/// Body of `POST /campaigns`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    /// Title, 1..=200 characters.
    pub title: String,
    /// The coupon template issued; its funding brand owns the campaign.
    pub template_id: String,
    /// Who gets a coupon.
    pub segment: Segment,
    /// Most coupons the campaign may ever issue, 1..=10,000,000.
    pub cap: i64,
    /// Issuing allowed from, Unix ms.
    #[serde(default)]
    pub starts_at_ms: Option<i64>,
    /// Issuing allowed until (exclusive), Unix ms.
    #[serde(default)]
    pub ends_at_ms: Option<i64>,
}

/// A campaign with its counts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CampaignView {
    /// Id.
    pub id: String,
    /// Title.
    pub title: String,
    /// The coupon template.
    pub template_id: String,
    /// The brand that funds the coupons (the template's).
    pub funding_brand: String,
    /// Who gets a coupon.
    pub segment: Segment,
    /// Hard cap.
    pub cap: i64,
    /// Coupons issued so far.
    pub issued: i64,
    /// `cap - issued`.
    pub remaining: i64,
    /// Members matching the segment now (active, not blacklisted).
    pub matched: i64,
    /// Issuing allowed from, Unix ms.
    pub starts_at_ms: Option<i64>,
    /// Issuing allowed until, Unix ms.
    pub ends_at_ms: Option<i64>,
    /// Unix ms.
    pub created_at_ms: i64,
}

/// What one issue call did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IssueReport {
    /// The campaign.
    pub campaign_id: String,
    /// Coupons this call issued.
    pub issued_now: i64,
    /// Coupons the campaign has issued in all.
    pub issued_total: i64,
    /// The cap.
    pub cap: i64,
    /// Whether the cap is reached.
    pub cap_reached: bool,
    /// Whether issuing is complete (cap reached or every matching member has a coupon);
    /// `false` when the call ran out of time: call again to go on.
    pub finished: bool,
    /// Issuing stopped because the funding brand's coupon budget for this period cannot fund
    /// another coupon (`finished` is then true: calling again this period issues nothing).
    #[serde(default)]
    pub budget_exhausted: bool,
    /// Transactions this call committed.
    pub batches: i64,
}

/// Validates a new campaign's fields (not the template).
pub fn validate(req: &NewCampaign) -> DomainResult<Segment> {
    let title = req.title.trim();
    if title.is_empty()
        || title.chars().count() > MAX_TITLE_CHARS
        || title.chars().any(char::is_control)
    {
        return Err(DomainError::validation(format!(
            "title must be 1..={MAX_TITLE_CHARS} characters without control characters"
        )));
    }
    if !(1..=MAX_CAP).contains(&req.cap) {
        return Err(DomainError::validation(format!(
            "cap must be within 1..={MAX_CAP}"
        )));
    }
    if let (Some(start), Some(end)) = (req.starts_at_ms, req.ends_at_ms) {
        if end <= start {
            return Err(DomainError::validation(
                "ends_at_ms must be after starts_at_ms",
            ));
        }
    }
    if req.segment.tiers.is_empty() && req.segment.tags.is_empty() && req.segment.rfm.is_none() {
        return Err(DomainError::validation(
            "a segment needs at least one tier, tag or RFM range",
        ));
    }
    if let Some(rfm) = &req.segment.rfm {
        rfm.validate()?;
    }
    if req.segment.tiers.len() > MAX_SEGMENT_TIERS || req.segment.tags.len() > MAX_SEGMENT_TAGS {
        return Err(DomainError::validation(format!(
            "a segment has at most {MAX_SEGMENT_TIERS} tiers and {MAX_SEGMENT_TAGS} tags"
        )));
    }
    let mut tags = Vec::with_capacity(req.segment.tags.len());
    for tag in &req.segment.tags {
        tags.push(crate::domain::members::normalize_tag(tag)?);
    }
    tags.sort();
    tags.dedup();
    let mut tiers: Vec<String> = req
        .segment
        .tiers
        .iter()
        .map(|t| t.trim().to_owned())
        .collect();
    tiers.sort();
    tiers.dedup();
    Ok(Segment {
        tiers,
        tags,
        rfm: req.segment.rfm.clone(),
    })
}

/// The `WHERE` condition (on members `m`) of a segment, with its parameters numbered from
/// `first`.
fn segment_sql(segment: &Segment, first: usize) -> (String, Vec<String>) {
    let mut sql = String::from(
        "m.status = 'active' AND NOT EXISTS (SELECT 1 FROM risk_blacklist b \
         WHERE b.kind = 'member' AND b.subject = m.id)",
    );
    let mut binds = Vec::new();
    let mut n = first;
    let mut list = |values: &[String], binds: &mut Vec<String>| {
        let placeholders: Vec<String> = values
            .iter()
            .map(|v| {
                binds.push(v.clone());
                let p = format!("${n}");
                n += 1;
                p
            })
            .collect();
        placeholders.join(", ")
    };
    if !segment.tiers.is_empty() {
        let p = list(&segment.tiers, &mut binds);
        sql.push_str(&format!(" AND m.tier IN ({p})"));
    }
    if !segment.tags.is_empty() {
        let p = list(&segment.tags, &mut binds);
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM member_tags t WHERE t.member_id = m.id AND t.tag IN ({p}))"
        ));
    }
    if let Some(rfm) = &segment.rfm {
        sql.push_str(&format!(" AND {}", rfm.member_condition()));
    }
    (sql, binds)
}

/// Members matching a segment now.
pub async fn count_matching(conn: &mut AnyConnection, segment: &Segment) -> DomainResult<i64> {
    let (cond, binds) = segment_sql(segment, 1);
    let sql = format!("SELECT COUNT(*) FROM members m WHERE {cond}");
    let mut query = sqlx::query_as::<_, (i64,)>(&sql);
    for b in binds {
        query = query.bind(b);
    }
    let (count,) = query.fetch_one(&mut *conn).await?;
    Ok(count)
}

/// Creates a campaign in the caller's transaction; `funding_brand` is the template's.
pub async fn create(
    conn: &mut AnyConnection,
    req: &NewCampaign,
    segment: &Segment,
    funding_brand: &str,
    created_by: &str,
    now_ms: i64,
) -> DomainResult<String> {
    let id = new_id();
    let segment_json = serde_json::to_string(segment).map_err(DomainError::internal)?;
    sqlx::query(
        "INSERT INTO campaigns (id, title, template_id, funding_brand, segment, cap, issued,
            starts_at, ends_at, created_by, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9, $10, $10)",
    )
    .bind(&id)
    .bind(req.title.trim())
    .bind(&req.template_id)
    .bind(funding_brand)
    .bind(segment_json)
    .bind(req.cap)
    .bind(req.starts_at_ms)
    .bind(req.ends_at_ms)
    .bind(created_by)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

/// The funding brand and status of a coupon template (404 if unknown).
pub async fn template_owner(
    conn: &mut AnyConnection,
    template_id: &str,
) -> DomainResult<(String, String)> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT funding_brand, status FROM coupon_templates WHERE id = $1")
            .bind(template_id)
            .fetch_optional(&mut *conn)
            .await?;
    row.ok_or_else(|| DomainError::not_found("coupon template", template_id))
}

type CampaignRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    i64,
);

/// Loads a campaign with its counts (404 if unknown).
pub async fn get(conn: &mut AnyConnection, id: &str) -> DomainResult<CampaignView> {
    let row: Option<CampaignRow> = sqlx::query_as(
        "SELECT id, title, template_id, funding_brand, segment, cap, issued, starts_at, ends_at,
            created_at FROM campaigns WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((
        id,
        title,
        template_id,
        funding_brand,
        segment,
        cap,
        issued,
        starts_at_ms,
        ends_at_ms,
        created_at_ms,
    )) = row
    else {
        return Err(DomainError::not_found("campaign", id));
    };
    let segment: Segment = serde_json::from_str(&segment).map_err(DomainError::internal)?;
    let matched = count_matching(conn, &segment).await?;
    Ok(CampaignView {
        id,
        title,
        template_id,
        funding_brand,
        segment,
        cap,
        issued,
        remaining: cap - issued,
        matched,
        starts_at_ms,
        ends_at_ms,
        created_at_ms,
    })
}

/// The funding brand of a campaign (404 if unknown), for access checks.
pub async fn owner(pool: &sqlx::AnyPool, id: &str) -> DomainResult<String> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT funding_brand FROM campaigns WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    row.map(|(b,)| b)
        .ok_or_else(|| DomainError::not_found("campaign", id))
}

/// Issues coupons to matching members until the cap, the end of the segment or `deadline`
/// (an `Instant`) — whichever comes first. See the module docs.
pub async fn issue(
    store: &Store,
    campaign_id: &str,
    utc_offset_minutes: i64,
    now_ms: i64,
    deadline: std::time::Instant,
) -> DomainResult<IssueReport> {
    let backend = store.backend();
    let mut cursor = String::new();
    let mut report = IssueReport {
        campaign_id: campaign_id.to_owned(),
        issued_now: 0,
        issued_total: 0,
        cap: 0,
        cap_reached: false,
        finished: false,
        batches: 0,
        budget_exhausted: false,
    };
    loop {
        let mut tx = store.begin().await?;
        if backend == Backend::Postgres {
            // Wait for another caller's batch only as long as this call's budget lasts; a
            // call that cannot get its turn answers `finished: false` instead of timing out.
            let left_ms = deadline
                .saturating_duration_since(std::time::Instant::now())
                .as_millis()
                .max(MIN_LOCK_WAIT_MS);
            sqlx::query(&format!("SET LOCAL lock_timeout = {left_ms}"))
                .execute(&mut *tx)
                .await?;
        }
        let outcome = match issue_batch(
            &mut tx,
            backend,
            campaign_id,
            &cursor,
            utc_offset_minutes,
            now_ms,
        )
        .await
        {
            Ok(outcome) => outcome,
            Err(err) if err.code == LOCK_TIMEOUT_CODE => {
                drop(tx);
                let (cap, issued): (i64, i64) =
                    sqlx::query_as("SELECT cap, issued FROM campaigns WHERE id = $1")
                        .bind(campaign_id)
                        .fetch_one(store.read())
                        .await?;
                report.cap = cap;
                report.issued_total = issued;
                report.cap_reached = issued >= cap;
                report.finished = report.cap_reached;
                return Ok(report);
            }
            Err(err) => return Err(err),
        };
        tx.commit().await?;
        report.batches += 1;
        report.issued_now += outcome.issued;
        report.issued_total = outcome.issued_total;
        report.cap = outcome.cap;
        report.cap_reached = outcome.issued_total >= outcome.cap;
        report.budget_exhausted = outcome.budget_exhausted;
        match outcome.last_member {
            Some(last) if !report.cap_reached && !report.budget_exhausted => cursor = last,
            _ => {
                report.finished = true;
                return Ok(report);
            }
        }
        if std::time::Instant::now() >= deadline {
            return Ok(report);
        }
    }
}

/// template id, segment JSON, cap, issued, starts_at, ends_at.
type LockedCampaign = (String, String, i64, i64, Option<i64>, Option<i64>);

struct BatchOutcome {
    issued: i64,
    issued_total: i64,
    cap: i64,
    /// The last member looked at, or `None` when there were none left.
    last_member: Option<String>,
    /// The funding brand's coupon budget stopped the batch.
    budget_exhausted: bool,
}

async fn issue_batch(
    conn: &mut AnyConnection,
    backend: Backend,
    campaign_id: &str,
    after_member: &str,
    utc_offset_minutes: i64,
    now_ms: i64,
) -> DomainResult<BatchOutcome> {
    // The row lock serialises batches of one campaign across calls and nodes, so the member
    // query below sees every coupon issued before it.
    let row: Result<Option<LockedCampaign>, _> = sqlx::query_as(&format!(
        "SELECT template_id, segment, cap, issued, starts_at, ends_at FROM campaigns
             WHERE id = $1{}",
        for_update(backend)
    ))
    .bind(campaign_id)
    .fetch_optional(&mut *conn)
    .await;
    let row = match row {
        Ok(row) => row,
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("55P03") => {
            return Err(DomainError::unavailable(
                LOCK_TIMEOUT_CODE,
                "another issue call holds the campaign; call again",
            ))
        }
        Err(err) => return Err(err.into()),
    };
    let Some((template_id, segment, cap, mut issued_total, starts_at, ends_at)) = row else {
        return Err(DomainError::not_found("campaign", campaign_id));
    };
    if starts_at.is_some_and(|s| now_ms < s) {
        return Err(DomainError::unprocessable(
            "campaign_not_started",
            format!(
                "campaign {campaign_id:?} issues from {}",
                starts_at.unwrap_or(0)
            ),
        ));
    }
    if ends_at.is_some_and(|e| now_ms >= e) {
        return Err(DomainError::unprocessable(
            "campaign_ended",
            format!(
                "campaign {campaign_id:?} stopped issuing at {}",
                ends_at.unwrap_or(0)
            ),
        ));
    }
    if issued_total >= cap {
        return Ok(BatchOutcome {
            issued: 0,
            issued_total,
            cap,
            last_member: None,
            budget_exhausted: false,
        });
    }
    // What each coupon draws on its funding brand's coupon budgets: its face value.
    let (funding_brand, plugin, value_cents): (String, String, i64) = sqlx::query_as(
        "SELECT funding_brand, plugin, value_cents FROM coupon_templates WHERE id = $1",
    )
    .bind(&template_id)
    .fetch_one(&mut *conn)
    .await?;
    let segment: Segment = serde_json::from_str(&segment).map_err(DomainError::internal)?;
    let (cond, binds) = segment_sql(&segment, 5);
    let sql = format!(
        "SELECT m.id FROM members m WHERE m.id > $1 AND NOT EXISTS (SELECT 1 FROM coupons c
            WHERE c.source_kind = $2 AND c.source_id = $3 AND c.template_id = $4
            AND c.member_id = m.id) AND {cond}
         ORDER BY m.id LIMIT {ISSUE_BATCH_MEMBERS}"
    );
    let mut query = sqlx::query_as::<_, (String,)>(&sql)
        .bind(after_member)
        .bind(SOURCE_KIND)
        .bind(campaign_id)
        .bind(&template_id);
    for b in binds {
        query = query.bind(b);
    }
    let members = query.fetch_all(&mut *conn).await?;
    let mut issued = 0;
    let mut budget_exhausted = false;
    for (member_id,) in &members {
        // The campaign row is locked: the count read above is exact, so the budget is only
        // drawn for a coupon the cap still allows.
        if issued_total >= cap {
            break;
        }
        let reserved = crate::ledger::budgets::reserve(
            conn,
            backend,
            &funding_brand,
            crate::ledger::budgets::BudgetKind::CouponValue,
            Some(&plugin),
            Some(campaign_id),
            value_cents,
            crate::ledger::budgets::Grant::Whole,
            utc_offset_minutes,
            now_ms,
        )
        .await?;
        if value_cents > 0 && reserved.granted < value_cents {
            budget_exhausted = true;
            break;
        }
        let counted = sqlx::query(
            "UPDATE campaigns SET issued = issued + 1, updated_at = $2
             WHERE id = $1 AND issued < cap",
        )
        .bind(campaign_id)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if counted == 0 {
            break;
        }
        crate::domain::coupons::issue(
            conn,
            &template_id,
            member_id,
            SOURCE_KIND,
            campaign_id,
            now_ms,
        )
        .await?;
        issued += 1;
        issued_total += 1;
    }
    Ok(BatchOutcome {
        issued,
        issued_total,
        cap,
        last_member: members.last().map(|(id,)| id.clone()),
        budget_exhausted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(segment: Segment, cap: i64) -> NewCampaign {
        NewCampaign {
            title: "Spring".to_owned(),
            template_id: "t".to_owned(),
            segment,
            cap,
            starts_at_ms: None,
            ends_at_ms: None,
        }
    }

    #[test]
    fn segments_need_a_criterion_and_normalise_tags() {
        assert!(validate(&req(Segment::default(), 10)).is_err());
        let seg = validate(&req(
            Segment {
                tiers: vec![],
                tags: vec!["Skin Care".to_owned(), "skin-care".to_owned()],
                rfm: None,
            },
            10,
        ))
        .expect("valid");
        assert_eq!(seg.tags, vec!["skin-care".to_owned()]);
        let tiers = Segment {
            tiers: vec!["gold".to_owned()],
            tags: vec![],
            rfm: None,
        };
        assert!(validate(&req(tiers.clone(), 0)).is_err());
        assert!(validate(&req(tiers, MAX_CAP + 1)).is_err());
    }

    #[test]
    fn segment_sql_numbers_parameters_in_order() {
        let (sql, binds) = segment_sql(
            &Segment {
                tiers: vec!["gold".to_owned()],
                tags: vec!["a".to_owned(), "b".to_owned()],
                rfm: None,
            },
            5,
        );
        assert!(sql.contains("m.tier IN ($5)"));
        assert!(sql.contains("t.tag IN ($6, $7)"));
        assert_eq!(binds, vec!["gold", "a", "b"]);
    }
}
