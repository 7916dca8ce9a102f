//! Stored value: a prepaid balance in cents beside points, with its own double-entry journal.
//!
//! # Accounts
//! - `member` (per member and **holding brand**): what the member may spend; a liability of the
//!   brand that took the money. Materialised twice: the member's total in
//!   `stored_value_wallets.balance` and its split by holder in `stored_value_funds.balance`,
//!   both guarded `>= 0` in SQL and by `CHECK` constraints.
//! - `float` (per brand): money a brand took at top-ups.
//! - `sales` (per brand): stored value a brand accepted as payment.
//!
//! Every entry is two postings summing to zero: a top-up `float(holder) → member(holder)`, a
//! payment `member(holder) → sales(counter)`, a refund `sales(counter) → member(holder)`.
//!
//! # Rules
//! - **Limits at the moment of top-up**, in the transaction: the balance after a top-up may not
//!   pass `max_balance_unverified_cents`, or `max_balance_verified_cents` for a real-name
//!   verified member, and a single top-up above `verification_required_above_cents` needs a
//!   verified member. A refund gives back what was paid even above the limit: money owed to a
//!   member is never refused.
//! - **Payment** draws the counter brand's own fund first (nothing to settle), then the other
//!   funds oldest first. A draw from another brand's fund records a `stored-value-redeemed`
//!   settle event: the holder pays the counter brand at face value.
//! - **Refunds** give back the refunded lines' stored-value share (exact by cumulative shares)
//!   into the funds the purchase drew from, in draw order, each draw at most once in total
//!   (`returned <= amount`, guarded); a reversal settle event follows each returned draw.
//! - The **liability report** sums the funds per holding brand, with the reserve its
//!   percentage requires and the dormant part (no activity for `dormant_after_days`), which is
//!   also what breakage could at most be. Nothing is ever written off.

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::foundation::clock::DAY_MS;
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::{new_id, Backend, UniqueAsConflict};
use crate::ledger::outbox::{self, EventKind, NewEvent};

/// Largest balance limit a configuration may set, cents (1,000,000.00): prepaid-card rules cap
/// named cards far below this; a typo must not open an unbounded float.
const MAX_LIMIT_CENTS: i64 = 100_000_000;
/// Longest `topup_id`.
const MAX_TOPUP_ID_LEN: usize = 100;
/// Entries shown in a member's stored-value view (newest first).
pub const VIEW_ENTRIES: i64 = 50;

/// The `[stored_value]` configuration section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoredValueConfig {
    /// Most an unverified member may hold, cents (¥1,000.00).
    pub max_balance_unverified_cents: i64,
    /// Most a real-name verified member may hold, cents (¥5,000.00).
    pub max_balance_verified_cents: i64,
    /// A single top-up above this needs a real-name verified member, cents.
    pub verification_required_above_cents: i64,
    /// Smallest top-up, cents.
    pub min_topup_cents: i64,
    /// Reserve a brand must hold against its outstanding stored value, percent, unless the
    /// brand has its own (`PUT /brands/{id}/stored-value/reserve`).
    pub default_reserve_percent: i64,
    /// A member with no top-up, payment or refund for this many days is dormant.
    pub dormant_after_days: i64,
}

impl Default for StoredValueConfig {
    fn default() -> Self {
        Self {
            max_balance_unverified_cents: 100_000,
            max_balance_verified_cents: 500_000,
            verification_required_above_cents: 50_000,
            min_topup_cents: 100,
            default_reserve_percent: 30,
            dormant_after_days: 365,
        }
    }
}

