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

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::clock::DAY_MS;
use crate::error::{ApiError, ApiResult};
use crate::store::{new_id, Backend};

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

// ---------------------------------------------------------------------------------------------
// Configuration

/// When an earned point expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryPolicy {
    /// `expiry_days` after the day it was earned.
    DaysAfterEarn,
    /// At the end of the month, `expiry_periods_after` months after the earning month.
    EndOfMonth,
    /// At the end of the year, `expiry_periods_after` years after the earning year.
    EndOfYear,
}

/// The `[points]` configuration section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PointsConfig {
    /// Expiry policy for earned and credited points.
    pub expiry_policy: ExpiryPolicy,
    /// For `days_after_earn`: lifetime of a lot in days.
    pub expiry_days: i64,
    /// For `end_of_month` / `end_of_year`: whole months / years after the earning one
    /// (0 = the end of the earning month or year itself).
    pub expiry_periods_after: i64,
    /// The programme's local time zone as an offset from UTC in minutes (e.g. 480 for UTC+8):
    /// months and years end, and monthly tier evaluations start, at local midnight.
    pub utc_offset_minutes: i64,
    /// `redeem_points` points pay for `redeem_cents` cents at a counter.
    pub redeem_points: i64,
    /// See `redeem_points`.
    pub redeem_cents: i64,
    /// Hold lifetime when the request does not give one.
    pub hold_default_ttl_ms: i64,
    /// Longest hold a client may ask for; a forgotten hold must not lock points for long.
    pub hold_max_ttl_ms: i64,
    /// Restored refund points keep their original expiry but live at least this long.
    pub restore_min_validity_days: i64,
}

impl Default for PointsConfig {
    fn default() -> Self {
        Self {
            expiry_policy: ExpiryPolicy::DaysAfterEarn,
            expiry_days: 365,
            expiry_periods_after: 1,
            utc_offset_minutes: 0,
            redeem_points: 100,
            redeem_cents: 100,
            hold_default_ttl_ms: 15 * 60 * 1000,
            hold_max_ttl_ms: DAY_MS,
            restore_min_validity_days: 30,
        }
    }
}

/// Largest accepted `expiry_days` / periods: a century is already "never".
const MAX_EXPIRY_DAYS: i64 = 36_500;
const MAX_EXPIRY_PERIODS: i64 = 100;
/// UTC offsets in use span -12:00 to +14:00.
const MAX_UTC_OFFSET_MINUTES: i64 = 14 * 60;
/// Bounds the conversion rate so `points × cents` stays far from overflow.
const MAX_REDEEM_RATE_PART: i64 = 1_000_000;

impl PointsConfig {
    /// Checks the section's values; called before the server or a job starts.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=MAX_EXPIRY_DAYS).contains(&self.expiry_days),
            "points.expiry_days must be 1..={MAX_EXPIRY_DAYS}"
        );
        anyhow::ensure!(
            (0..=MAX_EXPIRY_PERIODS).contains(&self.expiry_periods_after),
            "points.expiry_periods_after must be 0..={MAX_EXPIRY_PERIODS}"
        );
        anyhow::ensure!(
            self.utc_offset_minutes.abs() <= MAX_UTC_OFFSET_MINUTES,
            "points.utc_offset_minutes must be within ±{MAX_UTC_OFFSET_MINUTES}"
        );
        anyhow::ensure!(
            (1..=MAX_REDEEM_RATE_PART).contains(&self.redeem_points)
                && (1..=MAX_REDEEM_RATE_PART).contains(&self.redeem_cents),
            "points.redeem_points and points.redeem_cents must be 1..={MAX_REDEEM_RATE_PART}"
        );
        anyhow::ensure!(
            MIN_HOLD_TTL_MS <= self.hold_default_ttl_ms
                && self.hold_default_ttl_ms <= self.hold_max_ttl_ms
                && self.hold_max_ttl_ms <= 30 * DAY_MS,
            "points.hold_default_ttl_ms must be {MIN_HOLD_TTL_MS}..=hold_max_ttl_ms <= 30 days"
        );
        anyhow::ensure!(
            (0..=MAX_EXPIRY_DAYS).contains(&self.restore_min_validity_days),
            "points.restore_min_validity_days must be 0..={MAX_EXPIRY_DAYS}"
        );
        Ok(())
    }

    /// When points credited at `earned_at_ms` expire (the first instant they are gone).
    pub fn expiry_for(&self, earned_at_ms: i64) -> ApiResult<i64> {
        match self.expiry_policy {
            ExpiryPolicy::DaysAfterEarn => earned_at_ms
                .checked_add(self.expiry_days.saturating_mul(DAY_MS))
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("expiry overflows"))),
            ExpiryPolicy::EndOfMonth => {
                let (year, month) = local_year_month(earned_at_ms, self.utc_offset_minutes)?;
                // The end of month m is the start of month m + 1.
                let months =
                    i64::from(year) * 12 + i64::from(month) - 1 + self.expiry_periods_after + 1;
                local_month_start_ms(months, self.utc_offset_minutes)
            }
            ExpiryPolicy::EndOfYear => {
                let (year, _) = local_year_month(earned_at_ms, self.utc_offset_minutes)?;
                let months = (i64::from(year) + self.expiry_periods_after + 1) * 12;
                local_month_start_ms(months, self.utc_offset_minutes)
            }
        }
    }

    /// The cents that `points` pay for, if the rate converts them exactly.
    pub fn points_to_cents(&self, points: i64) -> Option<i64> {
        let product = i128::from(points) * i128::from(self.redeem_cents);
        let rate = i128::from(self.redeem_points);
        if product % rate != 0 {
            return None;
        }
        i64::try_from(product / rate).ok()
    }
}

fn utc_offset(minutes: i64) -> ApiResult<time::UtcOffset> {
    let seconds = i32::try_from(minutes.saturating_mul(60)).map_err(ApiError::internal)?;
    time::UtcOffset::from_whole_seconds(seconds).map_err(ApiError::internal)
}

/// The local (year, month 1..=12) of an instant.
pub fn local_year_month(at_ms: i64, utc_offset_minutes: i64) -> ApiResult<(i32, u8)> {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
        .map_err(ApiError::internal)?
        .to_offset(utc_offset(utc_offset_minutes)?);
    Ok((at.year(), u8::from(at.month())))
}

/// The first instant of a local month given as `year * 12 + (month - 1)`.
pub fn local_month_start_ms(months: i64, utc_offset_minutes: i64) -> ApiResult<i64> {
    let year = i32::try_from(months.div_euclid(12)).map_err(ApiError::internal)?;
    let month = u8::try_from(months.rem_euclid(12) + 1).map_err(ApiError::internal)?;
    let month = time::Month::try_from(month).map_err(ApiError::internal)?;
    let date = time::Date::from_calendar_date(year, month, 1).map_err(ApiError::internal)?;
    let at = time::PrimitiveDateTime::new(date, time::Time::MIDNIGHT)
        .assume_offset(utc_offset(utc_offset_minutes)?);
    Ok(at.unix_timestamp().saturating_mul(1000))
}

// ---------------------------------------------------------------------------------------------
// Errors shared by ledger operations

fn insufficient(available: i64, requested: i64) -> ApiError {
    ApiError::unprocessable(
        "insufficient_points",
        format!("the member has {available} points available; {requested} are needed"),
    )
    .with_extra(serde_json::json!({ "available": available, "requested": requested }))
}

/// 422 `member_blocked`: blocked members may not earn or spend.
pub fn member_blocked(member_id: &str) -> ApiError {
    ApiError::unprocessable(
        "member_blocked",
        format!("member {member_id:?} is blocked and may not earn or spend points"),
    )
}

