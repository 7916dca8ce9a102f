//! The plugin lifecycle: partner brands upload signed packages; platform admins review, approve,
//! deploy, canary, promote, roll back and kill. Nothing reaches members without review.
//!
//! ```text
//! uploaded ──validate──▶ awaiting_cosign ──co-signatures──▶ validated ──approve──▶ approved
//!     │                        │                                │                    │
//!     └──────────── reject (any review step, with a reason) ────┴────────────────────┤
//!                                                                                    ▼
//!                 retired ◀── deploy of another version / rollback ── active (deployed)
//! ```
//!
//! - **Upload** (a brand key): the brand must be one of the manifest's brands; the package is
//!   signed by one of the brand's admin-approved ed25519 keys over the content hash
//!   ([`super::signing`]). A bad signature, or a changed byte of manifest or component, is
//!   refused with `signature_invalid` and nothing is stored.
//! - **Validate**, in the background ([`spawn_validation`]): the component compiles within
//!   `[plugins] validation_budget_ms`, imports nothing the host does not offer, exports what the
//!   manifest declares, limits within platform maxima ([`coalition_runtime::Runtime::load`]); a
//!   failure rejects the version with the reason. A rejection that is not the package's fault
//!   ([`RETRYABLE_REJECTIONS`]: the compile ran out of time, or the node stopped) may be
//!   validated again, so a slow compile never burns a version number. Versions left `uploaded`
//!   by a stopped node are validated again when a node starts ([`resume_validations`]).
//! - **Co-signature**: every other brand the manifest names (a perk may spend their money) must
//!   sign the same content hash with one of its approved keys before an admin can approve.
//! - **Serve**: one active version per plugin (a unique index), optionally one canary serving
//!   a share of members ([`super::canary_bucket`]), a kill switch, and a shadow.
//!
//! Every transition runs in one transaction with guarded `UPDATE … WHERE status = …`, appends
//! an entry to the hash-chained audit log ([`crate::ledger::audit`]) and, when what serves changes,
//! bumps the generation so every node reloads ([`super::sync`]).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use coalition_runtime::{Manifest, Surface};
use serde::Serialize;
use sqlx::AnyConnection;
use utoipa::ToSchema;

use super::registry::{self, InstalledVersion};
use super::signing;
use super::PluginHost;
use crate::domain::access::{Principal, Role};
use crate::foundation::clock::Clock;
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::UniqueAsConflict;
use crate::foundation::store::{Backend, Store};

/// Rejections that are not the package's fault: the compile ran out of its budget (a loaded
/// node), or the validation was interrupted (the node stopped). Such a version may be
/// validated again; any other rejection is final and the partner bumps the version.
pub const RETRYABLE_REJECTIONS: &[&str] = &["compile_timeout", "validation_interrupted"];
/// Signing keys one brand may hold in `pending` or `approved`: enough for rotation and a
/// key per developer team, few enough that an admin can review each.
pub const MAX_SIGNING_KEYS_PER_BRAND: i64 = 10;
/// Longest key label.
pub const MAX_LABEL_LEN: usize = 100;
/// Largest upload body: the component in base64 (4/3 of [`registry::MAX_COMPONENT_BYTES`])
/// plus the manifest, signature and JSON framing.
pub const MAX_UPLOAD_BODY_BYTES: usize = registry::MAX_COMPONENT_BYTES / 3 * 4 + 256 * 1024;

/// How a principal appears in the audit log.
pub fn actor(principal: &Principal) -> String {
    match (&principal.role, &principal.brand_id) {
        (Role::Admin, _) => format!("admin:{}", principal.key_id),
        (role, Some(brand)) => format!("{}:{brand}:{}", role.as_str(), principal.key_id),
        (role, None) => format!("{}:{}", role.as_str(), principal.key_id),
    }
}

/// Actor of automatic steps (validation).
pub const SYSTEM_VALIDATOR: &str = "system:validator";

#[allow(clippy::too_many_arguments)]
async fn audit(
    conn: &mut AnyConnection,
    backend: Backend,
    actor: &str,
    action: &str,
    subject_kind: &str,
    subject_id: &str,
    reason: &str,
    details: serde_json::Value,
    now_ms: i64,
) -> DomainResult<()> {
    crate::ledger::audit::append(
        conn,
        backend,
        &crate::ledger::audit::NewEntry {
            actor,
            action,
            subject_kind,
            subject_id,
            reason,
            details,
        },
        now_ms,
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Signing keys

/// A brand's signing key.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct SigningKey {
    /// Key id (name it when signing).
    pub id: String,
    /// Owning brand.
    pub brand_id: String,
    /// ed25519 public key, hex.
    pub public_key: String,
    /// Free text.
    pub label: String,
    /// `pending`, `approved` or `revoked`.
    pub status: String,
    /// Who registered it.
    pub created_by: String,
    /// When, Unix ms.
    pub created_at: i64,
    /// Who approved or revoked it.
    pub decided_by: Option<String>,
    /// When, Unix ms.
    pub decided_at: Option<i64>,
}

const KEY_COLUMNS: &str =
    "id, brand_id, public_key, label, status, created_by, created_at, decided_by, decided_at";

/// Registers a public key for `brand` as `pending`.
#[allow(clippy::too_many_arguments)]
pub async fn register_key(
    conn: &mut AnyConnection,
    backend: Backend,
    brand: &str,
    public_key: &str,
    label: &str,
    actor: &str,
    now_ms: i64,
) -> DomainResult<SigningKey> {
    let key = signing::parse_public_key(public_key)
        .map_err(|err| DomainError::validation(format!("public_key: {err}")))?;
    if label.len() > MAX_LABEL_LEN {
        return Err(DomainError::validation(format!(
            "label is longer than {MAX_LABEL_LEN} bytes"
        )));
    }
    let (brands,): (i64,) =
        sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM brands WHERE id = $1")
            .bind(brand)
            .fetch_one(&mut *conn)
            .await?;
    if brands == 0 {
        return Err(DomainError::not_found("brand", brand));
    }
    let (held,): (i64,) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM brand_signing_keys
         WHERE brand_id = $1 AND status <> 'revoked'",
    )
    .bind(brand)
    .fetch_one(&mut *conn)
    .await?;
    if held >= MAX_SIGNING_KEYS_PER_BRAND {
        return Err(DomainError::unprocessable(
            "too_many_signing_keys",
            format!("a brand holds at most {MAX_SIGNING_KEYS_PER_BRAND} keys; revoke one first"),
        ));
    }
    let id = crate::foundation::store::new_id();
    let public_hex = hex::encode(key.to_bytes());
    sqlx::query(
        "INSERT INTO brand_signing_keys (id, brand_id, public_key, label, status, created_by,
            created_at) VALUES ($1, $2, $3, $4, 'pending', $5, $6)",
    )
    .bind(&id)
    .bind(brand)
    .bind(&public_hex)
    .bind(label)
    .bind(actor)
    .bind(now_ms)
    .execute(&mut *conn)
    .await
    .unique_as(|| {
        DomainError::conflict(
            "signing_key_exists",
            "this public key is already registered",
        )
    })?;
    audit(
        conn,
        backend,
        actor,
        "signing_key.register",
        "signing_key",
        &id,
        "",
        serde_json::json!({"brand_id": brand, "public_key": public_hex}),
        now_ms,
    )
    .await?;
    load_key(conn, &id).await
}

