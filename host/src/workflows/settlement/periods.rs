//! Periods (local calendar months), closing them, and statements.
//!
//! A close is a resumable sequence: (1) settle what is pending; refuse while events of the
//! month or earlier are unsettled, unless told to carry held ones; (2) mark the period `closing`
//! — from then on no line enters it (the settle job locks the period row and sends later events
//! to the next open period as adjustments); (3) aggregate its lines with `GROUP BY` on the read
//! pool, so a period of a million lines is never held in memory and the SQLite writer is not
//! blocked; (4) in one transaction write statements, detail and netting, mark it `closed` and
//! append the audit entry. A crash after (2) leaves it `closing`; closing again resumes. Closing
//! a closed period returns it unchanged.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use sqlx::AnyConnection;
use utoipa::ToSchema;

use super::rules::PLATFORM;
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::Backend;
use crate::workflows::Services;

/// Most unsettled event ids a refusal to close names.
const MAX_IDS_IN_ERROR: i64 = 20;

/// A local calendar month, `YYYY-MM`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeriodId {
    /// `year * 12 + (month - 1)`.
    months: i64,
}

impl PeriodId {
    /// The local month of an instant.
    pub fn of(at_ms: i64, utc_offset_minutes: i64) -> DomainResult<Self> {
        let (year, month) = crate::foundation::clock::local_year_month(at_ms, utc_offset_minutes)?;
        Ok(Self {
            months: i64::from(year) * 12 + i64::from(month) - 1,
        })
    }

    /// Parses `YYYY-MM`.
    pub fn parse(text: &str) -> DomainResult<Self> {
        let bad = || DomainError::validation(format!("period {text:?} is not YYYY-MM"));
        if text.len() != 7 || text.as_bytes()[4] != b'-' {
            return Err(bad());
        }
        let year: i64 = text[..4].parse().map_err(|_| bad())?;
        let month: i64 = text[5..].parse().map_err(|_| bad())?;
        if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) {
            return Err(bad());
        }
        Ok(Self {
            months: year * 12 + month - 1,
        })
    }

    /// The month after.
    pub fn next(&self) -> Self {
        Self {
            months: self.months + 1,
        }
    }

    /// First instant, Unix ms.
    pub fn start_ms(&self, utc_offset_minutes: i64) -> DomainResult<i64> {
        crate::foundation::clock::local_month_start_ms(self.months, utc_offset_minutes)
    }

    /// First instant of the next month, Unix ms.
    pub fn end_ms(&self, utc_offset_minutes: i64) -> DomainResult<i64> {
        crate::foundation::clock::local_month_start_ms(self.months + 1, utc_offset_minutes)
    }
}

impl fmt::Display for PeriodId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}",
            self.months.div_euclid(12),
            self.months.rem_euclid(12) + 1
        )
    }
}

/// The latest period that is closed or closing: every event of it or earlier that settles now
/// goes to the month after, as an adjustment.
pub async fn frontier(conn: &mut AnyConnection) -> DomainResult<Option<PeriodId>> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT id FROM settlement_periods WHERE status <> 'open' ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|(id,)| PeriodId::parse(&id)).transpose()
}

/// A period's status.
pub async fn status(conn: &mut AnyConnection, id: &str) -> DomainResult<Option<String>> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT status FROM settlement_periods WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|(s,)| s))
}

