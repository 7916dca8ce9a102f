//! RFM segments: the distribution of recency, frequency and monetary scores, and members'
//! scores page by page (see [`crate::domain::rfm`]).

use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::Principal;
use crate::domain::rfm::{self, RfmDistribution, DEFAULT_PAGE, MAX_PAGE};
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::ids::check_path_id;
use crate::interfaces::api::problem::{ApiJson, ApiQuery, Problem};
use crate::interfaces::api::AppState;

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(segments_rfm))
}

/// Which scores.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RfmParams {
    /// Admins: scores over one brand's purchases (default: the coalition's). A brand key
    /// always gets its own brand's and may name only it.
    pub brand: Option<String>,
    /// `true`: add one page of members with their scores, by member id.
    pub members: Option<bool>,
    /// The page starts after this member id.
    pub after: Option<String>,
    /// Page size, 1..=500 (default 100).
    pub limit: Option<i64>,
}

/// RFM quintiles: members per recency, frequency and monetary score (1..=5, 5 = the most
/// recent, frequent, highest-spending fifth) and per combination, and on request a page of
/// members with their scores (admins: the coalition or any brand; a brand key: its own).
#[utoipa::path(get, path = "/segments/rfm", tag = "segments",
    params(RfmParams),
    responses(
        (status = 200, body = RfmDistribution),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn segments_rfm(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<RfmParams>,
) -> DomainResult<ApiJson<RfmDistribution>> {
    let brand = principal.brand_read_scope(
        params.brand.as_deref(),
        "a brand sees its own segments only",
        "segments are for admins and brands",
    )?;
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(DomainError::validation(format!(
            "limit must be 1..={MAX_PAGE}"
        )));
    }
    if let Some(after) = &params.after {
        check_path_id("member", after)?;
    }
    let page = params
        .members
        .unwrap_or(false)
        .then_some((params.after.as_deref(), limit));
    Ok(ApiJson(
        rfm::distribution(state.store.read(), brand.as_deref(), page).await?,
    ))
}