async fn load_key(conn: &mut AnyConnection, id: &str) -> DomainResult<SigningKey> {
    let key: Option<SigningKey> = sqlx::query_as(&format!(
        "SELECT {KEY_COLUMNS} FROM brand_signing_keys WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    key.ok_or_else(|| DomainError::not_found("signing key", id))
}

/// A brand's keys, newest first.
pub async fn list_keys(pool: &sqlx::AnyPool, brand: &str) -> DomainResult<Vec<SigningKey>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {KEY_COLUMNS} FROM brand_signing_keys WHERE brand_id = $1
         ORDER BY created_at DESC, id DESC LIMIT 100"
    ))
    .bind(brand)
    .fetch_all(pool)
    .await?)
}

/// Approves a pending key (admins) or revokes a key (admins, or the owning brand).
pub async fn decide_key(
    conn: &mut AnyConnection,
    backend: Backend,
    principal: &Principal,
    key_id: &str,
    approve: bool,
    reason: &str,
    now_ms: i64,
) -> DomainResult<SigningKey> {
    let key = load_key(conn, key_id).await?;
    if approve {
        principal.require_admin()?;
    } else {
        principal.require_brand(&key.brand_id)?;
    }
    let actor = actor(principal);
    let (to, from) = if approve {
        ("approved", "status = 'pending'")
    } else {
        ("revoked", "status <> 'revoked'")
    };
    let updated = sqlx::query(&format!(
        "UPDATE brand_signing_keys SET status = $1, decided_by = $2, decided_at = $3
         WHERE id = $4 AND {from}"
    ))
    .bind(to)
    .bind(&actor)
    .bind(now_ms)
    .bind(key_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(DomainError::conflict(
            "invalid_transition",
            format!("signing key is {}; it cannot become {to}", key.status),
        ));
    }
    let action = if approve {
        "signing_key.approve"
    } else {
        "signing_key.revoke"
    };
    audit(
        conn,
        backend,
        &actor,
        action,
        "signing_key",
        key_id,
        reason,
        serde_json::json!({"brand_id": key.brand_id}),
        now_ms,
    )
    .await?;
    load_key(conn, key_id).await
}

/// Checks that `key_id` is an approved key of `brand` and that `signature` verifies over
/// `hash` with it.
async fn check_signature(
    conn: &mut AnyConnection,
    brand: &str,
    key_id: &str,
    signature: &str,
    hash: &[u8; 32],
) -> DomainResult<()> {
    let key = load_key(conn, key_id).await?;
    if key.brand_id != brand {
        return Err(DomainError::unprocessable(
            "signature_invalid",
            format!("signing key {key_id} is not a key of brand {brand:?}"),
        ));
    }
    if key.status != "approved" {
        return Err(DomainError::unprocessable(
            "signing_key_not_approved",
            format!(
                "signing key {key_id} is {}; an admin must approve it first",
                key.status
            ),
        ));
    }
    signing::verify(&key.public_key, signature, hash)
        .map_err(|err| DomainError::unprocessable("signature_invalid", err.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Upload, validation, co-signature, review

/// A package as uploaded.
#[derive(Debug, Clone)]
pub struct Package<'a> {
    /// Manifest TOML text.
    pub manifest: &'a str,
    /// Component, base64.
    pub component_base64: &'a str,
    /// Signing key id.
    pub key_id: &'a str,
    /// ed25519 signature over the content hash, hex.
    pub signature: &'a str,
}

/// Stores a signed package as `uploaded` (the uploading brand's signature verified, content
/// hash recorded). Validation follows with [`validate`].
pub async fn upload(
    conn: &mut AnyConnection,
    backend: Backend,
    principal: &Principal,
    package: &Package<'_>,
    now_ms: i64,
) -> DomainResult<InstalledVersion> {
    let brand = match (principal.role, principal.brand_id.as_deref()) {
        (Role::Brand, Some(brand)) => brand.to_owned(),
        _ => {
            return Err(DomainError::forbidden(
                "packages are uploaded with a brand key; the platform installs its own \
                 components directly",
            ))
        }
    };
    let component = base64::engine::general_purpose::STANDARD
        .decode(package.component_base64.trim())
        .map_err(|_| DomainError::validation("component_base64 is not valid base64"))?;
    if component.len() > registry::MAX_COMPONENT_BYTES {
        return Err(DomainError::validation(format!(
            "component is {} bytes; the limit is {}",
            component.len(),
            registry::MAX_COMPONENT_BYTES
        )));
    }
    let manifest = Manifest::parse(package.manifest)
        .map_err(|err| DomainError::unprocessable("manifest_invalid", err.to_string()))?;
    if !manifest.brands.contains(&brand) {
        return Err(DomainError::forbidden(format!(
            "brand {brand:?} is not among the manifest's brands {:?}",
            manifest.brands
        )));
    }
    let hash = signing::content_hash(package.manifest.as_bytes(), &component);
    check_signature(conn, &brand, package.key_id, package.signature, &hash).await?;
    let content_hex = hex::encode(hash);
    let component_sha = coalition_runtime::receipt::sha256_hex(&component);

    sqlx::query(
        "INSERT INTO plugin_components (sha256, size_bytes, bytes_b64, created_at)
         VALUES ($1, $2, $3, $4) ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(&component_sha)
    .bind(i64::try_from(component.len()).unwrap_or(i64::MAX))
    .bind(base64::engine::general_purpose::STANDARD.encode(&component))
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    let id = crate::foundation::store::new_id();
    let actor = actor(principal);
    let hooks: Vec<&str> = manifest.hooks.iter().map(|h| h.as_str()).collect();
    sqlx::query(
        "INSERT INTO plugin_versions (id, name, version, wit, component_sha256, manifest, hooks,
            brands, config, status, installed_by, created_at, updated_at, content_sha256,
            uploaded_by_brand)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '{}', 'uploaded', $9, $10, $10, $11, $12)",
    )
    .bind(&id)
    .bind(&manifest.name)
    .bind(&manifest.version)
    .bind(manifest.wit.package_id())
    .bind(&component_sha)
    .bind(package.manifest)
    .bind(serde_json::to_string(&hooks).unwrap_or_default())
    .bind(serde_json::to_string(&manifest.brands).unwrap_or_default())
    .bind(&actor)
    .bind(now_ms)
    .bind(&content_hex)
    .bind(&brand)
    .execute(&mut *conn)
    .await
    .unique_as(|| {
        DomainError::conflict(
            "plugin_version_exists",
            format!(
                "{}@{} was already uploaded; bump the version",
                manifest.name, manifest.version
            ),
        )
    })?;
    sqlx::query(
        "INSERT INTO plugin_signatures (version_id, brand_id, key_id, content_sha256, signature,
            kind, created_at) VALUES ($1, $2, $3, $4, $5, 'upload', $6)",
    )
    .bind(&id)
    .bind(&brand)
    .bind(package.key_id)
    .bind(&content_hex)
    .bind(package.signature.trim().to_lowercase())
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    audit(
        conn,
        backend,
        &actor,
        "plugin.upload",
        "plugin_version",
        &id,
        "",
        serde_json::json!({
            "name": manifest.name,
            "version": manifest.version,
            "content_sha256": content_hex,
            "component_sha256": component_sha,
            "key_id": package.key_id,
        }),
        now_ms,
    )
    .await?;
    registry::get(&mut *conn, &id)
        .await?
        .ok_or_else(|| DomainError::internal(anyhow::anyhow!("uploaded version vanished")))
}

