//! Credits, debits and refund debt: every credit settles debt before it can be spent.

use super::*;

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
) -> DomainResult<()> {
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
) -> DomainResult<Vec<Draw>> {
    entry.apply_wallet(conn, -points, 0, 0, now_ms).await?;
    let draws = consume_lots(conn, entry, points, None, now_ms).await?;
    entry.post(Account::Wallet, -points, memo);
    entry.post(to, points, memo);
    Ok(draws)
}

/// Pays refund debt from the locked member's spendable points, as its own `debt_settlement`
/// entry, and returns the points settled. Called by [`Entry::close_settling`] only: that is
/// the one place every credit passes through.
pub(super) async fn settle_debt_of(
    conn: &mut AnyConnection,
    member_id: &str,
    now_ms: i64,
) -> DomainResult<i64> {
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
