//! Purchases and refunds at a brand's counter (see [`crate::domain::purchases`] for the rules).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::{Principal, Role};
use crate::domain::purchases::{self, PurchaseRequest, PurchaseView, RefundRequest, RefundView};
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::ids::check_path_id;
use crate::interfaces::api::idempotency::idempotent_write;
use crate::interfaces::api::idempotency::IdempotencyKey;
use crate::interfaces::api::problem::{ApiJson, ApiPath, Problem};
use crate::interfaces::api::AppState;
use crate::workflows::purchase;

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(purchases_create))
        .routes(routes!(purchases_get))
        .routes(routes!(purchases_refund))
}

/// Record a purchase at the brand (its counter key, or an admin): spends `points_spent`
/// (oldest-expiry lots first), earns on eligible spend, and may upgrade the member's tier.
#[utoipa::path(post, path = "/brands/{brand_id}/purchases", tag = "purchases",
    params(
        ("brand_id" = String, Path, description = "Brand slug"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it"),
    ),
    request_body = PurchaseRequest,
    responses(
        (status = 201, body = PurchaseView),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "`validation_failed`"),
        (status = 403, body = Problem, content_type = "application/problem+json",
            description = "`forbidden`, `member_blacklisted`"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "unknown brand or member"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`order_exists`, `idempotency_key_reused`"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`insufficient_points`, `member_blocked`, `points_exceed_total`, \
                `points_payment_over_limit`, `brand_suspended`, `invalid_bonus`"),
    ))]
pub async fn purchases_create(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(brand_id): ApiPath<String>,
    ApiJson(req): ApiJson<PurchaseRequest>,
) -> DomainResult<Response> {
    check_path_id("brand", &brand_id)?;
    principal.require_counter(&brand_id)?;
    let op = format!("purchases.create:{brand_id}");
    // Plugins propose bonuses before the write transaction, so no database lock is held while
    // they run; their decisions are deterministic in the request, so a retry proposes the same.
    let accepted = purchase::propose_bonuses(&state, &brand_id, &req).await?;
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &req,
        StatusCode::CREATED,
        async |tx| {
            let view = purchase::record(&state, &mut *tx, &brand_id, &req, &accepted).await?;
            Ok(view)
        },
    )
    .await
}

/// A purchase with its lines, allocations, bonuses and refunds (the brand's keys or an admin).
#[utoipa::path(get, path = "/brands/{brand_id}/purchases/{order_id}", tag = "purchases",
    params(
        ("brand_id" = String, Path, description = "Brand slug"),
        ("order_id" = String, Path, description = "The brand's order id"),
    ),
    responses(
        (status = 200, body = PurchaseView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn purchases_get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((brand_id, order_id)): ApiPath<(String, String)>,
) -> DomainResult<ApiJson<PurchaseView>> {
    check_path_id("brand", &brand_id)?;
    let allowed = match principal.role {
        Role::Admin => true,
        Role::Brand | Role::Counter => principal.brand_id.as_deref() == Some(brand_id.as_str()),
        Role::Member => false,
    };
    if !allowed {
        return Err(DomainError::forbidden(format!(
            "only an admin or a key of brand {brand_id:?} may read its purchases"
        )));
    }
    let view = purchases::get_purchase(state.store.read(), &brand_id, &order_id).await?;
    Ok(ApiJson(view))
}

/// Refund lines of a purchase (all that is left when `lines` is empty): restores the points
/// the lines spent, claws back what they earned (debt for any part already spent), and reverses
/// their qualifying spend.
#[utoipa::path(post, path = "/brands/{brand_id}/purchases/{order_id}/refunds", tag = "purchases",
    params(
        ("brand_id" = String, Path, description = "Brand slug"),
        ("order_id" = String, Path, description = "The brand's order id"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it"),
    ),
    request_body = RefundRequest,
    responses(
        (status = 201, body = RefundView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`refund_exists`, `idempotency_key_reused`"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`refund_exceeds_purchase`"),
    ))]
pub async fn purchases_refund(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath((brand_id, order_id)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<RefundRequest>,
) -> DomainResult<Response> {
    check_path_id("brand", &brand_id)?;
    principal.require_counter(&brand_id)?;
    let op = format!("purchases.refund:{brand_id}:{order_id}");
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &req,
        StatusCode::CREATED,
        async |tx| {
            let view = purchase::refund(&state, &mut *tx, &brand_id, &order_id, &req).await?;
            Ok(view)
        },
    )
    .await
}