/// Brands named by the manifest that have not signed the version yet.
async fn missing_signers(
    conn: &mut AnyConnection,
    version: &InstalledVersion,
) -> DomainResult<Vec<String>> {
    // Only signatures by keys still approved count: revoking a key withdraws its signatures
    // from every version not yet approved.
    let signed: Vec<(String,)> = sqlx::query_as(
        "SELECT s.brand_id FROM plugin_signatures s
         JOIN brand_signing_keys k ON k.id = s.key_id
         WHERE s.version_id = $1 AND k.status = 'approved'",
    )
    .bind(&version.id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(version
        .brands
        .iter()
        .filter(|b| !signed.iter().any(|(s,)| s == *b))
        .cloned()
        .collect())
}

/// Refuses a version any of whose signatures was made by a key revoked since: the brand must
/// upload or co-sign again with an approved key.
async fn refuse_revoked_signatures(
    conn: &mut AnyConnection,
    version: &InstalledVersion,
) -> DomainResult<()> {
    let revoked: Option<(String, String)> = sqlx::query_as(
        "SELECT s.brand_id, s.key_id FROM plugin_signatures s
         JOIN brand_signing_keys k ON k.id = s.key_id
         WHERE s.version_id = $1 AND k.status = 'revoked'
         ORDER BY s.brand_id LIMIT 1",
    )
    .bind(&version.id)
    .fetch_optional(&mut *conn)
    .await?;
    match revoked {
        Some((brand, key)) => Err(DomainError::conflict(
            "signing_key_revoked",
            format!(
                "the signature of brand {brand:?} was made with key {key}, since revoked; \
                 the brand signs again with an approved key (POST /plugins/{}/cosign)",
                version.id
            ),
        )),
        None => Ok(()),
    }
}

/// The version as it now is; 404 if unknown.
async fn reloaded(conn: &mut AnyConnection, id: &str) -> DomainResult<InstalledVersion> {
    registry::get(&mut *conn, id)
        .await?
        .ok_or_else(|| DomainError::not_found("plugin version", id))
}

/// The refusal of a step the version's status does not allow (`409 invalid_transition`).
fn invalid_transition(status: &str, allowed: &str) -> DomainError {
    DomainError::conflict(
        "invalid_transition",
        format!("version is {status}; {allowed}"),
    )
}

/// The end every version transition shares: the audit record of who did it and why, the other
/// nodes told when what serves `serving_changed` (a plugin name) changed, and the version as it
/// now is.
#[allow(clippy::too_many_arguments)]
async fn conclude(
    conn: &mut AnyConnection,
    backend: Backend,
    principal: &Principal,
    action: &str,
    id: &str,
    reason: &str,
    details: serde_json::Value,
    serving_changed: Option<&str>,
    now_ms: i64,
) -> DomainResult<InstalledVersion> {
    audit(
        conn,
        backend,
        &actor(principal),
        action,
        "plugin_version",
        id,
        reason,
        details,
        now_ms,
    )
    .await?;
    if let Some(name) = serving_changed {
        super::sync::changed(conn, backend, name).await?;
    }
    let version = reloaded(conn, id).await?;
    announce_status(conn, &version, action, now_ms).await?;
    Ok(version)
}

/// Every brand the plugin serves hears of its version's new status (a webhook event, in the
/// transaction of the change).
async fn announce_status(
    conn: &mut AnyConnection,
    version: &InstalledVersion,
    action: &str,
    now_ms: i64,
) -> DomainResult<()> {
    for brand in &version.brands {
        crate::domain::webhooks::record(
            conn,
            brand,
            crate::domain::webhooks::EventType::PluginVersionStatus,
            None,
            serde_json::json!({
                "version_id": version.id, "plugin": version.name, "version": version.version,
                "status": version.status, "action": action, "changed_at_ms": now_ms,
            }),
        )
        .await?;
    }
    Ok(())
}

/// Locks and loads a version.
async fn lock_version(
    conn: &mut AnyConnection,
    backend: Backend,
    id: &str,
) -> DomainResult<InstalledVersion> {
    let row: Option<(String,)> = sqlx::query_as(&format!(
        "SELECT id FROM plugin_versions WHERE id = $1{}",
        crate::foundation::store::for_update(backend)
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    if row.is_none() {
        return Err(DomainError::not_found("plugin version", id));
    }
    reloaded(conn, id).await
}

/// Compiles and checks an `uploaded` version within the validation budget, then moves it to
/// `awaiting_cosign` (co-signatures missing), `validated`, or `rejected` with the reason. A
/// version rejected for a [retryable](RETRYABLE_REJECTIONS) reason is taken back to `uploaded`
/// first and validated again.
pub async fn validate(
    store: &Store,
    host: &PluginHost,
    clock: &dyn Clock,
    id: &str,
) -> DomainResult<InstalledVersion> {
    let row: Option<(String, Option<String>, String, String, String)> = sqlx::query_as(
        "SELECT v.status, v.status_code, v.manifest, v.component_sha256, c.bytes_b64
         FROM plugin_versions v JOIN plugin_components c ON c.sha256 = v.component_sha256
         WHERE v.id = $1",
    )
    .bind(id)
    .fetch_optional(store.read())
    .await?;
    let Some((status, code, manifest_text, sha, b64)) = row else {
        return Err(DomainError::not_found("plugin version", id));
    };
    let retry = status == "rejected"
        && code
            .as_deref()
            .is_some_and(|c| RETRYABLE_REJECTIONS.contains(&c));
    if status != "uploaded" && !retry {
        return Err(DomainError::conflict(
            "invalid_transition",
            format!(
                "version is {status}; only uploaded versions, or versions rejected for a \
                 reason that was not the package's ({}), are validated",
                RETRYABLE_REJECTIONS.join(", ")
            ),
        ));
    }
    if retry {
        let backend = store.backend();
        let mut tx = store.begin().await?;
        let reopened = sqlx::query(
            "UPDATE plugin_versions SET status = 'uploaded', status_reason = '',
                status_code = NULL, updated_at = $1
             WHERE id = $2 AND status = 'rejected' AND status_code = $3",
        )
        .bind(clock.now_ms())
        .bind(id)
        .bind(&code)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if reopened == 1 {
            audit(
                &mut tx,
                backend,
                SYSTEM_VALIDATOR,
                "plugin.revalidate",
                "plugin_version",
                id,
                "validated again after a rejection that was not the package's fault",
                serde_json::json!({"previous_code": code}),
                clock.now_ms(),
            )
            .await?;
        }
        tx.commit().await?;
    }
    let budget = Duration::from_millis(host.config().validation_budget_ms);
    let runtime = host.runtime().clone();
    let component_sha = sha.clone();
    // A rejection carries a stable code (what kind of refusal) beside its human reason.
    let task = tokio::task::spawn_blocking(move || -> Result<Surface, (&'static str, String)> {
        let manifest = Manifest::parse(&manifest_text)
            .map_err(|e| ("manifest_invalid", format!("manifest: {e}")))?;
        manifest
            .effective_config(&Default::default())
            .map_err(|e| ("config_invalid", format!("config defaults: {e}")))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| ("component_invalid", format!("stored component: {e}")))?;
        runtime
            .load(&manifest, &bytes, Some(&sha))
            .map(|plugin| plugin.surface().clone())
            .map_err(|e| {
                let code = match &e.kind {
                    coalition_runtime::ErrorKind::Load(load) => load.code(),
                    kind => kind.code(),
                };
                (code, e.to_string())
            })
    });
    let outcome = match tokio::time::timeout(budget, task).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(err)) => Err((
            "validation_interrupted",
            format!("the validation did not finish ({err}); validate the version again"),
        )),
        Err(_) => Err((
            "compile_timeout",
            format!(
                "the component did not compile within {} ms; validate the version again \
                 when the node is less busy",
                budget.as_millis()
            ),
        )),
    };
    let now_ms = clock.now_ms();
    if outcome.is_ok() {
        host.mark_warm(&component_sha);
    }
    let backend = store.backend();
    let mut tx = store.begin().await?;
    let version = lock_version(&mut tx, backend, id).await?;
    if version.status != "uploaded" {
        // Another validation finished first; report what it decided.
        return Ok(version);
    }
    let (to, reason, code) = match &outcome {
        Ok(_) => {
            if missing_signers(&mut tx, &version).await?.is_empty() {
                ("validated", String::new(), None)
            } else {
                ("awaiting_cosign", String::new(), None)
            }
        }
        Err((code, reason)) => ("rejected", clip(reason), Some(*code)),
    };
    let (imports, exports) = match &outcome {
        Ok(surface) => (
            Some(serde_json::to_string(&surface.imports).map_err(DomainError::internal)?),
            Some(serde_json::to_string(&surface.exports).map_err(DomainError::internal)?),
        ),
        Err(_) => (None, None),
    };
    sqlx::query(
        "UPDATE plugin_versions SET status = $1, status_reason = $2, status_code = $5,
            updated_at = $3, imports = $6, exports = $7
         WHERE id = $4 AND status = 'uploaded'",
    )
    .bind(to)
    .bind(&reason)
    .bind(now_ms)
    .bind(id)
    .bind(code)
    .bind(imports)
    .bind(exports)
    .execute(&mut *tx)
    .await?;
    let action = if to == "rejected" {
        "plugin.reject"
    } else {
        "plugin.validate"
    };
    audit(
        &mut tx,
        backend,
        SYSTEM_VALIDATOR,
        action,
        "plugin_version",
        id,
        &reason,
        serde_json::json!({"status": to, "code": code}),
        now_ms,
    )
    .await?;
    let validated = reloaded(&mut tx, id).await?;
    announce_status(&mut tx, &validated, action, now_ms).await?;
    tx.commit().await?;
    registry::get(store.read(), id)
        .await?
        .ok_or_else(|| DomainError::not_found("plugin version", id))
}