impl StoredValueConfig {
    /// Checks the section.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, value) in [
            (
                "max_balance_unverified_cents",
                self.max_balance_unverified_cents,
            ),
            (
                "max_balance_verified_cents",
                self.max_balance_verified_cents,
            ),
            (
                "verification_required_above_cents",
                self.verification_required_above_cents,
            ),
            ("min_topup_cents", self.min_topup_cents),
        ] {
            anyhow::ensure!(
                (0..=MAX_LIMIT_CENTS).contains(&value),
                "stored_value.{name} must be within 0..={MAX_LIMIT_CENTS}"
            );
        }
        anyhow::ensure!(
            self.max_balance_unverified_cents <= self.max_balance_verified_cents,
            "stored_value.max_balance_unverified_cents must not exceed max_balance_verified_cents"
        );
        anyhow::ensure!(
            self.min_topup_cents >= 1,
            "stored_value.min_topup_cents must be at least 1"
        );
        anyhow::ensure!(
            (0..=100).contains(&self.default_reserve_percent),
            "stored_value.default_reserve_percent must be within 0..=100"
        );
        anyhow::ensure!(
            (1..=36_500).contains(&self.dormant_after_days),
            "stored_value.dormant_after_days must be within 1..=36500"
        );
        Ok(())
    }

    /// The balance limit of a member.
    pub fn limit_for(&self, verified: bool) -> i64 {
        if verified {
            self.max_balance_verified_cents
        } else {
            self.max_balance_unverified_cents
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests and views

/// A top-up at a brand's counter.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopupRequest {
    /// The brand's top-up id, unique per brand, 1..=100 bytes.
    pub topup_id: String,
    /// The member.
    pub member_id: String,
    /// Cents paid in, ≥ `min_topup_cents`.
    pub amount_cents: i64,
}

/// A recorded top-up.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TopupView {
    /// Internal id.
    pub id: String,
    /// The brand that took the money (and holds it).
    pub brand_id: String,
    /// The brand's top-up id.
    pub topup_id: String,
    /// The member.
    pub member_id: String,
    /// Cents.
    pub amount_cents: i64,
    /// The member's stored-value balance after it, cents.
    pub balance_after_cents: i64,
    /// When, Unix ms.
    pub created_at_ms: i64,
}

/// Part of a member's balance held by one brand.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FundView {
    /// The brand holding the money.
    pub brand_id: String,
    /// Cents.
    pub balance_cents: i64,
}

/// One stored-value journal entry, as the member sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StoredValueEntryView {
    /// Entry id.
    pub id: String,
    /// `topup`, `payment` or `refund`.
    pub kind: String,
    /// Where it happened.
    pub brand_id: String,
    /// Whose fund moved.
    pub holder_brand: String,
    /// Change to the member's balance, cents (negative for payments).
    pub amount_cents: i64,
    /// The purchase paid or refunded, if any.
    pub purchase_id: Option<String>,
    /// When, Unix ms.
    pub created_at_ms: i64,
}

/// A member's stored value.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StoredValueView {
    /// The member.
    pub member_id: String,
    /// Spendable, cents.
    pub balance_cents: i64,
    /// The balance split by the brand holding the money.
    pub funds: Vec<FundView>,
    /// Real-name verified.
    pub verified: bool,
    /// Most the member may hold, cents.
    pub limit_cents: i64,
    /// Last top-up, payment or refund, Unix ms.
    pub last_activity_at_ms: Option<i64>,
    /// The newest entries, newest first (at most 50).
    pub entries: Vec<StoredValueEntryView>,
}

/// One holding brand's line of the liability report.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LiabilityLine {
    /// The brand holding the money.
    pub brand_id: String,
    /// Members' balances it holds, cents.
    pub outstanding_cents: i64,
    /// Members with a balance at it.
    pub members: i64,
    /// Its reserve percentage.
    pub reserve_percent: i64,
    /// The reserve it must hold: `outstanding × percent / 100`, rounded up, cents.
    pub reserve_required_cents: i64,
    /// Of the outstanding, what dormant members hold (no activity for `dormant_after_days`):
    /// the most that could become breakage. Reported, never written off.
    pub dormant_cents: i64,
    /// Dormant members with a balance at it.
    pub dormant_members: i64,
    /// Taken at top-ups, all time, cents.
    pub topped_up_cents: i64,
    /// Spent (net of refunds) anywhere, all time, cents.
    pub spent_cents: i64,
}

/// Outstanding stored value per holding brand.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LiabilityReport {
    /// When computed, Unix ms.
    pub as_of_ms: i64,
    /// Dormancy threshold used, days.
    pub dormant_after_days: i64,
    /// One line per holding brand in scope, by brand id.
    pub brands: Vec<LiabilityLine>,
    /// Sum of `outstanding_cents`.
    pub total_outstanding_cents: i64,
    /// Sum of `reserve_required_cents`.
    pub total_reserve_required_cents: i64,
    /// Sum of `dormant_cents`.
    pub total_dormant_cents: i64,
}

