//! The programme's rules, one room per noun. Each function takes what it needs (a connection,
//! its config section, `now_ms`) and returns a [`crate::foundation::error::DomainError`].
//!
//! - [`access`]: who acts: roles (admin, brand, counter, member), principals, API keys.
//! - [`members`]: member profiles, tags, blocking, masking, import/export.
//! - [`brands`]: the coalition's brands and their earn rules.
//! - [`tiers`]: the tier ladder, upgrades, scheduled re-evaluation with retention.
//! - [`risk`]: frequency limits, blacklist and real-name checks on earning and redeeming.
//! - [`coupons`]: coupon templates and member coupons with unique codes.
//! - [`pass`]: the signed offline member pass (ed25519), its keys, QR codes and verification.
//! - [`campaigns`]: coupon campaigns issued to a segment under a hard cap.
//! - [`membership`]: the paid membership card: plans, cards, fees, renewals, cancellation.
//! - [`purchases`]: recording purchases and refunds at brand counters (earn and pay with points).
//! - [`stages`]: member lifecycle stages (welcome … churned), their rules, history, churn risk.
//! - [`referrals`]: referral programmes, invite codes, rewards on a first purchase, claw-backs.
//! - [`rfm`]: recency, frequency and monetary quintiles of members, in SQL.
//! - [`webhooks`]: brands' webhook subscriptions and the event outbox ([`webhooks::record`]).

pub mod access;
pub mod brands;
pub mod campaigns;
pub mod coupons;
pub mod members;
pub mod membership;
pub mod pass;
pub mod purchases;
pub mod referrals;
pub mod rfm;
pub mod risk;
pub mod stages;
pub mod tiers;
pub mod webhooks;