async fn ensure(
    conn: &mut AnyConnection,
    id: &PeriodId,
    utc_offset_minutes: i64,
    now_ms: i64,
) -> DomainResult<()> {
    sqlx::query(
        "INSERT INTO settlement_periods (id, start_ms, end_ms, status, created_at)
         VALUES ($1, $2, $3, 'open', $4) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(id.start_ms(utc_offset_minutes)?)
    .bind(id.end_ms(utc_offset_minutes)?)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Creates the period if needed, locks its row and says whether it still takes lines.
pub async fn lock_open(
    conn: &mut AnyConnection,
    backend: Backend,
    id: &PeriodId,
    utc_offset_minutes: i64,
    now_ms: i64,
) -> DomainResult<bool> {
    ensure(&mut *conn, id, utc_offset_minutes, now_ms).await?;
    let (status,): (String,) = sqlx::query_as(&format!(
        "SELECT status FROM settlement_periods WHERE id = $1{}",
        crate::foundation::store::for_update(backend)
    ))
    .bind(id.to_string())
    .fetch_one(&mut *conn)
    .await?;
    Ok(status == "open")
}

/// A period as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Period {
    /// `YYYY-MM`, the local month.
    pub id: String,
    /// First instant, Unix ms.
    pub start_ms: i64,
    /// First instant of the next month, Unix ms.
    pub end_ms: i64,
    /// `open`, `closing` or `closed`.
    pub status: String,
    /// When it was closed.
    pub closed_at: Option<i64>,
    /// Who closed it.
    pub closed_by: Option<String>,
    /// Lines in it (frozen at close).
    pub line_count: i64,
    /// Sum of its line amounts, cents (frozen at close).
    pub total_cents: i64,
    /// Events of the month still held at close; they settle later as adjustments.
    pub held_carried: i64,
    /// Sequence number of the close's audit entry.
    pub audit_seq: Option<i64>,
}

const PERIOD_COLUMNS: &str = "id, start_ms, end_ms, status, closed_at, closed_by, line_count, \
    total_cents, held_carried, audit_seq";

/// One period.
pub async fn get(pool: &sqlx::AnyPool, id: &str) -> DomainResult<Period> {
    sqlx::query_as::<_, Period>(&format!(
        "SELECT {PERIOD_COLUMNS} FROM settlement_periods WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| DomainError::not_found("settlement period", id))
}

/// Every period, newest first (a coalition has one per month).
pub async fn list(pool: &sqlx::AnyPool) -> DomainResult<Vec<Period>> {
    Ok(sqlx::query_as::<_, Period>(&format!(
        "SELECT {PERIOD_COLUMNS} FROM settlement_periods ORDER BY id DESC LIMIT 1200"
    ))
    .fetch_all(pool)
    .await?)
}

/// Points liability of a party in a month, from the ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct PointsFigures {
    /// Points the party issued.
    pub issued: i64,
    /// Issued points clawed back by refunds.
    pub issued_reversed: i64,
    /// Points redeemed at the party's counter.
    pub redeemed: i64,
    /// Redeemed points given back by refunds.
    pub redeemed_reversed: i64,
    /// Points the party funded that expired unused (breakage).
    pub expired: i64,
}

/// One row of statement detail.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Detail {
    /// The counterparty, or the perk / coupon template / rule.
    pub item: String,
    /// What the party pays on it, cents.
    pub owed_cents: i64,
    /// What the party receives on it, cents.
    pub due_cents: i64,
    /// Lines.
    pub line_count: i64,
}

/// A party's statement for a period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Statement {
    /// Period.
    pub period_id: String,
    /// Brand id, or `platform`.
    pub party: String,
    /// True once the period is closed (else a live draft).
    #[serde(rename = "final")]
    pub is_final: bool,
    /// What the party pays, cents.
    pub gross_owed_cents: i64,
    /// What the party receives, cents.
    pub gross_due_cents: i64,
    /// `gross_due - gross_owed`: > 0 the party is paid.
    pub net_cents: i64,
    /// Commission the party paid, net of reversals; for the platform, the commission it earned.
    pub commission_cents: i64,
    /// Net effect of adjustment lines (corrections of closed periods) on the party, cents.
    pub adjustment_cents: i64,
    /// Lines the party is on.
    pub line_count: i64,
    /// Points liability in the month.
    pub points: PointsFigures,
    /// Per counterparty.
    pub counterparties: Vec<Detail>,
    /// Per perk, coupon template, or rule.
    pub references: Vec<Detail>,
}

