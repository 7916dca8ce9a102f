//! Perks a member can see and redeem: plugin offers merged with host-side inventory and limits.
//!
//! # Listing
//! Every serving plugin's `list-perks` runs in parallel and fails open. Each plugin's result is
//! cached per member and plugin version ([`PerkCache`]) under a fingerprint of everything the
//! call depends on (the member context, the version's config, the local day): plugins are
//! deterministic, so a hit is what the plugin would answer now. Only successes are cached, one
//! plugin at a time, so a broken plugin is asked again on every listing (its failure may be
//! transient) while the healthy ones are answered from the cache. Stock, limits and the balance are read fresh on
//! every listing, so a sold-out perk, a perk over the member's limits, or one the member cannot
//! afford is never shown.
//!
//! # Redemption, in one transaction
//! 0. before it, authorization: the member's own key, an admin, or a counter of the brand that
//!    honours the perk as the plugin offers it to the member
//!    ([`authorize_counter_redemption`]) — never after a business rule has answered;
//! 1. lock the wallet (refuses blocked members; expires due lots);
//! 2. check the inventory row (active, within its window, not sold out) and count the member's
//!    redemptions of the perk (the wallet lock serialises them): the tier's limit (or the
//!    per-member limit) and the per-period limit;
//! 3. build the member context under that lock and ask the plugin's `redeem-perk` (fail closed);
//! 4. the grant must still be honoured by the counter's brand (checked again); the granted cost
//!    may not exceed the cost the member was shown (`expected_cost_points`);
//! 5. risk checks ([`crate::domain::risk::check_redemption`]);
//! 6. debit the granted cost as a `spend` entry to the funding brand's redemption account
//!    (a direct debit: a hold would be created and captured inside the same transaction, which
//!    adds postings without adding safety);
//! 7. issue the granted coupon (or record the granted item or discount), store the receipt;
//! 8. take one unit of stock with a guarded `UPDATE … WHERE remaining > 0` — last, so the hot
//!    inventory row is locked only until commit;
//! 9. write the redemption, record it for the risk limits and record a `perk-redeemed` event.
//!
//! Any refusal rolls everything back. Lock order is wallet, then inventory row, everywhere
//! (refunds too), so concurrent redemptions cannot deadlock.
//!
//! Perks without an inventory row have unlimited stock and no host-side limits: the plugin
//! alone decides.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use coalition_runtime::model::{Grant, Hook, MemberContext, Perk, RedeemDecision, RedeemRequest};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::domain::access::{Principal, Role};
use crate::domain::coupons::IssuedCoupon;
use crate::foundation::clock::{self, DAY_MS};
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::{new_id, Backend};
use crate::ledger::outbox::{self, EventKind, NewEvent};
use crate::ledger::{self, Account, Entry, EntryKind, EntryRefs, PointsConfig, RestoreExpiry};
use crate::workflows::Services;

/// Longest plugin name or perk id in a path (the plugin contract allows 64 bytes).
pub const MAX_PERK_ID_LEN: usize = 64;
/// Longest device id: app install ids and terminal ids are UUID-sized.
pub const MAX_DEVICE_ID_LEN: usize = 100;
/// Most tiers in one perk's `tier_limits` (ladders have a handful of tiers).
pub const MAX_TIER_LIMITS: usize = 16;
/// Inventory rows listed at once (per plugin when listing perks; per page otherwise).
pub const MAX_INVENTORY_ROWS: i64 = 500;
/// Redemptions shown in one member history page.
pub const MAX_REDEMPTIONS_PAGE: i64 = 100;

/// The `[perks]` configuration section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PerksConfig {
    /// How long one plugin's perk listing for a member is reused (only while its inputs are
    /// unchanged).
    pub list_cache_ttl_ms: u64,
    /// Listings cached, one per member and serving plugin version; bounds memory.
    pub list_cache_entries: u64,
    /// How long a checkout keeps its coupons reserved.
    pub checkout_ttl_ms: i64,
    /// Most coupons on one order, whatever the coupon plugins allow.
    pub max_coupons_per_order: usize,
    /// How long the coupon a free-item or discount perk issues stays valid, days: the member
    /// shows it at the honouring brand's counter.
    pub grant_validity_days: i64,
}

impl Default for PerksConfig {
    fn default() -> Self {
        Self {
            list_cache_ttl_ms: 10_000,
            // A listing is a few hundred bytes: 500,000 (100,000 members × 5 plugins) stay
            // well under 200 MiB.
            list_cache_entries: 500_000,
            checkout_ttl_ms: 15 * 60 * 1000,
            max_coupons_per_order: 3,
            grant_validity_days: 30,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The listing cache

/// One plugin version's perks for one member, valid while its fingerprint matches.
#[derive(Debug)]
pub struct CachedListing {
    fingerprint: [u8; 32],
    plugin: String,
    version: String,
    perks: Vec<Perk>,
}

/// Plugin perk listings per (member, plugin version id).
pub type PerkCache = moka::sync::Cache<(String, String), Arc<CachedListing>>;

/// A cache sized and timed by `[perks]`.
pub fn perk_cache(config: &PerksConfig) -> PerkCache {
    moka::sync::Cache::builder()
        .max_capacity(config.list_cache_entries)
        .time_to_live(Duration::from_millis(config.list_cache_ttl_ms.max(1)))
        .build()
}

// ---------------------------------------------------------------------------------------------
// Inventory

/// Inventory and limits of one perk, as set by its funding brand or an admin.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryRequest {
    /// Brand that funds the perk (a brand key may only set its own perks).
    pub funding_brand: String,
    /// Units that may ever be redeemed; absent = unlimited. Lowering it below what was already
    /// redeemed is refused.
    #[serde(default)]
    pub total_stock: Option<i64>,
    /// Redemptions per member over the perk's life; absent = no limit.
    #[serde(default)]
    pub per_member_limit: Option<i64>,
    /// Redemptions per member by tier code (overrides `per_member_limit` at that tier).
    #[serde(default)]
    pub tier_limits: BTreeMap<String, i64>,
    /// `none`, `day`, `week` (from Monday) or `month`, in the programme's local time.
    #[serde(default = "default_period")]
    pub period: String,
    /// Redemptions per member per period; absent = no limit.
    #[serde(default)]
    pub per_period_limit: Option<i64>,
    /// First moment it may be redeemed, Unix ms.
    #[serde(default)]
    pub starts_at_ms: Option<i64>,
    /// First moment it may no longer be redeemed, Unix ms.
    #[serde(default)]
    pub ends_at_ms: Option<i64>,
    /// `active` or `paused`.
    #[serde(default = "default_status")]
    pub status: String,
}

fn default_period() -> String {
    "none".to_owned()
}

fn default_status() -> String {
    "active".to_owned()
}

/// A perk's inventory and limits.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InventoryView {
    /// Plugin.
    pub plugin: String,
    /// Perk id.
    pub perk_id: String,
    /// Funding brand.
    pub funding_brand: String,
    /// Total stock; absent = unlimited.
    pub total_stock: Option<i64>,
    /// Units left; absent = unlimited.
    pub remaining: Option<i64>,
    /// Per-member limit.
    pub per_member_limit: Option<i64>,
    /// Per-member limits by tier.
    pub tier_limits: BTreeMap<String, i64>,
    /// Period of `per_period_limit`.
    pub period: String,
    /// Per-member limit per period.
    pub per_period_limit: Option<i64>,
    /// Window start, Unix ms.
    pub starts_at_ms: Option<i64>,
    /// Window end, Unix ms.
    pub ends_at_ms: Option<i64>,
    /// `active` or `paused`.
    pub status: String,
}

type InventoryRow = (
    String,
    String,
    String,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    String,
    String,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    String,
);

const INVENTORY_COLUMNS: &str = "plugin, perk_id, funding_brand, total_stock, remaining, \
    per_member_limit, tier_limits, period, per_period_limit, starts_at, ends_at, status";

fn to_inventory(row: InventoryRow) -> InventoryView {
    let (plugin, perk_id, funding_brand, total, remaining, per_member, tiers, period, per_period) = (
        row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8,
    );
    InventoryView {
        plugin,
        perk_id,
        funding_brand,
        total_stock: total,
        remaining,
        per_member_limit: per_member,
        tier_limits: serde_json::from_str(&tiers).unwrap_or_default(),
        period,
        per_period_limit: per_period,
        starts_at_ms: row.9,
        ends_at_ms: row.10,
        status: row.11,
    }
}

/// Checks a plugin name or perk id taken from a path.
pub fn check_perk_path(field: &str, value: &str) -> DomainResult<()> {
    if value.is_empty()
        || value.len() > MAX_PERK_ID_LEN
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(DomainError::validation(format!(
            "{field} must be 1..={MAX_PERK_ID_LEN} letters, digits, '-', '_' or '.'"
        )));
    }
    Ok(())
}

