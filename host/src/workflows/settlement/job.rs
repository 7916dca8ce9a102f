//! The settle job: turns pending (and held) events into lines, each event in its own short
//! transaction.
//!
//! Which rule governs an event, in order:
//! 1. a refund that reverses a settled event follows the rule of that event: the same plugin
//!    (its deployed version) is asked again, or the platform lines are reversed proportionally;
//!    a refund whose original is not settled yet waits (held) until it is;
//! 2. an event naming a plugin (perks, coupons) is settled by that plugin, which must be deployed
//!    and implement `settle`;
//! 3. otherwise the brand's settle plugins, where "involves" always means the plugin's signed
//!    manifest names the brand (never what the component's `describe()` says):
//!    - if an admin set the brand's settle precedence ([`super::precedence`]), the listed
//!      plugins are asked in that order and the first that answers with lines governs;
//!    - otherwise only the brand's own plugins are asked (uploaded by the brand, or installed by
//!      the platform and naming it); one answering with lines governs, and two answering with
//!      lines hold the event until an admin sets the precedence. A partner's plugin that merely
//!      names the brand never settles the brand's own events without that precedence;
//! 4. otherwise the platform's default rules ([`super::rules`]).
//!
//! Fail closed: a plugin that traps, runs out of budget, proposes invalid lines or is not
//! deployed leaves its event `held` with the reason and nothing written. An event the plugin
//! ran on and failed is also **parked** ([`super::parking`]): it is retried with backoff, after
//! the run's other events and under the breaker's retry rule, so one bad event neither blocks
//! nor trips the breaker against the plugin's later events; a new version of the plugin is
//! tried on it at once. Other held events (the plugin is killed or not deployed, its breaker is
//! open, a refund waits for its original) are retried on every run. The hook runs outside
//! any transaction; the lines, the receipt, the run record and the event's status are written in
//! one transaction guarded by `status IN ('pending', 'held')`, so two nodes never settle an event
//! twice (and the run's primary key says so again).

use coalition_runtime::model::{SettleEvent, SettleKind};
use coalition_runtime::{CallContext, Decision, ErrorKind, PluginError, Receipt};
use serde::Serialize;
use utoipa::ToSchema;

use super::parking::{self, Fault, Parked};
use super::periods::{self, PeriodId};
use super::rules::{self, EventFacts, Line, OriginalLine};
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::new_id;
use crate::ledger::outbox::EventKind;
use crate::plugins::ActivePlugin;
use crate::workflows::Services;

/// Events fetched per batch; bounds memory whatever the backlog.
pub const SETTLE_BATCH: i64 = 200;
/// Longest held reason kept (plugin errors can be long; the rest is cut).
const MAX_HELD_REASON_LEN: usize = 500;
/// Actor of audit entries written by the job itself.
pub const JOB_ACTOR: &str = "system:settlement";

/// What a run did.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, ToSchema)]
pub struct RunReport {
    /// Events settled now.
    pub settled: i64,
    /// Of those, adjustments into a later period (their own or their original's period closed).
    pub adjustments: i64,
    /// Lines written.
    pub lines: i64,
    /// Events held (or still held) because their lines could not be produced.
    pub held: i64,
    /// Of those, events parked because their plugin failed on them (newly, or again on a
    /// retry); see `GET /settlement/parked`.
    pub parked: i64,
    /// Parked events retried in this run (settled or parked again).
    pub retried: i64,
    /// Parked events left alone in this run: not due yet, or their plugin's breaker was open.
    pub waiting: i64,
    /// Events left for the next run (another node settled them, or their period started closing).
    pub skipped: i64,
    /// True when the run stopped at its time budget with events left (run again).
    pub more: bool,
    /// When it ran, Unix ms.
    pub ran_at_ms: i64,
}

