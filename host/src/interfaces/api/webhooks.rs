//! Webhooks: a brand's subscriptions (create, list, delete, rotate the secret), the delivery
//! log, manual replay, and running the delivery worker once (admins). A brand key sees and
//! changes its own brand's subscriptions and deliveries only (others are `not_found`); an admin
//! may act for any brand. See [`crate::domain::webhooks`] and [`crate::workflows::webhooks`].

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::{Principal, Role};
use crate::domain::webhooks::{
    self, DeliveryFilter, DeliveryStatus, DeliveryView, SubscribeRequest, SubscriptionView,
    SubscriptionWithSecret, MAX_DELIVERIES_PAGE,
};
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::ids::check_path_id;
use crate::interfaces::api::idempotency::{self, idempotent_write, Claim, IdempotencyKey};
use crate::interfaces::api::problem::{ApiJson, ApiPath, ApiQuery, Problem};
use crate::interfaces::api::AppState;
use crate::workflows::webhooks::{check_target, DeliveryReport};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(webhooks_subscribe, webhooks_list))
        .routes(routes!(webhooks_delete))
        .routes(routes!(webhooks_rotate_secret))
        .routes(routes!(webhooks_deliveries))
        .routes(routes!(webhooks_replay))
        .routes(routes!(jobs_webhook_deliveries))
}

/// The brand a write acts for: a brand key's own (naming another is forbidden); an admin must
/// name one. Other roles are refused.
fn acting_brand(principal: &Principal, asked: Option<&str>) -> DomainResult<String> {
    let brand = match principal.role {
        Role::Brand => {
            let own = principal.brand_id.clone().unwrap_or_default();
            if asked.is_some_and(|b| b != own) {
                return Err(DomainError::forbidden(
                    "a brand key subscribes its own brand only",
                ));
            }
            own
        }
        Role::Admin => asked.map(str::to_owned).ok_or_else(|| {
            DomainError::validation("an admin names the brand to subscribe (brand_id)")
        })?,
        Role::Counter | Role::Member => {
            return Err(DomainError::forbidden(
                "webhooks are managed by a brand key or an admin",
            ))
        }
    };
    check_path_id("brand", &brand)?;
    Ok(brand)
}

/// The brand whose subscriptions and deliveries a caller may touch: `None` for an admin (any),
/// the key's brand for a brand key; other roles are refused.
fn manage_scope(principal: &Principal) -> DomainResult<Option<String>> {
    match principal.role {
        Role::Admin => Ok(None),
        Role::Brand => Ok(principal.brand_id.clone()),
        Role::Counter | Role::Member => Err(DomainError::forbidden(
            "webhooks are managed by a brand key or an admin",
        )),
    }
}

/// Subscribe an endpoint to event types (a brand key for its own brand, or an admin for any).
/// The target must be `http`/`https` and resolve to public addresses only (unless the server's
/// `webhooks.allow_private_targets` is on). The signing secret is in this answer only.
#[utoipa::path(post, path = "/webhooks", tag = "webhooks",
    params(("Idempotency-Key" = String, Header, description = "Unique per operation")),
    request_body = SubscribeRequest,
    responses(
        (status = 201, body = SubscriptionWithSecret),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "`validation_failed`, `invalid_webhook_url`, \
                `webhook_target_forbidden`, `webhook_target_unresolvable`, \
                `invalid_event_types`, `unknown_brand`"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`idempotency_key_reused`"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`webhook_subscription_limit`"),
    ))]
pub async fn webhooks_subscribe(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiJson(req): ApiJson<SubscribeRequest>,
) -> DomainResult<Response> {
    let brand = acting_brand(&principal, req.brand_id.as_deref())?;
    if let Some(answered) =
        idempotency::replay_if_answered(&state, &principal, &key, "webhooks.subscribe", &req)
            .await?
    {
        return Ok(answered);
    }
    if req.url.len() > webhooks::MAX_URL_LEN {
        return Err(DomainError::bad_request(
            "invalid_webhook_url",
            format!(
                "the URL is longer than {} characters",
                webhooks::MAX_URL_LEN
            ),
        ));
    }
    // Resolved before the transaction: a slow DNS answer must not hold the writer.
    let target = check_target(&req.url, state.settings.webhooks.allow_private_targets).await?;
    let url = target.url.to_string();
    idempotent_write(
        &state,
        &principal,
        &key,
        "webhooks.subscribe",
        &req,
        StatusCode::CREATED,
        async |tx| {
            webhooks::subscribe(
                &mut *tx,
                &brand,
                &url,
                &req.event_types,
                state.settings.webhooks.max_subscriptions_per_brand,
                state.now_ms(),
            )
            .await
        },
    )
    .await
}

/// Which brand's subscriptions.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Admins: only this brand. A brand key always sees its own.
    pub brand_id: Option<String>,
}

/// Subscriptions, oldest first, without their secrets (admins: every brand or one; a brand key:
/// its own).
#[utoipa::path(get, path = "/webhooks", tag = "webhooks",
    params(ListParams),
    responses(
        (status = 200, body = Vec<SubscriptionView>),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn webhooks_list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<ListParams>,
) -> DomainResult<ApiJson<Vec<SubscriptionView>>> {
    let brand = principal.brand_read_scope(
        params.brand_id.as_deref(),
        "a brand sees its own webhook subscriptions only",
        "webhooks are managed by a brand key or an admin",
    )?;
    let mut conn = state.store.read().acquire().await?;
    Ok(ApiJson(
        webhooks::subscriptions(&mut conn, brand.as_deref()).await?,
    ))
}