/// Validates `id` in the background; the handle answers with the outcome. Dropping the handle
/// leaves the validation running: an upload answers `202` and the version moves on its own.
pub fn spawn_validation(
    store: Store,
    host: Arc<PluginHost>,
    clock: Arc<dyn Clock>,
    id: String,
) -> tokio::task::JoinHandle<DomainResult<InstalledVersion>> {
    tokio::spawn(async move {
        let outcome = validate(&store, &host, clock.as_ref(), &id).await;
        match &outcome {
            Ok(version) => tracing::info!(
                version = %id,
                status = %version.status,
                "plugin validation finished"
            ),
            Err(err) => tracing::warn!(version = %id, error = %err, "plugin validation failed"),
        }
        outcome
    })
}

/// Most versions a starting node validates again at once: uploads left `uploaded` by a node
/// that stopped mid-compile are rare, and each compile takes a core for seconds.
pub const MAX_RESUMED_VALIDATIONS: i64 = 16;

/// Validates again the versions a stopped node left `uploaded` (oldest first, at most
/// [`MAX_RESUMED_VALIDATIONS`]), in the background. Several nodes may do it at once: the first
/// to finish decides, the others report its decision.
pub async fn resume_validations(
    store: &Store,
    host: &Arc<PluginHost>,
    clock: &Arc<dyn Clock>,
) -> DomainResult<usize> {
    let ids: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM plugin_versions WHERE status = 'uploaded' ORDER BY created_at, id LIMIT $1",
    )
    .bind(MAX_RESUMED_VALIDATIONS)
    .fetch_all(store.read())
    .await?;
    for (id,) in &ids {
        drop(spawn_validation(
            store.clone(),
            host.clone(),
            clock.clone(),
            id.clone(),
        ));
    }
    Ok(ids.len())
}

