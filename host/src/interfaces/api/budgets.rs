//! Partner budgets: a funding brand's caps on the bonus points, perk value and coupon value it
//! funds per period, with their usage (see [`crate::ledger::budgets`] for the rules).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::Principal;
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::ids::check_path_id;
use crate::interfaces::api::idempotency::{idempotent_write, IdempotencyKey};
use crate::interfaces::api::problem::{ApiJson, ApiPath, Problem};
use crate::interfaces::api::AppState;
use crate::ledger::budgets::{self, BudgetView, NewBudget, UpdateBudget};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(budgets_list, budgets_create))
        .routes(routes!(budgets_update))
}

/// The brand's budgets with their usage in the current period (admins, the brand's keys).
#[utoipa::path(get, path = "/brands/{brand_id}/budgets", tag = "budgets",
    params(("brand_id" = String, Path, description = "Brand slug")),
    responses(
        (status = 200, body = Vec<BudgetView>),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn budgets_list(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(brand_id): ApiPath<String>,
) -> DomainResult<ApiJson<Vec<BudgetView>>> {
    check_path_id("brand", &brand_id)?;
    principal.require_brand(&brand_id)?;
    let mut conn = state.store.read().acquire().await?;
    Ok(ApiJson(
        budgets::list(
            &mut conn,
            &brand_id,
            None,
            state.settings.points.utc_offset_minutes,
            state.now_ms(),
        )
        .await?,
    ))
}

/// Set a budget on what the brand funds (its brand key, or an admin): bonus points its plugins
/// grant, perk value or coupon value, per day or month, for one plugin or all. Issues reserve
/// it in their own transaction: a bonus beyond it is cut (`budget_clipped`, `budget_exhausted`
/// in the purchase's `skipped_decisions`), a perk is refused (`422 budget_exhausted`).
#[utoipa::path(post, path = "/brands/{brand_id}/budgets", tag = "budgets",
    params(
        ("brand_id" = String, Path, description = "Brand slug"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation"),
    ),
    request_body = NewBudget,
    responses(
        (status = 201, body = BudgetView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`idempotency_key_reused`"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`unknown_brand`, `budget_limit_reached`"),
    ))]
pub async fn budgets_create(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(brand_id): ApiPath<String>,
    ApiJson(req): ApiJson<NewBudget>,
) -> DomainResult<Response> {
    check_path_id("brand", &brand_id)?;
    principal.require_brand(&brand_id)?;
    let op = format!("budgets.create:{brand_id}");
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &req,
        StatusCode::CREATED,
        async |tx| {
            let actor = format!("{}:{}", principal.role.as_str(), principal.key_id);
            let now = state.now_ms();
            let id = budgets::create(&mut *tx, &brand_id, &req, &actor, now).await?;
            one(&mut *tx, &state, &brand_id, &id).await
        },
    )
    .await
}

/// Change a budget's amount, alert threshold or whether it applies (the brand's brand key, or
/// an admin); usage in the current period is kept.
#[utoipa::path(patch, path = "/brands/{brand_id}/budgets/{budget_id}", tag = "budgets",
    params(
        ("brand_id" = String, Path, description = "Brand slug"),
        ("budget_id" = String, Path, description = "Budget id"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation"),
    ),
    request_body = UpdateBudget,
    responses(
        (status = 200, body = BudgetView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`idempotency_key_reused`"),
    ))]
pub async fn budgets_update(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath((brand_id, budget_id)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<UpdateBudget>,
) -> DomainResult<Response> {
    check_path_id("brand", &brand_id)?;
    principal.require_brand(&brand_id)?;
    check_path_id("budget", &budget_id)?;
    let op = format!("budgets.update:{brand_id}:{budget_id}");
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &req,
        StatusCode::OK,
        async |tx| {
            budgets::update(&mut *tx, &brand_id, &budget_id, &req, state.now_ms()).await?;
            one(&mut *tx, &state, &brand_id, &budget_id).await
        },
    )
    .await
}

async fn one(
    conn: &mut sqlx::AnyConnection,
    state: &AppState,
    brand_id: &str,
    budget_id: &str,
) -> DomainResult<BudgetView> {
    budgets::list(
        conn,
        brand_id,
        Some(budget_id),
        state.settings.points.utc_offset_minutes,
        state.now_ms(),
    )
    .await?
    .into_iter()
    .next()
    .ok_or_else(|| DomainError::not_found("budget", budget_id))
}