/// A settle event as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    /// Id.
    pub id: String,
    /// Kind, stored spelling.
    pub kind: String,
    /// Brand.
    pub brand_id: String,
    /// Funding brand.
    pub funding_brand: String,
    /// Honouring brand.
    pub honouring_brand: String,
    /// Reference.
    pub reference: Option<String>,
    /// Governing plugin, if named.
    pub plugin: Option<String>,
    /// Points.
    pub points: i64,
    /// Value, cents.
    pub value_cents: i64,
    /// Reversed event.
    pub reverses_event_id: Option<String>,
    /// For a refund: the reversed event's reference (the perk id or coupon template), which is
    /// what the settle hook sees as the refund's `reference`.
    pub original_reference: Option<String>,
    /// When, Unix ms.
    pub occurred_at: i64,
}

/// Columns of [`EventRow`].
pub const EVENT_COLUMNS: &str = "id, kind, brand_id, funding_brand, honouring_brand, reference, \
    plugin, points, value_cents, reverses_event_id, \
    (SELECT o.reference FROM settle_events o WHERE o.id = settle_events.reverses_event_id) \
    AS original_reference, occurred_at";

impl EventRow {
    /// The fields the rules read.
    pub fn facts(&self) -> DomainResult<EventFacts> {
        let kind = EventKind::parse(&self.kind).ok_or_else(|| {
            DomainError::internal(anyhow::anyhow!("settle event has kind {:?}", self.kind))
        })?;
        Ok(EventFacts {
            id: self.id.clone(),
            kind,
            brand: self.brand_id.clone(),
            funding_brand: self.funding_brand.clone(),
            honouring_brand: self.honouring_brand.clone(),
            reference: self.reference.clone(),
            points: self.points,
            value_cents: self.value_cents,
        })
    }

    /// The event as the settle hook sees it.
    pub fn wit_event(&self) -> DomainResult<SettleEvent> {
        let facts = self.facts()?;
        Ok(SettleEvent {
            event_id: self.id.clone(),
            kind: match facts.kind {
                EventKind::PointsIssued => SettleKind::PointsIssued,
                EventKind::PointsRedeemed => SettleKind::PointsRedeemed,
                EventKind::PerkRedeemed => SettleKind::PerkRedeemed,
                EventKind::CouponHonoured => SettleKind::CouponHonoured,
                EventKind::Refund => SettleKind::Refund,
                EventKind::StoredValueRedeemed => SettleKind::StoredValueRedeemed,
                EventKind::MembershipFee => SettleKind::MembershipFee,
            },
            brand: self.brand_id.clone(),
            funding_brand: self.funding_brand.clone(),
            honouring_brand: self.honouring_brand.clone(),
            // The outbox keeps the reversed kind in a refund's `reference`; the hook is told
            // what was reversed (the perk or template), as the WIT describes.
            reference: match facts.kind {
                EventKind::Refund => self
                    .original_reference
                    .clone()
                    .or_else(|| self.reference.clone()),
                _ => self.reference.clone(),
            },
            points: self.points,
            value_cents: self.value_cents,
            occurred_at_ms: self.occurred_at,
        })
    }
}

