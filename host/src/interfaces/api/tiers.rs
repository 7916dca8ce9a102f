//! Tiers: the ladder (read by anyone authenticated, replaced by an admin), a member's tier view,
//! and an on-demand re-evaluation by an admin.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::Principal;
use crate::domain::tiers::{self, EvaluationReport, TierBasis, TierLevel, TierView};
use crate::foundation::error::DomainResult;
use crate::foundation::ids::check_path_id;
use crate::interfaces::api::idempotency::{self, Claim, IdempotencyKey};
use crate::interfaces::api::idempotency::{finish_write, idempotent_write};
use crate::interfaces::api::problem::{ApiJson, ApiPath, Problem};
use crate::interfaces::api::AppState;

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(tiers_get, tiers_replace))
        .routes(routes!(tiers_evaluate))
        .routes(routes!(tiers_member))
}

/// The ladder in force.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Ladder {
    /// What the qualifying total counts (from the configuration).
    pub basis: TierBasis,
    /// Rolling window, days (from the configuration).
    pub window_days: i64,
    /// Tiers, lowest first; rank = position.
    pub tiers: Vec<TierLevel>,
}

/// A replacement ladder.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LadderRequest {
    /// Tiers, lowest first: the first has threshold 0, thresholds rise strictly.
    pub tiers: Vec<TierLevel>,
}

async fn ladder(state: &AppState) -> DomainResult<Ladder> {
    let mut conn = state.store.read().acquire().await?;
    Ok(Ladder {
        basis: state.config.tiers.basis,
        window_days: state.config.tiers.window_days,
        tiers: tiers::load_ladder(&mut conn, &state.config.tiers).await?,
    })
}

/// The tier ladder.
#[utoipa::path(get, path = "/tiers", tag = "tiers",
    responses(
        (status = 200, body = Ladder),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn tiers_get(
    State(state): State<AppState>,
    _principal: Principal,
) -> DomainResult<ApiJson<Ladder>> {
    Ok(ApiJson(ladder(&state).await?))
}

/// Replace the ladder (admin). Members keep their tier code until their next change.
#[utoipa::path(put, path = "/tiers", tag = "tiers",
    params(("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it")),
    request_body = LadderRequest,
    responses(
        (status = 200, body = Ladder),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn tiers_replace(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiJson(req): ApiJson<LadderRequest>,
) -> DomainResult<Response> {
    principal.require_admin()?;
    idempotent_write(
        &state,
        &principal,
        &key,
        "tiers.replace",
        &req,
        StatusCode::OK,
        async |tx| {
            tiers::replace_ladder(&mut *tx, &req.tiers, state.now_ms()).await?;
            let body = Ladder {
                basis: state.config.tiers.basis,
                window_days: state.config.tiers.window_days,
                tiers: req.tiers.clone(),
            };
            Ok(body)
        },
    )
    .await
}

/// Re-evaluate every member now (admin): up to the tier reached, or down one step if below
/// retention. The idempotency key names the evaluation: a retry (even after a crash) resumes it
/// and never moves anyone twice.
#[utoipa::path(post, path = "/tiers/evaluate", tag = "tiers",
    params(("Idempotency-Key" = String, Header, description = "Names this evaluation")),
    responses(
        (status = 200, body = EvaluationReport),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn tiers_evaluate(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
) -> DomainResult<Response> {
    principal.require_admin()?;
    let now = state.now_ms();
    let scope = principal.idempotency_scope();
    let run_key = format!("admin:{scope}:{}", key.0);
    // The evaluation spans many transactions, so its row (keyed by the idempotency key) is
    // what makes it run once; the key's stored response is written when it finishes.
    let (id, finished, _) = tiers::open_evaluation(&state.store, "admin", &run_key, now).await?;
    let report = match finished {
        Some(report) => report,
        None => {
            tiers::run_evaluation(
                &state.store,
                &state.config.tiers,
                &id,
                "admin",
                &run_key,
                now,
            )
            .await?
        }
    };
    let hash = idempotency::request_hash("tiers.evaluate", &());
    let mut tx = state.store.begin().await?;
    if let Claim::Replay { status, body } =
        idempotency::claim(&mut tx, &scope, &key.0, &hash, now).await?
    {
        return Ok(idempotency::replay_response(status, body));
    }
    finish_write(tx, &principal, &key, StatusCode::OK, report).await
}

/// A member's tier: current tier, qualifying total in the window, progress to the next tier,
/// next evaluation and any downgrade warning.
#[utoipa::path(get, path = "/members/{member_id}/tier", tag = "tiers",
    params(("member_id" = String, Path, description = "Member id")),
    responses(
        (status = 200, body = TierView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn tiers_member(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(member_id): ApiPath<String>,
) -> DomainResult<ApiJson<TierView>> {
    check_path_id("member", &member_id)?;
    principal.require_member_read(&member_id)?;
    let view = tiers::member_view(
        state.store.read(),
        &state.config.tiers,
        state.config.points.utc_offset_minutes,
        &member_id,
        state.now_ms(),
    )
    .await?;
    Ok(ApiJson(view))
}
