//! Coalition host server: one member identity, one points wallet and one tier ladder shared by a
//! coalition of brands, with each brand's business logic running as a sandboxed plugin.
//!
//! # Layout
//! Seven layers; each module imports only its own layer and the layers listed above it here
//! (`src/layers_check.rs` checks it on every test run; `docs/ARCHITECTURE.md` draws it).
//! - [`foundation`]: no HTTP, no domain.
//!   - [`foundation::store`]: the database (SQLite or PostgreSQL by URL), pools, migrations, ids.
//!   - [`foundation::clock`]: the injected clock and the programme's calendar.
//!   - [`foundation::error`]: the domain error: a kind and a stable code, no HTTP status.
//!   - [`foundation::ids`]: checking ids that arrive in paths.
//! - [`ledger`]: the double-entry points ledger.
//!   - [`ledger::config`], [`ledger::wallets`], [`ledger::entries`], [`ledger::lots`],
//!     [`ledger::expiry`], [`ledger::debt`], [`ledger::adjustments`], [`ledger::holds`],
//!     [`ledger::views`]: its parts, one file each.
//!   - [`ledger::audit`]: the hash-chained audit log of people's decisions.
//!   - [`ledger::outbox`]: settleable events, written in the same transaction as their cause.
//! - [`domain`]: the programme's rules, one room per noun.
//!   - [`domain::access`]: roles, principals, API keys.
//!   - [`domain::members`]: member profiles, tags, blocking, masking, import/export.
//!   - [`domain::brands`]: brands and their earn rules.
//!   - [`domain::tiers`]: the tier ladder, upgrades, scheduled re-evaluation.
//!   - [`domain::risk`]: frequency limits, blacklist and real-name checks.
//!   - [`domain::coupons`]: coupon templates and member coupons.
//!   - [`domain::pass`]: the signed offline member pass.
//!   - [`domain::campaigns`]: coupon campaigns to a segment under a hard cap.
//!   - [`domain::purchases`]: pricing, recording, reading and refunding purchases.
//!   - [`domain::webhooks`]: brands' webhook subscriptions and the event outbox they read.
//!   - [`domain::stages`]: member lifecycle stages, their rules, history and churn risk.
//!   - [`domain::referrals`]: referral programmes, invite codes, rewards and claw-backs.
//!   - [`domain::rfm`]: RFM quintiles of members, computed in SQL.
//! - [`plugins`]: the plugin host on `coalition-runtime`: [`plugins::registry`],
//!   [`plugins::context`], [`plugins::receipts`], [`plugins::lifecycle`], [`plugins::signing`],
//!   [`plugins::dryrun`], [`plugins::sync`].
//! - [`workflows`]: operations across rooms, on [`workflows::Services`].
//!   - [`workflows::purchase`]: one purchase's walk (plugin bonuses, risk, coupons, ledger).
//!   - [`workflows::perks`]: perks with inventory and limits; redeeming them.
//!   - [`workflows::checkout`]: coupons applied to a cart at a counter.
//!   - [`workflows::offline`]: syncing purchases a counter took offline.
//!   - [`workflows::settlement`]: settle job, periods, statements, reconciliation, parking.
//!   - [`workflows::jobs`]: background jobs (expiry, hold timeouts, tier evaluation).
//!   - [`workflows::journeys`]: lifecycle journeys: triggers, actions, capped idempotent runs.
//!   - [`workflows::overview`]: the programme in numbers (activity, repurchase, liability).
//!   - [`workflows::kpis`]: KPIs by day, week or month, JSON and CSV.
//!   - [`workflows::webhooks`]: delivering webhooks: signing, retries, dead letters, SSRF guard.
//! - [`interfaces`]: how people and machines reach the workflows.
//!   - [`interfaces::config`]: the whole configuration file and its environment overrides.
//!   - [`interfaces::api`]: the HTTP API: state, authentication, idempotency, problem+json, one
//!     file per resource.
//!   - [`interfaces::console`]: the web console for admins, brands and members under
//!     `/console`, server-rendered on top of the API (in-process calls with the signed-in key).
//! - [`app`]: the process.
//!   - [`app::server`]: building the state, serving, graceful shutdown.
//!   - [`app::cli`]: the `coalition` command line.
//!   - [`app::demo`]: the demo coalition of `coalition serve --demo`.

pub mod app;
pub mod domain;
pub mod foundation;
pub mod interfaces;
pub mod ledger;
pub mod plugins;
pub mod workflows;

#[cfg(test)]
mod layers_check;
