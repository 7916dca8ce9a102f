//! The tier ladder, upgrades on purchase, and scheduled re-evaluation with retention.
//!
//! Tiers are computed from the **qualifying pool** (`qualifying_events`): eligible spend in cents
//! (or, with `basis = "points"`, points earned) net of refunds, in a rolling window. Never from
//! the spendable balance, which spending and expiry move for reasons that say nothing about
//! loyalty. A refund is dated at its purchase's time so it nets out in the same window.
//!
//! - **Upgrade at once**: a purchase whose qualifying total crosses a higher tier's `threshold`
//!   moves the member up (several steps if it crosses several).
//! - **Re-evaluation** (monthly at local midnight on the 1st, and on demand by an admin): a member
//!   who qualifies for a higher tier moves up; a member whose window total is below their tier's
//!   `retain_threshold` moves down **one** step. A refund never downgrades by itself.
//! - Each evaluation changes a member at most once: `tier_changes` is unique per (member,
//!   evaluation), so a resumed or concurrent run of the same evaluation cannot move anyone twice.
//!
//! The ladder comes from `[tiers]` in the configuration unless an admin replaced it through the
//! API (`tier_ladder` rows); rank is the position in the ladder, lowest first.

use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, AnyPool};
use utoipa::ToSchema;

use crate::foundation::clock::DAY_MS;
use crate::foundation::clock::{local_month_start_ms, local_year_month};
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::{new_id, Store};

/// Most tiers in a ladder; programmes in the field use 3 to 6.
pub const MAX_TIERS: usize = 12;
/// Longest tier code (a stable machine name).
const MAX_CODE_LEN: usize = 32;
/// Longest tier display name.
const MAX_NAME_LEN: usize = 64;
/// Longest rolling window: a tier earned over more than three years says little about today.
const MAX_WINDOW_DAYS: i64 = 3 * 366;
/// Members evaluated per read during a re-evaluation; bounds memory at any member count.
const EVALUATION_BATCH: i64 = 500;
/// A scheduled evaluation left unfinished this long (a node died mid-run) is resumed.
const RESUME_STALE_MS: i64 = 15 * 60 * 1000;
/// Tier changes listed in the member's tier view.
const RECENT_CHANGES_SHOWN: i64 = 10;

/// What the qualifying total counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TierBasis {
    /// Eligible spend in cents (the part paid with money on lines that earn), net of refunds.
    Spend,
    /// Points earned by purchases (base and bonuses), net of refund reversals.
    Points,
}

impl TierBasis {
    fn column(self) -> &'static str {
        match self {
            TierBasis::Spend => "spend_cents",
            TierBasis::Points => "points",
        }
    }
}

/// One rung of the ladder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierLevel {
    /// Stable code, e.g. `gold` (lowercase letters, digits, `_`, `-`).
    pub code: String,
    /// Display name, e.g. `Gold`.
    pub name: String,
    /// Qualifying total (cents or points, per `basis`) in the window to reach this tier.
    pub threshold: i64,
    /// Qualifying total needed to keep this tier at an evaluation (≤ `threshold`).
    pub retain_threshold: i64,
    /// Largest share of an order, in percent, that points may pay at this tier.
    pub points_pay_max_percent: i64,
}

/// The `[tiers]` configuration section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TiersConfig {
    /// What the qualifying total counts.
    pub basis: TierBasis,
    /// Length of the rolling window, days.
    pub window_days: i64,
    /// The ladder, lowest tier first (the first tier has threshold 0).
    pub ladder: Vec<TierLevel>,
}

fn level(code: &str, name: &str, threshold: i64, retain: i64, percent: i64) -> TierLevel {
    TierLevel {
        code: code.to_owned(),
        name: name.to_owned(),
        threshold,
        retain_threshold: retain,
        points_pay_max_percent: percent,
    }
}

impl Default for TiersConfig {
    fn default() -> Self {
        Self {
            basis: TierBasis::Spend,
            window_days: 365,
            // Spend thresholds in cents over 365 days: 2,000 / 10,000 / 50,000.
            ladder: vec![
                level("bronze", "Bronze", 0, 0, 10),
                level("silver", "Silver", 200_000, 150_000, 15),
                level("gold", "Gold", 1_000_000, 800_000, 20),
                level("platinum", "Platinum", 5_000_000, 4_000_000, 30),
            ],
        }
    }
}

