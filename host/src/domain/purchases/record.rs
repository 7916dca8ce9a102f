//! Recording a purchase in the caller's transaction: spend, earn, lines, bonuses, outbox events, tier effect.

use super::*;

/// What a plugin needs to propose bonuses: the priced purchase, computed outside any write
/// transaction, with the base earn as it will be recorded (after a membership card's
/// multiplier), so a bonus of "×2 the base" means the base the member gets.
pub async fn quote(
    pool: &sqlx::AnyPool,
    points: &PointsConfig,
    brand_id: &str,
    req: &PurchaseRequest,
    discounts: &[i64],
    now_ms: i64,
) -> DomainResult<Priced> {
    let mut conn = pool.acquire().await?;
    let brand = load_brand(&mut conn, brand_id).await?;
    let mut priced = price_discounted(
        &brand.rule,
        points,
        &req.lines,
        req.points_spent,
        req.stored_value_cents,
        discounts,
    )?;
    if let Some(card) = membership::active_card(&mut conn, &req.member_id, now_ms).await? {
        apply_multiplier(&mut priced, card.points_multiplier_percent)?;
    }
    Ok(priced)
}

/// Records a purchase with its spend, earn (base + validated `bonuses`) and tier effect, in the
/// caller's transaction. `discounts` are the coupon discounts per line of a checkout the caller
/// has claimed in the same transaction (empty without one).
#[allow(clippy::too_many_arguments)]
pub async fn record_purchase(
    conn: &mut AnyConnection,
    backend: Backend,
    points: &PointsConfig,
    tiers_config: &TiersConfig,
    brand_id: &str,
    req: &PurchaseRequest,
    discounts: &[i64],
    bonuses: Vec<BonusProposal>,
    now_ms: i64,
) -> DomainResult<PurchaseView> {
    check_request_ids(req)?;
    let brand = load_brand(conn, brand_id).await?;
    require_active_brand(brand_id, &brand)?;
    let mut priced = price_discounted(
        &brand.rule,
        points,
        &req.lines,
        req.points_spent,
        req.stored_value_cents,
        discounts,
    )?;
    // A paid membership card in force multiplies the base earn (bonuses are the plugins' own).
    let card = membership::active_card(conn, &req.member_id, now_ms).await?;
    let multiplier = card.as_ref().map_or(100, |c| c.points_multiplier_percent);
    apply_multiplier(&mut priced, multiplier)?;
    let mut plan = plan_earn(priced.base_points, bonuses)?;

    let mut wallet = lock_wallet(conn, backend, &req.member_id, now_ms).await?;
    wallet.require_active()?;
    let ladder = tiers::load_ladder(conn, tiers_config).await?;
    // The card's tier floor counts here too: the points-payment cap is the effective tier's.
    let earned_rank = tiers::rank_of(&ladder, &wallet.tier);
    let tier = &ladder
        [membership::effective_rank(conn, &ladder, &req.member_id, earned_rank, now_ms).await?];
    // The cap applies to what the member pays, after coupon discounts.
    if i128::from(priced.points_value_cents) * 100
        > i128::from(priced.total_cents - priced.discount_cents)
            * i128::from(tier.points_pay_max_percent)
    {
        return Err(DomainError::unprocessable(
            "points_payment_over_limit",
            format!(
                "at {} points may pay at most {}% of an order",
                tier.name, tier.points_pay_max_percent
            ),
        )
        .with_extra(serde_json::json!({
            "tier": tier.code,
            "points_pay_max_percent": tier.points_pay_max_percent,
        })));
    }

    // Partner budgets: each bonus draws on the brand's bonus budgets in this transaction; what
    // they cannot fund is cut (or dropped), with a reason the member and the brand see.
    let budget_cuts = fund_bonuses(conn, backend, points, brand_id, &mut plan, now_ms).await?;

    let purchase_id = new_id();
    let refs = EntryRefs {
        brand_id: Some(brand_id.to_owned()),
        purchase_id: Some(purchase_id.clone()),
        ..EntryRefs::default()
    };
    // Spend first: the points a purchase earns can never pay for it.
    let spend_entry_id = if priced.points_spent > 0 {
        let mut entry = Entry::open(
            conn,
            EntryKind::Spend,
            &req.member_id,
            &refs,
            &req.order_id,
            now_ms,
        )
        .await?;
        debit_fifo(
            conn,
            &mut entry,
            Account::Redemption(Some(brand_id)),
            priced.points_spent,
            "paid with points",
            now_ms,
        )
        .await?;
        wallet.balance -= priced.points_spent;
        Some(entry.close(conn, now_ms).await?)
    } else {
        None
    };
    let earned = plan.base_points + plan.bonus_points();
    // Inside a return window the earn waits: nothing is credited, issued or qualifying until
    // the release job (`pending::release_due`) credits what refunds left of it.
    let pending_until = (brand.return_window_days > 0 && earned > 0)
        .then(|| now_ms.saturating_add(brand.return_window_days.saturating_mul(DAY_MS)));
    let expires_at = if pending_until.is_some() {
        None
    } else {
        config_expiry(points, earned, now_ms)?
    };
    let (earn_entry_id, debt_settled) = match expires_at {
        Some(expires_at) => {
            let (entry, debt_settled) = post_earn(
                conn,
                &plan,
                &req.member_id,
                brand_id,
                &refs,
                expires_at,
                now_ms,
            )
            .await?;
            wallet.balance += earned - debt_settled;
            (Some(entry), debt_settled)
        }
        None => (None, 0),
    };

    sqlx::query(
        "INSERT INTO purchases (id, brand_id, order_id, member_id, total_cents, points_spent,
            points_value_cents, cash_cents, eligible_cents, base_points, bonus_points,
            earn_points, earn_unit_cents, spend_entry_id, earn_entry_id, created_at,
            stored_value_cents, points_multiplier_percent)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
            $18)",
    )
    .bind(&purchase_id)
    .bind(brand_id)
    .bind(&req.order_id)
    .bind(&req.member_id)
    .bind(priced.total_cents)
    .bind(priced.points_spent)
    .bind(priced.points_value_cents)
    .bind(priced.cash_cents)
    .bind(priced.eligible_cents)
    .bind(plan.base_points)
    .bind(plan.bonus_points())
    .bind(brand.rule.earn_points)
    .bind(brand.rule.earn_unit_cents)
    .bind(spend_entry_id.as_deref())
    .bind(earn_entry_id.as_deref())
    .bind(now_ms)
    .bind(priced.stored_value_cents)
    .bind(i64::from(multiplier))
    .execute(&mut *conn)
    .await
    .unique_as(|| {
        DomainError::conflict(
            "order_exists",
            format!(
                "order {:?} is already recorded at brand {brand_id:?}",
                req.order_id
            ),
        )
    })?;
    insert_lines(conn, &purchase_id, &priced.lines).await?;
    if let Some(available_at) = pending_until {
        ledger::pending::create(
            conn,
            &ledger::pending::NewPending {
                purchase_id: &purchase_id,
                member_id: &req.member_id,
                brand_id,
                base_points: plan.base_points,
                bonus_points: plan.bonus_points(),
                eligible_cents: priced.eligible_cents,
                available_at,
            },
            now_ms,
        )
        .await?;
    }
    // Stored value after the purchase row exists (its draws name it).
    ledger::stored_value::pay(
        conn,
        backend,
        &req.member_id,
        brand_id,
        &purchase_id,
        priced.stored_value_cents,
        now_ms,
    )
    .await?;
    ledger::insert_rows(
        conn,
        "purchase_bonuses (id, purchase_id, code, reason, source, points)",
        plan.bonuses
            .iter()
            .map(|b| {
                vec![
                    Val::Text(new_id()),
                    Val::Text(purchase_id.clone()),
                    Val::Text(b.code.clone()),
                    Val::Text(b.reason.clone()),
                    Val::Text(b.source.clone()),
                    Val::Int(b.points),
                ]
            })
            .collect(),
    )
    .await?;
    // Settlement outbox: the points this brand issued and the points spent at its counter.
    // Pending points are issued when they are released.
    let issued = if pending_until.is_some() { 0 } else { earned };
    for (kind, points_moved, value) in [
        (
            EventKind::PointsIssued,
            issued,
            points_value_cents(points, issued),
        ),
        (
            EventKind::PointsRedeemed,
            priced.points_spent,
            priced.points_value_cents,
        ),
    ] {
        outbox::record(
            conn,
            &NewEvent {
                kind,
                brand_id,
                funding_brand: brand_id,
                honouring_brand: brand_id,
                reference: None,
                plugin: None,
                points: points_moved,
                value_cents: value,
                member_id: Some(&req.member_id),
                subject_kind: "purchase",
                subject_id: &purchase_id,
                reverses_event_id: None,
                occurred_at: now_ms,
            },
            now_ms,
        )
        .await?;
    }
    // Qualifying spend counts when the points do: at once, or at the release.
    let tier_change = if pending_until.is_some() {
        None
    } else {
        tiers::record_qualifying(
            conn,
            &req.member_id,
            &purchase_id,
            None,
            priced.eligible_cents,
            earned,
            now_ms,
            now_ms,
        )
        .await?;
        tiers::upgrade_after_purchase(
            conn,
            tiers_config,
            &ladder,
            &req.member_id,
            &wallet.tier,
            &purchase_id,
            now_ms,
        )
        .await?
    };
    crate::domain::webhooks::record(
        conn,
        brand_id,
        crate::domain::webhooks::EventType::Purchase,
        Some(&req.member_id),
        serde_json::json!({
            "purchase_id": purchase_id, "order_id": req.order_id,
            "total_cents": priced.total_cents, "cash_cents": priced.cash_cents,
            "points_spent": priced.points_spent, "points_earned": earned,
            "points_pending": pending_until.is_some(), "created_at_ms": now_ms,
        }),
    )
    .await?;
    if let Some(change) = &tier_change {
        crate::domain::webhooks::record(
            conn,
            brand_id,
            crate::domain::webhooks::EventType::TierChanged,
            Some(&req.member_id),
            serde_json::json!({ "from": change.from, "to": change.to, "reason": change.reason,
                "purchase_id": purchase_id, "changed_at_ms": change.at_ms }),
        )
        .await?;
    }
    Ok(PurchaseView {
        id: purchase_id,
        brand_id: brand_id.to_owned(),
        order_id: req.order_id.clone(),
        member_id: req.member_id.clone(),
        total_cents: priced.total_cents,
        points_spent: priced.points_spent,
        points_value_cents: priced.points_value_cents,
        cash_cents: priced.cash_cents,
        stored_value_cents: priced.stored_value_cents,
        points_multiplier_percent: i64::from(multiplier),
        eligible_cents: priced.eligible_cents,
        base_points: plan.base_points,
        bonus_points: plan.bonus_points(),
        points_earned: earned,
        points_expire_at_ms: expires_at,
        points_pending: if pending_until.is_some() { earned } else { 0 },
        points_available_at_ms: pending_until,
        lines: priced.lines,
        bonuses: plan
            .bonuses
            .into_iter()
            .map(|b| BonusView {
                points: b.points,
                code: b.code,
                reason: b.reason,
                source: b.source,
            })
            .collect(),
        refunds: Vec::new(),
        tier_change,
        debt_settled,
        created_at_ms: now_ms,
        discount_cents: priced.discount_cents,
        checkout_id: req.checkout_id.clone(),
        skipped_decisions: budget_cuts,
    })
}

