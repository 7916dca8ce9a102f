//! Member lifecycle stages: welcome, growth, stable, silent, churned, computed from purchases by
//! rules stored in the database (`stage_rules`, defaults from the migration), with a history of
//! every change and a churn-risk list.
//!
//! # The rules
//! With `idle` = time since the last purchase (since joining, for a member who never bought):
//! `churned` when idle ≥ `churned_after_days`; else `silent` when idle ≥ `silent_after_days`, or
//! when the member never bought and joined `welcome_days` or more ago; else `welcome` (never
//! bought), `growth` (fewer than `stable_min_purchases` purchases) or `stable`.
//!
//! # The job
//! [`run`] walks members in id order, [`STAGE_BATCH`] per transaction: one query computes the
//! batch's stages (the counts and the `CASE` above, in SQL), and only the members whose stage
//! changed are written — a guarded `UPDATE … WHERE stage = <old>` (or an insert that does
//! nothing on conflict) decides, so two concurrent runs record a change once. A change appends
//! a history row and a `stage_changed` webhook event for each brand the member bought at, in
//! the same transaction. The cursor (the batch's last member id) is committed with the batch,
//! so an interrupted run resumes where it stopped.

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::foundation::clock::DAY_MS;
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::{new_id, Store};

/// Members computed per transaction: short commits (SQLite has one writer) while amortising
/// the per-batch query over many members.
pub const STAGE_BATCH: i64 = 500;
/// Longest rule window, days: ten years is beyond any programme's horizon and keeps the
/// millisecond arithmetic far from overflow.
pub const MAX_RULE_DAYS: i64 = 3_650;
/// Largest `stable_min_purchases`.
pub const MAX_STABLE_PURCHASES: i64 = 1_000;
/// History rows returned with a member's stage (newest first).
pub const MAX_HISTORY_SHOWN: i64 = 100;
/// Largest page of the churn-risk list.
pub const MAX_CHURN_PAGE: i64 = 200;
/// The cursor row of the stage job in `engagement_cursors`.
const CURSOR_JOB: &str = "member-stages";

/// A lifecycle stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = LifecycleStage)]
pub enum Stage {
    /// Joined recently, no purchase yet.
    Welcome,
    /// Bought, fewer than `stable_min_purchases` times.
    Growth,
    /// Bought `stable_min_purchases` times or more, recently.
    Stable,
    /// No purchase for `silent_after_days` (or never bought after the welcome window).
    Silent,
    /// No purchase for `churned_after_days`.
    Churned,
}

impl Stage {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Welcome => "welcome",
            Self::Growth => "growth",
            Self::Stable => "stable",
            Self::Silent => "silent",
            Self::Churned => "churned",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "welcome" => Self::Welcome,
            "growth" => Self::Growth,
            "stable" => Self::Stable,
            "silent" => Self::Silent,
            "churned" => Self::Churned,
            _ => return None,
        })
    }

    /// Every stage, in lifecycle order.
    pub const ALL: [Stage; 5] = [
        Self::Welcome,
        Self::Growth,
        Self::Stable,
        Self::Silent,
        Self::Churned,
    ];
}

/// The stage rules (body of `PUT /stages/rules` and its answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageRules {
    /// A member who never bought is `welcome` for this many days after joining (1..=3650, at
    /// most `silent_after_days`).
    pub welcome_days: i64,
    /// Purchases that make a member `stable` rather than `growth` (2..=1000).
    pub stable_min_purchases: i64,
    /// Days without a purchase after which a member is `silent` (1..=3650).
    pub silent_after_days: i64,
    /// Days without a purchase after which a member is `churned` (more than
    /// `silent_after_days`, at most 3650).
    pub churned_after_days: i64,
}