fn check_limit(field: &str, value: Option<i64>) -> DomainResult<()> {
    if value.is_some_and(|v| !(0..=ledger::MAX_POINTS_PER_OPERATION).contains(&v)) {
        return Err(DomainError::validation(format!(
            "{field} must be 0..={}",
            ledger::MAX_POINTS_PER_OPERATION
        )));
    }
    Ok(())
}

/// One perk's inventory; `None` if it has none (unlimited).
pub async fn inventory(
    conn: &mut AnyConnection,
    plugin: &str,
    perk_id: &str,
) -> DomainResult<Option<InventoryView>> {
    let row: Option<InventoryRow> = sqlx::query_as(&format!(
        "SELECT {INVENTORY_COLUMNS} FROM perk_inventory WHERE plugin = $1 AND perk_id = $2"
    ))
    .bind(plugin)
    .bind(perk_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(to_inventory))
}

/// Every inventory row, by plugin and perk id.
pub async fn inventories(conn: &mut AnyConnection) -> DomainResult<Vec<InventoryView>> {
    let rows: Vec<InventoryRow> = sqlx::query_as(&format!(
        "SELECT {INVENTORY_COLUMNS} FROM perk_inventory ORDER BY plugin, perk_id LIMIT $1"
    ))
    .bind(MAX_INVENTORY_ROWS)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(to_inventory).collect())
}

/// Whether `principal` may set the inventory of `plugin`/`perk_id` as `funding_brand`, decided
/// before the request is validated or the row touched: an admin, or a brand key of the funding
/// brand, where an approved or active version of the plugin names that brand in its signed
/// manifest (a perk is funded only by a brand of its plugin) and an existing row is funded by it.
pub async fn authorize_inventory(
    state: &Services,
    principal: &Principal,
    plugin: &str,
    perk_id: &str,
    funding_brand: &str,
) -> DomainResult<()> {
    principal.require_brand(funding_brand)?;
    if principal.is_admin() {
        return Ok(());
    }
    let mut conn = state.store.read().acquire().await?;
    let manifests: Vec<(String,)> = sqlx::query_as(
        "SELECT brands FROM plugin_versions WHERE name = $1 AND status IN ('approved', 'active')",
    )
    .bind(plugin)
    .fetch_all(&mut *conn)
    .await?;
    let named = manifests.iter().any(|(brands,)| {
        serde_json::from_str::<Vec<String>>(brands)
            .is_ok_and(|brands| brands.iter().any(|b| b == funding_brand))
    });
    if !named {
        return Err(DomainError::forbidden(format!(
            "no approved version of plugin {plugin} names brand {funding_brand:?}: a brand sets \
             the inventory only of perks its own plugins offer"
        )));
    }
    if let Some(existing) = inventory(&mut conn, plugin, perk_id).await? {
        if existing.funding_brand != funding_brand {
            return Err(DomainError::forbidden(format!(
                "perk {plugin}/{perk_id} is funded by {:?}; only that brand or an admin may set \
                 its inventory",
                existing.funding_brand
            )));
        }
    }
    Ok(())
}

/// Creates or replaces a perk's inventory and limits, in the caller's transaction. Stock that
/// was already redeemed stays redeemed: `remaining` moves by the change of `total_stock`.
pub async fn put_inventory(
    conn: &mut AnyConnection,
    plugin: &str,
    perk_id: &str,
    req: &InventoryRequest,
    now_ms: i64,
) -> DomainResult<InventoryView> {
    check_perk_path("plugin", plugin)?;
    check_perk_path("perk_id", perk_id)?;
    check_limit("total_stock", req.total_stock)?;
    check_limit("per_member_limit", req.per_member_limit)?;
    check_limit("per_period_limit", req.per_period_limit)?;
    if req.tier_limits.len() > MAX_TIER_LIMITS {
        return Err(DomainError::validation(format!(
            "tier_limits has at most {MAX_TIER_LIMITS} tiers"
        )));
    }
    for (tier, limit) in &req.tier_limits {
        check_perk_path("tier_limits key", tier)?;
        check_limit("tier_limits value", Some(*limit))?;
    }
    if !["none", "day", "week", "month"].contains(&req.period.as_str()) {
        return Err(DomainError::validation(
            "period must be none, day, week or month",
        ));
    }
    if (req.period == "none") != req.per_period_limit.is_none() {
        return Err(DomainError::validation(
            "per_period_limit and a period other than none go together",
        ));
    }
    if !["active", "paused"].contains(&req.status.as_str()) {
        return Err(DomainError::validation("status must be active or paused"));
    }
    if let (Some(start), Some(end)) = (req.starts_at_ms, req.ends_at_ms) {
        if end <= start {
            return Err(DomainError::validation(
                "ends_at_ms must be after starts_at_ms",
            ));
        }
    }
    ledger::require_brand_exists(conn, &req.funding_brand).await?;
    let tier_limits = serde_json::to_string(&req.tier_limits).map_err(DomainError::internal)?;
    let existing = inventory(conn, plugin, perk_id).await?;
    let remaining = match (&existing, req.total_stock) {
        (_, None) => None,
        (
            Some(InventoryView {
                total_stock: Some(old_total),
                remaining: Some(old_remaining),
                ..
            }),
            Some(total),
        ) => {
            let redeemed = old_total - old_remaining;
            if total < redeemed {
                return Err(DomainError::conflict(
                    "stock_below_redeemed",
                    format!(
                        "{redeemed} units are already redeemed; total_stock must be at least that"
                    ),
                ));
            }
            Some(total - redeemed)
        }
        (_, Some(total)) => {
            // From unlimited to limited: what was redeemed so far counts against the new stock.
            let (redeemed,): (i64,) = sqlx::query_as(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM perk_redemptions
                 WHERE plugin = $1 AND perk_id = $2 AND status = 'redeemed'",
            )
            .bind(plugin)
            .bind(perk_id)
            .fetch_one(&mut *conn)
            .await?;
            Some((total - redeemed).max(0))
        }
    };
    if let Some(existing) = &existing {
        if existing.funding_brand != req.funding_brand {
            return Err(DomainError::conflict(
                "perk_funding_brand_mismatch",
                format!(
                    "perk {plugin}/{perk_id} is funded by {:?}",
                    existing.funding_brand
                ),
            ));
        }
        sqlx::query(
            "UPDATE perk_inventory SET total_stock = $1, remaining = $2, per_member_limit = $3,
                tier_limits = $4, period = $5, per_period_limit = $6, starts_at = $7, ends_at = $8,
                status = $9, updated_at = $10
             WHERE plugin = $11 AND perk_id = $12",
        )
        .bind(req.total_stock)
        .bind(remaining)
        .bind(req.per_member_limit)
        .bind(&tier_limits)
        .bind(&req.period)
        .bind(req.per_period_limit)
        .bind(req.starts_at_ms)
        .bind(req.ends_at_ms)
        .bind(&req.status)
        .bind(now_ms)
        .bind(plugin)
        .bind(perk_id)
        .execute(&mut *conn)
        .await?;
    } else {
        sqlx::query(
            "INSERT INTO perk_inventory (plugin, perk_id, funding_brand, total_stock, remaining,
                per_member_limit, tier_limits, period, per_period_limit, starts_at, ends_at,
                status, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)",
        )
        .bind(plugin)
        .bind(perk_id)
        .bind(&req.funding_brand)
        .bind(req.total_stock)
        .bind(remaining)
        .bind(req.per_member_limit)
        .bind(&tier_limits)
        .bind(&req.period)
        .bind(req.per_period_limit)
        .bind(req.starts_at_ms)
        .bind(req.ends_at_ms)
        .bind(&req.status)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    }
    inventory(conn, plugin, perk_id)
        .await?
        .ok_or_else(|| DomainError::internal(anyhow::anyhow!("inventory vanished after write")))
}

