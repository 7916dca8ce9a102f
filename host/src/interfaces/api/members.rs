//! Members: registration (at a counter, by a brand or an admin), lookup, profile updates, tags,
//! blocking, and batch import/export. Personal data is masked for every caller that is neither
//! an admin nor the member (see [`crate::domain::members`]).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::access::{Principal, Role};
use crate::domain::members::transfer::{self, Format, ImportError, ImportReport, RowReader};
use crate::domain::members::{
    self, ListFilter, MemberPatch, MemberStatus, MemberView, RegisterMember, DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
};
use crate::foundation::error::{DomainError, DomainResult};
use crate::interfaces::api::idempotency::idempotent_write;
use crate::interfaces::api::idempotency::{self, Claim, IdempotencyKey};
use crate::interfaces::api::problem::{ApiJson, ApiPath, ApiQuery, Problem};
use crate::interfaces::api::AppState;

/// Longest id accepted in a path or cursor; ids are 32 characters.
const MAX_ID_CHARS: usize = 64;
/// Longest tier name accepted as a filter.
const MAX_TIER_CHARS: usize = 32;

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(members_list, members_register))
        .routes(routes!(members_me))
        .routes(routes!(members_import))
        .routes(routes!(members_export))
        .routes(routes!(members_get, members_update))
        .routes(routes!(members_tag))
        .routes(routes!(members_untag))
        .routes(routes!(members_block))
        .routes(routes!(members_unblock))
}

/// Whether `s` can be an id at all: short, and only letters, digits, `-` and `_`.
fn is_plausible_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_CHARS
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check_path_id(id: &str) -> DomainResult<()> {
    if is_plausible_id(id) {
        Ok(())
    } else {
        Err(DomainError::bad_request(
            "invalid_path",
            format!("{id:?} is not a member id"),
        ))
    }
}

/// A page of members.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberPage {
    /// Members in registration order.
    pub items: Vec<MemberView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Filters of `GET /members`, combined with AND.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Exact E.164 phone (URL-encode the `+` as `%2B`); a counter key may only look up by phone.
    pub phone: Option<String>,
    /// Only members with this tag (normalised like tags on write).
    pub tag: Option<String>,
    /// Only members of this tier.
    pub tier: Option<String>,
    /// Only `active` or `blocked` members.
    pub status: Option<MemberStatus>,
    /// Page size, 1–200 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Body of `POST /members/{id}/tags`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddTags {
    /// Tags to add; normalised, at most 64 per member in total.
    pub tags: Vec<String>,
}

/// Body of `POST /members/{id}/block` and `/unblock`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// Why, for the audit trail (1–500 characters).
    #[schema(example = "coupon abuse: 40 accounts on one device")]
    pub reason: String,
}

/// Format of an import or export.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FormatParams {
    /// `jsonl` or `csv`; for an import, defaults from the `Content-Type`
    /// (`text/csv`, `application/x-ndjson`); for an export, `jsonl`.
    #[param(inline)]
    pub format: Option<Format>,
}

/// Register a member (admin, brand or counter key; a counter sign-up records its brand).
#[utoipa::path(post, path = "/members", tag = "members",
    params(("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it")),
    request_body = RegisterMember,
    responses(
        (status = 201, body = MemberView),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "`invalid_phone`, `invalid_name`, `invalid_birthday`, `invalid_email`, \
                `invalid_tag`, `too_many_tags`"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`phone_taken`, `idempotency_key_reused`"),
    ))]
pub async fn members_register(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiJson(req): ApiJson<RegisterMember>,
) -> DomainResult<Response> {
    if principal.role == Role::Member {
        return Err(DomainError::forbidden(
            "members are registered by an admin, brand or counter key",
        ));
    }
    let now_ms = state.now_ms();
    let new = members::NewMember::validate(
        &req.phone,
        &req.name,
        req.birthday.as_deref(),
        req.email.as_deref(),
        &req.tags,
        now_ms,
    )?;
    idempotent_write(
        &state,
        &principal,
        &key,
        "members.register",
        &req,
        StatusCode::CREATED,
        async |tx| {
            let id = members::insert(&mut *tx, &new, principal.brand_id.as_deref(), now_ms).await?;
            let view = members::fetch_existing(&mut *tx, &id)
                .await?
                .view_for(&principal);
            Ok(view)
        },
    )
    .await
}

