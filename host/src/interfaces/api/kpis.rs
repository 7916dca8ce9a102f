//! Key figures over a date range, as JSON or CSV (see [`crate::workflows::kpis`] for every
//! definition).

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::Principal;
use crate::foundation::error::{DomainError, DomainResult};
use crate::interfaces::api::problem::{ApiJson, ApiQuery, Problem};
use crate::interfaces::api::AppState;
use crate::workflows::kpis::{self, Kpis};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(kpis_get))
}

/// Which figures.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KpiParams {
    /// First local day, `YYYY-MM-DD` (default: 29 days before `to`).
    pub from: Option<String>,
    /// Last local day, included, `YYYY-MM-DD` (default: today).
    pub to: Option<String>,
    /// `day` (default; at most 366 days), `week` (at most 1,830 days) or `month` (at most
    /// 3,660 days).
    pub granularity: Option<String>,
    /// Admins: one brand's figures (default: the coalition). A brand key always gets its own
    /// brand's and may name only it.
    pub brand: Option<String>,
    /// `json` (default) or `csv` (the series, one line per bucket); `Accept: text/csv` asks
    /// for CSV too.
    pub format: Option<String>,
}

/// Key figures of a date range — sales, member share of sales, active rate (30/90 days),
/// repurchase rate, average order value, LTV, points issued, redeemed, expired and
/// outstanding with breakage, campaign and journey ROI, perk redemptions by funding and honouring brand —
/// with a series per day, week or month (admins: the coalition or any brand; a brand key: its
/// own brand). As CSV (`format=csv` or `Accept: text/csv`): the series with the header
/// `period,start_ms,orders,sales_cents,average_order_cents,active_members,points_issued,
/// points_redeemed,points_expired`.
#[utoipa::path(get, path = "/kpis", tag = "kpis",
    params(KpiParams),
    responses(
        (status = 200, description = "The figures (JSON), or the series (CSV)",
            content((Kpis = "application/json"), (String = "text/csv"))),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "`validation_failed`, `invalid_date`, `invalid_range`, \
                `range_too_long` (with `max_days`), `invalid_granularity`"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn kpis_get(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<KpiParams>,
) -> DomainResult<Response> {
    let brand = principal.brand_read_scope(
        params.brand.as_deref(),
        "a brand sees its own figures only",
        "key figures are for admins and brands",
    )?;
    let csv = match params.format.as_deref() {
        Some("csv") => true,
        Some("json") => false,
        Some(other) => {
            return Err(DomainError::validation(format!(
                "format {other:?}: expected json or csv"
            )))
        }
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/csv")),
    };
    let range = kpis::range(
        &state,
        params.from.as_deref(),
        params.to.as_deref(),
        params.granularity.as_deref(),
    )?;
    let figures = kpis::kpis(&state, brand.as_deref(), &range).await?;
    if csv {
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"kpis-{}-{}.csv\"",
                        range.from, range.to
                    ),
                ),
            ],
            kpis::series_csv(&figures),
        )
            .into_response());
    }
    Ok(ApiJson(figures).into_response())
}
