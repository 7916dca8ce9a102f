//! Purchases a counter took while it could not reach the server, synced later.
//!
//! While offline, the counter scans the member's pass (verified with the public keys it
//! downloaded, see [`crate::domain::pass`]), hands the goods over and keeps the order, the pass token,
//! the time it was taken and any coupon codes it honoured. When it is back online it sends them
//! in a batch. Each item is handled on its own, in its own transaction:
//!
//! 1. `taken_at_ms` must not be in the server's future beyond `[pass] max_clock_skew_ms`, nor
//!    older than [`MAX_OFFLINE_AGE_MS`];
//! 2. the pass must have been valid at `taken_at_ms` (signature by a known key, issued before,
//!    not yet expired) and name the order's member;
//! 3. the purchase is recorded like an online one ([`crate::domain::purchases::record_purchase`],
//!    points earned at sync time), idempotently by (brand, order id): an order already
//!    recorded — by an earlier sync or online — is reported `duplicate` and nothing changes;
//! 4. each coupon is redeemed if it is `issued` to that member, honoured by this brand and
//!    unexpired at `taken_at_ms`; otherwise the purchase still stands (the goods are gone) and
//!    the coupon is reported as a conflict and kept in `offline_conflicts` for the brand. A
//!    coupon redeemed offline is recorded at its template's face value (the counter applied it
//!    without the server) and settles like one redeemed online: a perk's coupon under the
//!    perk's plugin.
//!
//! An item that fails a check is `rejected` with the problem's code and changes nothing; the
//! other items go on. Only server-side failures (database down) abort the whole batch; the
//! counter resends it and the items already applied come back as `duplicate`.

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::domain::purchases::PurchaseRequest;
use crate::foundation::clock::DAY_MS;
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::new_id;
use crate::ledger::outbox::{self, EventKind, NewEvent};
use crate::workflows::Services;

/// Purchases per sync request: each is a transaction of its own, and 100 finish well within
/// the request timeout; a counter with more sends several batches.
pub const MAX_OFFLINE_BATCH: usize = 100;
/// Coupons honoured on one offline purchase.
pub const MAX_COUPONS_PER_PURCHASE: usize = 10;
/// Longest coupon code accepted (real codes are 16 characters).
pub const MAX_COUPON_CODE_LEN: usize = 64;
/// Oldest offline purchase accepted: a counter offline for a month has a bigger problem than
/// points, and older purchases would fall out of tier windows and expiry rules.
pub const MAX_OFFLINE_AGE_MS: i64 = 30 * DAY_MS;
/// Most conflicts one listing returns.
pub const MAX_CONFLICTS_PAGE: i64 = 500;

/// Body of `POST /brands/{brand_id}/offline-purchases`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OfflineBatch {
    /// The counter terminal that took the purchases.
    #[serde(default)]
    pub device_id: Option<String>,
    /// The purchases, 1..=100.
    pub purchases: Vec<OfflinePurchase>,
}

/// One purchase taken offline.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OfflinePurchase {
    /// The pass token the counter scanned.
    pub pass: String,
    /// When the counter took the purchase, Unix ms (its own clock).
    pub taken_at_ms: i64,
    /// The order, exactly as `POST /brands/{brand_id}/purchases` takes it.
    pub order: PurchaseRequest,
    /// Coupon codes the counter honoured, at most 10.
    #[serde(default)]
    pub coupon_codes: Vec<String>,
}

/// What happened to one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// Recorded, every coupon redeemed.
    Applied,
    /// Recorded, but some coupons could not be redeemed (see `conflicts`).
    AppliedWithConflicts,
    /// The order was recorded before; nothing changed.
    Duplicate,
    /// Refused (see `problem`); nothing changed.
    Rejected,
}

/// Why an item was refused.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ItemProblem {
    /// Stable machine code, e.g. `pass_expired`, `member_blacklisted`.
    pub code: String,
    /// Human-readable detail.
    pub detail: String,
}

/// A coupon honoured offline that could not be redeemed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CouponConflict {
    /// The code as the counter sent it.
    pub coupon_code: String,
    /// `coupon_already_used`, `coupon_not_found`, `coupon_expired`, `coupon_not_owned`,
    /// `coupon_voided` or `coupon_not_honoured_here`.
    pub code: String,
    /// Human-readable detail.
    pub detail: String,
}

/// The outcome of one item.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ItemResult {
    /// The order id.
    pub order_id: String,
    /// What happened.
    pub status: ItemStatus,
    /// The recorded purchase (applied and duplicate).
    pub purchase_id: Option<String>,
    /// Points the member earned (applied only).
    pub points_earned: Option<i64>,
    /// Coupons redeemed.
    pub coupons_redeemed: Vec<String>,
    /// Coupons that could not be redeemed.
    pub conflicts: Vec<CouponConflict>,
    /// Why it was rejected.
    pub problem: Option<ItemProblem>,
}