/// Loads one event.
pub async fn load_event(conn: &sqlx::AnyPool, id: &str) -> DomainResult<Option<EventRow>> {
    Ok(sqlx::query_as::<_, EventRow>(&format!(
        "SELECT {EVENT_COLUMNS} FROM settle_events WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// What the rules decided for one event.
enum Decided {
    Lines(Box<Settled>),
    Hold(Hold),
}

/// Why an event could not be settled now.
struct Hold {
    reason: String,
    /// The plugin ran on the event and failed: the event is parked.
    fault: Option<Fault>,
    /// A parked event's retry was not admitted (its plugin's breaker is open or probing):
    /// nothing happened, and it stays due.
    deferred: bool,
}

impl Hold {
    fn new(reason: impl Into<String>) -> Self {
        Hold {
            reason: reason.into(),
            fault: None,
            deferred: false,
        }
    }
}

impl From<String> for Decided {
    fn from(reason: String) -> Self {
        Decided::Hold(Hold::new(reason))
    }
}

/// Lines decided for an event, with what proves them.
struct Settled {
    rule: String,
    receipt: Option<(Receipt, String)>,
    params: String,
    lines: Vec<Line>,
    /// For refunds: the reversed event and the period its lines are in.
    original: Option<(String, String)>,
}

/// Settles every pending and held event (oldest first), then retries the parked events that
/// are due, and reports what happened.
pub async fn run(state: &Services, now_ms: i64) -> DomainResult<RunReport> {
    run_until(state, now_ms, None).await
}

/// Like [`run`], but starts no new event after `deadline` (requests must answer within their
/// timeout; the periodic job and the command line run to the end).
pub async fn run_until(
    state: &Services,
    now_ms: i64,
    deadline: Option<std::time::Instant>,
) -> DomainResult<RunReport> {
    let mut report = RunReport {
        ran_at_ms: now_ms,
        ..RunReport::default()
    };
    let out_of_time = || deadline.is_some_and(|d| std::time::Instant::now() >= d);

    // 1. Pending and held events that are not parked, oldest first: these get the breaker's
    // probe when it is half-open, never a parked event.
    let (mut after_at, mut after_id) = (i64::MIN, String::new());
    loop {
        let batch: Vec<EventRow> = sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM settle_events
             WHERE status IN ('pending', 'held')
               AND (occurred_at > $1 OR (occurred_at = $1 AND id > $2))
               AND NOT EXISTS (SELECT 1 FROM settle_parked p WHERE p.event_id = settle_events.id)
             ORDER BY occurred_at, id LIMIT $3"
        ))
        .bind(after_at)
        .bind(&after_id)
        .bind(SETTLE_BATCH)
        .fetch_all(state.store.read())
        .await?;
        let Some(last) = batch.last() else {
            break;
        };
        (after_at, after_id) = (last.occurred_at, last.id.clone());
        for event in batch {
            if out_of_time() {
                report.more = true;
                break;
            }
            attempt(state, &event, None, now_ms, &mut report).await?;
        }
        if report.more {
            break;
        }
    }

    // 2. Parked events whose retry is due (backoff passed, or a new version of the plugin that
    // failed on them is deployed), under the breaker's retry rule.
    let mut after = String::new();
    while !report.more {
        let batch = parking::batch(state.store.read(), &after, SETTLE_BATCH).await?;
        let Some(last) = batch.last() else {
            break;
        };
        after = last.event_id.clone();
        let active = state.plugins.active();
        for parked in batch {
            let redeployed = active.iter().any(|p| {
                p.plugin.name() == parked.failed_plugin
                    && p.plugin.version() != parked.failed_version
            });
            let due = parked.next_retry_at.is_some_and(|at| at <= now_ms);
            if !(due || redeployed) {
                report.waiting += 1;
                continue;
            }
            if out_of_time() {
                report.more = true;
                break;
            }
            // Settled or released meanwhile (another node): nothing to do.
            let Some(event) = load_event(state.store.read(), &parked.event_id).await? else {
                continue;
            };
            attempt(state, &event, Some(&parked), now_ms, &mut report).await?;
        }
    }

    if report.held > 0 {
        tracing::warn!(
            held = report.held,
            parked = report.parked,
            "settlement events held; see GET /settlement/events?status=held and \
             GET /settlement/parked"
        );
    }
    metrics::counter!("settlement_events_settled_total").increment(report.settled.unsigned_abs());
    metrics::counter!("settlement_events_held_total").increment(report.held.unsigned_abs());
    metrics::counter!("settlement_events_parked_total").increment(report.parked.unsigned_abs());
    Ok(report)
}

/// Tries to settle one event (`parked`: a retry of a parked event) and counts the outcome.
async fn attempt(
    state: &Services,
    event: &EventRow,
    parked: Option<&Parked>,
    now_ms: i64,
    report: &mut RunReport,
) -> DomainResult<()> {
    let decided = decide(state, event, parked.is_some()).await?;
    if matches!(&decided, Decided::Hold(hold) if hold.deferred) {
        report.waiting += 1;
        return Ok(());
    }
    if parked.is_some() {
        report.retried += 1;
    }
    match decided {
        Decided::Hold(hold) => {
            report.held += 1;
            if hold_event(state, event, &hold, parked, now_ms).await? {
                report.parked += 1;
            }
        }
        Decided::Lines(settled) => match write(state, event, *settled, now_ms).await? {
            Some((lines, adjustment)) => {
                report.settled += 1;
                report.lines += lines;
                report.adjustments += i64::from(adjustment);
            }
            None => report.skipped += 1,
        },
    }
    Ok(())
}

/// `retry`: the event is parked, so its plugin calls run under the breaker's retry rule.
async fn decide(state: &Services, event: &EventRow, retry: bool) -> DomainResult<Decided> {
    let facts = event.facts()?;
    let active = state.plugins.active();
    // A killed plugin settles nothing: events it would govern are held until it is resumed or
    // replaced, never handed to another rule.
    let killed = state.plugins.routing().killed.clone();
    let find = |name: &str| {
        active
            .iter()
            .find(|p| p.plugin.name() == name && !killed.contains(name))
            .filter(|p| p.plugin.implements(coalition_runtime::model::Hook::Settle))
            .cloned()
    };

    // 1. A refund follows the rule of the event it reverses.
    if facts.kind == EventKind::Refund {
        if let Some(original_id) = &event.reverses_event_id {
            let run: Option<(String, String, String)> = sqlx::query_as(
                "SELECT rule, period_id, params FROM settlement_runs WHERE event_id = $1",
            )
            .bind(original_id)
            .fetch_optional(state.store.read())
            .await?;
            let Some((rule, period_id, _)) = run else {
                return Ok(
                    format!("waiting for the reversed event {original_id} to settle").into(),
                );
            };
            let original = Some((original_id.clone(), period_id));
            // Nothing was paid for the original, so there is nothing to reverse (for example
            // honouring a coupon bought as a perk: the perk's own event carried the money).
            let (original_lines,): (i64,) = sqlx::query_as(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM settlement_lines WHERE event_id = $1",
            )
            .bind(original_id)
            .fetch_one(state.store.read())
            .await?;
            if original_lines == 0 {
                return Ok(Decided::Lines(Box::new(Settled {
                    rule,
                    receipt: None,
                    params: "{}".to_owned(),
                    lines: Vec::new(),
                    original,
                })));
            }
            if rule.starts_with("platform:") {
                return reversal(state, event, &facts, original_id, original).await;
            }
            let name = rule.split('@').next().unwrap_or_default();
            let Some(plugin) = find(name) else {
                return Ok(format!(
                    "the reversed event was settled by {rule}; plugin {name} is not deployed \
                     with a settle hook"
                )
                .into());
            };
            return Ok(match call(state, &plugin, event, retry).await? {
                Ok(mut settled) => {
                    settled.original = original;
                    Decided::Lines(Box::new(settled))
                }
                Err(hold) => Decided::Hold(hold),
            });
        }
    }

    // Stored value and membership fees are not cases of the 0.1.0 `settle-kind`. The own
    // settle plugins of either party (the brand holding the money or selling the card, and the
    // brand honouring it or owning the plan) that know the kind (built against 0.2.0) may
    // govern them, at most one answering with lines, as in rule 3; else the platform's rule
    // does. Their refunds follow, by rule 1.
    if matches!(
        facts.kind,
        EventKind::StoredValueRedeemed | EventKind::MembershipFee
    ) {
        let kind = event.wit_event()?.kind;
        let own: Vec<&ActivePlugin> = active
            .iter()
            .filter(|p| {
                p.plugin.implements(coalition_runtime::model::Hook::Settle)
                    && p.plugin.manifest().wit.knows_settle_kind(kind)
                    && (p.is_own_plugin_of(&event.funding_brand)
                        || p.is_own_plugin_of(&event.honouring_brand))
            })
            .collect();
        if let Some(plugin) = own.iter().find(|p| killed.contains(p.plugin.name())) {
            return Ok(format!(
                "plugin {} may govern this event but is killed",
                plugin.plugin.name()
            )
            .into());
        }
        let mut governing: Option<Settled> = None;
        for plugin in own {
            match call(state, plugin, event, retry).await? {
                Ok(settled) if !settled.lines.is_empty() => {
                    if let Some(first) = &governing {
                        return Ok(format!(
                            "plugins {} and {} both settle this {} event of {}",
                            first.rule,
                            settled.rule,
                            facts.kind.as_str(),
                            event.funding_brand
                        )
                        .into());
                    }
                    governing = Some(settled);
                }
                Ok(_) => {}
                Err(hold) => return Ok(Decided::Hold(hold)),
            }
        }
        return match governing {
            Some(settled) => Ok(Decided::Lines(Box::new(settled))),
            None => platform(state, &facts),
        };
    }

    // 2. The event names its plugin. A named plugin that is deployed without a settle hook
    // (coupon-logic applies coupons but settles nothing) leaves the event to rules 3 and 4.
    let deployed_without_settle = |name: &str| {
        active.iter().any(|p| {
            p.plugin.name() == name && !p.plugin.implements(coalition_runtime::model::Hook::Settle)
        })
    };
    if let Some(name) = event
        .plugin
        .as_ref()
        .filter(|name| !deployed_without_settle(name))
    {
        let Some(plugin) = find(name) else {
            return Ok(if killed.contains(name.as_str()) {
                format!("plugin {name} governs this event but is killed")
            } else {
                format!("plugin {name} governs this event but is not deployed with a settle hook")
            }
            .into());
        };
        return Ok(match call(state, &plugin, event, retry).await? {
            Ok(settled) => Decided::Lines(Box::new(settled)),
            Err(hold) => Decided::Hold(hold),
        });
    }

    // 3. The brand's settle plugins, by the rule in the module doc: an admin-set precedence,
    // else the brand's own plugins, of which at most one may answer with lines.
    let settles = |p: &&ActivePlugin| {
        p.plugin.implements(coalition_runtime::model::Hook::Settle) && p.involves(&event.brand_id)
    };
    let order: Vec<(String,)> = sqlx::query_as(
        "SELECT plugin_name FROM settle_precedence WHERE brand_id = $1 ORDER BY position",
    )
    .bind(&event.brand_id)
    .fetch_all(state.store.read())
    .await?;
    if !order.is_empty() {
        for (name,) in &order {
            if killed.contains(name.as_str()) {
                return Ok(format!(
                    "plugin {name} is in {}'s settle precedence but is killed",
                    event.brand_id
                )
                .into());
            }
            let Some(plugin) = active
                .iter()
                .filter(settles)
                .find(|p| p.plugin.name() == name)
            else {
                continue;
            };
            match call(state, plugin, event, retry).await? {
                Ok(settled) if !settled.lines.is_empty() => {
                    return Ok(Decided::Lines(Box::new(settled)))
                }
                Ok(_) => {}
                // It might have governed: fail closed rather than fall back to the platform rules.
                Err(hold) => return Ok(Decided::Hold(hold)),
            }
        }
    } else {
        let own: Vec<&ActivePlugin> = active
            .iter()
            .filter(settles)
            .filter(|p| p.is_own_plugin_of(&event.brand_id))
            .collect();
        if let Some(plugin) = own.iter().find(|p| killed.contains(p.plugin.name())) {
            return Ok(format!(
                "plugin {} may govern this event but is killed",
                plugin.plugin.name()
            )
            .into());
        }
        let mut governing: Option<Settled> = None;
        for plugin in own {
            match call(state, plugin, event, retry).await? {
                Ok(settled) if !settled.lines.is_empty() => {
                    if let Some(first) = &governing {
                        return Ok(format!(
                            "plugins {} and {} both settle this {} event; an admin sets which \
                             governs with PUT /settlement/precedence/{}",
                            first.rule, settled.rule, event.brand_id, event.brand_id
                        )
                        .into());
                    }
                    governing = Some(settled);
                }
                Ok(_) => {}
                Err(hold) => return Ok(Decided::Hold(hold)),
            }
        }
        if let Some(settled) = governing {
            return Ok(Decided::Lines(Box::new(settled)));
        }
    }

    // 4. The platform's default rules.
    platform(state, &facts)
}

/// An event under the platform's default rules.
fn platform(state: &Services, facts: &EventFacts) -> DomainResult<Decided> {
    let params = state.settings.settlement.params();
    let Some(lines) = rules::platform_lines(facts, &params) else {
        return Ok(String::from("amounts overflow the platform rules").into());
    };
    Ok(Decided::Lines(Box::new(Settled {
        rule: rules::platform_rule(facts, false).to_owned(),
        receipt: None,
        params: serde_json::to_string(&params).map_err(DomainError::internal)?,
        lines,
        original: None,
    })))
}

/// The stored lines of an event, in order.
pub async fn original_lines(
    pool: &sqlx::AnyPool,
    event_id: &str,
) -> DomainResult<Vec<OriginalLine>> {
    let rows: Vec<(String, String, String, i64, String)> = sqlx::query_as(
        "SELECT id, payer, payee, amount_cents, category FROM settlement_lines
         WHERE event_id = $1 ORDER BY line_no",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, payer, payee, amount_cents, category)| OriginalLine {
            id,
            payer,
            payee,
            amount_cents,
            category,
        })
        .collect())
}

