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
use crate::error::ApiError;
use crate::store::Store;

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
    /// `active` or `retired`.
    pub status: String,
    /// Admin-set configuration.
    pub config: serde_json::Value,
    /// Who installed it.
    pub installed_by: String,
    /// When, Unix ms.
    pub created_at: i64,
}

type VersionRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
);

const VERSION_COLUMNS: &str = "id, name, version, wit, component_sha256, hooks, brands, status, \
     config, installed_by, created_at";

fn to_version(row: VersionRow) -> InstalledVersion {
    let (id, name, version, wit, sha, hooks, brands, status, config, installed_by, created_at) =
        row;
    InstalledVersion {
        id,
        name,
        version,
        wit,
        component_sha256: sha,
        hooks: serde_json::from_str(&hooks).unwrap_or_default(),
        brands: serde_json::from_str(&brands).unwrap_or_default(),
        status,
        config: serde_json::from_str(&config).unwrap_or(serde_json::Value::Null),
        installed_by,
        created_at,
    }
}

/// Every installed version, newest first (bounded: a coalition has tens of plugins).
pub async fn list(store: &Store) -> Result<Vec<InstalledVersion>, ApiError> {
    let rows: Vec<VersionRow> = sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM plugin_versions ORDER BY name, created_at DESC LIMIT 1000"
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
) -> Result<InstalledVersion, ApiError> {
    if component.len() > MAX_COMPONENT_BYTES {
        return Err(ApiError::validation(format!(
            "component is {} bytes; the limit is {MAX_COMPONENT_BYTES}",
            component.len()
        )));
    }
    let manifest = Manifest::parse(manifest_text)
        .map_err(|err| ApiError::validation(format!("manifest: {err}")))?;
    let admin_config = config_strings(&config)?;
    manifest
        .effective_config(&admin_config)
        .map_err(|err| ApiError::validation(format!("config: {err}")))?;
    let runtime = host.runtime().clone();
    let (loaded, component) = {
        let manifest = manifest.clone();
        tokio::task::spawn_blocking(move || {
            let loaded = runtime.load(&manifest, &component, None);
            (loaded, component)
        })
        .await
        .map_err(ApiError::internal)?
    };
    let loaded =
        loaded.map_err(|err| ApiError::unprocessable("plugin_rejected", err.to_string()))?;
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
    sqlx::query(
        "UPDATE plugin_versions SET status = 'retired', updated_at = $1
         WHERE name = $2 AND status = 'active'",
    )
    .bind(now_ms)
    .bind(&manifest.name)
    .execute(&mut *tx)
    .await?;
    let id = crate::store::new_id();
    let inserted = sqlx::query(
        "INSERT INTO plugin_versions (id, name, version, wit, component_sha256, manifest, hooks,
            brands, config, status, installed_by, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'active', $10, $11, $11)",
    )
    .bind(&id)
    .bind(&manifest.name)
    .bind(&manifest.version)
    .bind(manifest.wit.package_id())
    .bind(&sha)
    .bind(manifest_text)
    .bind(serde_json::to_string(&hooks).unwrap_or_default())
    .bind(serde_json::to_string(&loaded.info().brands).unwrap_or_default())
    .bind(serde_json::Value::Object(config).to_string())
    .bind(installed_by)
    .bind(now_ms)
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        Err(err) if crate::store::is_unique_violation(&err) => {
            return Err(ApiError::conflict(
                "plugin_version_exists",
                format!(
                    "{}@{} is already installed; bump the version",
                    manifest.name, manifest.version
                ),
            ))
        }
        Err(err) => return Err(err.into()),
    }
    tx.commit().await?;
    reload(store, host).await?;
    let row: VersionRow = sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM plugin_versions WHERE id = $1"
    ))
    .bind(&id)
    .fetch_one(store.read())
    .await?;
    Ok(to_version(row))
}

/// Loads every active version from the database into the host. A version that fails to load
/// is logged and left out; the others still serve.
pub async fn reload(store: &Store, host: &PluginHost) -> Result<usize, ApiError> {
    let rows: Vec<(String, String, String, String, String, String)> = sqlx::query_as(
        "SELECT v.id, v.manifest, v.config, v.component_sha256, c.bytes_b64, v.name
         FROM plugin_versions v JOIN plugin_components c ON c.sha256 = v.component_sha256
         WHERE v.status = 'active' ORDER BY v.name",
    )
    .fetch_all(store.read())
    .await?;
    let runtime: Runtime = host.runtime().clone();
    let loaded = tokio::task::spawn_blocking(move || {
        rows.into_iter()
            .filter_map(|(id, manifest_text, config, sha, b64, name)| {
                match load_one(&runtime, &manifest_text, &config, &sha, &b64) {
                    Ok((plugin, config)) => Some(ActivePlugin {
                        version_id: id,
                        plugin,
                        config,
                    }),
                    Err(err) => {
                        tracing::error!(plugin = %name, error = %err, "active plugin failed to load");
                        None
                    }
                }
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(ApiError::internal)?;
    let count = loaded.len();
    host.set_active(loaded);
    tracing::info!(active = count, "plugins loaded");
    Ok(count)
}

fn load_one(
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
fn config_strings(
    config: &serde_json::Map<String, serde_json::Value>,
) -> Result<coalition_runtime::model::Config, ApiError> {
    config
        .iter()
        .map(|(k, v)| {
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(ApiError::validation(format!(
                        "config {k:?} must be a string, integer or boolean"
                    )))
                }
            };
            Ok((k.clone(), s))
        })
        .collect()
}
