//! Liveness, readiness and metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::AppState;
use crate::error::{ApiError, ApiJson};

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
    responses((status = 200, body = Health), (status = 503, body = crate::error::Problem,
        content_type = "application/problem+json", description = "`not_ready`")))]
pub async fn health_ready(State(state): State<AppState>) -> Result<ApiJson<Health>, ApiError> {
    state.store.ping().await.map_err(|err| {
        ApiError::unavailable("not_ready", format!("database unreachable: {err}"))
    })?;
    Ok(ApiJson(Health { status: "ok" }))
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "health", security(()),
    responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn health_metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
