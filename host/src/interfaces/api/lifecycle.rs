//! The plugin lifecycle over HTTP: brand signing keys, signed uploads, co-signatures, review,
//! deploy, canary, promote, rollback, kill switch, dry runs, shadows and the audit log.
//! See [`crate::plugins::lifecycle`] for the states and rules.

use axum::extract::{DefaultBodyLimit, State};
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::{Principal, Role};
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::ids::check_path_id;
use crate::interfaces::api::idempotency::idempotent_write;
use crate::interfaces::api::idempotency::{begin_write, finish_write, Begun, IdempotencyKey};
use crate::interfaces::api::problem::{ApiJson, ApiPath, ApiQuery, Problem};
use crate::interfaces::api::AppState;
use crate::ledger::audit::{AuditEntry, AuditVerification};
use crate::plugins::dryrun::{self, DryRunReport, ShadowResult};
use crate::plugins::lifecycle::{self, Package, PackageView, SigningKey, VersionStatus};
use crate::plugins::registry::InstalledVersion;
use crate::plugins::sync;

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    let upload = OpenApiRouter::new()
        .routes(routes!(plugins_upload))
        .layer(DefaultBodyLimit::max(lifecycle::MAX_UPLOAD_BODY_BYTES));
    OpenApiRouter::new()
        .merge(upload)
        .routes(routes!(signing_keys_register, signing_keys_list))
        .routes(routes!(signing_keys_approve))
        .routes(routes!(signing_keys_revoke))
        .routes(routes!(plugins_status))
        .routes(routes!(plugins_validate))
        .routes(routes!(plugins_package))
        .routes(routes!(plugins_cosign))
        .routes(routes!(plugins_approve))
        .routes(routes!(plugins_reject))
        .routes(routes!(plugins_deploy))
        .routes(routes!(plugins_canary))
        .routes(routes!(plugins_shadow))
        .routes(routes!(plugins_shadow_results))
        .routes(routes!(plugins_dry_run))
        .routes(routes!(plugin_names_promote))
        .routes(routes!(plugin_names_rollback))
        .routes(routes!(plugin_names_kill))
        .routes(routes!(plugin_names_resume))
        .routes(routes!(audit_list))
        .routes(routes!(audit_verify))
}

/// Longest reason accepted on a review action (the audit log's limit).
const MAX_REASON_LEN: usize = crate::ledger::audit::MAX_REASON_LEN;

fn check_reason(reason: &str) -> DomainResult<()> {
    if reason.len() > MAX_REASON_LEN {
        return Err(DomainError::validation(format!(
            "reason is longer than {MAX_REASON_LEN} bytes"
        )));
    }
    Ok(())
}

fn check_name(name: &str) -> DomainResult<()> {
    if coalition_runtime::manifest::is_kebab_id(name) {
        Ok(())
    } else {
        Err(DomainError::bad_request(
            "invalid_path",
            format!("{name:?} is not a plugin name"),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Signing keys

/// A public key to register.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterKeyRequest {
    /// ed25519 public key, 64 hex characters (`coalition plugin keygen` writes one).
    pub public_key: String,
    /// Free text, e.g. who holds the secret key.
    #[serde(default)]
    pub label: String,
}

/// Registers a signing key for a brand (`pending` until an admin approves it).
#[utoipa::path(post, path = "/brands/{brand_id}/signing-keys", tag = "plugin lifecycle",
    params(("brand_id" = String, Path), ("Idempotency-Key" = String, Header)),
    request_body = RegisterKeyRequest,
    responses(
        (status = 201, body = SigningKey),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "unknown brand"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`signing_key_exists`"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`too_many_signing_keys`"),
    ))]
pub async fn signing_keys_register(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(brand_id): ApiPath<String>,
    ApiJson(req): ApiJson<RegisterKeyRequest>,
) -> DomainResult<Response> {
    check_path_id("brand", &brand_id)?;
    principal.require_brand(&brand_id)?;
    idempotent_write(
        &state,
        &principal,
        &key,
        "signing_keys.register",
        &(&brand_id, &req),
        StatusCode::CREATED,
        async |tx| {
            let view = lifecycle::register_key(
                &mut *tx,
                state.store.backend(),
                &brand_id,
                &req.public_key,
                &req.label,
                &lifecycle::actor(&principal),
                state.now_ms(),
            )
            .await?;
            Ok(view)
        },
    )
    .await
}

