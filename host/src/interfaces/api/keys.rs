//! API keys: admins create, list and revoke keys of any role; a brand key manages the counter
//! keys of its own brand. Secrets are shown once, at creation, and never again (a replayed
//! creation returns `secret: null`: the secret is not kept anywhere to replay it from).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::{CreatedKey, Principal, Role};
use crate::foundation::error::{DomainError, DomainResult};
use crate::interfaces::api::idempotency::{self, Claim, IdempotencyKey};
use crate::interfaces::api::problem::{ApiJson, ApiPath, ApiQuery, Problem};
use crate::interfaces::api::AppState;

/// Characters in a key label.
const MAX_LABEL_CHARS: usize = 100;
/// Page size when the caller names none.
const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page of keys.
const MAX_PAGE_SIZE: u32 = 200;

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(keys_list, keys_create))
        .routes(routes!(keys_revoke))
}

/// Body of `POST /keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// `admin`, `brand`, `counter` or `member`; a brand key may only create `counter` keys.
    pub role: Role,
    /// Brand scope, required for brand and counter keys (a brand key may omit it: its own).
    #[serde(default)]
    pub brand_id: Option<String>,
    /// Member scope, required for member keys.
    #[serde(default)]
    pub member_id: Option<String>,
    /// Free text to recognise the key by, e.g. `till 3, ground floor` (at most 100 characters).
    #[serde(default)]
    pub label: String,
}

/// A key as listed: never its secret, only its first characters.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    /// Key id.
    pub id: String,
    /// First characters of the secret, to recognise it (`coa_1a2b3c4d`).
    pub prefix: String,
    /// Role.
    pub role: Role,
    /// Brand scope.
    pub brand_id: Option<String>,
    /// Member scope.
    pub member_id: Option<String>,
    /// Label.
    pub label: String,
    /// Id of the key that created this one (`null` for the CLI and the demo seed).
    pub created_by: Option<String>,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Unix ms when revoked; `null` while the key works.
    pub revoked_at_ms: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: String,
    prefix: String,
    role: String,
    brand_id: Option<String>,
    member_id: Option<String>,
    label: String,
    created_by: Option<String>,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl KeyRow {
    fn view(self) -> Result<KeyView, DomainError> {
        let role = Role::parse(&self.role).ok_or_else(|| {
            DomainError::internal(anyhow::anyhow!(
                "key {} has unknown role {:?}",
                self.id,
                self.role
            ))
        })?;
        Ok(KeyView {
            id: self.id,
            prefix: self.prefix,
            role,
            brand_id: self.brand_id,
            member_id: self.member_id,
            label: self.label,
            created_by: self.created_by,
            created_at_ms: self.created_at,
            revoked_at_ms: self.revoked_at,
        })
    }
}

