//! Settlement between brands: every money-relevant event becomes settlement lines (through the
//! settle hook of the plugin that governs it, or the platform's default rules), lines are
//! netted per period into statements, and reconciliation proves the result.
//!
//! # Layout
//! - the outbox of settleable events is [`crate::ledger::outbox`], written in the same
//!   transaction as the purchase, refund, redemption or coupon that caused them.
//! - [`rules`]: the `[settlement]` configuration and the platform's default rules (pure).
//! - [`job`]: the settle job: which rule governs an event, fail-closed holds, writing lines.
//! - [`parking`]: events a plugin failed on, parked with the reason and retried with backoff;
//!   an admin lists and retries them.
//! - [`periods`]: local-month periods, closing them, statements and bilateral netting.
//! - [`precedence`]: which settle plugins govern a brand's events, as an admin ordered them.
//! - [`reconcile`]: the checks that prove a period (exactly once, balance, statements,
//!   determinism, ledger).
//! - [`export`]: statements and lines as JSON and CSV; paging through lines.

pub mod export;
pub mod job;
pub mod parking;
pub mod periods;
pub mod precedence;
pub mod reconcile;
pub mod rules;
