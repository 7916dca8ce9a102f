//! Parked settle events: events a plugin failed on, kept aside with the reason and retried with
//! exponential backoff, so that one bad event never stalls the plugin's later events.
//!
//! An event is **parked** when the plugin that governs it ran on it and failed (a trap, fuel or
//! time run out, memory, output too large, invalid lines, the plugin's own error: the failures
//! the circuit breaker counts). Held events that say nothing about the event itself (the plugin
//! is killed or not deployed, its breaker is open, a refund waits for its original) are not
//! parked: they are retried on every run as before.
//!
//! A parked event is retried by the settle job when one of these holds:
//! - its backoff has passed: after the `n`-th consecutive failure of the same plugin version
//!   the next retry is [`RETRY_BASE_DELAY_MS`] × 2ⁿ⁻¹, at most [`RETRY_MAX_DELAY_MS`]; after
//!   [`RETRY_MAX_FAILURES`] failures it is no longer retried by itself and waits for an admin;
//! - the plugin that failed on it is now deployed at another version (a fix is retried at once,
//!   and its failures count from one again);
//! - an admin released it ([`release`]): its backoff starts over and it is retried on the next
//!   run.
//!
//! Retries run after the run's other events and under the breaker's retry rule
//! (`coalition_runtime::breaker`): never while the breaker is open, never counted against the
//! plugin, and a failed retry hands a half-open breaker's probe back instead of reopening it.
//! The rule is explained in docs/SETTLEMENT.md ("Parked events").

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::Backend;

/// First retry after a failure: one run of the settle job later (its default interval), which
/// catches a one-off fault such as a deadline missed on a loaded node without waiting long.
pub const RETRY_BASE_DELAY_MS: i64 = 60_000;
/// Longest wait between two retries: a stuck event is still tried four times a day, and a
/// parked backlog costs at most one call per event every six hours.
pub const RETRY_MAX_DELAY_MS: i64 = 6 * 3_600_000;
/// Consecutive failures of one plugin version after which the event waits for an admin (or a
/// new version). With the delays above the retries span about 20 hours, so a fault tied to the
/// time of day or to a partner's nightly outage is retried across it; past that only a fix
/// helps, and retrying blindly would only add load and noise.
pub const RETRY_MAX_FAILURES: i64 = 12;
/// Most events one admin retry releases (each gets its own audit entry, written in one short
/// transaction); release the rest with another request.
pub const MAX_RELEASE_BATCH: i64 = 500;
/// Most parked events one listing page returns.
pub const MAX_PARKED_PAGE: i64 = 200;
/// Parked events per listing page by default.
pub const DEFAULT_PARKED_PAGE: i64 = 50;
/// Longest failure message kept (plugin errors can be long; the rest is cut).
pub const MAX_PROBLEM_MESSAGE_LEN: usize = 500;

/// When to retry after the `failures`-th consecutive failure; `None`: out of retries, the event
/// waits for an admin.
pub fn next_retry_at(now_ms: i64, failures: i64) -> Option<i64> {
    if failures >= RETRY_MAX_FAILURES {
        return None;
    }
    let doublings = u32::try_from(failures.saturating_sub(1).max(0)).unwrap_or(u32::MAX);
    let delay = 1_i64
        .checked_shl(doublings)
        .filter(|factor| *factor > 0)
        .and_then(|factor| RETRY_BASE_DELAY_MS.checked_mul(factor))
        .map_or(RETRY_MAX_DELAY_MS, |delay| delay.min(RETRY_MAX_DELAY_MS));
    Some(now_ms.saturating_add(delay))
}

/// Why a plugin failed on an event: what parks it.
#[derive(Debug, Clone)]
pub struct Fault {
    /// The plugin that failed.
    pub plugin: String,
    /// Its version.
    pub version: String,
    /// The runtime's stable code (`trap_unreachable`, `fuel_exhausted`, `invariant_violation`, …).
    pub code: String,
    /// The failure as the runtime reported it.
    pub message: String,
}

/// The parked state of an event, as the job reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Parked {
    /// The event.
    pub event_id: String,
    /// The plugin that failed on it.
    pub failed_plugin: String,
    /// Its version.
    pub failed_version: String,
    /// Consecutive failures of that version.
    pub failures: i64,
    /// When the job retries it; `None`: waits for an admin.
    pub next_retry_at: Option<i64>,
}

