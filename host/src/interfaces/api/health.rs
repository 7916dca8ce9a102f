//! Liveness, readiness and metrics.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::Principal;
use crate::foundation::error::{DomainError, DomainResult};
use crate::interfaces::api::problem::{ApiJson, Problem};
use crate::interfaces::api::AppState;

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health_live))
        .routes(routes!(health_ready))
        .routes(routes!(health_metrics))
}

/// Health status.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` when healthy.
    pub status: &'static str,
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, body = Health)))]
pub async fn health_live() -> ApiJson<Health> {
    ApiJson(Health { status: "ok" })
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses((status = 200, body = Health), (status = 503, body = crate::interfaces::api::problem::Problem,
        content_type = "application/problem+json", description = "`not_ready`")))]
pub async fn health_ready(State(state): State<AppState>) -> Result<ApiJson<Health>, DomainError> {
    state.store.ping().await.map_err(|err| {
        DomainError::unavailable("not_ready", format!("database unreachable: {err}"))
    })?;
    Ok(ApiJson(Health { status: "ok" }))
}

/// Prometheus metrics in the text exposition format. They name routes, plugins and brands, so
/// they answer an admin API key or the configured metrics token (`metrics.bearer_token`), which
/// is what Prometheus is given.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses(
        (status = 200, content_type = "text/plain", body = String),
        (status = 401, body = Problem, content_type = "application/problem+json",
            description = "no key, or neither an API key nor the metrics token"),
        (status = 403, body = Problem, content_type = "application/problem+json",
            description = "an API key that is not an admin key"),
    ))]
pub async fn health_metrics(
    State(state): State<AppState>,
    request: Request,
) -> DomainResult<Response> {
    let (mut parts, _) = request.into_parts();
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !state.config.metrics.token_matches(authorization) {
        Principal::from_request_parts(&mut parts, &state)
            .await?
            .require_admin()?;
    }
    Ok(render_metrics(&state))
}

/// `/metrics` on the separate metrics listener (`metrics.listen`): the token if one is set,
/// nothing else otherwise (that listener is meant for a private interface).
pub async fn listener_metrics(
    State(state): State<AppState>,
    request: Request,
) -> DomainResult<Response> {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !state.config.metrics.bearer_token.is_empty()
        && !state.config.metrics.token_matches(authorization)
    {
        return Err(DomainError::unauthorized(
            "unauthenticated",
            "send the metrics token as `Authorization: Bearer <token>`",
        ));
    }
    Ok(render_metrics(&state))
}

fn render_metrics(state: &AppState) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
