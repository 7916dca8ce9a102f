//! Reconciliation of a period: proves the settlement from what is stored.
//!
//! Checks, each reported with pass/fail and the offending ids:
//! - `events_settled_once`: every event of the month is settled, has exactly one run, and each
//!   run's lines (count and sum) are exactly the lines stored for it;
//! - `lines_balance`: what all parties pay equals what all receive, statement nets sum to zero
//!   and every party's net equals the sum of its bilateral netting positions;
//! - `statements_match_lines`: a closed period's stored statements, detail, netting and totals
//!   equal a fresh aggregation of its lines (and of the ledger's points);
//! - `determinism`: every plugin-made line replays from its receipt's stored input bit for bit
//!   (same output hash, same lines), and every platform-made line recomputes from the stored
//!   event and rates;
//! - `ledger_points`: points issued, redeemed and reversed according to the settle events of the
//!   month agree with the ledger's postings (and a closed statement's figures, expiry included,
//!   with the ledger).

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use coalition_runtime::model::HookOutput;
use coalition_runtime::{LoadedPlugin, Manifest};
use serde::Serialize;
use utoipa::ToSchema;

use super::job::{self, EventRow, ReversalParams};
use super::periods::{self, Period};
use super::rules::{self, Line, Params};
use crate::foundation::error::{DomainError, DomainResult};
use crate::workflows::Services;

/// Most offending ids a check reports (the count says how many there were).
pub const MAX_OFFENDERS: usize = 100;
/// Attempts at a replay that fails (a missed deadline is not a different answer).
const REPLAY_ATTEMPTS: usize = 3;
/// Runs read per page by the determinism check.
const RUN_PAGE: i64 = 500;

/// One check's outcome.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct Check {
    /// Stable name.
    pub name: String,
    /// Passed.
    pub ok: bool,
    /// What was checked, or what is wrong.
    pub detail: String,
    /// How many offenders there were.
    pub offender_count: i64,
    /// The offending ids (events, lines, parties), at most [`MAX_OFFENDERS`].
    pub offenders: Vec<String>,
}

impl Check {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ok: true,
            detail: String::new(),
            offender_count: 0,
            offenders: Vec::new(),
        }
    }

    fn offend(&mut self, id: impl Into<String>) {
        self.ok = false;
        self.offender_count += 1;
        if self.offenders.len() < MAX_OFFENDERS {
            self.offenders.push(id.into());
        }
    }
}

/// The reconciliation of a period.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct Reconciliation {
    /// Period.
    pub period_id: String,
    /// Its status when checked.
    pub status: String,
    /// All checks passed.
    pub ok: bool,
    /// The checks.
    pub checks: Vec<Check>,
    /// When, Unix ms.
    pub checked_at: i64,
}

/// Runs every check on a period.
pub async fn reconcile(state: &Services, period_id: &str) -> DomainResult<Reconciliation> {
    let period = periods::get(state.store.read(), period_id).await?;
    let pool = state.store.read();
    let checks = vec![
        settled_once(pool, &period).await?,
        balance(state, &period).await?,
        statements_match(pool, &period).await?,
        determinism(state, &period).await?,
        ledger_points(pool, &period).await?,
    ];
    Ok(Reconciliation {
        period_id: period.id.clone(),
        status: period.status.clone(),
        ok: checks.iter().all(|c| c.ok),
        checks,
        checked_at: state.now_ms(),
    })
}

async fn ids(pool: &sqlx::AnyPool, sql: &str, period: &Period) -> DomainResult<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(sql)
        .bind(&period.id)
        .bind(period.start_ms)
        .bind(period.end_ms)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

async fn settled_once(pool: &sqlx::AnyPool, period: &Period) -> DomainResult<Check> {
    let mut check = Check::new("events_settled_once");
    // $1 period, $2 start, $3 end in every query (unused ones are compared trivially).
    let queries = [
        (
            "unsettled",
            "SELECT id FROM settle_events WHERE status <> 'settled'
               AND occurred_at >= $2 AND occurred_at < $3 AND $1 = $1 ORDER BY id",
        ),
        (
            "settled without a run",
            "SELECT e.id FROM settle_events e LEFT JOIN settlement_runs r ON r.event_id = e.id
             WHERE e.status = 'settled' AND r.event_id IS NULL
               AND e.occurred_at >= $2 AND e.occurred_at < $3 AND $1 = $1 ORDER BY e.id",
        ),
        (
            "lines differ from the run",
            "SELECT r.event_id FROM settlement_runs r LEFT JOIN (
                 SELECT event_id, COUNT(*) AS n, SUM(amount_cents) AS s FROM settlement_lines
                 WHERE period_id = $1 GROUP BY event_id) l ON l.event_id = r.event_id
             WHERE r.period_id = $1 AND $2 = $2 AND $3 = $3
               AND (COALESCE(l.n, 0) <> r.line_count OR COALESCE(l.s, 0) <> r.total_cents)
             ORDER BY r.event_id",
        ),
        (
            "lines without a run",
            "SELECT l.id FROM settlement_lines l LEFT JOIN settlement_runs r
                 ON r.event_id = l.event_id AND r.period_id = l.period_id
             WHERE l.period_id = $1 AND r.event_id IS NULL AND $2 = $2 AND $3 = $3 ORDER BY l.id",
        ),
    ];
    let mut problems = Vec::new();
    for (what, sql) in queries {
        let found = ids(pool, sql, period).await?;
        if !found.is_empty() {
            problems.push(format!("{} {what}", found.len()));
        }
        for id in found {
            check.offend(id);
        }
    }
    check.detail = if problems.is_empty() {
        "every event of the month is settled once and its lines match its run".into()
    } else {
        problems.join("; ")
    };
    Ok(check)
}

