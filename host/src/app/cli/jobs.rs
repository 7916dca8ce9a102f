//! `coalition jobs run`: the background jobs, once, from the command line.

use crate::foundation::error::DomainError;
use crate::interfaces::config::Config;
use crate::workflows::jobs;

/// `coalition jobs …`
#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// Run a job once now against the configured database and print its report as JSON
    /// (for cron, with `[jobs] enabled = false` on the servers).
    Run {
        /// Which job.
        #[arg(value_enum, default_value = "all")]
        job: JobName,
    },
}

/// A job's name on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JobName {
    /// Every job.
    All,
    /// Points expiry.
    Expiry,
    /// Hold timeouts.
    Holds,
    /// This month's tier evaluation, if it has not run yet.
    Tiers,
    /// Points past their brand's return window.
    Pending,
    /// Renewal notices of paid membership cards about to expire.
    MembershipRenewals,
    /// One pass of the webhook delivery worker (every due delivery attempted once).
    WebhookDeliveries,
    /// Every member's lifecycle stage (changes recorded once, with their webhook events).
    MemberStages,
    /// The daily KPI roll-ups: every local day that has ended is closed.
    KpiRollups,
}

/// Runs `coalition jobs run`.
pub async fn run_command(config: Config, command: JobsCommand) -> anyhow::Result<()> {
    config.validate_sections()?;
    let JobsCommand::Run { job } = command;
    let state = crate::app::server::build_state(
        config,
        std::sync::Arc::new(crate::foundation::clock::SystemClock),
    )
    .await?;
    let now = state.now_ms();
    let fail = |err: DomainError| anyhow::anyhow!("{err}");
    let mut report = serde_json::Map::new();
    if matches!(job, JobName::All | JobName::Expiry) {
        let r = jobs::run_expiry(&state.store, now).await.map_err(fail)?;
        report.insert("expiry".into(), serde_json::to_value(r)?);
    }
    if matches!(job, JobName::All | JobName::Holds) {
        let r = jobs::run_hold_timeouts(&state.store, now)
            .await
            .map_err(fail)?;
        report.insert("holds".into(), serde_json::to_value(r)?);
    }
    if matches!(job, JobName::All | JobName::Pending) {
        let r = jobs::release_pending(&state).await.map_err(fail)?;
        report.insert("pending".into(), serde_json::to_value(r)?);
    }
    if matches!(job, JobName::All | JobName::MembershipRenewals) {
        let r = jobs::membership_renewals(&state).await.map_err(fail)?;
        report.insert("membership_renewals".into(), serde_json::to_value(r)?);
    }
    if matches!(job, JobName::All | JobName::WebhookDeliveries) {
        let r = crate::workflows::webhooks::run_once(&state)
            .await
            .map_err(fail)?;
        report.insert("webhook_deliveries".into(), serde_json::to_value(r)?);
    }
    if matches!(job, JobName::All | JobName::MemberStages) {
        let r = crate::domain::stages::run(&state.store, now, None)
            .await
            .map_err(fail)?;
        report.insert("member_stages".into(), serde_json::to_value(r)?);
    }
    if matches!(job, JobName::All | JobName::KpiRollups) {
        let offset = state.settings.points.utc_offset_minutes;
        let mut days = 0;
        let r = loop {
            let r = crate::workflows::kpi_rollups::run(&state.store, offset, now, None)
                .await
                .map_err(fail)?;
            days += r.days_closed;
            if !r.more {
                break crate::workflows::kpi_rollups::RollupReport {
                    days_closed: days,
                    ..r
                };
            }
        };
        report.insert("kpi_rollups".into(), serde_json::to_value(r)?);
    }
    if matches!(job, JobName::All | JobName::Tiers) {
        let r = crate::domain::tiers::run_scheduled(
            &state.store,
            &state.settings.tiers,
            state.settings.points.utc_offset_minutes,
            now,
        )
        .await
        .map_err(fail)?;
        report.insert("tiers".into(), serde_json::to_value(r)?);
    }
    println!("{}", serde_json::Value::Object(report));
    state.store.close().await;
    Ok(())
}