/// Checks a point amount of an operation.
pub fn validate_points(field: &str, points: i64) -> ApiResult<()> {
    if !(1..=MAX_POINTS_PER_OPERATION).contains(&points) {
        return Err(ApiError::validation(format!(
            "{field} must be 1..={MAX_POINTS_PER_OPERATION}"
        )));
    }
    Ok(())
}

/// Checks a free-text reason.
pub fn validate_reason(reason: &str, required: bool) -> ApiResult<()> {
    if required && reason.trim().is_empty() {
        return Err(ApiError::validation("reason is required"));
    }
    if reason.len() > MAX_REASON_LEN {
        return Err(ApiError::validation(format!(
            "reason must be at most {MAX_REASON_LEN} bytes"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Wallet lock

/// A member's wallet, locked for the current transaction.
#[derive(Debug, Clone)]
pub struct LockedWallet {
    /// The member.
    pub member_id: String,
    /// `active` or `blocked`.
    pub status: String,
    /// The member's tier code.
    pub tier: String,
    /// Spendable points after lazy expiry.
    pub balance: i64,
    /// Points under pending holds.
    pub held: i64,
    /// Points owed from refunds.
    pub debt: i64,
}

impl LockedWallet {
    /// Refuses blocked members.
    pub fn require_active(&self) -> ApiResult<()> {
        if self.status == "active" {
            Ok(())
        } else {
            Err(member_blocked(&self.member_id))
        }
    }
}

/// `FOR UPDATE` on PostgreSQL; SQLite has one writer, so the clause is neither needed nor valid.
pub fn for_update(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    }
}

/// Locks the member's wallet (creating it on first use), then expires any lots past due so the
/// balance the caller sees is spendable. Unknown member: 404.
pub async fn lock_wallet(
    conn: &mut AnyConnection,
    backend: Backend,
    member_id: &str,
    now_ms: i64,
) -> ApiResult<LockedWallet> {
    // One round trip in the common case: the wallet row (locked) with its member's status.
    let lock_sql = format!(
        "SELECT w.balance, w.held, w.debt, m.status, m.tier
         FROM point_wallets w JOIN members m ON m.id = w.member_id
         WHERE w.member_id = $1{}",
        match backend {
            Backend::Postgres => " FOR UPDATE OF w",
            Backend::Sqlite => "",
        }
    );
    let mut row: Option<(i64, i64, i64, String, String)> = sqlx::query_as(&lock_sql)
        .bind(member_id)
        .fetch_optional(&mut *conn)
        .await?;
    if row.is_none() {
        let member: Option<(String,)> = sqlx::query_as("SELECT id FROM members WHERE id = $1")
            .bind(member_id)
            .fetch_optional(&mut *conn)
            .await?;
        if member.is_none() {
            return Err(ApiError::not_found("member", member_id));
        }
        sqlx::query(
            "INSERT INTO point_wallets (member_id, balance, held, debt, updated_at)
             VALUES ($1, 0, 0, 0, $2) ON CONFLICT (member_id) DO NOTHING",
        )
        .bind(member_id)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
        row = sqlx::query_as(&lock_sql)
            .bind(member_id)
            .fetch_optional(&mut *conn)
            .await?;
    }
    let (balance, held, debt, status, tier) =
        row.ok_or_else(|| ApiError::internal(anyhow::anyhow!("wallet vanished after insert")))?;
    let mut wallet = LockedWallet {
        member_id: member_id.to_owned(),
        status,
        tier,
        balance,
        held,
        debt,
    };
    let expired = expire_locked(conn, &wallet, now_ms).await?;
    wallet.balance -= expired.points;
    Ok(wallet)
}

// ---------------------------------------------------------------------------------------------
// Journal entries

/// The kind of a journal entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// Points earned by a purchase (base and bonuses).
    Earn,
    /// Points spent paying for a purchase.
    Spend,
    /// Points reserved by a hold.
    Hold,
    /// A hold captured (and its remainder released).
    Capture,
    /// A hold released by the member or a counter.
    Release,
    /// A hold released because it timed out.
    HoldTimeout,
    /// Lots past their expiry.
    Expiry,
    /// An admin adjustment.
    Adjustment,
    /// A refund: restored spend and clawed-back earn.
    Refund,
    /// Refund debt paid from later credits.
    DebtSettlement,
}

impl EntryKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Earn => "earn",
            EntryKind::Spend => "spend",
            EntryKind::Hold => "hold",
            EntryKind::Capture => "capture",
            EntryKind::Release => "release",
            EntryKind::HoldTimeout => "hold_timeout",
            EntryKind::Expiry => "expiry",
            EntryKind::Adjustment => "adjustment",
            EntryKind::Refund => "refund",
            EntryKind::DebtSettlement => "debt_settlement",
        }
    }
}