// ---------------------------------------------------------------------------------------------
// Limits

/// Starts of the current local day, week (Monday) and month.
#[derive(Debug, Clone, Copy)]
struct PeriodStarts {
    day: i64,
    week: i64,
    month: i64,
}

fn period_starts(now_ms: i64, utc_offset_minutes: i64) -> DomainResult<PeriodStarts> {
    let local_days = clock::local_day(now_ms, utc_offset_minutes);
    let day = clock::local_day_start_ms(local_days, utc_offset_minutes);
    // 1970-01-01 was a Thursday: Monday is 3 days earlier.
    let since_monday = (local_days + 3).rem_euclid(7);
    let week = day - since_monday * DAY_MS;
    let (year, month) = clock::local_year_month(now_ms, utc_offset_minutes)?;
    let month = clock::local_month_start_ms(
        i64::from(year) * 12 + i64::from(month) - 1,
        utc_offset_minutes,
    )?;
    Ok(PeriodStarts { day, week, month })
}

/// A member's live redemptions of one perk: in total and in each current period.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    total: i64,
    day: i64,
    week: i64,
    month: i64,
}

impl Counts {
    fn in_period(&self, period: &str) -> i64 {
        match period {
            "day" => self.day,
            "week" => self.week,
            "month" => self.month,
            _ => 0,
        }
    }
}

async fn member_counts(
    conn: &mut AnyConnection,
    member_id: &str,
    starts: PeriodStarts,
) -> DomainResult<BTreeMap<(String, String), Counts>> {
    let rows: Vec<(String, String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT plugin, perk_id, CAST(COUNT(*) AS BIGINT),
                CAST(SUM(CASE WHEN created_at >= $2 THEN 1 ELSE 0 END) AS BIGINT),
                CAST(SUM(CASE WHEN created_at >= $3 THEN 1 ELSE 0 END) AS BIGINT),
                CAST(SUM(CASE WHEN created_at >= $4 THEN 1 ELSE 0 END) AS BIGINT)
         FROM perk_redemptions WHERE member_id = $1 AND status = 'redeemed'
         GROUP BY plugin, perk_id",
    )
    .bind(member_id)
    .bind(starts.day)
    .bind(starts.week)
    .bind(starts.month)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(plugin, perk, total, day, week, month)| {
            (
                (plugin, perk),
                Counts {
                    total,
                    day,
                    week,
                    month,
                },
            )
        })
        .collect())
}

/// Why a perk cannot be redeemed now by this member, host-side; `None` if it can. Also the
/// redemptions the member has left under the tightest limit.
fn host_refusal(
    inv: &InventoryView,
    tier: &str,
    counts: Counts,
    now_ms: i64,
) -> (Option<DomainError>, Option<i64>) {
    let name = format!("{}/{}", inv.plugin, inv.perk_id);
    if inv.status != "active" {
        return (
            Some(DomainError::unprocessable(
                "perk_paused",
                format!("perk {name} is paused"),
            )),
            None,
        );
    }
    let before = inv.starts_at_ms.is_some_and(|s| now_ms < s);
    let after = inv.ends_at_ms.is_some_and(|e| now_ms >= e);
    if before || after {
        return (
            Some(DomainError::unprocessable(
                "perk_outside_window",
                format!("perk {name} cannot be redeemed at this time"),
            )),
            None,
        );
    }
    if inv.remaining == Some(0) {
        return (
            Some(DomainError::conflict(
                "perk_sold_out",
                format!("perk {name} is sold out"),
            )),
            None,
        );
    }
    let mut left: Option<i64> = None;
    let member_limit = inv.tier_limits.get(tier).copied().or(inv.per_member_limit);
    if let Some(limit) = member_limit {
        if counts.total >= limit {
            return (
                Some(
                    DomainError::unprocessable(
                        "perk_limit_reached",
                        format!(
                            "perk {name} may be redeemed {limit} times per member at this tier"
                        ),
                    )
                    .with_extra(serde_json::json!({ "limit": limit, "tier": tier })),
                ),
                Some(0),
            );
        }
        left = Some(limit - counts.total);
    }
    if let Some(limit) = inv.per_period_limit {
        let used = counts.in_period(&inv.period);
        if used >= limit {
            return (
                Some(
                    DomainError::unprocessable(
                        "perk_period_limit_reached",
                        format!(
                            "perk {name} may be redeemed {limit} times per {} per member",
                            inv.period
                        ),
                    )
                    .with_extra(serde_json::json!({ "limit": limit, "period": inv.period })),
                ),
                Some(0),
            );
        }
        left = Some(left.map_or(limit - used, |l| l.min(limit - used)));
    }
    (None, left)
}

// ---------------------------------------------------------------------------------------------
// Listing

/// What a perk grants.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum GrantView {
    /// A coupon from this template.
    Coupon(String),
    /// This free item (sku) at the honouring brand.
    FreeItem(String),
    /// This discount in cents on the next purchase at the honouring brand.
    DiscountCents(i64),
}

