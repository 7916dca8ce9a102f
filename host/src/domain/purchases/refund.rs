//! Refunds by line and quantity: restore, claw back, debt, outbox reversals.

use super::*;

pub(super) fn refund_exceeds(line_id: &str, asked: i64, left: i64) -> DomainError {
    DomainError::unprocessable(
        "refund_exceeds_purchase",
        format!("line {line_id:?}: {asked} to refund but only {left} left unrefunded"),
    )
    .with_extra(serde_json::json!({ "line_id": line_id, "requested": asked, "refundable": left }))
}

/// Refunds lines of a purchase (see the module doc for the rules), in the caller's transaction;
/// returns the refund and the purchase's id (its coupons are the workflow's to void).
#[allow(clippy::too_many_arguments)]
pub async fn refund_purchase(
    conn: &mut AnyConnection,
    backend: Backend,
    points: &PointsConfig,
    brand_id: &str,
    order_id: &str,
    req: &RefundRequest,
    now_ms: i64,
) -> DomainResult<(RefundView, String)> {
    check_id("refund_id", &req.refund_id, false)?;
    if req.lines.len() > MAX_LINES {
        return Err(DomainError::validation(format!(
            "a refund has at most {MAX_LINES} lines"
        )));
    }
    // The purchase row lock serialises refunds of one purchase (purchase, then wallet: the same
    // order as recording a purchase).
    let row: Option<PurchaseRow> = sqlx::query_as(&format!(
        "SELECT {PURCHASE_COLUMNS} FROM purchases WHERE brand_id = $1 AND order_id = $2{}",
        crate::foundation::store::for_update(backend)
    ))
    .bind(brand_id)
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (
        purchase_id,
        order_id,
        member_id,
        _,
        _,
        _,
        _,
        eligible_total,
        _,
        bonus_total,
        spend_entry,
        created_at,
    ) = row.ok_or_else(|| DomainError::not_found("purchase", order_id))?;
    let existing: Option<(String,)> =
        sqlx::query_as("SELECT id FROM refunds WHERE brand_id = $1 AND refund_id = $2")
            .bind(brand_id)
            .bind(&req.refund_id)
            .fetch_optional(&mut *conn)
            .await?;
    if existing.is_some() {
        return Err(refund_exists(brand_id, &req.refund_id));
    }
    let lines = load_lines(conn, &purchase_id).await?;
    let index: BTreeMap<&str, usize> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| (l.line_id.as_str(), i))
        .collect();
    let mut asked = vec![0i64; lines.len()];
    if req.lines.is_empty() {
        for (i, l) in lines.iter().enumerate() {
            asked[i] = l.quantity - l.refunded_quantity;
        }
        if asked.iter().all(|q| *q == 0) {
            return Err(DomainError::unprocessable(
                "refund_exceeds_purchase",
                format!("order {order_id:?} is already fully refunded"),
            ));
        }
    } else {
        for (k, rl) in req.lines.iter().enumerate() {
            let i = *index.get(rl.line_id.as_str()).ok_or_else(|| {
                DomainError::validation(format!(
                    "lines[{k}]: order {order_id:?} has no line {:?}",
                    rl.line_id
                ))
            })?;
            if asked[i] != 0 {
                return Err(DomainError::validation(format!(
                    "line {:?} appears twice",
                    rl.line_id
                )));
            }
            if !(1..=MAX_QUANTITY).contains(&rl.quantity) {
                return Err(DomainError::validation(format!(
                    "lines[{k}].quantity must be 1..={MAX_QUANTITY}"
                )));
            }
            let left = lines[i].quantity - lines[i].refunded_quantity;
            if rl.quantity > left {
                return Err(refund_exceeds(&rl.line_id, rl.quantity, left));
            }
            asked[i] = rl.quantity;
        }
    }

    // Bonus reversal follows the refunded share of the purchase's value (eligible spend, or the
    // total when nothing was eligible).
    let use_eligible = eligible_total > 0;
    let weight = |l: &PricedLine| {
        if use_eligible {
            l.eligible_cents
        } else {
            l.total_cents
        }
    };
    let weight_total: i64 = lines.iter().map(weight).sum();
    let mut value_before = 0i64;
    let mut value_after = 0i64;

    let refund_pk = new_id();
    let mut line_views = Vec::new();
    let (mut cash_total, mut restored_total, mut reversed_base, mut qualifying_total) =
        (0i64, 0i64, 0i64, 0i64);
    let mut stored_value_total = 0i64;
    for (i, l) in lines.iter().enumerate() {
        let before = l.refunded_quantity;
        let after = before + asked[i];
        value_before += share_step(weight(l), 0, before, l.quantity);
        value_after += share_step(weight(l), 0, after, l.quantity);
        if asked[i] == 0 {
            continue;
        }
        let updated = sqlx::query(
            "UPDATE purchase_lines SET refunded_quantity = refunded_quantity + $1
             WHERE purchase_id = $2 AND line_id = $3 AND refunded_quantity + $1 <= quantity",
        )
        .bind(asked[i])
        .bind(&purchase_id)
        .bind(&l.line_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if updated != 1 {
            return Err(refund_exceeds(&l.line_id, asked[i], l.quantity - before));
        }
        let view = RefundLineView {
            line_id: l.line_id.clone(),
            quantity: asked[i],
            cash_refund_cents: share_step(l.cash_cents, before, after, l.quantity),
            stored_value_refund_cents: share_step(l.stored_value_alloc, before, after, l.quantity),
            points_restored: share_step(l.points_alloc, before, after, l.quantity),
            points_reversed: share_step(l.earned_points, before, after, l.quantity),
        };
        cash_total += view.cash_refund_cents;
        stored_value_total += view.stored_value_refund_cents;
        restored_total += view.points_restored;
        reversed_base += view.points_reversed;
        qualifying_total += share_step(l.eligible_cents, before, after, l.quantity);
        line_views.push(view);
    }
    let mut bonus_reversed = if weight_total > 0 {
        share_step(bonus_total, value_before, value_after, weight_total)
    } else if lines
        .iter()
        .zip(&asked)
        .all(|(l, a)| l.refunded_quantity + a == l.quantity)
    {
        bonus_total
    } else {
        0
    };
    let mut reversed_total = reversed_base + bonus_reversed;
    // Inside the return window the earned points were never credited: the refund cancels
    // that part of the pending earn instead (no claw-back, no debt, no qualifying spend to
    // take back — the release counts only what is left).
    let mut pending_cancelled = 0i64;
    let in_window = ledger::pending::still_pending(conn, &purchase_id)
        .await?
        .is_some();
    if in_window {
        ledger::pending::cancel(
            conn,
            &purchase_id,
            reversed_base,
            bonus_reversed,
            qualifying_total,
        )
        .await?;
        pending_cancelled = reversed_total;
        reversed_total = 0;
        bonus_reversed = 0;
        qualifying_total = 0;
        for line in &mut line_views {
            line.points_reversed = 0;
        }
    }

    let mut wallet = lock_wallet(conn, backend, &member_id, now_ms).await?;
    let mut clawed = 0i64;
    let mut shortfall = 0i64;
    let entry_id = if restored_total > 0 || reversed_total > 0 {
        let refs = EntryRefs {
            brand_id: Some(brand_id.to_owned()),
            purchase_id: Some(purchase_id.clone()),
            refund_id: Some(refund_pk.clone()),
            ..EntryRefs::default()
        };
        let mut entry = Entry::open(
            conn,
            EntryKind::Refund,
            &member_id,
            &refs,
            &req.refund_id,
            now_ms,
        )
        .await?;
        if restored_total > 0 {
            let source = spend_entry.as_deref().ok_or_else(|| {
                DomainError::internal(anyhow::anyhow!(
                    "purchase {purchase_id} spent points without a spend entry"
                ))
            })?;
            entry
                .apply_wallet(conn, restored_total, 0, 0, now_ms)
                .await?;
            entry.post(
                Account::Redemption(Some(brand_id)),
                -restored_total,
                "restore",
            );
            let posting_id = entry.post(Account::Wallet, restored_total, "restore");
            let floor =
                now_ms.saturating_add(points.restore_min_validity_days.saturating_mul(DAY_MS));
            let restored = ledger::restore_consumptions(
                conn,
                &mut entry,
                source,
                restored_total,
                &posting_id,
                RestoreExpiry::AtLeast(floor),
            )
            .await?;
            if restored != restored_total {
                return Err(DomainError::internal(anyhow::anyhow!(
                    "purchase {purchase_id}: {restored} of {restored_total} points restorable"
                )));
            }
            wallet.balance += restored_total;
            // The restored lots must exist before the claw-back can draw from them.
            entry.flush(conn, now_ms).await?;
        }
        if reversed_total > 0 {
            clawed = reversed_total.min(wallet.balance);
            shortfall = reversed_total - clawed;
            entry
                .apply_wallet(conn, -clawed, 0, shortfall, now_ms)
                .await?;
            if clawed > 0 {
                ledger::consume_lots(conn, &entry, clawed, Some(&purchase_id), now_ms).await?;
                entry.post(Account::Wallet, -clawed, "clawback");
            }
            if shortfall > 0 {
                entry.post(Account::Receivable, -shortfall, "clawback shortfall");
            }
            entry.post(
                Account::Issuance(Some(brand_id)),
                reversed_total,
                "clawback",
            );
            wallet.balance -= clawed;
        }
        Some(entry.close(conn, now_ms).await?)
    } else {
        None
    };

    sqlx::query(
        "INSERT INTO refunds (id, brand_id, refund_id, purchase_id, member_id, cash_refund_cents,
            points_restored, points_reversed, points_clawed_back, shortfall_points,
            qualifying_reversed_cents, entry_id, created_at, stored_value_refund_cents,
            pending_cancelled)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(&refund_pk)
    .bind(brand_id)
    .bind(&req.refund_id)
    .bind(&purchase_id)
    .bind(&member_id)
    .bind(cash_total)
    .bind(restored_total)
    .bind(reversed_total)
    .bind(clawed)
    .bind(shortfall)
    .bind(qualifying_total)
    .bind(entry_id.as_deref())
    .bind(now_ms)
    .bind(stored_value_total)
    .bind(pending_cancelled)
    .execute(&mut *conn)
    .await
    .unique_as(|| refund_exists(brand_id, &req.refund_id))?;
    // The stored-value part goes back to the funds it came from (after the refund row, which
    // its entries name).
    ledger::stored_value::give_back(
        conn,
        backend,
        &member_id,
        brand_id,
        &purchase_id,
        &refund_pk,
        stored_value_total,
        now_ms,
    )
    .await?;
    ledger::insert_rows(
        conn,
        "refund_lines (refund_pk, line_id, quantity, cash_refund_cents, points_restored, \
         points_reversed, stored_value_refund_cents)",
        line_views
            .iter()
            .map(|l| {
                vec![
                    Val::Text(refund_pk.clone()),
                    Val::Text(l.line_id.clone()),
                    Val::Int(l.quantity),
                    Val::Int(l.cash_refund_cents),
                    Val::Int(l.points_restored),
                    Val::Int(l.points_reversed),
                    Val::Int(l.stored_value_refund_cents),
                ]
            })
            .collect(),
    )
    .await?;
    // Settlement outbox: a refund reverses part of the purchase's issued and redeemed points.
    for (original, points_moved) in [
        (EventKind::PointsIssued, reversed_total),
        (EventKind::PointsRedeemed, restored_total),
    ] {
        let reverses = outbox::find(conn, "purchase", &purchase_id, original, None).await?;
        outbox::record(
            conn,
            &NewEvent {
                kind: EventKind::Refund,
                brand_id,
                funding_brand: brand_id,
                honouring_brand: brand_id,
                reference: Some(original.as_str()),
                plugin: None,
                points: points_moved,
                value_cents: points_value_cents(points, points_moved),
                member_id: Some(&member_id),
                subject_kind: "refund",
                subject_id: &refund_pk,
                reverses_event_id: reverses.as_deref(),
                occurred_at: now_ms,
            },
            now_ms,
        )
        .await?;
    }
    if !in_window {
        tiers::record_qualifying(
            conn,
            &member_id,
            &purchase_id,
            Some(&refund_pk),
            -qualifying_total,
            -reversed_total,
            created_at,
            now_ms,
        )
        .await?;
    }
    let view = RefundView {
        id: refund_pk,
        refund_id: req.refund_id.clone(),
        brand_id: brand_id.to_owned(),
        order_id,
        member_id,
        lines: line_views,
        cash_refund_cents: cash_total,
        stored_value_refund_cents: stored_value_total,
        points_restored: restored_total,
        points_reversed: reversed_total,
        bonus_reversed,
        points_clawed_back: clawed,
        shortfall_points: shortfall,
        qualifying_reversed_cents: qualifying_total,
        entry_id,
        created_at_ms: now_ms,
        pending_cancelled,
        // The workflow voids the coupons of the refunded lines in the same transaction.
        coupons_voided: Vec::new(),
        perk_points_restored: 0,
    };
    crate::domain::webhooks::record(
        conn,
        brand_id,
        crate::domain::webhooks::EventType::Refund,
        Some(&view.member_id),
        serde_json::json!({
            "refund_id": view.refund_id, "order_id": view.order_id, "purchase_id": purchase_id,
            "cash_refund_cents": view.cash_refund_cents,
            "stored_value_refund_cents": view.stored_value_refund_cents,
            "points_restored": view.points_restored, "points_reversed": view.points_reversed,
            "created_at_ms": now_ms,
        }),
    )
    .await?;
    Ok((view, purchase_id))
}

pub(super) fn refund_exists(brand_id: &str, refund_id: &str) -> DomainError {
    DomainError::conflict(
        "refund_exists",
        format!("refund {refund_id:?} is already recorded at brand {brand_id:?}"),
    )
}
