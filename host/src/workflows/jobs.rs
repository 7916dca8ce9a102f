//! Background jobs: points expiry, hold timeouts, pending points past their return window,
//! and the monthly tier re-evaluation.
//!
//! Each job is idempotent and reads time from the injected clock, so the same functions serve
//! the periodic runner started by `server::run`, the admin endpoints (`POST /jobs/expiry`,
//! `POST /jobs/holds`, `POST /tiers/evaluate`) and `coalition jobs run`. Every unit of work (one
//! member's expiry, one hold) is its own short transaction: a job never holds the SQLite writer
//! for long and a failure affects only its unit. With several host nodes the jobs may run on all
//! of them; row locks and guarded updates make concurrent runs do the work once.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use utoipa::ToSchema;

use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::Store;
use crate::ledger;
use crate::workflows::Services;

/// Members (or holds) fetched per batch; bounds memory whatever the backlog.
const JOB_BATCH: i64 = 500;
/// Shortest accepted interval between runs, so a misconfiguration cannot spin the database.
const MIN_INTERVAL_MS: u64 = 1_000;

/// The `[jobs]` configuration section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Run the jobs periodically inside `coalition serve` (turn off when a separate
    /// `coalition jobs run` does it, e.g. from cron).
    pub enabled: bool,
    /// How often expired lots are swept (expiry is also applied lazily on every write).
    pub expiry_interval_ms: u64,
    /// How often timed-out holds are released.
    pub holds_interval_ms: u64,
    /// How often the tier job checks whether this month's evaluation is due.
    pub tiers_interval_ms: u64,
    /// How often points past their brand's return window are released.
    pub pending_interval_ms: u64,
    /// How often members' lifecycle stages are computed and the active journeys run (stages
    /// first, so a journey on a stage change sees it). Stages are days long: hourly is plenty.
    pub engagement_interval_ms: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            expiry_interval_ms: 10 * 60 * 1000,
            holds_interval_ms: 30 * 1000,
            tiers_interval_ms: 10 * 60 * 1000,
            pending_interval_ms: 60 * 1000,
            engagement_interval_ms: 60 * 60 * 1000,
        }
    }
}

impl JobsConfig {
    /// Checks the section.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, ms) in [
            ("expiry_interval_ms", self.expiry_interval_ms),
            ("holds_interval_ms", self.holds_interval_ms),
            ("tiers_interval_ms", self.tiers_interval_ms),
            ("pending_interval_ms", self.pending_interval_ms),
            ("engagement_interval_ms", self.engagement_interval_ms),
        ] {
            anyhow::ensure!(
                ms >= MIN_INTERVAL_MS,
                "jobs.{name} must be at least {MIN_INTERVAL_MS}"
            );
        }
        Ok(())
    }
}

/// What an expiry run did.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
pub struct ExpiryReport {
    /// Members with expired lots.
    pub members: i64,
    /// Lots expired.
    pub lots: i64,
    /// Points expired.
    pub points: i64,
    /// Coupons marked `expired` (unused and past their expiry; a coupon held by a live
    /// checkout waits for it).
    #[serde(default)]
    pub coupons: i64,
    /// When it ran, Unix ms.
    pub ran_at_ms: i64,
}

/// Posts expiry entries for every lot past due. Running it twice expires once: an expired lot
/// has nothing remaining.
pub async fn run_expiry(store: &Store, now_ms: i64) -> DomainResult<ExpiryReport> {
    let mut report = ExpiryReport {
        ran_at_ms: now_ms,
        ..ExpiryReport::default()
    };
    let mut after = String::new();
    loop {
        let members: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT member_id FROM point_lots
             WHERE remaining > 0 AND expires_at <= $1 AND member_id > $2
             ORDER BY member_id LIMIT $3",
        )
        .bind(now_ms)
        .bind(&after)
        .bind(JOB_BATCH)
        .fetch_all(store.read())
        .await?;
        let Some((last,)) = members.last() else {
            break;
        };
        after = last.clone();
        for (member_id,) in members {
            let outcome = ledger::expire_member(store, &member_id, now_ms).await?;
            if outcome.lots > 0 {
                report.members += 1;
                report.lots += outcome.lots;
                report.points += outcome.points;
            }
        }
    }
    report.coupons = expire_coupons(store, now_ms).await?;
    Ok(report)
}

/// Marks unused coupons past their expiry `expired`, [`JOB_BATCH`] per statement so the
/// single SQLite writer is never held long. Reads already show them expired; this makes the
/// stored state say so (for exports, counts and other readers of the table).
pub async fn expire_coupons(store: &Store, now_ms: i64) -> DomainResult<i64> {
    let mut total = 0;
    loop {
        let marked = sqlx::query(
            "UPDATE coupons SET status = 'expired', reservation_id = NULL, reserved_until = NULL,
                updated_at = $1
             WHERE code IN (
                SELECT code FROM coupons
                WHERE status IN ('issued', 'reserved') AND expires_at <= $1
                  AND (status = 'issued' OR reserved_until <= $1)
                LIMIT $2)",
        )
        .bind(now_ms)
        .bind(JOB_BATCH)
        .execute(store.write())
        .await?
        .rows_affected();
        total += i64::try_from(marked).unwrap_or(i64::MAX);
        if marked < u64::try_from(JOB_BATCH).unwrap_or(u64::MAX) {
            return Ok(total);
        }
    }
}