async fn balance(state: &Services, period: &Period) -> DomainResult<Check> {
    let mut check = Check::new("lines_balance");
    let (statements, netting) = periods::statements(state, period, None).await?;
    let paid: i64 = statements.iter().map(|s| s.gross_owed_cents).sum();
    let received: i64 = statements.iter().map(|s| s.gross_due_cents).sum();
    let nets: i64 = statements.iter().map(|s| s.net_cents).sum();
    if paid != received || nets != 0 {
        check.offend(period.id.clone());
    }
    let mut positions: BTreeMap<&str, i64> = BTreeMap::new();
    for n in &netting {
        if n.net_cents != n.a_owes_b_cents - n.b_owes_a_cents {
            check.offend(format!("{}/{}", n.party_a, n.party_b));
        }
        *positions.entry(&n.party_a).or_default() -= n.net_cents;
        *positions.entry(&n.party_b).or_default() += n.net_cents;
    }
    for s in &statements {
        if s.net_cents != s.gross_due_cents - s.gross_owed_cents
            || positions.get(s.party.as_str()).copied().unwrap_or(0) != s.net_cents
        {
            check.offend(s.party.clone());
        }
    }
    check.detail = format!(
        "parties pay {paid} cents and receive {received}; nets sum to {nets}; {} pairs netted",
        netting.len()
    );
    Ok(check)
}

async fn statements_match(pool: &sqlx::AnyPool, period: &Period) -> DomainResult<Check> {
    let mut check = Check::new("statements_match_lines");
    if period.status != "closed" {
        check.detail = format!("period is {}: statements are live drafts", period.status);
        return Ok(check);
    }
    let fresh = periods::compute(pool, &period.id, period.start_ms, period.end_ms).await?;
    let mut stored = periods::stored(pool, &period.id, None).await?;
    for s in stored.values_mut() {
        s.is_final = false;
    }
    for (party, s) in &fresh.statements {
        if stored.get(party) != Some(s) {
            check.offend(party.clone());
        }
    }
    for party in stored.keys() {
        if !fresh.statements.contains_key(party) {
            check.offend(party.clone());
        }
    }
    if periods::stored_netting(pool, &period.id).await? != fresh.netting {
        check.offend(format!("{}:netting", period.id));
    }
    if fresh.line_count != period.line_count || fresh.total_cents != period.total_cents {
        check.offend(format!("{}:totals", period.id));
    }
    check.detail = format!(
        "{} statements and {} netting pairs against {} lines ({} cents); frozen at close: {} lines \
         ({} cents)",
        fresh.statements.len(),
        fresh.netting.len(),
        fresh.line_count,
        fresh.total_cents,
        period.line_count,
        period.total_cents
    );
    Ok(check)
}

/// A stored line as the determinism check compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    id: String,
    payer: String,
    payee: String,
    amount_cents: i64,
    reason: String,
    category: String,
}

type RunRow = (
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    String,
);

