//! Installed plugin versions and their components, stored in the database so that every host
//! node loads the same active set; compiled artifacts are cached per node by the runtime.
//!
//! Installing here is the platform admin's direct path for components the platform trusts (the
//! demo coalition's plugins, built from this repository). Partner uploads go through signed
//! upload and review before they can become active.

use base64::Engine as _;
use coalition_runtime::{Manifest, Runtime};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ActivePlugin, PluginHost};
use crate::foundation::error::DomainError;
use crate::foundation::store::Store;
use crate::foundation::store::UniqueAsConflict;

/// Largest component accepted for install; JavaScript and Python guests are ~12–18 MB.
pub const MAX_COMPONENT_BYTES: usize = 32 * 1024 * 1024;

/// An installed plugin version as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InstalledVersion {
    /// Row id.
    pub id: String,
    /// Plugin name.
    pub name: String,
    /// Semver version.
    pub version: String,
    /// WIT package targeted, e.g. `coalition:plugin@0.1.0`.
    pub wit: String,
    /// sha256 of the component, hex.
    pub component_sha256: String,
    /// Hooks implemented.
    pub hooks: Vec<String>,
    /// Brands involved.
    pub brands: Vec<String>,
    /// `uploaded`, `validated`, `awaiting_cosign`, `approved`, `active` (deployed), `retired`
    /// or `rejected`.
    pub status: String,
    /// Why it is in its status (the rejection reason, for example); may be empty.
    pub status_reason: String,
    /// Stable code of a rejection at validation (`describe_brands_mismatch`,
    /// `forbidden_imports`, `compile_timeout`, …); absent otherwise.
    pub status_code: Option<String>,
    /// Admin-set configuration.
    pub config: serde_json::Value,
    /// Who installed or uploaded it.
    pub installed_by: String,
    /// The brand that uploaded it; absent for the platform's direct installs.
    pub uploaded_by_brand: Option<String>,
    /// Content hash of the signed package (manifest + component), hex; absent for direct
    /// installs.
    pub content_sha256: Option<String>,
    /// The active version this one replaced when deployed (what rollback restores).
    pub previous_version_id: Option<String>,
    /// When it was last deployed, Unix ms.
    pub deployed_at: Option<i64>,
    /// When, Unix ms.
    pub created_at: i64,
    /// The manifest's description.
    pub description: String,
}

/// The row behind [`InstalledVersion`].
#[derive(sqlx::FromRow)]
pub(crate) struct VersionRow {
    id: String,
    name: String,
    version: String,
    wit: String,
    component_sha256: String,
    hooks: String,
    brands: String,
    status: String,
    status_reason: String,
    status_code: Option<String>,
    config: String,
    installed_by: String,
    uploaded_by_brand: Option<String>,
    content_sha256: Option<String>,
    previous_version_id: Option<String>,
    deployed_at: Option<i64>,
    created_at: i64,
    manifest: String,
}

pub(crate) const VERSION_COLUMNS: &str = "id, name, version, wit, component_sha256, hooks, \
     brands, status, status_reason, status_code, config, installed_by, uploaded_by_brand, content_sha256, \
     previous_version_id, deployed_at, created_at, manifest";

pub(crate) fn to_version(row: VersionRow) -> InstalledVersion {
    let description = Manifest::parse(&row.manifest)
        .map(|m| m.description)
        .unwrap_or_default();
    InstalledVersion {
        id: row.id,
        name: row.name,
        version: row.version,
        wit: row.wit,
        component_sha256: row.component_sha256,
        hooks: serde_json::from_str(&row.hooks).unwrap_or_default(),
        brands: serde_json::from_str(&row.brands).unwrap_or_default(),
        status: row.status,
        status_reason: row.status_reason,
        status_code: row.status_code,
        config: serde_json::from_str(&row.config).unwrap_or(serde_json::Value::Null),
        installed_by: row.installed_by,
        uploaded_by_brand: row.uploaded_by_brand,
        content_sha256: row.content_sha256,
        previous_version_id: row.previous_version_id,
        deployed_at: row.deployed_at,
        created_at: row.created_at,
        description,
    }
}