impl From<&Grant> for GrantView {
    fn from(grant: &Grant) -> Self {
        match grant {
            Grant::Coupon(t) => GrantView::Coupon(t.clone()),
            Grant::FreeItem(s) => GrantView::FreeItem(s.clone()),
            Grant::DiscountCents(c) => GrantView::DiscountCents(*c),
        }
    }
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
    /// Units left; absent = unlimited.
    pub remaining_stock: Option<i64>,
    /// Redemptions the member has left under the perk's limits; absent = no limit.
    pub redemptions_left: Option<i64>,
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

/// The part of a `list-perks` fingerprint every plugin shares: the member and the local day.
fn member_fingerprint(member: &MemberContext, local_day: i64) -> Sha256 {
    let mut hasher = Sha256::new();
    hasher.update(serde_json::to_vec(member).unwrap_or_default());
    hasher.update(local_day.to_le_bytes());
    hasher
}

/// The fingerprint of everything one plugin's `list-perks` call depends on: with
/// `coalition:plugin@0.2.0`, the budgets left too (`budgets`, their canonical JSON).
fn fingerprint(shared: &Sha256, plugin: &crate::plugins::ActivePlugin, budgets: &[u8]) -> [u8; 32] {
    let mut hasher = shared.clone();
    hasher.update(plugin.version_id.as_bytes());
    hasher.update([0]);
    hasher.update(serde_json::to_vec(&plugin.config).unwrap_or_default());
    if plugin.plugin.manifest().wit != coalition_runtime::WitVersion::V0_1_0 {
        hasher.update([0]);
        hasher.update(budgets);
    }
    hasher.finalize().into()
}

/// What the serving plugins' `list-perks` offer `member` (one entry per healthy plugin, in
/// serving order), through the listing cache, and the plugins that failed (their offers are
/// missing).
async fn plugin_offers(
    state: &Services,
    member: MemberContext,
    now_ms: i64,
) -> (Vec<Arc<CachedListing>>, Vec<UnavailablePlugin>) {
    let offset = state.settings.points.utc_offset_minutes;
    let member_id = member.member_ref.clone();
    let serving: Vec<crate::plugins::ActivePlugin> = state
        .plugins
        .serving(&member.member_ref)
        .into_iter()
        .filter(|p| p.plugin.implements(Hook::ListPerks))
        .collect();
    let local_day = clock::local_day(now_ms, offset);
    let shared = member_fingerprint(&member, local_day);
    // Budgets left, read only when a 0.2.0 plugin serves; a failed read lists without them
    // (redemption enforces them in its own transaction whatever the listing showed).
    let plain = state
        .plugins
        .invocation(now_ms, "", &format!("perks:{member_id}"));
    let invocation = match state.store.read().acquire().await {
        Ok(mut conn) => state
            .plugins
            .with_budgets(plain.clone(), &mut conn, serving.iter().map(|p| &p.plugin))
            .await
            .unwrap_or_else(|err| {
                tracing::warn!(error = %err, "budgets not read for a perk listing");
                plain
            }),
        Err(err) => {
            tracing::warn!(error = %err, "budgets not read for a perk listing");
            plain
        }
    };
    let budgets = serde_json::to_vec(&invocation.budgets).unwrap_or_default();
    // Per serving plugin: its cached listing, or the fingerprint a fresh one will carry.
    let mut found: Vec<Option<Arc<CachedListing>>> = Vec::with_capacity(serving.len());
    let mut misses = Vec::new();
    for active in &serving {
        let print = fingerprint(&shared, active, &budgets);
        let hit = state
            .perk_cache
            .get(&(member_id.clone(), active.version_id.clone()))
            .filter(|c| c.fingerprint == print);
        let outcome = if hit.is_some() { "hit" } else { "miss" };
        metrics::counter!("perk_list_cache_total", "outcome" => outcome).increment(1);
        if hit.is_none() {
            misses.push((active.clone(), print));
        }
        found.push(hit);
    }
    let mut unavailable = Vec::new();
    if !misses.is_empty() {
        let asked = misses.iter().map(|(active, _)| active.clone()).collect();
        let listing = state.plugins.list_perks(invocation, member, asked).await;
        for listed in listing.perks {
            let Some((active, print)) = misses.iter().find(|(p, _)| {
                p.plugin.name() == listed.plugin && p.plugin.version() == listed.version
            }) else {
                continue;
            };
            crate::plugins::dryrun::spawn_shadow(
                &state.store,
                &state.plugins,
                &state.clock,
                active,
                &listed.decision.receipt,
                &serde_json::to_string(&listed.decision.value).unwrap_or_default(),
                &member_id,
            );
            let fresh = Arc::new(CachedListing {
                fingerprint: *print,
                plugin: listed.plugin,
                version: listed.version,
                perks: listed.decision.value,
            });
            state.perk_cache.insert(
                (member_id.clone(), active.version_id.clone()),
                Arc::clone(&fresh),
            );
            if let Some(slot) = serving
                .iter()
                .position(|p| p.version_id == active.version_id)
                .and_then(|i| found.get_mut(i))
            {
                *slot = Some(fresh);
            }
        }
        // A failure may be transient (an open circuit): it is never cached.
        unavailable = listing
            .failures
            .iter()
            .map(|f| UnavailablePlugin {
                plugin: f.plugin.clone(),
                version: f.version.clone(),
                failure: f.kind.code().to_owned(),
            })
            .collect();
    }
    (found.into_iter().flatten().collect(), unavailable)
}

/// The perks `member_id` may see now (see the module docs). With `include_unaffordable`, perks
/// the balance does not cover are shown with `affordable: false` (for "earn N more" hints).
pub async fn list(
    state: &Services,
    member_id: &str,
    include_unaffordable: bool,
) -> DomainResult<PerksList> {
    let now_ms = state.now_ms();
    let offset = state.settings.points.utc_offset_minutes;
    let mut conn = state.store.read().acquire().await?;
    let (member, blocked) = crate::plugins::context::member_context(
        &mut conn,
        &state.settings.tiers,
        member_id,
        now_ms,
    )
    .await?;
    if blocked {
        return Err(ledger::member_blocked(member_id));
    }
    let balance = member.points_balance;
    let tier = member.tier.clone();
    let (plugin_perks, unavailable) = plugin_offers(state, member, now_ms).await;

    let inventories: BTreeMap<(String, String), InventoryView> = inventories(&mut conn)
        .await?
        .into_iter()
        .map(|inv| ((inv.plugin.clone(), inv.perk_id.clone()), inv))
        .collect();
    let counts = member_counts(&mut conn, member_id, period_starts(now_ms, offset)?).await?;
    drop(conn);

    let mut perks = Vec::new();
    for listing in &plugin_perks {
        let (plugin, version) = (&listing.plugin, &listing.version);
        for perk in &listing.perks {
            if perk.valid_until_ms.is_some_and(|until| until < now_ms) {
                continue;
            }
            let key = (plugin.clone(), perk.id.clone());
            let (refusal, left) = match inventories.get(&key) {
                Some(inv) => host_refusal(
                    inv,
                    &tier,
                    counts.get(&key).copied().unwrap_or_default(),
                    now_ms,
                ),
                None => (None, None),
            };
            if refusal.is_some() {
                continue;
            }
            let affordable = balance >= perk.cost_points;
            if !affordable && !include_unaffordable {
                continue;
            }
            perks.push(PerkView {
                plugin: plugin.clone(),
                plugin_version: version.clone(),
                id: perk.id.clone(),
                title: perk.title.clone(),
                description: perk.description.clone(),
                funding_brand: perk.funding_brand.clone(),
                honouring_brand: perk.honouring_brand.clone(),
                cost_points: perk.cost_points,
                value_cents: perk.value_cents,
                grant: GrantView::from(&perk.grant),
                valid_until_ms: perk.valid_until_ms,
                affordable,
                remaining_stock: inventories.get(&key).and_then(|i| i.remaining),
                redemptions_left: left,
            });
        }
    }
    Ok(PerksList { perks, unavailable })
}

// ---------------------------------------------------------------------------------------------
// Redemption

/// A redemption request's body (all optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemBody {
    /// The cost the member saw; if the plugin now asks more, the redemption is refused with
    /// `perk_cost_changed` instead of charging more than shown.
    #[serde(default)]
    pub expected_cost_points: Option<i64>,
    /// The device (app install or counter terminal), for the risk limits; the `X-Device-Id`
    /// header is used when absent.
    #[serde(default)]
    pub device_id: Option<String>,
}

