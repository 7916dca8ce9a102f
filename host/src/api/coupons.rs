//! Coupon templates, a member's coupons, and a coupon looked up at a counter (see
//! [`crate::coupons`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::points::check_path_id;
use crate::api::AppState;
use crate::auth::{Principal, Role};
use crate::coupons::{self, CouponView, TemplateRequest, TemplateView};
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult, Problem};
use crate::idempotency::{begin_write, finish_write, Begun, IdempotencyKey};
use crate::perks::ReturnedCoupon;

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(coupon_templates_create, coupon_templates_list))
        .routes(routes!(coupon_templates_get))
        .routes(routes!(coupons_member_list))
        .routes(routes!(coupons_member_return))
        .routes(routes!(coupons_counter_get))
}

/// Create a coupon template (an admin, or the funding brand's key).
#[utoipa::path(post, path = "/coupon-templates", tag = "coupons",
    params(("Idempotency-Key" = String, Header, description = "Unique per operation")),
    request_body = TemplateRequest,
    responses(
        (status = 201, body = TemplateView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "unknown brand"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`coupon_template_exists`"),
    ))]
pub async fn coupon_templates_create(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiJson(req): ApiJson<TemplateRequest>,
) -> ApiResult<Response> {
    principal.require_brand(&req.funding_brand)?;
    let mut tx =
        match begin_write(&state, &principal, &key, "coupon_templates.create", &req).await? {
            Begun::Replay(response) => return Ok(response),
            Begun::Fresh(tx) => tx,
        };
    let view = coupons::create_template(&mut tx, &req, state.now_ms()).await?;
    finish_write(tx, &principal, &key, StatusCode::CREATED, view).await
}

/// Every coupon template (any key but a member's).
#[utoipa::path(get, path = "/coupon-templates", tag = "coupons",
    responses(
        (status = 200, body = Vec<TemplateView>),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn coupon_templates_list(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<ApiJson<Vec<TemplateView>>> {
    if principal.role == Role::Member {
        return Err(ApiError::forbidden(
            "member keys cannot list coupon templates",
        ));
    }
    let mut conn = state.store.read().acquire().await?;
    Ok(ApiJson(coupons::list_templates(&mut conn).await?))
}

/// One coupon template.
#[utoipa::path(get, path = "/coupon-templates/{template_id}", tag = "coupons",
    params(("template_id" = String, Path, description = "Template id")),
    responses(
        (status = 200, body = TemplateView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn coupon_templates_get(
    State(state): State<AppState>,
    _principal: Principal,
    ApiPath(template_id): ApiPath<String>,
) -> ApiResult<ApiJson<TemplateView>> {
    check_path_id("coupon template", &template_id)?;
    let mut conn = state.store.read().acquire().await?;
    Ok(ApiJson(
        coupons::get_template(&mut conn, &template_id).await?,
    ))
}

/// A member's coupons, newest first (the member, brand and counter keys, admins). A brand or
/// counter key sees only the coupons its brand funds or honours: other brands' coupons are their
/// business.
#[utoipa::path(get, path = "/members/{member_id}/coupons", tag = "coupons",
    params(("member_id" = String, Path, description = "Member id")),
    responses(
        (status = 200, body = Vec<CouponView>),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn coupons_member_list(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(member_id): ApiPath<String>,
) -> ApiResult<ApiJson<Vec<CouponView>>> {
    check_path_id("member", &member_id)?;
    principal.require_member_read(&member_id)?;
    let mut conn = state.store.read().acquire().await?;
    Ok(ApiJson(
        coupons::member_coupons(
            &mut conn,
            &member_id,
            principal.brand_scope(),
            state.now_ms(),
        )
        .await?,
    ))
}

/// A coupon presented at a counter of the brand that honours it (its counter keys, admins).
#[utoipa::path(get, path = "/brands/{brand_id}/coupons/{code}", tag = "coupons",
    params(
        ("brand_id" = String, Path, description = "Brand of the counter"),
        ("code" = String, Path, description = "The coupon code"),
    ),
    responses(
        (status = 200, body = CouponView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "unknown code, or a coupon this brand does not honour"),
    ))]
pub async fn coupons_counter_get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((brand_id, code)): ApiPath<(String, String)>,
) -> ApiResult<ApiJson<CouponView>> {
    check_path_id("brand", &brand_id)?;
    check_path_id("coupon", &code)?;
    principal.require_counter(&brand_id)?;
    let mut conn = state.store.read().acquire().await?;
    let code = code.to_ascii_uppercase();
    let coupon = coupons::get_coupon(&mut conn, &code, state.now_ms()).await?;
    // Another brand's coupon is none of this counter's business: same answer as unknown.
    if coupon.honouring_brand != brand_id {
        return Err(ApiError::not_found("coupon", &code));
    }
    Ok(ApiJson(coupon))
}

/// Give an unused perk coupon back (the member, admins): the coupon is voided and its perk
/// redemption reversed in one transaction — the points come back, the stock returns, and the
/// settlement of the perk is reversed. Used, reserved, expired and non-perk coupons are refused.
#[utoipa::path(post, path = "/members/{member_id}/coupons/{code}/return", tag = "coupons",
    params(
        ("member_id" = String, Path, description = "Member id"),
        ("code" = String, Path, description = "The coupon code"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation"),
    ),
    responses(
        (status = 200, body = ReturnedCoupon),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "unknown code, or another member's coupon"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`coupon_redeemed`, `coupon_voided`, `coupon_reserved`, \
                `coupon_unavailable`"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`coupon_not_returnable`, `coupon_expired`"),
    ))]
pub async fn coupons_member_return(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath((member_id, code)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    check_path_id("member", &member_id)?;
    if code.is_empty()
        || code.len() > crate::checkout::MAX_CODE_LEN
        || !code.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(ApiError::not_found("coupon", &code));
    }
    principal.require_member_self(&member_id)?;
    let op = format!("coupons.return:{member_id}:{}", code.to_ascii_uppercase());
    let mut tx = match begin_write(&state, &principal, &key, &op, &()).await? {
        Begun::Replay(response) => return Ok(response),
        Begun::Fresh(tx) => tx,
    };
    let returned = crate::perks::return_coupon(
        &mut tx,
        state.store.backend(),
        &state.config.points,
        &member_id,
        &code,
        state.now_ms(),
    )
    .await?;
    finish_write(tx, &principal, &key, StatusCode::OK, returned).await
}