/// Reserves each bonus of `plan` from the brand's bonus-point budgets (per plugin or for all),
/// cutting a bonus to what is left or dropping it when nothing is; returns the decisions cut.
async fn fund_bonuses(
    conn: &mut AnyConnection,
    backend: Backend,
    points: &PointsConfig,
    brand_id: &str,
    plan: &mut EarnPlan,
    now_ms: i64,
) -> DomainResult<Vec<SkippedDecision>> {
    let mut cuts = Vec::new();
    let mut funded = Vec::with_capacity(plan.bonuses.len());
    for mut bonus in std::mem::take(&mut plan.bonuses) {
        let (plugin, version) = bonus
            .source
            .split_once('@')
            .unwrap_or((bonus.source.as_str(), ""));
        let (plugin, version) = (plugin.to_owned(), version.to_owned());
        let reserved = ledger::budgets::reserve(
            conn,
            backend,
            brand_id,
            ledger::budgets::BudgetKind::BonusPoints,
            Some(&plugin),
            None,
            bonus.points,
            ledger::budgets::Grant::UpTo,
            points.utc_offset_minutes,
            now_ms,
        )
        .await?;
        if reserved.granted < bonus.points {
            let budget = reserved.limited_by.unwrap_or_default();
            cuts.push(SkippedDecision {
                plugin,
                version,
                hook: "points-bonus".to_owned(),
                code: if reserved.granted == 0 {
                    "budget_exhausted"
                } else {
                    "budget_clipped"
                }
                .to_owned(),
                detail: format!(
                    "bonus {} of {} points: {brand_id}'s budget {budget} funds {} this period",
                    bonus.code, bonus.points, reserved.granted
                ),
            });
            bonus.points = reserved.granted;
        }
        if bonus.points > 0 {
            funded.push(bonus);
        }
    }
    plan.bonuses = funded;
    Ok(cuts)
}