/// A redemption, as recorded.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RedemptionView {
    /// Redemption id.
    pub id: String,
    /// The member.
    pub member_id: String,
    /// Plugin.
    pub plugin: String,
    /// Plugin version that granted it.
    pub plugin_version: String,
    /// Perk id.
    pub perk_id: String,
    /// Funding brand.
    pub funding_brand: String,
    /// Honouring brand.
    pub honouring_brand: String,
    /// Points charged.
    pub points: i64,
    /// Face value, cents.
    pub value_cents: i64,
    /// What was granted.
    pub grant: GrantView,
    /// The coupon issued: for coupon grants, and for free items and discounts, which the
    /// honouring counter hands over against it.
    pub coupon: Option<IssuedCoupon>,
    /// `redeemed` or `reversed`.
    pub status: String,
    /// The receipt of the plugin's decision.
    pub receipt_id: String,
    /// Device it came from.
    pub device_id: Option<String>,
    /// Units left after this redemption; absent = unlimited.
    pub remaining_stock: Option<i64>,
    /// The member's spendable balance after it.
    pub balance_after: i64,
    /// When, Unix ms.
    pub created_at_ms: i64,
}

/// The version of `plugin_name` serving `member_id` that implements redeem-perk, or 404.
fn serving_perk_plugin(
    state: &Services,
    member_id: &str,
    plugin_name: &str,
) -> DomainResult<crate::plugins::ActivePlugin> {
    state
        .plugins
        .serving(member_id)
        .into_iter()
        .find(|p| p.plugin.name() == plugin_name && p.plugin.implements(Hook::RedeemPerk))
        .ok_or_else(|| DomainError::not_found("perk plugin", plugin_name))
}

/// Whether a counter key may redeem `plugin_name`/`perk_id` for `member_id`, decided before any
/// business rule (blocked member, stock, limits, the plugin's refusal): a counter redeems only
/// perks its own brand honours.
///
/// The plugin's signed manifest must name the counter's brand (a perk names only brands of its
/// plugin's manifest). If the manifest names other brands too, which of them honours this perk
/// is the plugin's to say: the perk as the plugin offers it to this member now (its `list-perks`,
/// through the listing cache, before the host's stock and limit filters) must be honoured by the
/// counter's brand; a perk the member is not offered cannot be redeemed at a counter. The grant
/// is checked again after `redeem-perk` (see [`redeem`]).
pub async fn authorize_counter_redemption(
    state: &Services,
    principal: &Principal,
    member_id: &str,
    plugin_name: &str,
    perk_id: &str,
) -> DomainResult<()> {
    if principal.role != Role::Counter {
        return Ok(());
    }
    let brand = principal.brand_id.as_deref().unwrap_or_default();
    let active = serving_perk_plugin(state, member_id, plugin_name)?;
    if !active.involves(brand) {
        return Err(DomainError::forbidden(format!(
            "plugin {plugin_name} does not name brand {brand:?}: a counter redeems only perks \
             its brand honours"
        )));
    }
    if active.plugin.manifest().brands.iter().all(|b| b == brand) {
        return Ok(());
    }
    let now_ms = state.now_ms();
    let member = {
        let mut conn = state.store.read().acquire().await?;
        crate::plugins::context::member_context(&mut conn, &state.settings.tiers, member_id, now_ms)
            .await?
            .0
    };
    let (offers, unavailable) = plugin_offers(state, member, now_ms).await;
    if let Some(failed) = unavailable.iter().find(|u| u.plugin == plugin_name) {
        return Err(DomainError::unavailable(
            "perk_plugin_failed",
            format!(
                "plugin {}@{} failed in list-perks ({}), so which brand honours {perk_id} is \
                 unknown; nothing was redeemed",
                failed.plugin, failed.version, failed.failure
            ),
        )
        .with_extra(crate::plugins::plugin_problem_extra(
            &failed.plugin,
            &failed.version,
            Hook::ListPerks,
            &failed.failure,
        )));
    }
    let honouring = offers
        .iter()
        .filter(|listing| listing.plugin == plugin_name)
        .flat_map(|listing| &listing.perks)
        .find(|perk| perk.id == perk_id)
        .map(|perk| perk.honouring_brand.as_str());
    match honouring {
        Some(honouring) if honouring == brand => Ok(()),
        Some(honouring) => Err(DomainError::forbidden(format!(
            "perk {plugin_name}/{perk_id} is honoured by {honouring:?}: only that brand's \
             counter, the member or an admin may redeem it"
        ))),
        None => Err(DomainError::forbidden(format!(
            "perk {plugin_name}/{perk_id} is not offered to this member now: a counter redeems \
             only a perk the member is offered, at the brand that honours it"
        ))),
    }
}