/// A brand's reserve percentage.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    /// Percent of outstanding stored value to hold in reserve, 0..=100; `null` = the default.
    pub reserve_percent: Option<i64>,
    /// Why (kept in the audit log), 1..=500 bytes.
    pub reason: String,
}

/// What a payment drew from one fund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draw {
    /// The brand holding the money drawn.
    pub holder_brand: String,
    /// Cents.
    pub amount: i64,
}

// ---------------------------------------------------------------------------------------------
// Errors

fn insufficient(available: i64, requested: i64) -> DomainError {
    DomainError::unprocessable(
        "insufficient_stored_value",
        format!("the member has {available} cents of stored value; {requested} are needed"),
    )
    .with_extra(serde_json::json!({ "available_cents": available, "requested_cents": requested }))
}

// ---------------------------------------------------------------------------------------------
// Writes

/// Locks the member's stored-value wallet (creating it), returning the balance and whether the
/// member is active. Unknown member: 404.
async fn lock(
    conn: &mut AnyConnection,
    backend: Backend,
    member_id: &str,
    now_ms: i64,
) -> DomainResult<(i64, String)> {
    let sql = format!(
        "SELECT w.balance, m.status FROM stored_value_wallets w
         JOIN members m ON m.id = w.member_id WHERE w.member_id = $1{}",
        match backend {
            Backend::Postgres => " FOR UPDATE OF w",
            Backend::Sqlite => "",
        }
    );
    if let Some(row) = sqlx::query_as::<_, (i64, String)>(&sql)
        .bind(member_id)
        .fetch_optional(&mut *conn)
        .await?
    {
        return Ok(row);
    }
    let exists: Option<(String,)> = sqlx::query_as("SELECT id FROM members WHERE id = $1")
        .bind(member_id)
        .fetch_optional(&mut *conn)
        .await?;
    if exists.is_none() {
        return Err(DomainError::not_found("member", member_id));
    }
    sqlx::query(
        "INSERT INTO stored_value_wallets (member_id, balance, last_activity_at, updated_at)
         VALUES ($1, 0, $2, $2) ON CONFLICT (member_id) DO NOTHING",
    )
    .bind(member_id)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    sqlx::query_as::<_, (i64, String)>(&sql)
        .bind(member_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| DomainError::internal(anyhow::anyhow!("stored-value wallet vanished")))
}

/// Adds `delta` to a fund (creating it), guarded `>= 0`.
async fn move_fund(
    conn: &mut AnyConnection,
    member_id: &str,
    brand_id: &str,
    delta: i64,
    now_ms: i64,
) -> DomainResult<()> {
    let moved = if delta >= 0 {
        sqlx::query(
            "INSERT INTO stored_value_funds (member_id, brand_id, balance, created_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (member_id, brand_id)
             DO UPDATE SET balance = stored_value_funds.balance + excluded.balance",
        )
        .bind(member_id)
        .bind(brand_id)
        .bind(delta)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?
        .rows_affected()
    } else {
        sqlx::query(
            "UPDATE stored_value_funds SET balance = balance + $1
             WHERE member_id = $2 AND brand_id = $3 AND balance + $1 >= 0",
        )
        .bind(delta)
        .bind(member_id)
        .bind(brand_id)
        .execute(&mut *conn)
        .await?
        .rows_affected()
    };
    if moved != 1 {
        return Err(DomainError::internal(anyhow::anyhow!(
            "stored-value fund {member_id}/{brand_id} refused {delta}"
        )));
    }
    Ok(())
}