/// Points (or cents, when the original moved no points) that earlier refunds of `original`
/// reversed: refunds ordered before this one by (occurred_at, id), whatever order they settle in.
pub async fn reversed_before(
    pool: &sqlx::AnyPool,
    original: &EventRow,
    refund: &EventRow,
) -> DomainResult<i64> {
    let (points, cents): (i64, i64) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(points), 0) AS BIGINT),
                CAST(COALESCE(SUM(value_cents), 0) AS BIGINT)
         FROM settle_events WHERE kind = 'refund' AND reverses_event_id = $1
           AND (occurred_at < $2 OR (occurred_at = $2 AND id < $3))",
    )
    .bind(&original.id)
    .bind(refund.occurred_at)
    .bind(&refund.id)
    .fetch_one(pool)
    .await?;
    Ok(if original.points > 0 { points } else { cents })
}

/// Parameters stored for a platform reversal.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ReversalParams {
    /// Points (or cents) of the original reversed by earlier refunds.
    pub before: i64,
}

async fn reversal(
    state: &Services,
    event: &EventRow,
    facts: &EventFacts,
    original_id: &str,
    original: Option<(String, String)>,
) -> DomainResult<Decided> {
    let pool = state.store.read();
    let Some(original_row) = load_event(pool, original_id).await? else {
        return Ok(format!("reversed event {original_id} not found").into());
    };
    let lines = original_lines(pool, original_id).await?;
    let before = reversed_before(pool, &original_row, event).await?;
    let Some(lines) = rules::reverse(facts, &original_row.facts()?, &lines, before) else {
        return Ok(String::from("amounts overflow the reversal").into());
    };
    Ok(Decided::Lines(Box::new(Settled {
        rule: rules::platform_rule(facts, true).to_owned(),
        receipt: None,
        params: serde_json::to_string(&ReversalParams { before }).map_err(DomainError::internal)?,
        lines,
        original,
    })))
}

