//! The paid membership card: plans (admins), buying and renewing at a counter, a member's
//! card, cancellation with a pro-rata refund, renewals due and the fee revenue per brand (see
//! [`crate::domain::membership`] for the rules).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::{Principal, Role};
use crate::domain::membership::{
    self, BuyRequest, BuyView, CancelView, MembershipView, PlanPatch, PlanRequest, PlanView,
    RenewalLine, RevenueLine,
};
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::ids::check_path_id;
use crate::interfaces::api::idempotency::{idempotent_write, IdempotencyKey};
use crate::interfaces::api::problem::{ApiJson, ApiPath, ApiQuery, Problem};
use crate::interfaces::api::AppState;

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(membership_plan_create, membership_plans_list))
        .routes(routes!(membership_plan_update))
        .routes(routes!(membership_buy, membership_get))
        .routes(routes!(membership_cancel))
        .routes(routes!(membership_renewals))
        .routes(routes!(membership_revenue))
}

/// Create a paid membership plan (admins): fee per month or year, the owning brand that
/// receives it, benefit flags, points multiplier, tier floor and renewal notice window.
#[utoipa::path(post, path = "/membership/plans", tag = "membership",
    params(("Idempotency-Key" = String, Header, description = "Unique per operation")),
    request_body = PlanRequest,
    responses(
        (status = 201, body = PlanView),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "`validation_failed`, `invalid_plan_title`, `invalid_fee`, \
                `invalid_multiplier`, `invalid_benefit`, `invalid_notice_days`, \
                `unknown_tier`, `unknown_brand`"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`plan_exists`, `idempotency_key_reused`"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`plan_limit_reached`"),
    ))]
pub async fn membership_plan_create(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiJson(req): ApiJson<PlanRequest>,
) -> DomainResult<Response> {
    principal.require_admin()?;
    idempotent_write(
        &state,
        &principal,
        &key,
        "membership.plan_create",
        &req,
        StatusCode::CREATED,
        async |tx| {
            membership::create_plan(
                &mut *tx,
                &state.settings.membership,
                &state.settings.tiers,
                &req,
                state.now_ms(),
            )
            .await
        },
    )
    .await
}

/// Every paid membership plan (any key).
#[utoipa::path(get, path = "/membership/plans", tag = "membership",
    responses(
        (status = 200, body = Vec<PlanView>),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn membership_plans_list(
    State(state): State<AppState>,
    _principal: Principal,
) -> DomainResult<ApiJson<Vec<PlanView>>> {
    Ok(ApiJson(membership::plans(state.store.read(), None).await?))
}

/// Change a plan (admins). A new fee applies to sales and renewals from now on.
#[utoipa::path(patch, path = "/membership/plans/{plan_id}", tag = "membership",
    params(
        ("plan_id" = String, Path, description = "Plan id"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation"),
    ),
    request_body = PlanPatch,
    responses(
        (status = 200, body = PlanView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`idempotency_key_reused`"),
    ))]
pub async fn membership_plan_update(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(plan_id): ApiPath<String>,
    ApiJson(patch): ApiJson<PlanPatch>,
) -> DomainResult<Response> {
    principal.require_admin()?;
    check_path_id("plan", &plan_id)?;
    let op = format!("membership.plan_update:{plan_id}");
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &patch,
        StatusCode::OK,
        async |tx| {
            membership::update_plan(
                &mut *tx,
                &state.settings.tiers,
                &plan_id,
                &patch,
                state.now_ms(),
            )
            .await
        },
    )
    .await
}

/// Sell a card to a member (a counter key of the selling brand, or an admin), paid in cash at
/// the counter or from the member's stored value. The same plan bought while the card is in
/// force renews it: one more period from the current expiry.
#[utoipa::path(post, path = "/members/{member_id}/membership", tag = "membership",
    params(
        ("member_id" = String, Path, description = "Member id"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it"),
    ),
    request_body = BuyRequest,
    responses(
        (status = 201, body = BuyView),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "`validation_failed`, `unknown_brand`"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "unknown member or plan"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`membership_purchase_exists`, `membership_active`, \
                `idempotency_key_reused`"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`insufficient_stored_value`, `member_blocked`, `plan_inactive`, \
                `brand_suspended`"),
    ))]