async fn determinism(state: &Services, period: &Period) -> DomainResult<Check> {
    let mut check = Check::new("determinism");
    let pool = state.store.read();
    let mut plugins: HashMap<(String, String), Option<LoadedPlugin>> = HashMap::new();
    let (mut replayed, mut recomputed) = (0_i64, 0_i64);
    let mut after = String::new();
    loop {
        let runs: Vec<RunRow> = sqlx::query_as(
            "SELECT event_id, rule, receipt_id, params, original_event_id, period_id
             FROM settlement_runs WHERE period_id = $1 AND event_id > $2
             ORDER BY event_id LIMIT $3",
        )
        .bind(&period.id)
        .bind(&after)
        .bind(RUN_PAGE)
        .fetch_all(pool)
        .await?;
        let Some(last) = runs.last() else {
            break;
        };
        after = last.0.clone();
        for (event_id, rule, receipt_id, params, original, _) in runs {
            let rows: Vec<(String, String, String, i64, String, String)> = sqlx::query_as(
                "SELECT id, payer, payee, amount_cents, reason, category FROM settlement_lines
                 WHERE event_id = $1 ORDER BY line_no",
            )
            .bind(&event_id)
            .fetch_all(pool)
            .await?;
            let stored: Vec<Stored> = rows
                .into_iter()
                .map(
                    |(id, payer, payee, amount_cents, reason, category)| Stored {
                        id,
                        payer,
                        payee,
                        amount_cents,
                        reason,
                        category,
                    },
                )
                .collect();
            let Some(event) = job::load_event(pool, &event_id).await? else {
                check.offend(event_id);
                continue;
            };
            let expected = if rule.starts_with("platform:") {
                recomputed += 1;
                platform_expected(pool, &event, &rule, &params, original.as_deref()).await?
            } else {
                replayed += 1;
                match (receipt_id, original.as_deref()) {
                    (Some(receipt_id), _) => {
                        plugin_expected(state, &mut plugins, &event, &receipt_id).await?
                    }
                    // A refund of an event that moved no money moves none either (no call was
                    // made, so there is no receipt): expected only when the original has no lines.
                    (None, Some(original)) => {
                        let (lines,): (i64,) = sqlx::query_as(
                            "SELECT CAST(COUNT(*) AS BIGINT) FROM settlement_lines
                             WHERE event_id = $1",
                        )
                        .bind(original)
                        .fetch_one(pool)
                        .await?;
                        (lines == 0).then(Vec::new)
                    }
                    (None, None) => None,
                }
            };
            match expected {
                Some(expected) => {
                    if expected.len() != stored.len() {
                        check.offend(event_id.clone());
                    }
                    for (i, s) in stored.iter().enumerate() {
                        let same = expected.get(i).is_some_and(|e| {
                            e.payer == s.payer
                                && e.payee == s.payee
                                && e.amount_cents == s.amount_cents
                                && e.reason == s.reason
                                && e.category == s.category
                        });
                        if !same {
                            check.offend(s.id.clone());
                        }
                    }
                }
                None => check.offend(event_id),
            }
        }
    }
    check.detail = format!(
        "{replayed} plugin settlements replayed from their receipts, {recomputed} platform \
         settlements recomputed"
    );
    Ok(check)
}

async fn platform_expected(
    pool: &sqlx::AnyPool,
    event: &EventRow,
    rule: &str,
    params: &str,
    original: Option<&str>,
) -> DomainResult<Option<Vec<Line>>> {
    let facts = event.facts()?;
    if rule == rules::platform_rule(&facts, true) {
        let Ok(p) = serde_json::from_str::<ReversalParams>(params) else {
            return Ok(None);
        };
        let Some(original) = original else {
            return Ok(None);
        };
        let Some(original_row) = job::load_event(pool, original).await? else {
            return Ok(None);
        };
        let lines = job::original_lines(pool, original).await?;
        return Ok(rules::reverse(
            &facts,
            &original_row.facts()?,
            &lines,
            p.before,
        ));
    }
    let Ok(p) = serde_json::from_str::<Params>(params) else {
        return Ok(None);
    };
    if rule != rules::platform_rule(&facts, false) {
        return Ok(None);
    }
    Ok(rules::platform_lines(&facts, &p))
}

/// Replays the receipt; `None` when the replay fails or its output hash differs.
async fn plugin_expected(
    state: &Services,
    cache: &mut HashMap<(String, String), Option<LoadedPlugin>>,
    event: &EventRow,
    receipt_id: &str,
) -> DomainResult<Option<Vec<Line>>> {
    let receipt = crate::plugins::receipts::load_for_replay(&state.store, receipt_id).await?;
    let key = (receipt.plugin.clone(), receipt.version.clone());
    if !cache.contains_key(&key) {
        let loaded = load_version(state, &receipt.plugin, &receipt.version).await?;
        cache.insert(key.clone(), loaded);
    }
    let Some(plugin) = cache.get(&key).cloned().flatten() else {
        return Ok(None);
    };
    let report = tokio::task::spawn_blocking(move || {
        // A replay that fails (rather than differs) may have been cut off by the wall-clock
        // backstop on a starved machine: try again before calling it an offender.
        let mut outcome = plugin.replay(&receipt);
        for _ in 1..REPLAY_ATTEMPTS {
            if outcome.is_ok() {
                break;
            }
            outcome = plugin.replay(&receipt);
        }
        outcome
    })
    .await
    .map_err(DomainError::internal)?;
    let report = match report {
        Ok(report) => report,
        Err(err) => {
            tracing::warn!(event = %event.id, error = %err, "replay failed");
            return Ok(None);
        }
    };
    let HookOutput::Settle(lines) = report.output else {
        return Ok(None);
    };
    if !report.matches {
        return Ok(None);
    }
    let kind = event.facts()?.kind;
    Ok(Some(
        lines
            .into_iter()
            .map(|l| Line {
                category: rules::plugin_category(kind, &l.payer, &l.payee, &l.reason),
                payer: l.payer,
                payee: l.payee,
                amount_cents: l.amount_cents,
                reason: l.reason,
                original_line_id: None,
            })
            .collect(),
    ))
}

