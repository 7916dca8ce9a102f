//! Coupon campaigns: create, issue to a segment under a hard cap, and read the counts (see
//! [`crate::domain::campaigns`] for the rules).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::Principal;
use crate::domain::campaigns::{self, CampaignView, IssueReport, NewCampaign};
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::ids::check_path_id;
use crate::interfaces::api::idempotency::idempotent_write;
use crate::interfaces::api::idempotency::{self, Claim, IdempotencyKey};
use crate::interfaces::api::problem::{ApiJson, ApiPath, Problem};
use crate::interfaces::api::AppState;

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(campaigns_create))
        .routes(routes!(campaigns_get))
        .routes(routes!(campaigns_issue))
}

/// Create a campaign that issues one coupon of a template to each member of a segment, up to
/// a hard cap (an admin, or a brand key of the template's funding brand).
#[utoipa::path(post, path = "/campaigns", tag = "campaigns",
    params(
        ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it"),
    ),
    request_body = NewCampaign,
    responses(
        (status = 201, body = CampaignView),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "`validation_failed`, `invalid_tag`"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "unknown coupon template"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`coupon_template_retired`, `idempotency_key_reused`"),
    ))]
pub async fn campaigns_create(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiJson(req): ApiJson<NewCampaign>,
) -> DomainResult<Response> {
    // Authorization first: only the template's funding brand (or an admin) may, whatever the
    // rest of the request says.
    check_path_id("coupon template", &req.template_id)?;
    {
        let mut conn = state.store.read().acquire().await?;
        let (funding_brand, _) = campaigns::template_owner(&mut conn, &req.template_id).await?;
        principal.require_brand(&funding_brand)?;
    }
    let segment = campaigns::validate(&req)?;
    idempotent_write(
        &state,
        &principal,
        &key,
        "campaigns.create",
        &req,
        StatusCode::CREATED,
        async |tx| {
            let (funding_brand, status) =
                campaigns::template_owner(&mut *tx, &req.template_id).await?;
            principal.require_brand(&funding_brand)?;
            if status != "active" {
                return Err(DomainError::conflict(
                    "coupon_template_retired",
                    format!("coupon template {:?} is retired", req.template_id),
                ));
            }
            let ladder = crate::domain::tiers::load_ladder(&mut *tx, &state.config.tiers).await?;
            if let Some(unknown) = segment
                .tiers
                .iter()
                .find(|t| !ladder.iter().any(|l| &l.code == *t))
            {
                return Err(DomainError::validation(format!(
                    "segment tier {unknown:?} is not on the tier ladder"
                )));
            }
            let now_ms = state.now_ms();
            let id = campaigns::create(
                &mut *tx,
                &req,
                &segment,
                &funding_brand,
                &principal.key_id,
                now_ms,
            )
            .await?;
            let view = campaigns::get(&mut *tx, &id).await?;
            Ok(view)
        },
    )
    .await
}

/// A campaign with issued / cap / matched (an admin, or a brand key of its funding brand).
#[utoipa::path(get, path = "/campaigns/{campaign_id}", tag = "campaigns",
    params(("campaign_id" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, body = CampaignView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn campaigns_get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> DomainResult<ApiJson<CampaignView>> {
    check_path_id("campaign", &id)?;
    let owner = campaigns::owner(state.store.read(), &id).await?;
    principal.require_brand(&owner)?;
    let mut conn = state.store.read().acquire().await?;
    Ok(ApiJson(campaigns::get(&mut conn, &id).await?))
}

/// Issue the campaign's coupons to matching members, in batches, never beyond the cap (an
/// admin, or a brand key of its funding brand). Safe to call concurrently and repeatedly: a
/// member gets at most one coupon of a campaign. `finished: false` means the call ran out of
/// time; call again (the same key resumes, since only finished reports are stored).
#[utoipa::path(post, path = "/campaigns/{campaign_id}/issue", tag = "campaigns",
    params(
        ("campaign_id" = String, Path, description = "Campaign id"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it"),
    ),
    responses(
        (status = 200, body = IssueReport),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`coupon_template_retired`, `idempotency_key_reused`"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`campaign_not_started`, `campaign_ended`"),
    ))]
pub async fn campaigns_issue(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(id): ApiPath<String>,
) -> DomainResult<Response> {
    check_path_id("campaign", &id)?;
    let owner = campaigns::owner(state.store.read(), &id).await?;
    principal.require_brand(&owner)?;
    let scope = principal.idempotency_scope();
    let hash = idempotency::request_hash(&format!("campaigns.issue:{id}"), &());
    let now_ms = state.now_ms();
    // Batches commit one by one, so the key is checked now and claimed with the final report.
    {
        let mut tx = state.store.begin().await?;
        if let Claim::Replay { status, body } =
            idempotency::claim(&mut tx, &scope, &key.0, &hash, now_ms).await?
        {
            return Ok(idempotency::replay_response(status, body));
        }
        tx.rollback().await?;
    }
    // Half the request timeout: the rest is margin for the last batch and the reply.
    let report = campaigns::issue(
        &state.store,
        &id,
        state.settings.points.utc_offset_minutes,
        now_ms,
        state.job_deadline(),
    )
    .await?;
    if !report.finished {
        return Ok((StatusCode::OK, ApiJson(report)).into_response());
    }
    let mut tx = state.store.begin().await?;
    if let Claim::Replay { status, body } =
        idempotency::claim(&mut tx, &scope, &key.0, &hash, now_ms).await?
    {
        return Ok(idempotency::replay_response(status, body));
    }
    idempotency::complete(&mut tx, &scope, &key.0, StatusCode::OK, &report).await?;
    tx.commit().await?;
    Ok((StatusCode::OK, ApiJson(report)).into_response())
}