pub async fn membership_buy(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(member_id): ApiPath<String>,
    ApiJson(req): ApiJson<BuyRequest>,
) -> DomainResult<Response> {
    check_path_id("member", &member_id)?;
    let selling_brand = match (principal.role, req.brand_id.as_deref()) {
        (Role::Counter, asked) => {
            let own = principal.brand_id.clone().unwrap_or_default();
            if asked.is_some_and(|b| b != own) {
                return Err(DomainError::forbidden(
                    "a counter key sells cards for its own brand only",
                ));
            }
            own
        }
        (Role::Admin, Some(brand)) => brand.to_owned(),
        (Role::Admin, None) => {
            let mut conn = state.store.read().acquire().await?;
            membership::plan(&mut conn, &req.plan_id).await?.brand_id
        }
        _ => {
            return Err(DomainError::forbidden(
                "cards are sold by a counter key of the selling brand or an admin",
            ))
        }
    };
    check_path_id("brand", &selling_brand)?;
    let op = format!("membership.buy:{member_id}");
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &req,
        StatusCode::CREATED,
        async |tx| {
            membership::buy(
                &mut *tx,
                state.store.backend(),
                &selling_brand,
                &member_id,
                &req,
                state.now_ms(),
            )
            .await
        },
    )
    .await
}

/// A member's card: the newest card, its plan, the benefits in force, renewal notices and the
/// fee history (admins, brand and counter keys, the member).
#[utoipa::path(get, path = "/members/{member_id}/membership", tag = "membership",
    params(("member_id" = String, Path, description = "Member id")),
    responses(
        (status = 200, body = MembershipView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn membership_get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(member_id): ApiPath<String>,
) -> DomainResult<ApiJson<MembershipView>> {
    check_path_id("member", &member_id)?;
    principal.require_member_read(&member_id)?;
    Ok(ApiJson(
        membership::view(state.store.read(), &member_id, state.now_ms()).await?,
    ))
}

/// Cancel the member's card now (an admin, or a brand or counter key of the plan's owner or of
/// a brand that sold it), refunding each paid period not used up pro rata — `fee × unused ms /
/// period ms`, rounded down — the way it was paid. Cancelling a cancelled card answers with
/// that cancellation.
#[utoipa::path(post, path = "/members/{member_id}/membership/cancel", tag = "membership",
    params(
        ("member_id" = String, Path, description = "Member id"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation"),
    ),
    responses(
        (status = 200, body = CancelView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "unknown member, or no card"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`idempotency_key_reused`"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`membership_expired`"),
    ))]
pub async fn membership_cancel(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(member_id): ApiPath<String>,
) -> DomainResult<Response> {
    check_path_id("member", &member_id)?;
    let brand = match principal.role {
        Role::Admin => None,
        Role::Brand | Role::Counter => principal.brand_id.clone(),
        Role::Member => {
            return Err(DomainError::forbidden(
                "a card is cancelled by an admin or by the brand that owns or sold it",
            ))
        }
    };
    let op = format!("membership.cancel:{member_id}");
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &(),
        StatusCode::OK,
        async |tx| {
            membership::cancel(
                &mut *tx,
                state.store.backend(),
                brand.as_deref(),
                &member_id,
                state.now_ms(),
            )
            .await
        },
    )
    .await
}

/// Which renewals.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RenewalParams {
    /// Cards expiring within this many days (0..=366); default: each plan's notice window.
    pub within_days: Option<i64>,
    /// Admins: only this owning brand's plans. A brand key always sees its own.
    pub brand_id: Option<String>,
}

/// Cards in force expiring soon, soonest first, with whether their renewal notice was recorded
/// (admins: every brand or one; a brand key: cards of its own plans).
#[utoipa::path(get, path = "/membership/renewals", tag = "membership",
    params(RenewalParams),
    responses(
        (status = 200, body = Vec<RenewalLine>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn membership_renewals(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<RenewalParams>,
) -> DomainResult<ApiJson<Vec<RenewalLine>>> {
    let brand = principal.brand_read_scope(
        params.brand_id.as_deref(),
        "a brand sees the renewals of its own plans only",
        "renewals are for admins and brands",
    )?;
    Ok(ApiJson(
        membership::renewals(
            state.store.read(),
            brand.as_deref(),
            params.within_days,
            state.now_ms(),
        )
        .await?,
    ))
}

/// Which brand's revenue.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RevenueParams {
    /// Admins: only this owning brand. A brand key always sees its own.
    pub brand_id: Option<String>,
}

/// Membership fee revenue per owning brand: sales, renewals, refunds, net, the part other
/// brands sold, and cards in force (admins: every brand or one; a brand key: its own).
#[utoipa::path(get, path = "/membership/revenue", tag = "membership",
    params(RevenueParams),
    responses(
        (status = 200, body = Vec<RevenueLine>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn membership_revenue(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<RevenueParams>,
) -> DomainResult<ApiJson<Vec<RevenueLine>>> {
    let brand = principal.brand_read_scope(
        params.brand_id.as_deref(),
        "a brand sees the membership revenue of its own brand only",
        "membership revenue is for admins and brands",
    )?;
    Ok(ApiJson(
        membership::revenue(state.store.read(), brand.as_deref(), state.now_ms()).await?,
    ))
}