/// A page of keys.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyPage {
    /// Keys in creation order.
    pub items: Vec<KeyView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Filters of `GET /keys`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KeyListParams {
    /// Only keys of this role.
    pub role: Option<Role>,
    /// Only keys scoped to this brand (a brand key always sees only its own brand).
    pub brand_id: Option<String>,
    /// Only keys scoped to this member.
    pub member_id: Option<String>,
    /// Only keys that are (`true`) or are not (`false`) revoked.
    pub revoked: Option<bool>,
    /// Page size, 1–200 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

const KEY_COLUMNS: &str =
    "id, prefix, role, brand_id, member_id, label, created_by, created_at, revoked_at";

async fn fetch_key(conn: &mut AnyConnection, id: &str) -> Result<Option<KeyView>, DomainError> {
    let row: Option<KeyRow> =
        sqlx::query_as(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(KeyRow::view).transpose()
}

async fn exists(conn: &mut AnyConnection, table: &str, id: &str) -> Result<bool, sqlx::Error> {
    let sql = format!("SELECT id FROM {table} WHERE id = $1");
    let row: Option<(String,)> = sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.is_some())
}

/// Checks who may create which key and fills in a brand key's own brand.
fn authorize_create(principal: &Principal, req: &mut CreateKey) -> DomainResult<()> {
    match principal.role {
        Role::Admin => {}
        Role::Brand => {
            if req.role != Role::Counter {
                return Err(DomainError::forbidden(
                    "a brand key may only create counter keys",
                ));
            }
            let own = principal.brand_id.clone();
            if req.brand_id.is_some() && req.brand_id != own {
                return Err(DomainError::forbidden(
                    "a brand key may only create counter keys of its own brand",
                ));
            }
            req.brand_id = own;
        }
        Role::Counter | Role::Member => {
            return Err(DomainError::forbidden(
                "only admin and brand keys may create keys",
            ))
        }
    }
    let scope_ok = match req.role {
        Role::Admin => req.brand_id.is_none() && req.member_id.is_none(),
        Role::Brand | Role::Counter => req.brand_id.is_some() && req.member_id.is_none(),
        Role::Member => req.member_id.is_some() && req.brand_id.is_none(),
    };
    if !scope_ok {
        return Err(DomainError::bad_request(
            "invalid_key_scope",
            "admin keys have no scope; brand and counter keys need brand_id (and no member_id); \
             member keys need member_id (and no brand_id)",
        ));
    }
    let label = req.label.trim();
    if label.chars().count() > MAX_LABEL_CHARS || label.chars().any(char::is_control) {
        return Err(DomainError::bad_request(
            "invalid_label",
            format!("a label is at most {MAX_LABEL_CHARS} characters without control characters"),
        ));
    }
    req.label = label.to_owned();
    Ok(())
}

/// Create an API key (admin: any role; brand key: counter keys of its brand). The secret is in
/// this response only.
#[utoipa::path(post, path = "/keys", tag = "keys",
    params(("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it")),
    request_body = CreateKey,
    responses(
        (status = 201, body = CreatedKey,
            description = "The new key; on an idempotent replay `secret` is null"),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "`invalid_key_scope`, `invalid_label`"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`unknown_brand`, `unknown_member`"),
    ))]
pub async fn keys_create(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiJson(mut req): ApiJson<CreateKey>,
) -> DomainResult<Response> {
    let hash = idempotency::request_hash("keys.create", &req);
    authorize_create(&principal, &mut req)?;
    let scope = principal.idempotency_scope();
    let now_ms = state.now_ms();
    let mut tx = state.store.begin().await?;
    if let Claim::Replay { status, body } =
        idempotency::claim(&mut tx, &scope, &key.0, &hash, now_ms).await?
    {
        return Ok(idempotency::replay_response(status, body));
    }
    if let Some(brand_id) = &req.brand_id {
        if !exists(&mut tx, "brands", brand_id).await? {
            return Err(DomainError::unprocessable(
                "unknown_brand",
                format!("brand {brand_id:?} does not exist"),
            ));
        }
    }
    if let Some(member_id) = &req.member_id {
        if !exists(&mut tx, "members", member_id).await? {
            return Err(DomainError::unprocessable(
                "unknown_member",
                format!("member {member_id:?} does not exist"),
            ));
        }
    }
    let created = crate::domain::access::create_key(
        &mut *tx,
        req.role,
        req.brand_id.as_deref(),
        req.member_id.as_deref(),
        &req.label,
        now_ms,
    )
    .await?;
    sqlx::query("UPDATE api_keys SET created_by = $1 WHERE id = $2")
        .bind(&principal.key_id)
        .bind(&created.id)
        .execute(&mut *tx)
        .await?;
    // The secret must not be stored in the idempotency table: a replay shows it as null.
    let mut stored = serde_json::to_value(&created).map_err(DomainError::internal)?;
    stored["secret"] = serde_json::Value::Null;
    idempotency::complete(&mut tx, &scope, &key.0, StatusCode::CREATED, &stored).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ApiJson(created)).into_response())
}