pub(super) fn config_expiry(
    points: &PointsConfig,
    earned: i64,
    now_ms: i64,
) -> DomainResult<Option<i64>> {
    if earned > 0 {
        points.expiry_for(now_ms).map(Some)
    } else {
        Ok(None)
    }
}

/// Posts the earn of a purchase: one posting pair and one lot for the base, and one of each per
/// bonus with its reason, all from the brand's issuance account.
pub(super) async fn post_earn(
    conn: &mut AnyConnection,
    plan: &EarnPlan,
    member_id: &str,
    brand_id: &str,
    refs: &EntryRefs,
    expires_at: i64,
    now_ms: i64,
) -> DomainResult<(String, i64)> {
    let purchase_id = refs.purchase_id.as_deref();
    let mut entry = Entry::open(conn, EntryKind::Earn, member_id, refs, "purchase", now_ms).await?;
    if plan.base_points > 0 {
        credit_lot(
            conn,
            &mut entry,
            Account::Issuance(Some(brand_id)),
            plan.base_points,
            "earn",
            "base",
            expires_at,
            purchase_id,
            Some(brand_id),
            now_ms,
        )
        .await?;
    }
    for bonus in &plan.bonuses {
        let memo = format!("bonus {}: {} ({})", bonus.code, bonus.reason, bonus.source);
        credit_lot(
            conn,
            &mut entry,
            Account::Issuance(Some(brand_id)),
            bonus.points,
            "bonus",
            &memo,
            expires_at,
            purchase_id,
            Some(brand_id),
            now_ms,
        )
        .await?;
    }
    entry.close_settling(conn, now_ms).await
}

pub(super) async fn insert_lines(
    conn: &mut AnyConnection,
    purchase_id: &str,
    lines: &[PricedLine],
) -> DomainResult<()> {
    ledger::insert_rows(
        conn,
        "purchase_lines (purchase_id, line_no, line_id, sku, category, quantity, \
         unit_price_cents, total_cents, excluded, points_alloc, points_cents_alloc, \
         eligible_cents, earned_points, discount_cents, stored_value_alloc)",
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                vec![
                    Val::Text(purchase_id.to_owned()),
                    Val::Int(i64::try_from(i).unwrap_or(0)),
                    Val::Text(l.line_id.clone()),
                    Val::Text(l.sku.clone()),
                    Val::Text(l.category.clone()),
                    Val::Int(l.quantity),
                    Val::Int(l.unit_price_cents),
                    Val::Int(l.total_cents),
                    Val::Int(i64::from(l.excluded)),
                    Val::Int(l.points_alloc),
                    Val::Int(l.points_cents_alloc),
                    Val::Int(l.eligible_cents),
                    Val::Int(l.earned_points),
                    Val::Int(l.discount_cents),
                    Val::Int(l.stored_value_alloc),
                ]
            })
            .collect(),
    )
    .await
}