/// Bilateral netting of one pair of parties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Netting {
    /// Period.
    pub period_id: String,
    /// The pair, `party_a < party_b`.
    pub party_a: String,
    /// See `party_a`.
    pub party_b: String,
    /// Gross a pays b, cents.
    pub a_owes_b_cents: i64,
    /// Gross b pays a, cents.
    pub b_owes_a_cents: i64,
    /// `a_owes_b - b_owes_a`: > 0 a pays b the difference, < 0 b pays a.
    pub net_cents: i64,
}

/// Statements and netting of a period, computed from its lines.
#[derive(Debug, Clone, Default)]
pub struct Computed {
    /// Per party.
    pub statements: BTreeMap<String, Statement>,
    /// Per pair.
    pub netting: Vec<Netting>,
    /// Lines.
    pub line_count: i64,
    /// Sum of amounts.
    pub total_cents: i64,
}

type GroupRow = (String, String, String, i64, i64, i64, i64);

fn add_detail(list: &mut Vec<Detail>, item: &str, owed: i64, due: i64, n: i64) {
    match list.iter_mut().find(|d| d.item == item) {
        Some(d) => {
            d.owed_cents += owed;
            d.due_cents += due;
            d.line_count += n;
        }
        None => list.push(Detail {
            item: item.to_owned(),
            owed_cents: owed,
            due_cents: due,
            line_count: n,
        }),
    }
}

/// Aggregates a period's lines (GROUP BY in the database) and the ledger's points figures for
/// its month into statements and netting.
pub async fn compute(
    pool: &sqlx::AnyPool,
    period_id: &str,
    start_ms: i64,
    end_ms: i64,
) -> DomainResult<Computed> {
    let groups: Vec<GroupRow> = sqlx::query_as(
        "SELECT payer, payee, COALESCE(reference, rule),
                CAST(SUM(amount_cents) AS BIGINT), CAST(COUNT(*) AS BIGINT),
                CAST(SUM(CASE WHEN category = 'commission' THEN amount_cents ELSE 0 END) AS BIGINT),
                CAST(SUM(CASE WHEN is_adjustment = 1 THEN amount_cents ELSE 0 END) AS BIGINT)
         FROM settlement_lines WHERE period_id = $1
         GROUP BY payer, payee, COALESCE(reference, rule)",
    )
    .bind(period_id)
    .fetch_all(pool)
    .await?;
    let mut out = Computed::default();
    let mut pairs: BTreeMap<(String, String), i64> = BTreeMap::new();
    let new_statement = |party: &str| Statement {
        period_id: period_id.to_owned(),
        party: party.to_owned(),
        ..Statement::default()
    };
    for (payer, payee, item, amount, n, commission, adjustment) in groups {
        out.line_count += n;
        out.total_cents += amount;
        *pairs.entry((payer.clone(), payee.clone())).or_default() += amount;
        let s = out
            .statements
            .entry(payer.clone())
            .or_insert_with(|| new_statement(&payer));
        s.gross_owed_cents += amount;
        s.line_count += n;
        s.commission_cents += commission;
        s.adjustment_cents -= adjustment;
        add_detail(&mut s.counterparties, &payee, amount, 0, n);
        add_detail(&mut s.references, &item, amount, 0, n);
        let s = out
            .statements
            .entry(payee.clone())
            .or_insert_with(|| new_statement(&payee));
        s.gross_due_cents += amount;
        s.line_count += n;
        s.commission_cents -= commission;
        s.adjustment_cents += adjustment;
        add_detail(&mut s.counterparties, &payer, 0, amount, n);
        add_detail(&mut s.references, &item, 0, amount, n);
    }
    for ((a, b), a_owes_b) in &pairs {
        if a > b && pairs.contains_key(&(b.clone(), a.clone())) {
            continue; // counted from the other side
        }
        let b_owes_a = pairs.get(&(b.clone(), a.clone())).copied().unwrap_or(0);
        let (party_a, party_b, ab, ba) = if a < b {
            (a, b, *a_owes_b, b_owes_a)
        } else {
            (b, a, b_owes_a, *a_owes_b)
        };
        out.netting.push(Netting {
            period_id: period_id.to_owned(),
            party_a: party_a.clone(),
            party_b: party_b.clone(),
            a_owes_b_cents: ab,
            b_owes_a_cents: ba,
            net_cents: ab - ba,
        });
    }
    out.netting
        .sort_by(|x, y| (&x.party_a, &x.party_b).cmp(&(&y.party_a, &y.party_b)));
    for (party, figures) in ledger_points(pool, start_ms, end_ms).await? {
        out.statements
            .entry(party.clone())
            .or_insert_with(|| new_statement(&party))
            .points = figures;
    }
    for s in out.statements.values_mut() {
        s.net_cents = s.gross_due_cents - s.gross_owed_cents;
        if s.party == PLATFORM {
            s.commission_cents = -s.commission_cents;
        }
        s.counterparties.sort_by(|a, b| a.item.cmp(&b.item));
        s.references.sort_by(|a, b| a.item.cmp(&b.item));
    }
    Ok(out)
}

