//! Risk controls: the blacklist, real-name verification and a dry redemption check (see
//! [`crate::domain::risk`] for the rules and codes).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::{Principal, Role};
use crate::domain::risk::{
    self, BlacklistEntry, MemberVerification, RedemptionAttempt, SubjectKind,
};
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::ids::check_path_id;
use crate::interfaces::api::idempotency::idempotent_write;
use crate::interfaces::api::idempotency::IdempotencyKey;
use crate::interfaces::api::problem::{ApiJson, ApiPath, ApiQuery, Problem};
use crate::interfaces::api::AppState;
use crate::ledger::audit::{self, NewEntry};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(blacklist_list, blacklist_add))
        .routes(routes!(blacklist_remove))
        .routes(routes!(verification_get, verification_create))
        .routes(routes!(risk_check))
}

/// Body of `POST /risk/blacklist`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlacklistRequest {
    /// `member` or `device`.
    pub kind: SubjectKind,
    /// The member id or device id.
    pub subject: String,
    /// Why (1..=500 bytes), kept with the entry and in the audit log.
    pub reason: String,
}

/// Query of `GET /risk/blacklist`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BlacklistQuery {
    /// Only this kind.
    pub kind: Option<SubjectKind>,
}

/// The blacklist.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Blacklist {
    /// Newest first, at most 500.
    pub entries: Vec<BlacklistEntry>,
}

/// Body of `POST /members/{member_id}/verification`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerificationRequest {
    /// The verifier's reference for the check (e.g. its id at the identity provider; never the
    /// ID number itself), 1..=500 bytes.
    pub reference: String,
}

/// Body of `POST /risk/check`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RiskCheckRequest {
    /// The member about to redeem.
    pub member_id: String,
    /// The device, if known.
    #[serde(default)]
    pub device_id: Option<String>,
    /// Face value of the redemption, cents.
    pub value_cents: i64,
}

/// The verdict of a dry redemption check.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RiskVerdict {
    /// Whether a redemption now would pass the risk rules.
    pub allowed: bool,
    /// The refusal a redemption would get (`member_blacklisted`, `device_blacklisted`,
    /// `redemption_rate_limited_member`, `redemption_rate_limited_device`,
    /// `real_name_required`), with `extra.retry_after_ms` for rate limits.
    pub problem: Option<Problem>,
}

fn actor(principal: &Principal) -> String {
    match &principal.brand_id {
        Some(brand) => format!("{}:{brand}:{}", principal.role.as_str(), principal.key_id),
        None => format!("{}:{}", principal.role.as_str(), principal.key_id),
    }
}

/// Whether the id of the key that reported a verification is hidden from `principal`: it is
/// the reporting brand's (or the platform's) business.
fn hides_verifier(principal: &Principal, verified_by_brand: Option<&str>) -> bool {
    match principal.role {
        Role::Admin => false,
        Role::Brand | Role::Counter => {
            verified_by_brand.is_none() || principal.brand_id.as_deref() != verified_by_brand
        }
        Role::Member => true,
    }
}

fn check_subject(kind: SubjectKind, subject: &str) -> DomainResult<()> {
    match kind {
        SubjectKind::Member => check_path_id("member", subject),
        SubjectKind::Device => risk::validate_device_id(subject),
    }
}

/// The blacklist (admin).
#[utoipa::path(get, path = "/risk/blacklist", tag = "risk",
    params(BlacklistQuery),
    responses(
        (status = 200, body = Blacklist),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn blacklist_list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<BlacklistQuery>,
) -> DomainResult<ApiJson<Blacklist>> {
    principal.require_admin()?;
    Ok(ApiJson(Blacklist {
        entries: risk::blacklist_list(state.store.read(), query.kind).await?,
    }))
}

/// Put a member or device on the blacklist (admin): a blacklisted member can neither earn nor
/// redeem, a blacklisted device cannot redeem. Adding an entry that exists keeps the first.
#[utoipa::path(post, path = "/risk/blacklist", tag = "risk",
    params(
        ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it"),
    ),
    request_body = BlacklistRequest,
    responses(
        (status = 201, body = BlacklistEntry),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "unknown member"),
    ))]
pub async fn blacklist_add(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiJson(req): ApiJson<BlacklistRequest>,
) -> DomainResult<Response> {
    principal.require_admin()?;
    check_subject(req.kind, &req.subject)?;
    risk::validate_text("reason", &req.reason)?;
    idempotent_write(
        &state,
        &principal,
        &key,
        "risk.blacklist.add",
        &req,
        StatusCode::CREATED,
        async |tx| {
            if req.kind == SubjectKind::Member {
                crate::domain::members::fetch_existing(&mut *tx, &req.subject).await?;
            }
            let now_ms = state.now_ms();
            let entry = risk::blacklist_add(
                &mut *tx,
                req.kind,
                &req.subject,
                req.reason.trim(),
                &principal.key_id,
                now_ms,
            )
            .await?;
            audit::append(
                &mut *tx,
                state.store.backend(),
                &NewEntry {
                    actor: &actor(&principal),
                    action: "risk.blacklist_add",
                    subject_kind: req.kind.as_str(),
                    subject_id: &req.subject,
                    reason: req.reason.trim(),
                    details: serde_json::json!({}),
                },
                now_ms,
            )
            .await?;
            Ok(entry)
        },
    )
    .await
}