/// An account postings move points between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account<'a> {
    /// The entry member's spendable points.
    Wallet,
    /// The entry member's held points.
    Held,
    /// The entry member's refund debt (negative balance = points owed).
    Receivable,
    /// Where a brand's (or the platform's, `None`) points come from.
    Issuance(Option<&'a str>),
    /// Where points spent at a brand go.
    Redemption(Option<&'a str>),
    /// Where expired points go, by the brand that funded them.
    Expiry(Option<&'a str>),
    /// The counterpart of admin adjustments.
    Adjustment(Option<&'a str>),
}

impl Account<'_> {
    fn name(self) -> &'static str {
        match self {
            Account::Wallet => "wallet",
            Account::Held => "held",
            Account::Receivable => "receivable",
            Account::Issuance(_) => "issuance",
            Account::Redemption(_) => "redemption",
            Account::Expiry(_) => "expiry",
            Account::Adjustment(_) => "adjustment",
        }
    }

    fn brand(self) -> Option<String> {
        match self {
            Account::Wallet | Account::Held | Account::Receivable => None,
            Account::Issuance(b)
            | Account::Redemption(b)
            | Account::Expiry(b)
            | Account::Adjustment(b) => b.map(str::to_owned),
        }
    }

    fn is_member(self) -> bool {
        matches!(self, Account::Wallet | Account::Held | Account::Receivable)
    }
}

#[derive(Debug)]
struct PostingRow {
    id: String,
    account: &'static str,
    member: bool,
    brand_id: Option<String>,
    amount: i64,
    memo: String,
}

/// A lot to create when the entry closes (its posting must exist first).
#[derive(Debug, Clone)]
pub struct NewLot {
    /// The wallet credit posting this lot belongs to.
    pub posting_id: String,
    /// Funding brand; `None` = platform.
    pub brand_id: Option<String>,
    /// `earn`, `bonus`, `adjustment` or `restore`.
    pub source: &'static str,
    /// Points in the lot.
    pub amount: i64,
    /// When it expires.
    pub expires_at: i64,
    /// The purchase that earned it.
    pub purchase_id: Option<String>,
    /// For restored points, the consumption they give back.
    pub origin_consumption_id: Option<String>,
}

/// References an entry may carry.
#[derive(Debug, Default, Clone)]
pub struct EntryRefs {
    /// Brand the event happened at.
    pub brand_id: Option<String>,
    /// Purchase (internal id).
    pub purchase_id: Option<String>,
    /// Refund (internal id).
    pub refund_id: Option<String>,
    /// Hold.
    pub hold_id: Option<String>,
}

/// A journal entry being written: its header row exists; postings and lots are written in
/// batches (`flush`), and on `close` the running totals are checked: postings sum to zero, the
/// member accounts moved exactly as the materialised wallet did, and lots add up to the wallet
/// credits they belong to. An entry that does not add up fails the whole transaction.
#[derive(Debug)]
pub struct Entry {
    /// Entry id.
    pub id: String,
    kind: EntryKind,
    member_id: String,
    /// True once the entry added spendable points: closing it then pays refund debt first.
    credited: bool,
    pending_postings: Vec<PostingRow>,
    pending_lots: Vec<NewLot>,
    postings_count: usize,
    postings_sum: i128,
    wallet_sum: i64,
    held_sum: i64,
    receivable_sum: i64,
    /// Wallet credit postings that carry lots: posting id → (posting amount, lot total).
    lot_backing: BTreeMap<String, (i64, i64)>,
    applied_balance: i64,
    applied_held: i64,
    applied_debt: i64,
}

impl Entry {
    /// Inserts the entry header (consumptions refer to it) and starts collecting postings.
    pub async fn open(
        conn: &mut AnyConnection,
        kind: EntryKind,
        member_id: &str,
        refs: &EntryRefs,
        reason: &str,
        now_ms: i64,
    ) -> ApiResult<Entry> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO ledger_entries
               (id, kind, member_id, brand_id, purchase_id, refund_id, hold_id, reason, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&id)
        .bind(kind.as_str())
        .bind(member_id)
        .bind(refs.brand_id.as_deref())
        .bind(refs.purchase_id.as_deref())
        .bind(refs.refund_id.as_deref())
        .bind(refs.hold_id.as_deref())
        .bind(reason)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
        Ok(Entry {
            id,
            kind,
            member_id: member_id.to_owned(),
            credited: false,
            pending_postings: Vec::new(),
            pending_lots: Vec::new(),
            postings_count: 0,
            postings_sum: 0,
            wallet_sum: 0,
            held_sum: 0,
            receivable_sum: 0,
            lot_backing: BTreeMap::new(),
            applied_balance: 0,
            applied_held: 0,
            applied_debt: 0,
        })
    }

    /// The member whose accounts this entry moves.
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// Adds a posting and returns its id (for lots).
    pub fn post(&mut self, account: Account<'_>, amount: i64, memo: &str) -> String {
        let id = new_id();
        self.postings_count += 1;
        self.postings_sum += i128::from(amount);
        match account {
            Account::Wallet => self.wallet_sum += amount,
            Account::Held => self.held_sum += amount,
            Account::Receivable => self.receivable_sum += amount,
            _ => {}
        }
        self.pending_postings.push(PostingRow {
            id: id.clone(),
            account: account.name(),
            member: account.is_member(),
            brand_id: account.brand(),
            amount,
            memo: memo.to_owned(),
        });
        id
    }

    /// Queues a lot for a wallet credit posting of this entry.
    pub fn add_lot(&mut self, lot: NewLot) {
        let posting_amount = self
            .pending_postings
            .iter()
            .find(|p| p.id == lot.posting_id)
            .map(|p| p.amount)
            .unwrap_or(0);
        let backing = self
            .lot_backing
            .entry(lot.posting_id.clone())
            .or_insert((posting_amount, 0));
        backing.1 += lot.amount;
        self.pending_lots.push(lot);
    }

    /// Applies deltas to the member's materialised wallet in one guarded statement: the update
    /// matches no row if the balance, held or debt would go negative, and the caller gets
    /// `insufficient_points` (the `CHECK` constraints are the second line of defence).
    pub async fn apply_wallet(
        &mut self,
        conn: &mut AnyConnection,
        balance_delta: i64,
        held_delta: i64,
        debt_delta: i64,
        now_ms: i64,
    ) -> ApiResult<()> {
        let updated = sqlx::query(
            "UPDATE point_wallets
             SET balance = balance + $1, held = held + $2, debt = debt + $3, updated_at = $4
             WHERE member_id = $5 AND balance + $1 >= 0 AND held + $2 >= 0 AND debt + $3 >= 0",
        )
        .bind(balance_delta)
        .bind(held_delta)
        .bind(debt_delta)
        .bind(now_ms)
        .bind(&self.member_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if updated == 0 {
            let row: Option<(i64, i64, i64)> = sqlx::query_as(
                "SELECT balance, held, debt FROM point_wallets WHERE member_id = $1",
            )
            .bind(&self.member_id)
            .fetch_optional(&mut *conn)
            .await?;
            return Err(match row {
                Some((balance, _, _)) if balance + balance_delta < 0 => {
                    insufficient(balance, -balance_delta)
                }
                _ => ApiError::internal(anyhow::anyhow!(
                    "wallet update refused for member {}: held or debt would go negative",
                    self.member_id
                )),
            });
        }
        self.applied_balance += balance_delta;
        self.credited |= balance_delta > 0;
        self.applied_held += held_delta;
        self.applied_debt += debt_delta;
        Ok(())
    }

    /// Writes the postings and lots collected so far (lots must exist before a later step of
    /// the same entry can draw from them).
    pub async fn flush(&mut self, conn: &mut AnyConnection, now_ms: i64) -> ApiResult<()> {
        let member_id = self.member_id.clone();
        let entry_id = self.id.clone();
        insert_rows(
            conn,
            "ledger_postings (id, entry_id, account, member_id, brand_id, amount, memo, created_at)",
            std::mem::take(&mut self.pending_postings)
                .into_iter()
                .map(|p| {
                    vec![
                        Val::Text(p.id),
                        Val::Text(entry_id.clone()),
                        Val::Text(p.account.to_owned()),
                        Val::OptText(p.member.then(|| member_id.clone())),
                        Val::OptText(p.brand_id),
                        Val::Int(p.amount),
                        Val::Text(p.memo),
                        Val::Int(now_ms),
                    ]
                })
                .collect(),
        )
        .await?;
        insert_rows(
            conn,
            "point_lots (id, member_id, posting_id, brand_id, source, amount, remaining, \
             earned_at, expires_at, purchase_id, origin_consumption_id)",
            std::mem::take(&mut self.pending_lots)
                .into_iter()
                .map(|l| {
                    vec![
                        Val::Text(new_id()),
                        Val::Text(member_id.clone()),
                        Val::Text(l.posting_id),
                        Val::OptText(l.brand_id),
                        Val::Text(l.source.to_owned()),
                        Val::Int(l.amount),
                        Val::Int(l.amount),
                        Val::Int(now_ms),
                        Val::Int(l.expires_at),
                        Val::OptText(l.purchase_id),
                        Val::OptText(l.origin_consumption_id),
                    ]
                })
                .collect(),
        )
        .await?;
        Ok(())
    }

    /// Checks the entry adds up, writes what is left, then pays refund debt if the entry added
    /// spendable points (see [`Entry::close_settling`]). Returns the entry id.
    pub async fn close(self, conn: &mut AnyConnection, now_ms: i64) -> ApiResult<String> {
        self.close_settling(conn, now_ms).await.map(|(id, _)| id)
    }

    /// [`Entry::close`], also returning the refund debt paid.
    ///
    /// **The debt rule lives here, in one place**: every entry that adds spendable points to a
    /// wallet — earn, refund restore, hold release or timeout, coupon return, campaign or
    /// referral points, adjustments — pays the member's refund debt from them before anything
    /// else can draw on them, as a `debt_settlement` entry in the same transaction. A credit
    /// path added later goes through an `Entry` too, so it cannot forget the debt. After every
    /// committed write a wallet has spendable points or debt, never both.
    pub async fn close_settling(
        mut self,
        conn: &mut AnyConnection,
        now_ms: i64,
    ) -> ApiResult<(String, i64)> {
        self.finish(conn, now_ms).await?;
        let settled = if self.credited && self.kind != EntryKind::DebtSettlement {
            settle_debt_of(conn, &self.member_id, now_ms).await?
        } else {
            0
        };
        Ok((self.id, settled))
    }

    /// Checks the entry adds up and writes what is left.
    async fn finish(&mut self, conn: &mut AnyConnection, now_ms: i64) -> ApiResult<()> {
        let lots_ok = self
            .lot_backing
            .values()
            .all(|(posting, lots)| posting == lots && *posting > 0);
        if self.postings_count < 2
            || self.postings_sum != 0
            || self.pending_postings.iter().any(|p| p.amount == 0)
            || self.wallet_sum != self.applied_balance
            || self.held_sum != self.applied_held
            || -self.receivable_sum != self.applied_debt
            || !lots_ok
        {
            return Err(ApiError::internal(anyhow::anyhow!(
                "unbalanced ledger entry {}: {} postings summing to {}, wallet {} vs {}, \
                 held {} vs {}, debt {} vs {}, lots {:?}",
                self.id,
                self.postings_count,
                self.postings_sum,
                self.wallet_sum,
                self.applied_balance,
                self.held_sum,
                self.applied_held,
                -self.receivable_sum,
                self.applied_debt,
                self.lot_backing
            )));
        }
        self.flush(conn, now_ms).await
    }
}

/// A value bound in a multi-row insert.
#[derive(Debug, Clone)]
pub enum Val {
    /// BIGINT.
    Int(i64),
    /// TEXT.
    Text(String),
    /// Nullable TEXT.
    OptText(Option<String>),
}

/// Inserts rows in chunks with one statement per chunk (`table` includes the column list).
pub async fn insert_rows(
    conn: &mut AnyConnection,
    table: &str,
    rows: Vec<Vec<Val>>,
) -> ApiResult<()> {
    let Some(width) = rows.first().map(Vec::len) else {
        return Ok(());
    };
    for chunk in rows.chunks(INSERT_CHUNK_ROWS) {
        let mut sql = format!("INSERT INTO {table} VALUES ");
        let mut n = 0usize;
        for (i, _) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 0..width {
                if c > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                sql.push('$');
                sql.push_str(&n.to_string());
            }
            sql.push(')');
        }
        let mut query = sqlx::query(&sql);
        for row in chunk {
            for value in row {
                query = match value {
                    Val::Int(v) => query.bind(*v),
                    Val::Text(v) => query.bind(v.clone()),
                    Val::OptText(v) => query.bind(v.clone()),
                };
            }
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Lots

/// One draw from a lot by a debit.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Draw {
    /// The lot drawn from.
    pub lot_id: String,
    /// Points drawn.
    pub points: i64,
    /// The brand that funded the lot (`None` = platform).
    pub brand_id: Option<String>,
    /// The lot's expiry, Unix ms.
    pub expires_at_ms: i64,
}

/// Draws `amount` points from the member's spendable lots, oldest expiry first (lots earned by
/// `prefer_purchase` first, for refund claw-backs), recording each draw against the entry.
/// The caller has locked the wallet and already debited it.
pub async fn consume_lots(
    conn: &mut AnyConnection,
    entry: &Entry,
    amount: i64,
    prefer_purchase: Option<&str>,
    now_ms: i64,
) -> ApiResult<Vec<Draw>> {
    let mut needed = amount;
    let mut draws = Vec::new();
    while needed > 0 {
        let member_id = entry.member_id();
        let lots: Vec<(String, i64, Option<String>, i64)> = match prefer_purchase {
            Some(purchase_id) => {
                sqlx::query_as(
                    "SELECT id, remaining, brand_id, expires_at FROM point_lots
                     WHERE member_id = $1 AND remaining > 0
                     ORDER BY CASE WHEN purchase_id = $2 THEN 0 ELSE 1 END, expires_at, id
                     LIMIT $3",
                )
                .bind(member_id)
                .bind(purchase_id)
                .bind(LOT_BATCH)
                .fetch_all(&mut *conn)
                .await?
            }
            None => {
                sqlx::query_as(
                    "SELECT id, remaining, brand_id, expires_at FROM point_lots
                     WHERE member_id = $1 AND remaining > 0
                     ORDER BY expires_at, id LIMIT $2",
                )
                .bind(member_id)
                .bind(LOT_BATCH)
                .fetch_all(&mut *conn)
                .await?
            }
        };
        if lots.is_empty() {
            return Err(ApiError::internal(anyhow::anyhow!(
                "member {member_id} has {needed} points in the wallet that no lot backs"
            )));
        }
        let mut rows = Vec::new();
        for (lot_id, remaining, brand_id, expires_at) in lots {
            if needed == 0 {
                break;
            }
            let take = remaining.min(needed);
            let updated = sqlx::query(
                "UPDATE point_lots SET remaining = remaining - $1 WHERE id = $2 AND remaining >= $1",
            )
            .bind(take)
            .bind(&lot_id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if updated != 1 {
                return Err(ApiError::internal(anyhow::anyhow!(
                    "lot {lot_id} changed under a locked wallet"
                )));
            }
            needed -= take;
            rows.push(vec![
                Val::Text(new_id()),
                Val::Text(lot_id.clone()),
                Val::Text(entry.id.clone()),
                Val::Int(take),
                Val::Int(now_ms),
            ]);
            draws.push(Draw {
                lot_id,
                points: take,
                brand_id,
                expires_at_ms: expires_at,
            });
        }
        insert_rows(
            conn,
            "lot_consumptions (id, lot_id, entry_id, amount, created_at)",
            rows,
        )
        .await?;
    }
    Ok(draws)
}

/// How restored points are dated.
#[derive(Debug, Clone, Copy)]
pub enum RestoreExpiry {
    /// Exactly the original lot's expiry (hold releases: as if the hold never happened).
    Original,
    /// The original expiry, but no earlier than this instant (refunds).
    AtLeast(i64),
}

/// Gives back up to `amount` points drawn by `source_entry_id`, latest-expiring draws first,
/// as new lots on the wallet credit posting `posting_id`. Returns the points restored (less than
/// `amount` only if the source drew less than that and was already partly restored).
pub async fn restore_consumptions(
    conn: &mut AnyConnection,
    entry: &mut Entry,
    source_entry_id: &str,
    amount: i64,
    posting_id: &str,
    expiry: RestoreExpiry,
) -> ApiResult<i64> {
    let draws: Vec<(String, i64, Option<String>, i64)> = sqlx::query_as(
        "SELECT c.id, c.amount - CAST(COALESCE((SELECT SUM(r.amount) FROM point_lots r
                                    WHERE r.origin_consumption_id = c.id), 0) AS BIGINT),
                l.brand_id, l.expires_at
         FROM lot_consumptions c JOIN point_lots l ON l.id = c.lot_id
         WHERE c.entry_id = $1
         ORDER BY l.expires_at DESC, c.id DESC",
    )
    .bind(source_entry_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut left = amount;
    for (consumption_id, restorable, brand_id, expires_at) in draws {
        if left == 0 {
            break;
        }
        let take = restorable.min(left);
        if take <= 0 {
            continue;
        }
        left -= take;
        let expires_at = match expiry {
            RestoreExpiry::Original => expires_at,
            RestoreExpiry::AtLeast(floor) => expires_at.max(floor),
        };
        entry.add_lot(NewLot {
            posting_id: posting_id.to_owned(),
            brand_id,
            source: "restore",
            amount: take,
            expires_at,
            purchase_id: None,
            origin_consumption_id: Some(consumption_id),
        });
    }
    Ok(amount - left)
}

// ---------------------------------------------------------------------------------------------
// Expiry

/// What an expiry pass did.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
pub struct ExpiryOutcome {
    /// Lots expired.
    pub lots: i64,
    /// Points expired.
    pub points: i64,
}

/// Expires the locked member's lots that are past due, as one `expiry` entry (wallet → the
/// funding brand's expiry account). Idempotent: an expired lot has nothing remaining.
async fn expire_locked(
    conn: &mut AnyConnection,
    wallet: &LockedWallet,
    now_ms: i64,
) -> ApiResult<ExpiryOutcome> {
    let due: Vec<(String, i64, Option<String>)> = sqlx::query_as(
        "SELECT id, remaining, brand_id FROM point_lots
         WHERE member_id = $1 AND remaining > 0 AND expires_at <= $2
         ORDER BY expires_at, id",
    )
    .bind(&wallet.member_id)
    .bind(now_ms)
    .fetch_all(&mut *conn)
    .await?;
    if due.is_empty() {
        return Ok(ExpiryOutcome::default());
    }
    let mut entry = Entry::open(
        conn,
        EntryKind::Expiry,
        &wallet.member_id,
        &EntryRefs::default(),
        "points expired",
        now_ms,
    )
    .await?;
    let mut by_brand: BTreeMap<Option<String>, i64> = BTreeMap::new();
    let mut rows = Vec::new();
    let mut total = 0i64;
    for (lot_id, remaining, brand_id) in &due {
        let updated =
            sqlx::query("UPDATE point_lots SET remaining = 0 WHERE id = $1 AND remaining = $2")
                .bind(lot_id)
                .bind(remaining)
                .execute(&mut *conn)
                .await?
                .rows_affected();
        if updated != 1 {
            return Err(ApiError::internal(anyhow::anyhow!(
                "lot {lot_id} changed under a locked wallet"
            )));
        }
        total += remaining;
        *by_brand.entry(brand_id.clone()).or_default() += remaining;
        rows.push(vec![
            Val::Text(new_id()),
            Val::Text(lot_id.clone()),
            Val::Text(entry.id.clone()),
            Val::Int(*remaining),
            Val::Int(now_ms),
        ]);
    }
    insert_rows(
        conn,
        "lot_consumptions (id, lot_id, entry_id, amount, created_at)",
        rows,
    )
    .await?;
    entry.apply_wallet(conn, -total, 0, 0, now_ms).await?;
    entry.post(Account::Wallet, -total, "expired");
    for (brand, points) in &by_brand {
        entry.post(Account::Expiry(brand.as_deref()), *points, "expired");
    }
    entry.close(conn, now_ms).await?;
    Ok(ExpiryOutcome {
        lots: i64::try_from(due.len()).unwrap_or(i64::MAX),
        points: total,
    })
}

/// Expires one member's due lots in its own transaction (used by the expiry job).
pub async fn expire_member(
    store: &crate::store::Store,
    member_id: &str,
    now_ms: i64,
) -> ApiResult<ExpiryOutcome> {
    let mut tx = store.begin().await?;
    let lock_sql = format!(
        "SELECT balance, held, debt FROM point_wallets WHERE member_id = $1{}",
        for_update(store.backend())
    );
    let row: Option<(i64, i64, i64)> = sqlx::query_as(&lock_sql)
        .bind(member_id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some((balance, held, debt)) = row else {
        return Ok(ExpiryOutcome::default());
    };
    let wallet = LockedWallet {
        member_id: member_id.to_owned(),
        status: String::new(),
        tier: String::new(),
        balance,
        held,
        debt,
    };
    let outcome = expire_locked(&mut tx, &wallet, now_ms).await?;
    tx.commit().await?;
    Ok(outcome)
}

// ---------------------------------------------------------------------------------------------
// Credits, debits and debt

/// Credits `points` to the locked member as one lot (`source` names why), funded by `from`.
#[allow(clippy::too_many_arguments)]
pub async fn credit_lot(
    conn: &mut AnyConnection,
    entry: &mut Entry,
    from: Account<'_>,
    points: i64,
    source: &'static str,
    memo: &str,
    expires_at: i64,
    purchase_id: Option<&str>,
    funding_brand: Option<&str>,
    now_ms: i64,
) -> ApiResult<()> {
    entry.apply_wallet(conn, points, 0, 0, now_ms).await?;
    entry.post(from, -points, memo);
    let posting_id = entry.post(Account::Wallet, points, memo);
    entry.add_lot(NewLot {
        posting_id,
        brand_id: funding_brand.map(str::to_owned),
        source,
        amount: points,
        expires_at,
        purchase_id: purchase_id.map(str::to_owned),
        origin_consumption_id: None,
    });
    Ok(())
}

/// Debits `points` from the locked member's wallet to `to`, drawing lots oldest-expiry first.
/// Fails with `insufficient_points` (and changes nothing) if the wallet cannot cover it.
pub async fn debit_fifo(
    conn: &mut AnyConnection,
    entry: &mut Entry,
    to: Account<'_>,
    points: i64,
    memo: &str,
    now_ms: i64,
) -> ApiResult<Vec<Draw>> {
    entry.apply_wallet(conn, -points, 0, 0, now_ms).await?;
    let draws = consume_lots(conn, entry, points, None, now_ms).await?;
    entry.post(Account::Wallet, -points, memo);
    entry.post(to, points, memo);
    Ok(draws)
}

/// Pays refund debt from the locked member's spendable points, as its own `debt_settlement`
/// entry, and returns the points settled. Called by [`Entry::close_settling`] only: that is
/// the one place every credit passes through.
async fn settle_debt_of(conn: &mut AnyConnection, member_id: &str, now_ms: i64) -> ApiResult<i64> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT balance, debt FROM point_wallets WHERE member_id = $1")
            .bind(member_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((balance, debt)) = row else {
        return Ok(0);
    };
    let take = debt.min(balance);
    if take <= 0 {
        return Ok(0);
    }
    let mut entry = Entry::open(
        conn,
        EntryKind::DebtSettlement,
        member_id,
        &EntryRefs::default(),
        "refund debt paid from new points",
        now_ms,
    )
    .await?;
    entry.apply_wallet(conn, -take, 0, -take, now_ms).await?;
    consume_lots(conn, &entry, take, None, now_ms).await?;
    entry.post(Account::Wallet, -take, "refund debt");
    entry.post(Account::Receivable, take, "refund debt");
    entry.finish(conn, now_ms).await?;
    Ok(take)
}

// ---------------------------------------------------------------------------------------------
// Adjustments

/// An admin's direct credit or debit.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentRequest {
    /// Points to credit (> 0) or debit (< 0); never 0.
    pub points: i64,
    /// Why (shown in the member's history), 1..=200 bytes.
    pub reason: String,
    /// Brand that funds a credit or receives a debit; omitted = the platform.
    #[serde(default)]
    pub brand_id: Option<String>,
}

/// The outcome of an adjustment.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Adjustment {
    /// The journal entry.
    pub entry_id: String,
    /// The member.
    pub member_id: String,
    /// Points credited (> 0) or debited (< 0).
    pub points: i64,
    /// The reason given.
    pub reason: String,
    /// Expiry of the credited lot (credits only), Unix ms.
    pub expires_at_ms: Option<i64>,
    /// The lots a debit drew from, oldest expiry first.
    pub draws: Vec<Draw>,
    /// Refund debt paid from this credit.
    pub debt_settled: i64,
    /// Spendable points after the adjustment.
    pub available_after: i64,
}

