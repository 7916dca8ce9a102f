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
        // Not stored: a replay reports its own.
        peak_memory_bytes: 0,
        duration_us: u64::try_from(us).unwrap_or(0),
        logs_dropped: 0,
        input,
    })
}

// ---------------------------------------------------------------------------------------------
// A version's own calls, for the brand that ships it

/// Most receipts one page lists.
pub const MAX_RECEIPTS_PAGE: i64 = 200;
/// Receipts the statistics read, newest first: enough for a stable p99, and a bound so one
/// request never scans a busy plugin's whole history.
pub const MAX_STATS_RECEIPTS: i64 = 10_000;

/// One recorded call of a version, with its input as the plugin saw it (the member context is
/// pseudonymous): what a brand downloads to replay its hooks locally.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordedCall {
    /// The receipt.
    #[serde(flatten)]
    pub receipt: StoredReceipt,
    /// The canonical input of the call, as JSON.
    pub input: serde_json::Value,
}

/// A receipt row with its input.
#[derive(sqlx::FromRow)]
struct CallRow {
    id: String,
    plugin: String,
    version: String,
    hook: String,
    component_sha256: String,
    input_sha256: String,
    output_sha256: String,
    fuel_used: i64,
    duration_us: i64,
    output: String,
    subject_kind: String,
    subject_id: String,
    created_at: i64,
    input: String,
}

/// The newest calls of `plugin@version` (optionally of one hook), newest first, before the
/// receipt `before` if given, at most `limit` (1..=[`MAX_RECEIPTS_PAGE`]).
pub async fn for_version(
    store: &Store,
    plugin: &str,
    version: &str,
    hook: Option<&str>,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<RecordedCall>, DomainError> {
    let mut sql = format!(
        "SELECT {RECEIPT_COLUMNS}, input FROM plugin_receipts WHERE plugin = $1 AND version = $2"
    );
    let mut n = 2;
    if hook.is_some() {
        n += 1;
        sql.push_str(&format!(" AND hook = ${n}"));
    }
    if before.is_some() {
        n += 1;
        sql.push_str(&format!(
            " AND (created_at, id) < (SELECT b.created_at, b.id FROM plugin_receipts b \
             WHERE b.id = ${n})"
        ));
    }
    sql.push_str(&format!(
        " ORDER BY created_at DESC, id DESC LIMIT {}",
        limit.clamp(1, MAX_RECEIPTS_PAGE)
    ));
    let mut query = sqlx::query_as::<_, CallRow>(&sql)
        .bind(plugin)
        .bind(version);
    if let Some(hook) = hook {
        query = query.bind(hook);
    }
    if let Some(before) = before {
        query = query.bind(before);
    }
    let rows = query.fetch_all(store.read()).await?;
    Ok(rows
        .into_iter()
        .map(|r| RecordedCall {
            input: serde_json::from_str(&r.input).unwrap_or(serde_json::Value::Null),
            receipt: to_receipt((
                r.id,
                r.plugin,
                r.version,
                r.hook,
                r.component_sha256,
                r.input_sha256,
                r.output_sha256,
                r.fuel_used,
                r.duration_us,
                r.output,
                r.subject_kind,
                r.subject_id,
                r.created_at,
            )),
        })
        .collect())
}

/// Fuel and time of one hook's recorded calls.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HookStats {
    /// The hook.
    pub hook: String,
    /// Recorded calls read (the newest, at most [`MAX_STATS_RECEIPTS`] over all hooks).
    pub calls: u64,
    /// Median fuel.
    pub fuel_p50: i64,
    /// 99th percentile of fuel.
    pub fuel_p99: i64,
    /// Median duration, µs.
    pub duration_us_p50: i64,
    /// 99th percentile of duration, µs.
    pub duration_us_p99: i64,
}

/// Failures of a version by hook and stable code: decisions the host skipped on purchases
/// (`purchase_skipped_decisions`) and settle events parked after the plugin failed on them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FailureCount {
    /// The hook.
    pub hook: String,
    /// The stable code, e.g. `fuel_exhausted`, `trap_unreachable`, `bonus_capped`.
    pub code: String,
    /// How many.
    pub count: i64,
}

/// One day of a version's recorded calls and failures: what the console draws over time.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DayStats {
    /// Start of the UTC day, Unix ms.
    pub day_ms: i64,
    /// Recorded calls that day (of the newest [`MAX_STATS_RECEIPTS`]).
    pub calls: u64,
    /// Median fuel.
    pub fuel_p50: i64,
    /// Median duration, µs.
    pub duration_us_p50: i64,
    /// 99th percentile of duration, µs.
    pub duration_us_p99: i64,
    /// Decisions the host skipped on that day's purchases (failures, cuts).
    pub failures: i64,
}