/// A brand's signing keys (admins, or the brand).
#[utoipa::path(get, path = "/brands/{brand_id}/signing-keys", tag = "plugin lifecycle",
    params(("brand_id" = String, Path)),
    responses(
        (status = 200, body = Vec<SigningKey>),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn signing_keys_list(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(brand_id): ApiPath<String>,
) -> DomainResult<ApiJson<Vec<SigningKey>>> {
    check_path_id("brand", &brand_id)?;
    principal.require_brand(&brand_id)?;
    Ok(ApiJson(
        lifecycle::list_keys(state.store.read(), &brand_id).await?,
    ))
}

/// Why an action is taken (recorded in the audit log).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    /// Why; required for reject, rollback, kill and resume.
    #[serde(default)]
    pub reason: String,
}

async fn decide_key(
    state: AppState,
    principal: Principal,
    key: IdempotencyKey,
    key_id: String,
    req: ReasonRequest,
    approve: bool,
) -> DomainResult<Response> {
    check_path_id("signing key", &key_id)?;
    check_reason(&req.reason)?;
    let op = if approve {
        "signing_keys.approve"
    } else {
        "signing_keys.revoke"
    };
    idempotent_write(
        &state,
        &principal,
        &key,
        op,
        &(&key_id, &req),
        StatusCode::OK,
        async |tx| {
            let view = lifecycle::decide_key(
                &mut *tx,
                state.store.backend(),
                &principal,
                &key_id,
                approve,
                &req.reason,
                state.now_ms(),
            )
            .await?;
            Ok(view)
        },
    )
    .await
}

/// Approves a pending signing key (admins).
#[utoipa::path(post, path = "/signing-keys/{key_id}/approve", tag = "plugin lifecycle",
    params(("key_id" = String, Path), ("Idempotency-Key" = String, Header)),
    request_body = ReasonRequest,
    responses(
        (status = 200, body = SigningKey),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`invalid_transition`"),
    ))]
pub async fn signing_keys_approve(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(key_id): ApiPath<String>,
    ApiJson(req): ApiJson<ReasonRequest>,
) -> DomainResult<Response> {
    decide_key(state, principal, key, key_id, req, true).await
}

/// Revokes a signing key (admins, or its brand); signatures it made stay on record.
#[utoipa::path(post, path = "/signing-keys/{key_id}/revoke", tag = "plugin lifecycle",
    params(("key_id" = String, Path), ("Idempotency-Key" = String, Header)),
    request_body = ReasonRequest,
    responses(
        (status = 200, body = SigningKey),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`invalid_transition`"),
    ))]
pub async fn signing_keys_revoke(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(key_id): ApiPath<String>,
    ApiJson(req): ApiJson<ReasonRequest>,
) -> DomainResult<Response> {
    decide_key(state, principal, key, key_id, req, false).await
}

// ---------------------------------------------------------------------------------------------
// Upload and review

/// A signed package.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadRequest {
    /// The manifest (`plugin.toml`) exactly as signed.
    pub manifest: String,
    /// The component, standard base64.
    pub component_base64: String,
    /// Id of the brand's approved signing key.
    pub key_id: String,
    /// ed25519 signature over the package's content hash, 128 hex characters
    /// (`coalition plugin sign`).
    pub signature: String,
}

/// What an upload is identified by for idempotency (the bulky component by its hash).
#[derive(Serialize)]
struct UploadFingerprint<'a> {
    manifest: &'a str,
    component_sha256: String,
    key_id: &'a str,
    signature: &'a str,
}

/// Uploads a signed package (a brand key whose brand the manifest names). The signature is
/// verified and the content hash recorded (`uploaded`); the component is then validated in the
/// background. If the validation finishes within `[plugins] upload_wait_ms` (or the wait a
/// `Prefer: wait=<seconds>` header asks for, within the request timeout) the answer is `201`
/// with the outcome: `validated`, `awaiting_cosign` or `rejected` with the reason. Otherwise it
/// is `202 Accepted` with the version still `uploaded` and a `Location` to follow; the version
/// moves on its own. A rejection that was not the package's fault (`compile_timeout`,
/// `validation_interrupted`) can be validated again (`POST /plugins/{id}/validate`) without a
/// new version number. A replay returns the first answer of the upload itself (`202`, the
/// version as stored); `GET /plugins/{id}` shows the current state. Body limit: 44 MiB (a 32 MiB
/// component in base64).
#[utoipa::path(post, path = "/plugins", tag = "plugin lifecycle",
    params(
        ("Idempotency-Key" = String, Header),
        ("Prefer" = Option<String>, Header,
            description = "`wait=<seconds>`: how long to wait for the validation before \
                answering `202` (RFC 7240); `wait=0` answers at once"),
    ),
    request_body = UploadRequest,
    responses(
        (status = 201, body = InstalledVersion, description = "validated within the wait"),
        (status = 202, body = InstalledVersion,
            description = "stored; the validation goes on in the background",
            headers(("Location" = String, description = "`/plugins/{id}`"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json",
            description = "not a brand key, or the brand is not in the manifest"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "unknown signing key"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`plugin_version_exists`"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`signature_invalid`, `signing_key_not_approved`, `manifest_invalid`"),
    ))]