/// One version by id.
pub async fn get(
    conn: impl sqlx::Executor<'_, Database = sqlx::Any>,
    id: &str,
) -> Result<Option<InstalledVersion>, DomainError> {
    let row: Option<VersionRow> = sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM plugin_versions WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(to_version))
}

/// Every installed version, newest first (bounded: a coalition has tens of plugins).
pub async fn list(store: &Store) -> Result<Vec<InstalledVersion>, DomainError> {
    let rows: Vec<VersionRow> = sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM plugin_versions ORDER BY name, created_at DESC, id DESC \
         LIMIT 1000"
    ))
    .fetch_all(store.read())
    .await?;
    Ok(rows.into_iter().map(to_version).collect())
}

/// Validates a component against its manifest in the runtime (compile, imports, describe), then
/// stores it and makes it the active version of its plugin, retiring the previous one; the
/// host's active set is reloaded.
pub async fn install(
    store: &Store,
    host: &PluginHost,
    manifest_text: &str,
    component: Vec<u8>,
    config: serde_json::Map<String, serde_json::Value>,
    installed_by: &str,
    now_ms: i64,
) -> Result<InstalledVersion, DomainError> {
    if component.len() > MAX_COMPONENT_BYTES {
        return Err(DomainError::validation(format!(
            "component is {} bytes; the limit is {MAX_COMPONENT_BYTES}",
            component.len()
        )));
    }
    let manifest = Manifest::parse(manifest_text)
        .map_err(|err| DomainError::validation(format!("manifest: {err}")))?;
    let admin_config = config_strings(&config)?;
    manifest
        .effective_config(&admin_config)
        .map_err(|err| DomainError::validation(format!("config: {err}")))?;
    let runtime = host.runtime().clone();
    let (loaded, component) = {
        let manifest = manifest.clone();
        tokio::task::spawn_blocking(move || {
            let loaded = runtime.load(&manifest, &component, None);
            (loaded, component)
        })
        .await
        .map_err(DomainError::internal)?
    };
    let loaded = loaded.map_err(|err| {
        let reason_code = match &err.kind {
            coalition_runtime::ErrorKind::Load(load) => load.code(),
            kind => kind.code(),
        };
        DomainError::unprocessable("plugin_rejected", err.to_string())
            .with_extra(serde_json::json!({ "reason_code": reason_code }))
    })?;
    let sha = loaded.component_sha256().to_owned();
    let hooks: Vec<String> = loaded
        .info()
        .hooks
        .iter()
        .map(|h| h.as_str().to_owned())
        .collect();

    let mut tx = store.begin().await?;
    sqlx::query(
        "INSERT INTO plugin_components (sha256, size_bytes, bytes_b64, created_at)
         VALUES ($1, $2, $3, $4) ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(&sha)
    .bind(i64::try_from(component.len()).unwrap_or(i64::MAX))
    .bind(base64::engine::general_purpose::STANDARD.encode(&component))
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    let previous: Option<(String,)> = sqlx::query_as(
        "UPDATE plugin_versions SET status = 'retired', updated_at = $1
         WHERE name = $2 AND status = 'active' RETURNING id",
    )
    .bind(now_ms)
    .bind(&manifest.name)
    .fetch_optional(&mut *tx)
    .await?;
    let previous = previous.map(|(id,)| id);
    let id = crate::foundation::store::new_id();
    sqlx::query(
        "INSERT INTO plugin_versions (id, name, version, wit, component_sha256, manifest, hooks,
            brands, config, status, installed_by, created_at, updated_at, previous_version_id,
            deployed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'active', $10, $11, $11, $12, $11)",
    )
    .bind(&id)
    .bind(&manifest.name)
    .bind(&manifest.version)
    .bind(manifest.wit.package_id())
    .bind(&sha)
    .bind(manifest_text)
    .bind(serde_json::to_string(&hooks).unwrap_or_default())
    .bind(serde_json::to_string(&manifest.brands).unwrap_or_default())
    .bind(serde_json::Value::Object(config).to_string())
    .bind(installed_by)
    .bind(now_ms)
    .bind(&previous)
    .execute(&mut *tx)
    .await
    .unique_as(|| {
        DomainError::conflict(
            "plugin_version_exists",
            format!(
                "{}@{} is already installed; bump the version",
                manifest.name, manifest.version
            ),
        )
    })?;
    // The platform's own trusted install lands deployed, recorded like any other deploy.
    crate::ledger::audit::append(
        &mut tx,
        store.backend(),
        &crate::ledger::audit::NewEntry {
            actor: installed_by,
            action: "plugin.install",
            subject_kind: "plugin_version",
            subject_id: &id,
            reason: "direct install of a platform-trusted component",
            details: serde_json::json!({
                "name": manifest.name,
                "version": manifest.version,
                "component_sha256": sha,
                "previous_version_id": previous,
            }),
        },
        now_ms,
    )
    .await?;
    super::sync::changed(&mut tx, store.backend(), &manifest.name).await?;
    tx.commit().await?;
    reload(store, host).await?;
    get(store.read(), &id)
        .await?
        .ok_or_else(|| DomainError::internal(anyhow::anyhow!("installed version vanished")))
}