/// Per UTC day, oldest first: calls, fuel and duration of `calls` (the newest recorded calls
/// of `plugin@version`, from [`newest_calls`]), and the decisions skipped on purchases that day.
pub async fn daily_stats(
    store: &Store,
    plugin: &str,
    version: &str,
    calls: &[RecentCall],
) -> Result<Vec<DayStats>, DomainError> {
    let day = crate::foundation::clock::DAY_MS;
    let failures: Vec<(i64,)> = sqlx::query_as(
        "SELECT p.created_at FROM purchase_skipped_decisions d
         JOIN purchases p ON p.id = d.purchase_id
         WHERE d.plugin = $1 AND d.version = $2 ORDER BY p.created_at DESC LIMIT $3",
    )
    .bind(plugin)
    .bind(version)
    .bind(MAX_STATS_RECEIPTS)
    .fetch_all(store.read())
    .await?;
    let mut by_day: std::collections::BTreeMap<i64, (Vec<i64>, Vec<i64>, i64)> =
        std::collections::BTreeMap::new();
    for (_, at, fuel, us) in calls.iter().cloned() {
        let entry = by_day.entry(at.div_euclid(day) * day).or_default();
        entry.0.push(fuel);
        entry.1.push(us);
    }
    for (at,) in failures {
        by_day.entry(at.div_euclid(day) * day).or_default().2 += 1;
    }
    Ok(by_day
        .into_iter()
        .map(|(day_ms, (mut fuel, mut us, failures))| {
            fuel.sort_unstable();
            us.sort_unstable();
            DayStats {
                day_ms,
                calls: u64::try_from(fuel.len()).unwrap_or(u64::MAX),
                fuel_p50: percentile(&fuel, 50),
                duration_us_p50: percentile(&us, 50),
                duration_us_p99: percentile(&us, 99),
                failures,
            }
        })
        .collect())
}

/// The nearest-rank percentile of sorted values (0 when empty).
fn percentile(sorted: &[i64], p: usize) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// One recorded call as the stats read it: `(hook, created_at, fuel_used, duration_us)`.
pub type RecentCall = (String, i64, i64, i64);

/// The newest [`MAX_STATS_RECEIPTS`] recorded calls of `plugin@version`, read once for both
/// [`hook_stats`] and [`daily_stats`].
pub async fn newest_calls(
    store: &Store,
    plugin: &str,
    version: &str,
) -> Result<Vec<RecentCall>, DomainError> {
    Ok(sqlx::query_as(
        "SELECT hook, created_at, fuel_used, duration_us FROM plugin_receipts
         WHERE plugin = $1 AND version = $2 ORDER BY created_at DESC, id DESC LIMIT $3",
    )
    .bind(plugin)
    .bind(version)
    .bind(MAX_STATS_RECEIPTS)
    .fetch_all(store.read())
    .await?)
}

/// Per-hook fuel and duration percentiles over `calls` (from [`newest_calls`]).
pub fn hook_stats(calls: &[RecentCall]) -> Vec<HookStats> {
    let mut by_hook: std::collections::BTreeMap<String, (Vec<i64>, Vec<i64>)> =
        std::collections::BTreeMap::new();
    for (hook, _, fuel, us) in calls.iter().cloned() {
        let entry = by_hook.entry(hook).or_default();
        entry.0.push(fuel);
        entry.1.push(us);
    }
    by_hook
        .into_iter()
        .map(|(hook, (mut fuel, mut us))| {
            fuel.sort_unstable();
            us.sort_unstable();
            HookStats {
                hook,
                calls: u64::try_from(fuel.len()).unwrap_or(u64::MAX),
                fuel_p50: percentile(&fuel, 50),
                fuel_p99: percentile(&fuel, 99),
                duration_us_p50: percentile(&us, 50),
                duration_us_p99: percentile(&us, 99),
            }
        })
        .collect()
}

/// Failures of `plugin@version` by hook and code.
pub async fn failures(
    store: &Store,
    plugin: &str,
    version: &str,
) -> Result<Vec<FailureCount>, DomainError> {
    let mut out: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT hook, code, CAST(COUNT(*) AS BIGINT) FROM purchase_skipped_decisions
         WHERE plugin = $1 AND version = $2 GROUP BY hook, code",
    )
    .bind(plugin)
    .bind(version)
    .fetch_all(store.read())
    .await?;
    let parked: Vec<(String, i64)> = sqlx::query_as(
        "SELECT problem_code, CAST(COUNT(*) AS BIGINT) FROM settle_parked
         WHERE failed_plugin = $1 AND failed_version = $2 GROUP BY problem_code",
    )
    .bind(plugin)
    .bind(version)
    .fetch_all(store.read())
    .await?;
    out.extend(
        parked
            .into_iter()
            .map(|(code, count)| ("settle".to_owned(), code, count)),
    );
    out.sort();
    Ok(out
        .into_iter()
        .map(|(hook, code, count)| FailureCount { hook, code, count })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50), 50);
        assert_eq!(percentile(&values, 99), 99);
        assert_eq!(percentile(&[7], 99), 7);
        assert_eq!(percentile(&[], 50), 0);
        assert_eq!(percentile(&[1, 2, 3], 50), 2);
    }
}
