//! `coalition budgets …`: list, set and change a brand's budgets directly against the
//! configured database, with the same rules as the API (`docs/LEDGER.md`).

use crate::app::cli::fail;
use crate::interfaces::config::Config;
use crate::ledger::budgets::{self, NewBudget, UpdateBudget};

/// Actor recorded on budgets created from the command line.
const CLI_ACTOR: &str = "cli:budgets";

/// `coalition budgets …`
#[derive(Debug, clap::Subcommand)]
pub enum BudgetsCommand {
    /// A brand's budgets with this period's usage, as JSON.
    List {
        /// The funding brand.
        #[arg(long)]
        brand: String,
    },
    /// Set a budget; prints it as JSON.
    Create {
        /// The funding brand.
        #[arg(long)]
        brand: String,
        /// `bonus_points`, `perk_value` or `coupon_value`.
        #[arg(long)]
        kind: String,
        /// `day` or `month`.
        #[arg(long, default_value = "month")]
        period: String,
        /// Points or cents per period.
        #[arg(long)]
        amount: i64,
        /// Only this plugin's issues (default: all of the brand's).
        #[arg(long)]
        plugin: Option<String>,
        /// Only this campaign's coupons (`coupon_value` only; default: every issue).
        #[arg(long)]
        campaign: Option<String>,
        /// Alert threshold, percent.
        #[arg(long, default_value_t = 80)]
        alert_percent: i64,
        /// A name for people.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Change a budget's amount, alert threshold or whether it applies; prints it as JSON.
    Update {
        /// The funding brand.
        #[arg(long)]
        brand: String,
        /// The budget id.
        #[arg(long)]
        id: String,
        /// New amount per period.
        #[arg(long)]
        amount: Option<i64>,
        /// New alert threshold, percent.
        #[arg(long)]
        alert_percent: Option<i64>,
        /// `true` or `false`.
        #[arg(long)]
        active: Option<bool>,
    },
}

/// Runs one `coalition budgets` command.
pub async fn run_command(config: Config, command: BudgetsCommand) -> anyhow::Result<()> {
    crate::app::cli::with_state(config, async |state| dispatch(state, command).await).await
}

async fn dispatch(
    state: &crate::interfaces::api::AppState,
    command: BudgetsCommand,
) -> anyhow::Result<()> {
    let offset = state.settings.points.utc_offset_minutes;
    let now = state.now_ms();
    let (brand, only, mut tx) = match command {
        BudgetsCommand::List { brand } => (brand, None, state.store.begin().await?),
        BudgetsCommand::Create {
            brand,
            kind,
            period,
            amount,
            plugin,
            campaign,
            alert_percent,
            label,
        } => {
            // The enums' own spellings, as the API takes them.
            let req = NewBudget {
                kind: serde_json::from_value(serde_json::Value::String(kind.clone()))
                    .map_err(|_| anyhow::anyhow!("unknown kind {kind:?}"))?,
                period: serde_json::from_value(serde_json::Value::String(period.clone()))
                    .map_err(|_| anyhow::anyhow!("unknown period {period:?}"))?,
                amount,
                plugin,
                campaign_id: campaign,
                alert_percent,
                label,
            };
            let mut tx = state.store.begin().await?;
            let id = budgets::create(&mut tx, &brand, &req, CLI_ACTOR, now)
                .await
                .map_err(fail)?;
            (brand, Some(id), tx)
        }
        BudgetsCommand::Update {
            brand,
            id,
            amount,
            alert_percent,
            active,
        } => {
            let req = UpdateBudget {
                amount,
                alert_percent,
                active,
            };
            let mut tx = state.store.begin().await?;
            budgets::update(&mut tx, &brand, &id, &req, now)
                .await
                .map_err(fail)?;
            (brand, Some(id), tx)
        }
    };
    let list = budgets::list(&mut tx, &brand, only.as_deref(), offset, now)
        .await
        .map_err(fail)?;
    tx.commit().await?;
    match only {
        Some(_) => println!(
            "{}",
            serde_json::to_string(&list.first().ok_or_else(|| anyhow::anyhow!("not found"))?)?
        ),
        None => println!("{}", serde_json::to_string(&list)?),
    }
    Ok(())
}