/// Redeems `plugin`/`perk_id` for `member_id` in the caller's transaction (see the module docs).
#[allow(clippy::too_many_arguments)]
pub async fn redeem(
    state: &Services,
    conn: &mut AnyConnection,
    principal: &Principal,
    member_id: &str,
    plugin_name: &str,
    perk_id: &str,
    body: &RedeemBody,
    device_id: Option<&str>,
    seed_subject: &str,
) -> DomainResult<RedemptionView> {
    let now_ms = state.now_ms();
    let backend = state.store.backend();
    let mut wallet = ledger::lock_wallet(conn, backend, member_id, now_ms).await?;
    wallet.require_active()?;

    let active = serving_perk_plugin(state, member_id, plugin_name)?;
    // Host-side refusals first: a sold-out perk or a spent limit never reaches the plugin.
    // Same-member redemptions are serialised by the wallet lock, so the counts are exact.
    let tier = wallet.tier.clone();
    let inv = inventory(conn, plugin_name, perk_id).await?;
    if let Some(inv) = &inv {
        let counts = member_counts(
            conn,
            member_id,
            period_starts(now_ms, state.settings.points.utc_offset_minutes)?,
        )
        .await?
        .remove(&(plugin_name.to_owned(), perk_id.to_owned()))
        .unwrap_or_default();
        if let (Some(refusal), _) = host_refusal(inv, &tier, counts, now_ms) {
            return Err(refusal);
        }
    }
    let (member, _) =
        crate::plugins::context::member_context(conn, &state.settings.tiers, member_id, now_ms)
            .await?;
    let redemption_id = new_id();
    let request = RedeemRequest {
        perk_id: perk_id.to_owned(),
        redemption_id: redemption_id.clone(),
    };
    let invocation = state.plugins.invocation(now_ms, "", seed_subject);
    let ctx = coalition_runtime::CallContext {
        invocation: state
            .plugins
            .with_budgets(invocation, conn, std::iter::once(&active.plugin))
            .await?,
        config: active.config.clone(),
    };
    let plugin = active.plugin.clone();
    let decision = tokio::task::spawn_blocking(move || plugin.redeem_perk(&ctx, &member, &request))
        .await
        .map_err(DomainError::internal)?
        .map_err(|err| {
            crate::plugins::fail_closed_problem(
                &err,
                Hook::RedeemPerk,
                "perk_input_invalid",
                "perk_plugin_failed",
                "nothing was redeemed",
            )
        })?;
    crate::plugins::dryrun::spawn_shadow(
        &state.store,
        &state.plugins,
        &state.clock,
        &active,
        &decision.receipt,
        &serde_json::to_string(&decision.value).unwrap_or_default(),
        &redemption_id,
    );
    let perk = match &decision.value {
        RedeemDecision::Granted(perk) => perk.clone(),
        RedeemDecision::Refused(reason) => {
            let mut extra = crate::plugins::plugin_problem_extra(
                &decision.receipt.plugin,
                &decision.receipt.version,
                Hook::RedeemPerk,
                "refused",
            );
            extra["perk_id"] = serde_json::json!(perk_id);
            return Err(
                DomainError::unprocessable("perk_refused", reason.clone()).with_extra(extra)
            );
        }
    };
    if principal.role == Role::Counter
        && principal.brand_id.as_deref() != Some(perk.honouring_brand.as_str())
    {
        return Err(DomainError::forbidden(format!(
            "only the honouring brand's counter ({:?}) may redeem this perk for a member",
            perk.honouring_brand
        )));
    }
    if let Some(expected) = body.expected_cost_points {
        if perk.cost_points > expected {
            return Err(DomainError::conflict(
                "perk_cost_changed",
                format!(
                    "the perk now costs {} points, more than the {expected} shown",
                    perk.cost_points
                ),
            ));
        }
    }
    ledger::require_brand_exists(conn, &perk.funding_brand).await?;
    ledger::require_brand_exists(conn, &perk.honouring_brand).await?;

    let what = format!("perk:{plugin_name}/{perk_id}");
    let attempt = crate::domain::risk::RedemptionAttempt {
        member_id,
        device_id,
        value_cents: perk.value_cents,
        what: &what,
        redemption_id: &redemption_id,
    };
    crate::domain::risk::check_redemption(conn, &state.settings.risk, &attempt, now_ms).await?;

    let spend_entry_id = if perk.cost_points > 0 {
        let refs = EntryRefs {
            brand_id: Some(perk.funding_brand.clone()),
            ..EntryRefs::default()
        };
        let mut entry =
            Entry::open(conn, EntryKind::Spend, member_id, &refs, &what, now_ms).await?;
        ledger::debit_fifo(
            conn,
            &mut entry,
            Account::Redemption(Some(&perk.funding_brand)),
            perk.cost_points,
            &what,
            now_ms,
        )
        .await?;
        wallet.balance -= perk.cost_points;
        Some(entry.close(conn, now_ms).await?)
    } else {
        None
    };

    // Every grant comes with a coupon: a coupon grant's own template, or for a free item or a
    // discount one the host makes and applies itself (see `coupons::HOST_RULES`).
    let template = crate::domain::coupons::template_for_grant(
        conn,
        plugin_name,
        &perk,
        state.settings.perks.grant_validity_days,
        now_ms,
    )
    .await?;
    let (item_sku, grant_cents, grant_kind) = match &perk.grant {
        Grant::Coupon(_) => (None, None, "coupon"),
        Grant::FreeItem(sku) => (Some(sku.clone()), None, "free-item"),
        Grant::DiscountCents(cents) => (None, Some(*cents), "discount-cents"),
    };
    let coupon = Some(
        crate::domain::coupons::issue(conn, &template, member_id, "perk", &redemption_id, now_ms)
            .await?,
    );
    let output = serde_json::to_string(&decision.value).unwrap_or_default();
    let receipt_id = crate::plugins::receipts::store_receipt(
        conn,
        &decision.receipt,
        &output,
        "redemption",
        &redemption_id,
        now_ms,
    )
    .await?;

    // The funding brand's perk budgets (for this plugin or all): a perk is not cut, so a budget
    // that cannot fund its whole value refuses the redemption, in this transaction.
    let reserved = crate::ledger::budgets::reserve(
        conn,
        backend,
        &perk.funding_brand,
        crate::ledger::budgets::BudgetKind::PerkValue,
        Some(plugin_name),
        None,
        perk.value_cents,
        crate::ledger::budgets::Grant::Whole,
        state.settings.points.utc_offset_minutes,
        now_ms,
    )
    .await?;
    if reserved.granted < perk.value_cents {
        return Err(crate::ledger::budgets::exhausted(
            &perk.funding_brand,
            reserved.limited_by.as_deref().unwrap_or_default(),
            perk.value_cents,
        ));
    }

    // Stock last: the one row every redemption of this perk contends on stays locked only
    // until commit.
    let mut remaining_stock = None;
    let mut stock_taken = 0i64;
    if let Some(InventoryView {
        total_stock: Some(_),
        ..
    }) = &inv
    {
        let taken = sqlx::query(
            "UPDATE perk_inventory SET remaining = remaining - 1, updated_at = $1
             WHERE plugin = $2 AND perk_id = $3 AND remaining > 0",
        )
        .bind(now_ms)
        .bind(plugin_name)
        .bind(perk_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if taken != 1 {
            return Err(DomainError::conflict(
                "perk_sold_out",
                format!("perk {plugin_name}/{perk_id} is sold out"),
            ));
        }
        stock_taken = 1;
        let (left,): (Option<i64>,) = sqlx::query_as(
            "SELECT remaining FROM perk_inventory WHERE plugin = $1 AND perk_id = $2",
        )
        .bind(plugin_name)
        .bind(perk_id)
        .fetch_one(&mut *conn)
        .await?;
        remaining_stock = left;
    }

    sqlx::query(
        "INSERT INTO perk_redemptions (id, member_id, plugin, plugin_version, perk_id,
            funding_brand, honouring_brand, tier, points, value_cents, grant_kind, coupon_code,
            item_sku, grant_cents, stock_taken, status, spend_entry_id, receipt_id, device_id,
            created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 'redeemed',
            $16, $17, $18, $19)",
    )
    .bind(&redemption_id)
    .bind(member_id)
    .bind(plugin_name)
    .bind(active.plugin.version())
    .bind(perk_id)
    .bind(&perk.funding_brand)
    .bind(&perk.honouring_brand)
    .bind(&tier)
    .bind(perk.cost_points)
    .bind(perk.value_cents)
    .bind(grant_kind)
    .bind(coupon.as_ref().map(|c| c.code.as_str()))
    .bind(item_sku.as_deref())
    .bind(grant_cents)
    .bind(stock_taken)
    .bind(spend_entry_id.as_deref())
    .bind(&receipt_id)
    .bind(device_id)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    crate::domain::risk::record_redemption(conn, &attempt, now_ms).await?;
    outbox::record(
        conn,
        &NewEvent {
            kind: EventKind::PerkRedeemed,
            brand_id: &perk.honouring_brand,
            funding_brand: &perk.funding_brand,
            honouring_brand: &perk.honouring_brand,
            reference: Some(perk_id),
            plugin: Some(plugin_name),
            points: perk.cost_points,
            value_cents: perk.value_cents,
            member_id: Some(member_id),
            subject_kind: "redemption",
            subject_id: &redemption_id,
            reverses_event_id: None,
            occurred_at: now_ms,
        },
        now_ms,
    )
    .await?;
    // The honouring brand hears of it, and the funding brand when it is another.
    let mut told = vec![perk.honouring_brand.as_str()];
    if perk.funding_brand != perk.honouring_brand {
        told.push(perk.funding_brand.as_str());
    }
    for brand in told {
        crate::domain::webhooks::record(
            conn,
            brand,
            crate::domain::webhooks::EventType::Redemption,
            Some(member_id),
            serde_json::json!({
                "redemption_id": redemption_id, "plugin": plugin_name, "perk_id": perk_id,
                "funding_brand": perk.funding_brand, "honouring_brand": perk.honouring_brand,
                "points": perk.cost_points, "value_cents": perk.value_cents,
                "created_at_ms": now_ms,
            }),
        )
        .await?;
    }
    metrics::counter!("perk_redemptions_total", "plugin" => plugin_name.to_owned()).increment(1);
    Ok(RedemptionView {
        id: redemption_id,
        member_id: member_id.to_owned(),
        plugin: plugin_name.to_owned(),
        plugin_version: active.plugin.version().to_owned(),
        perk_id: perk_id.to_owned(),
        funding_brand: perk.funding_brand.clone(),
        honouring_brand: perk.honouring_brand.clone(),
        points: perk.cost_points,
        value_cents: perk.value_cents,
        grant: GrantView::from(&perk.grant),
        coupon,
        status: "redeemed".to_owned(),
        receipt_id,
        device_id: device_id.map(str::to_owned),
        remaining_stock,
        balance_after: wallet.balance,
        created_at_ms: now_ms,
    })
}