/// Delete a subscription: it receives no more events and its waiting deliveries are dropped;
/// it stays in the list (inactive) for the delivery log. Deleting twice is a no-op.
#[utoipa::path(delete, path = "/webhooks/{subscription_id}", tag = "webhooks",
    params(
        ("subscription_id" = String, Path, description = "Subscription id"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation"),
    ),
    responses(
        (status = 200, body = SubscriptionView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`idempotency_key_reused`"),
    ))]
pub async fn webhooks_delete(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(id): ApiPath<String>,
) -> DomainResult<Response> {
    let scope = manage_scope(&principal)?;
    check_path_id("subscription", &id)?;
    let op = format!("webhooks.delete:{id}");
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &(),
        StatusCode::OK,
        async |tx| webhooks::unsubscribe(&mut *tx, &id, scope.as_deref(), state.now_ms()).await,
    )
    .await
}

/// Replace a subscription's signing secret; the new one is in this answer only, and every
/// attempt from now on is signed with it.
#[utoipa::path(post, path = "/webhooks/{subscription_id}/rotate-secret", tag = "webhooks",
    params(
        ("subscription_id" = String, Path, description = "Subscription id"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation"),
    ),
    responses(
        (status = 200, body = SubscriptionWithSecret),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`webhook_subscription_deleted`, `idempotency_key_reused`"),
    ))]
pub async fn webhooks_rotate_secret(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(id): ApiPath<String>,
) -> DomainResult<Response> {
    let scope = manage_scope(&principal)?;
    check_path_id("subscription", &id)?;
    let op = format!("webhooks.rotate_secret:{id}");
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &(),
        StatusCode::OK,
        async |tx| webhooks::rotate_secret(&mut *tx, &id, scope.as_deref(), state.now_ms()).await,
    )
    .await
}

/// Filters of the delivery log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// Only this subscription's deliveries.
    pub subscription: Option<String>,
    /// Only deliveries in this state.
    pub status: Option<DeliveryStatus>,
    /// Admins: only this brand. A brand key always sees its own.
    pub brand_id: Option<String>,
    /// At most this many, newest first (1..=200, default 50).
    pub limit: Option<i64>,
}

/// The delivery log, newest first, each delivery with its attempts (status code or error per
/// attempt).
#[utoipa::path(get, path = "/webhooks/deliveries", tag = "webhooks",
    params(DeliveryParams),
    responses(
        (status = 200, body = Vec<DeliveryView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn webhooks_deliveries(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<DeliveryParams>,
) -> DomainResult<ApiJson<Vec<DeliveryView>>> {
    let brand = principal.brand_read_scope(
        params.brand_id.as_deref(),
        "a brand sees its own webhook deliveries only",
        "webhooks are managed by a brand key or an admin",
    )?;
    if let Some(subscription) = &params.subscription {
        check_path_id("subscription", subscription)?;
    }
    let limit = params.limit.unwrap_or(50);
    if !(1..=MAX_DELIVERIES_PAGE).contains(&limit) {
        return Err(DomainError::validation(format!(
            "limit must be 1..={MAX_DELIVERIES_PAGE}"
        )));
    }
    let mut conn = state.store.read().acquire().await?;
    let filter = DeliveryFilter {
        brand: brand.as_deref(),
        subscription: params.subscription.as_deref(),
        status: params.status,
        limit,
    };
    Ok(ApiJson(webhooks::deliveries(&mut conn, &filter).await?))
}

/// Send a delivery again now (delivered, waiting or dead-lettered), with a fresh retry budget;
/// the receiver gets the same `Coalition-Webhook-Id`.
#[utoipa::path(post, path = "/webhooks/deliveries/{delivery_id}/replay", tag = "webhooks",
    params(
        ("delivery_id" = String, Path, description = "Delivery id"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation"),
    ),
    responses(
        (status = 200, body = DeliveryView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`webhook_delivery_in_flight`, `webhook_subscription_deleted`, \
                `idempotency_key_reused`"),
    ))]
pub async fn webhooks_replay(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(id): ApiPath<String>,
) -> DomainResult<Response> {
    let scope = manage_scope(&principal)?;
    check_path_id("delivery", &id)?;
    let op = format!("webhooks.replay:{id}");
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &(),
        StatusCode::OK,
        async |tx| webhooks::replay(&mut *tx, &id, scope.as_deref(), state.now_ms()).await,
    )
    .await
}

/// Run one pass of the webhook delivery worker now (admins): every due delivery is attempted
/// once. The pass runs first, in its own short transactions; the idempotency key then records
/// its report.
#[utoipa::path(post, path = "/jobs/webhook-deliveries", tag = "jobs",
    params(("Idempotency-Key" = String, Header, description = "Unique per run")),
    responses(
        (status = 200, body = DeliveryReport),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn jobs_webhook_deliveries(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
) -> DomainResult<Response> {
    principal.require_admin()?;
    let hash = idempotency::request_hash("jobs.webhook_deliveries", &());
    {
        let mut tx = state.store.begin().await?;
        if let Claim::Replay { status, body } = idempotency::claim(
            &mut tx,
            &principal.idempotency_scope(),
            &key.0,
            &hash,
            state.now_ms(),
        )
        .await?
        {
            return Ok(idempotency::replay_response(status, body));
        }
        // Not claimed yet: the pass runs outside this transaction (it holds no writer while it
        // waits on receivers).
        tx.rollback().await?;
    }
    let report = crate::workflows::webhooks::run_once(&state).await?;
    idempotency::record_report(
        &state,
        &principal,
        &key,
        "jobs.webhook_deliveries",
        &(),
        report,
    )
    .await
}
