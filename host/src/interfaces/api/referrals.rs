//! Referrals: programmes (admins), a member's invite code, attaching a code, a member's
//! referrals and a programme's figures (see [`crate::domain::referrals`] for the rules).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::{Principal, Role};
use crate::domain::referrals::{
    self, AttachRequest, InviteCode, MemberReferrals, ProgrammeRequest, ProgrammeStats,
    ProgrammeView, Referral,
};
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::ids::check_path_id;
use crate::interfaces::api::idempotency::{idempotent_write, IdempotencyKey};
use crate::interfaces::api::problem::{ApiJson, ApiPath, Problem};
use crate::interfaces::api::AppState;

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(referral_programme_create, referral_programmes_list))
        .routes(routes!(referral_programme_stats))
        .routes(routes!(referral_invite_code))
        .routes(routes!(referral_attach))
        .routes(routes!(referral_member_get))
}

/// Create a referral programme (admins): points for the referrer and the invitee, the funding
/// brand (or the platform), the minimum qualifying purchase, the monthly cap per referrer and
/// an optional window.
#[utoipa::path(post, path = "/referrals/programmes", tag = "referrals",
    params(("Idempotency-Key" = String, Header, description = "Unique per operation")),
    request_body = ProgrammeRequest,
    responses(
        (status = 201, body = ProgrammeView),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "`validation_failed`, `invalid_programme_id`, \
                `invalid_programme_title`, `invalid_reward_points`, `invalid_min_purchase`, \
                `invalid_referral_cap`, `invalid_window`"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`programme_exists`, `idempotency_key_reused`"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`unknown_brand`"),
    ))]
pub async fn referral_programme_create(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiJson(req): ApiJson<ProgrammeRequest>,
) -> DomainResult<Response> {
    principal.require_admin()?;
    idempotent_write(
        &state,
        &principal,
        &key,
        "referrals.programme_create",
        &req,
        StatusCode::CREATED,
        async |tx| referrals::create_programme(&mut *tx, &req, state.now_ms()).await,
    )
    .await
}

/// Every referral programme, newest first (admins and brand keys).
#[utoipa::path(get, path = "/referrals/programmes", tag = "referrals",
    responses(
        (status = 200, body = Vec<ProgrammeView>),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn referral_programmes_list(
    State(state): State<AppState>,
    principal: Principal,
) -> DomainResult<ApiJson<Vec<ProgrammeView>>> {
    if !matches!(principal.role, Role::Admin | Role::Brand) {
        return Err(DomainError::forbidden(
            "referral programmes are listed for admins and brands",
        ));
    }
    Ok(ApiJson(referrals::programmes(state.store.read()).await?))
}

/// A programme's figures: codes attached, pending, rewarded, clawed back, rejected per reason,
/// and the points credited (admins; a brand key for a programme its brand funds).
#[utoipa::path(get, path = "/referrals/programmes/{programme_id}/stats", tag = "referrals",
    params(("programme_id" = String, Path, description = "Programme id")),
    responses(
        (status = 200, body = ProgrammeStats),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn referral_programme_stats(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(programme_id): ApiPath<String>,
) -> DomainResult<ApiJson<ProgrammeStats>> {
    if !matches!(principal.role, Role::Admin | Role::Brand) {
        return Err(DomainError::forbidden(
            "programme figures are for admins and the funding brand",
        ));
    }
    check_path_id("programme", &programme_id)?;
    let stats = referrals::programme_stats(state.store.read(), &programme_id).await?;
    if principal.role == Role::Brand
        && stats.programme.funding_brand.as_deref() != principal.brand_id.as_deref()
    {
        return Err(DomainError::forbidden(
            "a brand sees the figures of programmes it funds only",
        ));
    }
    Ok(ApiJson(stats))
}

/// The member's invite code (the member's own key or an admin): made on the first call, the
/// same code on every later call.
#[utoipa::path(post, path = "/members/{member_id}/invite-code", tag = "referrals",
    params(
        ("member_id" = String, Path, description = "Member id"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation"),
    ),
    responses(
        (status = 200, body = InviteCode),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`idempotency_key_reused`"),
    ))]
pub async fn referral_invite_code(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(member_id): ApiPath<String>,
) -> DomainResult<Response> {
    principal.require_member_self(&member_id)?;
    check_path_id("member", &member_id)?;
    let op = format!("referrals.invite_code:{member_id}");
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &(),
        StatusCode::OK,
        async |tx| {
            Ok(referrals::invite_code(&mut *tx, &member_id, state.now_ms())
                .await?
                .0)
        },
    )
    .await
}

/// The invitee attaches a referrer's code (the member's own key or an admin): once, before
/// their first purchase, while a programme is in force. A self-referral or a shared phone is
/// accepted and recorded as `rejected` with its reason.
#[utoipa::path(post, path = "/members/{member_id}/referral", tag = "referrals",
    params(
        ("member_id" = String, Path, description = "The invitee"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation"),
    ),
    request_body = AttachRequest,
    responses(
        (status = 201, body = Referral),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "`validation_failed`, `invalid_invite_code`"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`referral_exists`, `idempotency_key_reused`"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`unknown_invite_code`, `invitee_has_purchased`, \
                `no_referral_programme`"),
    ))]
pub async fn referral_attach(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(member_id): ApiPath<String>,
    ApiJson(req): ApiJson<AttachRequest>,
) -> DomainResult<Response> {
    principal.require_member_self(&member_id)?;
    check_path_id("member", &member_id)?;
    let op = format!("referrals.attach:{member_id}");
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &req,
        StatusCode::CREATED,
        async |tx| referrals::attach(&mut *tx, &member_id, &req, state.now_ms()).await,
    )
    .await
}

/// A member's invite code, who invited them and whom they invited (admins, brand and counter
/// keys, the member).
#[utoipa::path(get, path = "/members/{member_id}/referrals", tag = "referrals",
    params(("member_id" = String, Path, description = "Member id")),
    responses(
        (status = 200, body = MemberReferrals),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn referral_member_get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(member_id): ApiPath<String>,
) -> DomainResult<ApiJson<MemberReferrals>> {
    principal.require_member_read(&member_id)?;
    check_path_id("member", &member_id)?;
    Ok(ApiJson(
        referrals::member_referrals(state.store.read(), &member_id).await?,
    ))
}