pub async fn plugins_upload(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    headers: axum::http::HeaderMap,
    ApiJson(req): ApiJson<UploadRequest>,
) -> DomainResult<Response> {
    check_path_id("signing key", &req.key_id)?;
    let fingerprint = UploadFingerprint {
        manifest: &req.manifest,
        component_sha256: hex::encode(sha2::Sha256::digest(req.component_base64.as_bytes())),
        key_id: &req.key_id,
        signature: &req.signature,
    };
    let mut tx = match begin_write(&state, &principal, &key, "plugins.upload", &fingerprint).await?
    {
        Begun::Replay(response) => return Ok(response),
        Begun::Fresh(tx) => tx,
    };
    let package = Package {
        manifest: &req.manifest,
        component_base64: &req.component_base64,
        key_id: &req.key_id,
        signature: &req.signature,
    };
    let uploaded = lifecycle::upload(
        &mut tx,
        state.store.backend(),
        &principal,
        &package,
        state.now_ms(),
    )
    .await?;
    let id = uploaded.id.clone();
    let accepted = finish_write(tx, &principal, &key, StatusCode::ACCEPTED, uploaded).await?;
    let mut validation = lifecycle::spawn_validation(
        state.store.clone(),
        state.plugins.clone(),
        state.clock.clone(),
        id.clone(),
    );
    let wait = upload_wait(&state, &headers);
    match tokio::time::timeout(wait, &mut validation).await {
        Ok(Ok(Ok(validated))) => Ok((StatusCode::CREATED, ApiJson(validated)).into_response()),
        // Still compiling (the task goes on), or the validation itself failed (logged by the
        // task; the version stays `uploaded` and is validated again on the next start).
        _ => {
            let mut response = accepted;
            if let Ok(location) = HeaderValue::from_str(&format!("/plugins/{id}")) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            Ok(response)
        }
    }
}

/// Longest wait a `Prefer: wait=N` header may ask for, below the request timeout so the answer
/// is a `202`, never a cut-off request.
fn upload_wait(state: &AppState, headers: &axum::http::HeaderMap) -> Duration {
    let ceiling = Duration::from_millis(state.config.limits.request_timeout_ms)
        .saturating_sub(Duration::from_millis(500));
    let asked = headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.trim().strip_prefix("wait="))
        .find_map(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    asked
        .unwrap_or(Duration::from_millis(state.plugins.config().upload_wait_ms))
        .min(ceiling)
}

