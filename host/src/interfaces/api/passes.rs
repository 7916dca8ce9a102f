//! The offline member pass: a signed short-lived token (also as a QR code) and the public keys
//! counters verify it with (see [`crate::domain::pass`]).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::Principal;
use crate::domain::pass::{self, MemberPass, PassKeyView};
use crate::foundation::error::DomainResult;
use crate::foundation::ids::check_path_id;
use crate::interfaces::api::idempotency::idempotent_write;
use crate::interfaces::api::idempotency::IdempotencyKey;
use crate::interfaces::api::problem::{ApiJson, ApiPath, Problem};
use crate::interfaces::api::AppState;

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(passes_get))
        .routes(routes!(passes_svg))
        .routes(routes!(passes_png))
        .routes(routes!(pass_keys_list))
        .routes(routes!(pass_keys_rotate))
}

/// The public keys that verify member passes.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PassKeys {
    /// The active key first, then retired ones (still valid for passes signed before).
    pub keys: Vec<PassKeyView>,
}

async fn issue_for(state: &AppState, principal: &Principal, id: &str) -> DomainResult<MemberPass> {
    check_path_id("member", id)?;
    principal.require_member_self(id)?;
    pass::issue(&state.store, &state.config.pass, id, state.now_ms()).await
}

/// A fresh member pass (the member's own key, or an admin): a short-lived token signed by the
/// platform that any counter verifies offline with the keys of `GET /pass-keys`.
#[utoipa::path(get, path = "/members/{member_id}/pass", tag = "passes",
    params(("member_id" = String, Path, description = "Member id")),
    responses(
        (status = 200, body = MemberPass),
        (status = 403, body = Problem, content_type = "application/problem+json",
            description = "`forbidden`, `member_blacklisted`"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`member_blocked`"),
    ))]
pub async fn passes_get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> DomainResult<Response> {
    let pass = issue_for(&state, &principal, &id).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], ApiJson(pass)).into_response())
}

/// A fresh member pass as an SVG QR code of its token.
#[utoipa::path(get, path = "/members/{member_id}/pass.svg", tag = "passes",
    params(("member_id" = String, Path, description = "Member id")),
    responses(
        (status = 200, body = String, content_type = "image/svg+xml"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn passes_svg(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> DomainResult<Response> {
    let pass = issue_for(&state, &principal, &id).await?;
    let svg = pass::qr_svg(&pass.token)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        svg,
    )
        .into_response())
}

/// A fresh member pass as a PNG QR code of its token.
#[utoipa::path(get, path = "/members/{member_id}/pass.png", tag = "passes",
    params(("member_id" = String, Path, description = "Member id")),
    responses(
        (status = 200, body = [u8], content_type = "image/png"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn passes_png(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> DomainResult<Response> {
    let pass = issue_for(&state, &principal, &id).await?;
    let png = pass::qr_png(&pass.token)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        png,
    )
        .into_response())
}

/// The public keys that verify member passes (no credentials needed: counters download them
/// while online and verify passes offline).
#[utoipa::path(get, path = "/pass-keys", tag = "passes", security(()),
    responses((status = 200, body = PassKeys)))]
pub async fn pass_keys_list(State(state): State<AppState>) -> DomainResult<ApiJson<PassKeys>> {
    let mut conn = state.store.read().acquire().await?;
    Ok(ApiJson(PassKeys {
        keys: pass::list_keys(&mut conn).await?,
    }))
}

/// Retire the signing key and start signing with a new one (admin). The retired key stays
/// listed, so passes it signed keep verifying until they expire.
#[utoipa::path(post, path = "/pass-keys/rotate", tag = "passes",
    params(
        ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it"),
    ),
    responses(
        (status = 200, body = PassKeys),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn pass_keys_rotate(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
) -> DomainResult<Response> {
    principal.require_admin()?;
    idempotent_write(
        &state,
        &principal,
        &key,
        "pass_keys.rotate",
        &(),
        StatusCode::OK,
        async |tx| {
            pass::rotate(&mut *tx, state.store.backend(), state.now_ms()).await?;
            let keys = pass::list_keys(&mut *tx).await?;
            Ok(PassKeys { keys })
        },
    )
    .await
}
