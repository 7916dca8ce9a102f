//! Brands: admins create and update them; a brand's own keys read its earn rule; every
//! authenticated caller may list brand ids and names.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::{Principal, Role};
use crate::domain::brands::{self, Brand, BrandSummary, CreateBrand, UpdateBrand};
use crate::foundation::error::{DomainError, DomainResult};
use crate::interfaces::api::idempotency::idempotent_write;
use crate::interfaces::api::idempotency::IdempotencyKey;
use crate::interfaces::api::problem::{ApiJson, ApiPath, Problem};
use crate::interfaces::api::AppState;

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(brands_list, brands_create))
        .routes(routes!(brands_get, brands_update))
}

/// Admins, and brand or counter keys of this brand, may read its full record.
fn require_brand_read(principal: &Principal, brand_id: &str) -> DomainResult<()> {
    match principal.role {
        Role::Admin => Ok(()),
        Role::Brand | Role::Counter if principal.brand_id.as_deref() == Some(brand_id) => Ok(()),
        _ => Err(DomainError::forbidden(format!(
            "only an admin or a key of brand {brand_id:?} may read its details"
        ))),
    }
}

/// List every brand's id, name and status (any authenticated caller; at most 1000 brands).
#[utoipa::path(get, path = "/brands", tag = "brands",
    responses(
        (status = 200, body = Vec<BrandSummary>),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn brands_list(
    State(state): State<AppState>,
    _principal: Principal,
) -> DomainResult<ApiJson<Vec<BrandSummary>>> {
    let mut conn = state.store.read().acquire().await?;
    Ok(ApiJson(brands::list(&mut conn).await?))
}

/// Create a brand (admin).
#[utoipa::path(post, path = "/brands", tag = "brands",
    params(("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it")),
    request_body = CreateBrand,
    responses(
        (status = 201, body = Brand),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "`invalid_brand_id`, `invalid_name`, `invalid_earn_rule`, `invalid_exclusions`"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`brand_exists`, `idempotency_key_reused`"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`brand_limit_reached`"),
    ))]
pub async fn brands_create(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiJson(req): ApiJson<CreateBrand>,
) -> DomainResult<Response> {
    principal.require_admin()?;
    let now_ms = state.now_ms();
    idempotent_write(
        &state,
        &principal,
        &key,
        "brands.create",
        &req,
        StatusCode::CREATED,
        async |tx| {
            let brand = brands::create(&mut *tx, &req, now_ms).await?;
            Ok(brand)
        },
    )
    .await
}

/// Read a brand with its earn rule (admin, or a brand or counter key of that brand).
#[utoipa::path(get, path = "/brands/{brand_id}", tag = "brands",
    params(("brand_id" = String, Path, description = "Brand slug")),
    responses(
        (status = 200, body = Brand),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn brands_get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> DomainResult<ApiJson<Brand>> {
    require_brand_read(&principal, &id)?;
    let mut conn = state.store.read().acquire().await?;
    Ok(ApiJson(brands::fetch_existing(&mut conn, &id).await?))
}

/// Update a brand's name, status, earn rule or exclusions (admin).
#[utoipa::path(patch, path = "/brands/{brand_id}", tag = "brands",
    params(
        ("brand_id" = String, Path, description = "Brand slug"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it"),
    ),
    request_body = UpdateBrand,
    responses(
        (status = 200, body = Brand),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn brands_update(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateBrand>,
) -> DomainResult<Response> {
    principal.require_admin()?;
    let now_ms = state.now_ms();
    idempotent_write(
        &state,
        &principal,
        &key,
        "brands.update",
        &(&id, &req),
        StatusCode::OK,
        async |tx| {
            let brand = brands::update(&mut *tx, &id, &req, now_ms).await?;
            Ok(brand)
        },
    )
    .await
}