/// Writes one entry and its two postings. `member_delta` is the change to the member's account.
#[allow(clippy::too_many_arguments)]
async fn post(
    conn: &mut AnyConnection,
    kind: &str,
    member_id: &str,
    brand_id: &str,
    holder_brand: &str,
    member_delta: i64,
    refs: (Option<&str>, Option<&str>, Option<&str>),
    now_ms: i64,
) -> DomainResult<String> {
    let (purchase_id, refund_pk, topup_pk) = refs;
    let entry_id = new_id();
    sqlx::query(
        "INSERT INTO stored_value_entries (id, kind, member_id, brand_id, holder_brand, amount,
            purchase_id, refund_pk, topup_pk, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&entry_id)
    .bind(kind)
    .bind(member_id)
    .bind(brand_id)
    .bind(holder_brand)
    .bind(member_delta.abs())
    .bind(purchase_id)
    .bind(refund_pk)
    .bind(topup_pk)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    // The other side: the holder's float for top-ups, the counter's sales otherwise.
    let (other_account, other_brand) = if kind == "topup" {
        ("float", holder_brand)
    } else {
        ("sales", brand_id)
    };
    for (account, member, brand, amount) in [
        ("member", Some(member_id), holder_brand, member_delta),
        (other_account, None, other_brand, -member_delta),
    ] {
        sqlx::query(
            "INSERT INTO stored_value_postings (id, entry_id, account, member_id, brand_id,
                amount, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(new_id())
        .bind(&entry_id)
        .bind(account)
        .bind(member)
        .bind(brand)
        .bind(amount)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    }
    Ok(entry_id)
}

async fn touch(
    conn: &mut AnyConnection,
    member_id: &str,
    delta: i64,
    now_ms: i64,
) -> DomainResult<u64> {
    Ok(sqlx::query(
        "UPDATE stored_value_wallets SET balance = balance + $1, last_activity_at = $2,
            updated_at = $2
         WHERE member_id = $3 AND balance + $1 >= 0",
    )
    .bind(delta)
    .bind(now_ms)
    .bind(member_id)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// Records a top-up at `brand_id` (which then holds the money), in the caller's transaction.
/// `verified`: the member passed real-name verification.
pub async fn topup(
    conn: &mut AnyConnection,
    backend: Backend,
    config: &StoredValueConfig,
    brand_id: &str,
    req: &TopupRequest,
    verified: bool,
    now_ms: i64,
) -> DomainResult<TopupView> {
    if req.topup_id.is_empty()
        || req.topup_id.len() > MAX_TOPUP_ID_LEN
        || req.topup_id.chars().any(char::is_control)
    {
        return Err(DomainError::validation(format!(
            "topup_id must be 1..={MAX_TOPUP_ID_LEN} bytes without control characters"
        )));
    }
    let most = config.max_balance_verified_cents;
    if !(config.min_topup_cents..=most).contains(&req.amount_cents) {
        return Err(DomainError::validation(format!(
            "amount_cents must be {}..={most}",
            config.min_topup_cents
        )));
    }
    if req.amount_cents > config.verification_required_above_cents && !verified {
        return Err(DomainError::unprocessable(
            "real_name_required",
            format!(
                "a top-up above {} cents needs a real-name verified member",
                config.verification_required_above_cents
            ),
        )
        .with_extra(serde_json::json!({
            "threshold_cents": config.verification_required_above_cents,
            "amount_cents": req.amount_cents,
        })));
    }
    let (balance, status) = lock(conn, backend, &req.member_id, now_ms).await?;
    if status != "active" {
        return Err(crate::ledger::member_blocked(&req.member_id));
    }
    let limit = config.limit_for(verified);
    let added = sqlx::query(
        "UPDATE stored_value_wallets SET balance = balance + $1, last_activity_at = $2,
            updated_at = $2
         WHERE member_id = $3 AND balance + $1 <= $4",
    )
    .bind(req.amount_cents)
    .bind(now_ms)
    .bind(&req.member_id)
    .bind(limit)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if added != 1 {
        return Err(DomainError::unprocessable(
            "stored_value_limit_exceeded",
            format!(
                "the member holds {balance} cents; {} more would pass the limit of {limit} \
                 cents{}",
                req.amount_cents,
                if verified {
                    ""
                } else {
                    " for members without real-name verification"
                }
            ),
        )
        .with_extra(serde_json::json!({
            "balance_cents": balance,
            "limit_cents": limit,
            "verified": verified,
        })));
    }
    move_fund(conn, &req.member_id, brand_id, req.amount_cents, now_ms).await?;
    let id = new_id();
    let entry_id = post(
        conn,
        "topup",
        &req.member_id,
        brand_id,
        brand_id,
        req.amount_cents,
        (None, None, Some(&id)),
        now_ms,
    )
    .await?;
    sqlx::query(
        "INSERT INTO stored_value_topups (id, brand_id, topup_id, member_id, amount_cents,
            entry_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(brand_id)
    .bind(&req.topup_id)
    .bind(&req.member_id)
    .bind(req.amount_cents)
    .bind(&entry_id)
    .bind(now_ms)
    .execute(&mut *conn)
    .await
    .unique_as(|| {
        DomainError::conflict(
            "topup_exists",
            format!(
                "top-up {:?} is already recorded at brand {brand_id:?}",
                req.topup_id
            ),
        )
    })?;
    Ok(TopupView {
        id,
        brand_id: brand_id.to_owned(),
        topup_id: req.topup_id.clone(),
        member_id: req.member_id.clone(),
        amount_cents: req.amount_cents,
        balance_after_cents: balance + req.amount_cents,
        created_at_ms: now_ms,
    })
}

/// What a stored-value payment pays for: where its draws are kept and how its journal entries
/// and settle events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaidFor<'a> {
    /// A purchase at a counter (its internal id); draws in `stored_value_draws`.
    Purchase(&'a str),
    /// The fee of a paid membership card (the `membership_payments` id); draws in
    /// `membership_draws`.
    MembershipFee(&'a str),
}

impl PaidFor<'_> {
    fn id(&self) -> &str {
        match self {
            PaidFor::Purchase(id) | PaidFor::MembershipFee(id) => id,
        }
    }

    /// The draws table and the column naming what was paid.
    fn draws(&self) -> (&'static str, &'static str) {
        match self {
            PaidFor::Purchase(_) => ("stored_value_draws", "purchase_id"),
            PaidFor::MembershipFee(_) => ("membership_draws", "payment_id"),
        }
    }

    fn subject_kind(&self) -> &'static str {
        match self {
            PaidFor::Purchase(_) => "purchase",
            PaidFor::MembershipFee(_) => "membership_payment",
        }
    }
}

/// Pays `amount` cents of purchase `purchase_id` at `brand_id` with the member's stored value,
/// in the caller's transaction: the brand's own fund first, then the others oldest first; a
/// draw from another brand's fund records a `stored-value-redeemed` settle event.
pub async fn pay(
    conn: &mut AnyConnection,
    backend: Backend,
    member_id: &str,
    brand_id: &str,
    purchase_id: &str,
    amount: i64,
    now_ms: i64,
) -> DomainResult<Vec<Draw>> {
    pay_for(
        conn,
        backend,
        member_id,
        brand_id,
        PaidFor::Purchase(purchase_id),
        amount,
        now_ms,
    )
    .await
}

/// [`pay`] for anything stored value may pay for (a purchase, a membership fee): the same
/// guarded debit, fund order, journal entries and settle events.
pub async fn pay_for(
    conn: &mut AnyConnection,
    backend: Backend,
    member_id: &str,
    brand_id: &str,
    paid_for: PaidFor<'_>,
    amount: i64,
    now_ms: i64,
) -> DomainResult<Vec<Draw>> {
    let purchase_id = paid_for.id();
    let (draws_table, draws_key) = paid_for.draws();
    if amount <= 0 {
        return Ok(Vec::new());
    }
    let (balance, _) = lock(conn, backend, member_id, now_ms).await?;
    if touch(conn, member_id, -amount, now_ms).await? != 1 {
        return Err(insufficient(balance, amount));
    }
    let funds: Vec<(String, i64)> = sqlx::query_as(
        "SELECT brand_id, balance FROM stored_value_funds
         WHERE member_id = $1 AND balance > 0
         ORDER BY CASE WHEN brand_id = $2 THEN 0 ELSE 1 END, created_at, brand_id",
    )
    .bind(member_id)
    .bind(brand_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut left = amount;
    let mut draws = Vec::new();
    for (holder, available) in funds {
        if left == 0 {
            break;
        }
        let take = left.min(available);
        left -= take;
        move_fund(conn, member_id, &holder, -take, now_ms).await?;
        post(
            conn,
            "payment",
            member_id,
            brand_id,
            &holder,
            -take,
            (Some(purchase_id), None, None),
            now_ms,
        )
        .await?;
        let event_id = if holder != brand_id {
            outbox::record(
                conn,
                &NewEvent {
                    kind: EventKind::StoredValueRedeemed,
                    brand_id,
                    funding_brand: &holder,
                    honouring_brand: brand_id,
                    reference: Some(&holder),
                    plugin: None,
                    points: 0,
                    value_cents: take,
                    member_id: Some(member_id),
                    subject_kind: paid_for.subject_kind(),
                    subject_id: purchase_id,
                    reverses_event_id: None,
                    occurred_at: now_ms,
                },
                now_ms,
            )
            .await?
        } else {
            None
        };
        sqlx::query(&format!(
            "INSERT INTO {draws_table} (id, {draws_key}, member_id, holder_brand, amount,
                returned, event_id, position) VALUES ($1, $2, $3, $4, $5, 0, $6, $7)"
        ))
        .bind(new_id())
        .bind(purchase_id)
        .bind(member_id)
        .bind(&holder)
        .bind(take)
        .bind(event_id)
        .bind(i64::try_from(draws.len()).unwrap_or(i64::MAX))
        .execute(&mut *conn)
        .await?;
        draws.push(Draw {
            holder_brand: holder,
            amount: take,
        });
    }
    if left != 0 {
        // The funds always add up to the wallet; a gap is corruption, not a member error.
        return Err(DomainError::internal(anyhow::anyhow!(
            "stored-value funds of {member_id} fall {left} cents short of the wallet"
        )));
    }
    Ok(draws)
}

/// Gives back `amount` cents of a purchase's stored-value payment (a refund), in the caller's
/// transaction: into the funds it drew from, in draw order, never more than each draw.
#[allow(clippy::too_many_arguments)]
pub async fn give_back(
    conn: &mut AnyConnection,
    backend: Backend,
    member_id: &str,
    brand_id: &str,
    purchase_id: &str,
    refund_pk: &str,
    amount: i64,
    now_ms: i64,
) -> DomainResult<()> {
    give_back_for(
        conn,
        backend,
        member_id,
        brand_id,
        PaidFor::Purchase(purchase_id),
        refund_pk,
        amount,
        now_ms,
    )
    .await
}

/// [`give_back`] for anything [`pay_for`] paid: `refund_pk` names the refund or cancellation.
#[allow(clippy::too_many_arguments)]
pub async fn give_back_for(
    conn: &mut AnyConnection,
    backend: Backend,
    member_id: &str,
    brand_id: &str,
    paid_for: PaidFor<'_>,
    refund_pk: &str,
    amount: i64,
    now_ms: i64,
) -> DomainResult<()> {
    let purchase_id = paid_for.id();
    let (draws_table, draws_key) = paid_for.draws();
    if amount <= 0 {
        return Ok(());
    }
    lock(conn, backend, member_id, now_ms).await?;
    let draws: Vec<(String, String, i64, i64, Option<String>)> = sqlx::query_as(&format!(
        "SELECT id, holder_brand, amount, returned, event_id FROM {draws_table}
         WHERE {draws_key} = $1 AND returned < amount ORDER BY position"
    ))
    .bind(purchase_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut left = amount;
    for (draw_id, holder, drawn, returned, event_id) in draws {
        if left == 0 {
            break;
        }
        let give = left.min(drawn - returned);
        left -= give;
        let updated = sqlx::query(&format!(
            "UPDATE {draws_table} SET returned = returned + $1
             WHERE id = $2 AND returned + $1 <= amount"
        ))
        .bind(give)
        .bind(&draw_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if updated != 1 {
            return Err(DomainError::internal(anyhow::anyhow!(
                "stored-value draw {draw_id} refused a return of {give}"
            )));
        }
        touch(conn, member_id, give, now_ms).await?;
        move_fund(conn, member_id, &holder, give, now_ms).await?;
        post(
            conn,
            "refund",
            member_id,
            brand_id,
            &holder,
            give,
            (Some(purchase_id), Some(refund_pk), None),
            now_ms,
        )
        .await?;
        if let Some(event_id) = event_id {
            // One reversal per (refund, draw): the subject names both, so a refund returning to
            // two funds records two events.
            let subject = format!("{refund_pk}:{draw_id}");
            outbox::record(
                conn,
                &NewEvent {
                    kind: EventKind::Refund,
                    brand_id,
                    funding_brand: &holder,
                    honouring_brand: brand_id,
                    reference: Some(EventKind::StoredValueRedeemed.as_str()),
                    plugin: None,
                    points: 0,
                    value_cents: give,
                    member_id: Some(member_id),
                    subject_kind: "refund",
                    subject_id: &subject,
                    reverses_event_id: Some(&event_id),
                    occurred_at: now_ms,
                },
                now_ms,
            )
            .await?;
        }
    }
    if left != 0 {
        return Err(DomainError::internal(anyhow::anyhow!(
            "purchase {purchase_id} has {left} cents less stored value to give back than asked"
        )));
    }
    Ok(())
}

/// Sets a brand's reserve percentage (`None` = the configured default), with an audit entry.
pub async fn set_reserve(
    conn: &mut AnyConnection,
    backend: Backend,
    brand_id: &str,
    req: &ReserveRequest,
    actor: &str,
    now_ms: i64,
) -> DomainResult<()> {
    crate::ledger::validate_reason(&req.reason, true)?;
    let percent = req.reserve_percent;
    if let Some(p) = percent {
        if !(0..=100).contains(&p) {
            return Err(DomainError::validation("reserve_percent must be 0..=100"));
        }
    }
    let updated = sqlx::query("UPDATE brands SET stored_value_reserve_percent = $1 WHERE id = $2")
        .bind(percent)
        .bind(brand_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if updated != 1 {
        return Err(DomainError::not_found("brand", brand_id));
    }
    crate::ledger::audit::append(
        conn,
        backend,
        &crate::ledger::audit::NewEntry {
            actor,
            action: "stored_value.reserve",
            subject_kind: "brand",
            subject_id: brand_id,
            reason: &req.reason,
            details: serde_json::json!({ "reserve_percent": percent }),
        },
        now_ms,
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reads

/// An entry as read: id, kind, brand, holder, amount, purchase, when.
type EntryRow = (String, String, String, String, i64, Option<String>, i64);

/// A member's stored value; unknown member: 404.
pub async fn view(
    pool: &sqlx::AnyPool,
    config: &StoredValueConfig,
    member_id: &str,
    verified: bool,
) -> DomainResult<StoredValueView> {
    let exists: Option<(String,)> = sqlx::query_as("SELECT id FROM members WHERE id = $1")
        .bind(member_id)
        .fetch_optional(pool)
        .await?;
    if exists.is_none() {
        return Err(DomainError::not_found("member", member_id));
    }
    let wallet: Option<(i64, i64)> = sqlx::query_as(
        "SELECT balance, last_activity_at FROM stored_value_wallets WHERE member_id = $1",
    )
    .bind(member_id)
    .fetch_optional(pool)
    .await?;
    let funds: Vec<(String, i64)> = sqlx::query_as(
        "SELECT brand_id, balance FROM stored_value_funds
         WHERE member_id = $1 AND balance > 0 ORDER BY brand_id",
    )
    .bind(member_id)
    .fetch_all(pool)
    .await?;
    let entries: Vec<EntryRow> = sqlx::query_as(
        "SELECT id, kind, brand_id, holder_brand, amount, purchase_id, created_at
             FROM stored_value_entries WHERE member_id = $1
             ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(member_id)
    .bind(VIEW_ENTRIES)
    .fetch_all(pool)
    .await?;
    Ok(StoredValueView {
        member_id: member_id.to_owned(),
        balance_cents: wallet.map_or(0, |w| w.0),
        funds: funds
            .into_iter()
            .map(|(brand_id, balance_cents)| FundView {
                brand_id,
                balance_cents,
            })
            .collect(),
        verified,
        limit_cents: config.limit_for(verified),
        last_activity_at_ms: wallet.map(|w| w.1),
        entries: entries
            .into_iter()
            .map(
                |(id, kind, brand_id, holder_brand, amount, purchase_id, at)| {
                    StoredValueEntryView {
                        amount_cents: if kind == "payment" { -amount } else { amount },
                        id,
                        kind,
                        brand_id,
                        holder_brand,
                        purchase_id,
                        created_at_ms: at,
                    }
                },
            )
            .collect(),
    })
}

/// Outstanding stored value per holding brand (all brands, or one), by SQL aggregates.
pub async fn liability(
    conn: &mut AnyConnection,
    config: &StoredValueConfig,
    brand: Option<&str>,
    now_ms: i64,
) -> DomainResult<LiabilityReport> {
    let dormant_before = now_ms.saturating_sub(config.dormant_after_days.saturating_mul(DAY_MS));
    type Row = (String, Option<i64>, i64, i64, i64, i64, i64, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT b.id, b.stored_value_reserve_percent,
            CAST(COALESCE((SELECT SUM(f.balance) FROM stored_value_funds f
                WHERE f.brand_id = b.id), 0) AS BIGINT),
            CAST(COALESCE((SELECT COUNT(*) FROM stored_value_funds f
                WHERE f.brand_id = b.id AND f.balance > 0), 0) AS BIGINT),
            CAST(COALESCE((SELECT SUM(f.balance) FROM stored_value_funds f
                JOIN stored_value_wallets w ON w.member_id = f.member_id
                WHERE f.brand_id = b.id AND w.last_activity_at < $1), 0) AS BIGINT),
            CAST(COALESCE((SELECT COUNT(*) FROM stored_value_funds f
                JOIN stored_value_wallets w ON w.member_id = f.member_id
                WHERE f.brand_id = b.id AND f.balance > 0 AND w.last_activity_at < $1), 0)
                AS BIGINT),
            CAST(COALESCE((SELECT SUM(amount) FROM stored_value_postings p
                WHERE p.brand_id = b.id AND p.account = 'float'), 0) AS BIGINT),
            CAST(COALESCE((SELECT SUM(amount) FROM stored_value_postings p
                WHERE p.brand_id = b.id AND p.account = 'member'), 0) AS BIGINT)
         FROM brands b
         WHERE ($2 = '' OR b.id = $2)
         ORDER BY b.id",
    )
    .bind(dormant_before)
    .bind(brand.unwrap_or(""))
    .fetch_all(&mut *conn)
    .await?;
    let mut report = LiabilityReport {
        as_of_ms: now_ms,
        dormant_after_days: config.dormant_after_days,
        brands: Vec::new(),
        total_outstanding_cents: 0,
        total_reserve_required_cents: 0,
        total_dormant_cents: 0,
    };
    for (brand_id, percent, outstanding, members, dormant, dormant_members, float, member) in rows {
        let topped_up = -float;
        // What left the members' accounts at this holder, net of refunds: top-ups in minus
        // what is still held.
        let spent = topped_up - member;
        if topped_up == 0 && outstanding == 0 && brand.is_none() {
            continue;
        }
        let reserve_percent = percent.unwrap_or(config.default_reserve_percent);
        let reserve = (i128::from(outstanding) * i128::from(reserve_percent) + 99) / 100;
        let reserve = i64::try_from(reserve).unwrap_or(i64::MAX);
        report.total_outstanding_cents += outstanding;
        report.total_reserve_required_cents += reserve;
        report.total_dormant_cents += dormant;
        report.brands.push(LiabilityLine {
            brand_id,
            outstanding_cents: outstanding,
            members,
            reserve_percent,
            reserve_required_cents: reserve,
            dormant_cents: dormant,
            dormant_members,
            topped_up_cents: topped_up,
            spent_cents: spent,
        });
    }
    Ok(report)
}

/// One brand's line of the liability report; unknown brand: 404.
pub async fn reserve_line(
    conn: &mut AnyConnection,
    config: &StoredValueConfig,
    brand_id: &str,
    now_ms: i64,
) -> DomainResult<LiabilityLine> {
    liability(conn, config, Some(brand_id), now_ms)
        .await?
        .brands
        .into_iter()
        .next()
        .ok_or_else(|| DomainError::not_found("brand", brand_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rejects_inverted_limits_and_bad_percentages() {
        assert!(StoredValueConfig::default().validate().is_ok());
        let inverted = StoredValueConfig {
            max_balance_unverified_cents: 600_000,
            ..StoredValueConfig::default()
        };
        assert!(inverted.validate().is_err());
        let reserve = StoredValueConfig {
            default_reserve_percent: 101,
            ..StoredValueConfig::default()
        };
        assert!(reserve.validate().is_err());
        assert_eq!(StoredValueConfig::default().limit_for(true), 500_000);
        assert_eq!(StoredValueConfig::default().limit_for(false), 100_000);
    }
}