fn clip(text: &str) -> String {
    let max = crate::ledger::audit::MAX_REASON_LEN;
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// A co-signature by another brand the manifest names, over the same content hash.
pub async fn cosign(
    conn: &mut AnyConnection,
    backend: Backend,
    principal: &Principal,
    id: &str,
    key_id: &str,
    signature: &str,
    now_ms: i64,
) -> DomainResult<InstalledVersion> {
    let brand = match (principal.role, principal.brand_id.as_deref()) {
        (Role::Brand, Some(brand)) => brand.to_owned(),
        _ => {
            return Err(DomainError::forbidden(
                "co-signatures are made with a brand key",
            ))
        }
    };
    let version = lock_version(conn, backend, id).await?;
    if !version.brands.contains(&brand) {
        return Err(DomainError::not_found("plugin version", id));
    }
    if !matches!(
        version.status.as_str(),
        "uploaded" | "awaiting_cosign" | "validated"
    ) {
        return Err(invalid_transition(
            &version.status,
            "co-signatures are taken before approval",
        ));
    }
    let content_hex = version.content_sha256.clone().ok_or_else(|| {
        DomainError::conflict("invalid_transition", "direct installs are not signed")
    })?;
    let hash: [u8; 32] = hex::decode(&content_hex)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| DomainError::internal(anyhow::anyhow!("stored content hash is not hex")))?;
    check_signature(conn, &brand, key_id, signature, &hash).await?;
    let already_signed = || {
        DomainError::conflict(
            "already_signed",
            format!("brand {brand:?} has already signed this version"),
        )
    };
    // The version row is locked, so this read and the write below cannot race another cosign.
    let existing: Option<(String,)> = sqlx::query_as(
        "SELECT k.status FROM plugin_signatures s JOIN brand_signing_keys k ON k.id = s.key_id
         WHERE s.version_id = $1 AND s.brand_id = $2",
    )
    .bind(id)
    .bind(&brand)
    .fetch_optional(&mut *conn)
    .await?;
    match existing {
        // A signature by a key revoked since is replaced by one with an approved key.
        Some((status,)) if status == "revoked" => {
            sqlx::query(
                "UPDATE plugin_signatures SET key_id = $1, signature = $2, created_at = $3
                 WHERE version_id = $4 AND brand_id = $5",
            )
            .bind(key_id)
            .bind(signature.trim().to_lowercase())
            .bind(now_ms)
            .bind(id)
            .bind(&brand)
            .execute(&mut *conn)
            .await?;
        }
        Some(_) => return Err(already_signed()),
        None => {
            sqlx::query(
                "INSERT INTO plugin_signatures (version_id, brand_id, key_id, content_sha256,
                    signature, kind, created_at) VALUES ($1, $2, $3, $4, $5, 'cosign', $6)",
            )
            .bind(id)
            .bind(&brand)
            .bind(key_id)
            .bind(&content_hex)
            .bind(signature.trim().to_lowercase())
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .unique_as(already_signed)?;
        }
    }
    if version.status == "awaiting_cosign" && missing_signers(conn, &version).await?.is_empty() {
        sqlx::query(
            "UPDATE plugin_versions SET status = 'validated', updated_at = $1
             WHERE id = $2 AND status = 'awaiting_cosign'",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    }
    audit(
        conn,
        backend,
        &actor(principal),
        "plugin.cosign",
        "plugin_version",
        id,
        "",
        serde_json::json!({"brand_id": brand, "key_id": key_id, "content_sha256": content_hex}),
        now_ms,
    )
    .await?;
    reloaded(conn, id).await
}

/// Approves a `validated` version (admins), optionally with its configuration.
pub async fn approve(
    conn: &mut AnyConnection,
    backend: Backend,
    principal: &Principal,
    id: &str,
    reason: &str,
    config: Option<serde_json::Map<String, serde_json::Value>>,
    now_ms: i64,
) -> DomainResult<InstalledVersion> {
    principal.require_admin()?;
    let version = lock_version(conn, backend, id).await?;
    refuse_revoked_signatures(conn, &version).await?;
    match version.status.as_str() {
        "validated" => {}
        "awaiting_cosign" => {
            let missing = missing_signers(conn, &version).await?;
            return Err(DomainError::conflict(
                "cosignature_missing",
                format!("brands {missing:?} must co-sign the content hash before approval"),
            ));
        }
        other => {
            return Err(invalid_transition(
                other,
                "only validated versions can be approved",
            ))
        }
    }
    // Defence in depth: the status says co-signed; the signatures must agree.
    let missing = missing_signers(conn, &version).await?;
    if !missing.is_empty() {
        return Err(DomainError::conflict(
            "cosignature_missing",
            format!("brands {missing:?} must co-sign the content hash before approval"),
        ));
    }
    let config_text = match &config {
        Some(config) => {
            let manifest = Manifest::parse(&stored_manifest(conn, id).await?)
                .map_err(DomainError::internal)?;
            let strings = registry::config_strings(config)?;
            manifest
                .effective_config(&strings)
                .map_err(|err| DomainError::validation(format!("config: {err}")))?;
            serde_json::Value::Object(config.clone()).to_string()
        }
        None => version.config.to_string(),
    };
    sqlx::query(
        "UPDATE plugin_versions SET status = 'approved', config = $1, status_reason = $2,
            updated_at = $3 WHERE id = $4 AND status = 'validated'",
    )
    .bind(&config_text)
    .bind(reason)
    .bind(now_ms)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    // Every node precompiles approved versions, so deploying later is a pointer swap.
    conclude(
        conn,
        backend,
        principal,
        "plugin.approve",
        id,
        reason,
        serde_json::json!({"config": serde_json::from_str::<serde_json::Value>(&config_text)
            .unwrap_or(serde_json::Value::Null)}),
        Some(&version.name),
        now_ms,
    )
    .await
}

async fn stored_manifest(conn: &mut AnyConnection, id: &str) -> DomainResult<String> {
    let (text,): (String,) = sqlx::query_as("SELECT manifest FROM plugin_versions WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(text)
}

/// Rejects a version at any review step (admins), with a reason.
pub async fn reject(
    conn: &mut AnyConnection,
    backend: Backend,
    principal: &Principal,
    id: &str,
    reason: &str,
    now_ms: i64,
) -> DomainResult<InstalledVersion> {
    principal.require_admin()?;
    require_reason(reason)?;
    let version = lock_version(conn, backend, id).await?;
    let updated = sqlx::query(
        "UPDATE plugin_versions SET status = 'rejected', status_reason = $1, updated_at = $2
         WHERE id = $3 AND status IN ('uploaded', 'validated', 'awaiting_cosign', 'approved')",
    )
    .bind(reason)
    .bind(now_ms)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(invalid_transition(
            &version.status,
            "only versions under review can be rejected",
        ));
    }
    // A rejected version no longer shadows anything.
    let unshadowed = sqlx::query("DELETE FROM plugin_shadows WHERE version_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if unshadowed > 0 {
        super::sync::changed(conn, backend, &version.name).await?;
    }
    conclude(
        conn,
        backend,
        principal,
        "plugin.reject",
        id,
        reason,
        serde_json::json!({"previous_status": version.status}),
        None,
        now_ms,
    )
    .await
}

fn require_reason(reason: &str) -> DomainResult<()> {
    if reason.trim().is_empty() {
        return Err(DomainError::validation("a reason is required"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// What serves

/// Makes `version` the active version of its plugin, retiring the current one (kept as the
/// version rollback restores), and ends any canary of the plugin.
async fn make_active(
    conn: &mut AnyConnection,
    version: &InstalledVersion,
    now_ms: i64,
) -> DomainResult<Option<String>> {
    let previous: Option<(String,)> = sqlx::query_as(
        "UPDATE plugin_versions SET status = 'retired', updated_at = $1
         WHERE name = $2 AND status = 'active' AND id <> $3 RETURNING id",
    )
    .bind(now_ms)
    .bind(&version.name)
    .bind(&version.id)
    .fetch_optional(&mut *conn)
    .await?;
    let previous = previous.map(|(id,)| id);
    let updated = sqlx::query(
        "UPDATE plugin_versions SET status = 'active', previous_version_id = $1, deployed_at = $2,
            updated_at = $2 WHERE id = $3 AND status IN ('approved', 'retired')",
    )
    .bind(&previous)
    .bind(now_ms)
    .bind(&version.id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(invalid_transition(
            &version.status,
            "only approved (or retired) versions can be deployed",
        ));
    }
    sqlx::query("DELETE FROM plugin_canaries WHERE name = $1")
        .bind(&version.name)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM plugin_shadows WHERE version_id = $1")
        .bind(&version.id)
        .execute(&mut *conn)
        .await?;
    Ok(previous)
}

/// Deploys an approved version (admins).
pub async fn deploy(
    conn: &mut AnyConnection,
    backend: Backend,
    principal: &Principal,
    id: &str,
    reason: &str,
    now_ms: i64,
) -> DomainResult<InstalledVersion> {
    principal.require_admin()?;
    let version = lock_version(conn, backend, id).await?;
    if !matches!(version.status.as_str(), "approved" | "retired") {
        return Err(invalid_transition(
            &version.status,
            "only approved (or retired) versions can be deployed",
        ));
    }
    let previous = make_active(conn, &version, now_ms).await?;
    conclude(
        conn,
        backend,
        principal,
        "plugin.deploy",
        id,
        reason,
        serde_json::json!({"name": version.name, "version": version.version,
            "previous_version_id": previous}),
        Some(&version.name),
        now_ms,
    )
    .await
}

/// Starts (or changes) the canary of an approved version, serving `basis_points`/10000 of
/// members; 0 ends the canary (admins).
pub async fn canary(
    conn: &mut AnyConnection,
    backend: Backend,
    principal: &Principal,
    id: &str,
    basis_points: i64,
    reason: &str,
    now_ms: i64,
) -> DomainResult<InstalledVersion> {
    principal.require_admin()?;
    if !(0..10_000).contains(&basis_points) {
        return Err(DomainError::validation(
            "basis_points must be 0 (end the canary) to 9999; deploy to serve everyone",
        ));
    }
    let version = lock_version(conn, backend, id).await?;
    if basis_points == 0 {
        let ended = sqlx::query("DELETE FROM plugin_canaries WHERE version_id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        if ended == 0 {
            return Err(DomainError::conflict(
                "no_canary",
                "this version is not a canary",
            ));
        }
    } else {
        if version.status != "approved" {
            return Err(invalid_transition(
                &version.status,
                "only approved versions can be canaries",
            ));
        }
        let (active,): (i64,) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM plugin_versions
             WHERE name = $1 AND status = 'active'",
        )
        .bind(&version.name)
        .fetch_one(&mut *conn)
        .await?;
        if active == 0 {
            return Err(DomainError::conflict(
                "no_active_version",
                "a canary runs beside an active version; deploy the first version directly",
            ));
        }
        sqlx::query("DELETE FROM plugin_canaries WHERE name = $1")
            .bind(&version.name)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO plugin_canaries (name, version_id, basis_points, created_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&version.name)
        .bind(id)
        .bind(basis_points)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    }
    conclude(
        conn,
        backend,
        principal,
        "plugin.canary",
        id,
        reason,
        serde_json::json!({"name": version.name, "basis_points": basis_points}),
        Some(&version.name),
        now_ms,
    )
    .await
}

async fn lock_name(conn: &mut AnyConnection, backend: Backend, name: &str) -> DomainResult<()> {
    let rows: Vec<(String,)> = sqlx::query_as(&format!(
        "SELECT id FROM plugin_versions WHERE name = $1{}",
        crate::foundation::store::for_update(backend)
    ))
    .bind(name)
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        return Err(DomainError::not_found("plugin", name));
    }
    Ok(())
}

/// Makes the canary of `name` its active version (admins).
pub async fn promote(
    conn: &mut AnyConnection,
    backend: Backend,
    principal: &Principal,
    name: &str,
    reason: &str,
    now_ms: i64,
) -> DomainResult<InstalledVersion> {
    principal.require_admin()?;
    lock_name(conn, backend, name).await?;
    let canary: Option<(String, i64)> =
        sqlx::query_as("SELECT version_id, basis_points FROM plugin_canaries WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((id, basis_points)) = canary else {
        return Err(DomainError::conflict(
            "no_canary",
            format!("{name} has no canary"),
        ));
    };
    let version = reloaded(conn, &id).await?;
    let previous = make_active(conn, &version, now_ms).await?;
    conclude(
        conn,
        backend,
        principal,
        "plugin.promote",
        &id,
        reason,
        serde_json::json!({"name": name, "version": version.version,
            "basis_points": basis_points, "previous_version_id": previous}),
        Some(name),
        now_ms,
    )
    .await
}

/// Restores the version the active one replaced; the current one is retired and any canary
/// ends (admins). Returns the restored version.
pub async fn rollback(
    conn: &mut AnyConnection,
    backend: Backend,
    principal: &Principal,
    name: &str,
    reason: &str,
    now_ms: i64,
) -> DomainResult<InstalledVersion> {
    principal.require_admin()?;
    require_reason(reason)?;
    lock_name(conn, backend, name).await?;
    let current: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT id, previous_version_id FROM plugin_versions WHERE name = $1 AND status = 'active'",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((current, Some(previous))) = current else {
        return Err(DomainError::conflict(
            "nothing_to_roll_back",
            format!("{name} has no earlier deployed version to return to"),
        ));
    };
    sqlx::query(
        "UPDATE plugin_versions SET status = 'retired', updated_at = $1
         WHERE id = $2 AND status = 'active'",
    )
    .bind(now_ms)
    .bind(&current)
    .execute(&mut *conn)
    .await?;
    let restored = sqlx::query(
        "UPDATE plugin_versions SET status = 'active', deployed_at = $1, updated_at = $1
         WHERE id = $2 AND status = 'retired'",
    )
    .bind(now_ms)
    .bind(&previous)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if restored == 0 {
        return Err(DomainError::conflict(
            "nothing_to_roll_back",
            "the previous version is no longer retired",
        ));
    }
    sqlx::query("DELETE FROM plugin_canaries WHERE name = $1")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    conclude(
        conn,
        backend,
        principal,
        "plugin.rollback",
        &previous,
        reason,
        serde_json::json!({"name": name, "retired_version_id": current}),
        Some(name),
        now_ms,
    )
    .await
}

/// The kill switch: `kill` stops every version of `name` serving anyone; `resume` undoes it
/// (admins).
pub async fn kill(
    conn: &mut AnyConnection,
    backend: Backend,
    principal: &Principal,
    name: &str,
    kill: bool,
    reason: &str,
    now_ms: i64,
) -> DomainResult<()> {
    principal.require_admin()?;
    require_reason(reason)?;
    lock_name(conn, backend, name).await?;
    let actor = actor(principal);
    if kill {
        let inserted = sqlx::query(
            "INSERT INTO plugin_kills (name, killed_by, reason, killed_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(&actor)
        .bind(reason)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(DomainError::conflict(
                "plugin_killed",
                format!("{name} is already killed"),
            ));
        }
    } else {
        let deleted = sqlx::query("DELETE FROM plugin_kills WHERE name = $1")
            .bind(name)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(DomainError::conflict(
                "plugin_not_killed",
                format!("{name} is not killed"),
            ));
        }
    }
    audit(
        conn,
        backend,
        &actor,
        if kill { "plugin.kill" } else { "plugin.resume" },
        "plugin",
        name,
        reason,
        serde_json::json!({}),
        now_ms,
    )
    .await?;
    super::sync::changed(conn, backend, name).await
}

/// Runs a validated or approved version as the shadow of its plugin, or ends the shadow
/// (admins).
pub async fn shadow(
    conn: &mut AnyConnection,
    backend: Backend,
    principal: &Principal,
    id: &str,
    on: bool,
    reason: &str,
    now_ms: i64,
) -> DomainResult<InstalledVersion> {
    principal.require_admin()?;
    let version = lock_version(conn, backend, id).await?;
    if on {
        if !matches!(version.status.as_str(), "validated" | "approved") {
            return Err(invalid_transition(
                &version.status,
                "only validated or approved versions can shadow",
            ));
        }
        sqlx::query("DELETE FROM plugin_shadows WHERE name = $1")
            .bind(&version.name)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO plugin_shadows (name, version_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(&version.name)
        .bind(id)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    } else {
        sqlx::query("DELETE FROM plugin_shadows WHERE version_id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    audit(
        conn,
        backend,
        &actor(principal),
        if on {
            "plugin.shadow"
        } else {
            "plugin.unshadow"
        },
        "plugin_version",
        id,
        reason,
        serde_json::json!({"name": version.name}),
        now_ms,
    )
    .await?;
    super::sync::changed(conn, backend, &version.name).await?;
    reloaded(conn, id).await
}

// ---------------------------------------------------------------------------------------------
// Views

/// A signature on a version.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct SignatureView {
    /// Signing brand.
    pub brand_id: String,
    /// Key used.
    pub key_id: String,
    /// `upload` or `cosign`.
    pub kind: String,
    /// When, Unix ms.
    pub created_at: i64,
}

/// A version with its review and serving state.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VersionStatus {
    /// The version.
    #[serde(flatten)]
    pub version: InstalledVersion,
    /// Signatures over its content hash.
    pub signatures: Vec<SignatureView>,
    /// Brands named by the manifest that have not signed yet.
    pub cosignatures_missing: Vec<String>,
    /// Share of members it serves as a canary, in basis points.
    pub canary_basis_points: Option<i64>,
    /// Whether it runs as the shadow of its plugin.
    pub shadow: bool,
    /// Whether the kill switch of its plugin is on.
    pub killed: bool,
    /// Whether this node has it loaded.
    pub loaded: bool,
}

// ---------------------------------------------------------------------------------------------
// The package a co-signer signs

/// One hook's budget as the manifest sets it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HookBudget {
    /// The hook, e.g. `points-bonus`.
    pub hook: String,
    /// Fuel per call (deterministic instructions).
    pub fuel: u64,
    /// Linear memory per call, MiB.
    pub memory_mib: u32,
    /// CPU deadline per call, ms.
    pub deadline_ms: u32,
}

