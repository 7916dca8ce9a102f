//! The programme in numbers: one overview per window, coalition-wide for admins and over its
//! own purchases for a brand (see [`crate::workflows::overview`]).

use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::Principal;
use crate::foundation::error::{DomainError, DomainResult};
use crate::interfaces::api::problem::{ApiJson, ApiQuery, Problem};
use crate::interfaces::api::AppState;
use crate::workflows::overview::{self, Overview, MAX_WINDOW_DAYS};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(programme_overview))
}

/// Which window and scope.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OverviewParams {
    /// Days up to today (1–366, default 30).
    pub days: Option<i64>,
    /// Admins: only this brand. A brand key always sees its own brand and may name only it.
    pub brand_id: Option<String>,
}

/// Members, active and repurchase rates, orders and average order value, points outstanding
/// and expiring, per brand and per day (admins: the coalition or one brand; a brand: its own).
#[utoipa::path(get, path = "/programme/overview", tag = "programme", params(OverviewParams),
    responses(
        (status = 200, body = Overview),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn programme_overview(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<OverviewParams>,
) -> DomainResult<ApiJson<Overview>> {
    let brand = principal.brand_read_scope(
        params.brand_id.as_deref(),
        "a brand sees the overview of its own brand only",
        "the programme overview is for admins and brands",
    )?;
    let days = params.days.unwrap_or(30);
    if !(1..=MAX_WINDOW_DAYS).contains(&days) {
        return Err(DomainError::validation(format!(
            "days must be 1..={MAX_WINDOW_DAYS}"
        )));
    }
    Ok(ApiJson(
        overview::overview(&state, brand.as_deref(), days).await?,
    ))
}
