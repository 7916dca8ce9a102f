//! Coalition host server: one member identity, one points wallet and one tier ladder shared by a
//! coalition of brands, with each brand's business logic running as a sandboxed plugin.
//!
//! # Layout
//! - [`cli`]: the `coalition` command line (serve, admin, members import/export, jobs).
//! - [`config`]: typed configuration from a TOML file plus `COALITION_*` environment overrides.
//! - [`clock`]: the injected clock (tests move time instead of sleeping).
//! - [`store`]: database connection (SQLite or PostgreSQL by URL), pools and migrations.
//! - [`idempotency`]: client keys that make every write safe to retry.
//! - [`error`]: the one API error type, rendered as `application/problem+json`.
//! - [`auth`]: API keys, roles (admin, brand, counter, member) and scope checks.
//! - [`brands`]: the coalition's brands and their earn rules.
//! - [`members`]: member profiles, tags, blocking, masking, import/export.
//! - [`tiers`]: the tier ladder, upgrades, scheduled re-evaluation with retention.
//! - [`ledger`]: double-entry points postings, lots with expiry, holds.
//! - [`purchases`]: purchases and refunds at brand counters (earn and pay with points).
//! - [`risk`]: frequency limits, blacklist and real-name checks on earning and redeeming.
//! - [`campaigns`]: coupon campaigns issued to a segment under a hard cap.
//! - [`pass`]: the signed offline member pass (ed25519), its keys, QR codes and verification.
//! - [`offline`]: syncing purchases a counter took while offline.
//! - [`jobs`]: background jobs (points expiry, hold timeouts, monthly tier evaluation).
//! - [`plugins`]: installed plugin versions, the member context plugins see, hook calls and
//!   their receipts (the sandbox itself is the `coalition-runtime` crate in `runtime/`).
//! - [`coupons`]: coupon templates and member coupons with unique codes.
//! - [`perks`]: perks merged with inventory and limits; redeeming them in one transaction.
//! - [`checkout`]: coupons applied to a cart at a counter, redeemed with the purchase.
//! - [`settlement`]: settleable events, settlement lines, periods, statements, reconciliation.
//! - [`audit`]: the hash-chained audit log of people's decisions.
//! - [`api`]: the HTTP router, middleware and OpenAPI document; one file per resource under `api/`.
//! - [`demo`]: the demo coalition seeded by `coalition serve --demo`.
//! - [`server`]: starting and gracefully stopping the HTTP server.
//! - [`unread_body`]: draining request bodies a handler left unread, so kept-alive connections
//!   stay usable.

pub mod api;
pub mod audit;
pub mod auth;
pub mod brands;
pub mod campaigns;
pub mod checkout;
pub mod cli;
pub mod clock;
pub mod config;
pub mod coupons;
pub mod demo;
pub mod error;
pub mod idempotency;
pub mod jobs;
pub mod ledger;
pub mod members;
pub mod offline;
pub mod pass;
pub mod perks;
pub mod plugins;
pub mod purchases;
pub mod risk;
pub mod server;
pub mod settlement;
pub mod store;
pub mod tiers;
pub mod unread_body;