/// List keys without their secrets (admin: all; brand key: its own brand's keys).
#[utoipa::path(get, path = "/keys", tag = "keys",
    params(KeyListParams),
    responses(
        (status = 200, body = KeyPage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn keys_list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<KeyListParams>,
) -> DomainResult<ApiJson<KeyPage>> {
    let brand_filter = match principal.role {
        Role::Admin => params.brand_id.clone(),
        Role::Brand => {
            if params.brand_id.is_some() && params.brand_id != principal.brand_id {
                return Err(DomainError::forbidden(
                    "a brand key sees only its own brand's keys",
                ));
            }
            principal.brand_id.clone()
        }
        Role::Counter | Role::Member => {
            return Err(DomainError::forbidden(
                "only admin and brand keys may list keys",
            ))
        }
    };
    let limit = params.limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(DomainError::bad_request(
            "invalid_query",
            format!("limit must be 1 to {MAX_PAGE_SIZE}"),
        ));
    }
    let mut conditions: Vec<(&str, String)> = Vec::new();
    if let Some(cursor) = params.cursor {
        conditions.push(("id > ?", cursor));
    }
    if let Some(role) = params.role {
        conditions.push(("role = ?", role.as_str().to_owned()));
    }
    if let Some(brand_id) = brand_filter {
        conditions.push(("brand_id = ?", brand_id));
    }
    if let Some(member_id) = params.member_id {
        conditions.push(("member_id = ?", member_id));
    }
    let mut sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE 1 = 1");
    for (i, (clause, _)) in conditions.iter().enumerate() {
        sql.push_str(" AND ");
        sql.push_str(&clause.replace('?', &format!("${}", i + 1)));
    }
    match params.revoked {
        Some(true) => sql.push_str(" AND revoked_at IS NOT NULL"),
        Some(false) => sql.push_str(" AND revoked_at IS NULL"),
        None => {}
    }
    // One extra row tells whether there is a next page.
    sql.push_str(&format!(" ORDER BY id LIMIT {}", u64::from(limit) + 1));
    let mut query = sqlx::query_as::<_, KeyRow>(&sql);
    for (_, value) in conditions {
        query = query.bind(value);
    }
    let mut items = query
        .fetch_all(state.store.read())
        .await?
        .into_iter()
        .map(KeyRow::view)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|k| k.id.clone())
    } else {
        None
    };
    Ok(ApiJson(KeyPage { items, next_cursor }))
}

/// Revoke a key (admin: any key; brand key: counter keys of its brand). Takes effect at once on
/// this node and within the auth cache TTL on the others.
#[utoipa::path(delete, path = "/keys/{key_id}", tag = "keys",
    params(
        ("key_id" = String, Path, description = "Key id"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it"),
    ),
    responses(
        (status = 200, body = KeyView, description = "The revoked key (revoking twice is a no-op)"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn keys_revoke(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(id): ApiPath<String>,
) -> DomainResult<Response> {
    if !matches!(principal.role, Role::Admin | Role::Brand) {
        return Err(DomainError::forbidden(
            "only admin and brand keys may revoke keys",
        ));
    }
    let scope = principal.idempotency_scope();
    let hash = idempotency::request_hash("keys.revoke", &id);
    let now_ms = state.now_ms();
    let mut tx = state.store.begin().await?;
    if let Claim::Replay { status, body } =
        idempotency::claim(&mut tx, &scope, &key.0, &hash, now_ms).await?
    {
        return Ok(idempotency::replay_response(status, body));
    }
    let target = fetch_key(&mut tx, &id)
        .await?
        .ok_or_else(|| DomainError::not_found("key", &id))?;
    if principal.role == Role::Brand
        && (target.role != Role::Counter || target.brand_id != principal.brand_id)
    {
        // Not found rather than forbidden: other brands' keys are not this caller's business.
        return Err(DomainError::not_found("key", &id));
    }
    sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now_ms)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    let (key_hash,): (String,) = sqlx::query_as("SELECT key_hash FROM api_keys WHERE id = $1")
        .bind(&id)
        .fetch_one(&mut *tx)
        .await?;
    let revoked = fetch_key(&mut tx, &id)
        .await?
        .ok_or_else(|| DomainError::not_found("key", &id))?;
    idempotency::complete(&mut tx, &scope, &key.0, StatusCode::OK, &revoked).await?;
    tx.commit().await?;
    // Other nodes drop their cached entry when its TTL runs out.
    state.auth_cache.invalidate(&key_hash).await;
    Ok(ApiJson(revoked).into_response())
}