/// The outcome of a sync.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SyncReport {
    /// Items applied (with or without conflicts).
    pub applied: usize,
    /// Items already recorded before.
    pub duplicates: usize,
    /// Items refused.
    pub rejected: usize,
    /// Coupon conflicts in all.
    pub conflicts: usize,
    /// One result per item, in request order.
    pub items: Vec<ItemResult>,
}

/// A conflict kept for the brand to resolve.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct StoredConflict {
    /// Id.
    pub id: String,
    /// The purchase it belongs to.
    pub purchase_id: String,
    /// The order id.
    pub order_id: String,
    /// The member.
    pub member_id: String,
    /// The coupon code.
    pub coupon_code: String,
    /// The conflict code.
    pub code: String,
    /// Detail.
    pub detail: String,
    /// Unix ms.
    pub created_at: i64,
}

/// Validates the batch's shape before anything is written.
pub fn validate(batch: &OfflineBatch) -> DomainResult<()> {
    if batch.purchases.is_empty() || batch.purchases.len() > MAX_OFFLINE_BATCH {
        return Err(DomainError::validation(format!(
            "a sync carries 1..={MAX_OFFLINE_BATCH} purchases"
        )));
    }
    if let Some(device_id) = &batch.device_id {
        crate::domain::risk::validate_device_id(device_id)?;
    }
    for item in &batch.purchases {
        if item.coupon_codes.len() > MAX_COUPONS_PER_PURCHASE {
            return Err(DomainError::validation(format!(
                "order {:?}: at most {MAX_COUPONS_PER_PURCHASE} coupons per purchase",
                item.order.order_id
            )));
        }
        if item
            .coupon_codes
            .iter()
            .any(|c| c.is_empty() || c.len() > MAX_COUPON_CODE_LEN)
        {
            return Err(DomainError::validation(format!(
                "order {:?}: coupon codes are 1..={MAX_COUPON_CODE_LEN} characters",
                item.order.order_id
            )));
        }
        if item.pass.len() > crate::domain::pass::MAX_TOKEN_LEN {
            return Err(DomainError::validation(format!(
                "order {:?}: the pass is longer than {} characters",
                item.order.order_id,
                crate::domain::pass::MAX_TOKEN_LEN
            )));
        }
    }
    Ok(())
}

/// Syncs a batch item by item (see the module docs). Errors only for server-side failures.
pub async fn sync(
    state: &Services,
    brand_id: &str,
    batch: &OfflineBatch,
) -> DomainResult<SyncReport> {
    let keys = {
        let mut conn = state.store.read().acquire().await?;
        crate::domain::pass::verifying_keys(&mut conn).await?
    };
    let mut report = SyncReport {
        applied: 0,
        duplicates: 0,
        rejected: 0,
        conflicts: 0,
        items: Vec::with_capacity(batch.purchases.len()),
    };
    for item in &batch.purchases {
        let result = match sync_one(state, brand_id, batch.device_id.as_deref(), item, &keys).await
        {
            Ok(result) => result,
            Err(err) if !err.is_callers() => return Err(err),
            Err(err) => ItemResult {
                order_id: item.order.order_id.clone(),
                status: ItemStatus::Rejected,
                purchase_id: None,
                points_earned: None,
                coupons_redeemed: Vec::new(),
                conflicts: Vec::new(),
                problem: Some(ItemProblem {
                    code: err.code.to_owned(),
                    detail: err.detail,
                }),
            },
        };
        match result.status {
            ItemStatus::Applied | ItemStatus::AppliedWithConflicts => report.applied += 1,
            ItemStatus::Duplicate => report.duplicates += 1,
            ItemStatus::Rejected => report.rejected += 1,
        }
        report.conflicts += result.conflicts.len();
        report.items.push(result);
    }
    Ok(report)
}

fn duplicate(order_id: &str, purchase_id: String) -> ItemResult {
    ItemResult {
        order_id: order_id.to_owned(),
        status: ItemStatus::Duplicate,
        purchase_id: Some(purchase_id),
        points_earned: None,
        coupons_redeemed: Vec::new(),
        conflicts: Vec::new(),
        problem: None,
    }
}

async fn recorded_purchase(
    conn: &mut AnyConnection,
    brand_id: &str,
    order_id: &str,
) -> DomainResult<Option<String>> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT id FROM purchases WHERE brand_id = $1 AND order_id = $2")
            .bind(brand_id)
            .bind(order_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|(id,)| id))
}

