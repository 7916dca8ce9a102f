//! Client-supplied idempotency keys: every write takes an `Idempotency-Key` header.
//!
//! The key is claimed inside the same database transaction as the write it protects:
//! - a new key is inserted, the write happens, the response is stored, all in one commit;
//! - the same key with the same request returns the stored response (and `Idempotent-Replayed`);
//! - the same key with a different request is a 409 `idempotency_key_reused`;
//! - if the write fails, the transaction rolls back and the key is free again, so a retry after
//!   an error re-runs the request instead of replaying a failure.
//!
//! Under concurrency the primary key does the work: on PostgreSQL a second insert of the same key
//! waits for the first transaction and then sees its committed row; on SQLite writers are serial.
//! Keys are scoped per caller (`Principal::idempotency_scope`) so two brands cannot collide.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;

use crate::domain::access::Principal;
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::Tx;
use crate::interfaces::api::problem::ApiJson;
use crate::interfaces::api::AppState;

/// Header carrying the client's key.
pub const HEADER: &str = "idempotency-key";
/// Header set on a response replayed from a stored result.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Longest accepted key; UUIDs and order-id based keys fit easily.
pub const MAX_KEY_LEN: usize = 200;
/// The characters a key may use, as the OpenAPI document states them: printable ASCII without
/// spaces (`!` to `~`), which keeps keys safe to log and to compare byte for byte.
/// [`validate_key`] accepts exactly the strings of 1 to [`MAX_KEY_LEN`] such characters.
pub const HEADER_PATTERN: &str = "^[!-~]+$";

/// The validated `Idempotency-Key` header of a write request.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = DomainError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let value = parts.headers.get(HEADER).ok_or_else(|| {
            DomainError::bad_request(
                "idempotency_key_required",
                "writes need an Idempotency-Key header (any unique string per operation)",
            )
        })?;
        let key = value.to_str().map_err(|_| {
            DomainError::bad_request("invalid_idempotency_key", "key must be ASCII")
        })?;
        validate_key(key)?;
        Ok(IdempotencyKey(key.to_owned()))
    }
}

/// Checks a key's length and characters ([`HEADER_PATTERN`], 1 to [`MAX_KEY_LEN`] long).
pub fn validate_key(key: &str) -> Result<(), DomainError> {
    // `is_ascii_graphic` is exactly `!`..=`~`, the class of `HEADER_PATTERN`.
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(DomainError::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1..={MAX_KEY_LEN} printable ASCII characters"),
        ));
    }
    Ok(())
}

/// Hash of what a request asks for: the operation name plus its canonical JSON body.
pub fn request_hash(operation: &str, request: &impl Serialize) -> String {
    let mut hasher = Sha256::new();
    hasher.update(operation.as_bytes());
    hasher.update([0u8]);
    hasher.update(serde_json::to_vec(request).unwrap_or_default());
    hex::encode(hasher.finalize())
}

/// Outcome of claiming a key.
#[derive(Debug)]
pub enum Claim {
    /// The key is new: do the write, then [`complete`] it in the same transaction.
    Fresh,
    /// The key was used before for the same request: return this stored response.
    Replay {
        /// Stored HTTP status.
        status: u16,
        /// Stored JSON body.
        body: serde_json::Value,
    },
}

/// Claims `key` for `request_hash` within the caller's transaction.
pub async fn claim(
    conn: &mut AnyConnection,
    scope: &str,
    key: &str,
    request_hash: &str,
    now_ms: i64,
) -> Result<Claim, DomainError> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (scope, idem_key, request_hash, created_at)
         VALUES ($1, $2, $3, $4) ON CONFLICT (scope, idem_key) DO NOTHING",
    )
    .bind(scope)
    .bind(key)
    .bind(request_hash)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::Fresh);
    }
    let row: (String, Option<i64>, Option<String>) = sqlx::query_as(
        "SELECT request_hash, status_code, response_body FROM idempotency_keys
         WHERE scope = $1 AND idem_key = $2",
    )
    .bind(scope)
    .bind(key)
    .fetch_one(&mut *conn)
    .await?;
    let (stored_hash, status, body) = row;
    if stored_hash != request_hash {
        return Err(DomainError::conflict(
            "idempotency_key_reused",
            "this Idempotency-Key was already used for a different request",
        ));
    }
    match (status, body) {
        (Some(status), Some(body)) => Ok(Claim::Replay {
            status: u16::try_from(status).unwrap_or(200),
            body: serde_json::from_str(&body).map_err(DomainError::internal)?,
        }),
        // A claimed key without a response is only visible to its own (uncommitted)
        // transaction, so seeing one here means a write is still in flight elsewhere.
        _ => Err(DomainError::conflict(
            "idempotency_key_in_flight",
            "a request with this Idempotency-Key is still being processed; retry shortly",
        )),
    }
}

