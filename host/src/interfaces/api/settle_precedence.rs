//! Settle precedence: which plugins govern a brand's settlement events that name no plugin,
//! in order (see [`crate::workflows::settlement::precedence`] and docs/plugins.md).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::{Principal, Role};
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::ids::check_path_id;
use crate::interfaces::api::idempotency::idempotent_write;
use crate::interfaces::api::idempotency::IdempotencyKey;
use crate::interfaces::api::problem::{ApiJson, ApiPath, Problem};
use crate::interfaces::api::AppState;
use crate::workflows::settlement::precedence::{self, SetPrecedence, SettlePrecedence};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(settle_precedence_list))
        .routes(routes!(settle_precedence_get, settle_precedence_put))
}

/// Every brand's settle precedence that is set (admins; a brand key sees its own).
#[utoipa::path(get, path = "/settlement/precedence", tag = "settlement",
    responses(
        (status = 200, body = Vec<SettlePrecedence>),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn settle_precedence_list(
    State(state): State<AppState>,
    principal: Principal,
) -> DomainResult<ApiJson<Vec<SettlePrecedence>>> {
    let mut conn = state.store.read().acquire().await?;
    match (principal.role, principal.brand_id.as_deref()) {
        (Role::Admin, _) => Ok(ApiJson(precedence::list(&mut conn).await?)),
        (Role::Brand, Some(brand)) => Ok(ApiJson(vec![precedence::get(&mut conn, brand).await?])),
        _ => Err(DomainError::forbidden(
            "settle precedence is visible to admins and brand keys",
        )),
    }
}

/// One brand's settle precedence (empty `plugins` when none is set: its own plugins govern).
#[utoipa::path(get, path = "/settlement/precedence/{brand_id}", tag = "settlement",
    params(("brand_id" = String, Path, description = "Brand id")),
    responses(
        (status = 200, body = SettlePrecedence),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn settle_precedence_get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(brand_id): ApiPath<String>,
) -> DomainResult<ApiJson<SettlePrecedence>> {
    match principal.role {
        Role::Admin => {}
        Role::Brand if principal.brand_id.as_deref() == Some(brand_id.as_str()) => {}
        _ => {
            return Err(DomainError::forbidden(
                "a brand sees only its own settle precedence; admins see all",
            ))
        }
    }
    check_path_id("brand", &brand_id)?;
    let mut conn = state.store.read().acquire().await?;
    Ok(ApiJson(precedence::get(&mut conn, &brand_id).await?))
}

/// Set which plugins govern the brand's settlement events that name no plugin, in order
/// (admins only; recorded in the audit log). The first listed plugin that is deployed with a
/// settle hook and answers with lines governs; an empty list goes back to the brand's own
/// plugins.
#[utoipa::path(put, path = "/settlement/precedence/{brand_id}", tag = "settlement",
    params(
        ("brand_id" = String, Path, description = "Brand id"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation"),
    ),
    request_body = SetPrecedence,
    responses(
        (status = 200, body = SettlePrecedence),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`unknown_brand`"),
    ))]
pub async fn settle_precedence_put(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(brand_id): ApiPath<String>,
    ApiJson(req): ApiJson<SetPrecedence>,
) -> DomainResult<Response> {
    principal.require_admin()?;
    check_path_id("brand", &brand_id)?;
    let op = format!("settlement.precedence:{brand_id}");
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &req,
        StatusCode::OK,
        async |tx| {
            let actor = format!("{}:{}", principal.role.as_str(), principal.key_id);
            let view = precedence::set(
                &mut *tx,
                state.store.backend(),
                &brand_id,
                &req,
                &actor,
                state.now_ms(),
            )
            .await?;
            Ok(view)
        },
    )
    .await
}