/// Points issued, redeemed and expired per party in `[start_ms, end_ms)`, from the ledger's
/// issuance, redemption and expiry postings (a NULL brand is the platform).
pub async fn ledger_points(
    pool: &sqlx::AnyPool,
    start_ms: i64,
    end_ms: i64,
) -> DomainResult<BTreeMap<String, PointsFigures>> {
    let rows: Vec<(String, Option<String>, i64, i64)> = sqlx::query_as(
        "SELECT account, brand_id,
                CAST(COALESCE(SUM(CASE WHEN amount > 0 THEN amount ELSE 0 END), 0) AS BIGINT),
                CAST(COALESCE(SUM(CASE WHEN amount < 0 THEN -amount ELSE 0 END), 0) AS BIGINT)
         FROM ledger_postings
         WHERE account IN ('issuance', 'redemption', 'expiry')
           AND created_at >= $1 AND created_at < $2
         GROUP BY account, brand_id",
    )
    .bind(start_ms)
    .bind(end_ms)
    .fetch_all(pool)
    .await?;
    let mut out: BTreeMap<String, PointsFigures> = BTreeMap::new();
    for (account, brand, plus, minus) in rows {
        let f = out
            .entry(brand.unwrap_or_else(|| PLATFORM.to_owned()))
            .or_default();
        match account.as_str() {
            "issuance" => {
                f.issued += minus;
                f.issued_reversed += plus;
            }
            "redemption" => {
                f.redeemed += plus;
                f.redeemed_reversed += minus;
            }
            _ => f.expired += plus - minus,
        }
    }
    Ok(out)
}

/// Stage of a close, for progress reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Settling pending events.
    Settling,
    /// Aggregating the lines.
    Aggregating,
    /// Writing statements.
    Writing,
    /// Done.
    Done,
}

/// What to close and how.
#[derive(Debug, Clone)]
pub struct CloseRequest<'a> {
    /// The month.
    pub period: PeriodId,
    /// Close even if events of the month are held (they settle later as adjustments).
    pub carry_held: bool,
    /// Who, for the audit log.
    pub actor: &'a str,
    /// Why (may be empty).
    pub reason: &'a str,
    /// Stop settling pending events at this instant (HTTP requests have a timeout); the close
    /// is then refused with `settlement_catching_up` and can be retried.
    pub settle_deadline: Option<std::time::Instant>,
}