/// The platform's maxima the budgets are held to.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlatformMaxima {
    /// Most fuel per call.
    pub fuel: u64,
    /// Most linear memory per call, MiB.
    pub memory_mib: u32,
    /// Longest CPU deadline per call, ms.
    pub deadline_ms: u32,
    /// Largest component, bytes.
    pub component_bytes: u64,
}

/// What a co-signing brand (or a reviewer) reads before it signs: the exact manifest and
/// component whose content hash it signs, what the component imports (the capabilities it may
/// use) and exports, and its budgets against the platform's maxima.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PackageView {
    /// The version.
    pub id: String,
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// The WIT version it targets, e.g. `coalition:plugin@0.1.0`.
    pub wit: String,
    /// Status of the version.
    pub status: String,
    /// The manifest, byte for byte as signed.
    pub manifest: String,
    /// The component, byte for byte as signed, in base64.
    pub component_base64: String,
    /// Size of the component, bytes.
    pub component_bytes: u64,
    /// sha256 of the component, hex.
    pub component_sha256: String,
    /// The content hash every signature covers (sha256 over the manifest and component), hex:
    /// `coalition plugin package` recomputes it from the downloaded files.
    pub content_sha256: Option<String>,
    /// Imported interfaces, once validated (`null` before).
    pub imports: Option<Vec<String>>,
    /// Exported interfaces, once validated (`null` before).
    pub exports: Option<Vec<String>>,
    /// The budget of every hook it implements.
    pub budgets: Vec<HookBudget>,
    /// What the budgets are held to.
    pub platform_maxima: PlatformMaxima,
}

