//! Manual adjustments by an admin or a brand, with a reason.

use super::*;

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
) -> DomainResult<Adjustment> {
    if req.points == 0 {
        return Err(DomainError::validation("points must not be 0"));
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
pub async fn require_brand_exists(conn: &mut AnyConnection, brand_id: &str) -> DomainResult<()> {
    let found: Option<(String,)> = sqlx::query_as("SELECT id FROM brands WHERE id = $1")
        .bind(brand_id)
        .fetch_optional(&mut *conn)
        .await?;
    if found.is_none() {
        return Err(DomainError::unprocessable(
            "unknown_brand",
            format!("brand {brand_id:?} does not exist"),
        ));
    }
    Ok(())
}
