//! `coalition stored-value …`: top up, read a member's balance, report the outstanding
//! liability and set a brand's reserve, directly against the configured database. Each write
//! is one transaction with the same rules as the API; a top-up id is unique per brand, so a
//! re-run after a failure never adds the money twice (`topup_exists`).

use crate::app::cli::fail;
use crate::domain::risk;
use crate::interfaces::config::Config;
use crate::ledger::stored_value::{self, ReserveRequest, TopupRequest};

/// Actor of audit entries written from the command line.
const CLI_ACTOR: &str = "cli:stored-value";

/// `coalition stored-value …`
#[derive(Debug, clap::Subcommand)]
pub enum StoredValueCommand {
    /// Top up a member at a brand (which holds the money); prints the top-up as JSON.
    Topup {
        /// The brand taking the money.
        #[arg(long)]
        brand: String,
        /// The member.
        #[arg(long)]
        member: String,
        /// Cents.
        #[arg(long)]
        amount_cents: i64,
        /// The brand's top-up id (unique per brand: a re-run is refused, not doubled).
        #[arg(long)]
        topup_id: String,
    },
    /// A member's balance, funds by brand and newest entries, as JSON.
    Balance {
        /// The member.
        member: String,
    },
    /// Outstanding stored value per holding brand, reserves and dormant balances, as JSON.
    Liability {
        /// Only this brand.
        #[arg(long)]
        brand: Option<String>,
    },
    /// Set a brand's reserve percentage (audited); omit `--percent` for the default.
    Reserve {
        /// The brand.
        #[arg(long)]
        brand: String,
        /// Percent, 0..=100.
        #[arg(long)]
        percent: Option<i64>,
        /// Why, for the audit log.
        #[arg(long)]
        reason: String,
    },
}

/// Runs one `coalition stored-value` command.
pub async fn run_command(config: Config, command: StoredValueCommand) -> anyhow::Result<()> {
    crate::app::cli::with_state(config, async |state| dispatch(state, command).await).await
}

async fn dispatch(
    state: &crate::interfaces::api::AppState,
    command: StoredValueCommand,
) -> anyhow::Result<()> {
    let config = &state.settings.stored_value;
    let now = state.now_ms();
    let json = match command {
        StoredValueCommand::Topup {
            brand,
            member,
            amount_cents,
            topup_id,
        } => {
            let mut tx = state.store.begin().await?;
            crate::ledger::require_brand_exists(&mut tx, &brand)
                .await
                .map_err(fail)?;
            let verified = risk::verified_at(&mut tx, &member)
                .await
                .map_err(fail)?
                .is_some();
            let req = TopupRequest {
                topup_id,
                member_id: member,
                amount_cents,
            };
            let view = stored_value::topup(
                &mut tx,
                state.store.backend(),
                config,
                &brand,
                &req,
                verified,
                now,
            )
            .await
            .map_err(fail)?;
            tx.commit().await?;
            serde_json::to_string(&view)?
        }
        StoredValueCommand::Balance { member } => {
            let verified = {
                let mut conn = state.store.read().acquire().await?;
                risk::verified_at(&mut conn, &member)
                    .await
                    .map_err(fail)?
                    .is_some()
            };
            let view = stored_value::view(state.store.read(), config, &member, verified)
                .await
                .map_err(fail)?;
            serde_json::to_string(&view)?
        }
        StoredValueCommand::Liability { brand } => {
            let mut conn = state.store.read().acquire().await?;
            let report = stored_value::liability(&mut conn, config, brand.as_deref(), now)
                .await
                .map_err(fail)?;
            serde_json::to_string(&report)?
        }
        StoredValueCommand::Reserve {
            brand,
            percent,
            reason,
        } => {
            let mut tx = state.store.begin().await?;
            let req = ReserveRequest {
                reserve_percent: percent,
                reason,
            };
            stored_value::set_reserve(&mut tx, state.store.backend(), &brand, &req, CLI_ACTOR, now)
                .await
                .map_err(fail)?;
            let line = stored_value::reserve_line(&mut tx, config, &brand, now)
                .await
                .map_err(fail)?;
            tx.commit().await?;
            serde_json::to_string(&line)?
        }
    };
    println!("{json}");
    Ok(())
}