/// List members with filters and cursor pagination, or look one up by phone (admin and brand
/// keys; counter keys only by phone).
#[utoipa::path(get, path = "/members", tag = "members",
    params(ListParams),
    responses(
        (status = 200, body = MemberPage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json",
            description = "`phone_lookup_rate_limited` (counter keys, `[risk] \
                counter_phone_lookups_per_minute`)"),
    ))]
pub async fn members_list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<ListParams>,
) -> DomainResult<ApiJson<MemberPage>> {
    match principal.role {
        Role::Admin | Role::Brand => {}
        Role::Counter if params.phone.is_some() => {
            state
                .phone_lookups
                .check(&principal.key_id, state.now_ms())?;
        }
        Role::Counter => {
            return Err(DomainError::forbidden(
                "a counter key may only look members up by phone",
            ))
        }
        Role::Member => {
            return Err(DomainError::forbidden(
                "a member key sees only its own member: use GET /members/me",
            ))
        }
    }
    let limit = params.limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(DomainError::bad_request(
            "invalid_query",
            format!("limit must be 1 to {MAX_PAGE_SIZE}"),
        ));
    }
    if let Some(cursor) = &params.cursor {
        if !is_plausible_id(cursor) {
            return Err(DomainError::bad_request(
                "invalid_query",
                "cursor must be the next_cursor of a previous page",
            ));
        }
    }
    if params
        .tier
        .as_ref()
        .is_some_and(|t| t.is_empty() || t.chars().count() > MAX_TIER_CHARS)
    {
        return Err(DomainError::bad_request(
            "invalid_query",
            format!("tier must be 1 to {MAX_TIER_CHARS} characters"),
        ));
    }
    let phone = params
        .phone
        .as_deref()
        .map(|p| {
            // An unencoded `+` arrives as a space; nothing else can start a query value that way.
            let p = match p.strip_prefix(' ') {
                Some(rest) => format!("+{rest}"),
                None => p.to_owned(),
            };
            members::normalize_phone(&p)
        })
        .transpose()?;
    let filter = ListFilter {
        phone,
        tag: params
            .tag
            .as_deref()
            .map(members::normalize_tag)
            .transpose()?,
        tier: params.tier,
        status: params.status,
        after: params.cursor,
    };
    let mut conn = state.store.read().acquire().await?;
    let (found, next_cursor) = members::list(&mut conn, &filter, limit).await?;
    Ok(ApiJson(MemberPage {
        items: found.iter().map(|m| m.view_for(&principal)).collect(),
        next_cursor,
    }))
}

