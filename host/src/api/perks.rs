//! The perks a member can see now, from every active plugin (fail-open).

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::points::check_path_id;
use crate::api::AppState;
use crate::auth::Principal;
use crate::error::{ApiJson, ApiPath, ApiResult, Problem};
use coalition_runtime::model::{Grant, Perk};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(perks_list))
}

/// What a perk grants.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum GrantView {
    /// A coupon from this template.
    Coupon(String),
    /// This free item (sku) at the honouring brand.
    FreeItem(String),
    /// This discount in cents on the next purchase at the honouring brand.
    DiscountCents(i64),
}

/// A perk as a member sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PerkView {
    /// Plugin that offers it.
    pub plugin: String,
    /// Version of that plugin.
    pub plugin_version: String,
    /// Perk id, unique within the plugin.
    pub id: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Brand that pays for it.
    pub funding_brand: String,
    /// Brand that hands it over.
    pub honouring_brand: String,
    /// Points it costs.
    pub cost_points: i64,
    /// Face value in cents.
    pub value_cents: i64,
    /// What it grants.
    pub grant: GrantView,
    /// Last moment it can be redeemed, Unix ms.
    pub valid_until_ms: Option<i64>,
    /// Whether the member's balance covers the cost now.
    pub affordable: bool,
}

/// A plugin left out of the listing because it failed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UnavailablePlugin {
    /// Plugin name.
    pub plugin: String,
    /// Plugin version.
    pub version: String,
    /// Stable failure kind, e.g. `fuel_exhausted`, `circuit_open`.
    pub failure: String,
}

/// The perks listing.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PerksList {
    /// The perks, in plugin order.
    pub perks: Vec<PerkView>,
    /// Plugins that failed and whose perks are missing (the rest are still shown).
    pub unavailable: Vec<UnavailablePlugin>,
}

fn view(plugin: &str, version: &str, perk: &Perk, balance: i64) -> PerkView {
    PerkView {
        plugin: plugin.to_owned(),
        plugin_version: version.to_owned(),
        id: perk.id.clone(),
        title: perk.title.clone(),
        description: perk.description.clone(),
        funding_brand: perk.funding_brand.clone(),
        honouring_brand: perk.honouring_brand.clone(),
        cost_points: perk.cost_points,
        value_cents: perk.value_cents,
        grant: match &perk.grant {
            Grant::Coupon(t) => GrantView::Coupon(t.clone()),
            Grant::FreeItem(s) => GrantView::FreeItem(s.clone()),
            Grant::DiscountCents(c) => GrantView::DiscountCents(*c),
        },
        valid_until_ms: perk.valid_until_ms,
        affordable: balance >= perk.cost_points,
    }
}

/// Perks the member may see now, from every active plugin. A failing plugin is left out and
/// named in `unavailable`; the others are still shown.
#[utoipa::path(get, path = "/members/{member_id}/perks", tag = "perks",
    params(("member_id" = String, Path, description = "Member id")),
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
) -> ApiResult<ApiJson<PerksList>> {
    check_path_id("member", &member_id)?;
    principal.require_member_read(&member_id)?;
    let now_ms = state.now_ms();
    let mut conn = state.store.read().acquire().await?;
    let (member, blocked) =
        crate::plugins::context::member_context(&mut conn, &state.config, &member_id, now_ms)
            .await?;
    drop(conn);
    if blocked {
        return Err(crate::ledger::member_blocked(&member_id));
    }
    let balance = member.points_balance;
    let invocation = state
        .plugins
        .invocation(now_ms, "", &format!("perks:{member_id}"));
    let listing = state.plugins.list_perks(invocation, member).await;
    let perks = listing
        .perks
        .iter()
        .flat_map(|p| {
            p.decision
                .value
                .iter()
                .filter(|perk| perk.valid_until_ms.is_none_or(|until| until >= now_ms))
                .map(|perk| view(&p.plugin, &p.version, perk, balance))
        })
        .collect();
    let unavailable = listing
        .failures
        .iter()
        .map(|f| UnavailablePlugin {
            plugin: f.plugin.clone(),
            version: f.version.clone(),
            failure: f.kind.code().to_owned(),
        })
        .collect();
    Ok(ApiJson(PerksList { perks, unavailable }))
}
