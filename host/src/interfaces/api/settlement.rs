//! Settlement between brands: run the settle job, list held events, parked events (list, see
//! why, retry), periods, close, statements (JSON or CSV), netting, lines and reconciliation.
//!
//! Access: admins see everything; a brand key sees only its own statement, the netting pairs,
//! lines and parked events it is a party to. Running and closing are admin writes; both are idempotent by
//! construction (settling only touches pending events; closing a closed period returns it), so
//! they run first in their own transactions and the `Idempotency-Key` then records the result,
//! like the job endpoints.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::{Principal, Role};
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::ids::check_path_id;
use crate::interfaces::api::idempotency::idempotent_write;
use crate::interfaces::api::idempotency::{record_report, IdempotencyKey};
use crate::interfaces::api::problem::{ApiJson, ApiPath, ApiQuery, Problem};
use crate::interfaces::api::AppState;
use crate::workflows::settlement::export::{self, LinesPage, DEFAULT_LINES_PAGE};
use crate::workflows::settlement::job::{self, RunReport};
use crate::workflows::settlement::parking::{
    self, ParkedEvent, ParkedFilter, ParkedPage, RetryParked, RetryReport, DEFAULT_PARKED_PAGE,
};
use crate::workflows::settlement::periods::{
    self, CloseRequest, Netting, Period, PeriodId, Statement,
};
use crate::workflows::settlement::reconcile::{self, Reconciliation};

/// Most held or pending events one listing returns.
const MAX_EVENTS_PAGE: i64 = 500;
/// Share of the request timeout a request may spend settling events (the rest answers).
const SETTLE_BUDGET_PERCENT: u64 = 50;

/// When a request stops starting new settlements.
fn settle_deadline(state: &AppState) -> std::time::Instant {
    let budget_ms = state.config.limits.request_timeout_ms * SETTLE_BUDGET_PERCENT / 100;
    std::time::Instant::now() + std::time::Duration::from_millis(budget_ms)
}

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(settlement_run))
        .routes(routes!(settlement_events_list))
        .routes(routes!(settlement_parked_list))
        .routes(routes!(settlement_parked_get))
        .routes(routes!(settlement_parked_retry))
        .routes(routes!(settlement_periods_list))
        .routes(routes!(settlement_periods_get))
        .routes(routes!(settlement_periods_close))
        .routes(routes!(settlement_statements_list))
        .routes(routes!(settlement_statements_get))
        .routes(routes!(settlement_netting_list))
        .routes(routes!(settlement_lines_list))
        .routes(routes!(settlement_reconciliation_get))
}

fn actor(principal: &Principal) -> String {
    format!("{}:{}", principal.role.as_str(), principal.key_id)
}

/// Admins pass; a brand key passes for its own brand only.
fn require_party(principal: &Principal, party: &str) -> DomainResult<()> {
    match principal.role {
        Role::Admin => Ok(()),
        Role::Brand if principal.brand_id.as_deref() == Some(party) => Ok(()),
        _ => Err(DomainError::forbidden(
            "a brand sees only its own statements and lines; admins see all",
        )),
    }
}

/// Admins: `None` (everything); brand keys: their brand; others are refused.
fn visible_party(principal: &Principal) -> DomainResult<Option<String>> {
    match principal.role {
        Role::Admin => Ok(None),
        Role::Brand => principal
            .brand_id
            .clone()
            .map(Some)
            .ok_or_else(|| DomainError::forbidden("brand key without a brand")),
        _ => Err(DomainError::forbidden(
            "settlement is visible to admins and brand keys",
        )),
    }
}

async fn period(state: &AppState, id: &str) -> DomainResult<Period> {
    let id = PeriodId::parse(id)?;
    periods::get(state.store.read(), &id.to_string()).await
}

/// Settle pending and held events now (admin), for up to half the request timeout; `more`
/// says whether events are left for the next run.
#[utoipa::path(post, path = "/settlement/run", tag = "settlement",
    params(("Idempotency-Key" = String, Header, description = "Unique per run")),
    responses(
        (status = 200, body = RunReport),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn settlement_run(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
) -> DomainResult<Response> {
    principal.require_admin()?;
    let report = job::run_until(&state, state.now_ms(), Some(settle_deadline(&state))).await?;
    record_report(&state, &principal, &key, "settlement.run", &(), report).await
}

/// Which events to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsParams {
    /// `held` (default) or `pending`.
    pub status: Option<String>,
}

/// A settle event that is not settled yet.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct UnsettledEvent {
    /// Event id.
    pub id: String,
    /// Kind.
    pub kind: String,
    /// Brand.
    pub brand_id: String,
    /// Governing plugin named by the event.
    pub plugin: Option<String>,
    /// Points.
    pub points: i64,
    /// Value, cents.
    pub value_cents: i64,
    /// When, Unix ms.
    pub occurred_at: i64,
    /// `pending` or `held`.
    pub status: String,
    /// Settle attempts so far.
    pub attempts: i64,
    /// Why it is held.
    pub held_reason: Option<String>,
}