/// Take a member or device off the blacklist (admin); removing an absent entry is a 404.
#[utoipa::path(delete, path = "/risk/blacklist/{kind}/{subject}", tag = "risk",
    params(
        ("kind" = SubjectKind, Path, description = "`member` or `device`"),
        ("subject" = String, Path, description = "Member id or device id"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it"),
    ),
    responses(
        (status = 200, body = BlacklistEntry, description = "The entry removed"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn blacklist_remove(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath((kind, subject)): ApiPath<(SubjectKind, String)>,
) -> DomainResult<Response> {
    principal.require_admin()?;
    check_subject(kind, &subject)?;
    let op = "risk.blacklist.remove";
    idempotent_write(
        &state,
        &principal,
        &key,
        op,
        &(kind, &subject),
        StatusCode::OK,
        async |tx| {
            let removed = risk::blacklist_list_entry(&mut *tx, kind, &subject).await?;
            let Some(removed) = removed else {
                return Err(DomainError::not_found("blacklist entry", &subject));
            };
            risk::blacklist_remove(&mut *tx, kind, &subject).await?;
            audit::append(
                &mut *tx,
                state.store.backend(),
                &NewEntry {
                    actor: &actor(&principal),
                    action: "risk.blacklist_remove",
                    subject_kind: kind.as_str(),
                    subject_id: &subject,
                    reason: "",
                    details: serde_json::json!({}),
                },
                state.now_ms(),
            )
            .await?;
            Ok(removed)
        },
    )
    .await
}

/// Record that a member passed real-name verification (an admin, or any brand's brand key,
/// with the verifier's reference). A member verified before keeps the first record.
#[utoipa::path(post, path = "/members/{member_id}/verification", tag = "risk",
    params(
        ("member_id" = String, Path, description = "Member id"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it"),
    ),
    request_body = VerificationRequest,
    responses(
        (status = 201, body = MemberVerification),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn verification_create(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<VerificationRequest>,
) -> DomainResult<Response> {
    check_path_id("member", &id)?;
    if !matches!(principal.role, Role::Admin | Role::Brand) {
        return Err(DomainError::forbidden(
            "real-name verification is recorded by an admin or a brand key",
        ));
    }
    risk::validate_text("reference", &req.reference)?;
    let op = format!("members.verification:{id}");
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &req,
        StatusCode::CREATED,
        async |tx| {
            crate::domain::members::fetch_existing(&mut *tx, &id).await?;
            let now_ms = state.now_ms();
            let mut verification = risk::verify_member(
                &mut *tx,
                &id,
                req.reference.trim(),
                &principal.key_id,
                principal.brand_id.as_deref(),
                now_ms,
            )
            .await?;
            audit::append(
                &mut *tx,
                state.store.backend(),
                &NewEntry {
                    actor: &actor(&principal),
                    action: "member.verify_real_name",
                    subject_kind: "member",
                    subject_id: &id,
                    reason: "",
                    details: serde_json::json!({ "reference": req.reference.trim() }),
                },
                now_ms,
            )
            .await?;
            if hides_verifier(&principal, verification.verified_by_brand.as_deref()) {
                verification.verified_by.clear();
            }
            Ok(verification)
        },
    )
    .await
}

/// A member's real-name verification (admins, brand and counter keys, or the member's own key);
/// 404 when the member is not verified. `verified_by`, the reporting key's id, is empty unless
/// the caller is an admin or a key of the reporting brand.
#[utoipa::path(get, path = "/members/{member_id}/verification", tag = "risk",
    params(("member_id" = String, Path, description = "Member id")),
    responses(
        (status = 200, body = MemberVerification),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn verification_get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> DomainResult<ApiJson<MemberVerification>> {
    check_path_id("member", &id)?;
    principal.require_member_read(&id)?;
    let mut conn = state.store.read().acquire().await?;
    let mut verification = risk::verification_of(&mut conn, &id)
        .await?
        .ok_or_else(|| DomainError::not_found("verification of member", &id))?;
    if hides_verifier(&principal, verification.verified_by_brand.as_deref()) {
        verification.verified_by.clear();
    }
    Ok(ApiJson(verification))
}

/// Would a redemption pass the risk rules now? Runs the same check a redemption runs, changes
/// nothing (admins, brand and counter keys).
#[utoipa::path(post, path = "/risk/check", tag = "risk",
    request_body = RiskCheckRequest,
    responses(
        (status = 200, body = RiskVerdict),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn risk_check(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<RiskCheckRequest>,
) -> DomainResult<ApiJson<RiskVerdict>> {
    if principal.role == Role::Member {
        return Err(DomainError::forbidden(
            "the risk check is for admins, brands and counters",
        ));
    }
    check_path_id("member", &req.member_id)?;
    if req.value_cents < 0 {
        return Err(DomainError::validation("value_cents must be >= 0"));
    }
    // The check locks the member's risk row like a real redemption would; the transaction is
    // rolled back, so nothing is written.
    let mut tx = state.store.begin().await?;
    crate::domain::members::fetch_existing(&mut tx, &req.member_id).await?;
    let outcome = risk::check_redemption(
        &mut tx,
        &state.settings.risk,
        &RedemptionAttempt {
            member_id: &req.member_id,
            device_id: req.device_id.as_deref(),
            value_cents: req.value_cents,
            what: "dry-run",
            redemption_id: "dry-run",
        },
        state.now_ms(),
    )
    .await;
    tx.rollback().await?;
    match outcome {
        Ok(()) => Ok(ApiJson(RiskVerdict {
            allowed: true,
            problem: None,
        })),
        Err(err) if err.is_callers() && err.code != "validation_failed" => {
            Ok(ApiJson(RiskVerdict {
                allowed: false,
                problem: Some(crate::interfaces::api::problem::problem(&err)),
            }))
        }
        Err(err) => Err(err),
    }
}
