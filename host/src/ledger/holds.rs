//! Two-phase holds: reserve, capture (partly) or release, and time out.

use super::*;

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

pub(super) type HoldRow = (
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

pub(super) const HOLD_COLUMNS: &str = "id, member_id, brand_id, amount, captured, status, reason, \
    hold_entry_id, expires_at, created_at, settled_at";

pub(super) fn hold_from_row(row: HoldRow) -> (Hold, String) {
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
pub async fn get_hold(pool: &sqlx::AnyPool, hold_id: &str) -> DomainResult<Hold> {
    let row: Option<HoldRow> = sqlx::query_as(&format!(
        "SELECT {HOLD_COLUMNS} FROM point_holds WHERE id = $1"
    ))
    .bind(hold_id)
    .fetch_optional(pool)
    .await?;
    row.map(|r| hold_from_row(r).0)
        .ok_or_else(|| DomainError::not_found("hold", hold_id))
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
) -> DomainResult<Hold> {
    validate_points("points", req.points)?;
    validate_reason(&req.reason, false)?;
    let ttl_ms = req.ttl_ms.unwrap_or(config.hold_default_ttl_ms);
    if !(MIN_HOLD_TTL_MS..=config.hold_max_ttl_ms).contains(&ttl_ms) {
        return Err(DomainError::validation(format!(
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
pub(super) async fn lock_pending_hold(
    conn: &mut AnyConnection,
    backend: Backend,
    hold_id: &str,
) -> DomainResult<(Hold, String)> {
    let row: Option<HoldRow> = sqlx::query_as(&format!(
        "SELECT {HOLD_COLUMNS} FROM point_holds WHERE id = $1{}",
        for_update(backend)
    ))
    .bind(hold_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (hold, entry_id) =
        hold_from_row(row.ok_or_else(|| DomainError::not_found("hold", hold_id))?);
    if hold.status != HoldStatus::Pending {
        return Err(DomainError::conflict(
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
) -> DomainResult<Hold> {
    let (mut hold, hold_entry_id) = lock_pending_hold(conn, backend, hold_id).await?;
    if now_ms >= hold.expires_at_ms {
        return Err(DomainError::conflict(
            "hold_expired",
            format!("hold {hold_id:?} timed out and can no longer be captured"),
        ));
    }
    let capture = req.points.unwrap_or(hold.points);
    if !(1..=hold.points).contains(&capture) {
        return Err(DomainError::validation(format!(
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
            return Err(DomainError::internal(anyhow::anyhow!(
                "hold {hold_id} drew {restored} restorable points, expected {rest}"
            )));
        }
    }
    let entry_id = entry.close(conn, now_ms).await?;
    settle_hold(conn, &hold.id, "captured", capture, &entry_id, now_ms).await?;
    // Settlement outbox: captured points are points redeemed at the hold's brand. A hold
    // without a brand is the platform's own and settles with nobody.
    if let Some(brand) = hold.brand_id.as_deref() {
        crate::ledger::outbox::record(
            conn,
            &crate::ledger::outbox::NewEvent {
                kind: crate::ledger::outbox::EventKind::PointsRedeemed,
                brand_id: brand,
                funding_brand: brand,
                honouring_brand: brand,
                reference: None,
                plugin: None,
                points: capture,
                value_cents: points_value_cents(points_config, capture),
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
) -> DomainResult<Hold> {
    let (mut hold, hold_entry_id) = lock_pending_hold(conn, backend, hold_id).await?;
    if timed_out && now_ms < hold.expires_at_ms {
        return Err(DomainError::conflict(
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
        return Err(DomainError::internal(anyhow::anyhow!(
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

pub(super) async fn settle_hold(
    conn: &mut AnyConnection,
    hold_id: &str,
    status: &str,
    captured: i64,
    entry_id: &str,
    now_ms: i64,
) -> DomainResult<()> {
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
        return Err(DomainError::internal(anyhow::anyhow!(
            "hold {hold_id} left pending under its row lock"
        )));
    }
    Ok(())
}
