//! Which settle plugins govern a brand's events that name no plugin, as an admin ordered them.
//!
//! Without a precedence, only the brand's own plugins are asked (uploaded by the brand, or
//! installed by the platform and naming it) and at most one of them may answer with lines; a
//! partner's plugin that merely names the brand never settles the brand's events unless an
//! admin lists it here. Plugin names sort no one: nothing here depends on alphabetical order.

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::Backend;

/// Most plugins one brand's precedence may list; a brand has a handful of settle plugins.
pub const MAX_PRECEDENCE_PLUGINS: usize = 16;
/// Longest plugin name accepted (the manifest's own bound).
const MAX_PLUGIN_NAME_LEN: usize = 64;

/// A brand's settle precedence.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SettlePrecedence {
    /// The brand whose events it orders.
    pub brand_id: String,
    /// Plugin names, asked in this order; the first that answers with lines governs.
    pub plugins: Vec<String>,
    /// Who set it (`admin:<key id>`); absent when none is set.
    pub set_by: Option<String>,
    /// When, Unix ms; absent when none is set.
    pub set_at_ms: Option<i64>,
}

/// Body of `PUT /settlement/precedence/{brand_id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPrecedence {
    /// Plugin names in order (at most 16, no repeats); empty clears the precedence.
    pub plugins: Vec<String>,
    /// Why (kept in the audit log), 1–200 characters.
    pub reason: String,
}

/// The precedence of `brand_id` (empty when none is set).
pub async fn get(conn: &mut AnyConnection, brand_id: &str) -> DomainResult<SettlePrecedence> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT plugin_name, set_by, set_at FROM settle_precedence WHERE brand_id = $1
         ORDER BY position",
    )
    .bind(brand_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(SettlePrecedence {
        brand_id: brand_id.to_owned(),
        set_by: rows.first().map(|r| r.1.clone()),
        set_at_ms: rows.first().map(|r| r.2),
        plugins: rows.into_iter().map(|r| r.0).collect(),
    })
}

/// Every brand's precedence that is set.
pub async fn list(conn: &mut AnyConnection) -> DomainResult<Vec<SettlePrecedence>> {
    let brands: Vec<(String,)> =
        sqlx::query_as("SELECT DISTINCT brand_id FROM settle_precedence ORDER BY brand_id")
            .fetch_all(&mut *conn)
            .await?;
    let mut out = Vec::with_capacity(brands.len());
    for (brand,) in brands {
        out.push(get(conn, &brand).await?);
    }
    Ok(out)
}

/// Replaces `brand_id`'s precedence and records it in the audit log, in the caller's
/// transaction.
pub async fn set(
    conn: &mut AnyConnection,
    backend: Backend,
    brand_id: &str,
    req: &SetPrecedence,
    actor: &str,
    now_ms: i64,
) -> DomainResult<SettlePrecedence> {
    crate::ledger::validate_reason(&req.reason, true)?;
    if req.plugins.len() > MAX_PRECEDENCE_PLUGINS {
        return Err(DomainError::validation(format!(
            "plugins lists at most {MAX_PRECEDENCE_PLUGINS} names"
        )));
    }
    for (i, name) in req.plugins.iter().enumerate() {
        let well_formed = !name.is_empty()
            && name.len() <= MAX_PLUGIN_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !well_formed {
            return Err(DomainError::validation(format!(
                "plugins[{i}] is not a plugin name (kebab-case, at most {MAX_PLUGIN_NAME_LEN})"
            )));
        }
        if req.plugins[..i].contains(name) {
            return Err(DomainError::validation(format!(
                "plugins[{i}] ({name}) is listed twice"
            )));
        }
    }
    crate::ledger::require_brand_exists(conn, brand_id).await?;
    sqlx::query("DELETE FROM settle_precedence WHERE brand_id = $1")
        .bind(brand_id)
        .execute(&mut *conn)
        .await?;
    for (position, name) in req.plugins.iter().enumerate() {
        sqlx::query(
            "INSERT INTO settle_precedence (brand_id, position, plugin_name, set_by, set_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(brand_id)
        .bind(i64::try_from(position).unwrap_or(i64::MAX))
        .bind(name)
        .bind(actor)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    }
    crate::ledger::audit::append(
        conn,
        backend,
        &crate::ledger::audit::NewEntry {
            actor,
            action: "settlement.precedence",
            subject_kind: "brand",
            subject_id: brand_id,
            reason: &req.reason,
            details: serde_json::json!({ "plugins": req.plugins }),
        },
        now_ms,
    )
    .await?;
    get(conn, brand_id).await
}
