//! `coalition membership …`: plans, selling and cancelling a card, a member's card, renewals
//! due and the fee revenue, directly against the configured database. Each write is one
//! transaction with the same rules as the API; a purchase id is unique per selling brand, so a
//! re-run after a failure never sells twice (`membership_purchase_exists`).

use crate::app::cli::fail;
use crate::domain::membership::{self, BuyRequest, Payment, Period, PlanRequest};
use crate::interfaces::config::Config;

/// `coalition membership …`
#[derive(Debug, clap::Subcommand)]
pub enum MembershipCommand {
    /// Every plan, as JSON.
    Plans,
    /// Create a plan; prints it as JSON.
    CreatePlan {
        /// Plan id.
        #[arg(long)]
        id: String,
        /// Display title.
        #[arg(long)]
        title: String,
        /// The owning brand (receives the fee).
        #[arg(long)]
        brand: String,
        /// Fee per period, cents.
        #[arg(long)]
        fee_cents: i64,
        /// `month` (30 days) or `year` (365 days).
        #[arg(long, value_parser = ["month", "year"])]
        period: String,
        /// Benefit flags (kebab-case), repeatable.
        #[arg(long = "benefit")]
        benefits: Vec<String>,
        /// Multiplier on base earn, percent (100..=500).
        #[arg(long, default_value_t = 100)]
        multiplier_percent: i64,
        /// Tier floor while the card is in force.
        #[arg(long)]
        tier_floor: Option<String>,
        /// Renewal notice window, days (default from `[membership]`).
        #[arg(long)]
        notice_days: Option<i64>,
    },
    /// Sell (or renew) a card at a brand; prints the card and the payment as JSON.
    Buy {
        /// The member.
        #[arg(long)]
        member: String,
        /// The plan.
        #[arg(long)]
        plan: String,
        /// The selling brand (default: the plan's owner).
        #[arg(long)]
        brand: Option<String>,
        /// The selling brand's order id (unique per brand: a re-run is refused, not doubled).
        #[arg(long)]
        purchase_id: String,
        /// `cash` or `stored_value`.
        #[arg(long, default_value = "cash", value_parser = ["cash", "stored_value"])]
        payment: String,
    },
    /// Cancel a member's card now with its pro-rata refund; prints the refund as JSON.
    Cancel {
        /// The member.
        member: String,
    },
    /// A member's card, plan, notices and fee history, as JSON.
    Show {
        /// The member.
        member: String,
    },
    /// Cards in force expiring soon, as JSON.
    Renewals {
        /// Within this many days (default: each plan's notice window).
        #[arg(long)]
        within_days: Option<i64>,
        /// Only this owning brand.
        #[arg(long)]
        brand: Option<String>,
    },
    /// Fee revenue per owning brand, as JSON.
    Revenue {
        /// Only this brand.
        #[arg(long)]
        brand: Option<String>,
    },
}

/// Runs one `coalition membership` command.
pub async fn run_command(config: Config, command: MembershipCommand) -> anyhow::Result<()> {
    crate::app::cli::with_state(config, async |state| dispatch(state, command).await).await
}

async fn dispatch(
    state: &crate::interfaces::api::AppState,
    command: MembershipCommand,
) -> anyhow::Result<()> {
    let now = state.now_ms();
    let json = match command {
        MembershipCommand::Plans => serde_json::to_string(
            &membership::plans(state.store.read(), None)
                .await
                .map_err(fail)?,
        )?,
        MembershipCommand::CreatePlan {
            id,
            title,
            brand,
            fee_cents,
            period,
            benefits,
            multiplier_percent,
            tier_floor,
            notice_days,
        } => {
            let req = PlanRequest {
                id,
                title,
                brand_id: brand,
                fee_cents,
                period: if period == "year" {
                    Period::Year
                } else {
                    Period::Month
                },
                benefits,
                points_multiplier_percent: multiplier_percent,
                tier_floor,
                renewal_notice_days: notice_days,
                active: true,
            };
            let mut tx = state.store.begin().await?;
            let plan = membership::create_plan(
                &mut tx,
                &state.settings.membership,
                &state.settings.tiers,
                &req,
                now,
            )
            .await
            .map_err(fail)?;
            tx.commit().await?;
            serde_json::to_string(&plan)?
        }
        MembershipCommand::Buy {
            member,
            plan,
            brand,
            purchase_id,
            payment,
        } => {
            let mut tx = state.store.begin().await?;
            let selling = match brand {
                Some(brand) => brand,
                None => {
                    membership::plan(&mut tx, &plan)
                        .await
                        .map_err(fail)?
                        .brand_id
                }
            };
            let req = BuyRequest {
                purchase_id,
                plan_id: plan,
                payment: if payment == "stored_value" {
                    Payment::StoredValue
                } else {
                    Payment::Cash
                },
                brand_id: Some(selling.clone()),
            };
            let view =
                membership::buy(&mut tx, state.store.backend(), &selling, &member, &req, now)
                    .await
                    .map_err(fail)?;
            tx.commit().await?;
            serde_json::to_string(&view)?
        }
        MembershipCommand::Cancel { member } => {
            let mut tx = state.store.begin().await?;
            let view = membership::cancel(&mut tx, state.store.backend(), None, &member, now)
                .await
                .map_err(fail)?;
            tx.commit().await?;
            serde_json::to_string(&view)?
        }
        MembershipCommand::Show { member } => serde_json::to_string(
            &membership::view(state.store.read(), &member, now)
                .await
                .map_err(fail)?,
        )?,
        MembershipCommand::Renewals { within_days, brand } => serde_json::to_string(
            &membership::renewals(state.store.read(), brand.as_deref(), within_days, now)
                .await
                .map_err(fail)?,
        )?,
        MembershipCommand::Revenue { brand } => serde_json::to_string(
            &membership::revenue(state.store.read(), brand.as_deref(), now)
                .await
                .map_err(fail)?,
        )?,
    };
    println!("{json}");
    Ok(())
}