impl TiersConfig {
    /// Checks the section; called before the server or a job starts.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=MAX_WINDOW_DAYS).contains(&self.window_days),
            "tiers.window_days must be 1..={MAX_WINDOW_DAYS}"
        );
        validate_ladder(&self.ladder).map_err(|e| anyhow::anyhow!("tiers.ladder: {}", e.detail))
    }

    fn window_ms(&self) -> i64 {
        self.window_days.saturating_mul(DAY_MS)
    }
}

/// Checks a ladder: 1..=12 tiers, unique codes, the first at 0, thresholds strictly rising,
/// retention never above the threshold.
pub fn validate_ladder(ladder: &[TierLevel]) -> DomainResult<()> {
    if ladder.is_empty() || ladder.len() > MAX_TIERS {
        return Err(DomainError::validation(format!(
            "a ladder has 1..={MAX_TIERS} tiers"
        )));
    }
    for (i, t) in ladder.iter().enumerate() {
        let code_ok = !t.code.is_empty()
            && t.code.len() <= MAX_CODE_LEN
            && t.code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !code_ok {
            return Err(DomainError::validation(format!(
                "tier {i}: code must be 1..={MAX_CODE_LEN} of a-z, 0-9, _ and -"
            )));
        }
        if t.name.trim().is_empty() || t.name.len() > MAX_NAME_LEN {
            return Err(DomainError::validation(format!(
                "tier {:?}: name must be 1..={MAX_NAME_LEN} bytes",
                t.code
            )));
        }
        if ladder[..i].iter().any(|o| o.code == t.code) {
            return Err(DomainError::validation(format!(
                "tier code {:?} repeats",
                t.code
            )));
        }
        if !(0..=i64::MAX / 4).contains(&t.threshold)
            || !(0..=t.threshold).contains(&t.retain_threshold)
        {
            return Err(DomainError::validation(format!(
                "tier {:?}: need 0 <= retain_threshold <= threshold",
                t.code
            )));
        }
        if !(0..=100).contains(&t.points_pay_max_percent) {
            return Err(DomainError::validation(format!(
                "tier {:?}: points_pay_max_percent must be 0..=100",
                t.code
            )));
        }
        if i == 0 && t.threshold != 0 {
            return Err(DomainError::validation(
                "the first tier's threshold must be 0",
            ));
        }
        if i > 0 && t.threshold <= ladder[i - 1].threshold {
            return Err(DomainError::validation(format!(
                "tier {:?}: thresholds must rise strictly up the ladder",
                t.code
            )));
        }
    }
    Ok(())
}

/// The ladder in force: the admin's override if any, else the configuration.
pub async fn load_ladder(
    conn: &mut AnyConnection,
    config: &TiersConfig,
) -> DomainResult<Vec<TierLevel>> {
    let rows: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT code, name, threshold, retain_threshold, points_pay_max_percent
         FROM tier_ladder ORDER BY rank",
    )
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        return Ok(config.ladder.clone());
    }
    Ok(rows
        .into_iter()
        .map(|(code, name, threshold, retain, percent)| TierLevel {
            code,
            name,
            threshold,
            retain_threshold: retain,
            points_pay_max_percent: percent,
        })
        .collect())
}