/// Closes a period (see the module doc); `progress` hears each stage.
pub async fn close(
    state: &Services,
    req: &CloseRequest<'_>,
    progress: &(dyn Fn(Stage) + Send + Sync),
) -> DomainResult<Period> {
    let offset = state.settings.points.utc_offset_minutes;
    let backend = state.store.backend();
    let id = req.period.to_string();
    let (start_ms, end_ms) = (req.period.start_ms(offset)?, req.period.end_ms(offset)?);
    if let Ok(period) = get(state.store.read(), &id).await {
        if period.status == "closed" {
            progress(Stage::Done);
            return Ok(period);
        }
    }
    let now = state.now_ms();
    if now < end_ms {
        return Err(DomainError::conflict(
            "period_not_ended",
            format!("{id} ends at {end_ms} (Unix ms); it cannot be closed before"),
        ));
    }

    // 1. Settle what is pending, then refuse (or carry) what could not be settled.
    progress(Stage::Settling);
    let run = super::job::run_until(state, now, req.settle_deadline).await?;
    if run.more {
        return Err(DomainError::conflict(
            "settlement_catching_up",
            "pending events are still being settled; retry the close (or run it from the \
             command line, which has no time budget)",
        ));
    }
    let unsettled: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, status FROM settle_events
         WHERE status IN ('pending', 'held') AND occurred_at < $1
         ORDER BY occurred_at, id LIMIT $2",
    )
    .bind(end_ms)
    .bind(MAX_IDS_IN_ERROR)
    .fetch_all(state.store.read())
    .await?;
    let (held_count,): (i64,) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM settle_events
         WHERE status IN ('pending', 'held') AND occurred_at < $1",
    )
    .bind(end_ms)
    .fetch_one(state.store.read())
    .await?;
    if held_count > 0 && !req.carry_held {
        return Err(DomainError::conflict(
            "period_has_unsettled_events",
            format!(
                "{held_count} events of {id} or earlier are not settled (held by a failing \
                 plugin); fix and redeploy it, or close with carry_held to settle them later as \
                 adjustments"
            ),
        )
        .with_extra(serde_json::json!({
            "unsettled": held_count,
            "event_ids": unsettled.iter().map(|(e, _)| e).collect::<Vec<_>>(),
        })));
    }

    // 2. Freeze: no line enters a closing period.
    let mut tx = state.store.begin().await?;
    ensure(&mut tx, &req.period, offset, now).await?;
    let (status,): (String,) = sqlx::query_as(&format!(
        "SELECT status FROM settlement_periods WHERE id = $1{}",
        crate::foundation::store::for_update(backend)
    ))
    .bind(&id)
    .fetch_one(&mut *tx)
    .await?;
    if status == "closed" {
        drop(tx);
        progress(Stage::Done);
        return get(state.store.read(), &id).await;
    }
    let (earlier_open,): (i64,) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM settlement_periods WHERE id < $1 AND status <> 'closed'",
    )
    .bind(&id)
    .fetch_one(&mut *tx)
    .await?;
    if earlier_open > 0 {
        return Err(DomainError::conflict(
            "earlier_period_open",
            format!("periods before {id} are still open; close them in order"),
        ));
    }
    sqlx::query(
        "UPDATE settlement_periods SET status = 'closing', closing_at = $2
         WHERE id = $1 AND status = 'open'",
    )
    .bind(&id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;

    // 3. Aggregate on the read pool.
    progress(Stage::Aggregating);
    let computed = compute(state.store.read(), &id, start_ms, end_ms).await?;

    // 4. Write and close in one transaction.
    progress(Stage::Writing);
    let mut tx = state.store.begin().await?;
    let (status,): (String,) = sqlx::query_as(&format!(
        "SELECT status FROM settlement_periods WHERE id = $1{}",
        crate::foundation::store::for_update(backend)
    ))
    .bind(&id)
    .fetch_one(&mut *tx)
    .await?;
    if status == "closed" {
        drop(tx);
        progress(Stage::Done);
        return get(state.store.read(), &id).await;
    }
    for table in [
        "settlement_statements",
        "settlement_statement_detail",
        "settlement_netting",
    ] {
        sqlx::query(&format!("DELETE FROM {table} WHERE period_id = $1"))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
    }
    for s in computed.statements.values() {
        store_statement(&mut tx, s).await?;
    }
    for n in &computed.netting {
        sqlx::query(
            "INSERT INTO settlement_netting (period_id, party_a, party_b, a_owes_b_cents,
                b_owes_a_cents, net_cents) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(&n.party_a)
        .bind(&n.party_b)
        .bind(n.a_owes_b_cents)
        .bind(n.b_owes_a_cents)
        .bind(n.net_cents)
        .execute(&mut *tx)
        .await?;
    }
    let held_carried = if req.carry_held { held_count } else { 0 };
    let seq = crate::ledger::audit::append(
        &mut tx,
        backend,
        &crate::ledger::audit::NewEntry {
            actor: req.actor,
            action: "settlement.close",
            subject_kind: "settlement_period",
            subject_id: &id,
            reason: req.reason,
            details: serde_json::json!({
                "lines": computed.line_count,
                "total_cents": computed.total_cents,
                "parties": computed.statements.len(),
                "held_carried": held_carried,
                "nets": computed.statements.values()
                    .map(|s| (s.party.clone(), serde_json::json!(s.net_cents)))
                    .collect::<serde_json::Map<_, _>>(),
            }),
        },
        now,
    )
    .await?;
    // Each party hears of its own statement only (a party that is no brand has no
    // subscriptions, so nothing is written for it).
    for s in computed.statements.values() {
        crate::domain::webhooks::record(
            &mut tx,
            &s.party,
            crate::domain::webhooks::EventType::SettlementPeriodClosed,
            None,
            serde_json::json!({
                "period_id": id, "net_cents": s.net_cents, "gross_owed_cents": s.gross_owed_cents,
                "gross_due_cents": s.gross_due_cents, "commission_cents": s.commission_cents,
                "line_count": s.line_count, "closed_at_ms": now,
            }),
        )
        .await?;
    }
    sqlx::query(
        "UPDATE settlement_periods SET status = 'closed', closed_at = $2, closed_by = $3,
            line_count = $4, total_cents = $5, held_carried = $6, audit_seq = $7
         WHERE id = $1",
    )
    .bind(&id)
    .bind(now)
    .bind(req.actor)
    .bind(computed.line_count)
    .bind(computed.total_cents)
    .bind(held_carried)
    .bind(seq)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    progress(Stage::Done);
    get(state.store.read(), &id).await
}