/// Applies an admin adjustment. Blocked members may be adjusted: corrections are exactly what a
/// blocked (e.g. fraudulent) account needs.
pub async fn adjust(
    conn: &mut AnyConnection,
    backend: Backend,
    config: &PointsConfig,
    member_id: &str,
    req: &AdjustmentRequest,
    now_ms: i64,
) -> ApiResult<Adjustment> {
    if req.points == 0 {
        return Err(ApiError::validation("points must not be 0"));
    }
    validate_points("points", req.points.saturating_abs())?;
    validate_reason(&req.reason, true)?;
    if let Some(brand) = &req.brand_id {
        require_brand_exists(conn, brand).await?;
    }
    let mut wallet = lock_wallet(conn, backend, member_id, now_ms).await?;
    let brand = req.brand_id.as_deref();
    let refs = EntryRefs {
        brand_id: req.brand_id.clone(),
        ..EntryRefs::default()
    };
    let mut entry = Entry::open(
        conn,
        EntryKind::Adjustment,
        member_id,
        &refs,
        &req.reason,
        now_ms,
    )
    .await?;
    let (expires_at_ms, draws) = if req.points > 0 {
        let expires_at = config.expiry_for(now_ms)?;
        credit_lot(
            conn,
            &mut entry,
            Account::Adjustment(brand),
            req.points,
            "adjustment",
            &req.reason,
            expires_at,
            None,
            brand,
            now_ms,
        )
        .await?;
        wallet.balance += req.points;
        (Some(expires_at), Vec::new())
    } else {
        let points = -req.points;
        let draws = debit_fifo(
            conn,
            &mut entry,
            Account::Adjustment(brand),
            points,
            &req.reason,
            now_ms,
        )
        .await?;
        wallet.balance -= points;
        (None, draws)
    };
    let (entry_id, debt_settled) = entry.close_settling(conn, now_ms).await?;
    wallet.balance -= debt_settled;
    Ok(Adjustment {
        entry_id,
        member_id: member_id.to_owned(),
        points: req.points,
        reason: req.reason.clone(),
        expires_at_ms,
        draws,
        debt_settled,
        available_after: wallet.balance,
    })
}