/// Events that could not be settled (held, with the reason) or wait for the job (admin).
#[utoipa::path(get, path = "/settlement/events", tag = "settlement",
    params(EventsParams),
    responses(
        (status = 200, body = Vec<UnsettledEvent>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn settlement_events_list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<EventsParams>,
) -> DomainResult<ApiJson<Vec<UnsettledEvent>>> {
    principal.require_admin()?;
    let status = params.status.unwrap_or_else(|| "held".into());
    if status != "held" && status != "pending" {
        return Err(DomainError::validation("status must be held or pending"));
    }
    let events: Vec<UnsettledEvent> = sqlx::query_as(
        "SELECT id, kind, brand_id, plugin, points, value_cents, occurred_at, status, attempts,
                held_reason
         FROM settle_events WHERE status = $1 ORDER BY occurred_at, id LIMIT $2",
    )
    .bind(&status)
    .bind(MAX_EVENTS_PAGE)
    .fetch_all(state.store.read())
    .await?;
    Ok(ApiJson(events))
}

/// Filters and paging of `GET /settlement/parked`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ParkedParams {
    /// Only events this brand is a party to (where it happened, who funds or honours it); a
    /// brand key always gets its own.
    pub brand_id: Option<String>,
    /// Only events this plugin failed on.
    pub plugin: Option<String>,
    /// `true`: only events out of automatic retries, waiting for an admin.
    pub waiting_for_admin: Option<bool>,
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Parked settle events: events a plugin failed on, with the reason (plugin, version, problem
/// code and message), the failures so far and the next retry time, oldest first (admins: all;
/// a brand key: those it is a party to).
#[utoipa::path(get, path = "/settlement/parked", tag = "settlement",
    params(ParkedParams),
    responses(
        (status = 200, body = ParkedPage),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "`invalid_query`, `invalid_path` (a malformed brand, plugin or cursor)"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn settlement_parked_list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<ParkedParams>,
) -> DomainResult<ApiJson<ParkedPage>> {
    let party = match visible_party(&principal)? {
        Some(own) => {
            if params.brand_id.as_deref().is_some_and(|b| b != own) {
                return Err(DomainError::forbidden(
                    "a brand sees only the parked events it is a party to",
                ));
            }
            Some(own)
        }
        None => params.brand_id.clone(),
    };
    for (kind, value) in [
        ("brand", party.as_deref()),
        ("plugin", params.plugin.as_deref()),
        ("event", params.cursor.as_deref()),
    ] {
        if let Some(value) = value {
            check_path_id(kind, value)?;
        }
    }
    let filter = ParkedFilter {
        party,
        plugin: params.plugin,
        waiting_for_admin: params.waiting_for_admin.unwrap_or(false),
    };
    Ok(ApiJson(
        parking::list(
            state.store.read(),
            &filter,
            params.cursor.as_deref().unwrap_or(""),
            params.limit.unwrap_or(DEFAULT_PARKED_PAGE),
        )
        .await?,
    ))
}

/// One parked settle event: why its plugin failed on it and when it is retried (admins; a
/// brand key for an event it is a party to). 404 when the event is not parked.
#[utoipa::path(get, path = "/settlement/parked/{event_id}", tag = "settlement",
    params(("event_id" = String, Path, description = "Settle event id")),
    responses(
        (status = 200, body = ParkedEvent),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn settlement_parked_get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(event_id): ApiPath<String>,
) -> DomainResult<ApiJson<ParkedEvent>> {
    let party = visible_party(&principal)?;
    check_path_id("event", &event_id)?;
    let not_found = || DomainError::not_found("parked settle event", &event_id);
    let parked = parking::get(state.store.read(), &event_id)
        .await?
        .ok_or_else(not_found)?;
    // A brand learns nothing of events it is not a party to, not even that they exist.
    if let Some(own) = party.as_deref() {
        let parties = [
            &parked.brand_id,
            &parked.funding_brand,
            &parked.honouring_brand,
        ];
        if !parties.iter().any(|p| p.as_str() == own) {
            return Err(not_found());
        }
    }
    Ok(ApiJson(parked))
}

/// Retry parked settle events after a fix (admin; audited, one `settlement.retry` entry per
/// event): the named events, or a plugin's (up to 500 per request), are due at once with their
/// backoff started over, and the next settlement run (`POST /settlement/run`, or the periodic
/// job) retries them. A new version of the failed plugin needs no retry: it is tried at once.
#[utoipa::path(post, path = "/settlement/parked/retry", tag = "settlement",
    params(("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it")),
    request_body = RetryParked,
    responses(
        (status = 200, body = RetryReport),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`idempotency_key_reused`, `idempotency_key_in_flight`"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`settle_event_not_parked` (with `event_ids`: the named events that are \
                not parked, or not by `plugin`); nothing is released"),
    ))]