/// The exact installed version, from the active set or (retired) from the stored component.
async fn load_version(
    state: &Services,
    name: &str,
    version: &str,
) -> DomainResult<Option<LoadedPlugin>> {
    if let Some(active) = state
        .plugins
        .active()
        .iter()
        .find(|p| p.plugin.name() == name && p.plugin.version() == version)
    {
        return Ok(Some(active.plugin.clone()));
    }
    let row: Option<(String, String, String)> = sqlx::query_as(
        "SELECT v.manifest, c.bytes_b64, v.component_sha256
         FROM plugin_versions v JOIN plugin_components c ON c.sha256 = v.component_sha256
         WHERE v.name = $1 AND v.version = $2",
    )
    .bind(name)
    .bind(version)
    .fetch_optional(state.store.read())
    .await?;
    let Some((manifest, b64, sha)) = row else {
        return Ok(None);
    };
    let runtime = state.plugins.runtime().clone();
    let loaded = tokio::task::spawn_blocking(move || -> anyhow::Result<LoadedPlugin> {
        let manifest = Manifest::parse(&manifest)?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64)?;
        Ok(runtime.load(&manifest, &bytes, Some(&sha))?)
    })
    .await
    .map_err(DomainError::internal)?;
    match loaded {
        Ok(plugin) => Ok(Some(plugin)),
        Err(err) => {
            tracing::warn!(plugin = name, version, error = %err, "cannot load for replay");
            Ok(None)
        }
    }
}

async fn ledger_points(pool: &sqlx::AnyPool, period: &Period) -> DomainResult<Check> {
    let mut check = Check::new("ledger_points");
    let ledger = periods::ledger_points(pool, period.start_ms, period.end_ms).await?;
    // Points paid for a perk are redeemed on the funding brand's account in the ledger, so
    // perk events (and their refunds) count for the funding brand.
    let rows: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(
        "SELECT kind, party, reference, CAST(SUM(points) AS BIGINT) FROM (
            SELECT kind, reference, points,
                   CASE WHEN kind = 'perk-redeemed'
                          OR (kind = 'refund' AND reference = 'perk-redeemed')
                        THEN funding_brand ELSE brand_id END AS party
            FROM settle_events
            WHERE occurred_at >= $1 AND occurred_at < $2
              AND (kind IN ('points-issued', 'points-redeemed', 'perk-redeemed')
                   OR (kind = 'refund'
                       AND reference IN ('points-issued', 'points-redeemed', 'perk-redeemed')))
         ) AS e
         GROUP BY kind, party, reference",
    )
    .bind(period.start_ms)
    .bind(period.end_ms)
    .fetch_all(pool)
    .await?;
    let mut events: BTreeMap<String, periods::PointsFigures> = BTreeMap::new();
    for (kind, brand, reference, points) in rows {
        let f = events.entry(brand).or_default();
        match (kind.as_str(), reference.as_deref()) {
            ("points-issued", _) => f.issued += points,
            ("points-redeemed" | "perk-redeemed", _) => f.redeemed += points,
            (_, Some("points-issued")) => f.issued_reversed += points,
            _ => f.redeemed_reversed += points,
        }
    }
    let mut brands: Vec<&String> = events.keys().chain(ledger.keys()).collect();
    brands.sort();
    brands.dedup();
    let (mut issued, mut redeemed, mut expired) = (0_i64, 0_i64, 0_i64);
    for brand in brands {
        let e = events.get(brand).copied().unwrap_or_default();
        let l = ledger.get(brand).copied().unwrap_or_default();
        issued += l.issued;
        redeemed += l.redeemed;
        expired += l.expired;
        if (e.issued, e.issued_reversed, e.redeemed, e.redeemed_reversed)
            != (l.issued, l.issued_reversed, l.redeemed, l.redeemed_reversed)
        {
            check.offend(brand.clone());
        }
    }
    if period.status == "closed" {
        for (party, s) in periods::stored(pool, &period.id, None).await? {
            if s.points != ledger.get(&party).copied().unwrap_or_default() {
                check.offend(format!("{party}:statement"));
            }
        }
    }
    check.detail = format!(
        "ledger: {issued} points issued, {redeemed} redeemed, {expired} expired in the month"
    );
    Ok(check)
}