/// Replaces the ladder override (members keep their tier code until their next change; a code
/// no longer on the ladder counts as the lowest tier).
pub async fn replace_ladder(
    conn: &mut AnyConnection,
    ladder: &[TierLevel],
    now_ms: i64,
) -> DomainResult<()> {
    validate_ladder(ladder)?;
    sqlx::query("DELETE FROM tier_ladder")
        .execute(&mut *conn)
        .await?;
    for (rank, t) in ladder.iter().enumerate() {
        sqlx::query(
            "INSERT INTO tier_ladder
               (code, name, rank, threshold, retain_threshold, points_pay_max_percent, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&t.code)
        .bind(&t.name)
        .bind(i64::try_from(rank).unwrap_or(0))
        .bind(t.threshold)
        .bind(t.retain_threshold)
        .bind(t.points_pay_max_percent)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Rank of a code on the ladder; unknown codes count as the lowest tier.
pub fn rank_of(ladder: &[TierLevel], code: &str) -> usize {
    ladder.iter().position(|t| t.code == code).unwrap_or(0)
}

/// The highest tier whose threshold `qualifying` reaches.
pub fn qualified_rank(ladder: &[TierLevel], qualifying: i64) -> usize {
    ladder
        .iter()
        .rposition(|t| qualifying >= t.threshold)
        .unwrap_or(0)
}

/// What an evaluation does to a member at `current` rank with `qualifying` in the window: up to
/// the highest tier reached, else down one step if below retention, else stay.
pub fn evaluate_rank(ladder: &[TierLevel], current: usize, qualifying: i64) -> usize {
    let reached = qualified_rank(ladder, qualifying);
    if reached > current {
        reached
    } else if current > 0 && qualifying < ladder[current].retain_threshold {
        current - 1
    } else {
        current
    }
}

/// Adds to the qualifying pool (negative amounts for refunds).
#[allow(clippy::too_many_arguments)]
pub async fn record_qualifying(
    conn: &mut AnyConnection,
    member_id: &str,
    purchase_id: &str,
    refund_pk: Option<&str>,
    spend_cents: i64,
    points: i64,
    occurred_at: i64,
    now_ms: i64,
) -> DomainResult<()> {
    if spend_cents == 0 && points == 0 {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO qualifying_events
           (id, member_id, purchase_id, refund_pk, spend_cents, points, occurred_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(new_id())
    .bind(member_id)
    .bind(purchase_id)
    .bind(refund_pk)
    .bind(spend_cents)
    .bind(points)
    .bind(occurred_at)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The member's qualifying total for events in `(since, until]`.
pub async fn qualifying_between(
    conn: &mut AnyConnection,
    basis: TierBasis,
    member_id: &str,
    since_ms: i64,
    until_ms: i64,
) -> DomainResult<i64> {
    let sql = format!(
        "SELECT CAST(COALESCE(SUM({}), 0) AS BIGINT) FROM qualifying_events
         WHERE member_id = $1 AND occurred_at > $2 AND occurred_at <= $3",
        basis.column()
    );
    let (total,): (i64,) = sqlx::query_as(&sql)
        .bind(member_id)
        .bind(since_ms)
        .bind(until_ms)
        .fetch_one(&mut *conn)
        .await?;
    Ok(total)
}

/// A tier change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TierChange {
    /// Tier before.
    pub from: String,
    /// Tier after.
    pub to: String,
    /// `purchase` or `evaluation`.
    pub reason: String,
    /// The qualifying total that decided it.
    pub qualifying: i64,
    /// When, Unix ms.
    pub at_ms: i64,
}

/// Upgrades the member at once if the purchase just recorded lifted the window total over a
/// higher tier's threshold. Runs inside the purchase's transaction.
pub async fn upgrade_after_purchase(
    conn: &mut AnyConnection,
    config: &TiersConfig,
    ladder: &[TierLevel],
    member_id: &str,
    current_tier: &str,
    purchase_id: &str,
    now_ms: i64,
) -> DomainResult<Option<TierChange>> {
    let qualifying = qualifying_between(
        conn,
        config.basis,
        member_id,
        now_ms - config.window_ms(),
        now_ms,
    )
    .await?;
    let current = rank_of(ladder, current_tier);
    let reached = qualified_rank(ladder, qualifying);
    if reached <= current {
        return Ok(None);
    }
    let to = ladder[reached].code.clone();
    let updated =
        sqlx::query("UPDATE members SET tier = $1, updated_at = $2 WHERE id = $3 AND tier = $4")
            .bind(&to)
            .bind(now_ms)
            .bind(member_id)
            .bind(current_tier)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    if updated == 0 {
        // An evaluation changed the tier since the wallet was locked; it has the final word.
        return Ok(None);
    }
    sqlx::query(
        "INSERT INTO tier_changes
           (id, member_id, from_tier, to_tier, reason, qualifying, purchase_id, changed_at)
         VALUES ($1, $2, $3, $4, 'purchase', $5, $6, $7)",
    )
    .bind(new_id())
    .bind(member_id)
    .bind(current_tier)
    .bind(&to)
    .bind(qualifying)
    .bind(purchase_id)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(Some(TierChange {
        from: current_tier.to_owned(),
        to,
        reason: "purchase".to_owned(),
        qualifying,
        at_ms: now_ms,
    }))
}

// ---------------------------------------------------------------------------------------------
// Evaluations

/// What an evaluation did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct EvaluationReport {
    /// Evaluation id.
    pub id: String,
    /// `schedule` or `admin`.
    pub kind: String,
    /// `YYYY-MM` for scheduled runs; the request key for admin runs.
    pub run_key: String,
    /// Members looked at.
    pub members_evaluated: i64,
    /// Members moved up.
    pub upgraded: i64,
    /// Members moved down one step.
    pub downgraded: i64,
    /// Start of the window used, Unix ms (exclusive).
    pub window_start_ms: i64,
    /// When it ran, Unix ms.
    pub evaluated_at_ms: i64,
}

/// Finds or creates the evaluation named `run_key`; returns (id, already finished).
pub async fn open_evaluation(
    store: &Store,
    kind: &str,
    run_key: &str,
    now_ms: i64,
) -> DomainResult<(String, Option<EvaluationReport>, i64)> {
    let mut tx = store.begin().await?;
    sqlx::query(
        "INSERT INTO tier_evaluations (id, kind, run_key, started_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (run_key) DO NOTHING",
    )
    .bind(new_id())
    .bind(kind)
    .bind(run_key)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    let (id, kind, started_at, finished_at, evaluated, upgraded, downgraded): (
        String,
        String,
        i64,
        Option<i64>,
        i64,
        i64,
        i64,
    ) = sqlx::query_as(
        "SELECT id, kind, started_at, finished_at, members_evaluated, upgraded, downgraded
         FROM tier_evaluations WHERE run_key = $1",
    )
    .bind(run_key)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let finished = finished_at.map(|at| EvaluationReport {
        id: id.clone(),
        kind,
        run_key: run_key.to_owned(),
        members_evaluated: evaluated,
        upgraded,
        downgraded,
        window_start_ms: 0,
        evaluated_at_ms: at,
    });
    Ok((id, finished, started_at))
}

/// Re-evaluates every member against the ladder (see the module doc), in batches, then marks
/// the evaluation finished. Safe to resume or run twice: a member changes at most once per id.
pub async fn run_evaluation(
    store: &Store,
    config: &TiersConfig,
    evaluation_id: &str,
    kind: &str,
    run_key: &str,
    now_ms: i64,
) -> DomainResult<EvaluationReport> {
    let ladder = {
        let mut conn = store.read().acquire().await?;
        load_ladder(&mut conn, config).await?
    };
    let since = now_ms - config.window_ms();
    let sql = format!(
        "SELECT m.id, m.tier, CAST(COALESCE(SUM(q.{col}), 0) AS BIGINT)
         FROM members m
         LEFT JOIN qualifying_events q
           ON q.member_id = m.id AND q.occurred_at > $1 AND q.occurred_at <= $2
         WHERE m.id > $3
         GROUP BY m.id, m.tier ORDER BY m.id LIMIT $4",
        col = config.basis.column()
    );
    let mut report = EvaluationReport {
        id: evaluation_id.to_owned(),
        kind: kind.to_owned(),
        run_key: run_key.to_owned(),
        window_start_ms: since,
        evaluated_at_ms: now_ms,
        ..EvaluationReport::default()
    };
    let mut after = String::new();
    loop {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(&sql)
            .bind(since)
            .bind(now_ms)
            .bind(&after)
            .bind(EVALUATION_BATCH)
            .fetch_all(store.read())
            .await?;
        let Some((last, _, _)) = rows.last() else {
            break;
        };
        after = last.clone();
        report.members_evaluated += i64::try_from(rows.len()).unwrap_or(0);
        for (member_id, tier, qualifying) in rows {
            let current = rank_of(&ladder, &tier);
            let target = evaluate_rank(&ladder, current, qualifying);
            if target == current && ladder.get(current).map(|t| &t.code) == Some(&tier) {
                continue;
            }
            let to = &ladder[target].code;
            if apply_evaluation_change(
                store,
                evaluation_id,
                &member_id,
                &tier,
                to,
                qualifying,
                now_ms,
            )
            .await?
            {
                if target > current {
                    report.upgraded += 1;
                } else if target < current {
                    report.downgraded += 1;
                }
            }
        }
    }
    sqlx::query(
        "UPDATE tier_evaluations
         SET finished_at = $1, members_evaluated = $2, upgraded = $3, downgraded = $4
         WHERE id = $5",
    )
    .bind(now_ms)
    .bind(report.members_evaluated)
    .bind(report.upgraded)
    .bind(report.downgraded)
    .bind(evaluation_id)
    .execute(store.write())
    .await?;
    Ok(report)
}

/// Moves one member for an evaluation, once: the history row is unique per (member,
/// evaluation) and the update only applies if the tier is still the one evaluated.
async fn apply_evaluation_change(
    store: &Store,
    evaluation_id: &str,
    member_id: &str,
    from: &str,
    to: &str,
    qualifying: i64,
    now_ms: i64,
) -> DomainResult<bool> {
    let mut tx = store.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO tier_changes
           (id, member_id, from_tier, to_tier, reason, qualifying, evaluation_id, changed_at)
         VALUES ($1, $2, $3, $4, 'evaluation', $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(new_id())
    .bind(member_id)
    .bind(from)
    .bind(to)
    .bind(qualifying)
    .bind(evaluation_id)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
    let updated =
        sqlx::query("UPDATE members SET tier = $1, updated_at = $2 WHERE id = $3 AND tier = $4")
            .bind(to)
            .bind(now_ms)
            .bind(member_id)
            .bind(from)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if updated == 0 {
        // A purchase moved the member since the batch was read; leave it for the next run.
        return Ok(false);
    }
    // The brand the member joined at hears of a change no purchase caused.
    let joined: Option<(Option<String>,)> =
        sqlx::query_as("SELECT joined_brand_id FROM members WHERE id = $1")
            .bind(member_id)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some((Some(brand),)) = joined {
        crate::domain::webhooks::record(
            &mut tx,
            &brand,
            crate::domain::webhooks::EventType::TierChanged,
            Some(member_id),
            serde_json::json!({ "from": from, "to": to, "reason": "evaluation",
                "evaluation_id": evaluation_id, "changed_at_ms": now_ms }),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// The `YYYY-MM` local month of an instant.
pub fn period_key(now_ms: i64, utc_offset_minutes: i64) -> DomainResult<String> {
    let (year, month) = local_year_month(now_ms, utc_offset_minutes)?;
    Ok(format!("{year:04}-{month:02}"))
}

/// The next scheduled evaluation: local midnight on the 1st of next month.
pub fn next_evaluation_ms(now_ms: i64, utc_offset_minutes: i64) -> DomainResult<i64> {
    let (year, month) = local_year_month(now_ms, utc_offset_minutes)?;
    local_month_start_ms(i64::from(year) * 12 + i64::from(month), utc_offset_minutes)
}

/// Runs this month's scheduled evaluation if it has not run (the job calls this periodically).
/// The first time the schedule ever runs it only records a baseline, so that a fresh install
/// (or an import of members with tiers) does not start with a downgrade.
pub async fn run_scheduled(
    store: &Store,
    config: &TiersConfig,
    utc_offset_minutes: i64,
    now_ms: i64,
) -> DomainResult<Option<EvaluationReport>> {
    let key = period_key(now_ms, utc_offset_minutes)?;
    let (any,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM tier_evaluations WHERE kind IN ('schedule', 'baseline')",
    )
    .fetch_one(store.read())
    .await?;
    let kind = if any == 0 { "baseline" } else { "schedule" };
    let (id, finished, started_at) = open_evaluation(store, kind, &key, now_ms).await?;
    if finished.is_some() {
        return Ok(None);
    }
    if kind == "baseline" {
        sqlx::query("UPDATE tier_evaluations SET finished_at = $1 WHERE id = $2")
            .bind(now_ms)
            .bind(&id)
            .execute(store.write())
            .await?;
        return Ok(None);
    }
    if started_at < now_ms && started_at > now_ms - RESUME_STALE_MS {
        // Another node (or an earlier tick) is running it right now.
        return Ok(None);
    }
    run_evaluation(store, config, &id, "schedule", &key, now_ms)
        .await
        .map(Some)
}

// ---------------------------------------------------------------------------------------------
// The member's view

/// A tier as shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TierRef {
    /// Code.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Rank, 0 = lowest.
    pub rank: i64,
    /// Qualifying total to reach it.
    pub threshold: i64,
    /// Qualifying total to keep it.
    pub retain_threshold: i64,
}

fn tier_ref(ladder: &[TierLevel], rank: usize) -> TierRef {
    let t = &ladder[rank];
    TierRef {
        code: t.code.clone(),
        name: t.name.clone(),
        rank: i64::try_from(rank).unwrap_or(0),
        threshold: t.threshold,
        retain_threshold: t.retain_threshold,
    }
}

/// Whether the member would drop at the next evaluation if nothing changes.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DowngradeWarning {
    /// What still counts at the next evaluation (older events will have left the window).
    pub qualifying_at_next_evaluation: i64,
    /// How much more is needed before then to keep the tier.
    pub shortfall: i64,
    /// The tier the member would move to.
    pub would_become: TierRef,
    /// e.g. "Spend 120.00 more before 2026-04-01 to keep Gold".
    pub message: String,
}

/// A member's tier, progress and retention.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TierView {
    /// The member.
    pub member_id: String,
    /// Current tier (at least the paid membership card's tier floor while it is in force).
    pub tier: TierRef,
    /// The tier earned by qualifying activity, present only while a paid membership card's
    /// tier floor raises `tier` above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earned_tier: Option<TierRef>,
    /// `spend` (cents) or `points`.
    pub basis: TierBasis,
    /// Qualifying total in the window ending now.
    pub qualifying: i64,
    /// Window length, days.
    pub window_days: i64,
    /// Start of the window, Unix ms (exclusive).
    pub window_start_ms: i64,
    /// The next tier up, if any.
    pub next_tier: Option<TierRef>,
    /// How much more reaches the next tier (0 at the top).
    pub remaining_to_next: i64,
    /// e.g. "Spend 50.00 more to reach Gold".
    pub progress: String,
    /// Next scheduled evaluation, Unix ms.
    pub next_evaluation_at_ms: i64,
    /// Share of an order points may pay at this tier, percent.
    pub points_pay_max_percent: i64,
    /// Present when the member is below the retention threshold for the next evaluation.
    pub downgrade_warning: Option<DowngradeWarning>,
    /// Latest tier changes, newest first.
    pub recent_changes: Vec<TierChange>,
}

/// Formats cents as `1234.56` (the view's text is for people; amounts stay integers).
pub fn format_cents(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

fn amount_text(basis: TierBasis, amount: i64) -> String {
    match basis {
        TierBasis::Spend => format!("Spend {} more", format_cents(amount)),
        TierBasis::Points => format!("Earn {amount} more points"),
    }
}

fn local_date(at_ms: i64, utc_offset_minutes: i64) -> String {
    let offset = i32::try_from(utc_offset_minutes.saturating_mul(60))
        .ok()
        .and_then(|s| time::UtcOffset::from_whole_seconds(s).ok())
        .unwrap_or(time::UtcOffset::UTC);
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
        .map(|t| {
            let d = t.to_offset(offset).date();
            format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
        })
        .unwrap_or_default()
}

/// The member's tier view.
pub async fn member_view(
    pool: &AnyPool,
    config: &TiersConfig,
    utc_offset_minutes: i64,
    member_id: &str,
    now_ms: i64,
) -> DomainResult<TierView> {
    let mut conn = pool.acquire().await?;
    let member: Option<(String,)> = sqlx::query_as("SELECT tier FROM members WHERE id = $1")
        .bind(member_id)
        .fetch_optional(&mut *conn)
        .await?;
    let (tier_code,) = member.ok_or_else(|| DomainError::not_found("member", member_id))?;
    let ladder = load_ladder(&mut conn, config).await?;
    // A paid membership card in force lifts the tier to its floor; what follows (progress,
    // points-payment share) is the effective tier's, and no downgrade is warned while floored.
    let earned_rank = rank_of(&ladder, &tier_code);
    let rank = crate::domain::membership::effective_rank(
        &mut conn,
        &ladder,
        member_id,
        earned_rank,
        now_ms,
    )
    .await?;
    let window_start = now_ms - config.window_ms();
    let qualifying =
        qualifying_between(&mut conn, config.basis, member_id, window_start, now_ms).await?;
    let next_eval = next_evaluation_ms(now_ms, utc_offset_minutes)?;
    let current = &ladder[rank];
    let (next_tier, remaining, progress) = match ladder.get(rank + 1) {
        Some(next) => {
            let remaining = (next.threshold - qualifying).max(0);
            (
                Some(tier_ref(&ladder, rank + 1)),
                remaining,
                format!(
                    "{} to reach {}",
                    amount_text(config.basis, remaining),
                    next.name
                ),
            )
        }
        None => (None, 0, format!("{} is the highest tier", current.name)),
    };
    let at_next = qualifying_between(
        &mut conn,
        config.basis,
        member_id,
        next_eval - config.window_ms(),
        now_ms,
    )
    .await?;
    let downgrade_warning = if rank > 0 && rank == earned_rank && at_next < current.retain_threshold
    {
        let shortfall = current.retain_threshold - at_next;
        Some(DowngradeWarning {
            qualifying_at_next_evaluation: at_next,
            shortfall,
            would_become: tier_ref(&ladder, rank - 1),
            message: format!(
                "{} before {} to keep {}",
                amount_text(config.basis, shortfall),
                local_date(next_eval, utc_offset_minutes),
                current.name
            ),
        })
    } else {
        None
    };
    let changes: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT from_tier, to_tier, reason, qualifying, changed_at FROM tier_changes
         WHERE member_id = $1 ORDER BY changed_at DESC, id DESC LIMIT $2",
    )
    .bind(member_id)
    .bind(RECENT_CHANGES_SHOWN)
    .fetch_all(&mut *conn)
    .await?;
    Ok(TierView {
        member_id: member_id.to_owned(),
        tier: tier_ref(&ladder, rank),
        earned_tier: (rank != earned_rank).then(|| tier_ref(&ladder, earned_rank)),
        basis: config.basis,
        qualifying,
        window_days: config.window_days,
        window_start_ms: window_start,
        next_tier,
        remaining_to_next: remaining,
        progress,
        next_evaluation_at_ms: next_eval,
        points_pay_max_percent: current.points_pay_max_percent,
        downgrade_warning,
        recent_changes: changes
            .into_iter()
            .map(|(from, to, reason, qualifying, at)| TierChange {
                from,
                to,
                reason,
                qualifying,
                at_ms: at,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder() -> Vec<TierLevel> {
        TiersConfig::default().ladder
    }

    #[test]
    fn default_ladder_is_valid() {
        assert!(TiersConfig::default().validate().is_ok());
    }

    #[test]
    fn evaluation_moves_down_one_step_only() {
        let l = ladder();
        // Platinum with nothing in the window drops to Gold, not to Bronze.
        assert_eq!(evaluate_rank(&l, 3, 0), 2);
        // Gold above retention stays.
        assert_eq!(evaluate_rank(&l, 2, 800_000), 2);
        // Bronze reaching Gold jumps straight there.
        assert_eq!(evaluate_rank(&l, 0, 1_000_000), 2);
    }

    #[test]
    fn ladder_rules() {
        let mut l = ladder();
        l[2].threshold = 100;
        assert!(validate_ladder(&l).is_err());
        let mut l = ladder();
        l[1].retain_threshold = l[1].threshold + 1;
        assert!(validate_ladder(&l).is_err());
        let mut l = ladder();
        l[0].threshold = 5;
        assert!(validate_ladder(&l).is_err());
    }

    #[test]
    fn cents_format() {
        assert_eq!(format_cents(5), "0.05");
        assert_eq!(format_cents(123_456), "1234.56");
    }

    #[test]
    fn next_evaluation_is_first_of_next_month() {
        // 2026-03-02T10:00Z → 2026-04-01T00:00Z.
        assert_eq!(
            next_evaluation_ms(1_772_445_600_000, 0).ok(),
            Some(1_775_001_600_000)
        );
    }
}
