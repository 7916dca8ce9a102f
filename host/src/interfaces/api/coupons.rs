//! Coupon templates, a member's coupons, and a coupon looked up at a counter (see
//! [`crate::domain::coupons`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::{Principal, Role};
use crate::domain::coupons::{self, CouponView, TemplateRequest, TemplateView};
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::ids::check_path_id;
use crate::interfaces::api::idempotency::idempotent_write;
use crate::interfaces::api::idempotency::IdempotencyKey;
use crate::interfaces::api::problem::{ApiJson, ApiPath, Problem};
use crate::interfaces::api::AppState;
use crate::workflows::perks::ReturnedCoupon;

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
) -> DomainResult<Response> {
    principal.require_brand(&req.funding_brand)?;
    idempotent_write(
        &state,
        &principal,
        &key,
        "coupon_templates.create",
        &req,
        StatusCode::CREATED,
        async |tx| {
            let view = coupons::create_template(&mut *tx, &req, state.now_ms()).await?;
            Ok(view)
        },
    )
    .await
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
) -> DomainResult<ApiJson<Vec<TemplateView>>> {
    if principal.role == Role::Member {
        return Err(DomainError::forbidden(
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
) -> DomainResult<ApiJson<TemplateView>> {
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
) -> DomainResult<ApiJson<Vec<CouponView>>> {
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
) -> DomainResult<ApiJson<CouponView>> {
    check_path_id("brand", &brand_id)?;
    check_path_id("coupon", &code)?;
    principal.require_counter(&brand_id)?;
    let mut conn = state.store.read().acquire().await?;
    let code = code.to_ascii_uppercase();
    let coupon = coupons::get_coupon(&mut conn, &code, state.now_ms()).await?;
    // Another brand's coupon is none of this counter's business: same answer as unknown.
    if coupon.honouring_brand != brand_id {
        return Err(DomainError::not_found("coupon", &code));
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
) -> DomainResult<Response> {
    check_path_id("member", &member_id)?;
    if code.is_empty()
        || code.len() > crate::workflows::checkout::MAX_CODE_LEN
        || !code.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(DomainError::not_found("coupon", &code));
    }
    principal.require_member_self(&member_id)?;
    let op = format!("coupons.return:{member_id}:{}", code.to_ascii_uppercase());
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &(),
        StatusCode::OK,
        async |tx| {
            let returned = crate::workflows::perks::return_coupon(
                &mut *tx,
                state.store.backend(),
                &state.config.points,
                &member_id,
                &code,
                state.now_ms(),
            )
            .await?;
            Ok(returned)
        },
    )
    .await
}
