//! Perks: the perks a member can see now, redeeming one, their inventory and limits, and a
//! member's redemptions (see [`crate::workflows::perks`] for the rules).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::{Principal, Role};
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::ids::check_path_id;
use crate::interfaces::api::idempotency::idempotent_write;
use crate::interfaces::api::idempotency::{self, IdempotencyKey};
use crate::interfaces::api::problem::{ApiJson, ApiPath, ApiQuery, Problem};
use crate::interfaces::api::AppState;
use crate::workflows::perks::{
    self, InventoryRequest, InventoryView, PerksList, RedeemBody, RedemptionLine, RedemptionView,
    MAX_DEVICE_ID_LEN,
};

pub use crate::workflows::perks::{GrantView, PerkView, UnavailablePlugin};

/// Header naming the device a redemption comes from.
pub const DEVICE_HEADER: &str = "x-device-id";

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(perks_list))
        .routes(routes!(perks_redeem))
        .routes(routes!(perks_redemptions))
        .routes(routes!(perks_inventory_put))
        .routes(routes!(perks_inventory_list))
        .routes(routes!(perks_redemptions_list))
}

/// Whose redemptions.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RedemptionsParams {
    /// Admins: only those this brand funds or honours. A brand key always sees its own and may
    /// name only itself.
    pub brand_id: Option<String>,
}

/// The newest perk redemptions (at most 100): every brand's for admins, those its brand funds
/// or honours for a brand key; others get 403.
#[utoipa::path(get, path = "/perks/redemptions", tag = "perks", params(RedemptionsParams),
    responses(
        (status = 200, body = Vec<RedemptionLine>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn perks_redemptions_list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<RedemptionsParams>,
) -> DomainResult<ApiJson<Vec<RedemptionLine>>> {
    let brand = principal.brand_read_scope(
        params.brand_id.as_deref(),
        "a brand sees the redemptions it funds or honours only",
        "only admin and brand keys may list redemptions",
    )?;
    let mut conn = state.store.read().acquire().await?;
    Ok(ApiJson(
        perks::brand_redemptions(&mut conn, brand.as_deref()).await?,
    ))
}

/// Options of the perk listing.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PerksListParams {
    /// Also show perks the balance does not cover yet (with `affordable: false`).
    #[serde(default)]
    pub include_unaffordable: bool,
}

/// Perks the member may redeem now, from every serving plugin, merged with stock and limits.
/// A failing plugin is left out and named in `unavailable`; sold-out perks, perks over the
/// member's limits and (unless asked) perks the balance does not cover are not shown.
#[utoipa::path(get, path = "/members/{member_id}/perks", tag = "perks",
    params(("member_id" = String, Path, description = "Member id"), PerksListParams),
    responses(
        (status = 200, body = PerksList),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`member_blocked`"),
    ))]
pub async fn perks_list(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(member_id): ApiPath<String>,
    ApiQuery(params): ApiQuery<PerksListParams>,
) -> DomainResult<ApiJson<PerksList>> {
    check_path_id("member", &member_id)?;
    principal.require_member_read(&member_id)?;
    let list = perks::list(&state, &member_id, params.include_unaffordable).await?;
    Ok(ApiJson(list))
}

/// Redeem a perk for the member (the member's own key, the honouring brand's counter, or an
/// admin). A counter is authorized before any business rule: the plugin's signed manifest must
/// name its brand and the perk, as the plugin offers it to the member now, must be honoured by
/// it (403 otherwise, also for a perk the member is not offered). Then, in one transaction, the
/// plugin grants it, stock and limits are checked, the points are debited, the coupon is issued
/// and the redemption is recorded with its receipt — or nothing changes.
#[utoipa::path(post, path = "/members/{member_id}/perks/{plugin}/{perk_id}/redeem", tag = "perks",
    params(
        ("member_id" = String, Path, description = "Member id"),
        ("plugin" = String, Path, description = "Plugin offering the perk"),
        ("perk_id" = String, Path, description = "Perk id within the plugin"),
        ("Idempotency-Key" = String, Header, description = "Unique per redemption; a retry reuses it"),
        ("X-Device-Id" = Option<String>, Header, description = "Device the request comes from"),
    ),
    request_body = RedeemBody,
    responses(
        (status = 201, body = RedemptionView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "unknown member or perk plugin"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`perk_sold_out`, `perk_cost_changed`, `idempotency_key_reused`"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`perk_refused`, `perk_input_invalid` (the plugin calls the request \
                invalid, e.g. an unknown perk), `insufficient_points`, `member_blocked`, \
                `perk_limit_reached`, `perk_period_limit_reached`, `perk_paused`, \
                `perk_outside_window`, risk refusals"),
        (status = 503, body = Problem, content_type = "application/problem+json",
            description = "`perk_plugin_failed`"),
    ))]