/// A member's redemptions, newest first.
pub async fn member_redemptions(
    conn: &mut AnyConnection,
    member_id: &str,
    brand: Option<&str>,
) -> DomainResult<Vec<RedemptionView>> {
    type Row = (
        String,
        String,
        String,
        String,
        String,
        String,
        i64,
        i64,
        String,
        Option<String>,
        Option<String>,
        Option<i64>,
        String,
        String,
        Option<String>,
        i64,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, plugin, plugin_version, perk_id, funding_brand, honouring_brand, points,
                value_cents, grant_kind, coupon_code, item_sku, grant_cents, status, receipt_id,
                device_id, created_at
         FROM perk_redemptions
         WHERE member_id = $1 AND ($3 = '' OR funding_brand = $3 OR honouring_brand = $3)
         ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(member_id)
    .bind(MAX_REDEMPTIONS_PAGE)
    .bind(brand.unwrap_or_default())
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let grant = match (r.8.as_str(), &r.9, &r.10, r.11) {
            ("free-item", _, Some(sku), _) => GrantView::FreeItem(sku.clone()),
            ("discount-cents", _, _, Some(c)) => GrantView::DiscountCents(c),
            _ => GrantView::Coupon(String::new()),
        };
        let coupon = match &r.9 {
            Some(code) => {
                let row: Option<(String, i64)> =
                    sqlx::query_as("SELECT template_id, expires_at FROM coupons WHERE code = $1")
                        .bind(code)
                        .fetch_optional(&mut *conn)
                        .await?;
                row.map(|(template_id, expires_at_ms)| IssuedCoupon {
                    code: code.clone(),
                    template_id,
                    member_id: member_id.to_owned(),
                    expires_at_ms,
                })
            }
            None => None,
        };
        let grant = match (&grant, &coupon) {
            (GrantView::Coupon(_), Some(c)) => GrantView::Coupon(c.template_id.clone()),
            _ => grant,
        };
        out.push(RedemptionView {
            id: r.0,
            member_id: member_id.to_owned(),
            plugin: r.1,
            plugin_version: r.2,
            perk_id: r.3,
            funding_brand: r.4,
            honouring_brand: r.5,
            points: r.6,
            value_cents: r.7,
            grant,
            coupon,
            status: r.12,
            receipt_id: r.13,
            device_id: r.14,
            remaining_stock: None,
            balance_after: 0,
            created_at_ms: r.15,
        });
    }
    Ok(out)
}

/// One redemption as a brand's or the platform's list shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RedemptionLine {
    /// Redemption id.
    pub id: String,
    /// The member (an id; profiles are read through the members API under its masking).
    pub member_id: String,
    /// Plugin that granted it.
    pub plugin: String,
    /// Perk id.
    pub perk_id: String,
    /// Brand that pays for it.
    pub funding_brand: String,
    /// Brand that hands it over.
    pub honouring_brand: String,
    /// Points it cost.
    pub points: i64,
    /// Face value, cents.
    pub value_cents: i64,
    /// `redeemed` or `reversed`.
    pub status: String,
    /// The coupon issued, if the grant was one.
    pub coupon_code: Option<String>,
    /// When, Unix ms.
    pub created_at_ms: i64,
}

/// The newest redemptions (at most [`MAX_REDEMPTIONS_PAGE`]), of every brand or of those
/// `brand` funds or honours.
pub async fn brand_redemptions(
    conn: &mut AnyConnection,
    brand: Option<&str>,
) -> DomainResult<Vec<RedemptionLine>> {
    type Row = (
        String,
        String,
        String,
        String,
        String,
        String,
        i64,
        i64,
        String,
        Option<String>,
        i64,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, member_id, plugin, perk_id, funding_brand, honouring_brand, points,
                value_cents, status, coupon_code, created_at
         FROM perk_redemptions
         WHERE ($2 = '' OR funding_brand = $2 OR honouring_brand = $2)
         ORDER BY created_at DESC, id DESC LIMIT $1",
    )
    .bind(MAX_REDEMPTIONS_PAGE)
    .bind(brand.unwrap_or_default())
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| RedemptionLine {
            id: r.0,
            member_id: r.1,
            plugin: r.2,
            perk_id: r.3,
            funding_brand: r.4,
            honouring_brand: r.5,
            points: r.6,
            value_cents: r.7,
            status: r.8,
            coupon_code: r.9,
            created_at_ms: r.10,
        })
        .collect())
}

/// Reverses a redemption whose coupon was voided by a refund, in the refund's transaction:
/// gives its points back (new lots keeping the original expiry, but at least
/// `restore_min_validity_days`), puts its stock back and records a refund event reversing the
/// `perk-redeemed` one. Returns the points restored (0 if it was already reversed).
/// An unused perk coupon given back.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReturnedCoupon {
    /// The coupon, now `voided`.
    pub code: String,
    /// Always `voided`.
    pub status: String,
    /// The perk redemption reversed with it.
    pub redemption_id: String,
    /// Points given back to the member (the perk's cost).
    pub points_restored: i64,
}

