//! `coalition referrals …`: programmes, switching one on or off, a member's invite code and
//! referrals, and a programme's figures, directly against the configured database. Each write
//! is one transaction with the same rules as the API.

use crate::app::cli::fail;
use crate::domain::referrals::{self, ProgrammeRequest};
use crate::interfaces::config::Config;

/// `coalition referrals …`
#[derive(Debug, clap::Subcommand)]
pub enum ReferralsCommand {
    /// Every programme, as JSON.
    Programmes,
    /// Create a programme; prints it as JSON.
    CreateProgramme {
        /// Programme id.
        #[arg(long)]
        id: String,
        /// Display title.
        #[arg(long)]
        title: String,
        /// Points for the referrer.
        #[arg(long)]
        referrer_points: i64,
        /// Points for the invitee.
        #[arg(long)]
        invitee_points: i64,
        /// The funding brand (default: the platform).
        #[arg(long)]
        brand: Option<String>,
        /// Smallest qualifying eligible spend, cents.
        #[arg(long, default_value_t = 0)]
        min_purchase_cents: i64,
        /// Rewarded referrals per referrer per month.
        #[arg(long, default_value_t = 10)]
        cap_per_month: i64,
    },
    /// Switch a programme off (no new codes attach; pending referrals earn nothing).
    Deactivate {
        /// Programme id.
        id: String,
    },
    /// Switch a programme back on.
    Activate {
        /// Programme id.
        id: String,
    },
    /// A member's invite code (made on first use), as JSON.
    Code {
        /// The member.
        member: String,
    },
    /// A member's code, who invited them and whom they invited, as JSON.
    Show {
        /// The member.
        member: String,
    },
    /// A programme's figures, as JSON.
    Stats {
        /// Programme id.
        id: String,
    },
}

/// Runs one `coalition referrals` command.
pub async fn run_command(config: Config, command: ReferralsCommand) -> anyhow::Result<()> {
    crate::app::cli::with_state(config, async |state| dispatch(state, command).await).await
}

async fn dispatch(
    state: &crate::interfaces::api::AppState,
    command: ReferralsCommand,
) -> anyhow::Result<()> {
    let now = state.now_ms();
    let json = match command {
        ReferralsCommand::Programmes => serde_json::to_string(
            &referrals::programmes(state.store.read())
                .await
                .map_err(fail)?,
        )?,
        ReferralsCommand::CreateProgramme {
            id,
            title,
            referrer_points,
            invitee_points,
            brand,
            min_purchase_cents,
            cap_per_month,
        } => {
            let req = ProgrammeRequest {
                id,
                title,
                referrer_points,
                invitee_points,
                funding_brand: brand,
                min_purchase_cents,
                cap_per_referrer_per_month: cap_per_month,
                starts_at_ms: None,
                ends_at_ms: None,
            };
            let mut tx = state.store.begin().await?;
            let view = referrals::create_programme(&mut tx, &req, now)
                .await
                .map_err(fail)?;
            tx.commit().await?;
            serde_json::to_string(&view)?
        }
        ReferralsCommand::Deactivate { id } => set_active(state, &id, false, now).await?,
        ReferralsCommand::Activate { id } => set_active(state, &id, true, now).await?,
        ReferralsCommand::Code { member } => {
            let mut tx = state.store.begin().await?;
            let (code, _) = referrals::invite_code(&mut tx, &member, now)
                .await
                .map_err(fail)?;
            tx.commit().await?;
            serde_json::to_string(&code)?
        }
        ReferralsCommand::Show { member } => serde_json::to_string(
            &referrals::member_referrals(state.store.read(), &member)
                .await
                .map_err(fail)?,
        )?,
        ReferralsCommand::Stats { id } => serde_json::to_string(
            &referrals::programme_stats(state.store.read(), &id)
                .await
                .map_err(fail)?,
        )?,
    };
    println!("{json}");
    Ok(())
}

async fn set_active(
    state: &crate::interfaces::api::AppState,
    id: &str,
    active: bool,
    now: i64,
) -> anyhow::Result<String> {
    let mut tx = state.store.begin().await?;
    let view = referrals::set_active(&mut tx, id, active, now)
        .await
        .map_err(fail)?;
    tx.commit().await?;
    Ok(serde_json::to_string(&view)?)
}