/// Loads what serves from the database into the host: every active version, the canaries,
/// the shadows and the kill switches. A version that fails to load is logged and left out; the
/// others still serve. Compiled artifacts come from this node's cache, so a reload after a
/// change elsewhere recompiles nothing it has seen before.
pub async fn reload(store: &Store, host: &PluginHost) -> Result<usize, DomainError> {
    let _guard = host.reload_guard().await;
    let generation: (i64,) =
        sqlx::query_as("SELECT generation FROM plugin_generation WHERE id = 1")
            .fetch_one(store.read())
            .await?;
    let active = load_rows(store, host, "v.status = 'active'").await?;
    let canaries = load_rows(
        store,
        host,
        "v.id IN (SELECT version_id FROM plugin_canaries)",
    )
    .await?;
    let shadows = load_rows(
        store,
        host,
        "v.id IN (SELECT version_id FROM plugin_shadows)",
    )
    .await?;
    let shares: Vec<(String, i64)> =
        sqlx::query_as("SELECT version_id, basis_points FROM plugin_canaries")
            .fetch_all(store.read())
            .await?;
    let killed: Vec<(String,)> = sqlx::query_as("SELECT name FROM plugin_kills")
        .fetch_all(store.read())
        .await?;
    let mut routing = super::Routing::default();
    for canary in canaries {
        let share = shares
            .iter()
            .find(|(id, _)| *id == canary.version_id)
            .map(|(_, bp)| u32::try_from(*bp).unwrap_or(0))
            .unwrap_or(0);
        routing
            .canaries
            .insert(canary.plugin.name().to_owned(), (canary, share));
    }
    for shadow in shadows {
        routing
            .shadows
            .insert(shadow.plugin.name().to_owned(), shadow);
    }
    routing.killed = killed.into_iter().map(|(name,)| name).collect();
    let count = active.len();
    host.set_active(active);
    host.set_routing(routing);
    host.set_generation(generation.0);
    tracing::debug!(active = count, generation = generation.0, "plugins loaded");
    Ok(count)
}

