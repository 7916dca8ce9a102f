//! Stored value: top-ups at a brand's counter, a member's balance, the liability report and
//! each brand's reserve (see [`crate::ledger::stored_value`] for the rules). Paying with stored
//! value is part of a purchase (`stored_value_cents`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::Principal;
use crate::domain::risk;
use crate::foundation::error::DomainResult;
use crate::foundation::ids::check_path_id;
use crate::interfaces::api::idempotency::{idempotent_write, IdempotencyKey};
use crate::interfaces::api::problem::{ApiJson, ApiPath, ApiQuery, Problem};
use crate::interfaces::api::AppState;
use crate::ledger::stored_value::{
    self, LiabilityLine, LiabilityReport, ReserveRequest, StoredValueView, TopupRequest, TopupView,
};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stored_value_topup))
        .routes(routes!(stored_value_get))
        .routes(routes!(stored_value_liability))
        .routes(routes!(stored_value_reserve))
}

/// Top up a member's stored value at the brand's counter (its counter key, or an admin): the
/// brand takes the money and holds it. Limits hold in the transaction: the balance after it
/// may not pass the member's limit (higher once real-name verified), and a large single top-up
/// needs a verified member.
#[utoipa::path(post, path = "/brands/{brand_id}/stored-value/topups", tag = "stored-value",
    params(
        ("brand_id" = String, Path, description = "Brand slug"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it"),
    ),
    request_body = TopupRequest,
    responses(
        (status = 201, body = TopupView),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "`validation_failed`"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "unknown member"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`topup_exists`, `idempotency_key_reused`"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`stored_value_limit_exceeded`, `real_name_required`, \
                `member_blocked`, `unknown_brand`"),
    ))]
pub async fn stored_value_topup(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(brand_id): ApiPath<String>,
    ApiJson(req): ApiJson<TopupRequest>,
) -> DomainResult<Response> {
    check_path_id("brand", &brand_id)?;
    principal.require_counter(&brand_id)?;
    check_path_id("member", &req.member_id)?;
    let op = format!("stored_value.topup:{brand_id}");
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &req,
        StatusCode::CREATED,
        async |tx| {
            crate::ledger::require_brand_exists(&mut *tx, &brand_id).await?;
            let verified = risk::verified_at(&mut *tx, &req.member_id).await?.is_some();
            let view = stored_value::topup(
                &mut *tx,
                state.store.backend(),
                &state.settings.stored_value,
                &brand_id,
                &req,
                verified,
                state.now_ms(),
            )
            .await?;
            Ok(view)
        },
    )
    .await
}

/// A member's stored value: balance, the part each brand holds, the limit, and the newest
/// entries (admins, brand and counter keys, the member). A brand or counter key sees another
/// brand's entries without their purchase id.
#[utoipa::path(get, path = "/members/{member_id}/stored-value", tag = "stored-value",
    params(("member_id" = String, Path, description = "Member id")),
    responses(
        (status = 200, body = StoredValueView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn stored_value_get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(member_id): ApiPath<String>,
) -> DomainResult<ApiJson<StoredValueView>> {
    check_path_id("member", &member_id)?;
    principal.require_member_read(&member_id)?;
    let verified = {
        let mut conn = state.store.read().acquire().await?;
        risk::verified_at(&mut conn, &member_id).await?.is_some()
    };
    let mut view = stored_value::view(
        state.store.read(),
        &state.settings.stored_value,
        &member_id,
        verified,
    )
    .await?;
    if let Some(own) = principal.brand_scope() {
        for entry in &mut view.entries {
            if entry.brand_id != own {
                entry.purchase_id = None;
            }
        }
    }
    Ok(ApiJson(view))
}

/// Which brand's liability.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LiabilityParams {
    /// Admins: only this brand. A brand key always sees its own and may name only it.
    pub brand_id: Option<String>,
}

/// Outstanding stored value per holding brand, the reserve each must hold, and the dormant
/// part (admins: every brand or one; a brand key: its own).
#[utoipa::path(get, path = "/stored-value/liability", tag = "stored-value",
    params(LiabilityParams),
    responses(
        (status = 200, body = LiabilityReport),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn stored_value_liability(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<LiabilityParams>,
) -> DomainResult<ApiJson<LiabilityReport>> {
    let brand = principal.brand_read_scope(
        params.brand_id.as_deref(),
        "a brand sees the stored-value liability of its own brand only",
        "the stored-value liability is for admins and brands",
    )?;
    let mut conn = state.store.read().acquire().await?;
    Ok(ApiJson(
        stored_value::liability(
            &mut conn,
            &state.settings.stored_value,
            brand.as_deref(),
            state.now_ms(),
        )
        .await?,
    ))
}

/// Set a brand's stored-value reserve percentage (admins; recorded in the audit log); `null`
/// returns it to the configured default. Answers with the brand's liability line.
#[utoipa::path(put, path = "/brands/{brand_id}/stored-value/reserve", tag = "stored-value",
    params(
        ("brand_id" = String, Path, description = "Brand slug"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation"),
    ),
    request_body = ReserveRequest,
    responses(
        (status = 200, body = LiabilityLine),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`idempotency_key_reused`"),
    ))]
pub async fn stored_value_reserve(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(brand_id): ApiPath<String>,
    ApiJson(req): ApiJson<ReserveRequest>,
) -> DomainResult<Response> {
    principal.require_admin()?;
    check_path_id("brand", &brand_id)?;
    let op = format!("stored_value.reserve:{brand_id}");
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &req,
        StatusCode::OK,
        async |tx| {
            let actor = format!("{}:{}", principal.role.as_str(), principal.key_id);
            stored_value::set_reserve(
                &mut *tx,
                state.store.backend(),
                &brand_id,
                &req,
                &actor,
                state.now_ms(),
            )
            .await?;
            let line = stored_value::reserve_line(
                &mut *tx,
                &state.settings.stored_value,
                &brand_id,
                state.now_ms(),
            )
            .await?;
            Ok(line)
        },
    )
    .await
}
