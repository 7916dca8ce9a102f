//! Points: a member's balance, lots and history; holds (reserve, capture, release); and admin
//! adjustments. Every write takes an `Idempotency-Key` and is claimed, done and completed in one
//! transaction (see [`crate::interfaces::api::idempotency`]).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::{Principal, Role};
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::ids::check_path_id;
use crate::interfaces::api::idempotency::idempotent_write;
use crate::interfaces::api::idempotency::IdempotencyKey;
use crate::interfaces::api::problem::{ApiJson, ApiPath, ApiQuery, Problem};
use crate::interfaces::api::AppState;
use crate::ledger::{
    self, Adjustment, AdjustmentRequest, CaptureRequest, HistoryPage, Hold, HoldRequest, PointsView,
};

/// Default page of the history.
const DEFAULT_HISTORY_PAGE: i64 = 50;

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(points_get))
        .routes(routes!(points_history))
        .routes(routes!(points_hold))
        .routes(routes!(points_adjust))
        .routes(routes!(holds_get))
        .routes(routes!(holds_capture))
        .routes(routes!(holds_release))
}

/// Who may act on a hold: an admin, the member, or a counter/brand key of the hold's brand
/// (the counter that captures it at checkout).
fn authorize_hold(principal: &Principal, hold: &Hold) -> DomainResult<()> {
    let allowed = match principal.role {
        Role::Admin => true,
        Role::Member => principal.member_id.as_deref() == Some(hold.member_id.as_str()),
        Role::Counter | Role::Brand => {
            hold.brand_id.is_some() && principal.brand_id == hold.brand_id
        }
    };
    if allowed {
        Ok(())
    } else {
        Err(DomainError::forbidden(
            "only an admin, the member, or a counter of the hold's brand may act on this hold",
        ))
    }
}

/// A member's points: balance, available, held, debt, lots with expiry, upcoming expiry and
/// pending holds. A brand or counter key sees the holds at its own brand only (`held` counts
/// them all).
#[utoipa::path(get, path = "/members/{member_id}/points", tag = "points",
    params(("member_id" = String, Path, description = "Member id")),
    responses(
        (status = 200, body = PointsView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn points_get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(member_id): ApiPath<String>,
) -> DomainResult<ApiJson<PointsView>> {
    check_path_id("member", &member_id)?;
    principal.require_member_read(&member_id)?;
    let mut view = ledger::points_view(state.store.read(), &member_id, state.now_ms()).await?;
    if let Some(own) = principal.brand_scope() {
        view.holds
            .retain(|hold| hold.brand_id.as_deref() == Some(own));
    }
    Ok(ApiJson(view))
}

/// Paging of the points history.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Return postings older than this posting id (the previous page's `next_before`).
    pub before: Option<String>,
    /// Page size, 1..=200 (default 50).
    pub limit: Option<i64>,
}

/// A member's postings (wallet, held, debt), newest first, paged. A brand or counter key sees
/// every posting but another brand's `order_id` and `hold_id` (absent there).
#[utoipa::path(get, path = "/members/{member_id}/points/history", tag = "points",
    params(("member_id" = String, Path, description = "Member id"), HistoryParams),
    responses(
        (status = 200, body = HistoryPage),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn points_history(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(member_id): ApiPath<String>,
    ApiQuery(params): ApiQuery<HistoryParams>,
) -> DomainResult<ApiJson<HistoryPage>> {
    check_path_id("member", &member_id)?;
    principal.require_member_read(&member_id)?;
    if let Some(before) = &params.before {
        check_path_id("posting", before)?;
    }
    let mut page = ledger::history(
        state.store.read(),
        &member_id,
        params.before.as_deref(),
        params.limit.unwrap_or(DEFAULT_HISTORY_PAGE),
    )
    .await?;
    // The member's postings are shared; another brand's order and hold ids are not.
    if let Some(own) = principal.brand_scope() {
        for item in &mut page.items {
            if item.brand_id.as_deref() != Some(own) {
                item.order_id = None;
                item.hold_id = None;
            }
        }
    }
    Ok(ApiJson(page))
}

/// Reserve points (member or admin): they leave the available balance until the hold is
/// captured, released or times out.
#[utoipa::path(post, path = "/members/{member_id}/points/holds", tag = "points",
    params(
        ("member_id" = String, Path, description = "Member id"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it"),
    ),
    request_body = HoldRequest,
    responses(
        (status = 201, body = Hold),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`idempotency_key_reused`"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`insufficient_points`, `member_blocked`, `unknown_brand`"),
    ))]