/// Parked events after `after` (event id order), up to `limit`.
pub async fn batch(pool: &sqlx::AnyPool, after: &str, limit: i64) -> DomainResult<Vec<Parked>> {
    Ok(sqlx::query_as(
        "SELECT p.event_id, p.failed_plugin, p.failed_version, p.failures, p.next_retry_at
         FROM settle_parked p JOIN settle_events e ON e.id = p.event_id
         WHERE p.event_id > $1 AND e.status = 'held'
         ORDER BY p.event_id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Records that `fault` happened on the event, in the caller's transaction: parks it (first
/// failure) or moves its next retry on. `previous` is the parked state the job read; if another
/// node changed it meanwhile nothing is written (its update stands). Returns whether the event
/// is (still) parked by this call.
pub async fn record_failure(
    conn: &mut AnyConnection,
    event_id: &str,
    fault: &Fault,
    previous: Option<&Parked>,
    now_ms: i64,
) -> DomainResult<bool> {
    let message = clip(&fault.message, MAX_PROBLEM_MESSAGE_LEN);
    match previous {
        None => {
            let next = next_retry_at(now_ms, 1);
            let inserted = sqlx::query(
                "INSERT INTO settle_parked (event_id, failed_plugin, failed_version, problem_code,
                    problem_message, failures, parked_at, last_failed_at, next_retry_at)
                 VALUES ($1, $2, $3, $4, $5, 1, $6, $6, $7)
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(event_id)
            .bind(&fault.plugin)
            .bind(&fault.version)
            .bind(&fault.code)
            .bind(message)
            .bind(now_ms)
            .bind(next)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            Ok(inserted == 1)
        }
        Some(previous) => {
            // Another version (a fix that did not fix it) starts the count over.
            let same =
                previous.failed_plugin == fault.plugin && previous.failed_version == fault.version;
            let failures = if same {
                previous.failures.saturating_add(1)
            } else {
                1
            };
            let updated = sqlx::query(
                "UPDATE settle_parked SET failed_plugin = $2, failed_version = $3,
                    problem_code = $4, problem_message = $5, failures = $6, last_failed_at = $7,
                    next_retry_at = $8
                 WHERE event_id = $1 AND failures = $9 AND failed_plugin = $10
                   AND failed_version = $11",
            )
            .bind(event_id)
            .bind(&fault.plugin)
            .bind(&fault.version)
            .bind(&fault.code)
            .bind(message)
            .bind(failures)
            .bind(now_ms)
            .bind(next_retry_at(now_ms, failures))
            .bind(previous.failures)
            .bind(&previous.failed_plugin)
            .bind(&previous.failed_version)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            Ok(updated == 1)
        }
    }
}

/// Forgets an event's parked state (it settled), in the caller's transaction.
pub async fn clear(conn: &mut AnyConnection, event_id: &str) -> DomainResult<()> {
    sqlx::query("DELETE FROM settle_parked WHERE event_id = $1")
        .bind(event_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// What admins (and brands, for their own events) see.

/// A parked settle event: why its plugin failed on it and when it is retried.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ParkedEvent {
    /// The event.
    pub event_id: String,
    /// Its kind (`perk-redeemed`, `points-issued`, …).
    pub kind: String,
    /// Where it happened.
    pub brand_id: String,
    /// Who pays for it.
    pub funding_brand: String,
    /// Who handed it over.
    pub honouring_brand: String,
    /// Perk id or coupon template; for a refund, the kind it reverses.
    pub reference: Option<String>,
    /// Points.
    pub points: i64,
    /// Value, cents.
    pub value_cents: i64,
    /// When it happened, Unix ms.
    pub occurred_at_ms: i64,
    /// The plugin that failed on it.
    pub plugin: String,
    /// That plugin's version.
    pub version: String,
    /// The runtime's stable code for the failure: `trap_unreachable` (a panic), `trap`,
    /// `trap_stack_overflow`, `fuel_exhausted`, `deadline`, `memory_limit`, `output_too_large`,
    /// `invariant_violation` (invalid lines) or `hook_error` (the plugin's own error).
    pub problem_code: String,
    /// The failure as the runtime reported it (at most 500 bytes).
    pub problem_message: String,
    /// Consecutive failures of this plugin version on the event; at `max_failures` it waits for
    /// an admin.
    pub failures: i64,
    /// Failures after which the job stops retrying by itself.
    pub max_failures: i64,
    /// Every settle attempt of the event so far (as in `GET /settlement/events`).
    pub attempts: i64,
    /// Why the event is held now (the last attempt's reason).
    pub held_reason: Option<String>,
    /// When it was first parked, Unix ms.
    pub parked_at_ms: i64,
    /// When its plugin last failed on it, Unix ms.
    pub last_failed_at_ms: i64,
    /// When the job retries it next, Unix ms; `null` when it waits for an admin. A new version
    /// of the plugin is tried at once whatever this says.
    pub next_retry_at_ms: Option<i64>,
    /// True when it is out of automatic retries: retry it with `POST /settlement/parked/retry`
    /// after a fix (or deploy a fixed version).
    pub waits_for_admin: bool,
    /// Who last released it for a retry (`admin:<key id>`), if anyone.
    pub released_by: Option<String>,
    /// When, Unix ms.
    pub released_at_ms: Option<i64>,
    /// Why, as they said.
    pub release_reason: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ParkedRow {
    event_id: String,
    kind: String,
    brand_id: String,
    funding_brand: String,
    honouring_brand: String,
    reference: Option<String>,
    points: i64,
    value_cents: i64,
    occurred_at: i64,
    failed_plugin: String,
    failed_version: String,
    problem_code: String,
    problem_message: String,
    failures: i64,
    attempts: i64,
    held_reason: Option<String>,
    parked_at: i64,
    last_failed_at: i64,
    next_retry_at: Option<i64>,
    released_by: Option<String>,
    released_at: Option<i64>,
    release_reason: Option<String>,
}

impl From<ParkedRow> for ParkedEvent {
    fn from(r: ParkedRow) -> Self {
        ParkedEvent {
            event_id: r.event_id,
            kind: r.kind,
            brand_id: r.brand_id,
            funding_brand: r.funding_brand,
            honouring_brand: r.honouring_brand,
            reference: r.reference,
            points: r.points,
            value_cents: r.value_cents,
            occurred_at_ms: r.occurred_at,
            plugin: r.failed_plugin,
            version: r.failed_version,
            problem_code: r.problem_code,
            problem_message: r.problem_message,
            failures: r.failures,
            max_failures: RETRY_MAX_FAILURES,
            attempts: r.attempts,
            held_reason: r.held_reason,
            parked_at_ms: r.parked_at,
            last_failed_at_ms: r.last_failed_at,
            waits_for_admin: r.next_retry_at.is_none(),
            next_retry_at_ms: r.next_retry_at,
            released_by: r.released_by,
            released_at_ms: r.released_at,
            release_reason: r.release_reason,
        }
    }
}

const PARKED_COLUMNS: &str = "p.event_id, e.kind, e.brand_id, e.funding_brand, \
    e.honouring_brand, e.reference, e.points, e.value_cents, e.occurred_at, p.failed_plugin, \
    p.failed_version, p.problem_code, p.problem_message, p.failures, e.attempts, e.held_reason, \
    p.parked_at, p.last_failed_at, p.next_retry_at, p.released_by, p.released_at, \
    p.release_reason";

/// Which parked events to list.
#[derive(Debug, Clone, Default)]
pub struct ParkedFilter {
    /// Only those this brand is a party to (where it happened, who funds it or who honours it).
    pub party: Option<String>,
    /// Only those this plugin failed on.
    pub plugin: Option<String>,
    /// Only those out of automatic retries.
    pub waiting_for_admin: bool,
}

/// A page of parked events.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ParkedPage {
    /// Parked events, oldest first (by event id).
    pub items: Vec<ParkedEvent>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Parked events matching `filter` after the event id `cursor` ("" for the first page).
pub async fn list(
    pool: &sqlx::AnyPool,
    filter: &ParkedFilter,
    cursor: &str,
    limit: i64,
) -> DomainResult<ParkedPage> {
    if !(1..=MAX_PARKED_PAGE).contains(&limit) {
        return Err(DomainError::bad_request(
            "invalid_query",
            format!("limit must be 1 to {MAX_PARKED_PAGE}"),
        ));
    }
    let party = filter.party.as_deref().unwrap_or("");
    let plugin = filter.plugin.as_deref().unwrap_or("");
    // One extra row tells whether there is a next page.
    let rows: Vec<ParkedRow> = sqlx::query_as(&format!(
        "SELECT {PARKED_COLUMNS}
         FROM settle_parked p JOIN settle_events e ON e.id = p.event_id
         WHERE e.status = 'held' AND p.event_id > $1
           AND ($2 = '' OR e.brand_id = $2 OR e.funding_brand = $2 OR e.honouring_brand = $2)
           AND ($3 = '' OR p.failed_plugin = $3)
           AND ($4 = 0 OR p.next_retry_at IS NULL)
         ORDER BY p.event_id LIMIT $5"
    ))
    .bind(cursor)
    .bind(party)
    .bind(plugin)
    .bind(i64::from(filter.waiting_for_admin))
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let mut items: Vec<ParkedEvent> = rows.into_iter().map(ParkedEvent::from).collect();
    let next_cursor = if i64::try_from(items.len()).unwrap_or(i64::MAX) > limit {
        items.truncate(usize::try_from(limit).unwrap_or(0));
        items.last().map(|e| e.event_id.clone())
    } else {
        None
    };
    Ok(ParkedPage { items, next_cursor })
}

/// One parked event, if it is parked.
pub async fn get(pool: &sqlx::AnyPool, event_id: &str) -> DomainResult<Option<ParkedEvent>> {
    let row: Option<ParkedRow> = sqlx::query_as(&format!(
        "SELECT {PARKED_COLUMNS}
         FROM settle_parked p JOIN settle_events e ON e.id = p.event_id
         WHERE e.status = 'held' AND p.event_id = $1"
    ))
    .bind(event_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(ParkedEvent::from))
}

// ---------------------------------------------------------------------------------------------
// An admin's retry.

/// Body of `POST /settlement/parked/retry`: which parked events to retry, and why. At least one
/// of `event_ids` and `plugin` is given; with both, the events must also be that plugin's.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryParked {
    /// These parked events (1–500 ids).
    #[serde(default)]
    #[schema(min_items = 1, max_items = 500)]
    pub event_ids: Option<Vec<String>>,
    /// Every event this plugin failed on (up to 500 per request, oldest first; `more` says
    /// whether others are left).
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9-]{1,64}$")]
    pub plugin: Option<String>,
    /// With `plugin` alone: continue after this event id (the last of the previous request's
    /// `released`).
    #[serde(default)]
    pub after: Option<String>,
    /// Why (kept in the audit log), 1–200 bytes: typically the fix, e.g. "settle-gap 1.0.1
    /// deployed"; not blank.
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub reason: String,
}

/// What an admin's retry released.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RetryReport {
    /// The events released, oldest first: each is due at once, its backoff starts over, and the
    /// next settlement run (`POST /settlement/run` or the periodic job) retries it.
    pub released: Vec<String>,
    /// True when more of the plugin's parked events are left: send the request again with
    /// `after` = the last id of `released` (and a new idempotency key).
    pub more: bool,
    /// When they are due, Unix ms (now).
    pub retry_at_ms: i64,
}

/// Releases parked events for a retry and appends one `settlement.retry` audit entry per event,
/// in the caller's transaction.
pub async fn release(
    conn: &mut AnyConnection,
    backend: Backend,
    req: &RetryParked,
    actor: &str,
    now_ms: i64,
) -> DomainResult<RetryReport> {
    crate::ledger::validate_reason(&req.reason, true)?;
    let ids = req.event_ids.as_deref();
    if ids.is_none() && req.plugin.is_none() {
        return Err(DomainError::validation(
            "name the events to retry: event_ids, plugin, or both",
        ));
    }
    if let Some(ids) = ids {
        let max = usize::try_from(MAX_RELEASE_BATCH).unwrap_or(usize::MAX);
        if ids.is_empty() || ids.len() > max {
            return Err(DomainError::validation(format!(
                "event_ids lists 1 to {MAX_RELEASE_BATCH} ids"
            )));
        }
        for (i, id) in ids.iter().enumerate() {
            crate::foundation::ids::check_path_id("event", id).map_err(|_| {
                DomainError::validation(format!("event_ids[{i}] is not an event id"))
            })?;
        }
    }
    if let Some(after) = &req.after {
        if ids.is_some() {
            return Err(DomainError::validation(
                "after continues a plugin's retry; it does not go with event_ids",
            ));
        }
        crate::foundation::ids::check_path_id("event", after)
            .map_err(|_| DomainError::validation("after is not an event id"))?;
    }
    if let Some(plugin) = &req.plugin {
        let well_formed = !plugin.is_empty()
            && plugin.len() <= 64
            && plugin
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !well_formed {
            return Err(DomainError::validation("plugin is not a plugin name"));
        }
    }

    // The candidates, oldest first.
    let mut selected: Vec<Parked> = Vec::new();
    let mut more = false;
    match ids {
        Some(ids) => {
            let mut missing = Vec::new();
            for id in ids {
                let row: Option<Parked> = sqlx::query_as(
                    "SELECT p.event_id, p.failed_plugin, p.failed_version, p.failures,
                            p.next_retry_at
                     FROM settle_parked p JOIN settle_events e ON e.id = p.event_id
                     WHERE p.event_id = $1 AND e.status = 'held'",
                )
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
                match row {
                    Some(row) if req.plugin.as_deref().is_none_or(|p| p == row.failed_plugin) => {
                        if !selected.iter().any(|s| s.event_id == row.event_id) {
                            selected.push(row);
                        }
                    }
                    _ => missing.push(id.clone()),
                }
            }
            if !missing.is_empty() {
                return Err(DomainError::unprocessable(
                    "settle_event_not_parked",
                    format!(
                        "{} of the events are not parked{}: nothing was released",
                        missing.len(),
                        req.plugin
                            .as_deref()
                            .map(|p| format!(" by plugin {p}"))
                            .unwrap_or_default()
                    ),
                )
                .with_extra(serde_json::json!({ "event_ids": missing })));
            }
            selected.sort_by(|a, b| a.event_id.cmp(&b.event_id));
        }
        None => {
            let plugin = req.plugin.as_deref().unwrap_or_default();
            selected = sqlx::query_as(
                "SELECT p.event_id, p.failed_plugin, p.failed_version, p.failures,
                        p.next_retry_at
                 FROM settle_parked p JOIN settle_events e ON e.id = p.event_id
                 WHERE p.failed_plugin = $1 AND e.status = 'held' AND p.event_id > $2
                 ORDER BY p.event_id LIMIT $3",
            )
            .bind(plugin)
            .bind(req.after.as_deref().unwrap_or(""))
            .bind(MAX_RELEASE_BATCH + 1)
            .fetch_all(&mut *conn)
            .await?;
            if i64::try_from(selected.len()).unwrap_or(i64::MAX) > MAX_RELEASE_BATCH {
                selected.truncate(usize::try_from(MAX_RELEASE_BATCH).unwrap_or(0));
                more = true;
            }
        }
    }

    for parked in &selected {
        sqlx::query(
            "UPDATE settle_parked SET failures = 0, next_retry_at = $2, released_by = $3,
                released_at = $2, release_reason = $4
             WHERE event_id = $1",
        )
        .bind(&parked.event_id)
        .bind(now_ms)
        .bind(actor)
        .bind(&req.reason)
        .execute(&mut *conn)
        .await?;
        crate::ledger::audit::append(
            conn,
            backend,
            &crate::ledger::audit::NewEntry {
                actor,
                action: "settlement.retry",
                subject_kind: "settle_event",
                subject_id: &parked.event_id,
                reason: &req.reason,
                details: serde_json::json!({
                    "plugin": parked.failed_plugin,
                    "version": parked.failed_version,
                    "failures": parked.failures,
                    "next_retry_at": parked.next_retry_at,
                }),
            },
            now_ms,
        )
        .await?;
    }
    Ok(RetryReport {
        released: selected.into_iter().map(|p| p.event_id).collect(),
        more,
        retry_at_ms: now_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap_then_waits_for_an_admin() {
        let now = 1_000;
        assert_eq!(next_retry_at(now, 1), Some(now + RETRY_BASE_DELAY_MS));
        assert_eq!(next_retry_at(now, 2), Some(now + 2 * RETRY_BASE_DELAY_MS));
        assert_eq!(next_retry_at(now, 3), Some(now + 4 * RETRY_BASE_DELAY_MS));
        assert_eq!(
            next_retry_at(now, RETRY_MAX_FAILURES - 1),
            Some(now + RETRY_MAX_DELAY_MS)
        );
        assert_eq!(next_retry_at(now, RETRY_MAX_FAILURES), None);
        assert_eq!(next_retry_at(now, i64::MAX), None);
        // Every delay is within the bounds, and they never shrink.
        let mut previous = 0;
        for failures in 1..RETRY_MAX_FAILURES {
            let delay = next_retry_at(0, failures).expect("retried");
            assert!((RETRY_BASE_DELAY_MS..=RETRY_MAX_DELAY_MS).contains(&delay));
            assert!(delay >= previous);
            previous = delay;
        }
    }

    #[test]
    fn the_retries_span_about_a_day() {
        let total: i64 = (1..RETRY_MAX_FAILURES)
            .map(|f| next_retry_at(0, f).expect("retried"))
            .sum();
        assert!(
            (18 * 3_600_000..=24 * 3_600_000).contains(&total),
            "{total}"
        );
    }
}