/// What a hold-timeout run did.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
pub struct HoldTimeoutReport {
    /// Holds released because they timed out.
    pub holds: i64,
    /// Points returned to wallets.
    pub points: i64,
    /// When it ran, Unix ms.
    pub ran_at_ms: i64,
}

/// Releases every pending hold past its expiry. A hold captured or released meanwhile is
/// skipped (its row lock and status check decide).
pub async fn run_hold_timeouts(store: &Store, now_ms: i64) -> DomainResult<HoldTimeoutReport> {
    let mut report = HoldTimeoutReport {
        ran_at_ms: now_ms,
        ..HoldTimeoutReport::default()
    };
    let mut after = String::new();
    loop {
        let holds: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM point_holds
             WHERE status = 'pending' AND expires_at <= $1 AND id > $2
             ORDER BY id LIMIT $3",
        )
        .bind(now_ms)
        .bind(&after)
        .bind(JOB_BATCH)
        .fetch_all(store.read())
        .await?;
        let Some((last,)) = holds.last() else {
            break;
        };
        after = last.clone();
        for (hold_id,) in holds {
            let mut tx = store.begin().await?;
            match ledger::release_hold(&mut tx, store.backend(), &hold_id, true, now_ms).await {
                Ok(hold) => {
                    tx.commit().await?;
                    report.holds += 1;
                    report.points += hold.points;
                }
                Err(err) if err.code == "hold_not_pending" || err.code == "hold_not_expired" => {}
                Err(err) => return Err(err),
            }
        }
    }
    Ok(report)
}

/// Starts the periodic jobs (if enabled); they stop when `shutdown` turns true or its sender is
/// dropped. The first run of each job waits one interval, so a restart loop cannot hammer the
/// database.
pub fn spawn(state: Services, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let jobs = state.settings.jobs.clone();
        if !jobs.enabled {
            let _ = shutdown.wait_for(|stop| *stop).await;
            return;
        }
        let every = |ms: u64| {
            let period = Duration::from_millis(ms.max(MIN_INTERVAL_MS));
            let mut interval =
                tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        };
        let mut expiry = every(jobs.expiry_interval_ms);
        let mut holds = every(jobs.holds_interval_ms);
        let mut tiers = every(jobs.tiers_interval_ms);
        let mut settle = every(state.settings.settlement.run_interval_ms);
        let mut pending = every(jobs.pending_interval_ms);
        let mut engagement = every(jobs.engagement_interval_ms);
        loop {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                _ = expiry.tick() => {
                    log_outcome("expiry", run_expiry(&state.store, state.now_ms()).await);
                }
                _ = holds.tick() => {
                    log_outcome("holds", run_hold_timeouts(&state.store, state.now_ms()).await);
                }
                _ = tiers.tick() => {
                    let outcome = crate::domain::tiers::run_scheduled(
                        &state.store,
                        &state.settings.tiers,
                        state.settings.points.utc_offset_minutes,
                        state.now_ms(),
                    )
                    .await;
                    log_outcome("tiers", outcome);
                }
                _ = pending.tick() => {
                    log_outcome("pending", release_pending(&state).await);
                    // Renewal notices need no schedule of their own: they are due days ahead,
                    // and the pending-points interval is far shorter than a day.
                    log_outcome("membership-renewals", membership_renewals(&state).await);
                }
                _ = engagement.tick() => {
                    let now = state.now_ms();
                    let stages = crate::domain::stages::run(&state.store, now, None);
                    log_outcome("member-stages", stages.await);
                    let journeys =
                        crate::workflows::journeys::run(&state, None, now, None, |_, _| {});
                    log_outcome("journeys", journeys.await);
                    let offset = state.settings.points.utc_offset_minutes;
                    let rollups = crate::workflows::kpi_rollups::run(&state.store, offset, now, None);
                    log_outcome("kpi-rollups", rollups.await);
                }
                _ = settle.tick() => {
                    let outcome = crate::workflows::settlement::job::run(&state, state.now_ms()).await;
                    log_outcome("settlement", outcome);
                }
            }
        }
        tracing::debug!("background jobs stopped");
    })
}

/// Releases the points whose brand's return window has passed.
pub async fn release_pending(
    state: &Services,
) -> DomainResult<crate::domain::purchases::ReleaseReport> {
    crate::domain::purchases::release_due(
        &state.store,
        &state.settings.points,
        &state.settings.tiers,
        state.now_ms(),
    )
    .await
}

/// Records a renewal notice for every paid membership card inside its plan's notice window,
/// once per card and expiry.
pub async fn membership_renewals(
    state: &Services,
) -> DomainResult<crate::domain::membership::NoticeReport> {
    crate::domain::membership::record_notices(state.store.write(), state.now_ms()).await
}

fn log_outcome<T: std::fmt::Debug>(job: &str, outcome: Result<T, DomainError>) {
    match outcome {
        Ok(report) => tracing::debug!(job, ?report, "job ran"),
        Err(err) => tracing::warn!(job, error = %err, "job failed; it will run again"),
    }
}