/// Stores the response for a claimed key, in the same transaction as the write.
pub async fn complete(
    conn: &mut AnyConnection,
    scope: &str,
    key: &str,
    status: StatusCode,
    body: &impl Serialize,
) -> Result<(), DomainError> {
    let body = serde_json::to_string(body).map_err(DomainError::internal)?;
    sqlx::query(
        "UPDATE idempotency_keys SET status_code = $1, response_body = $2
         WHERE scope = $3 AND idem_key = $4",
    )
    .bind(i64::from(status.as_u16()))
    .bind(body)
    .bind(scope)
    .bind(key)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The HTTP response for a replayed claim.
pub fn replay_response(status: u16, body: serde_json::Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}

// ---------------------------------------------------------------------------------------------
// The usual shape of an idempotent handler: claim, write, complete and commit.

/// The start of an idempotent write: either the stored response of an earlier identical
/// request, or a transaction in which the key is claimed.
pub enum Begun {
    /// Send this stored response.
    Replay(Response),
    /// Do the write in this transaction, then [`finish_write`].
    Fresh(Tx),
}

/// Opens the write transaction and claims the idempotency key for `operation` + `request`.
pub async fn begin_write(
    state: &AppState,
    principal: &Principal,
    key: &IdempotencyKey,
    operation: &str,
    request: &impl Serialize,
) -> DomainResult<Begun> {
    let hash = request_hash(operation, request);
    let mut tx = state.store.begin().await?;
    match claim(
        &mut tx,
        &principal.idempotency_scope(),
        &key.0,
        &hash,
        state.now_ms(),
    )
    .await?
    {
        Claim::Replay { status, body } => Ok(Begun::Replay(replay_response(status, body))),
        Claim::Fresh => Ok(Begun::Fresh(tx)),
    }
}

/// Records a report under the key, or replays the one already recorded there: the tail of the
/// job endpoints, whose jobs are idempotent by construction (the key keeps the caller's answer).
pub async fn record_report(
    state: &AppState,
    principal: &Principal,
    key: &IdempotencyKey,
    operation: &str,
    request: &impl Serialize,
    report: impl Serialize,
) -> DomainResult<Response> {
    match begin_write(state, principal, key, operation, request).await? {
        Begun::Replay(response) => Ok(response),
        Begun::Fresh(tx) => finish_write(tx, principal, key, StatusCode::OK, report).await,
    }
}

/// The stored response if this caller already answered `operation` + `request` under the key;
/// for a write whose authorization depends on state that may have changed since (a retry must
/// replay what the caller was answered, not be judged again).
pub async fn replay_if_answered(
    state: &AppState,
    principal: &Principal,
    key: &IdempotencyKey,
    operation: &str,
    request: &impl Serialize,
) -> DomainResult<Option<Response>> {
    let answered: Option<(Option<i64>,)> = sqlx::query_as(
        "SELECT status_code FROM idempotency_keys WHERE scope = $1 AND idem_key = $2",
    )
    .bind(principal.idempotency_scope())
    .bind(&key.0)
    .fetch_optional(state.store.read())
    .await?;
    if answered.is_none_or(|(status,)| status.is_none()) {
        return Ok(None);
    }
    match begin_write(state, principal, key, operation, request).await? {
        Begun::Replay(response) => Ok(Some(response)),
        // Not answered after all (its transaction rolled back): judge it as new.
        Begun::Fresh(_) => Ok(None),
    }
}

/// An idempotent write in one call, the shape of every write handler: the stored answer of an
/// earlier identical request, or `write` run in a transaction that claims the key, answered
/// with `status` and committed together with that answer. A retry can never write twice.
pub async fn idempotent_write<T: Serialize>(
    state: &AppState,
    principal: &Principal,
    key: &IdempotencyKey,
    operation: &str,
    request: &impl Serialize,
    status: StatusCode,
    write: impl AsyncFnOnce(&mut AnyConnection) -> DomainResult<T>,
) -> DomainResult<Response> {
    match begin_write(state, principal, key, operation, request).await? {
        Begun::Replay(response) => Ok(response),
        Begun::Fresh(mut tx) => {
            let body = write(&mut tx).await?;
            finish_write(tx, principal, key, status, body).await
        }
    }
}

/// Stores the response under the key and commits the write with it.
pub async fn finish_write<T: Serialize>(
    mut tx: Tx,
    principal: &Principal,
    key: &IdempotencyKey,
    status: StatusCode,
    body: T,
) -> DomainResult<Response> {
    complete(
        &mut tx,
        &principal.idempotency_scope(),
        &key.0,
        status,
        &body,
    )
    .await?;
    tx.commit().await?;
    Ok((status, ApiJson(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::{validate_key, HEADER_PATTERN, MAX_KEY_LEN};

    /// The documented pattern's one character class, `[!-~]`, as bytes.
    fn in_documented_class(b: u8) -> bool {
        let class = HEADER_PATTERN
            .strip_prefix("^[")
            .and_then(|p| p.strip_suffix("]+$"))
            .expect("the pattern is one character class repeated");
        let (low, high) = class.split_once('-').expect("a range");
        (low.as_bytes()[0]..=high.as_bytes()[0]).contains(&b)
    }

    #[test]
    fn validate_key_accepts_exactly_the_documented_keys() {
        for b in 0u8..=127 {
            let key = String::from(char::from(b));
            assert_eq!(
                validate_key(&key).is_ok(),
                in_documented_class(b),
                "byte {b:#04x}"
            );
        }
        assert!(validate_key("é").is_err());
        assert!(validate_key("").is_err());
        assert!(validate_key(&"k".repeat(MAX_KEY_LEN)).is_ok());
        assert!(validate_key(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
    }
}