/// One version with its signatures, missing co-signatures and serving state (admins, or a
/// brand the manifest names; others get 404).
#[utoipa::path(get, path = "/plugins/{version_id}", tag = "plugin lifecycle",
    params(("version_id" = String, Path)),
    responses(
        (status = 200, body = VersionStatus),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn plugins_status(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(version_id): ApiPath<String>,
) -> DomainResult<ApiJson<VersionStatus>> {
    check_path_id("plugin version", &version_id)?;
    Ok(ApiJson(
        lifecycle::status(&state.store, &state.plugins, &principal, &version_id).await?,
    ))
}

/// The exact package a version's signatures cover — manifest and component, byte for byte —
/// with what the component imports and exports and its budgets against the platform's maxima:
/// what a co-signing brand reads before it signs (admins, or a brand the manifest names; others
/// get 404). `coalition plugin package` saves it as files and checks the content hash.
#[utoipa::path(get, path = "/plugins/{version_id}/package", tag = "plugin lifecycle",
    params(("version_id" = String, Path)),
    responses(
        (status = 200, body = PackageView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn plugins_package(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(version_id): ApiPath<String>,
) -> DomainResult<ApiJson<PackageView>> {
    check_path_id("plugin version", &version_id)?;
    Ok(ApiJson(
        lifecycle::package(&state.store, &principal, &version_id).await?,
    ))
}

/// Validates a version now and answers with the outcome — admins, or the uploading brand: an
/// `uploaded` version (its background validation was interrupted), or one rejected for a reason
/// that was not the package's fault (`compile_timeout`, `validation_interrupted`), which keeps
/// its version number.
#[utoipa::path(post, path = "/plugins/{version_id}/validate", tag = "plugin lifecycle",
    params(("version_id" = String, Path)),
    responses(
        (status = 200, body = InstalledVersion),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`invalid_transition`"),
    ))]
pub async fn plugins_validate(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(version_id): ApiPath<String>,
) -> DomainResult<ApiJson<InstalledVersion>> {
    check_path_id("plugin version", &version_id)?;
    let status = lifecycle::status(&state.store, &state.plugins, &principal, &version_id).await?;
    if !principal.is_admin() && status.version.uploaded_by_brand != principal.brand_id {
        return Err(DomainError::forbidden(
            "only the uploading brand or an admin may validate",
        ));
    }
    Ok(ApiJson(
        lifecycle::validate(
            &state.store,
            &state.plugins,
            state.clock.as_ref(),
            &version_id,
        )
        .await?,
    ))
}

/// A co-signature over a version's content hash.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CosignRequest {
    /// Id of the co-signing brand's approved key.
    pub key_id: String,
    /// ed25519 signature over the same content hash, hex.
    pub signature: String,
}

/// Co-signs a version (a brand key of a brand the manifest names). A brand whose signature was
/// made with a key revoked since signs again here, and the new signature replaces it.
#[utoipa::path(post, path = "/plugins/{version_id}/cosign", tag = "plugin lifecycle",
    params(("version_id" = String, Path), ("Idempotency-Key" = String, Header)),
    request_body = CosignRequest,
    responses(
        (status = 200, body = InstalledVersion),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`already_signed`, `invalid_transition`"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`signature_invalid`, `signing_key_not_approved`"),
    ))]
pub async fn plugins_cosign(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(version_id): ApiPath<String>,
    ApiJson(req): ApiJson<CosignRequest>,
) -> DomainResult<Response> {
    check_path_id("plugin version", &version_id)?;
    check_path_id("signing key", &req.key_id)?;
    idempotent_write(
        &state,
        &principal,
        &key,
        "plugins.cosign",
        &(&version_id, &req),
        StatusCode::OK,
        async |tx| {
            let view = lifecycle::cosign(
                &mut *tx,
                state.store.backend(),
                &principal,
                &version_id,
                &req.key_id,
                &req.signature,
                state.now_ms(),
            )
            .await?;
            Ok(view)
        },
    )
    .await
}

/// Approval, with optional configuration.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// Admin configuration (keys from the manifest; strings, integers or booleans).
    #[serde(default)]
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Approves a validated, fully co-signed version (admins).
#[utoipa::path(post, path = "/plugins/{version_id}/approve", tag = "plugin lifecycle",
    params(("version_id" = String, Path), ("Idempotency-Key" = String, Header)),
    request_body = ApproveRequest,
    responses(
        (status = 200, body = InstalledVersion),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`cosignature_missing`, `signing_key_revoked`, `invalid_transition`"),
    ))]
pub async fn plugins_approve(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(version_id): ApiPath<String>,
    ApiJson(req): ApiJson<ApproveRequest>,
) -> DomainResult<Response> {
    check_path_id("plugin version", &version_id)?;
    check_reason(&req.reason)?;
    principal.require_admin()?;
    let mut tx = match begin_write(
        &state,
        &principal,
        &key,
        "plugins.approve",
        &(&version_id, &req),
    )
    .await?
    {
        Begun::Replay(response) => return Ok(response),
        Begun::Fresh(tx) => tx,
    };
    let view = lifecycle::approve(
        &mut tx,
        state.store.backend(),
        &principal,
        &version_id,
        &req.reason,
        req.config.clone(),
        state.now_ms(),
    )
    .await?;
    let response = finish_write(tx, &principal, &key, StatusCode::OK, view).await?;
    let (store, host) = (state.store.clone(), state.plugins.clone());
    tokio::spawn(async move { sync::warm(&store, &host).await });
    Ok(response)
}