/// 422 `unknown_brand` unless the brand exists.
pub async fn require_brand_exists(conn: &mut AnyConnection, brand_id: &str) -> ApiResult<()> {
    let found: Option<(String,)> = sqlx::query_as("SELECT id FROM brands WHERE id = $1")
        .bind(brand_id)
        .fetch_optional(&mut *conn)
        .await?;
    if found.is_none() {
        return Err(ApiError::unprocessable(
            "unknown_brand",
            format!("brand {brand_id:?} does not exist"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Holds

/// Status of a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HoldStatus {
    /// Reserved; can be captured or released.
    Pending,
    /// Spent (possibly in part; the rest was released).
    Captured,
    /// Given back.
    Released,
    /// Given back because it timed out.
    Expired,
}

impl HoldStatus {
    fn parse(s: &str) -> HoldStatus {
        match s {
            "captured" => HoldStatus::Captured,
            "released" => HoldStatus::Released,
            "expired" => HoldStatus::Expired,
            _ => HoldStatus::Pending,
        }
    }
}

/// Request to reserve points.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    /// Points to reserve, > 0.
    pub points: i64,
    /// The brand where the points will be redeemed; omitted = the platform.
    #[serde(default)]
    pub brand_id: Option<String>,
    /// Lifetime in ms; defaults to `points.hold_default_ttl_ms`, at most `hold_max_ttl_ms`.
    #[serde(default)]
    pub ttl_ms: Option<i64>,
    /// Free text, up to 200 bytes.
    #[serde(default)]
    pub reason: String,
}

/// Request to capture a hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    /// Points to capture, 1..=held; omitted = all. The rest is released.
    #[serde(default)]
    pub points: Option<i64>,
}

/// A hold.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Hold {
    /// Hold id.
    pub id: String,
    /// The member.
    pub member_id: String,
    /// Where the points will be redeemed; `None` = the platform.
    pub brand_id: Option<String>,
    /// Points reserved.
    pub points: i64,
    /// Points captured (spent).
    pub captured: i64,
    /// Current status.
    pub status: HoldStatus,
    /// Free text.
    pub reason: String,
    /// When a pending hold times out, Unix ms.
    pub expires_at_ms: i64,
    /// When it was made, Unix ms.
    pub created_at_ms: i64,
    /// When it was captured, released or expired, Unix ms.
    pub settled_at_ms: Option<i64>,
    /// Lots the reservation drew from (on creation only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub draws: Vec<Draw>,
}

type HoldRow = (
    String,
    String,
    Option<String>,
    i64,
    i64,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
);

const HOLD_COLUMNS: &str = "id, member_id, brand_id, amount, captured, status, reason, \
    hold_entry_id, expires_at, created_at, settled_at";

fn hold_from_row(row: HoldRow) -> (Hold, String) {
    let (
        id,
        member_id,
        brand_id,
        points,
        captured,
        status,
        reason,
        hold_entry_id,
        expires_at,
        created_at,
        settled_at,
    ) = row;
    (
        Hold {
            id,
            member_id,
            brand_id,
            points,
            captured,
            status: HoldStatus::parse(&status),
            reason,
            expires_at_ms: expires_at,
            created_at_ms: created_at,
            settled_at_ms: settled_at,
            draws: Vec::new(),
        },
        hold_entry_id,
    )
}

/// Reads a hold (no lock).
pub async fn get_hold(pool: &sqlx::AnyPool, hold_id: &str) -> ApiResult<Hold> {
    let row: Option<HoldRow> = sqlx::query_as(&format!(
        "SELECT {HOLD_COLUMNS} FROM point_holds WHERE id = $1"
    ))
    .bind(hold_id)
    .fetch_optional(pool)
    .await?;
    row.map(|r| hold_from_row(r).0)
        .ok_or_else(|| ApiError::not_found("hold", hold_id))
}

/// Reserves points: they leave the spendable balance (drawn from lots oldest-expiry first) for
/// the member's `held` account until captured, released or timed out.
pub async fn create_hold(
    conn: &mut AnyConnection,
    backend: Backend,
    config: &PointsConfig,
    member_id: &str,
    req: &HoldRequest,
    now_ms: i64,
) -> ApiResult<Hold> {
    validate_points("points", req.points)?;
    validate_reason(&req.reason, false)?;
    let ttl_ms = req.ttl_ms.unwrap_or(config.hold_default_ttl_ms);
    if !(MIN_HOLD_TTL_MS..=config.hold_max_ttl_ms).contains(&ttl_ms) {
        return Err(ApiError::validation(format!(
            "ttl_ms must be {MIN_HOLD_TTL_MS}..={}",
            config.hold_max_ttl_ms
        )));
    }
    if let Some(brand) = &req.brand_id {
        require_brand_exists(conn, brand).await?;
    }
    let wallet = lock_wallet(conn, backend, member_id, now_ms).await?;
    wallet.require_active()?;
    let hold_id = new_id();
    let refs = EntryRefs {
        brand_id: req.brand_id.clone(),
        hold_id: Some(hold_id.clone()),
        ..EntryRefs::default()
    };
    let mut entry =
        Entry::open(conn, EntryKind::Hold, member_id, &refs, &req.reason, now_ms).await?;
    entry
        .apply_wallet(conn, -req.points, req.points, 0, now_ms)
        .await?;
    let draws = consume_lots(conn, &entry, req.points, None, now_ms).await?;
    entry.post(Account::Wallet, -req.points, "hold");
    entry.post(Account::Held, req.points, "hold");
    let entry_id = entry.close(conn, now_ms).await?;
    let expires_at = now_ms.saturating_add(ttl_ms);
    sqlx::query(
        "INSERT INTO point_holds (id, member_id, brand_id, amount, captured, status, reason,
            hold_entry_id, expires_at, created_at)
         VALUES ($1, $2, $3, $4, 0, 'pending', $5, $6, $7, $8)",
    )
    .bind(&hold_id)
    .bind(member_id)
    .bind(req.brand_id.as_deref())
    .bind(req.points)
    .bind(&req.reason)
    .bind(&entry_id)
    .bind(expires_at)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(Hold {
        id: hold_id,
        member_id: member_id.to_owned(),
        brand_id: req.brand_id.clone(),
        points: req.points,
        captured: 0,
        status: HoldStatus::Pending,
        reason: req.reason.clone(),
        expires_at_ms: expires_at,
        created_at_ms: now_ms,
        settled_at_ms: None,
        draws,
    })
}

