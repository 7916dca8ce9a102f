//! Trying a candidate version before it serves anyone.
//!
//! - **Dry run**: the candidate runs on the last N recorded inputs of the plugin's active
//!   version (the inputs are kept with the receipts), and the report says, per input, whether
//!   the decision differs, with fuel and latency side by side. Nothing is stored or applied.
//!   A first version runs on other plugins' recorded inputs of its hooks at its brands; any
//!   version may instead run on the brand's own fixtures ([`dry_run_fixtures`]).
//! - **Shadow**: a candidate flagged as shadow runs beside the serving version on live
//!   `points-bonus` calls, off the request path; both decisions are recorded in
//!   `plugin_shadow_results` and compared, the shadow's is never applied.
//!
//! The candidate sees the same invocation and arguments as the recorded call. Its config is
//! the recorded effective config, limited to the keys the candidate declares, with the
//! candidate's own admin config on top and its manifest defaults for the rest — so a dry run
//! shows what the new code changes, not what a different default would.

use coalition_runtime::model::{
    self, CallInput, Hook, HookOutput, Invocation, MemberContext, Order,
};
use coalition_runtime::{CallContext, LoadedPlugin, Manifest};
use serde::Serialize;
use utoipa::ToSchema;

use super::{registry, ActivePlugin, BonusOutcome};
use std::sync::Arc;

use super::PluginHost;
use crate::foundation::clock::Clock;
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::Store;

/// Most recorded inputs one dry run replays, per hook: each call takes ~20–60 µs plus
/// instantiation, so 500 inputs answer well within the request timeout.
pub const MAX_DRY_RUN_INPUTS: i64 = 500;
/// Inputs replayed when the request names no number.
pub const DEFAULT_DRY_RUN_INPUTS: i64 = 50;
/// Most shadow results one page lists.
pub const MAX_SHADOW_RESULTS: i64 = 500;

/// One recorded input replayed on the candidate.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DryRunItem {
    /// The receipt whose input was used.
    pub receipt_id: String,
    /// The plugin version that made the recorded decision (`name@version`): the active version,
    /// or for a first version another plugin that implements the hook at the same brands.
    pub recorded_by: String,
    /// Hook called.
    pub hook: String,
    /// sha256 of the recorded input.
    pub input_sha256: String,
    /// True when the candidate's decision hashes differently from the recorded one (or the
    /// candidate failed).
    pub differs: bool,
    /// The active version's recorded decision.
    pub active_output: serde_json::Value,
    /// The candidate's decision (absent when it failed).
    pub candidate_output: Option<serde_json::Value>,
    /// Why the candidate failed, if it did.
    pub candidate_error: Option<String>,
    /// Fuel of the recorded call.
    pub active_fuel_used: i64,
    /// Fuel of the candidate's call.
    pub candidate_fuel_used: Option<u64>,
    /// Duration of the recorded call, µs.
    pub active_duration_us: i64,
    /// Duration of the candidate's call, µs.
    pub candidate_duration_us: Option<u64>,
}

/// The outcome of a dry run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DryRunReport {
    /// The candidate version.
    pub candidate_version_id: String,
    /// Its version string.
    pub candidate_version: String,
    /// Whose recorded inputs were replayed: `active_version` (the plugin's active version),
    /// `other_plugins` for a first version (the newest inputs other plugins of the same hooks
    /// recorded at the brands the candidate names; their decisions are the baseline), or
    /// `fixtures` (the brand's own fixtures; their expected decisions are the baseline).
    pub baseline: String,
    /// The active version whose inputs were replayed (`null` for a first version).
    pub active_version_id: Option<String>,
    /// Its version string (`null` for a first version).
    pub active_version: Option<String>,
    /// Inputs replayed.
    pub inputs: usize,
    /// Inputs whose decision differs.
    pub differing: usize,
    /// Per input, newest first.
    pub items: Vec<DryRunItem>,
}

#[derive(sqlx::FromRow)]
struct RecordedRow {
    id: String,
    plugin: String,
    version: String,
    hook: String,
    input_sha256: String,
    output_sha256: String,
    fuel_used: i64,
    duration_us: i64,
    input: String,
    output: String,
}