/// Which version-level action a handler runs.
#[derive(Debug, Clone, Copy)]
enum VersionAction {
    Reject,
    Deploy,
    ShadowOn,
    ShadowOff,
}

async fn version_action(
    state: AppState,
    principal: Principal,
    key: IdempotencyKey,
    version_id: String,
    reason: String,
    action: VersionAction,
) -> DomainResult<Response> {
    check_path_id("plugin version", &version_id)?;
    check_reason(&reason)?;
    principal.require_admin()?;
    let op = format!("plugins.{action:?}");
    let mut tx = match begin_write(&state, &principal, &key, &op, &(&version_id, &reason)).await? {
        Begun::Replay(response) => return Ok(response),
        Begun::Fresh(tx) => tx,
    };
    let backend = state.store.backend();
    let now_ms = state.now_ms();
    let view = match action {
        VersionAction::Reject => {
            lifecycle::reject(&mut tx, backend, &principal, &version_id, &reason, now_ms).await?
        }
        VersionAction::Deploy => {
            lifecycle::deploy(&mut tx, backend, &principal, &version_id, &reason, now_ms).await?
        }
        VersionAction::ShadowOn | VersionAction::ShadowOff => {
            let on = matches!(action, VersionAction::ShadowOn);
            lifecycle::shadow(
                &mut tx,
                backend,
                &principal,
                &version_id,
                on,
                &reason,
                now_ms,
            )
            .await?
        }
    };
    let response = finish_write(tx, &principal, &key, StatusCode::OK, view).await?;
    sync::reload_now(&state.store, &state.plugins).await;
    Ok(response)
}

/// Rejects a version under review, with a reason (admins).
#[utoipa::path(post, path = "/plugins/{version_id}/reject", tag = "plugin lifecycle",
    params(("version_id" = String, Path), ("Idempotency-Key" = String, Header)),
    request_body = ReasonRequest,
    responses(
        (status = 200, body = InstalledVersion),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`invalid_transition`"),
    ))]
pub async fn plugins_reject(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(version_id): ApiPath<String>,
    ApiJson(req): ApiJson<ReasonRequest>,
) -> DomainResult<Response> {
    version_action(
        state,
        principal,
        key,
        version_id,
        req.reason,
        VersionAction::Reject,
    )
    .await
}

/// Deploys an approved (or retired) version: it becomes the active version of its plugin on
/// every node within a second; the previous one is retired and kept for rollback (admins).
#[utoipa::path(post, path = "/plugins/{version_id}/deploy", tag = "plugin lifecycle",
    params(("version_id" = String, Path), ("Idempotency-Key" = String, Header)),
    request_body = ReasonRequest,
    responses(
        (status = 200, body = InstalledVersion),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`invalid_transition`"),
    ))]
pub async fn plugins_deploy(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(version_id): ApiPath<String>,
    ApiJson(req): ApiJson<ReasonRequest>,
) -> DomainResult<Response> {
    version_action(
        state,
        principal,
        key,
        version_id,
        req.reason,
        VersionAction::Deploy,
    )
    .await
}

/// A canary share.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryRequest {
    /// Share of members served, in basis points (100 = 1%); 0 ends the canary.
    pub basis_points: i64,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// Serves an approved version to a stable share of members beside the active version
/// (admins).
#[utoipa::path(post, path = "/plugins/{version_id}/canary", tag = "plugin lifecycle",
    params(("version_id" = String, Path), ("Idempotency-Key" = String, Header)),
    request_body = CanaryRequest,
    responses(
        (status = 200, body = InstalledVersion),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`invalid_transition`, `no_active_version`, `no_canary`"),
    ))]
pub async fn plugins_canary(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(version_id): ApiPath<String>,
    ApiJson(req): ApiJson<CanaryRequest>,
) -> DomainResult<Response> {
    check_path_id("plugin version", &version_id)?;
    check_reason(&req.reason)?;
    principal.require_admin()?;
    let mut tx = match begin_write(
        &state,
        &principal,
        &key,
        "plugins.canary",
        &(&version_id, &req),
    )
    .await?
    {
        Begun::Replay(response) => return Ok(response),
        Begun::Fresh(tx) => tx,
    };
    let view = lifecycle::canary(
        &mut tx,
        state.store.backend(),
        &principal,
        &version_id,
        req.basis_points,
        &req.reason,
        state.now_ms(),
    )
    .await?;
    let response = finish_write(tx, &principal, &key, StatusCode::OK, view).await?;
    sync::reload_now(&state.store, &state.plugins).await;
    Ok(response)
}