/// Loads the versions matching `filter` (over `plugin_versions v`). A version this node has
/// loaded already, with the same component and effective config, is kept as it is — its
/// compiled code, circuit breaker and call counters survive the reload — so only new or
/// changed versions are fetched, decoded and loaded.
async fn load_rows(
    store: &Store,
    host: &PluginHost,
    filter: &str,
) -> Result<Vec<ActivePlugin>, DomainError> {
    type Row = (String, String, String, String, String, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT v.id, v.manifest, v.config, v.component_sha256, v.name, v.uploaded_by_brand
         FROM plugin_versions v WHERE {filter} ORDER BY v.name"
    ))
    .fetch_all(store.read())
    .await?;
    let mut loaded_here: std::collections::HashMap<String, ActivePlugin> = host
        .active()
        .iter()
        .map(|p| (p.version_id.clone(), p.clone()))
        .collect();
    let routing = host.routing();
    for (p, _) in routing.canaries.values() {
        loaded_here.insert(p.version_id.clone(), p.clone());
    }
    for p in routing.shadows.values() {
        loaded_here.insert(p.version_id.clone(), p.clone());
    }
    let mut kept = Vec::with_capacity(rows.len());
    let mut to_load = Vec::new();
    for (id, manifest_text, config, sha, name, owner) in rows {
        let same = loaded_here.get(&id).filter(|p| {
            p.plugin.component_sha256() == sha
                && effective_config(&manifest_text, &config).ok().as_ref() == Some(&p.config)
        });
        match same {
            Some(p) => kept.push((name, p.clone())),
            None => to_load.push((id, manifest_text, config, sha, name, owner)),
        }
    }
    let mut fetched = Vec::with_capacity(to_load.len());
    for (id, manifest_text, config, sha, name, owner) in to_load {
        let bytes: Option<(String,)> =
            sqlx::query_as("SELECT bytes_b64 FROM plugin_components WHERE sha256 = $1")
                .bind(&sha)
                .fetch_optional(store.read())
                .await?;
        match bytes {
            Some((b64,)) => fetched.push((id, manifest_text, config, sha, b64, name, owner)),
            None => tracing::error!(plugin = %name, "plugin version has no stored component"),
        }
    }
    let runtime: Runtime = host.runtime().clone();
    let fresh = tokio::task::spawn_blocking(move || {
        fetched
            .into_iter()
            .filter_map(|(id, manifest_text, config, sha, b64, name, owner)| {
                match load_one(&runtime, &manifest_text, &config, &sha, &b64) {
                    Ok((plugin, config)) => Some((
                        name,
                        ActivePlugin {
                            version_id: id,
                            plugin,
                            config,
                            uploaded_by_brand: owner,
                        },
                    )),
                    Err(err) => {
                        tracing::error!(plugin = %name, error = %err, "plugin version failed to load");
                        None
                    }
                }
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(DomainError::internal)?;
    for (_, plugin) in &fresh {
        host.mark_warm(plugin.plugin.component_sha256());
    }
    // In name order, as the query returned them.
    let mut all: Vec<(String, ActivePlugin)> = kept.into_iter().chain(fresh).collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(all.into_iter().map(|(_, p)| p).collect())
}

/// A version's effective config: the admin's config merged over its manifest's defaults.
fn effective_config(
    manifest_text: &str,
    config: &str,
) -> anyhow::Result<coalition_runtime::model::Config> {
    let manifest = Manifest::parse(manifest_text)?;
    let config: serde_json::Map<String, serde_json::Value> = serde_json::from_str(config)?;
    let admin = config_strings(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    manifest
        .effective_config(&admin)
        .map_err(|e| anyhow::anyhow!("config: {e}"))
}

pub(crate) fn load_one(
    runtime: &Runtime,
    manifest_text: &str,
    config: &str,
    sha: &str,
    b64: &str,
) -> anyhow::Result<(
    coalition_runtime::LoadedPlugin,
    coalition_runtime::model::Config,
)> {
    let manifest = Manifest::parse(manifest_text)?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64)?;
    let config: serde_json::Map<String, serde_json::Value> = serde_json::from_str(config)?;
    let admin = config_strings(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let effective = manifest
        .effective_config(&admin)
        .map_err(|e| anyhow::anyhow!("config: {e}"))?;
    let plugin = runtime.load(&manifest, &bytes, Some(sha))?;
    Ok((plugin, effective))
}

/// Admin config arrives as JSON; plugins read strings.
pub(crate) fn config_strings(
    config: &serde_json::Map<String, serde_json::Value>,
) -> Result<coalition_runtime::model::Config, DomainError> {
    config
        .iter()
        .map(|(k, v)| {
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(DomainError::validation(format!(
                        "config {k:?} must be a string, integer or boolean"
                    )))
                }
            };
            Ok((k.clone(), s))
        })
        .collect()
}