/// Locks a hold row and checks it is still pending.
async fn lock_pending_hold(
    conn: &mut AnyConnection,
    backend: Backend,
    hold_id: &str,
) -> ApiResult<(Hold, String)> {
    let row: Option<HoldRow> = sqlx::query_as(&format!(
        "SELECT {HOLD_COLUMNS} FROM point_holds WHERE id = $1{}",
        for_update(backend)
    ))
    .bind(hold_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (hold, entry_id) = hold_from_row(row.ok_or_else(|| ApiError::not_found("hold", hold_id))?);
    if hold.status != HoldStatus::Pending {
        return Err(ApiError::conflict(
            "hold_not_pending",
            format!("hold {hold_id:?} is already {:?}", hold.status).to_lowercase(),
        )
        .with_extra(serde_json::json!({ "status": hold.status })));
    }
    Ok((hold, entry_id))
}

/// Captures a pending hold: the captured points go to the brand's redemption account; the rest
/// (if any) returns to the wallet with its original expiry. A hold past its expiry cannot be
/// captured (`hold_expired`) even if the timeout job has not yet released it.
pub async fn capture_hold(
    conn: &mut AnyConnection,
    backend: Backend,
    points_config: &PointsConfig,
    hold_id: &str,
    req: &CaptureRequest,
    now_ms: i64,
) -> ApiResult<Hold> {
    let (mut hold, hold_entry_id) = lock_pending_hold(conn, backend, hold_id).await?;
    if now_ms >= hold.expires_at_ms {
        return Err(ApiError::conflict(
            "hold_expired",
            format!("hold {hold_id:?} timed out and can no longer be captured"),
        ));
    }
    let capture = req.points.unwrap_or(hold.points);
    if !(1..=hold.points).contains(&capture) {
        return Err(ApiError::validation(format!(
            "points must be 1..={} (the points held)",
            hold.points
        )));
    }
    // Locks the wallet (hold row first, then wallet: the same order as every other path).
    let wallet = lock_wallet(conn, backend, &hold.member_id, now_ms).await?;
    wallet.require_active()?;
    let refs = EntryRefs {
        brand_id: hold.brand_id.clone(),
        hold_id: Some(hold.id.clone()),
        ..EntryRefs::default()
    };
    let mut entry = Entry::open(
        conn,
        EntryKind::Capture,
        &hold.member_id,
        &refs,
        &hold.reason,
        now_ms,
    )
    .await?;
    let rest = hold.points - capture;
    entry
        .apply_wallet(conn, rest, -hold.points, 0, now_ms)
        .await?;
    entry.post(Account::Held, -hold.points, "capture");
    entry.post(
        Account::Redemption(hold.brand_id.as_deref()),
        capture,
        "capture",
    );
    if rest > 0 {
        let posting_id = entry.post(Account::Wallet, rest, "hold remainder released");
        let restored = restore_consumptions(
            conn,
            &mut entry,
            &hold_entry_id,
            rest,
            &posting_id,
            RestoreExpiry::Original,
        )
        .await?;
        if restored != rest {
            return Err(ApiError::internal(anyhow::anyhow!(
                "hold {hold_id} drew {restored} restorable points, expected {rest}"
            )));
        }
    }
    let entry_id = entry.close(conn, now_ms).await?;
    settle_hold(conn, &hold.id, "captured", capture, &entry_id, now_ms).await?;
    // Settlement outbox: captured points are points redeemed at the hold's brand. A hold
    // without a brand is the platform's own and settles with nobody.
    if let Some(brand) = hold.brand_id.as_deref() {
        crate::settlement::events::record(
            conn,
            &crate::settlement::events::NewEvent {
                kind: crate::settlement::events::EventKind::PointsRedeemed,
                brand_id: brand,
                funding_brand: brand,
                honouring_brand: brand,
                reference: None,
                plugin: None,
                points: capture,
                value_cents: crate::purchases::points_value_cents(points_config, capture),
                member_id: Some(&hold.member_id),
                subject_kind: "hold",
                subject_id: &hold.id,
                reverses_event_id: None,
                occurred_at: now_ms,
            },
            now_ms,
        )
        .await?;
    }
    hold.status = HoldStatus::Captured;
    hold.captured = capture;
    hold.settled_at_ms = Some(now_ms);
    Ok(hold)
}

/// Releases a pending hold back to the wallet (original expiry). `timed_out` marks the release
/// as the timeout job's.
pub async fn release_hold(
    conn: &mut AnyConnection,
    backend: Backend,
    hold_id: &str,
    timed_out: bool,
    now_ms: i64,
) -> ApiResult<Hold> {
    let (mut hold, hold_entry_id) = lock_pending_hold(conn, backend, hold_id).await?;
    if timed_out && now_ms < hold.expires_at_ms {
        return Err(ApiError::conflict(
            "hold_not_expired",
            format!("hold {hold_id:?} has not timed out yet"),
        ));
    }
    lock_wallet(conn, backend, &hold.member_id, now_ms).await?;
    let (kind, status) = if timed_out {
        (EntryKind::HoldTimeout, "expired")
    } else {
        (EntryKind::Release, "released")
    };
    let refs = EntryRefs {
        brand_id: hold.brand_id.clone(),
        hold_id: Some(hold.id.clone()),
        ..EntryRefs::default()
    };
    let mut entry = Entry::open(conn, kind, &hold.member_id, &refs, &hold.reason, now_ms).await?;
    entry
        .apply_wallet(conn, hold.points, -hold.points, 0, now_ms)
        .await?;
    entry.post(Account::Held, -hold.points, status);
    let posting_id = entry.post(Account::Wallet, hold.points, status);
    let restored = restore_consumptions(
        conn,
        &mut entry,
        &hold_entry_id,
        hold.points,
        &posting_id,
        RestoreExpiry::Original,
    )
    .await?;
    if restored != hold.points {
        return Err(ApiError::internal(anyhow::anyhow!(
            "hold {hold_id} drew {restored} restorable points, expected {}",
            hold.points
        )));
    }
    let entry_id = entry.close(conn, now_ms).await?;
    settle_hold(conn, &hold.id, status, 0, &entry_id, now_ms).await?;
    hold.status = HoldStatus::parse(status);
    hold.settled_at_ms = Some(now_ms);
    Ok(hold)
}

async fn settle_hold(
    conn: &mut AnyConnection,
    hold_id: &str,
    status: &str,
    captured: i64,
    entry_id: &str,
    now_ms: i64,
) -> ApiResult<()> {
    let updated = sqlx::query(
        "UPDATE point_holds SET status = $1, captured = $2, settle_entry_id = $3, settled_at = $4
         WHERE id = $5 AND status = 'pending'",
    )
    .bind(status)
    .bind(captured)
    .bind(entry_id)
    .bind(now_ms)
    .bind(hold_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated != 1 {
        return Err(ApiError::internal(anyhow::anyhow!(
            "hold {hold_id} left pending under its row lock"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Views

/// Lot as shown to the member.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LotView {
    /// Lot id.
    pub id: String,
    /// `earn`, `bonus`, `adjustment` or `restore`.
    pub source: String,
    /// The brand that funded it; `None` = platform.
    pub brand_id: Option<String>,
    /// Points credited.
    pub points: i64,
    /// Points left.
    pub remaining: i64,
    /// When credited, Unix ms.
    pub earned_at_ms: i64,
    /// When it expires, Unix ms.
    pub expires_at_ms: i64,
}

type LotRow = (String, String, Option<String>, i64, i64, i64, i64);

/// Points expiring at one instant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UpcomingExpiry {
    /// When, Unix ms.
    pub expires_at_ms: i64,
    /// How many points.
    pub points: i64,
}

/// A member's points.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PointsView {
    /// The member.
    pub member_id: String,
    /// Points owned: available + held.
    pub balance: i64,
    /// Points that can be spent now.
    pub available: i64,
    /// Points reserved by pending holds.
    pub held: i64,
    /// Points owed because a refund reversed points the member had already spent; paid from the
    /// next points earned.
    pub debt: i64,
    /// The soonest expiries (grouped by instant), soonest first.
    pub upcoming_expiry: Vec<UpcomingExpiry>,
    /// Spendable lots, soonest expiry first (at most 100).
    pub lots: Vec<LotView>,
    /// Number of spendable lots in total.
    pub lots_total: i64,
    /// Pending holds (at most 50).
    pub holds: Vec<Hold>,
}

/// Reads a member's points. Lots past due but not yet swept by the expiry job are already left
/// out of `available`.
pub async fn points_view(
    pool: &sqlx::AnyPool,
    member_id: &str,
    now_ms: i64,
) -> ApiResult<PointsView> {
    let exists: Option<(String,)> = sqlx::query_as("SELECT id FROM members WHERE id = $1")
        .bind(member_id)
        .fetch_optional(pool)
        .await?;
    if exists.is_none() {
        return Err(ApiError::not_found("member", member_id));
    }
    let wallet: Option<(i64, i64, i64)> =
        sqlx::query_as("SELECT balance, held, debt FROM point_wallets WHERE member_id = $1")
            .bind(member_id)
            .fetch_optional(pool)
            .await?;
    let (balance, held, debt) = wallet.unwrap_or((0, 0, 0));
    let (due,): (i64,) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(remaining), 0) AS BIGINT) FROM point_lots
         WHERE member_id = $1 AND remaining > 0 AND expires_at <= $2",
    )
    .bind(member_id)
    .bind(now_ms)
    .fetch_one(pool)
    .await?;
    let (lots_total,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM point_lots WHERE member_id = $1 AND remaining > 0 AND expires_at > $2",
    )
    .bind(member_id)
    .bind(now_ms)
    .fetch_one(pool)
    .await?;
    let rows: Vec<LotRow> = sqlx::query_as(
        "SELECT id, source, brand_id, amount, remaining, earned_at, expires_at FROM point_lots
         WHERE member_id = $1 AND remaining > 0 AND expires_at > $2
         ORDER BY expires_at, id LIMIT $3",
    )
    .bind(member_id)
    .bind(now_ms)
    .bind(MAX_LOTS_SHOWN)
    .fetch_all(pool)
    .await?;
    let upcoming: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT expires_at, CAST(SUM(remaining) AS BIGINT) FROM point_lots
         WHERE member_id = $1 AND remaining > 0 AND expires_at > $2
         GROUP BY expires_at ORDER BY expires_at LIMIT $3",
    )
    .bind(member_id)
    .bind(now_ms)
    .bind(i64::try_from(MAX_UPCOMING_EXPIRIES).unwrap_or(12))
    .fetch_all(pool)
    .await?;
    let holds: Vec<HoldRow> = sqlx::query_as(&format!(
        "SELECT {HOLD_COLUMNS} FROM point_holds WHERE member_id = $1 AND status = 'pending'
         ORDER BY expires_at, id LIMIT $2"
    ))
    .bind(member_id)
    .bind(MAX_HOLDS_SHOWN)
    .fetch_all(pool)
    .await?;
    let available = (balance - due).max(0);
    Ok(PointsView {
        member_id: member_id.to_owned(),
        balance: available + held,
        available,
        held,
        debt,
        upcoming_expiry: upcoming
            .into_iter()
            .map(|(expires_at_ms, points)| UpcomingExpiry {
                expires_at_ms,
                points,
            })
            .collect(),
        lots: rows
            .into_iter()
            .map(
                |(id, source, brand_id, points, remaining, earned_at, expires_at)| LotView {
                    id,
                    source,
                    brand_id,
                    points,
                    remaining,
                    earned_at_ms: earned_at,
                    expires_at_ms: expires_at,
                },
            )
            .collect(),
        lots_total,
        holds: holds.into_iter().map(|r| hold_from_row(r).0).collect(),
    })
}