/// Shadow on or off.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowRequest {
    /// True to run the version as shadow, false to stop.
    pub enabled: bool,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// Runs a validated or approved version beside the serving one on live calls of every hook it
/// implements (`points-bonus`, `list-perks`, `redeem-perk`, `apply-coupon`, `settle`), on the
/// very input the serving call recorded; its decisions are recorded and compared, never applied
/// (admins).
#[utoipa::path(post, path = "/plugins/{version_id}/shadow", tag = "plugin lifecycle",
    params(("version_id" = String, Path), ("Idempotency-Key" = String, Header)),
    request_body = ShadowRequest,
    responses(
        (status = 200, body = InstalledVersion),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`invalid_transition`"),
    ))]
pub async fn plugins_shadow(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(version_id): ApiPath<String>,
    ApiJson(req): ApiJson<ShadowRequest>,
) -> DomainResult<Response> {
    let action = if req.enabled {
        VersionAction::ShadowOn
    } else {
        VersionAction::ShadowOff
    };
    version_action(state, principal, key, version_id, req.reason, action).await
}

/// How many results or inputs.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitQuery {
    /// How many (bounded by the endpoint's maximum).
    pub limit: Option<i64>,
}

/// The newest shadow comparisons of a version (admins).
#[utoipa::path(get, path = "/plugins/{version_id}/shadow-results", tag = "plugin lifecycle",
    params(("version_id" = String, Path), LimitQuery),
    responses(
        (status = 200, body = Vec<ShadowResult>),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn plugins_shadow_results(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(version_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<LimitQuery>,
) -> DomainResult<ApiJson<Vec<ShadowResult>>> {
    principal.require_admin()?;
    check_path_id("plugin version", &version_id)?;
    Ok(ApiJson(
        dryrun::shadow_results(&state.store, &version_id, query.limit.unwrap_or(100)).await?,
    ))
}

/// What a dry run runs the candidate on: the last `limit` recorded inputs per hook, or the
/// brand's own `fixtures` (not both).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRunRequest {
    /// Recorded inputs per hook (default 50, at most 500).
    #[serde(default)]
    pub limit: Option<i64>,
    /// The brand's own fixtures instead of recorded inputs (1..=100), as `coalition plugin
    /// test` reads them; `coalition plugin dry-run --fixtures DIR` sends a folder of them.
    #[serde(default)]
    pub fixtures: Option<Vec<DryRunFixture>>,
}

/// One fixture of a dry run.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRunFixture {
    /// Its name (1..=64 bytes), shown as `fixture:<name>`.
    pub name: String,
    /// The call: `{"invocation": …, "config": …, "input": {"<hook>": …}}`, as receipts record
    /// it.
    #[schema(value_type = Object)]
    pub call: serde_json::Value,
    /// The decision it must give (as receipts show decisions); absent to only see the
    /// candidate's.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub expect: Option<serde_json::Value>,
}

/// The fixtures of a dry-run request, checked and parsed.
fn parse_fixtures(fixtures: Vec<DryRunFixture>) -> DomainResult<Vec<dryrun::Fixture>> {
    if fixtures.is_empty() || fixtures.len() > dryrun::MAX_DRY_RUN_FIXTURES {
        return Err(DomainError::validation(format!(
            "fixtures: 1..={} of them",
            dryrun::MAX_DRY_RUN_FIXTURES
        )));
    }
    fixtures
        .into_iter()
        .map(|fixture| {
            if fixture.name.is_empty() || fixture.name.len() > 64 {
                return Err(DomainError::validation(
                    "a fixture's name is 1..=64 bytes".to_owned(),
                ));
            }
            let call = serde_json::from_value(fixture.call).map_err(|err| {
                DomainError::validation(format!(
                    "fixture {}: the call does not parse: {err}",
                    fixture.name
                ))
            })?;
            Ok(dryrun::Fixture {
                name: fixture.name,
                call,
                expect: fixture.expect,
            })
        })
        .collect()
}