pub async fn settlement_parked_retry(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiJson(req): ApiJson<RetryParked>,
) -> DomainResult<Response> {
    principal.require_admin()?;
    idempotent_write(
        &state,
        &principal,
        &key,
        "settlement.parked.retry",
        &req,
        StatusCode::OK,
        async |tx| {
            let report = parking::release(
                &mut *tx,
                state.store.backend(),
                &req,
                &actor(&principal),
                state.now_ms(),
            )
            .await?;
            Ok(report)
        },
    )
    .await
}

/// Settlement periods, newest first (admins and brands).
#[utoipa::path(get, path = "/settlement/periods", tag = "settlement",
    responses(
        (status = 200, body = Vec<Period>),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn settlement_periods_list(
    State(state): State<AppState>,
    principal: Principal,
) -> DomainResult<ApiJson<Vec<Period>>> {
    visible_party(&principal)?;
    Ok(ApiJson(periods::list(state.store.read()).await?))
}

/// One period (admins and brands).
#[utoipa::path(get, path = "/settlement/periods/{period_id}", tag = "settlement",
    params(("period_id" = String, Path, description = "The local month, YYYY-MM")),
    responses(
        (status = 200, body = Period),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn settlement_periods_get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(period_id): ApiPath<String>,
) -> DomainResult<ApiJson<Period>> {
    visible_party(&principal)?;
    Ok(ApiJson(period(&state, &period_id).await?))
}

/// How to close.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseBody {
    /// Close even if events of the month are held by a failing plugin; they settle later, as
    /// adjustments in the next open period.
    #[serde(default)]
    pub carry_held: bool,
    /// Why, for the audit log (up to 500 bytes).
    #[serde(default)]
    pub reason: String,
}

/// Close a period (admin): settle what is pending, freeze its lines, net them per pair and
/// write every party's statement; audited. Closing a closed period returns it.
#[utoipa::path(post, path = "/settlement/periods/{period_id}/close", tag = "settlement",
    params(
        ("period_id" = String, Path, description = "The local month, YYYY-MM"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation"),
    ),
    request_body = CloseBody,
    responses(
        (status = 200, body = Period),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`period_not_ended`, `period_has_unsettled_events` (with `event_ids`), \
                `settlement_catching_up`, `earlier_period_open`"),
    ))]
pub async fn settlement_periods_close(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(period_id): ApiPath<String>,
    ApiJson(body): ApiJson<CloseBody>,
) -> DomainResult<Response> {
    principal.require_admin()?;
    let id = PeriodId::parse(&period_id)?;
    let actor = actor(&principal);
    let closed = periods::close(
        &state,
        &CloseRequest {
            period: id.clone(),
            carry_held: body.carry_held,
            actor: &actor,
            reason: &body.reason,
            settle_deadline: Some(settle_deadline(&state)),
        },
        &|_| {},
    )
    .await?;
    let op = format!("settlement.close:{id}");
    record_report(&state, &principal, &key, &op, &body, closed).await
}

/// Format of an export.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FormatParams {
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

fn wants_csv(format: Option<&str>) -> DomainResult<bool> {
    match format {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(other) => Err(DomainError::validation(format!(
            "format {other:?}: expected json or csv"
        ))),
    }
}