impl StageRules {
    /// Checks the rules, with a stable code.
    pub fn validate(&self) -> DomainResult<()> {
        let bad = |detail: String| DomainError::bad_request("invalid_stage_rules", detail);
        for (name, days) in [
            ("welcome_days", self.welcome_days),
            ("silent_after_days", self.silent_after_days),
            ("churned_after_days", self.churned_after_days),
        ] {
            if !(1..=MAX_RULE_DAYS).contains(&days) {
                return Err(bad(format!("{name} must be within 1..={MAX_RULE_DAYS}")));
            }
        }
        if !(2..=MAX_STABLE_PURCHASES).contains(&self.stable_min_purchases) {
            return Err(bad(format!(
                "stable_min_purchases must be within 2..={MAX_STABLE_PURCHASES}"
            )));
        }
        if self.welcome_days > self.silent_after_days {
            return Err(bad(
                "welcome_days must not exceed silent_after_days".to_owned()
            ));
        }
        if self.churned_after_days <= self.silent_after_days {
            return Err(bad(
                "churned_after_days must exceed silent_after_days".to_owned()
            ));
        }
        Ok(())
    }
}

/// The rules in force.
pub async fn rules(conn: &mut AnyConnection) -> DomainResult<StageRules> {
    let (welcome_days, stable_min_purchases, silent_after_days, churned_after_days): (
        i64,
        i64,
        i64,
        i64,
    ) = sqlx::query_as(
        "SELECT welcome_days, stable_min_purchases, silent_after_days, churned_after_days
         FROM stage_rules WHERE id = 'current'",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(StageRules {
        welcome_days,
        stable_min_purchases,
        silent_after_days,
        churned_after_days,
    })
}

/// Replaces the rules (they apply from the next run of the job).
pub async fn set_rules(
    conn: &mut AnyConnection,
    rules: &StageRules,
    now_ms: i64,
) -> DomainResult<StageRules> {
    rules.validate()?;
    sqlx::query(
        "UPDATE stage_rules SET welcome_days = $1, stable_min_purchases = $2,
            silent_after_days = $3, churned_after_days = $4, updated_at = $5
         WHERE id = 'current'",
    )
    .bind(rules.welcome_days)
    .bind(rules.stable_min_purchases)
    .bind(rules.silent_after_days)
    .bind(rules.churned_after_days)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(*rules)
}

/// What a run of the stage job did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[schema(as = StageJobReport)]
pub struct StageJobReport {
    /// Members computed by this call.
    pub members: i64,
    /// Members whose stage changed (each one history row).
    pub changed: i64,
    /// Transactions committed.
    pub batches: i64,
    /// Whether the pass over every member is complete; `false` when the call ran out of time
    /// (call again: it resumes after the last committed batch).
    pub finished: bool,
    /// When it ran, Unix ms.
    pub ran_at_ms: i64,
}

/// One batch's outcome.
#[derive(Debug, Clone, Default)]
pub struct StageBatch {
    /// Members computed.
    pub members: i64,
    /// Stage changes recorded.
    pub changed: i64,
    /// Whether this was the pass's last batch (the cursor is back at the start).
    pub finished: bool,
}

/// member id, current stage, since, computed stage, purchases, spend, last purchase.
type StageRow = (
    String,
    Option<String>,
    Option<i64>,
    String,
    i64,
    i64,
    Option<i64>,
);

