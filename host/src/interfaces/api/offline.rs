//! Offline purchase sync and the coupon conflicts it leaves for the brand (see
//! [`crate::workflows::offline`] for the rules).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::{Principal, Role};
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::ids::check_path_id;
use crate::interfaces::api::idempotency::{self, Claim, IdempotencyKey};
use crate::interfaces::api::problem::{ApiJson, ApiPath, Problem};
use crate::interfaces::api::AppState;
use crate::workflows::offline::{self, OfflineBatch, StoredConflict, SyncReport};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(offline_purchases_sync))
        .routes(routes!(offline_conflicts_list))
}

/// A brand's offline coupon conflicts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConflictList {
    /// Newest first, at most 500.
    pub conflicts: Vec<StoredConflict>,
}

/// Sync purchases taken while the counter was offline (its counter key, or an admin). Each item
/// is verified against the pass it was taken with and recorded on its own: `applied`,
/// `applied_with_conflicts` (coupons that could not be redeemed; the purchase stands),
/// `duplicate` (the order was recorded before; nothing changed) or `rejected` (with the
/// problem's code). Syncing the same batch again applies nothing twice.
#[utoipa::path(post, path = "/brands/{brand_id}/offline-purchases", tag = "offline",
    params(
        ("brand_id" = String, Path, description = "Brand slug"),
        ("Idempotency-Key" = String, Header, description = "Unique per batch; a retry reuses it"),
    ),
    request_body = OfflineBatch,
    responses(
        (status = 200, body = SyncReport, description = "Per-item results; item problem codes: \
            `pass_malformed`, `pass_unsupported_version`, `pass_unknown_key`, \
            `pass_bad_signature`, `pass_expired`, `pass_not_yet_valid`, `pass_member_mismatch`, \
            `taken_at_in_future`, `offline_purchase_too_old`, `member_blacklisted`, \
            `member_blocked`, `insufficient_points`, … (as for online purchases)"),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "`validation_failed`"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`idempotency_key_reused`"),
    ))]
pub async fn offline_purchases_sync(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(brand_id): ApiPath<String>,
    ApiJson(batch): ApiJson<OfflineBatch>,
) -> DomainResult<Response> {
    check_path_id("brand", &brand_id)?;
    principal.require_counter(&brand_id)?;
    offline::validate(&batch)?;
    let scope = principal.idempotency_scope();
    let hash = idempotency::request_hash(&format!("offline.sync:{brand_id}"), &batch);
    let now_ms = state.now_ms();
    // Items commit one by one, so the key is checked now and claimed with the final report.
    {
        let mut tx = state.store.begin().await?;
        if let Claim::Replay { status, body } =
            idempotency::claim(&mut tx, &scope, &key.0, &hash, now_ms).await?
        {
            return Ok(idempotency::replay_response(status, body));
        }
        tx.rollback().await?;
    }
    let report = offline::sync(&state, &brand_id, &batch).await?;
    let mut tx = state.store.begin().await?;
    if let Claim::Replay { status, body } =
        idempotency::claim(&mut tx, &scope, &key.0, &hash, now_ms).await?
    {
        return Ok(idempotency::replay_response(status, body));
    }
    idempotency::complete(&mut tx, &scope, &key.0, StatusCode::OK, &report).await?;
    tx.commit().await?;
    Ok((StatusCode::OK, ApiJson(report)).into_response())
}

/// Coupons honoured offline that could not be redeemed, for the brand to resolve (an admin, or
/// the brand's brand or counter keys).
#[utoipa::path(get, path = "/brands/{brand_id}/offline-conflicts", tag = "offline",
    params(("brand_id" = String, Path, description = "Brand slug")),
    responses(
        (status = 200, body = ConflictList),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn offline_conflicts_list(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(brand_id): ApiPath<String>,
) -> DomainResult<ApiJson<ConflictList>> {
    check_path_id("brand", &brand_id)?;
    let allowed = match principal.role {
        Role::Admin => true,
        Role::Brand | Role::Counter => principal.brand_id.as_deref() == Some(brand_id.as_str()),
        Role::Member => false,
    };
    if !allowed {
        return Err(DomainError::forbidden(format!(
            "only an admin or a key of brand {brand_id:?} may read its offline conflicts"
        )));
    }
    Ok(ApiJson(ConflictList {
        conflicts: offline::conflicts(state.store.read(), &brand_id).await?,
    }))
}