async fn sync_one(
    state: &Services,
    brand_id: &str,
    device_id: Option<&str>,
    item: &OfflinePurchase,
    keys: &[ed25519_dalek::VerifyingKey],
) -> DomainResult<ItemResult> {
    let now_ms = state.now_ms();
    let order = &item.order;
    let skew_ms = state.settings.pass.max_clock_skew_ms;
    if item.taken_at_ms > now_ms.saturating_add(skew_ms) {
        return Err(DomainError::unprocessable(
            "taken_at_in_future",
            format!(
                "taken_at_ms {} is more than {skew_ms} ms after the server's clock ({now_ms})",
                item.taken_at_ms
            ),
        ));
    }
    if item.taken_at_ms < now_ms.saturating_sub(MAX_OFFLINE_AGE_MS) {
        return Err(DomainError::unprocessable(
            "offline_purchase_too_old",
            format!(
                "offline purchases are accepted up to {} days after they were taken",
                MAX_OFFLINE_AGE_MS / DAY_MS
            ),
        ));
    }
    let claims =
        crate::domain::pass::verify_with_skew(&item.pass, keys, item.taken_at_ms, skew_ms)?;
    if claims.member_id != order.member_id {
        return Err(DomainError::unprocessable(
            "pass_member_mismatch",
            format!(
                "the pass is member {:?}'s, the order names {:?}",
                claims.member_id, order.member_id
            ),
        ));
    }
    {
        let mut conn = state.store.read().acquire().await?;
        if let Some(id) = recorded_purchase(&mut conn, brand_id, &order.order_id).await? {
            return Ok(duplicate(&order.order_id, id));
        }
    }
    // Plugins run outside the write transaction, as for online purchases.
    let accepted = crate::workflows::purchase::propose_bonuses(state, brand_id, order).await?;
    let mut tx = state.store.begin().await?;
    // A concurrent sync of the same order may have committed since the read above.
    if let Some(id) = recorded_purchase(&mut tx, brand_id, &order.order_id).await? {
        return Ok(duplicate(&order.order_id, id));
    }
    let recorded =
        crate::workflows::purchase::record(state, &mut tx, brand_id, order, &accepted).await;
    let view = match recorded {
        Ok(view) => view,
        // Lost a race with a concurrent sync (or online record) of the same order.
        Err(err) if err.code == "order_exists" => {
            drop(tx);
            let mut conn = state.store.read().acquire().await?;
            return match recorded_purchase(&mut conn, brand_id, &order.order_id).await? {
                Some(id) => Ok(duplicate(&order.order_id, id)),
                None => Err(err),
            };
        }
        Err(err) => return Err(err),
    };
    sqlx::query(
        "INSERT INTO offline_purchases (purchase_id, brand_id, order_id, member_id, device_id,
            pass_key_id, pass_nonce, taken_at, synced_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&view.id)
    .bind(brand_id)
    .bind(&order.order_id)
    .bind(&order.member_id)
    .bind(device_id)
    .bind(&claims.key_id)
    .bind(&claims.nonce)
    .bind(item.taken_at_ms)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    let mut redeemed = Vec::new();
    let mut conflicts = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for code in &item.coupon_codes {
        let code = code.trim().to_ascii_uppercase();
        if !seen.insert(code.clone()) {
            continue;
        }
        let outcome = redeem_coupon(
            &mut tx,
            brand_id,
            &order.member_id,
            device_id,
            &view.id,
            &code,
            item.taken_at_ms,
            now_ms,
        )
        .await?;
        match outcome {
            None => redeemed.push(code),
            Some(conflict) => {
                sqlx::query(
                    "INSERT INTO offline_conflicts (id, brand_id, purchase_id, order_id,
                        member_id, coupon_code, code, detail, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(new_id())
                .bind(brand_id)
                .bind(&view.id)
                .bind(&order.order_id)
                .bind(&order.member_id)
                .bind(&conflict.coupon_code)
                .bind(&conflict.code)
                .bind(&conflict.detail)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                conflicts.push(conflict);
            }
        }
    }
    tx.commit().await?;
    Ok(ItemResult {
        order_id: order.order_id.clone(),
        status: if conflicts.is_empty() {
            ItemStatus::Applied
        } else {
            ItemStatus::AppliedWithConflicts
        },
        purchase_id: Some(view.id),
        points_earned: Some(view.points_earned),
        coupons_redeemed: redeemed,
        conflicts,
        problem: None,
    })
}

/// owner, status, expires_at, template id, funding brand, honouring brand, value, plugin.
type CouponRow = (String, String, i64, String, String, String, i64, String);

/// Redeems a coupon honoured offline, or says why it cannot be (`Some(conflict)`).
#[allow(clippy::too_many_arguments)]
async fn redeem_coupon(
    conn: &mut AnyConnection,
    brand_id: &str,
    member_id: &str,
    device_id: Option<&str>,
    purchase_id: &str,
    code: &str,
    taken_at_ms: i64,
    now_ms: i64,
) -> DomainResult<Option<CouponConflict>> {
    // One guarded statement decides: a coupon used elsewhere meanwhile is no longer `issued`.
    // The counter applied it without the server: its face value is what it took off.
    let redeemed = sqlx::query(
        "UPDATE coupons SET status = 'redeemed', purchase_id = $1, updated_at = $2,
            discount_cents = (SELECT value_cents FROM coupon_templates t
                              WHERE t.id = coupons.template_id)
         WHERE code = $3 AND member_id = $4 AND status = 'issued' AND expires_at >= $5
           AND template_id IN (SELECT id FROM coupon_templates WHERE honouring_brand = $6)",
    )
    .bind(purchase_id)
    .bind(now_ms)
    .bind(code)
    .bind(member_id)
    .bind(taken_at_ms)
    .bind(brand_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let row: Option<CouponRow> = sqlx::query_as(
        "SELECT c.member_id, c.status, c.expires_at, c.template_id, t.funding_brand,
            t.honouring_brand, t.value_cents, t.plugin
         FROM coupons c JOIN coupon_templates t ON t.id = c.template_id WHERE c.code = $1",
    )
    .bind(code)
    .fetch_optional(&mut *conn)
    .await?;
    let conflict = |code_: &str, detail: String| {
        Ok(Some(CouponConflict {
            coupon_code: code.to_owned(),
            code: code_.to_owned(),
            detail,
        }))
    };
    let Some((owner, status, expires_at, template_id, funding, honouring, value_cents, plugin)) =
        row
    else {
        return conflict("coupon_not_found", format!("no coupon has code {code:?}"));
    };
    if redeemed == 1 {
        // Governed like an online redemption: a perk's coupon by the perk's plugin, which
        // already settled the perk (so it is not paid twice), others by the template's.
        let governing = crate::workflows::checkout::governing_plugin(conn, code, &plugin).await?;
        outbox::record(
            conn,
            &NewEvent {
                kind: EventKind::CouponHonoured,
                brand_id,
                funding_brand: &funding,
                honouring_brand: &honouring,
                reference: Some(&template_id),
                plugin: Some(&governing),
                points: 0,
                value_cents,
                member_id: Some(member_id),
                subject_kind: "coupon",
                subject_id: code,
                reverses_event_id: None,
                occurred_at: taken_at_ms,
            },
            now_ms,
        )
        .await?;
        // As online: the honouring brand hears of it with its purchase, another funding brand
        // of the coupon and its value only.
        let honoured = serde_json::json!({
            "template_id": template_id, "discount_cents": value_cents, "funding_brand": funding,
            "honouring_brand": brand_id, "offline": true, "created_at_ms": taken_at_ms,
        });
        let mut own = honoured.clone();
        own["purchase_id"] = purchase_id.into();
        own["code"] = code.into();
        crate::domain::webhooks::record(
            conn,
            brand_id,
            crate::domain::webhooks::EventType::CouponHonoured,
            Some(member_id),
            own,
        )
        .await?;
        if funding != brand_id {
            crate::domain::webhooks::record(
                conn,
                &funding,
                crate::domain::webhooks::EventType::CouponHonoured,
                Some(member_id),
                honoured,
            )
            .await?;
        }
        // Offline redemptions count towards the member's and device's frequency limits.
        crate::domain::risk::record_redemption(
            conn,
            &crate::domain::risk::RedemptionAttempt {
                member_id,
                device_id,
                value_cents,
                what: &format!("coupon:{template_id}"),
                redemption_id: &format!("coupon:{code}"),
            },
            now_ms,
        )
        .await?;
        return Ok(None);
    }
    if owner != member_id {
        return conflict(
            "coupon_not_owned",
            format!("coupon {code:?} belongs to another member"),
        );
    }
    if honouring != brand_id {
        return conflict(
            "coupon_not_honoured_here",
            format!("coupon {code:?} is honoured at brand {honouring:?}, not {brand_id:?}"),
        );
    }
    match status.as_str() {
        "redeemed" | "reserved" => conflict(
            "coupon_already_used",
            format!("coupon {code:?} was already {status} elsewhere"),
        ),
        "voided" => conflict("coupon_voided", format!("coupon {code:?} was voided")),
        _ => conflict(
            "coupon_expired",
            format!(
                "coupon {code:?} expired at {expires_at}, before the purchase at {taken_at_ms}"
            ),
        ),
    }
}

/// The brand's offline coupon conflicts, newest first.
pub async fn conflicts(pool: &sqlx::AnyPool, brand_id: &str) -> DomainResult<Vec<StoredConflict>> {
    let rows: Vec<StoredConflict> = sqlx::query_as(
        "SELECT id, purchase_id, order_id, member_id, coupon_code, code, detail, created_at
         FROM offline_conflicts WHERE brand_id = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(brand_id)
    .bind(MAX_CONFLICTS_PAGE)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}