/// Computes the stages of the next [`STAGE_BATCH`] members after the job's cursor, in one
/// transaction, and moves the cursor.
pub async fn run_batch(store: &Store, now_ms: i64) -> DomainResult<StageBatch> {
    let mut tx = store.begin().await?;
    let rules = rules(&mut tx).await?;
    let after: Option<(String,)> =
        sqlx::query_as("SELECT after_id FROM engagement_cursors WHERE job = $1")
            .bind(CURSOR_JOB)
            .fetch_optional(&mut *tx)
            .await?;
    let after = after.map(|(a,)| a).unwrap_or_default();
    let rows: Vec<StageRow> = sqlx::query_as(
        "SELECT id, cur_stage, cur_since,
            CASE
              WHEN $2 - COALESCE(last_at, created_at) >= $6 THEN 'churned'
              WHEN $2 - COALESCE(last_at, created_at) >= $5 THEN 'silent'
              WHEN n = 0 AND $2 - created_at >= $4 THEN 'silent'
              WHEN n = 0 THEN 'welcome'
              WHEN n < $7 THEN 'growth'
              ELSE 'stable'
            END,
            n, spend, last_at
         FROM (SELECT m.id AS id, m.created_at AS created_at, s.stage AS cur_stage,
                 s.since_at AS cur_since,
                 (SELECT CAST(COUNT(*) AS BIGINT) FROM purchases p
                    WHERE p.member_id = m.id) AS n,
                 (SELECT CAST(COALESCE(SUM(p.total_cents), 0) AS BIGINT) FROM purchases p
                    WHERE p.member_id = m.id) AS spend,
                 (SELECT MAX(p.created_at) FROM purchases p WHERE p.member_id = m.id) AS last_at
               FROM members m LEFT JOIN member_stages s ON s.member_id = m.id
               WHERE m.id > $1 ORDER BY m.id LIMIT $3) x
         ORDER BY id",
    )
    .bind(&after)
    .bind(now_ms)
    .bind(STAGE_BATCH)
    .bind(rules.welcome_days * DAY_MS)
    .bind(rules.silent_after_days * DAY_MS)
    .bind(rules.churned_after_days * DAY_MS)
    .bind(rules.stable_min_purchases)
    .fetch_all(&mut *tx)
    .await?;
    let mut batch = StageBatch {
        members: i64::try_from(rows.len()).unwrap_or(i64::MAX),
        ..StageBatch::default()
    };
    for (member_id, current, _since, stage, n, spend, last_at) in &rows {
        let changed = match current {
            None => {
                sqlx::query(
                    "INSERT INTO member_stages (member_id, stage, since_at, purchases,
                        spend_cents, last_purchase_at, computed_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $3) ON CONFLICT (member_id) DO NOTHING",
                )
                .bind(member_id)
                .bind(stage)
                .bind(now_ms)
                .bind(n)
                .bind(spend)
                .bind(last_at)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1
            }
            Some(old) if old != stage => {
                sqlx::query(
                    "UPDATE member_stages SET stage = $2, since_at = $4, purchases = $5,
                        spend_cents = $6, last_purchase_at = $7, computed_at = $4
                     WHERE member_id = $1 AND stage = $3",
                )
                .bind(member_id)
                .bind(stage)
                .bind(old)
                .bind(now_ms)
                .bind(n)
                .bind(spend)
                .bind(last_at)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1
            }
            Some(_) => {
                // Same stage: keep what the churn-risk list orders by up to date.
                sqlx::query(
                    "UPDATE member_stages SET purchases = $2, spend_cents = $3,
                        last_purchase_at = $4, computed_at = $5
                     WHERE member_id = $1 AND (purchases <> $2 OR spend_cents <> $3)",
                )
                .bind(member_id)
                .bind(n)
                .bind(spend)
                .bind(last_at)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                false
            }
        };
        if changed {
            record_change(&mut tx, member_id, current.as_deref(), stage, now_ms).await?;
            batch.changed += 1;
        }
    }
    let next = match rows.last() {
        Some((last, ..)) if batch.members >= STAGE_BATCH => last.clone(),
        _ => {
            batch.finished = true;
            String::new()
        }
    };
    sqlx::query(
        "INSERT INTO engagement_cursors (job, after_id, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (job) DO UPDATE SET after_id = $2, updated_at = $3",
    )
    .bind(CURSOR_JOB)
    .bind(&next)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(batch)
}

/// Appends a change to the history and tells the brands the member bought at.
async fn record_change(
    conn: &mut AnyConnection,
    member_id: &str,
    from: Option<&str>,
    to: &str,
    now_ms: i64,
) -> DomainResult<()> {
    let id = new_id();
    sqlx::query(
        "INSERT INTO member_stage_history (id, member_id, from_stage, to_stage, changed_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id)
    .bind(member_id)
    .bind(from)
    .bind(to)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    notify_brands(conn, &id, member_id, from, to, now_ms).await
}

/// A `stage_changed` webhook event to every brand the member has bought at (a brand hears of
/// its own customers only).
async fn notify_brands(
    conn: &mut AnyConnection,
    change_id: &str,
    member_id: &str,
    from: Option<&str>,
    to: &str,
    now_ms: i64,
) -> DomainResult<()> {
    let brands: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT brand_id FROM purchases WHERE member_id = $1 ORDER BY brand_id",
    )
    .bind(member_id)
    .fetch_all(&mut *conn)
    .await?;
    for (brand_id,) in brands {
        crate::domain::webhooks::record(
            conn,
            &brand_id,
            crate::domain::webhooks::EventType::StageChanged,
            Some(member_id),
            serde_json::json!({
                "change_id": change_id, "member_id": member_id, "from": from, "to": to,
                "changed_at_ms": now_ms,
            }),
        )
        .await?;
    }
    Ok(())
}