/// One posting in a member's history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HistoryItem {
    /// Posting id (also the paging cursor).
    pub id: String,
    /// The journal entry it belongs to.
    pub entry_id: String,
    /// `earn`, `spend`, `hold`, `capture`, `release`, `hold_timeout`, `expiry`, `adjustment`,
    /// `refund` or `debt_settlement`.
    pub kind: String,
    /// `wallet`, `held` or `receivable`.
    pub account: String,
    /// Points in (> 0) or out (< 0) of the account.
    pub points: i64,
    /// What this posting is (e.g. `base`, a bonus reason, `clawback`).
    pub memo: String,
    /// The entry's reason.
    pub reason: String,
    /// Brand of the event, if any.
    pub brand_id: Option<String>,
    /// The brand's order id, for purchase and refund entries.
    pub order_id: Option<String>,
    /// The hold, for hold entries.
    pub hold_id: Option<String>,
    /// When, Unix ms.
    pub at_ms: i64,
}

/// A page of history, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HistoryPage {
    /// Postings, newest first.
    pub items: Vec<HistoryItem>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    pub next_before: Option<String>,
}

type HistoryRow = (
    String,
    String,
    String,
    String,
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
);

/// A page of the member's postings (wallet, held and receivable), newest first.
pub async fn history(
    pool: &sqlx::AnyPool,
    member_id: &str,
    before: Option<&str>,
    limit: i64,
) -> ApiResult<HistoryPage> {
    let exists: Option<(String,)> = sqlx::query_as("SELECT id FROM members WHERE id = $1")
        .bind(member_id)
        .fetch_optional(pool)
        .await?;
    if exists.is_none() {
        return Err(ApiError::not_found("member", member_id));
    }
    let limit = limit.clamp(1, MAX_HISTORY_PAGE);
    let rows: Vec<HistoryRow> = sqlx::query_as(
        "SELECT p.id, p.entry_id, e.kind, p.account, p.amount, p.memo, e.reason, e.brand_id,
                pu.order_id, e.hold_id, p.created_at
         FROM ledger_postings p
         JOIN ledger_entries e ON e.id = p.entry_id
         LEFT JOIN purchases pu ON pu.id = e.purchase_id
         WHERE p.member_id = $1 AND p.id < $2
         ORDER BY p.id DESC LIMIT $3",
    )
    .bind(member_id)
    // Ids are lowercase hex, so "g" sorts after every id: no cursor means "from the newest".
    .bind(before.unwrap_or("g"))
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit;
    let items: Vec<HistoryItem> = rows
        .into_iter()
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(
            |(
                id,
                entry_id,
                kind,
                account,
                points,
                memo,
                reason,
                brand_id,
                order_id,
                hold_id,
                at,
            )| {
                HistoryItem {
                    id,
                    entry_id,
                    kind,
                    account,
                    points,
                    memo,
                    reason,
                    brand_id,
                    order_id,
                    hold_id,
                    at_ms: at,
                }
            },
        )
        .collect();
    let next_before = if more {
        items.last().map(|i| i.id.clone())
    } else {
        None
    };
    Ok(HistoryPage { items, next_before })
}

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
