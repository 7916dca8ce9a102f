//! `coalition webhooks …`: a brand's subscriptions, the delivery log and manual replay,
//! directly against the configured database, with the same rules as the API (the SSRF guard
//! included). Every command prints JSON.

use crate::app::cli::fail;
use crate::domain::webhooks::{self, DeliveryFilter, DeliveryStatus, EventType};
use crate::interfaces::config::Config;

/// `coalition webhooks …`
#[derive(Debug, clap::Subcommand)]
pub enum WebhooksCommand {
    /// Subscriptions (every brand, or one), without their secrets.
    List {
        /// Only this brand.
        #[arg(long)]
        brand: Option<String>,
    },
    /// Subscribe a brand's endpoint to event types; prints the subscription and its signing
    /// secret (shown this once).
    Subscribe {
        /// The brand.
        #[arg(long)]
        brand: String,
        /// The endpoint (`http`/`https`, a public address unless
        /// `webhooks.allow_private_targets`).
        #[arg(long)]
        url: String,
        /// An event type (kebab-case, e.g. `purchase`), repeatable; `all` for every type.
        #[arg(long = "event", required = true)]
        events: Vec<String>,
    },
    /// The delivery log, newest first, with each delivery's attempts.
    Deliveries {
        /// Only this subscription.
        #[arg(long)]
        subscription: Option<String>,
        /// Only this state.
        #[arg(long, value_parser = ["pending", "delivered", "dead"])]
        status: Option<String>,
        /// Only this brand.
        #[arg(long)]
        brand: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Send a delivery again now (also a dead-lettered one), with a fresh retry budget.
    Replay {
        /// The delivery.
        delivery: String,
    },
    /// Run one pass of the delivery worker now and print its report.
    Deliver,
}

fn event_types(names: &[String]) -> anyhow::Result<Vec<EventType>> {
    if names.iter().any(|n| n == "all") {
        return Ok(EventType::ALL.to_vec());
    }
    names
        .iter()
        .map(|n| {
            EventType::parse(n).ok_or_else(|| {
                let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                anyhow::anyhow!("unknown event type {n:?}; expected one of {known:?} or all")
            })
        })
        .collect()
}

/// Runs one `coalition webhooks` command.
pub async fn run_command(config: Config, command: WebhooksCommand) -> anyhow::Result<()> {
    crate::app::cli::with_state(config, async |state| {
        let now = state.now_ms();
        let json = match command {
            WebhooksCommand::List { brand } => {
                let mut conn = state.store.read().acquire().await?;
                serde_json::to_string(
                    &webhooks::subscriptions(&mut conn, brand.as_deref())
                        .await
                        .map_err(fail)?,
                )?
            }
            WebhooksCommand::Subscribe { brand, url, events } => {
                let types = event_types(&events)?;
                let target = crate::workflows::webhooks::check_target(
                    &url,
                    state.settings.webhooks.allow_private_targets,
                )
                .await
                .map_err(fail)?;
                let mut tx = state.store.begin().await?;
                let created = webhooks::subscribe(
                    &mut tx,
                    &brand,
                    target.url.as_str(),
                    &types,
                    state.settings.webhooks.max_subscriptions_per_brand,
                    now,
                )
                .await
                .map_err(fail)?;
                tx.commit().await?;
                serde_json::to_string(&created)?
            }
            WebhooksCommand::Deliveries {
                subscription,
                status,
                brand,
                limit,
            } => {
                let status = match status.as_deref() {
                    Some("pending") => Some(DeliveryStatus::Pending),
                    Some("delivered") => Some(DeliveryStatus::Delivered),
                    Some("dead") => Some(DeliveryStatus::Dead),
                    _ => None,
                };
                let mut conn = state.store.read().acquire().await?;
                let filter = DeliveryFilter {
                    brand: brand.as_deref(),
                    subscription: subscription.as_deref(),
                    status,
                    limit,
                };
                serde_json::to_string(
                    &webhooks::deliveries(&mut conn, &filter)
                        .await
                        .map_err(fail)?,
                )?
            }
            WebhooksCommand::Replay { delivery } => {
                crate::foundation::ids::check_path_id("delivery", &delivery).map_err(fail)?;
                let mut tx = state.store.begin().await?;
                let view = webhooks::replay(&mut tx, &delivery, None, now)
                    .await
                    .map_err(fail)?;
                tx.commit().await?;
                serde_json::to_string(&view)?
            }
            WebhooksCommand::Deliver => serde_json::to_string(
                &crate::workflows::webhooks::run_once(state)
                    .await
                    .map_err(fail)?,
            )?,
        };
        println!("{json}");
        Ok(())
    })
    .await
}