/// Calls a plugin's settle hook off the async threads (`retry`: under the breaker's retry rule,
/// for a parked event). `Err(hold)`: hold the event, parked if the plugin failed on it.
async fn call(
    state: &Services,
    plugin: &ActivePlugin,
    event: &EventRow,
    retry: bool,
) -> DomainResult<Result<Settled, Hold>> {
    let facts = event.facts()?;
    let wit = event.wit_event()?;
    let invocation =
        state
            .plugins
            .invocation(event.occurred_at, "", &format!("settle:{}", event.id));
    let active = plugin.clone();
    let outcome: Result<Result<Decision<Vec<_>>, PluginError>, _> =
        tokio::task::spawn_blocking(move || {
            let ctx = CallContext {
                invocation,
                config: active.config.clone(),
            };
            if retry {
                active.plugin.settle_retry(&ctx, &wit)
            } else {
                active.plugin.settle(&ctx, &wit)
            }
        })
        .await;
    let decision = match outcome {
        Ok(Ok(decision)) => decision,
        Ok(Err(err)) => return Ok(Err(failed(err, retry))),
        Err(err) => return Ok(Err(Hold::new(format!("settle task failed: {err}")))),
    };
    let output = serde_json::to_string(&decision.value).map_err(DomainError::internal)?;
    crate::plugins::dryrun::spawn_shadow(
        &state.store,
        &state.plugins,
        &state.clock,
        plugin,
        &decision.receipt,
        &output,
        &event.id,
    );
    let lines = decision
        .value
        .iter()
        .map(|l| Line {
            payer: l.payer.clone(),
            payee: l.payee.clone(),
            amount_cents: l.amount_cents,
            reason: l.reason.clone(),
            category: rules::plugin_category(facts.kind, &l.payer, &l.payee, &l.reason),
            original_line_id: None,
        })
        .collect();
    Ok(Ok(Settled {
        rule: format!("{}@{}", plugin.plugin.name(), plugin.plugin.version()),
        receipt: Some((decision.receipt, output)),
        params: "{}".into(),
        lines,
        original: None,
    }))
}

