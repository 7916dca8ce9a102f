//! Installed plugins, their health on this node, and the receipts of their decisions.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::{Principal, Role};
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::ids::check_path_id;
use crate::interfaces::api::problem::{ApiJson, ApiPath, ApiQuery, Problem};
use crate::interfaces::api::AppState;
use crate::plugins::lifecycle;
use crate::plugins::receipts::{
    self, DayStats, FailureCount, HookStats, RecordedCall, StoredReceipt,
};
use crate::plugins::registry::{self, InstalledVersion};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(plugins_list))
        .routes(routes!(receipts_list))
        .routes(routes!(receipts_replay))
        .routes(routes!(plugin_receipts))
        .routes(routes!(plugin_stats))
}

/// An installed version and how it runs on this node.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PluginView {
    /// The installed version.
    #[serde(flatten)]
    pub installed: InstalledVersion,
    /// Whether this node has it loaded and serving.
    pub loaded: bool,
    /// Circuit breaker state on this node: `closed`, `open` or `half_open`.
    pub breaker: String,
}

/// Installed plugin versions (admins see all; a brand key sees the plugins that involve its
/// brand).
#[utoipa::path(get, path = "/plugins", tag = "plugins",
    responses(
        (status = 200, body = Vec<PluginView>),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn plugins_list(
    State(state): State<AppState>,
    principal: Principal,
) -> DomainResult<ApiJson<Vec<PluginView>>> {
    let brand_filter = match principal.role {
        Role::Admin => None,
        Role::Brand => principal.brand_id.clone(),
        _ => {
            return Err(DomainError::forbidden(
                "plugins are visible to admins and brands",
            ))
        }
    };
    let active = state.plugins.loaded();
    let views = registry::list(&state.store)
        .await?
        .into_iter()
        .filter(|v| brand_filter.as_ref().is_none_or(|b| v.brands.contains(b)))
        .map(|installed| {
            let loaded = active.iter().any(|a| a.version_id == installed.id);
            let breaker = state
                .plugins
                .runtime()
                .breaker_state(&installed.name, &installed.version);
            PluginView {
                installed,
                loaded,
                breaker: format!("{breaker:?}").to_lowercase(),
            }
        })
        .collect();
    Ok(ApiJson(views))
}

/// Which receipts to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReceiptQuery {
    /// What the decision was used for, e.g. `purchase`.
    pub subject_kind: String,
    /// Id of that subject, e.g. a purchase id.
    pub subject_id: String,
}

/// Receipts of the plugin decisions used for one subject (admins).
#[utoipa::path(get, path = "/receipts", tag = "plugins", params(ReceiptQuery),
    responses(
        (status = 200, body = Vec<StoredReceipt>),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn receipts_list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ReceiptQuery>,
) -> DomainResult<ApiJson<Vec<StoredReceipt>>> {
    principal.require_admin()?;
    check_path_id("subject", &query.subject_id)?;
    Ok(ApiJson(
        receipts::for_subject(&state.store, &query.subject_kind, &query.subject_id).await?,
    ))
}

/// Which of a version's calls to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionCallsQuery {
    /// Only this hook, e.g. `points-bonus`.
    pub hook: Option<String>,
    /// The page before this receipt id (the last of the previous page).
    pub before: Option<String>,
    /// At most this many (default 50, at most 200).
    pub limit: Option<i64>,
}

