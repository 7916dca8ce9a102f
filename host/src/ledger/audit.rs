//! The append-only, hash-chained audit log of decisions made by people: plugin uploads,
//! reviews, deploys, canaries, rollbacks and kills; settlement closes and adjustments.
//!
//! Each entry's hash covers the previous entry's hash and every field of the entry, so a
//! changed, inserted or deleted entry breaks the chain from that point on; [`verify`] walks the
//! chain and names the first entry that does not match. Appends lock the single `audit_head`
//! row, so concurrent appenders on any node form one chain without gaps.

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::Backend;

/// Longest reason kept; the rest is refused (reasons are for people, not payloads).
pub const MAX_REASON_LEN: usize = 500;
/// Most entries one page of the log returns.
pub const MAX_PAGE: i64 = 500;
/// Hash before the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An entry to append.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    /// Who: the principal's description, e.g. `admin:<key id>` or `brand:cafe:<key id>`.
    pub actor: &'a str,
    /// What, as `<area>.<verb>`, e.g. `plugin.approve`.
    pub action: &'a str,
    /// What it was done to.
    pub subject_kind: &'a str,
    /// Its id.
    pub subject_id: &'a str,
    /// Why, as the person gave it (may be empty where the action needs none).
    pub reason: &'a str,
    /// Any further facts (version ids, percentages, hashes), a JSON object.
    pub details: serde_json::Value,
}

/// A stored entry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// When, Unix ms.
    pub at: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Subject kind.
    pub subject_kind: String,
    /// Subject id.
    pub subject_id: String,
    /// Why.
    pub reason: String,
    /// Further facts.
    pub details: serde_json::Value,
    /// Hash of the previous entry.
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
}

/// The result of walking the chain.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditVerification {
    /// True when every entry's hash matches and links to the one before.
    pub ok: bool,
    /// Entries checked.
    pub entries: i64,
    /// The first entry that does not match, when `ok` is false.
    pub first_bad_seq: Option<i64>,
    /// What is wrong with it.
    pub problem: Option<String>,
    /// Hash of the last entry (the chain's head).
    pub head: String,
}

/// The hash of an entry: sha256 over the previous hash and the entry's fields, each
/// length-prefixed so no two different entries hash the same.
pub fn entry_hash(prev_hash: &str, seq: i64, at: i64, entry: &NewEntry<'_>) -> String {
    let details = canonical(&entry.details);
    let mut hasher = Sha256::new();
    for field in [
        prev_hash,
        &seq.to_string(),
        &at.to_string(),
        entry.actor,
        entry.action,
        entry.subject_kind,
        entry.subject_id,
        entry.reason,
        &details,
    ] {
        hasher.update((field.len() as u64).to_le_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// serde_json's map is ordered (BTreeMap), so `to_string` is canonical.
fn canonical(value: &serde_json::Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Appends an entry in the caller's transaction (so the entry exists exactly when the change it
/// records does) and returns its sequence number.
pub async fn append(
    conn: &mut AnyConnection,
    backend: Backend,
    entry: &NewEntry<'_>,
    now_ms: i64,
) -> DomainResult<i64> {
    if entry.reason.len() > MAX_REASON_LEN {
        return Err(DomainError::validation(format!(
            "reason is {} bytes; the limit is {MAX_REASON_LEN}",
            entry.reason.len()
        )));
    }
    if !entry.details.is_object() {
        return Err(DomainError::internal(anyhow::anyhow!(
            "audit details must be a JSON object"
        )));
    }
    let (head_seq, head_hash): (i64, String) = sqlx::query_as(&format!(
        "SELECT seq, hash FROM audit_head WHERE id = 1{}",
        crate::foundation::store::for_update(backend)
    ))
    .fetch_one(&mut *conn)
    .await?;
    let seq = head_seq + 1;
    let hash = entry_hash(&head_hash, seq, now_ms, entry);
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor, action, subject_kind, subject_id, reason, details,
            prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(seq)
    .bind(now_ms)
    .bind(entry.actor)
    .bind(entry.action)
    .bind(entry.subject_kind)
    .bind(entry.subject_id)
    .bind(entry.reason)
    .bind(canonical(&entry.details))
    .bind(&head_hash)
    .bind(&hash)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(&hash)
        .execute(&mut *conn)
        .await?;
    Ok(seq)
}

type Row = (
    i64,
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
);

const COLUMNS: &str =
    "seq, at, actor, action, subject_kind, subject_id, reason, details, prev_hash, hash";

fn to_entry(row: Row) -> AuditEntry {
    let (seq, at, actor, action, subject_kind, subject_id, reason, details, prev_hash, hash) = row;
    AuditEntry {
        seq,
        at,
        actor,
        action,
        subject_kind,
        subject_id,
        reason,
        // Kept as stored text when it no longer parses, so verify can still report it.
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::String(details)),
        prev_hash,
        hash,
    }
}

/// Entries after `after_seq`, oldest first, at most `limit` (capped at [`MAX_PAGE`]), optionally
/// only those about one subject.
pub async fn page(
    pool: &sqlx::AnyPool,
    after_seq: i64,
    limit: i64,
    subject: Option<(&str, &str)>,
) -> DomainResult<Vec<AuditEntry>> {
    let limit = limit.clamp(1, MAX_PAGE);
    let rows: Vec<Row> = match subject {
        Some((kind, id)) => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM audit_log WHERE seq > $1 AND subject_kind = $2 \
                 AND subject_id = $3 ORDER BY seq LIMIT $4"
            ))
            .bind(after_seq)
            .bind(kind)
            .bind(id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }
        None => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
            ))
            .bind(after_seq)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }
    };
    Ok(rows.into_iter().map(to_entry).collect())
}