/// Runs a candidate version on the last N recorded inputs of its plugin's active version and
/// reports, per input, whether the decision differs, with fuel and latency side by side. A
/// first version (no active version) runs on the newest inputs other plugins of its hooks
/// recorded at its brands (`baseline: other_plugins`); with `fixtures`, any version runs on
/// the brand's own fixtures instead (`baseline: fixtures`). Nothing is stored or applied. Admins,
/// or the brand that uploaded the version (a brand's first-version dry run reads only inputs
/// recorded at its own counters); a co-signing brand gets 403, others 404.
#[utoipa::path(post, path = "/plugins/{version_id}/dry-run", tag = "plugin lifecycle",
    params(("version_id" = String, Path)),
    request_body = DryRunRequest,
    responses(
        (status = 200, body = DryRunReport),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "`validation_failed`: limit out of range, limit and fixtures together, \
            a fixture that does not parse or calls a hook the version does not implement"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`invalid_transition`, `no_recorded_inputs`"),
    ))]
pub async fn plugins_dry_run(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(version_id): ApiPath<String>,
    ApiJson(req): ApiJson<DryRunRequest>,
) -> DomainResult<ApiJson<DryRunReport>> {
    check_path_id("plugin version", &version_id)?;
    lifecycle::own_version(&state.store, &principal, &version_id).await?;
    let only_brand = match principal.role {
        Role::Admin => None,
        _ => principal.brand_id.as_deref(),
    };
    if let Some(fixtures) = req.fixtures {
        if req.limit.is_some() {
            return Err(DomainError::validation(
                "limit applies to recorded inputs; send limit or fixtures, not both".to_owned(),
            ));
        }
        let fixtures = parse_fixtures(fixtures)?;
        return Ok(ApiJson(
            dryrun::dry_run_fixtures(&state.store, &state.plugins, &version_id, fixtures).await?,
        ));
    }
    let limit = req.limit.unwrap_or(dryrun::DEFAULT_DRY_RUN_INPUTS);
    if !(1..=dryrun::MAX_DRY_RUN_INPUTS).contains(&limit) {
        return Err(DomainError::validation(format!(
            "limit must be 1..={}",
            dryrun::MAX_DRY_RUN_INPUTS
        )));
    }
    Ok(ApiJson(
        dryrun::dry_run(&state.store, &state.plugins, &version_id, only_brand, limit).await?,
    ))
}

// ---------------------------------------------------------------------------------------------
// Per plugin name

#[derive(Debug, Clone, Copy)]
enum NameAction {
    Promote,
    Rollback,
    Kill,
    Resume,
}

/// What a name-level action did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NameActionResult {
    /// The plugin.
    pub name: String,
    /// `promote`, `rollback`, `kill` or `resume`.
    pub action: String,
    /// The version now active (promote, rollback).
    pub active: Option<InstalledVersion>,
    /// Whether the kill switch is on now.
    pub killed: bool,
}

async fn name_action(
    state: AppState,
    principal: Principal,
    key: IdempotencyKey,
    name: String,
    reason: String,
    action: NameAction,
) -> DomainResult<Response> {
    check_name(&name)?;
    check_reason(&reason)?;
    principal.require_admin()?;
    let op = format!("plugin_names.{action:?}");
    let mut tx = match begin_write(&state, &principal, &key, &op, &(&name, &reason)).await? {
        Begun::Replay(response) => return Ok(response),
        Begun::Fresh(tx) => tx,
    };
    let backend = state.store.backend();
    let now_ms = state.now_ms();
    let (active, killed) = match action {
        NameAction::Promote => (
            Some(lifecycle::promote(&mut tx, backend, &principal, &name, &reason, now_ms).await?),
            None,
        ),
        NameAction::Rollback => (
            Some(lifecycle::rollback(&mut tx, backend, &principal, &name, &reason, now_ms).await?),
            None,
        ),
        NameAction::Kill | NameAction::Resume => {
            let kill = matches!(action, NameAction::Kill);
            lifecycle::kill(&mut tx, backend, &principal, &name, kill, &reason, now_ms).await?;
            (None, Some(kill))
        }
    };
    let (still_killed,): (i64,) =
        sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM plugin_kills WHERE name = $1")
            .bind(&name)
            .fetch_one(&mut *tx)
            .await?;
    let body = NameActionResult {
        name,
        action: format!("{action:?}").to_lowercase(),
        active,
        killed: killed.unwrap_or(still_killed > 0),
    };
    let response = finish_write(tx, &principal, &key, StatusCode::OK, body).await?;
    // This node serves the change before the response leaves; others follow via NOTIFY.
    sync::reload_now(&state.store, &state.plugins).await;
    Ok(response)
}