/// A version's recorded calls, newest first, each with its input as the plugin saw it (the
/// member context is pseudonymous): what the brand that ships it downloads to replay its hooks
/// locally (that brand, or an admin; a co-signing brand gets 403, others 404).
#[utoipa::path(get, path = "/plugins/{version_id}/receipts", tag = "plugins",
    params(("version_id" = String, Path), VersionCallsQuery),
    responses(
        (status = 200, body = Vec<RecordedCall>),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn plugin_receipts(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(version_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<VersionCallsQuery>,
) -> DomainResult<ApiJson<Vec<RecordedCall>>> {
    check_path_id("plugin version", &version_id)?;
    let version = lifecycle::own_version(&state.store, &principal, &version_id).await?;
    if let Some(before) = &query.before {
        check_path_id("receipt", before)?;
    }
    let limit = query.limit.unwrap_or(50);
    if !(1..=receipts::MAX_RECEIPTS_PAGE).contains(&limit) {
        return Err(DomainError::validation(format!(
            "limit must be 1..={}",
            receipts::MAX_RECEIPTS_PAGE
        )));
    }
    Ok(ApiJson(
        receipts::for_version(
            &state.store,
            &version.name,
            &version.version,
            query.hook.as_deref(),
            query.before.as_deref(),
            limit,
        )
        .await?,
    ))
}

/// How a version is doing: per hook, fuel and duration percentiles over its newest recorded
/// calls; its failures by hook and stable code; its breaker state on this node.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VersionStats {
    /// The version.
    pub id: String,
    /// Plugin name.
    pub plugin: String,
    /// Plugin version.
    pub version: String,
    /// Whether this node has it loaded.
    pub loaded: bool,
    /// Its circuit breaker on this node: `closed`, `open` or `half_open`.
    pub breaker: String,
    /// Per hook, over the newest recorded calls.
    pub hooks: Vec<HookStats>,
    /// Failures by hook and code.
    pub failures: Vec<FailureCount>,
    /// Calls, fuel, duration and failures per UTC day, oldest first.
    pub daily: Vec<DayStats>,
}

/// A version's fuel and latency percentiles, failures by kind and breaker state (the brand
/// that ships it, or an admin; a co-signing brand gets 403, others 404).
#[utoipa::path(get, path = "/plugins/{version_id}/stats", tag = "plugins",
    params(("version_id" = String, Path)),
    responses(
        (status = 200, body = VersionStats),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn plugin_stats(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(version_id): ApiPath<String>,
) -> DomainResult<ApiJson<VersionStats>> {
    check_path_id("plugin version", &version_id)?;
    let version = lifecycle::own_version(&state.store, &principal, &version_id).await?;
    let calls = receipts::newest_calls(&state.store, &version.name, &version.version).await?;
    let hooks = receipts::hook_stats(&calls);
    let failures = receipts::failures(&state.store, &version.name, &version.version).await?;
    let daily =
        receipts::daily_stats(&state.store, &version.name, &version.version, &calls).await?;
    let loaded = state
        .plugins
        .loaded()
        .iter()
        .any(|p| p.version_id == version.id);
    let breaker = state
        .plugins
        .runtime()
        .breaker_state(&version.name, &version.version);
    Ok(ApiJson(VersionStats {
        id: version.id,
        plugin: version.name,
        version: version.version,
        loaded,
        breaker: format!("{breaker:?}").to_lowercase(),
        hooks,
        failures,
        daily,
    }))
}

/// The outcome of re-running a receipt's input.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplayView {
    /// True when the replay produced the recorded output, bit for bit.
    pub matches: bool,
    /// Output hash in the receipt.
    pub recorded_output_sha256: String,
    /// Output hash of the replay.
    pub replayed_output_sha256: String,
    /// Fuel in the receipt.
    pub recorded_fuel_used: u64,
    /// Fuel of the replay.
    pub replayed_fuel_used: u64,
}

/// Re-runs a receipt's recorded input on the same component and compares the output (admins):
/// the proof of what a plugin decided.
#[utoipa::path(post, path = "/receipts/{receipt_id}/replay", tag = "plugins",
    params(("receipt_id" = String, Path, description = "Receipt id")),
    responses(
        (status = 200, body = ReplayView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`plugin_not_loaded`: the receipt's version is not loaded on this node"),
    ))]
pub async fn receipts_replay(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(receipt_id): ApiPath<String>,
) -> DomainResult<ApiJson<ReplayView>> {
    principal.require_admin()?;
    check_path_id("receipt", &receipt_id)?;
    let receipt = receipts::load_for_replay(&state.store, &receipt_id).await?;
    let plugin = state
        .plugins
        .loaded()
        .iter()
        .find(|a| a.plugin.component_sha256() == receipt.component_sha256)
        .map(|a| a.plugin.clone())
        .ok_or_else(|| {
            DomainError::conflict(
                "plugin_not_loaded",
                format!(
                    "{}@{} is not loaded on this node",
                    receipt.plugin, receipt.version
                ),
            )
        })?;
    let report = tokio::task::spawn_blocking(move || plugin.replay(&receipt))
        .await
        .map_err(DomainError::internal)?
        .map_err(|err| DomainError::unprocessable("replay_failed", err.to_string()))?;
    Ok(ApiJson(ReplayView {
        matches: report.matches,
        recorded_output_sha256: report.recorded_output_sha256,
        replayed_output_sha256: report.replayed_output_sha256,
        recorded_fuel_used: report.recorded_fuel_used,
        replayed_fuel_used: report.replayed_fuel_used,
    }))
}
