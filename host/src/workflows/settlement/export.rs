//! Statements and lines as JSON and CSV, and paging through a period's lines.

use serde::Serialize;
use utoipa::ToSchema;

use super::periods::Statement;
use crate::foundation::error::{DomainError, DomainResult};

/// Most lines in one page.
pub const MAX_LINES_PAGE: i64 = 10_000;
/// Default page of lines.
pub const DEFAULT_LINES_PAGE: i64 = 1_000;

/// A stored line as exported.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct LineView {
    /// Line id.
    pub id: String,
    /// The event it settles.
    pub event_id: String,
    /// Period.
    pub period_id: String,
    /// Position within the event.
    pub line_no: i64,
    /// Who pays.
    pub payer: String,
    /// Who receives.
    pub payee: String,
    /// Cents, > 0.
    pub amount_cents: i64,
    /// Why.
    pub reason: String,
    /// `plugin@version` or `platform:<rule>`.
    pub rule: String,
    /// `points`, `perk`, `coupon`, `commission` or `refund`.
    pub category: String,
    /// Perk or coupon template of the event.
    pub reference: Option<String>,
    /// Receipt of the plugin call that made it.
    pub receipt_id: Option<String>,
    /// 1 when it corrects a closed period.
    pub is_adjustment: i64,
    /// The event corrected or reversed.
    pub original_event_id: Option<String>,
    /// Platform reversals: the line reversed.
    pub original_line_id: Option<String>,
    /// When written, Unix ms.
    pub created_at: i64,
}

/// A page of lines.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LinesPage {
    /// The lines, by id.
    pub lines: Vec<LineView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_after: Option<String>,
}

/// Lines of a period (only those `party` pays or receives, if given), by id after `after`.
pub async fn lines_page(
    pool: &sqlx::AnyPool,
    period_id: &str,
    party: Option<&str>,
    after: &str,
    limit: i64,
) -> DomainResult<LinesPage> {
    if !(1..=MAX_LINES_PAGE).contains(&limit) {
        return Err(DomainError::validation(format!(
            "limit must be 1..={MAX_LINES_PAGE}"
        )));
    }
    let lines: Vec<LineView> = sqlx::query_as(
        "SELECT id, event_id, period_id, line_no, payer, payee, amount_cents, reason, rule,
                category, reference, receipt_id, is_adjustment, original_event_id,
                original_line_id, created_at
         FROM settlement_lines
         WHERE period_id = $1 AND id > $2 AND ($3 = '' OR payer = $3 OR payee = $3)
         ORDER BY id LIMIT $4",
    )
    .bind(period_id)
    .bind(after)
    .bind(party.unwrap_or(""))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let next_after = (i64::try_from(lines.len()).unwrap_or(0) == limit)
        .then(|| lines.last().map(|l| l.id.clone()))
        .flatten();
    Ok(LinesPage { lines, next_after })
}

fn csv_error(err: impl std::fmt::Display) -> DomainError {
    DomainError::internal(anyhow::anyhow!("csv: {err}"))
}

/// Statements as CSV: one row per party, then its detail rows.
pub fn statements_csv(statements: &[Statement]) -> DomainResult<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "period",
        "party",
        "final",
        "row",
        "item",
        "owed_cents",
        "due_cents",
        "net_cents",
        "commission_cents",
        "adjustment_cents",
        "line_count",
        "points_issued",
        "points_issued_reversed",
        "points_redeemed",
        "points_redeemed_reversed",
        "points_expired",
    ])
    .map_err(csv_error)?;
    for s in statements {
        let p = &s.points;
        w.write_record([
            s.period_id.clone(),
            s.party.clone(),
            s.is_final.to_string(),
            "total".into(),
            String::new(),
            s.gross_owed_cents.to_string(),
            s.gross_due_cents.to_string(),
            s.net_cents.to_string(),
            s.commission_cents.to_string(),
            s.adjustment_cents.to_string(),
            s.line_count.to_string(),
            p.issued.to_string(),
            p.issued_reversed.to_string(),
            p.redeemed.to_string(),
            p.redeemed_reversed.to_string(),
            p.expired.to_string(),
        ])
        .map_err(csv_error)?;
        for (row, list) in [
            ("counterparty", &s.counterparties),
            ("reference", &s.references),
        ] {
            for d in list {
                let mut record = vec![
                    s.period_id.clone(),
                    s.party.clone(),
                    s.is_final.to_string(),
                    row.to_owned(),
                    d.item.clone(),
                    d.owed_cents.to_string(),
                    d.due_cents.to_string(),
                    (d.due_cents - d.owed_cents).to_string(),
                    String::new(),
                    String::new(),
                    d.line_count.to_string(),
                ];
                record.extend(std::iter::repeat_n(String::new(), 5));
                w.write_record(&record).map_err(csv_error)?;
            }
        }
    }
    String::from_utf8(w.into_inner().map_err(csv_error)?).map_err(csv_error)
}

/// Lines as CSV (with a header row when `header`).
pub fn lines_csv(lines: &[LineView], header: bool) -> DomainResult<String> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(header)
        .from_writer(Vec::new());
    for line in lines {
        w.serialize(line).map_err(csv_error)?;
    }
    String::from_utf8(w.into_inner().map_err(csv_error)?).map_err(csv_error)
}
