//! Checkouts at a brand's counter: coupons applied to a cart and reserved until the purchase
//! (see [`crate::workflows::checkout`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::Principal;
use crate::foundation::error::DomainResult;
use crate::foundation::ids::check_path_id;
use crate::interfaces::api::idempotency::idempotent_write;
use crate::interfaces::api::idempotency::{begin_write, Begun, IdempotencyKey};
use crate::interfaces::api::problem::{ApiJson, ApiPath, Problem};
use crate::interfaces::api::AppState;
use crate::workflows::checkout::{
    self, CancelRequest, CancelledCheckout, CheckoutRequest, CheckoutView,
};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(checkouts_create))
        .routes(routes!(checkouts_cancel))
}

/// Check a cart out at the counter (its counter keys, admins): validates the member's coupons,
/// applies them in order through their coupon plugins, reserves them, and returns the per-line
/// discounts, what is left to pay and the most points the member may pay with. Pass the id as
/// `checkout_id` in the purchase to redeem the coupons with it.
#[utoipa::path(post, path = "/brands/{brand_id}/checkouts", tag = "coupons",
    params(
        ("brand_id" = String, Path, description = "Brand of the counter"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation"),
    ),
    request_body = CheckoutRequest,
    responses(
        (status = 201, body = CheckoutView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "unknown brand, member or coupon"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`coupon_reserved`, `coupon_redeemed`, `coupon_unavailable`"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`coupon_rejected`, `coupon_input_invalid` (the plugin calls the cart \
                or template invalid), `coupon_expired`, `coupon_voided`, \
                `coupon_not_honoured_here`, `coupon_template_retired`, `coupons_not_combinable`, \
                `too_many_coupons`, `member_blocked`, `brand_suspended`"),
        (status = 503, body = Problem, content_type = "application/problem+json",
            description = "`coupon_plugin_failed`, `coupon_plugin_unavailable`"),
    ))]
pub async fn checkouts_create(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(brand_id): ApiPath<String>,
    ApiJson(req): ApiJson<CheckoutRequest>,
) -> DomainResult<Response> {
    check_path_id("brand", &brand_id)?;
    principal.require_counter(&brand_id)?;
    check_path_id("member", &req.member_id)?;
    // A retry of a checkout that already reserved its coupons must replay, not re-check them.
    let answered: Option<(Option<i64>,)> = sqlx::query_as(
        "SELECT status_code FROM idempotency_keys WHERE scope = $1 AND idem_key = $2",
    )
    .bind(principal.idempotency_scope())
    .bind(&key.0)
    .fetch_optional(state.store.read())
    .await?;
    let op = format!("checkouts.create:{brand_id}");
    if answered.is_some_and(|(status,)| status.is_some()) {
        if let Begun::Replay(response) = begin_write(&state, &principal, &key, &op, &req).await? {
            return Ok(response);
        }
    }
    // Plugins run before the write transaction (on SQLite it is the only writer).
    let prepared = checkout::prepare(&state, &brand_id, &req).await?;
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &req,
        StatusCode::CREATED,
        async |tx| {
            let view = checkout::reserve(&mut *tx, prepared, state.now_ms()).await?;
            Ok(view)
        },
    )
    .await
}

/// Cancel an open checkout (its counter keys, admins): the customer walked away, so its coupons
/// are released at once rather than when the reservation lapses. A completed checkout cannot be
/// cancelled (refund the purchase instead); cancelling twice answers the first cancellation.
#[utoipa::path(post, path = "/brands/{brand_id}/checkouts/{checkout_id}/cancel", tag = "coupons",
    params(
        ("brand_id" = String, Path, description = "Brand of the counter"),
        ("checkout_id" = String, Path),
        ("Idempotency-Key" = String, Header, description = "Unique per operation"),
    ),
    request_body = CancelRequest,
    responses(
        (status = 200, body = CancelledCheckout),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "unknown checkout, or another brand's"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`checkout_completed`"),
    ))]
pub async fn checkouts_cancel(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath((brand_id, checkout_id)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<CancelRequest>,
) -> DomainResult<Response> {
    check_path_id("brand", &brand_id)?;
    check_path_id("checkout", &checkout_id)?;
    principal.require_counter(&brand_id)?;
    let op = format!("checkouts.cancel:{brand_id}:{checkout_id}");
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &req,
        StatusCode::OK,
        async |tx| {
            let cancelled = checkout::cancel(
                &mut *tx,
                state.store.backend(),
                &brand_id,
                &checkout_id,
                &principal.key_id,
                req.reason.trim(),
                state.now_ms(),
            )
            .await?;
            Ok(cancelled)
        },
    )
    .await
}