async fn store_statement(conn: &mut AnyConnection, s: &Statement) -> DomainResult<()> {
    sqlx::query(
        "INSERT INTO settlement_statements (period_id, party, gross_owed_cents, gross_due_cents,
            net_cents, commission_cents, adjustment_cents, line_count, points_issued,
            points_issued_reversed, points_redeemed, points_redeemed_reversed, points_expired)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&s.period_id)
    .bind(&s.party)
    .bind(s.gross_owed_cents)
    .bind(s.gross_due_cents)
    .bind(s.net_cents)
    .bind(s.commission_cents)
    .bind(s.adjustment_cents)
    .bind(s.line_count)
    .bind(s.points.issued)
    .bind(s.points.issued_reversed)
    .bind(s.points.redeemed)
    .bind(s.points.redeemed_reversed)
    .bind(s.points.expired)
    .execute(&mut *conn)
    .await?;
    for (dimension, list) in [
        ("counterparty", &s.counterparties),
        ("reference", &s.references),
    ] {
        for d in list {
            sqlx::query(
                "INSERT INTO settlement_statement_detail (period_id, party, dimension, item,
                    owed_cents, due_cents, line_count) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&s.period_id)
            .bind(&s.party)
            .bind(dimension)
            .bind(&d.item)
            .bind(d.owed_cents)
            .bind(d.due_cents)
            .bind(d.line_count)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

type StatementRow = (
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
);

/// The stored statements of a closed period (all parties, or one).
pub async fn stored(
    pool: &sqlx::AnyPool,
    period_id: &str,
    party: Option<&str>,
) -> DomainResult<BTreeMap<String, Statement>> {
    let rows: Vec<StatementRow> = sqlx::query_as(
        "SELECT period_id, party, gross_owed_cents, gross_due_cents, net_cents, commission_cents,
                adjustment_cents, line_count, points_issued, points_issued_reversed,
                points_redeemed, points_redeemed_reversed, points_expired
         FROM settlement_statements WHERE period_id = $1 AND ($2 = '' OR party = $2)
         ORDER BY party",
    )
    .bind(period_id)
    .bind(party.unwrap_or(""))
    .fetch_all(pool)
    .await?;
    let mut out = BTreeMap::new();
    for (period_id, party, owed, due, net, commission, adjustment, n, i, ir, r, rr, e) in rows {
        out.insert(
            party.clone(),
            Statement {
                period_id,
                party,
                is_final: true,
                gross_owed_cents: owed,
                gross_due_cents: due,
                net_cents: net,
                commission_cents: commission,
                adjustment_cents: adjustment,
                line_count: n,
                points: PointsFigures {
                    issued: i,
                    issued_reversed: ir,
                    redeemed: r,
                    redeemed_reversed: rr,
                    expired: e,
                },
                counterparties: Vec::new(),
                references: Vec::new(),
            },
        );
    }
    let details: Vec<(String, String, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT party, dimension, item, owed_cents, due_cents, line_count
         FROM settlement_statement_detail WHERE period_id = $1 AND ($2 = '' OR party = $2)
         ORDER BY party, dimension, item",
    )
    .bind(period_id)
    .bind(party.unwrap_or(""))
    .fetch_all(pool)
    .await?;
    for (party, dimension, item, owed, due, n) in details {
        if let Some(s) = out.get_mut(&party) {
            let detail = Detail {
                item,
                owed_cents: owed,
                due_cents: due,
                line_count: n,
            };
            if dimension == "counterparty" {
                s.counterparties.push(detail);
            } else {
                s.references.push(detail);
            }
        }
    }
    Ok(out)
}

/// Stored netting of a closed period.
pub async fn stored_netting(pool: &sqlx::AnyPool, period_id: &str) -> DomainResult<Vec<Netting>> {
    let rows: Vec<(String, String, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT period_id, party_a, party_b, a_owes_b_cents, b_owes_a_cents, net_cents
         FROM settlement_netting WHERE period_id = $1 ORDER BY party_a, party_b",
    )
    .bind(period_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(period_id, party_a, party_b, ab, ba, net)| Netting {
            period_id,
            party_a,
            party_b,
            a_owes_b_cents: ab,
            b_owes_a_cents: ba,
            net_cents: net,
        })
        .collect())
}