/// What a failed call means for the event: parked when the plugin ran on it and failed (the
/// failures its breaker counts); a retry the breaker did not admit is deferred; anything else
/// (the breaker refused a first attempt, the node is overloaded) is a plain hold.
fn failed(err: PluginError, retry: bool) -> Hold {
    let reason = err.to_string();
    if err.kind.is_plugin_fault() {
        return Hold {
            fault: Some(Fault {
                plugin: err.plugin,
                version: err.version,
                code: err.kind.code().to_owned(),
                message: reason.clone(),
            }),
            reason,
            deferred: false,
        };
    }
    Hold {
        deferred: retry && matches!(err.kind, ErrorKind::CircuitOpen { .. }),
        ..Hold::new(reason)
    }
}

fn clip(text: &str) -> &str {
    if text.len() <= MAX_HELD_REASON_LEN {
        return text;
    }
    let mut end = MAX_HELD_REASON_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Holds the event with the reason and, if its plugin failed on it, parks it (or moves its
/// next retry on). Returns whether it is parked by this call.
async fn hold_event(
    state: &Services,
    event: &EventRow,
    hold: &Hold,
    parked: Option<&Parked>,
    now_ms: i64,
) -> DomainResult<bool> {
    let reason = hold.reason.as_str();
    let mut tx = state.store.begin().await?;
    let held = sqlx::query(
        "UPDATE settle_events SET status = 'held', held_reason = $2, attempts = attempts + 1
         WHERE id = $1 AND status IN ('pending', 'held')",
    )
    .bind(&event.id)
    .bind(clip(reason))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let parked_now = match &hold.fault {
        Some(fault) if held == 1 => {
            parking::record_failure(&mut tx, &event.id, fault, parked, now_ms).await?
        }
        _ => false,
    };
    tx.commit().await?;
    if parked_now {
        tracing::warn!(event = %event.id, reason, "settlement event parked");
    } else {
        tracing::warn!(event = %event.id, reason, "settlement event held");
    }
    Ok(parked_now)
}

/// Writes one event's settlement. `None`: left for the next run (settled elsewhere, or its
/// target period started closing meanwhile).
async fn write(
    state: &Services,
    event: &EventRow,
    settled: Settled,
    now_ms: i64,
) -> DomainResult<Option<(i64, bool)>> {
    let backend = state.store.backend();
    let offset = state.settings.points.utc_offset_minutes;
    let own = PeriodId::of(event.occurred_at, offset)?;
    let mut tx = state.store.begin().await?;
    let frontier = periods::frontier(&mut tx).await?;
    let target = match &frontier {
        Some(f) if *f >= own => f.next(),
        _ => own.clone(),
    };
    if !periods::lock_open(&mut tx, backend, &target, offset, now_ms).await? {
        return Ok(None);
    }
    // Which closed period this corrects, and the event it corrects.
    let (adjusts, original_event) = if target != own {
        (
            Some(own.to_string()),
            Some(
                settled
                    .original
                    .as_ref()
                    .map_or_else(|| event.id.clone(), |(e, _)| e.clone()),
            ),
        )
    } else if let Some((original_id, original_period)) = &settled.original {
        if *original_period != target.to_string()
            && periods::status(&mut tx, original_period).await?.as_deref() != Some("open")
        {
            (Some(original_period.clone()), Some(original_id.clone()))
        } else {
            (None, Some(original_id.clone()))
        }
    } else {
        (None, None)
    };
    let is_adjustment = adjusts.is_some();

    let marked = sqlx::query(
        "UPDATE settle_events SET status = 'settled', held_reason = NULL, attempts = attempts + 1
         WHERE id = $1 AND status IN ('pending', 'held')",
    )
    .bind(&event.id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if marked != 1 {
        return Ok(None);
    }
    parking::clear(&mut tx, &event.id).await?;
    let receipt_id = match &settled.receipt {
        Some((receipt, output)) => Some(
            crate::plugins::receipts::store_receipt(
                &mut tx,
                receipt,
                output,
                "settle_event",
                &event.id,
                now_ms,
            )
            .await?,
        ),
        None => None,
    };
    let period_id = target.to_string();
    // Refunds of purchases name the kind they reverse: statements show them as `refund:<kind>`.
    let reference = match (&event.reference, event.kind.as_str()) {
        (Some(r), "refund") if EventKind::parse(r).is_some() => Some(format!("refund:{r}")),
        (r, _) => r.clone(),
    };
    let total: i64 = settled.lines.iter().map(|l| l.amount_cents).sum();
    let line_count = i64::try_from(settled.lines.len()).unwrap_or(i64::MAX);
    let inserted = sqlx::query(
        "INSERT INTO settlement_runs (event_id, period_id, rule, receipt_id, params, is_adjustment,
            adjusts_period_id, original_event_id, line_count, total_cents, settled_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&event.id)
    .bind(&period_id)
    .bind(&settled.rule)
    .bind(&receipt_id)
    .bind(&settled.params)
    .bind(i64::from(is_adjustment))
    .bind(&adjusts)
    .bind(&original_event)
    .bind(line_count)
    .bind(total)
    .bind(now_ms)
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        Err(err) if crate::foundation::store::is_unique_violation(&err) => return Ok(None),
        Err(err) => return Err(err.into()),
    }
    for (line_no, line) in settled.lines.iter().enumerate() {
        sqlx::query(
            "INSERT INTO settlement_lines (id, event_id, period_id, line_no, payer, payee,
                amount_cents, reason, rule, category, reference, receipt_id, is_adjustment,
                original_event_id, original_line_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(new_id())
        .bind(&event.id)
        .bind(&period_id)
        .bind(i64::try_from(line_no).unwrap_or(i64::MAX))
        .bind(&line.payer)
        .bind(&line.payee)
        .bind(line.amount_cents)
        .bind(&line.reason)
        .bind(&settled.rule)
        .bind(&line.category)
        .bind(&reference)
        .bind(&receipt_id)
        .bind(i64::from(is_adjustment))
        .bind(&original_event)
        .bind(&line.original_line_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
    }
    if let Some(adjusts) = &adjusts {
        crate::ledger::audit::append(
            &mut tx,
            backend,
            &crate::ledger::audit::NewEntry {
                actor: JOB_ACTOR,
                action: "settlement.adjustment",
                subject_kind: "settle_event",
                subject_id: &event.id,
                reason: "event settled after its period closed",
                details: serde_json::json!({
                    "period": period_id,
                    "adjusts_period": adjusts,
                    "original_event": original_event,
                    "rule": settled.rule,
                    "lines": line_count,
                    "total_cents": total,
                }),
            },
            now_ms,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Some((line_count, is_adjustment)))
}
