//! Authenticating a request: the `Authorization: Bearer <key>` header becomes the
//! [`Principal`] acting (see [`crate::domain::access`] for roles and keys), through a small
//! cache so most requests do not touch the database.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sqlx::AnyPool;

use crate::domain::access::{hash_key, Principal, Role, KEY_PREFIX};
use crate::foundation::error::DomainError;
use crate::interfaces::api::AppState;

/// Cache of key-hash → principal; `None` entries remember unknown keys briefly.
pub type AuthCache = moka::future::Cache<String, Option<Principal>>;

/// Builds the auth cache with a bounded size and a short TTL (the revocation delay).
pub fn auth_cache(entries: u64, ttl_ms: u64) -> AuthCache {
    moka::future::Cache::builder()
        .max_capacity(entries)
        .time_to_live(Duration::from_millis(ttl_ms))
        .build()
}

async fn lookup(pool: &AnyPool, key_hash: &str) -> Result<Option<Principal>, sqlx::Error> {
    let row: Option<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        // A suspended brand's keys stop working with the brand (within the cache TTL).
        "SELECT k.id, k.role, k.brand_id, k.member_id FROM api_keys k
         LEFT JOIN brands b ON b.id = k.brand_id
         WHERE k.key_hash = $1 AND k.revoked_at IS NULL
           AND (k.brand_id IS NULL OR b.status = 'active')",
    )
    .bind(key_hash)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(key_id, role, brand_id, member_id)| {
        Role::parse(&role).map(|role| Principal {
            key_id,
            role,
            brand_id,
            member_id,
        })
    }))
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = DomainError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            DomainError::unauthorized(
                "unauthenticated",
                "send an API key as `Authorization: Bearer <key>`",
            )
        })?;
        let key = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                DomainError::unauthorized("invalid_api_key", "the API key is malformed")
            })?;
        principal_for_key(state, key).await
    }
}

/// The principal behind an API key secret, through the same cache and checks as every API
/// request (the console signs in with it).
pub async fn principal_for_key(state: &AppState, key: &str) -> Result<Principal, DomainError> {
    if !(key.starts_with(KEY_PREFIX) && key.len() < 200) {
        return Err(DomainError::unauthorized(
            "invalid_api_key",
            "the API key is malformed",
        ));
    }
    let key_hash = hash_key(key);
    let pool = state.store.read().clone();
    let principal = state
        .auth_cache
        .try_get_with(
            key_hash.clone(),
            async move { lookup(&pool, &key_hash).await },
        )
        .await
        .map_err(|err| match err.as_ref() {
            // A busy database is a reason to retry, not a fault.
            sqlx::Error::PoolTimedOut => DomainError::unavailable(
                "busy",
                "the database is busy; retry with the same idempotency key",
            ),
            _ => DomainError::internal(anyhow::anyhow!("auth lookup failed: {err}")),
        })?;
    principal.ok_or_else(|| {
        DomainError::unauthorized("invalid_api_key", "the API key is unknown or revoked")
    })
}