/// Walks the whole chain in pages (memory stays bounded) and checks every link and hash, and
/// that the head row names the last entry.
pub async fn verify(pool: &sqlx::AnyPool) -> DomainResult<AuditVerification> {
    const BATCH: i64 = 1_000;
    let mut prev = GENESIS.to_owned();
    let mut expected_seq = 1;
    let mut entries = 0;
    let bad = |seq: i64, problem: String, entries: i64, head: &str| AuditVerification {
        ok: false,
        entries,
        first_bad_seq: Some(seq),
        problem: Some(problem),
        head: head.to_owned(),
    };
    loop {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2"
        ))
        .bind(expected_seq)
        .bind(BATCH)
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let (
                seq,
                at,
                actor,
                action,
                subject_kind,
                subject_id,
                reason,
                details,
                prev_hash,
                hash,
            ) = row;
            entries += 1;
            if seq != expected_seq {
                return Ok(bad(
                    expected_seq,
                    format!("entry {expected_seq} is missing"),
                    entries,
                    &prev,
                ));
            }
            if prev_hash != prev {
                return Ok(bad(
                    seq,
                    "does not link to the entry before it".into(),
                    entries,
                    &prev,
                ));
            }
            let details_value: serde_json::Value = match serde_json::from_str(&details) {
                Ok(value) => value,
                Err(_) => {
                    return Ok(bad(seq, "details are not JSON".into(), entries, &prev));
                }
            };
            let entry = NewEntry {
                actor: &actor,
                action: &action,
                subject_kind: &subject_kind,
                subject_id: &subject_id,
                reason: &reason,
                details: details_value,
            };
            if entry_hash(&prev, seq, at, &entry) != hash {
                return Ok(bad(
                    seq,
                    "hash does not match its contents".into(),
                    entries,
                    &prev,
                ));
            }
            prev = hash;
            expected_seq += 1;
        }
    }
    let (head_seq, head_hash): (i64, String) =
        sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(pool)
            .await?;
    if head_seq != expected_seq - 1 || head_hash != prev {
        return Ok(bad(
            head_seq.max(expected_seq - 1),
            format!(
                "the head names entry {head_seq}, but the chain ends at {}",
                expected_seq - 1
            ),
            entries,
            &prev,
        ));
    }
    Ok(AuditVerification {
        ok: true,
        entries,
        first_bad_seq: None,
        problem: None,
        head: prev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(reason: &str) -> NewEntry<'_> {
        NewEntry {
            actor: "admin:k1",
            action: "plugin.approve",
            subject_kind: "plugin_version",
            subject_id: "v1",
            reason,
            details: serde_json::json!({"b": 1, "a": [1, 2]}),
        }
    }

    #[test]
    fn hash_covers_every_field_and_the_link() {
        let base = entry_hash(GENESIS, 1, 10, &entry("ok"));
        assert_eq!(base, entry_hash(GENESIS, 1, 10, &entry("ok")));
        assert_ne!(base, entry_hash(GENESIS, 1, 10, &entry("ok!")));
        assert_ne!(base, entry_hash(GENESIS, 2, 10, &entry("ok")));
        assert_ne!(base, entry_hash(GENESIS, 1, 11, &entry("ok")));
        assert_ne!(base, entry_hash(&base, 1, 10, &entry("ok")));
        let mut other = entry("ok");
        other.details = serde_json::json!({"b": 2, "a": [1, 2]});
        assert_ne!(base, entry_hash(GENESIS, 1, 10, &other));
    }
}