/// Runs the stage job until the pass over every member is complete or `deadline` passes.
pub async fn run(
    store: &Store,
    now_ms: i64,
    deadline: Option<std::time::Instant>,
) -> DomainResult<StageJobReport> {
    let mut report = StageJobReport {
        ran_at_ms: now_ms,
        ..StageJobReport::default()
    };
    loop {
        let batch = run_batch(store, now_ms).await?;
        report.batches += 1;
        report.members += batch.members;
        report.changed += batch.changed;
        if batch.finished {
            report.finished = true;
            return Ok(report);
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Ok(report);
        }
    }
}

/// A member's stage now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = MemberStageNow)]
pub struct MemberStageNow {
    /// The stage.
    pub stage: Stage,
    /// Since when (the run that recorded the change), Unix ms.
    pub since_ms: i64,
    /// Purchases counted.
    pub purchases: i64,
    /// Their total, cents.
    pub spend_cents: i64,
    /// The last purchase, Unix ms.
    pub last_purchase_at_ms: Option<i64>,
    /// When the job last computed it, Unix ms.
    pub computed_at_ms: i64,
}

/// One change of stage.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = StageChange)]
pub struct StageChange {
    /// The stage before (`null` for the first computation).
    pub from: Option<Stage>,
    /// The stage after.
    pub to: Stage,
    /// When, Unix ms.
    pub changed_at_ms: i64,
}

/// Body of `GET /members/{id}/stage`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = MemberStageView)]
pub struct MemberStageView {
    /// The member.
    pub member_id: String,
    /// The stage now (`null` until the job first ran for the member).
    pub current: Option<MemberStageNow>,
    /// Changes, newest first (at most 100).
    pub history: Vec<StageChange>,
}

fn stage_of(text: &str) -> DomainResult<Stage> {
    Stage::parse(text)
        .ok_or_else(|| DomainError::internal(anyhow::anyhow!("unknown stored stage {text:?}")))
}

/// A member's stage and history (404 for an unknown member).
pub async fn member_view(
    conn: &mut AnyConnection,
    member_id: &str,
) -> DomainResult<MemberStageView> {
    let known: Option<(String,)> = sqlx::query_as("SELECT id FROM members WHERE id = $1")
        .bind(member_id)
        .fetch_optional(&mut *conn)
        .await?;
    if known.is_none() {
        return Err(DomainError::not_found("member", member_id));
    }
    let current: Option<(String, i64, i64, i64, Option<i64>, i64)> = sqlx::query_as(
        "SELECT stage, since_at, purchases, spend_cents, last_purchase_at, computed_at
         FROM member_stages WHERE member_id = $1",
    )
    .bind(member_id)
    .fetch_optional(&mut *conn)
    .await?;
    let current = match current {
        Some((stage, since_ms, purchases, spend_cents, last_purchase_at_ms, computed_at_ms)) => {
            Some(MemberStageNow {
                stage: stage_of(&stage)?,
                since_ms,
                purchases,
                spend_cents,
                last_purchase_at_ms,
                computed_at_ms,
            })
        }
        None => None,
    };
    let rows: Vec<(Option<String>, String, i64)> = sqlx::query_as(
        "SELECT from_stage, to_stage, changed_at FROM member_stage_history
         WHERE member_id = $1 ORDER BY changed_at DESC, id DESC LIMIT $2",
    )
    .bind(member_id)
    .bind(MAX_HISTORY_SHOWN)
    .fetch_all(&mut *conn)
    .await?;
    let mut history = Vec::with_capacity(rows.len());
    for (from, to, changed_at_ms) in rows {
        history.push(StageChange {
            from: from.as_deref().map(stage_of).transpose()?,
            to: stage_of(&to)?,
            changed_at_ms,
        });
    }
    Ok(MemberStageView {
        member_id: member_id.to_owned(),
        current,
        history,
    })
}

/// Members per stage (as of the job's last run).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[schema(as = StageCounts)]
pub struct StageCounts {
    /// `welcome` members.
    pub welcome: i64,
    /// `growth` members.
    pub growth: i64,
    /// `stable` members.
    pub stable: i64,
    /// `silent` members.
    pub silent: i64,
    /// `churned` members.
    pub churned: i64,
    /// Members the job has not computed yet.
    pub not_computed: i64,
}