/// Statements of a period: the stored ones once closed, else a live draft.
pub async fn statements(
    state: &Services,
    period: &Period,
    party: Option<&str>,
) -> DomainResult<(Vec<Statement>, Vec<Netting>)> {
    if period.status == "closed" {
        let statements = stored(state.store.read(), &period.id, party).await?;
        let netting = stored_netting(state.store.read(), &period.id).await?;
        return Ok((statements.into_values().collect(), netting));
    }
    let computed = compute(
        state.store.read(),
        &period.id,
        period.start_ms,
        period.end_ms,
    )
    .await?;
    let statements = computed
        .statements
        .into_values()
        .filter(|s| party.is_none_or(|p| s.party == p))
        .collect();
    Ok((statements, computed.netting))
}

#[cfg(test)]
mod tests {
    use super::PeriodId;

    #[test]
    fn periods_are_local_months() {
        // 2026-03-31T20:00Z is already April in UTC+8.
        let at = 1_774_987_200_000;
        assert_eq!(PeriodId::of(at, 0).expect("ok").to_string(), "2026-03");
        assert_eq!(PeriodId::of(at, 480).expect("ok").to_string(), "2026-04");
        let p = PeriodId::parse("2026-12").expect("ok");
        assert_eq!(p.next().to_string(), "2027-01");
        assert!(PeriodId::parse("2026-13").is_err());
        assert!(PeriodId::parse("26-01").is_err());
        let start = p.start_ms(480).expect("ok");
        assert_eq!(PeriodId::of(start, 480).expect("ok"), p);
        assert_eq!(
            PeriodId::of(start - 1, 480).expect("ok").to_string(),
            "2026-11"
        );
    }
}