/// Loads any stored version by id into a callable plugin with its effective config.
async fn load_version(
    store: &Store,
    host: &PluginHost,
    id: &str,
) -> DomainResult<(
    LoadedPlugin,
    model::Config,
    serde_json::Map<String, serde_json::Value>,
)> {
    let row: Option<(String, String, String, String)> = sqlx::query_as(
        "SELECT v.manifest, v.config, v.component_sha256, c.bytes_b64
         FROM plugin_versions v JOIN plugin_components c ON c.sha256 = v.component_sha256
         WHERE v.id = $1",
    )
    .bind(id)
    .fetch_optional(store.read())
    .await?;
    let Some((manifest, config, sha, b64)) = row else {
        return Err(DomainError::not_found("plugin version", id));
    };
    let admin: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&config).unwrap_or_default();
    let runtime = host.runtime().clone();
    let (plugin, effective) = tokio::task::spawn_blocking(move || {
        registry::load_one(&runtime, &manifest, &config, &sha, &b64)
    })
    .await
    .map_err(DomainError::internal)?
    .map_err(|err| DomainError::unprocessable("plugin_rejected", err.to_string()))?;
    Ok((plugin, effective, admin))
}

/// The config a candidate gets for a recorded call: see the module docs.
fn candidate_config(
    manifest: &Manifest,
    recorded: &model::Config,
    admin: &serde_json::Map<String, serde_json::Value>,
) -> Result<model::Config, String> {
    let mut merged: model::Config = recorded
        .iter()
        .filter(|(k, _)| manifest.config.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let own = registry::config_strings(admin).map_err(|e| e.to_string())?;
    merged.extend(own);
    manifest.effective_config(&merged)
}

fn inner_output(output: &HookOutput) -> serde_json::Value {
    match serde_json::to_value(output) {
        Ok(serde_json::Value::Object(map)) if map.len() == 1 => {
            map.into_iter().next().map(|(_, v)| v).unwrap_or_default()
        }
        Ok(other) => other,
        Err(_) => serde_json::Value::Null,
    }
}

/// Whether a version may be dry-run: not before validation, not once rejected, and not while
/// it serves (its calls are recorded already).
fn dry_runnable(candidate: &registry::InstalledVersion) -> DomainResult<()> {
    if matches!(
        candidate.status.as_str(),
        "uploaded" | "rejected" | "active"
    ) {
        return Err(DomainError::conflict(
            "invalid_transition",
            format!(
                "version is {}; dry runs are for validated, co-signed, approved or retired \
                 versions",
                candidate.status
            ),
        ));
    }
    Ok(())
}

/// Dry-runs version `id` against the last `limit` recorded inputs of its plugin's active
/// version, for every hook the candidate implements; a first version (no active version)
/// against the newest inputs other plugins of the same hooks recorded at its brands.
///
/// `only_brand` narrows a first version's inputs to those recorded at that brand's counters (a
/// brand dry-running its own upload sees nothing of another brand's members).
pub async fn dry_run(
    store: &Store,
    host: &PluginHost,
    id: &str,
    only_brand: Option<&str>,
    limit: i64,
) -> DomainResult<DryRunReport> {
    let limit = limit.clamp(1, MAX_DRY_RUN_INPUTS);
    let candidate = registry::get(store.read(), id)
        .await?
        .ok_or_else(|| DomainError::not_found("plugin version", id))?;
    dry_runnable(&candidate)?;
    let active: Option<(String, String, String)> = sqlx::query_as(
        "SELECT id, version, component_sha256 FROM plugin_versions
         WHERE name = $1 AND status = 'active'",
    )
    .bind(&candidate.name)
    .fetch_optional(store.read())
    .await?;
    let (plugin, _, admin) = load_version(store, host, id).await?;
    let mut rows: Vec<RecordedRow> = Vec::new();
    let baseline = match &active {
        Some((_, active_version, active_sha)) => {
            for hook in &candidate.hooks {
                let mut page: Vec<RecordedRow> = sqlx::query_as(
                    "SELECT id, plugin, version, hook, input_sha256, output_sha256, fuel_used,
                        duration_us, input, output
                     FROM plugin_receipts
                     WHERE plugin = $1 AND version = $2 AND component_sha256 = $3 AND hook = $4
                     ORDER BY created_at DESC, id DESC LIMIT $5",
                )
                .bind(&candidate.name)
                .bind(active_version)
                .bind(active_sha)
                .bind(hook)
                .bind(limit)
                .fetch_all(store.read())
                .await?;
                rows.append(&mut page);
            }
            "active_version"
        }
        None => {
            for hook in &candidate.hooks {
                rows.append(&mut others_inputs(store, &candidate, only_brand, hook, limit).await?);
            }
            if rows.is_empty() {
                return Err(DomainError::conflict(
                    "no_recorded_inputs",
                    format!(
                        "{} has no active version, and no other plugin has recorded a call of \
                         its hooks ({}) at its brands ({}) yet",
                        candidate.name,
                        candidate.hooks.join(", "),
                        candidate.brands.join(", ")
                    ),
                ));
            }
            "other_plugins"
        }
    };
    let items = tokio::task::spawn_blocking(move || {
        rows.into_iter()
            .map(|row| replay_on(&plugin, &admin, row))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(DomainError::internal)?;
    let differing = items.iter().filter(|i| i.differs).count();
    let (active_version_id, active_version) = match active {
        Some((active_id, active_version, _)) => (Some(active_id), Some(active_version)),
        None => (None, None),
    };
    Ok(DryRunReport {
        candidate_version_id: candidate.id,
        candidate_version: candidate.version,
        baseline: baseline.to_owned(),
        active_version_id,
        active_version,
        inputs: items.len(),
        differing,
        items,
    })
}

/// Most fixtures one dry run takes: each is a fresh-instance call (about 2 ms for a JavaScript
/// or Python guest), so 100 answer well within the request timeout.
pub const MAX_DRY_RUN_FIXTURES: usize = 100;

/// One of the brand's own fixtures for a dry run: a call as `coalition plugin test` reads it.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Its name (the fixture file's stem), shown as `fixture:<name>`.
    pub name: String,
    /// The call: invocation, config and the hook's input.
    pub call: CallInput,
    /// The decision it must give; none to only see the candidate's.
    pub expect: Option<serde_json::Value>,
}

/// Dry-runs version `id` on the brand's own fixtures instead of recorded inputs (any version,
/// first or not): per fixture, the candidate's decision against the expected one
/// (`baseline: fixtures`). A fixture of a hook the candidate does not implement is refused.
pub async fn dry_run_fixtures(
    store: &Store,
    host: &PluginHost,
    id: &str,
    fixtures: Vec<Fixture>,
) -> DomainResult<DryRunReport> {
    let candidate = registry::get(store.read(), id)
        .await?
        .ok_or_else(|| DomainError::not_found("plugin version", id))?;
    dry_runnable(&candidate)?;
    if let Some(other) = fixtures.iter().find(|f| {
        !candidate
            .hooks
            .iter()
            .any(|h| h == f.call.input.hook().as_str())
    }) {
        return Err(DomainError::validation(format!(
            "fixture {} calls {}, which {} does not implement ({})",
            other.name,
            other.call.input.hook(),
            candidate.name,
            candidate.hooks.join(", ")
        )));
    }
    let (plugin, _, admin) = load_version(store, host, id).await?;
    let items = tokio::task::spawn_blocking(move || {
        fixtures
            .into_iter()
            .map(|fixture| run_fixture(&plugin, &admin, fixture))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(DomainError::internal)?;
    let differing = items.iter().filter(|i| i.differs).count();
    Ok(DryRunReport {
        candidate_version_id: candidate.id,
        candidate_version: candidate.version,
        baseline: "fixtures".to_owned(),
        active_version_id: None,
        active_version: None,
        inputs: items.len(),
        differing,
        items,
    })
}

/// One fixture on the candidate: it differs when it fails, or when an expected decision is
/// given and the candidate's is another.
fn run_fixture(
    plugin: &LoadedPlugin,
    admin: &serde_json::Map<String, serde_json::Value>,
    fixture: Fixture,
) -> DryRunItem {
    use sha2::Digest as _;
    let input_sha256 = serde_json::to_vec(&fixture.call)
        .map(|bytes| hex::encode(sha2::Sha256::digest(bytes)))
        .unwrap_or_default();
    let mut item = DryRunItem {
        receipt_id: format!("fixture:{}", fixture.name),
        recorded_by: "fixture".to_owned(),
        hook: fixture.call.input.hook().as_str().to_owned(),
        input_sha256,
        differs: true,
        active_output: fixture.expect.clone().unwrap_or(serde_json::Value::Null),
        candidate_output: None,
        candidate_error: None,
        active_fuel_used: 0,
        candidate_fuel_used: None,
        active_duration_us: 0,
        candidate_duration_us: None,
    };
    let config = match candidate_config(plugin.manifest(), &fixture.call.config, admin) {
        Ok(config) => config,
        Err(err) => {
            item.candidate_error = Some(format!("config: {err}"));
            return item;
        }
    };
    let ctx = CallContext {
        invocation: fixture.call.invocation.clone(),
        config,
    };
    match plugin.call(&ctx, fixture.call.input.as_args()) {
        Ok(decision) => {
            let output = inner_output(&decision.value);
            item.differs = fixture.expect.as_ref().is_some_and(|e| *e != output);
            item.candidate_output = Some(output);
            item.candidate_fuel_used = Some(decision.receipt.fuel_used);
            item.candidate_duration_us = Some(decision.receipt.duration_us);
        }
        Err(err) => item.candidate_error = Some(err.to_string()),
    }
    item
}

/// Recorded calls scanned per hook to find a first version's inputs: other plugins' calls at
/// other brands are skipped, so more than `limit` are read, within this bound.
pub const MAX_FIRST_VERSION_SCAN: i64 = 5_000;

/// The newest recorded inputs of `hook` made by other plugins at the brands the candidate
/// names (the brand of the call, from its recorded invocation), at most `limit`.
async fn others_inputs(
    store: &Store,
    candidate: &registry::InstalledVersion,
    only_brand: Option<&str>,
    hook: &str,
    limit: i64,
) -> DomainResult<Vec<RecordedRow>> {
    let scanned: Vec<RecordedRow> = sqlx::query_as(
        "SELECT id, plugin, version, hook, input_sha256, output_sha256, fuel_used, duration_us,
            input, output
         FROM plugin_receipts WHERE hook = $1 AND plugin <> $2
         ORDER BY created_at DESC, id DESC LIMIT $3",
    )
    .bind(hook)
    .bind(&candidate.name)
    .bind(MAX_FIRST_VERSION_SCAN)
    .fetch_all(store.read())
    .await?;
    let at_its_brands = |row: &RecordedRow| {
        serde_json::from_str::<serde_json::Value>(&row.input)
            .ok()
            .and_then(|input| input["invocation"]["brand"].as_str().map(str::to_owned))
            .is_some_and(|brand| {
                candidate.brands.contains(&brand) && only_brand.is_none_or(|only| only == brand)
            })
    };
    Ok(scanned
        .into_iter()
        .filter(at_its_brands)
        .take(usize::try_from(limit).unwrap_or(0))
        .collect())
}

fn replay_on(
    plugin: &LoadedPlugin,
    admin: &serde_json::Map<String, serde_json::Value>,
    row: RecordedRow,
) -> DryRunItem {
    let active_output = serde_json::from_str(&row.output).unwrap_or(serde_json::Value::Null);
    let mut item = DryRunItem {
        receipt_id: row.id,
        recorded_by: format!("{}@{}", row.plugin, row.version),
        hook: row.hook,
        input_sha256: row.input_sha256,
        differs: true,
        active_output,
        candidate_output: None,
        candidate_error: None,
        active_fuel_used: row.fuel_used,
        candidate_fuel_used: None,
        active_duration_us: row.duration_us,
        candidate_duration_us: None,
    };
    let recorded: CallInput = match serde_json::from_str(&row.input) {
        Ok(input) => input,
        Err(err) => {
            item.candidate_error = Some(format!("recorded input does not parse: {err}"));
            return item;
        }
    };
    let config = match candidate_config(plugin.manifest(), &recorded.config, admin) {
        Ok(config) => config,
        Err(err) => {
            item.candidate_error = Some(format!("config: {err}"));
            return item;
        }
    };
    let ctx = CallContext {
        invocation: recorded.invocation,
        config,
    };
    match plugin.call(&ctx, recorded.input.as_args()) {
        Ok(decision) => {
            item.differs = decision.receipt.output_sha256 != row.output_sha256;
            item.candidate_output = Some(inner_output(&decision.value));
            item.candidate_fuel_used = Some(decision.receipt.fuel_used);
            item.candidate_duration_us = Some(decision.receipt.duration_us);
        }
        Err(err) => item.candidate_error = Some(err.to_string()),
    }
    item
}

// ---------------------------------------------------------------------------------------------
// Shadow mode

/// Runs the shadows of the plugins that just answered a `points-bonus` call, in the
/// background; the purchase never waits for them and never sees their decisions.
pub fn spawn_shadow_bonuses(
    store: &Store,
    host: &PluginHost,
    clock: &Arc<dyn Clock>,
    outcomes: &[BonusOutcome],
    input: (Invocation, MemberContext, Order),
) {
    let routing = host.routing();
    if routing.shadows.is_empty() {
        return;
    }
    let pairs: Vec<(
        ActivePlugin,
        ActivePlugin,
        coalition_runtime::Receipt,
        String,
    )> = outcomes
        .iter()
        .filter_map(|outcome| {
            let decision = outcome.result.as_ref().ok()?;
            let shadow = routing.shadows.get(outcome.active.plugin.name())?;
            if shadow.version_id == outcome.active.version_id
                || !shadow.plugin.implements(Hook::PointsBonus)
            {
                return None;
            }
            Some((
                shadow.clone(),
                outcome.active.clone(),
                decision.receipt.clone(),
                serde_json::to_string(&decision.value).unwrap_or_default(),
            ))
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    let (store, clock) = (store.clone(), clock.clone());
    tokio::spawn(async move {
        let (invocation, member, order) = input;
        let subject = order.order_id.clone();
        let results = tokio::task::spawn_blocking(move || {
            pairs
                .into_iter()
                .map(|(shadow, serving, receipt, serving_output)| {
                    let ctx = CallContext {
                        invocation: invocation.clone(),
                        config: shadow.config.clone(),
                    };
                    let result = shadow.plugin.points_bonus(&ctx, &member, &order);
                    (shadow, serving, receipt, serving_output, result)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let Ok(results) = results else { return };
        let now_ms = clock.now_ms();
        for (shadow, serving, receipt, serving_output, result) in results {
            let (same, output, fuel, us) = match &result {
                Ok(d) => (
                    d.receipt.output_sha256 == receipt.output_sha256,
                    serde_json::to_string(&d.value).unwrap_or_default(),
                    d.receipt.fuel_used,
                    d.receipt.duration_us,
                ),
                Err(err) => (
                    false,
                    serde_json::Value::String(err.to_string()).to_string(),
                    0,
                    0,
                ),
            };
            let stored = sqlx::query(
                "INSERT INTO plugin_shadow_results (id, name, shadow_version_id,
                    serving_version_id, hook, subject_id, input_sha256, same, serving_output,
                    shadow_output, serving_fuel, shadow_fuel, serving_us, shadow_us, created_at)
                 VALUES ($1, $2, $3, $4, 'points-bonus', $5, $6, $7, $8, $9, $10, $11, $12, $13,
                    $14)",
            )
            .bind(crate::foundation::store::new_id())
            .bind(shadow.plugin.name())
            .bind(&shadow.version_id)
            .bind(&serving.version_id)
            .bind(&subject)
            .bind(&receipt.input_sha256)
            .bind(i64::from(same))
            .bind(&serving_output)
            .bind(&output)
            .bind(i64::try_from(receipt.fuel_used).unwrap_or(i64::MAX))
            .bind(i64::try_from(fuel).unwrap_or(i64::MAX))
            .bind(i64::try_from(receipt.duration_us).unwrap_or(i64::MAX))
            .bind(i64::try_from(us).unwrap_or(i64::MAX))
            .bind(now_ms)
            .execute(store.write())
            .await;
            if let Err(err) = stored {
                tracing::warn!(%err, "shadow result not stored");
            }
        }
    });
}

/// Runs, in the background, the shadow of the plugin that just decided (when an admin set one
/// that implements the hook) on the very input the serving call recorded in its receipt, and
/// stores the comparison; the caller never waits for it and never sees the shadow's decision.
/// For every hook but `points-bonus`, whose calls batch their shadows
/// ([`spawn_shadow_bonuses`]).
pub fn spawn_shadow(
    store: &Store,
    host: &PluginHost,
    clock: &Arc<dyn Clock>,
    serving: &ActivePlugin,
    receipt: &coalition_runtime::Receipt,
    serving_output: &str,
    subject: &str,
) {
    let routing = host.routing();
    let Some(shadow) = routing.shadows.get(serving.plugin.name()) else {
        return;
    };
    if shadow.version_id == serving.version_id || !shadow.plugin.implements(receipt.hook) {
        return;
    }
    let Ok(recorded) = serde_json::from_str::<CallInput>(&receipt.input) else {
        tracing::warn!(
            plugin = serving.plugin.name(),
            "recorded input does not parse; no shadow"
        );
        return;
    };
    let (store, clock, shadow) = (store.clone(), clock.clone(), shadow.clone());
    let (receipt, serving_output, subject) = (
        receipt.clone(),
        serving_output.to_owned(),
        subject.to_owned(),
    );
    let serving_id = serving.version_id.clone();
    tokio::spawn(async move {
        let runner = shadow.clone();
        let ran = tokio::task::spawn_blocking(move || {
            let ctx = CallContext {
                invocation: recorded.invocation,
                config: runner.config.clone(),
            };
            runner.plugin.call(&ctx, recorded.input.as_args())
        })
        .await;
        let Ok(result) = ran else { return };
        let (same, output, fuel, us) = match &result {
            Ok(d) => (
                d.receipt.output_sha256 == receipt.output_sha256,
                serde_json::to_string(&inner_output(&d.value)).unwrap_or_default(),
                d.receipt.fuel_used,
                d.receipt.duration_us,
            ),
            Err(err) => (
                false,
                serde_json::Value::String(err.to_string()).to_string(),
                0,
                0,
            ),
        };
        let stored = sqlx::query(
            "INSERT INTO plugin_shadow_results (id, name, shadow_version_id,
                serving_version_id, hook, subject_id, input_sha256, same, serving_output,
                shadow_output, serving_fuel, shadow_fuel, serving_us, shadow_us, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(crate::foundation::store::new_id())
        .bind(shadow.plugin.name())
        .bind(&shadow.version_id)
        .bind(&serving_id)
        .bind(receipt.hook.as_str())
        .bind(&subject)
        .bind(&receipt.input_sha256)
        .bind(i64::from(same))
        .bind(&serving_output)
        .bind(&output)
        .bind(i64::try_from(receipt.fuel_used).unwrap_or(i64::MAX))
        .bind(i64::try_from(fuel).unwrap_or(i64::MAX))
        .bind(i64::try_from(receipt.duration_us).unwrap_or(i64::MAX))
        .bind(i64::try_from(us).unwrap_or(i64::MAX))
        .bind(clock.now_ms())
        .execute(store.write())
        .await;
        if let Err(err) = stored {
            tracing::warn!(%err, "shadow result not stored");
        }
    });
}

/// A stored shadow comparison.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ShadowResult {
    /// Row id.
    pub id: String,
    /// The shadow version.
    pub shadow_version_id: String,
    /// The version that served the call.
    pub serving_version_id: String,
    /// Hook called.
    pub hook: String,
    /// What the call was about (the order id).
    pub subject_id: String,
    /// sha256 of the input both saw.
    pub input_sha256: String,
    /// Whether both decisions hash the same.
    pub same: bool,
    /// The serving version's decision (applied).
    pub serving_output: serde_json::Value,
    /// The shadow's decision (never applied), or its error as a string.
    pub shadow_output: serde_json::Value,
    /// Fuel of the serving call.
    pub serving_fuel_used: i64,
    /// Fuel of the shadow call.
    pub shadow_fuel_used: i64,
    /// Duration of the serving call, µs.
    pub serving_duration_us: i64,
    /// Duration of the shadow call, µs.
    pub shadow_duration_us: i64,
    /// When, Unix ms.
    pub created_at: i64,
}

type ShadowRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
);

/// The newest shadow results of a version.
pub async fn shadow_results(
    store: &Store,
    id: &str,
    limit: i64,
) -> DomainResult<Vec<ShadowResult>> {
    let rows: Vec<ShadowRow> = sqlx::query_as(
        "SELECT id, shadow_version_id, serving_version_id, hook, subject_id, input_sha256, same,
            serving_output, shadow_output, serving_fuel, shadow_fuel, serving_us, shadow_us,
            created_at
         FROM plugin_shadow_results WHERE shadow_version_id = $1
         ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(id)
    .bind(limit.clamp(1, MAX_SHADOW_RESULTS))
    .fetch_all(store.read())
    .await?;
    let parse = |s: &str| serde_json::from_str(s).unwrap_or(serde_json::Value::Null);
    Ok(rows
        .into_iter()
        .map(|r| ShadowResult {
            id: r.0,
            shadow_version_id: r.1,
            serving_version_id: r.2,
            hook: r.3,
            subject_id: r.4,
            input_sha256: r.5,
            same: r.6 != 0,
            serving_output: parse(&r.7),
            shadow_output: parse(&r.8),
            serving_fuel_used: r.9,
            shadow_fuel_used: r.10,
            serving_duration_us: r.11,
            shadow_duration_us: r.12,
            created_at: r.13,
        })
        .collect())
}