/// The member of a member key.
#[utoipa::path(get, path = "/members/me", tag = "members",
    responses(
        (status = 200, body = MemberView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn members_me(
    State(state): State<AppState>,
    principal: Principal,
) -> DomainResult<ApiJson<MemberView>> {
    let id = match (&principal.role, &principal.member_id) {
        (Role::Member, Some(id)) => id.clone(),
        _ => {
            return Err(DomainError::forbidden(
                "/members/me needs a member key; other keys use /members/{id}",
            ))
        }
    };
    let mut conn = state.store.read().acquire().await?;
    let member = members::fetch_existing(&mut conn, &id).await?;
    Ok(ApiJson(
        with_card_tier(&state, &mut conn, member.view_for(&principal)).await?,
    ))
}

/// Read a member (admin, brand and counter keys see a masked view; a member key only itself).
#[utoipa::path(get, path = "/members/{member_id}", tag = "members",
    params(("member_id" = String, Path, description = "Member id")),
    responses(
        (status = 200, body = MemberView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn members_get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> DomainResult<ApiJson<MemberView>> {
    check_path_id(&id)?;
    principal.require_member_read(&id)?;
    let mut conn = state.store.read().acquire().await?;
    let member = members::fetch_existing(&mut conn, &id).await?;
    Ok(ApiJson(
        with_card_tier(&state, &mut conn, member.view_for(&principal)).await?,
    ))
}

/// The member's tier as held now: raised to the floor of a paid membership card in force.
async fn with_card_tier(
    state: &AppState,
    conn: &mut sqlx::AnyConnection,
    mut view: MemberView,
) -> DomainResult<MemberView> {
    view.tier = crate::domain::membership::effective_tier_code(
        conn,
        &state.settings.tiers,
        &view.id,
        &view.tier,
        state.now_ms(),
    )
    .await?;
    Ok(view)
}

/// Update a member's profile (admin, or the member's own key; only an admin changes the phone).
#[utoipa::path(patch, path = "/members/{member_id}", tag = "members",
    params(
        ("member_id" = String, Path, description = "Member id"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it"),
    ),
    request_body = MemberPatch,
    responses(
        (status = 200, body = MemberView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`phone_taken`"),
    ))]
pub async fn members_update(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<MemberPatch>,
) -> DomainResult<Response> {
    check_path_id(&id)?;
    principal.require_member_self(&id)?;
    let now_ms = state.now_ms();
    idempotent_write(
        &state,
        &principal,
        &key,
        "members.update",
        &(&id, &patch),
        StatusCode::OK,
        async |tx| {
            members::update_profile(&mut *tx, &id, &patch, principal.is_admin(), now_ms).await?;
            let view = members::fetch_existing(&mut *tx, &id)
                .await?
                .view_for(&principal);
            Ok(view)
        },
    )
    .await
}

fn require_tagger(principal: &Principal) -> DomainResult<()> {
    match principal.role {
        Role::Admin | Role::Brand => Ok(()),
        _ => Err(DomainError::forbidden(
            "only admin and brand keys may tag members",
        )),
    }
}

/// Add tags to a member (admin and brand keys).
#[utoipa::path(post, path = "/members/{member_id}/tags", tag = "members",
    params(
        ("member_id" = String, Path, description = "Member id"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it"),
    ),
    request_body = AddTags,
    responses(
        (status = 200, body = MemberView),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "`invalid_tag`, `too_many_tags`"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn members_tag(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<AddTags>,
) -> DomainResult<Response> {
    check_path_id(&id)?;
    require_tagger(&principal)?;
    let tags = members::normalize_tags(&req.tags)?;
    let now_ms = state.now_ms();
    idempotent_write(
        &state,
        &principal,
        &key,
        "members.tag",
        &(&id, &req),
        StatusCode::OK,
        async |tx| {
            members::add_tags(&mut *tx, &id, &tags, now_ms).await?;
            let view = members::fetch_existing(&mut *tx, &id)
                .await?
                .view_for(&principal);
            Ok(view)
        },
    )
    .await
}

/// Remove a tag from a member (admin and brand keys; removing an absent tag is a no-op).
#[utoipa::path(delete, path = "/members/{member_id}/tags/{tag}", tag = "members",
    params(
        ("member_id" = String, Path, description = "Member id"),
        ("tag" = String, Path, description = "Tag (normalised before matching)"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it"),
    ),
    responses(
        (status = 200, body = MemberView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn members_untag(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath((id, tag)): ApiPath<(String, String)>,
) -> DomainResult<Response> {
    check_path_id(&id)?;
    require_tagger(&principal)?;
    let tag = members::normalize_tag(&tag)?;
    let now_ms = state.now_ms();
    idempotent_write(
        &state,
        &principal,
        &key,
        "members.untag",
        &(&id, &tag),
        StatusCode::OK,
        async |tx| {
            members::remove_tag(&mut *tx, &id, &tag, now_ms).await?;
            let view = members::fetch_existing(&mut *tx, &id)
                .await?
                .view_for(&principal);
            Ok(view)
        },
    )
    .await
}

async fn change_status(
    state: AppState,
    principal: Principal,
    key: IdempotencyKey,
    id: String,
    req: StatusChange,
    status: MemberStatus,
) -> DomainResult<Response> {
    check_path_id(&id)?;
    principal.require_admin()?;
    let reason = members::validate_reason(&req.reason)?;
    let now_ms = state.now_ms();
    let op = format!("members.{}", status.as_str());
    idempotent_write(
        &state,
        &principal,
        &key,
        &op,
        &(&id, &req),
        StatusCode::OK,
        async |tx| {
            members::set_status(&mut *tx, &id, status, &reason, &principal.key_id, now_ms).await?;
            let view = members::fetch_existing(&mut *tx, &id)
                .await?
                .view_for(&principal);
            Ok(view)
        },
    )
    .await
}

/// Block a member (admin): earning and spending are refused until unblocked.
#[utoipa::path(post, path = "/members/{member_id}/block", tag = "members",
    params(
        ("member_id" = String, Path, description = "Member id"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it"),
    ),
    request_body = StatusChange,
    responses(
        (status = 200, body = MemberView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`member_already_blocked`"),
    ))]
pub async fn members_block(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<StatusChange>,
) -> DomainResult<Response> {
    change_status(state, principal, key, id, req, MemberStatus::Blocked).await
}

/// Unblock a member (admin).
#[utoipa::path(post, path = "/members/{member_id}/unblock", tag = "members",
    params(
        ("member_id" = String, Path, description = "Member id"),
        ("Idempotency-Key" = String, Header, description = "Unique per operation; a retry reuses it"),
    ),
    request_body = StatusChange,
    responses(
        (status = 200, body = MemberView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`member_not_blocked`"),
    ))]
pub async fn members_unblock(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<StatusChange>,
) -> DomainResult<Response> {
    change_status(state, principal, key, id, req, MemberStatus::Active).await
}

fn payload_too_large(limit: usize) -> DomainError {
    DomainError::new(
        crate::foundation::error::ErrorKind::TooLarge,
        "payload_too_large",
        format!("an import body may be at most {limit} bytes; split the file or use the CLI"),
    )
}

/// Reads the whole body, refusing more than `limit` bytes. The import route reads its body
/// itself because its limit (`limits.import_body_bytes`) is larger than the router-wide one
/// and comes from the configuration, which the route table does not see.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> DomainResult<Bytes> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(payload_too_large(limit));
    }
    let mut stream = body.into_data_stream();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|err| DomainError::bad_request("unreadable_body", format!("{err}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(payload_too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// Import members from JSON lines or CSV (admin). Idempotent per row by phone: registered
/// phones are skipped, never overwritten; at most 50,000 rows per request.
#[utoipa::path(post, path = "/members/import", tag = "members",
    params(
        FormatParams,
        ("Idempotency-Key" = String, Header, description = "Unique per file; a retry reuses it"),
    ),
    request_body(description = "JSON lines (`application/x-ndjson`; also read as such: \
        `application/jsonl`, `application/json-lines`, `application/ndjson`, `application/json`) \
        or CSV (`text/csv`) with columns phone, name, birthday, email, tags (`;`-separated in \
        CSV); `?format=` overrides the type. At least one row.",
        content((String = "text/csv"), (String = "application/x-ndjson"))),
    responses(
        (status = 200, body = ImportReport),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "`empty_import` (no rows), `invalid_import`"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json",
            description = "`payload_too_large`, `too_many_rows`"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn members_import(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiQuery(params): ApiQuery<FormatParams>,
    headers: HeaderMap,
    body: Body,
) -> DomainResult<Response> {
    principal.require_admin()?;
    let format = match params.format {
        Some(format) => format,
        None => headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(Format::from_content_type)
            .ok_or_else(|| {
                DomainError::new(
                    crate::foundation::error::ErrorKind::UnsupportedFormat,
                    "unsupported_media_type",
                    "send Content-Type text/csv or application/x-ndjson, or ?format=csv|jsonl",
                )
            })?,
    };
    let limit = state.config.limits.import_body_bytes;
    let bytes = read_body(&headers, body, limit).await?;
    // Newlines bound the row count from above, so this refuses too-long files before any row
    // is written rather than half-way.
    let lines = bytes.iter().filter(|&&b| b == b'\n').count();
    if lines > transfer::MAX_IMPORT_ROWS_PER_REQUEST + 1 {
        return Err(DomainError::new(
            crate::foundation::error::ErrorKind::TooLarge,
            "too_many_rows",
            format!(
                "an import may carry at most {} rows; split the file or use `coalition members import`",
                transfer::MAX_IMPORT_ROWS_PER_REQUEST
            ),
        ));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(empty_import());
    }
    let scope = principal.idempotency_scope();
    let body_hash = hex::encode(sha2::Sha256::digest(&bytes));
    let hash = idempotency::request_hash("members.import", &(format, body_hash));
    let now_ms = state.now_ms();
    // Batches commit one by one (one transaction would hold SQLite's only writer for the whole
    // file), so the key is checked now and claimed at the end, with the report.
    {
        let mut tx = state.store.begin().await?;
        if let Claim::Replay { status, body } =
            idempotency::claim(&mut tx, &scope, &key.0, &hash, now_ms).await?
        {
            return Ok(idempotency::replay_response(status, body));
        }
        tx.rollback().await?;
    }
    let mut rows = RowReader::new(format, bytes.as_ref(), now_ms).map_err(import_error)?;
    let report = transfer::import(
        &state.store,
        &mut rows,
        now_ms,
        Some(transfer::MAX_IMPORT_ROWS_PER_REQUEST),
        |_| {},
    )
    .await
    .map_err(import_error)?;
    if report.rows == 0 {
        // A CSV header without rows: nothing was written.
        return Err(empty_import());
    }
    let mut tx = state.store.begin().await?;
    if let Claim::Replay { status, body } =
        idempotency::claim(&mut tx, &scope, &key.0, &hash, now_ms).await?
    {
        // A concurrent retry finished first; its report is the one of record.
        return Ok(idempotency::replay_response(status, body));
    }
    idempotency::complete(&mut tx, &scope, &key.0, StatusCode::OK, &report).await?;
    tx.commit().await?;
    Ok(ApiJson(report).into_response())
}

/// An import that carries no rows is a mistake (a wrong file, a lost body), not a success.
fn empty_import() -> DomainError {
    DomainError::bad_request(
        "empty_import",
        "the body has no rows to import (send at least one JSON line or CSV row)",
    )
}

fn import_error(err: ImportError) -> DomainError {
    match err {
        ImportError::Format(detail) => DomainError::bad_request("invalid_import", detail),
        ImportError::Io(err) => DomainError::bad_request("unreadable_body", err.to_string()),
        ImportError::Db(err) => DomainError::from(err),
    }
}

/// Export every member as JSON lines or CSV, streamed (admin; full personal data).
#[utoipa::path(get, path = "/members/export", tag = "members",
    params(FormatParams),
    responses(
        (status = 200, description = "One member per line: JSON lines (`format=jsonl`, the \
            default) or CSV with a header row (`format=csv`)",
            content((String = "application/x-ndjson"), (String = "text/csv")),
            headers(("Content-Disposition" = String,
                description = "`attachment; filename=\"members.jsonl\"` or `members.csv`"))),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn members_export(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<FormatParams>,
) -> DomainResult<Response> {
    principal.require_admin()?;
    let format = params.format.unwrap_or(Format::Jsonl);
    enum Step {
        Header,
        Page(Option<String>),
        Done,
    }
    let store = state.store.clone();
    // Pages are read one at a time as the client consumes the body, so memory stays at one page
    // however many members there are.
    let stream = futures_util::stream::unfold(Step::Header, move |step| {
        let store = store.clone();
        async move {
            match step {
                Step::Done => None,
                Step::Header => Some((
                    Ok::<_, std::io::Error>(Bytes::from(transfer::export_header(format))),
                    Step::Page(None),
                )),
                Step::Page(after) => match transfer::export_page(&store, after).await {
                    Ok((page, next)) => {
                        let bytes = Bytes::from(transfer::export_lines(&page, format));
                        Some((Ok(bytes), next.map_or(Step::Done, |c| Step::Page(Some(c)))))
                    }
                    Err(err) => {
                        // Headers are sent; all that is left is to cut the body short.
                        tracing::error!(error = ?err, "member export failed mid-stream");
                        Some((Err(std::io::Error::other(err)), Step::Done))
                    }
                },
            }
        }
    });
    let filename = format!("attachment; filename=\"members.{}\"", format.extension());
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (header::CONTENT_DISPOSITION, filename),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
