//! Receipts: what ran (component, input, output hashes, fuel, time), stored in the same
//! transaction as the decision it produced, so any disputed figure can be re-run bit for bit.

use serde::Serialize;
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::foundation::error::DomainError;
use crate::foundation::store::Store;

/// Stores a receipt in the caller's transaction, beside the decision it produced.
pub async fn store_receipt(
    conn: &mut AnyConnection,
    receipt: &coalition_runtime::Receipt,
    output_json: &str,
    subject_kind: &str,
    subject_id: &str,
    now_ms: i64,
) -> Result<String, sqlx::Error> {
    let id = crate::foundation::store::new_id();
    sqlx::query(
        "INSERT INTO plugin_receipts (id, plugin, version, hook, component_sha256, input_sha256,
            output_sha256, fuel_used, duration_us, input, output, subject_kind, subject_id,
            created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&id)
    .bind(&receipt.plugin)
    .bind(&receipt.version)
    .bind(receipt.hook.as_str())
    .bind(&receipt.component_sha256)
    .bind(&receipt.input_sha256)
    .bind(&receipt.output_sha256)
    .bind(i64::try_from(receipt.fuel_used).unwrap_or(i64::MAX))
    .bind(i64::try_from(receipt.duration_us).unwrap_or(i64::MAX))
    .bind(&receipt.input)
    .bind(output_json)
    .bind(subject_kind)
    .bind(subject_id)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(id)
}

/// A stored receipt as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StoredReceipt {
    /// Receipt id.
    pub id: String,
    /// Plugin name.
    pub plugin: String,
    /// Plugin version.
    pub version: String,
    /// Hook called.
    pub hook: String,
    /// sha256 of the component.
    pub component_sha256: String,
    /// sha256 of the canonical input.
    pub input_sha256: String,
    /// sha256 of the canonical output.
    pub output_sha256: String,
    /// Fuel used.
    pub fuel_used: i64,
    /// Duration, microseconds.
    pub duration_us: i64,
    /// The decision, as JSON.
    pub output: serde_json::Value,
    /// What the decision was used for (`purchase`, ...).
    pub subject_kind: String,
    /// Id of that subject.
    pub subject_id: String,
    /// When, Unix ms.
    pub created_at: i64,
}

type ReceiptRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    String,
    String,
    String,
    i64,
);

fn to_receipt(row: ReceiptRow) -> StoredReceipt {
    let (
        id,
        plugin,
        version,
        hook,
        component_sha256,
        input_sha256,
        output_sha256,
        fuel_used,
        duration_us,
        output,
        subject_kind,
        subject_id,
        created_at,
    ) = row;
    StoredReceipt {
        id,
        plugin,
        version,
        hook,
        component_sha256,
        input_sha256,
        output_sha256,
        fuel_used,
        duration_us,
        output: serde_json::from_str(&output).unwrap_or(serde_json::Value::Null),
        subject_kind,
        subject_id,
        created_at,
    }
}

const RECEIPT_COLUMNS: &str = "id, plugin, version, hook, component_sha256, input_sha256, \
    output_sha256, fuel_used, duration_us, output, subject_kind, subject_id, created_at";

/// Receipts of one subject (for example one purchase), oldest first.
pub async fn for_subject(
    store: &Store,
    subject_kind: &str,
    subject_id: &str,
) -> Result<Vec<StoredReceipt>, DomainError> {
    let rows: Vec<ReceiptRow> = sqlx::query_as(&format!(
        "SELECT {RECEIPT_COLUMNS} FROM plugin_receipts
         WHERE subject_kind = $1 AND subject_id = $2 ORDER BY created_at, id LIMIT 100"
    ))
    .bind(subject_kind)
    .bind(subject_id)
    .fetch_all(store.read())
    .await?;
    Ok(rows.into_iter().map(to_receipt).collect())
}

/// The stored columns a replay needs.
#[derive(sqlx::FromRow)]
struct ReplayRow {
    plugin: String,
    version: String,
    hook: String,
    component_sha256: String,
    input_sha256: String,
    output_sha256: String,
    fuel_used: i64,
    duration_us: i64,
    input: String,
}

/// The full receipt needed to replay a call, by id.
pub async fn load_for_replay(
    store: &Store,
    id: &str,
) -> Result<coalition_runtime::Receipt, DomainError> {
    let row: Option<ReplayRow> = sqlx::query_as(
        "SELECT plugin, version, hook, component_sha256, input_sha256, output_sha256,
                fuel_used, duration_us, input FROM plugin_receipts WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(store.read())
    .await?;
    let Some(ReplayRow {
        plugin,
        version,
        hook,
        component_sha256,
        input_sha256,
        output_sha256,
        fuel_used: fuel,
        duration_us: us,
        input,
    }) = row
    else {
        return Err(DomainError::not_found("receipt", id));
    };
    let hook = coalition_runtime::model::Hook::ALL
        .into_iter()
        .find(|h| h.as_str() == hook)
        .ok_or_else(|| {
            DomainError::internal(anyhow::anyhow!("stored receipt has hook {hook:?}"))
        })?;
    Ok(coalition_runtime::Receipt {
        plugin,
        version,
        hook,
        component_sha256,
        input_sha256,
        output_sha256,
        fuel_used: u64::try_from(fuel).unwrap_or(0),
        duration_us: u64::try_from(us).unwrap_or(0),
        logs_dropped: 0,
        input,
    })
}