/// The package of a version as `principal` may read it: admins, and brands the manifest names
/// (a co-signer among them); others get 404.
pub async fn package(store: &Store, principal: &Principal, id: &str) -> DomainResult<PackageView> {
    let version = registry::get(store.read(), id)
        .await?
        .filter(|v| visible_to(principal, v))
        .ok_or_else(|| DomainError::not_found("plugin version", id))?;
    let row: Option<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT v.manifest, c.bytes_b64, v.imports, v.exports
         FROM plugin_versions v JOIN plugin_components c ON c.sha256 = v.component_sha256
         WHERE v.id = $1",
    )
    .bind(id)
    .fetch_optional(store.read())
    .await?;
    let Some((manifest_text, component_base64, imports, exports)) = row else {
        return Err(DomainError::not_found("plugin version", id));
    };
    let manifest = Manifest::parse(&manifest_text).map_err(DomainError::internal)?;
    let names = |json: Option<String>| -> DomainResult<Option<Vec<String>>> {
        json.map(|j| serde_json::from_str(&j).map_err(DomainError::internal))
            .transpose()
    };
    let budgets = manifest
        .hooks
        .iter()
        .map(|hook| {
            let limits = manifest
                .hook_limits
                .get(hook)
                .copied()
                .unwrap_or(manifest.limits);
            HookBudget {
                hook: hook.as_str().to_owned(),
                fuel: limits.fuel,
                memory_mib: limits.memory_mib,
                deadline_ms: limits.deadline_ms,
            }
        })
        .collect();
    let component_bytes = base64::engine::general_purpose::STANDARD
        .decode(&component_base64)
        .map_err(DomainError::internal)?
        .len();
    use coalition_runtime::limits;
    Ok(PackageView {
        id: version.id,
        name: version.name,
        version: version.version,
        wit: version.wit,
        status: version.status,
        manifest: manifest_text,
        component_base64,
        component_bytes: u64::try_from(component_bytes).unwrap_or(u64::MAX),
        component_sha256: version.component_sha256,
        content_sha256: version.content_sha256,
        imports: names(imports)?,
        exports: names(exports)?,
        budgets,
        platform_maxima: PlatformMaxima {
            fuel: limits::MAX_FUEL_PER_CALL,
            memory_mib: limits::MAX_MEMORY_MIB,
            deadline_ms: limits::MAX_DEADLINE_MS,
            component_bytes: u64::try_from(limits::MAX_COMPONENT_BYTES).unwrap_or(u64::MAX),
        },
    })
}