pub async fn points_hold(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(member_id): ApiPath<String>,
    ApiJson(req): ApiJson<HoldRequest>,
) -> DomainResult<Response> {
    check_path_id("member", &member_id)?;
    principal.require_member_self(&member_id)?;
    let op = format!("points.hold:{member_id}");
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &req,
        StatusCode::CREATED,
        async |tx| {
            let hold = ledger::create_hold(
                &mut *tx,
                state.store.backend(),
                &state.config.points,
                &member_id,
                &req,
                state.now_ms(),
            )
            .await?;
            Ok(hold)
        },
    )
    .await
}

/// A direct credit (points > 0) or debit (points < 0) by an admin, with a reason.
#[utoipa::path(post, path = "/members/{member_id}/points/adjustments", tag = "points",
    params(
        ("member_id" = String, Path, description = "Member id"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it"),
    ),
    request_body = AdjustmentRequest,
    responses(
        (status = 201, body = Adjustment),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`idempotency_key_reused`"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`insufficient_points`, `unknown_brand`"),
    ))]
pub async fn points_adjust(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(member_id): ApiPath<String>,
    ApiJson(req): ApiJson<AdjustmentRequest>,
) -> DomainResult<Response> {
    check_path_id("member", &member_id)?;
    principal.require_admin()?;
    let op = format!("points.adjust:{member_id}");
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &req,
        StatusCode::CREATED,
        async |tx| {
            let adjustment = ledger::adjust(
                &mut *tx,
                state.store.backend(),
                &state.config.points,
                &member_id,
                &req,
                state.now_ms(),
            )
            .await?;
            Ok(adjustment)
        },
    )
    .await
}

/// A hold.
#[utoipa::path(get, path = "/holds/{hold_id}", tag = "points",
    params(("hold_id" = String, Path, description = "Hold id")),
    responses(
        (status = 200, body = Hold),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn holds_get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(hold_id): ApiPath<String>,
) -> DomainResult<ApiJson<Hold>> {
    check_path_id("hold", &hold_id)?;
    let hold = ledger::get_hold(state.store.read(), &hold_id).await?;
    authorize_hold(&principal, &hold)?;
    Ok(ApiJson(hold))
}

/// Capture a pending hold (all, or `points` of it; the rest is released).
#[utoipa::path(post, path = "/holds/{hold_id}/capture", tag = "points",
    params(
        ("hold_id" = String, Path, description = "Hold id"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it"),
    ),
    request_body(content = Option<CaptureRequest>, description = "Optional; omit to capture all"),
    responses(
        (status = 200, body = Hold),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`hold_not_pending`, `hold_expired`, `idempotency_key_reused`"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`member_blocked`"),
    ))]
pub async fn holds_capture(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(hold_id): ApiPath<String>,
    body: Bytes,
) -> DomainResult<Response> {
    check_path_id("hold", &hold_id)?;
    let hold = ledger::get_hold(state.store.read(), &hold_id).await?;
    authorize_hold(&principal, &hold)?;
    let req: CaptureRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CaptureRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            DomainError::new(
                crate::foundation::error::ErrorKind::Refused,
                "invalid_body",
                format!("the body does not match the expected shape: {e}"),
            )
        })?
    };
    let op = format!("holds.capture:{hold_id}");
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &req,
        StatusCode::OK,
        async |tx| {
            let hold = ledger::capture_hold(
                &mut *tx,
                state.store.backend(),
                &state.config.points,
                &hold_id,
                &req,
                state.now_ms(),
            )
            .await?;
            Ok(hold)
        },
    )
    .await
}

/// Release a pending hold: its points return to the wallet with their original expiry.
#[utoipa::path(post, path = "/holds/{hold_id}/release", tag = "points",
    params(
        ("hold_id" = String, Path, description = "Hold id"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it"),
    ),
    responses(
        (status = 200, body = Hold),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`hold_not_pending`, `idempotency_key_reused`"),
    ))]
pub async fn holds_release(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(hold_id): ApiPath<String>,
) -> DomainResult<Response> {
    check_path_id("hold", &hold_id)?;
    let hold = ledger::get_hold(state.store.read(), &hold_id).await?;
    authorize_hold(&principal, &hold)?;
    let op = format!("holds.release:{hold_id}");
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &(),
        StatusCode::OK,
        async |tx| {
            let hold = ledger::release_hold(
                &mut *tx,
                state.store.backend(),
                &hold_id,
                false,
                state.now_ms(),
            )
            .await?;
            Ok(hold)
        },
    )
    .await
}
