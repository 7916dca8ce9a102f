//! Operations that cross rooms: a purchase with its plugin bonuses and coupons, a perk
//! redemption, an offline sync, a settlement run, the background jobs. They take the
//! [`Services`] (the store, the clock, the plugin host and the config sections) and call down into
//! the domain, the ledger and the plugin host.
//!
//! - [`purchase`]: one purchase's walk: plugin bonuses, risk, coupons, ledger, receipts; refunds.
//! - [`perks`]: perks merged with inventory and limits; redeeming them in one transaction.
//! - [`checkout`]: coupons applied to a cart at a counter, redeemed with the purchase.
//! - [`offline`]: syncing purchases a counter took while offline.
//! - [`settlement`]: the settle job, periods, statements, reconciliation, parked events.
//! - [`jobs`]: background jobs (points expiry, hold timeouts, monthly tier evaluation).
//! - [`kpis`]: key figures over a date range by day, week or month, coalition-wide or per brand.
//! - [`journeys`]: lifecycle journeys: triggers, audiences, actions, capped idempotent runs.
//! - [`webhooks`]: the webhook delivery worker (signing, retries, dead letters, SSRF guard).

pub mod checkout;
pub mod jobs;
pub mod journeys;
pub mod kpi_rollups;
pub mod kpis;
pub mod offline;
pub mod overview;
pub mod perks;
pub mod purchase;
pub mod settlement;
pub mod webhooks;

use std::sync::Arc;

use crate::foundation::clock::Clock;
use crate::foundation::store::Store;
use crate::plugins::PluginHost;

/// What the workflows run on: the database, the clock, the plugin host, the perk listing cache and
/// the configuration sections they read. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Services {
    /// The database.
    pub store: Store,
    /// The injected clock.
    pub clock: Arc<dyn Clock>,
    /// The plugin runtime and the active plugin versions.
    pub plugins: Arc<PluginHost>,
    /// Plugin perk listings per member (see [`perks`]).
    pub perk_cache: perks::PerkCache,
    /// The configuration sections the workflows read.
    pub settings: Arc<Settings>,
}

/// The configuration sections the workflows read, each owned by its own layer; the application
/// builds it from the whole configuration file.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Points: expiry policy, conversion rate, holds, the programme's time zone.
    pub points: crate::ledger::PointsConfig,
    /// The tier ladder and its window.
    pub tiers: crate::domain::tiers::TiersConfig,
    /// Perk listing cache, checkout reservations, coupons per order.
    pub perks: perks::PerksConfig,
    /// Settlement rules and the settle job's interval.
    pub settlement: settlement::rules::SettlementConfig,
    /// Stored value: balance limits, real-name threshold, reserve and dormancy.
    pub stored_value: crate::ledger::stored_value::StoredValueConfig,
    /// The paid membership card: plan count and default renewal notice.
    pub membership: crate::domain::membership::MembershipConfig,
    /// The offline member pass.
    pub pass: crate::domain::pass::PassConfig,
    /// Redemption frequency limits and the real-name threshold.
    pub risk: crate::domain::risk::RiskConfig,
    /// Background job intervals.
    pub jobs: jobs::JobsConfig,
    /// Webhook delivery: worker, timeouts, retries, the SSRF development switch.
    pub webhooks: webhooks::WebhooksConfig,
}

impl Services {
    /// Wires the services around an open store and a plugin host.
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        plugins: Arc<PluginHost>,
        settings: Settings,
    ) -> Self {
        Self {
            perk_cache: perks::perk_cache(&settings.perks),
            store,
            clock,
            plugins,
            settings: Arc::new(settings),
        }
    }

    /// The current time in Unix milliseconds, from the injected clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}