/// A version as the brand that ships it (or an admin) reads its calls and failures: 404 when
/// `principal` may not see it at all, 403 when it may see it but does not ship it (a
/// co-signing brand).
pub async fn own_version(
    store: &Store,
    principal: &Principal,
    id: &str,
) -> DomainResult<InstalledVersion> {
    let version = registry::get(store.read(), id)
        .await?
        .filter(|v| visible_to(principal, v))
        .ok_or_else(|| DomainError::not_found("plugin version", id))?;
    if principal.role != Role::Admin && version.uploaded_by_brand != principal.brand_id {
        return Err(DomainError::forbidden(
            "only the brand that uploaded this version (or an admin) reads its calls",
        ));
    }
    Ok(version)
}

/// Whether `principal` may see `version`: admins see all, brands the versions naming them.
pub fn visible_to(principal: &Principal, version: &InstalledVersion) -> bool {
    match principal.role {
        Role::Admin => true,
        Role::Brand => principal
            .brand_id
            .as_ref()
            .is_some_and(|b| version.brands.contains(b)),
        _ => false,
    }
}

/// The status of one version as `principal` may see it (404 when not).
pub async fn status(
    store: &Store,
    host: &PluginHost,
    principal: &Principal,
    id: &str,
) -> DomainResult<VersionStatus> {
    let pool = store.read();
    let version = registry::get(pool, id)
        .await?
        .filter(|v| visible_to(principal, v))
        .ok_or_else(|| DomainError::not_found("plugin version", id))?;
    let signatures: Vec<SignatureView> = sqlx::query_as(
        "SELECT brand_id, key_id, kind, created_at FROM plugin_signatures
         WHERE version_id = $1 ORDER BY created_at, brand_id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let cosignatures_missing = if version.content_sha256.is_some() {
        version
            .brands
            .iter()
            .filter(|b| !signatures.iter().any(|s| &s.brand_id == *b))
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    let canary: Option<(i64,)> =
        sqlx::query_as("SELECT basis_points FROM plugin_canaries WHERE version_id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    let (shadows,): (i64,) =
        sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM plugin_shadows WHERE version_id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?;
    let (kills,): (i64,) =
        sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM plugin_kills WHERE name = $1")
            .bind(&version.name)
            .fetch_one(pool)
            .await?;
    let loaded = host.loaded().iter().any(|p| p.version_id == id);
    Ok(VersionStatus {
        version,
        signatures,
        cosignatures_missing,
        canary_basis_points: canary.map(|(bp,)| bp),
        shadow: shadows > 0,
        killed: kills > 0,
        loaded,
    })
}
