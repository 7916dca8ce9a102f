//! Run a background job now (admin). The jobs are idempotent by construction (an expired lot has
//! nothing left to expire; a released hold is no longer pending), so the job runs first, in its
//! own short transactions, and the idempotency key then records its report: a concurrent retry
//! with the same key does no harm and gets one of the reports.

use axum::extract::State;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::Principal;
use crate::foundation::error::DomainResult;
use crate::interfaces::api::idempotency::{record_report, IdempotencyKey};
use crate::interfaces::api::problem::Problem;
use crate::interfaces::api::AppState;
use crate::workflows::jobs::{self, ExpiryReport, HoldTimeoutReport};
use crate::workflows::kpi_rollups::{self, RollupReport};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(jobs_expiry))
        .routes(routes!(jobs_pending_points))
        .routes(routes!(jobs_membership_renewals))
        .routes(routes!(jobs_holds))
        .routes(routes!(jobs_kpi_rollups))
}

/// Expire every lot past due now, and mark unused coupons past their expiry `expired`.
#[utoipa::path(post, path = "/jobs/expiry", tag = "jobs",
    params(("Idempotency-Key" = String, Header, description = "Unique per run")),
    responses(
        (status = 200, body = ExpiryReport),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn jobs_expiry(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
) -> DomainResult<Response> {
    principal.require_admin()?;
    let report = jobs::run_expiry(&state.store, state.now_ms()).await?;
    record_report(&state, &principal, &key, "jobs.expiry", &(), report).await
}

/// Release every pending earn whose brand's return window has passed (points become
/// available, are issued and count for tiers); a second run releases nothing twice.
#[utoipa::path(post, path = "/jobs/pending-points", tag = "jobs",
    params(("Idempotency-Key" = String, Header, description = "Unique per run")),
    responses(
        (status = 200, body = crate::domain::purchases::ReleaseReport),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn jobs_pending_points(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
) -> DomainResult<Response> {
    principal.require_admin()?;
    let report = jobs::release_pending(&state).await?;
    record_report(&state, &principal, &key, "jobs.pending_points", &(), report).await
}

/// Record a renewal notice for every paid membership card inside its plan's notice window
/// (once per card and expiry: a second run records none).
#[utoipa::path(post, path = "/jobs/membership-renewals", tag = "jobs",
    params(("Idempotency-Key" = String, Header, description = "Unique per run")),
    responses(
        (status = 200, body = crate::domain::membership::NoticeReport),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn jobs_membership_renewals(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
) -> DomainResult<Response> {
    principal.require_admin()?;
    let report = jobs::membership_renewals(&state).await?;
    record_report(
        &state,
        &principal,
        &key,
        "jobs.membership_renewals",
        &(),
        report,
    )
    .await
}

/// Release every timed-out hold now.
#[utoipa::path(post, path = "/jobs/holds", tag = "jobs",
    params(("Idempotency-Key" = String, Header, description = "Unique per run")),
    responses(
        (status = 200, body = HoldTimeoutReport),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn jobs_holds(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
) -> DomainResult<Response> {
    principal.require_admin()?;
    let report = jobs::run_hold_timeouts(&state.store, state.now_ms()).await?;
    record_report(&state, &principal, &key, "jobs.holds", &(), report).await
}

/// Roll up the key figures of every local day that has ended (admins): each day closed once,
/// in its own transaction, oldest first; a call that runs out of time answers `more: true`
/// and the next resumes. The background jobs run this hourly; figures never depend on it,
/// only the KPI page's speed does.
#[utoipa::path(post, path = "/jobs/kpi-rollups", tag = "jobs",
    params(("Idempotency-Key" = String, Header, description = "Unique per run")),
    responses(
        (status = 200, body = RollupReport),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn jobs_kpi_rollups(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
) -> DomainResult<Response> {
    principal.require_admin()?;
    let report = kpi_rollups::run(
        &state.store,
        state.settings.points.utc_offset_minutes,
        state.now_ms(),
        Some(state.job_deadline()),
    )
    .await?;
    record_report(&state, &principal, &key, "jobs.kpi_rollups", &(), report).await
}