/// Makes the plugin's canary its active version (admins).
#[utoipa::path(post, path = "/plugin-names/{name}/promote", tag = "plugin lifecycle",
    params(("name" = String, Path), ("Idempotency-Key" = String, Header)),
    request_body = ReasonRequest,
    responses(
        (status = 200, body = NameActionResult),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "no version of this plugin is installed"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`no_canary`"),
    ))]
pub async fn plugin_names_promote(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<ReasonRequest>,
) -> DomainResult<Response> {
    name_action(state, principal, key, name, req.reason, NameAction::Promote).await
}

/// Restores the version the active one replaced, in one call; any canary ends (admins).
#[utoipa::path(post, path = "/plugin-names/{name}/rollback", tag = "plugin lifecycle",
    params(("name" = String, Path), ("Idempotency-Key" = String, Header)),
    request_body = ReasonRequest,
    responses(
        (status = 200, body = NameActionResult),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "no version of this plugin is installed"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`nothing_to_roll_back`"),
    ))]
pub async fn plugin_names_rollback(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<ReasonRequest>,
) -> DomainResult<Response> {
    name_action(
        state,
        principal,
        key,
        name,
        req.reason,
        NameAction::Rollback,
    )
    .await
}

/// The kill switch: the plugin stops serving on this node before the response returns and on
/// every node within a second (admins).
#[utoipa::path(post, path = "/plugin-names/{name}/kill", tag = "plugin lifecycle",
    params(("name" = String, Path), ("Idempotency-Key" = String, Header)),
    request_body = ReasonRequest,
    responses(
        (status = 200, body = NameActionResult),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "no version of this plugin is installed"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`plugin_killed`"),
    ))]
pub async fn plugin_names_kill(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<ReasonRequest>,
) -> DomainResult<Response> {
    name_action(state, principal, key, name, req.reason, NameAction::Kill).await
}

/// Turns the kill switch off again (admins).
#[utoipa::path(post, path = "/plugin-names/{name}/resume", tag = "plugin lifecycle",
    params(("name" = String, Path), ("Idempotency-Key" = String, Header)),
    request_body = ReasonRequest,
    responses(
        (status = 200, body = NameActionResult),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "no version of this plugin is installed"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`plugin_not_killed`"),
    ))]
pub async fn plugin_names_resume(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<ReasonRequest>,
) -> DomainResult<Response> {
    name_action(state, principal, key, name, req.reason, NameAction::Resume).await
}

// ---------------------------------------------------------------------------------------------
// Audit log

/// Which entries.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries after this sequence number (default 0).
    pub after: Option<i64>,
    /// At most this many (default 100, at most 500).
    pub limit: Option<i64>,
    /// Only entries about this subject kind (with `subject_id`).
    pub subject_kind: Option<String>,
    /// Only entries about this subject id (with `subject_kind`).
    pub subject_id: Option<String>,
}

/// The audit log, oldest first (admins).
#[utoipa::path(get, path = "/audit", tag = "plugin lifecycle", params(AuditQuery),
    responses(
        (status = 200, body = Vec<AuditEntry>),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn audit_list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> DomainResult<ApiJson<Vec<AuditEntry>>> {
    principal.require_admin()?;
    let subject = match (&query.subject_kind, &query.subject_id) {
        (Some(kind), Some(id)) => {
            check_path_id("subject", id)?;
            Some((kind.as_str(), id.as_str()))
        }
        (None, None) => None,
        _ => {
            return Err(DomainError::validation(
                "subject_kind and subject_id go together",
            ))
        }
    };
    Ok(ApiJson(
        crate::ledger::audit::page(
            state.store.read(),
            query.after.unwrap_or(0),
            query.limit.unwrap_or(100),
            subject,
        )
        .await?,
    ))
}

/// Walks the hash chain of the audit log and names the first entry that does not match
/// (admins).
#[utoipa::path(get, path = "/audit/verify", tag = "plugin lifecycle",
    responses(
        (status = 200, body = AuditVerification),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn audit_verify(
    State(state): State<AppState>,
    principal: Principal,
) -> DomainResult<ApiJson<AuditVerification>> {
    principal.require_admin()?;
    Ok(ApiJson(
        crate::ledger::audit::verify(state.store.read()).await?,
    ))
}