pub async fn perks_redeem(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    headers: HeaderMap,
    ApiPath((member_id, plugin, perk_id)): ApiPath<(String, String, String)>,
    ApiJson(body): ApiJson<RedeemBody>,
) -> DomainResult<Response> {
    check_path_id("member", &member_id)?;
    perks::check_perk_path("plugin", &plugin)?;
    perks::check_perk_path("perk_id", &perk_id)?;
    let op = format!("perks.redeem:{member_id}:{plugin}:{perk_id}");
    match principal.role {
        // Before any business rule: the perk must be one the counter's brand honours. That
        // depends on what the plugin offers now, so a retry of an answered redemption replays
        // first.
        Role::Counter => {
            if let Some(replay) =
                idempotency::replay_if_answered(&state, &principal, &key, &op, &body).await?
            {
                return Ok(replay);
            }
            perks::authorize_counter_redemption(&state, &principal, &member_id, &plugin, &perk_id)
                .await?
        }
        _ => principal.require_member_self(&member_id)?,
    }
    let header_device = headers
        .get(DEVICE_HEADER)
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| DomainError::validation("X-Device-Id must be ASCII"))
        })
        .transpose()?;
    let device_id = body.device_id.clone().or(header_device);
    if let Some(device) = &device_id {
        if device.is_empty()
            || device.len() > MAX_DEVICE_ID_LEN
            || !device.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(DomainError::validation(format!(
                "device id must be 1..={MAX_DEVICE_ID_LEN} printable ASCII characters"
            )));
        }
    }
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &body,
        StatusCode::CREATED,
        async |tx| {
            let seed_subject = format!("redeem:{member_id}:{}", key.0);
            let view = perks::redeem(
                &state,
                &mut *tx,
                &principal,
                &member_id,
                &plugin,
                &perk_id,
                &body,
                device_id.as_deref(),
                &seed_subject,
            )
            .await?;
            Ok(view)
        },
    )
    .await
}

/// A member's perk redemptions, newest first (the member, brands and counters, admins). A brand
/// or counter key sees only the redemptions its brand funds or honours.
#[utoipa::path(get, path = "/members/{member_id}/redemptions", tag = "perks",
    params(("member_id" = String, Path, description = "Member id")),
    responses(
        (status = 200, body = Vec<RedemptionView>),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn perks_redemptions(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(member_id): ApiPath<String>,
) -> DomainResult<ApiJson<Vec<RedemptionView>>> {
    check_path_id("member", &member_id)?;
    principal.require_member_read(&member_id)?;
    let mut conn = state.store.read().acquire().await?;
    Ok(ApiJson(
        perks::member_redemptions(&mut conn, &member_id, principal.brand_scope()).await?,
    ))
}

/// Set a perk's stock, per-member / per-tier / per-period limits and window: an admin, or the
/// funding brand's key, where an approved version of the plugin names that brand and an existing
/// inventory is funded by it (403 otherwise).
#[utoipa::path(put, path = "/perks/{plugin}/{perk_id}/inventory", tag = "perks",
    params(
        ("plugin" = String, Path, description = "Plugin offering the perk"),
        ("perk_id" = String, Path, description = "Perk id within the plugin"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation"),
    ),
    request_body = InventoryRequest,
    responses(
        (status = 200, body = InventoryView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`stock_below_redeemed`, `perk_funding_brand_mismatch`"),
    ))]
pub async fn perks_inventory_put(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath((plugin, perk_id)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<InventoryRequest>,
) -> DomainResult<Response> {
    perks::check_perk_path("plugin", &plugin)?;
    perks::check_perk_path("perk_id", &perk_id)?;
    perks::authorize_inventory(&state, &principal, &plugin, &perk_id, &req.funding_brand).await?;
    let op = format!("perks.inventory:{plugin}:{perk_id}");
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &req,
        StatusCode::OK,
        async |tx| {
            let view =
                perks::put_inventory(&mut *tx, &plugin, &perk_id, &req, state.now_ms()).await?;
            Ok(view)
        },
    )
    .await
}

/// Every perk inventory (admins and brand keys).
#[utoipa::path(get, path = "/perks/inventory", tag = "perks",
    responses(
        (status = 200, body = Vec<InventoryView>),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn perks_inventory_list(
    State(state): State<AppState>,
    principal: Principal,
) -> DomainResult<ApiJson<Vec<InventoryView>>> {
    if !matches!(principal.role, Role::Admin | Role::Brand) {
        return Err(DomainError::forbidden(
            "only admin and brand keys may read perk inventories",
        ));
    }
    let mut conn = state.store.read().acquire().await?;
    Ok(ApiJson(perks::inventories(&mut conn).await?))
}
