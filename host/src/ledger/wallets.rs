//! Locking a member's wallet for a write (after lazy expiry), and the errors every ledger
//! operation shares (insufficient points, a blocked member, invalid amounts and reasons).

use super::*;

// Errors shared by ledger operations

pub(super) fn insufficient(available: i64, requested: i64) -> DomainError {
    DomainError::unprocessable(
        "insufficient_points",
        format!("the member has {available} points available; {requested} are needed"),
    )
    .with_extra(serde_json::json!({ "available": available, "requested": requested }))
}

/// 422 `member_blocked`: blocked members may not earn or spend.
pub fn member_blocked(member_id: &str) -> DomainError {
    DomainError::unprocessable(
        "member_blocked",
        format!("member {member_id:?} is blocked and may not earn or spend points"),
    )
}

/// Checks a point amount of an operation.
pub fn validate_points(field: &str, points: i64) -> DomainResult<()> {
    if !(1..=MAX_POINTS_PER_OPERATION).contains(&points) {
        return Err(DomainError::validation(format!(
            "{field} must be 1..={MAX_POINTS_PER_OPERATION}"
        )));
    }
    Ok(())
}

/// Checks a free-text reason.
pub fn validate_reason(reason: &str, required: bool) -> DomainResult<()> {
    if required && reason.trim().is_empty() {
        return Err(DomainError::validation("reason is required"));
    }
    if reason.len() > MAX_REASON_LEN {
        return Err(DomainError::validation(format!(
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
    pub fn require_active(&self) -> DomainResult<()> {
        if self.status == "active" {
            Ok(())
        } else {
            Err(member_blocked(&self.member_id))
        }
    }
}

/// Locks the member's wallet (creating it on first use), then expires any lots past due so the
/// balance the caller sees is spendable. Unknown member: 404.
pub async fn lock_wallet(
    conn: &mut AnyConnection,
    backend: Backend,
    member_id: &str,
    now_ms: i64,
) -> DomainResult<LockedWallet> {
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
            return Err(DomainError::not_found("member", member_id));
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
        row.ok_or_else(|| DomainError::internal(anyhow::anyhow!("wallet vanished after insert")))?;
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