/// Members per stage.
pub async fn counts(conn: &mut AnyConnection) -> DomainResult<StageCounts> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT stage, CAST(COUNT(*) AS BIGINT) FROM member_stages GROUP BY stage")
            .fetch_all(&mut *conn)
            .await?;
    let mut counts = StageCounts::default();
    let mut computed = 0;
    for (stage, n) in rows {
        computed += n;
        match Stage::parse(&stage) {
            Some(Stage::Welcome) => counts.welcome = n,
            Some(Stage::Growth) => counts.growth = n,
            Some(Stage::Stable) => counts.stable = n,
            Some(Stage::Silent) => counts.silent = n,
            Some(Stage::Churned) => counts.churned = n,
            None => {}
        }
    }
    let (members,): (i64,) = sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM members")
        .fetch_one(&mut *conn)
        .await?;
    counts.not_computed = (members - computed).max(0);
    Ok(counts)
}

/// One member on the churn-risk list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = ChurnRiskLine)]
pub struct ChurnRiskLine {
    /// The member.
    pub member_id: String,
    /// Silent since, Unix ms.
    pub silent_since_ms: i64,
    /// Purchases in all.
    pub purchases: i64,
    /// Their total, cents.
    pub spend_cents: i64,
    /// The last purchase, Unix ms.
    pub last_purchase_at_ms: Option<i64>,
}

/// A page of the churn-risk list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = ChurnRiskPage)]
pub struct ChurnRiskPage {
    /// Silent members, highest spend first, then most recent purchase first.
    pub members: Vec<ChurnRiskLine>,
    /// Every silent member.
    pub total: i64,
    /// The offset asked.
    pub offset: i64,
    /// The page size used.
    pub limit: i64,
}

/// Members silent now, by value then recency, `limit` (1..=200) from `offset` (≥ 0).
pub async fn churn_risk(
    conn: &mut AnyConnection,
    limit: i64,
    offset: i64,
) -> DomainResult<ChurnRiskPage> {
    if !(1..=MAX_CHURN_PAGE).contains(&limit) || offset < 0 {
        return Err(DomainError::bad_request(
            "invalid_page",
            format!("limit must be within 1..={MAX_CHURN_PAGE} and offset at least 0"),
        ));
    }
    let rows: Vec<(String, i64, i64, i64, Option<i64>)> = sqlx::query_as(
        "SELECT member_id, since_at, purchases, spend_cents, last_purchase_at FROM member_stages
         WHERE stage = 'silent'
         ORDER BY spend_cents DESC, COALESCE(last_purchase_at, 0) DESC, member_id
         LIMIT $1 OFFSET $2",
    )
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    let (total,): (i64,) =
        sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM member_stages WHERE stage = 'silent'")
            .fetch_one(&mut *conn)
            .await?;
    Ok(ChurnRiskPage {
        members: rows
            .into_iter()
            .map(
                |(member_id, silent_since_ms, purchases, spend_cents, last_purchase_at_ms)| {
                    ChurnRiskLine {
                        member_id,
                        silent_since_ms,
                        purchases,
                        spend_cents,
                        last_purchase_at_ms,
                    }
                },
            )
            .collect(),
        total,
        offset,
        limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(w: i64, n: i64, s: i64, c: i64) -> StageRules {
        StageRules {
            welcome_days: w,
            stable_min_purchases: n,
            silent_after_days: s,
            churned_after_days: c,
        }
    }

    #[test]
    fn rules_are_checked() {
        assert!(rules(30, 3, 30, 90).validate().is_ok());
        for bad in [
            rules(0, 3, 30, 90),
            rules(31, 3, 30, 90),
            rules(30, 1, 30, 90),
            rules(30, 3, 30, 30),
            rules(30, 3, 30, MAX_RULE_DAYS + 1),
        ] {
            assert_eq!(
                bad.validate().expect_err("invalid").code,
                "invalid_stage_rules"
            );
        }
    }

    #[test]
    fn stages_round_trip() {
        for stage in Stage::ALL {
            assert_eq!(Stage::parse(stage.as_str()), Some(stage));
        }
        assert_eq!(Stage::parse("asleep"), None);
    }
}