fn csv_response(body: String, name: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.csv\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// Statements of a period: final once closed, live drafts before (admins: every party; a brand:
/// its own).
#[utoipa::path(get, path = "/settlement/periods/{period_id}/statements", tag = "settlement",
    params(("period_id" = String, Path, description = "The local month, YYYY-MM"), FormatParams),
    responses(
        (status = 200, body = Vec<Statement>, description = "JSON, or CSV with `?format=csv`"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn settlement_statements_list(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(period_id): ApiPath<String>,
    ApiQuery(params): ApiQuery<FormatParams>,
) -> DomainResult<Response> {
    let party = visible_party(&principal)?;
    let csv = wants_csv(params.format.as_deref())?;
    let period = period(&state, &period_id).await?;
    let (statements, _) = periods::statements(&state, &period, party.as_deref()).await?;
    if csv {
        let name = format!("statements-{}", period.id);
        return Ok(csv_response(export::statements_csv(&statements)?, &name));
    }
    Ok(ApiJson(statements).into_response())
}

/// One party's statement (admins, or that brand's key).
#[utoipa::path(get, path = "/settlement/periods/{period_id}/statements/{party}", tag = "settlement",
    params(
        ("period_id" = String, Path, description = "The local month, YYYY-MM"),
        ("party" = String, Path, description = "Brand id, or `platform`"),
        FormatParams,
    ),
    responses(
        (status = 200, body = Statement, description = "JSON, or CSV with `?format=csv`"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn settlement_statements_get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((period_id, party)): ApiPath<(String, String)>,
    ApiQuery(params): ApiQuery<FormatParams>,
) -> DomainResult<Response> {
    check_path_id("party", &party)?;
    require_party(&principal, &party)?;
    let csv = wants_csv(params.format.as_deref())?;
    let period = period(&state, &period_id).await?;
    let (statements, _) = periods::statements(&state, &period, Some(&party)).await?;
    let statement = statements.into_iter().next().unwrap_or_else(|| Statement {
        period_id: period.id.clone(),
        party: party.clone(),
        is_final: period.status == "closed",
        ..Statement::default()
    });
    if csv {
        let name = format!("statement-{}-{party}", period.id);
        return Ok(csv_response(export::statements_csv(&[statement])?, &name));
    }
    Ok(ApiJson(statement).into_response())
}

/// Bilateral netting of a period (admins: every pair; a brand: its pairs).
#[utoipa::path(get, path = "/settlement/periods/{period_id}/netting", tag = "settlement",
    params(("period_id" = String, Path, description = "The local month, YYYY-MM")),
    responses(
        (status = 200, body = Vec<Netting>),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn settlement_netting_list(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(period_id): ApiPath<String>,
) -> DomainResult<ApiJson<Vec<Netting>>> {
    let party = visible_party(&principal)?;
    let period = period(&state, &period_id).await?;
    let (_, netting) = periods::statements(&state, &period, None).await?;
    Ok(ApiJson(
        netting
            .into_iter()
            .filter(|n| {
                party
                    .as_deref()
                    .is_none_or(|p| n.party_a == p || n.party_b == p)
            })
            .collect(),
    ))
}

/// Paging through lines.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinesParams {
    /// Only lines this party pays or receives (a brand key always gets its own).
    pub party: Option<String>,
    /// The previous page's `next_after`.
    pub after: Option<String>,
    /// Page size, 1..=10000 (default 1000).
    pub limit: Option<i64>,
    /// `json` (default) or `csv` (the next cursor is then in the `x-next-after` header).
    pub format: Option<String>,
}

/// A period's lines, by id, paged (admins: all; a brand: the lines it is a party to).
#[utoipa::path(get, path = "/settlement/periods/{period_id}/lines", tag = "settlement",
    params(("period_id" = String, Path, description = "The local month, YYYY-MM"), LinesParams),
    responses(
        (status = 200, body = LinesPage, description = "JSON, or CSV with `?format=csv`"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn settlement_lines_list(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(period_id): ApiPath<String>,
    ApiQuery(params): ApiQuery<LinesParams>,
) -> DomainResult<Response> {
    let party = match visible_party(&principal)? {
        Some(own) => {
            if params.party.as_deref().is_some_and(|p| p != own) {
                return Err(DomainError::forbidden("a brand sees only its own lines"));
            }
            Some(own)
        }
        None => params.party.clone(),
    };
    if let Some(p) = &party {
        check_path_id("party", p)?;
    }
    // An empty cursor is the first page.
    let after = params.after.as_deref().unwrap_or("");
    if !after.is_empty() {
        check_path_id("line", after)?;
    }
    let csv = wants_csv(params.format.as_deref())?;
    let period = period(&state, &period_id).await?;
    let page = export::lines_page(
        state.store.read(),
        &period.id,
        party.as_deref(),
        after,
        params.limit.unwrap_or(DEFAULT_LINES_PAGE),
    )
    .await?;
    if csv {
        let mut response = csv_response(
            export::lines_csv(&page.lines, true)?,
            &format!("lines-{}", period.id),
        );
        if let Some(next) = page
            .next_after
            .as_deref()
            .and_then(|n| n.parse::<axum::http::HeaderValue>().ok())
        {
            response.headers_mut().insert("x-next-after", next);
        }
        return Ok(response);
    }
    Ok(ApiJson(page).into_response())
}

/// Reconcile a period (admin): every check with pass/fail and the offending ids.
#[utoipa::path(get, path = "/settlement/periods/{period_id}/reconciliation", tag = "settlement",
    params(("period_id" = String, Path, description = "The local month, YYYY-MM")),
    responses(
        (status = 200, body = Reconciliation),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn settlement_reconciliation_get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(period_id): ApiPath<String>,
) -> DomainResult<ApiJson<Reconciliation>> {
    principal.require_admin()?;
    let id = PeriodId::parse(&period_id)?;
    Ok(ApiJson(
        reconcile::reconcile(&state, &id.to_string()).await?,
    ))
}
