//! Journeys: create (an admin, or a brand for a journey funded only by itself), list, read with
//! counts, change status, dry-run, and run them now (see [`crate::workflows::journeys`]).

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
use crate::interfaces::api::idempotency::{self, idempotent_write, IdempotencyKey};
use crate::interfaces::api::problem::{ApiJson, ApiPath, ApiQuery, Problem};
use crate::interfaces::api::AppState;
use crate::workflows::journeys::{self, DryRun, JourneyPatch, JourneyView, NewJourney, RunReport};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(journeys_create, journeys_list))
        .routes(routes!(journeys_get, journeys_update))
        .routes(routes!(journeys_dry_run))
        .routes(routes!(jobs_journeys))
}

/// Admins, or a brand key of the journey's owner.
async fn require_owner(state: &AppState, principal: &Principal, id: &str) -> DomainResult<()> {
    check_path_id("journey", id)?;
    match principal.role {
        Role::Admin => Ok(()),
        Role::Brand => {
            let mut conn = state.store.read().acquire().await?;
            let owner = journeys::owner(&mut conn, id).await?;
            if owner.is_some() && owner == principal.brand_id {
                Ok(())
            } else {
                Err(DomainError::forbidden(
                    "a brand key reaches its own journeys only",
                ))
            }
        }
        Role::Counter | Role::Member => {
            Err(DomainError::forbidden("journeys are for admins and brands"))
        }
    }
}

/// Create a journey: a trigger, an optional audience, 1..=5 actions, caps and a window (an
/// admin; or a brand key when every action spends or tells that brand only).
#[utoipa::path(post, path = "/journeys", tag = "journeys",
    params(("Idempotency-Key" = String, Header, description = "Unique per operation")),
    request_body = NewJourney,
    responses(
        (status = 201, body = JourneyView),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "`validation_failed`, `invalid_tag`"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "unknown coupon template"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`coupon_template_retired`, `idempotency_key_reused`"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`unknown_brand`"),
    ))]
pub async fn journeys_create(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiJson(req): ApiJson<NewJourney>,
) -> DomainResult<Response> {
    // Authorization first: a brand may only spend (and tell) itself.
    let owner = match principal.role {
        Role::Admin => None,
        Role::Brand => {
            let own = principal.brand_id.clone().unwrap_or_default();
            let mut conn = state.store.read().acquire().await?;
            let funders = journeys::funders(&mut conn, &req.actions).await?;
            if funders.iter().any(|b| *b != own) {
                return Err(DomainError::forbidden(
                    "a brand key creates journeys funded and told to its own brand only",
                ));
            }
            Some(own)
        }
        Role::Counter | Role::Member => {
            return Err(DomainError::forbidden(
                "journeys are created by admins and brands",
            ))
        }
    };
    let audience = journeys::validate(&req)?;
    let ladder = {
        let mut conn = state.store.read().acquire().await?;
        crate::domain::tiers::load_ladder(&mut conn, &state.config.tiers).await?
    };
    if let Some(unknown) = audience
        .tiers
        .iter()
        .find(|t| !ladder.iter().any(|l| &l.code == *t))
    {
        return Err(DomainError::validation(format!(
            "unknown tier {unknown:?} in the audience"
        )));
    }
    idempotent_write(
        &state,
        &principal,
        &key,
        "journeys.create",
        &req,
        StatusCode::CREATED,
        async |tx| {
            journeys::create(
                &mut *tx,
                &req,
                &audience,
                owner.as_deref(),
                &principal.key_id,
                state.now_ms(),
            )
            .await
        },
    )
    .await
}

/// Journeys with their counts, newest first (admins: every one; a brand key: its own).
#[utoipa::path(get, path = "/journeys", tag = "journeys",
    responses(
        (status = 200, body = Vec<JourneyView>),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn journeys_list(
    State(state): State<AppState>,
    principal: Principal,
) -> DomainResult<ApiJson<Vec<JourneyView>>> {
    let brand = principal.brand_read_scope(
        None,
        "a brand sees its own journeys only",
        "journeys are for admins and brands",
    )?;
    let mut conn = state.store.read().acquire().await?;
    Ok(ApiJson(journeys::list(&mut conn, brand.as_deref()).await?))
}

/// A journey with its counts: touches, members, actions by kind (admins, the owning brand).
#[utoipa::path(get, path = "/journeys/{journey_id}", tag = "journeys",
    params(("journey_id" = String, Path, description = "Journey id")),
    responses(
        (status = 200, body = JourneyView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn journeys_get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(journey_id): ApiPath<String>,
) -> DomainResult<ApiJson<JourneyView>> {
    require_owner(&state, &principal, &journey_id).await?;
    let mut conn = state.store.read().acquire().await?;
    Ok(ApiJson(journeys::get(&mut conn, &journey_id).await?))
}

/// Change a journey's status: draft, active, paused or ended (final) (admins, the owning
/// brand).
#[utoipa::path(patch, path = "/journeys/{journey_id}", tag = "journeys",
    params(
        ("journey_id" = String, Path, description = "Journey id"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation"),
    ),
    request_body = JourneyPatch,
    responses(
        (status = 200, body = JourneyView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`journey_ended`, `idempotency_key_reused`"),
    ))]
pub async fn journeys_update(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(journey_id): ApiPath<String>,
    ApiJson(patch): ApiJson<JourneyPatch>,
) -> DomainResult<Response> {
    require_owner(&state, &principal, &journey_id).await?;
    let op = format!("journeys.update:{journey_id}");
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &patch,
        StatusCode::OK,
        async |tx| {
            journeys::set_status(
                &mut *tx,
                state.store.backend(),
                &journey_id,
                patch.status,
                state.now_ms(),
            )
            .await
        },
    )
    .await
}

/// How many members a run now would touch (the total cap applied), with a sample; writes
/// nothing (admins, the owning brand).
#[utoipa::path(post, path = "/journeys/{journey_id}/dry-run", tag = "journeys",
    params(
        ("journey_id" = String, Path, description = "Journey id"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation"),
    ),
    responses(
        (status = 200, body = DryRun),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn journeys_dry_run(
    State(state): State<AppState>,
    principal: Principal,
    _key: IdempotencyKey,
    ApiPath(journey_id): ApiPath<String>,
) -> DomainResult<ApiJson<DryRun>> {
    require_owner(&state, &principal, &journey_id).await?;
    // Nothing is written, so the key is checked but not recorded: a repeat answers afresh.
    Ok(ApiJson(
        journeys::dry_run(&state, &journey_id, state.now_ms()).await?,
    ))
}

/// Which journeys to run.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunParams {
    /// Only this journey (default: every active one inside its window).
    pub journey_id: Option<String>,
}

/// Run the journeys now (admins): batched and resumable; each member is acted on at most once
/// per occurrence, however often or concurrently this runs.
#[utoipa::path(post, path = "/jobs/journeys", tag = "jobs",
    params(
        RunParams,
        ("Idempotency-Key" = String, Header, description = "Unique per run"),
    ),
    responses(
        (status = 200, body = RunReport),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn jobs_journeys(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiQuery(params): ApiQuery<RunParams>,
) -> DomainResult<Response> {
    principal.require_admin()?;
    if let Some(id) = &params.journey_id {
        check_path_id("journey", id)?;
    }
    let report = journeys::run(
        &state,
        params.journey_id.as_deref(),
        state.now_ms(),
        Some(state.job_deadline()),
        |_, _| {},
    )
    .await?;
    idempotency::record_report(
        &state,
        &principal,
        &key,
        "jobs.journeys",
        &params.journey_id,
        report,
    )
    .await
}
