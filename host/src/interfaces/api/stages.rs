//! Member lifecycle stages: the rules (admins write), the stage job, a member's stage with its
//! history, counts per stage and the churn-risk list (see [`crate::domain::stages`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::{Principal, Role};
use crate::domain::stages::{
    self, ChurnRiskPage, MemberStageView, StageCounts, StageJobReport, StageRules,
};
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::ids::check_path_id;
use crate::interfaces::api::idempotency::IdempotencyKey;
use crate::interfaces::api::idempotency::{self, idempotent_write};
use crate::interfaces::api::problem::{ApiJson, ApiPath, ApiQuery, Problem};
use crate::interfaces::api::AppState;

/// Default page of the churn-risk list.
const DEFAULT_CHURN_PAGE: i64 = 50;

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stages_rules_get, stages_rules_put))
        .routes(routes!(stages_counts))
        .routes(routes!(stages_churn_risk))
        .routes(routes!(stages_member_get))
        .routes(routes!(jobs_member_stages))
}

/// The stage rules in force (admins and brand keys).
#[utoipa::path(get, path = "/stages/rules", tag = "stages",
    responses(
        (status = 200, body = StageRules),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn stages_rules_get(
    State(state): State<AppState>,
    principal: Principal,
) -> DomainResult<ApiJson<StageRules>> {
    if !matches!(principal.role, Role::Admin | Role::Brand) {
        return Err(DomainError::forbidden(
            "the stage rules are for admins and brands",
        ));
    }
    let mut conn = state.store.read().acquire().await?;
    Ok(ApiJson(stages::rules(&mut conn).await?))
}

/// Replace the stage rules (admins); the next run of the stage job applies them.
#[utoipa::path(put, path = "/stages/rules", tag = "stages",
    params(("Idempotency-Key" = String, Header, description = "Unique per operation")),
    request_body = StageRules,
    responses(
        (status = 200, body = StageRules),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "`validation_failed`, `invalid_stage_rules`"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`idempotency_key_reused`"),
    ))]
pub async fn stages_rules_put(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiJson(rules): ApiJson<StageRules>,
) -> DomainResult<Response> {
    principal.require_admin()?;
    rules.validate()?;
    idempotent_write(
        &state,
        &principal,
        &key,
        "stages.rules_put",
        &rules,
        StatusCode::OK,
        async |tx| stages::set_rules(&mut *tx, &rules, state.now_ms()).await,
    )
    .await
}

/// Members per stage, as of the stage job's last run (admins).
#[utoipa::path(get, path = "/stages/counts", tag = "stages",
    responses(
        (status = 200, body = StageCounts),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn stages_counts(
    State(state): State<AppState>,
    principal: Principal,
) -> DomainResult<ApiJson<StageCounts>> {
    principal.require_admin()?;
    let mut conn = state.store.read().acquire().await?;
    Ok(ApiJson(stages::counts(&mut conn).await?))
}

/// A page of the churn-risk list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChurnRiskParams {
    /// Page size, 1..=200 (default 50).
    pub limit: Option<i64>,
    /// Members to skip (default 0).
    pub offset: Option<i64>,
}

/// Members silent now, highest spend first, then the most recent purchase (admins: the list
/// spans every brand's purchases).
#[utoipa::path(get, path = "/stages/churn-risk", tag = "stages",
    params(ChurnRiskParams),
    responses(
        (status = 200, body = ChurnRiskPage),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "`invalid_page`"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn stages_churn_risk(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<ChurnRiskParams>,
) -> DomainResult<ApiJson<ChurnRiskPage>> {
    principal.require_admin()?;
    let mut conn = state.store.read().acquire().await?;
    Ok(ApiJson(
        stages::churn_risk(
            &mut conn,
            params.limit.unwrap_or(DEFAULT_CHURN_PAGE),
            params.offset.unwrap_or(0),
        )
        .await?,
    ))
}

/// A member's lifecycle stage and its history, newest first (admins, brand and counter keys,
/// the member).
#[utoipa::path(get, path = "/members/{member_id}/stage", tag = "stages",
    params(("member_id" = String, Path, description = "Member id")),
    responses(
        (status = 200, body = MemberStageView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn stages_member_get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(member_id): ApiPath<String>,
) -> DomainResult<ApiJson<MemberStageView>> {
    check_path_id("member", &member_id)?;
    principal.require_member_read(&member_id)?;
    let mut conn = state.store.read().acquire().await?;
    Ok(ApiJson(stages::member_view(&mut conn, &member_id).await?))
}

/// Compute every member's lifecycle stage now (admins): batched, resumable (a call that runs
/// out of time answers `finished: false`; the next call resumes), each change recorded once.
#[utoipa::path(post, path = "/jobs/member-stages", tag = "jobs",
    params(("Idempotency-Key" = String, Header, description = "Unique per run")),
    responses(
        (status = 200, body = StageJobReport),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn jobs_member_stages(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
) -> DomainResult<Response> {
    principal.require_admin()?;
    let report = stages::run(&state.store, state.now_ms(), Some(state.job_deadline())).await?;
    // The job is idempotent by construction; the key records its report (as `/jobs/…` do).
    idempotency::record_report(&state, &principal, &key, "jobs.member_stages", &(), report).await
}
