//! Expiry: posting lots past due to the `expiry` account, per member and lazily on lock.

use super::*;

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
pub(super) async fn expire_locked(
    conn: &mut AnyConnection,
    wallet: &LockedWallet,
    now_ms: i64,
) -> DomainResult<ExpiryOutcome> {
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
            return Err(DomainError::internal(anyhow::anyhow!(
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
    store: &crate::foundation::store::Store,
    member_id: &str,
    now_ms: i64,
) -> DomainResult<ExpiryOutcome> {
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
