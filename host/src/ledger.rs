//! The points ledger: append-only double-entry postings in integer points, lots with expiry,
//! and two-phase holds.
//!
//! # Accounts
//! Member accounts (one each per member):
//! - `wallet`: spendable points. Materialised in `point_wallets.balance`, which is never negative
//!   and always equals both the sum of the wallet's postings and the sum of remaining lots.
//! - `held`: points reserved by pending holds (`point_wallets.held`).
//! - `receivable`: points a refund had to claw back after the member had already spent them;
//!   its balance is minus `point_wallets.debt`, settled from the member's next credits.
//!
//! System accounts, per brand (`brand_id` NULL = the platform): `issuance` (source of earned
//! points), `redemption` (points spent at a brand), `expiry` and `adjustment`. Their balances are
//! derived from postings, not materialised: a materialised row would make every purchase of a
//! brand queue on one hot row.
//!
//! # Rules
//! - Every write is a journal entry of two or more postings summing to zero; nothing is ever
//!   edited — a correction is a new entry.
//! - Member balances change only through one guarded `UPDATE … WHERE balance + delta >= 0`
//!   (plus `CHECK` constraints), after the wallet row is locked (`FOR UPDATE` on PostgreSQL, the
//!   single writer on SQLite), so lot reads after the lock are consistent.
//! - Every credit is a lot with an expiry from the `[points]` policy. Debits draw from lots
//!   oldest-expiry first and record each draw in `lot_consumptions`.
//! - Expired lots are posted to the `expiry` account by the expiry job, and also lazily whenever a
//!   wallet is locked for a write, so a member can never spend points that are already past due.
//! - Points given back (hold release, refund restore) become new lots naming the consumption they
//!   reverse. A released hold keeps the original expiry (as if it never happened); a refund keeps
//!   the original expiry but never less than `restore_min_validity_days` from the refund.
//!
//! # Layout
//! - [`config`]: the `[points]` section: expiry policy, redeem rate, time zone; points in cents.
//! - [`wallets`]: locking a member's wallet for a write.
//! - [`entries`]: journal entries, accounts and postings.
//! - [`lots`]: drawing lots oldest-expiry first; restoring what a reversal gives back.
//! - [`expiry`]: expiring lots past due.
//! - [`debt`]: credits and debits; refund debt settled by the next credit.
//! - [`adjustments`]: manual adjustments with a reason.
//! - [`holds`]: two-phase holds.
//! - [`views`]: the points view and history.
//! - [`audit`]: the hash-chained audit log of people's decisions.
//! - [`outbox`]: settleable events, written in the same transaction as what caused them.
//! - [`budgets`]: partner budgets, reserved in the transaction of the issue they fund.
//! - [`pending`]: points waiting out a brand's return window (visible, not spendable).
//! - [`stored_value`]: the prepaid balance in cents, per holding brand, with its own journal.

pub mod audit;
pub mod budgets;
pub mod outbox;
pub mod pending;
pub mod stored_value;

pub mod adjustments;
pub mod config;
pub mod debt;
pub mod entries;
pub mod expiry;
pub mod holds;
pub mod lots;
pub mod views;
pub mod wallets;

pub use adjustments::*;
pub use config::*;
pub use debt::*;
pub use entries::*;
pub use expiry::*;
pub use holds::*;
pub use lots::*;
pub use views::*;
pub use wallets::*;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::foundation::clock::{local_month_start_ms, local_year_month, DAY_MS};
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::{for_update, new_id, Backend};

/// Largest number of points one operation may move; far above any real basket, and small enough
/// that sums of many operations cannot overflow `i64`.
pub const MAX_POINTS_PER_OPERATION: i64 = 1_000_000_000_000;
/// Longest free-text reason on an adjustment, hold or entry.
pub const MAX_REASON_LEN: usize = 200;
/// Lots fetched per round trip while drawing down a large debit.
const LOT_BATCH: i64 = 200;
/// Rows per multi-row `INSERT`: well under SQLite's 32,766 bound parameters at 12 columns.
const INSERT_CHUNK_ROWS: usize = 500;
/// Lots listed in the points view (the totals still cover all lots).
pub const MAX_LOTS_SHOWN: i64 = 100;
/// Upcoming expiry dates listed in the points view.
const MAX_UPCOMING_EXPIRIES: usize = 12;
/// Pending holds listed in the points view.
const MAX_HOLDS_SHOWN: i64 = 50;
/// Largest page of the points history.
pub const MAX_HISTORY_PAGE: i64 = 200;
/// Shortest hold: anything shorter would expire before a counter could capture it.
pub const MIN_HOLD_TTL_MS: i64 = 1_000;

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_772_445_600_000; // 2026-03-02T10:00:00Z

    #[test]
    fn expiry_days_after_earn() {
        let config = PointsConfig::default();
        assert_eq!(config.expiry_for(T).ok(), Some(T + 365 * DAY_MS));
    }

    #[test]
    fn expiry_end_of_month_respects_offset() {
        let config = PointsConfig {
            expiry_policy: ExpiryPolicy::EndOfMonth,
            expiry_periods_after: 0,
            utc_offset_minutes: 480,
            ..PointsConfig::default()
        };
        // 2026-04-01T00:00+08:00 = 2026-03-31T16:00Z.
        assert_eq!(config.expiry_for(T).ok(), Some(1_774_972_800_000));
        // 2026-03-31T20:00Z is already April locally: expires at the end of April.
        let late = 1_774_987_200_000;
        assert_eq!(config.expiry_for(late).ok(), Some(1_777_564_800_000));
    }

    #[test]
    fn expiry_end_of_year_after_one_year() {
        let config = PointsConfig {
            expiry_policy: ExpiryPolicy::EndOfYear,
            expiry_periods_after: 1,
            ..PointsConfig::default()
        };
        // 2028-01-01T00:00Z.
        assert_eq!(config.expiry_for(T).ok(), Some(1_830_297_600_000));
    }

    #[test]
    fn points_convert_only_exactly() {
        let config = PointsConfig {
            redeem_points: 3,
            redeem_cents: 2,
            ..PointsConfig::default()
        };
        assert_eq!(config.points_to_cents(300), Some(200));
        assert_eq!(config.points_to_cents(301), None);
    }
}