/// Gives an unused coupon bought as a perk back, in the caller's transaction: the coupon is
/// voided and the redemption reversed — the points come back (with the validity rules of a
/// refund), the stock returns, and a refund of the `perk-redeemed` settle event is recorded.
/// A coupon that is redeemed, reserved by a live checkout, expired or not a perk's is refused.
pub async fn return_coupon(
    conn: &mut AnyConnection,
    backend: Backend,
    points: &PointsConfig,
    member_id: &str,
    code: &str,
    now_ms: i64,
) -> DomainResult<ReturnedCoupon> {
    // The member's wallet first: the lock order of redemptions and purchases.
    ledger::lock_wallet(conn, backend, member_id, now_ms).await?;
    let code = code.to_ascii_uppercase();
    let row: Option<(String, String, String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT member_id, status, source_kind, source_id, expires_at, reserved_until
         FROM coupons WHERE code = $1",
    )
    .bind(&code)
    .fetch_optional(&mut *conn)
    .await?;
    let (owner, status, source_kind, source_id, expires_at, reserved_until) = row
        .filter(|r| r.0 == member_id)
        .ok_or_else(|| DomainError::not_found("coupon", &code))?;
    let _ = owner;
    if source_kind != "perk" {
        return Err(DomainError::unprocessable(
            "coupon_not_returnable",
            format!("coupon {code} was not bought with points; there is nothing to give back"),
        ));
    }
    match status.as_str() {
        "redeemed" => {
            return Err(DomainError::conflict(
                "coupon_redeemed",
                format!("coupon {code} was used; refund the purchase instead"),
            ))
        }
        "voided" => {
            return Err(DomainError::conflict(
                "coupon_voided",
                format!("coupon {code} is already void"),
            ))
        }
        "reserved" if reserved_until.is_some_and(|until| until > now_ms) => {
            return Err(DomainError::conflict(
                "coupon_reserved",
                format!("coupon {code} is held by an open checkout; cancel it first"),
            ))
        }
        _ => {}
    }
    if status == "expired" || expires_at <= now_ms {
        return Err(DomainError::unprocessable(
            "coupon_expired",
            format!("coupon {code} has expired; its points are not given back"),
        ));
    }
    let voided = sqlx::query(
        "UPDATE coupons SET status = 'voided', reservation_id = NULL, reserved_until = NULL,
            updated_at = $1
         WHERE code = $2 AND expires_at > $1
           AND (status = 'issued' OR (status = 'reserved' AND reserved_until <= $1))",
    )
    .bind(now_ms)
    .bind(&code)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if voided != 1 {
        return Err(DomainError::conflict(
            "coupon_unavailable",
            format!("coupon {code} changed meanwhile; try again"),
        ));
    }
    let points_restored = reverse_redemption(conn, backend, points, &source_id, now_ms).await?;
    Ok(ReturnedCoupon {
        code,
        status: "voided".to_owned(),
        redemption_id: source_id,
        points_restored,
    })
}

pub async fn reverse_redemption(
    conn: &mut AnyConnection,
    backend: Backend,
    points: &PointsConfig,
    redemption_id: &str,
    now_ms: i64,
) -> DomainResult<i64> {
    type Row = (
        String,
        i64,
        Option<String>,
        i64,
        String,
        String,
        String,
        String,
        i64,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT member_id, points, spend_entry_id, stock_taken, plugin, perk_id,
                    funding_brand, honouring_brand, value_cents
             FROM perk_redemptions WHERE id = $1 AND status = 'redeemed'",
    )
    .bind(redemption_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((
        member_id,
        cost,
        spend_entry,
        stock_taken,
        plugin,
        perk_id,
        funding,
        honouring,
        value,
    )) = row
    else {
        return Ok(0);
    };
    // Wallet first, then the inventory row: the redemption's lock order.
    ledger::lock_wallet(conn, backend, &member_id, now_ms).await?;
    let flipped = sqlx::query(
        "UPDATE perk_redemptions SET status = 'reversed', reversed_at = $1
         WHERE id = $2 AND status = 'redeemed'",
    )
    .bind(now_ms)
    .bind(redemption_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if flipped != 1 {
        return Ok(0);
    }
    let mut restored = 0;
    if let (true, Some(source)) = (cost > 0, spend_entry.as_deref()) {
        let refs = EntryRefs {
            brand_id: Some(funding.clone()),
            ..EntryRefs::default()
        };
        let reason = format!("perk:{plugin}/{perk_id} reversed");
        let mut entry =
            Entry::open(conn, EntryKind::Refund, &member_id, &refs, &reason, now_ms).await?;
        entry.apply_wallet(conn, cost, 0, 0, now_ms).await?;
        entry.post(Account::Redemption(Some(&funding)), -cost, "perk restore");
        let posting_id = entry.post(Account::Wallet, cost, "perk restore");
        let floor = now_ms.saturating_add(points.restore_min_validity_days.saturating_mul(DAY_MS));
        restored = ledger::restore_consumptions(
            conn,
            &mut entry,
            source,
            cost,
            &posting_id,
            RestoreExpiry::AtLeast(floor),
        )
        .await?;
        if restored != cost {
            return Err(DomainError::internal(anyhow::anyhow!(
                "redemption {redemption_id}: {restored} of {cost} points restorable"
            )));
        }
        let entry_id = entry.close(conn, now_ms).await?;
        sqlx::query("UPDATE perk_redemptions SET reversal_entry_id = $1 WHERE id = $2")
            .bind(&entry_id)
            .bind(redemption_id)
            .execute(&mut *conn)
            .await?;
    }
    if stock_taken == 1 {
        sqlx::query(
            "UPDATE perk_inventory SET remaining = remaining + 1, updated_at = $1
             WHERE plugin = $2 AND perk_id = $3 AND remaining < total_stock",
        )
        .bind(now_ms)
        .bind(&plugin)
        .bind(&perk_id)
        .execute(&mut *conn)
        .await?;
    }
    let reverses = outbox::find(
        conn,
        "redemption",
        redemption_id,
        EventKind::PerkRedeemed,
        Some(&perk_id),
    )
    .await?;
    outbox::record(
        conn,
        &NewEvent {
            kind: EventKind::Refund,
            brand_id: &honouring,
            funding_brand: &funding,
            honouring_brand: &honouring,
            reference: Some(EventKind::PerkRedeemed.as_str()),
            plugin: Some(&plugin),
            points: cost,
            value_cents: value,
            member_id: Some(&member_id),
            subject_kind: "redemption",
            subject_id: redemption_id,
            reverses_event_id: reverses.as_deref(),
            occurred_at: now_ms,
        },
        now_ms,
    )
    .await?;
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_at_local_midnight_monday_and_the_first() {
        // 2026-03-04T02:00:00Z is Wednesday 10:00 in UTC+8.
        let now = 1_772_589_600_000;
        let p = period_starts(now, 480).expect("starts");
        // Local midnight of Wednesday 4 March = 3 March 16:00 UTC.
        assert_eq!(p.day, 1_772_553_600_000);
        assert_eq!(p.week, p.day - 2 * DAY_MS);
        // 1 March 00:00 local = 28 February 16:00 UTC.
        assert_eq!(p.month, 1_772_294_400_000);
    }

    #[test]
    fn tier_limit_overrides_the_member_limit() {
        let inv = InventoryView {
            plugin: "p".into(),
            perk_id: "x".into(),
            funding_brand: "b".into(),
            total_stock: Some(10),
            remaining: Some(5),
            per_member_limit: Some(1),
            tier_limits: [("black".to_owned(), 5)].into_iter().collect(),
            period: "none".into(),
            per_period_limit: None,
            starts_at_ms: None,
            ends_at_ms: None,
            status: "active".into(),
        };
        let two = Counts {
            total: 2,
            ..Counts::default()
        };
        assert_eq!(host_refusal(&inv, "black", two, 0).1, Some(3));
        let refused = host_refusal(&inv, "silver", two, 0).0.expect("refused");
        assert_eq!(refused.code, "perk_limit_reached");
        let sold_out = InventoryView {
            remaining: Some(0),
            ..inv
        };
        let refused = host_refusal(&sold_out, "black", Counts::default(), 0)
            .0
            .expect("refused");
        assert_eq!(refused.code, "perk_sold_out");
    }
}
