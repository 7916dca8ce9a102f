//! Partner budgets: what a funding brand is willing to fund per period — bonus points, perk
//! value, coupon value — for all its plugins or one, enforced **at the moment of issue**.
//!
//! Every issue that draws on budgets calls [`reserve`] in its own write transaction: the usage
//! rows of every budget that applies are locked in id order (`FOR UPDATE` on PostgreSQL; SQLite
//! has one writer), the grant is the request clipped to the smallest remaining amount, and each
//! row moves by one guarded `UPDATE … WHERE used + grant <= amount`. So concurrent issues queue
//! on the rows and never spend past a cap; a rolled-back issue rolls its reservation back too.
//! A period is a local day or month (`[points] utc_offset_minutes`): a new period starts at
//! zero. When usage first reaches a budget's alert threshold in a period, the moment is kept.
//! Usage is what was issued: a later refund does not give budget back.

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::foundation::clock::{local_date, local_year_month};
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::{new_id, Backend};

/// Most budgets a brand may have: each issue reads all that apply.
pub const MAX_BUDGETS_PER_BRAND: i64 = 50;
/// Largest budget per period: 1,000,000,000 points or cents (10,000,000.00).
const MAX_AMOUNT: i64 = 1_000_000_000;
/// Longest label.
const MAX_LABEL_LEN: usize = 200;
/// Longest plugin name.
const MAX_PLUGIN_LEN: usize = 64;

/// What a budget caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BudgetKind {
    /// Bonus points the brand's plugins grant on purchases at its counters.
    BonusPoints,
    /// Face value (cents) of perks the brand funds.
    PerkValue,
    /// Discounts (cents) of coupons the brand funds.
    CouponValue,
}

impl BudgetKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::BonusPoints => "bonus_points",
            Self::PerkValue => "perk_value",
            Self::CouponValue => "coupon_value",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "perk_value" => Self::PerkValue,
            "coupon_value" => Self::CouponValue,
            _ => Self::BonusPoints,
        }
    }
}

/// How long a budget's period is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriod {
    /// A local calendar day.
    Day,
    /// A local calendar month.
    Month,
}

impl BudgetPeriod {
    fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    fn parse(s: &str) -> Self {
        if s == "day" {
            Self::Day
        } else {
            Self::Month
        }
    }

    /// The key of the period holding `at_ms`: `2026-12-07` or `2026-12`.
    pub fn key(self, at_ms: i64, utc_offset_minutes: i64) -> DomainResult<String> {
        Ok(match self {
            Self::Day => {
                let (y, m, d) = local_date(at_ms, utc_offset_minutes)?;
                format!("{y:04}-{m:02}-{d:02}")
            }
            Self::Month => {
                let (y, m) = local_year_month(at_ms, utc_offset_minutes)?;
                format!("{y:04}-{m:02}")
            }
        })
    }
}

/// A new budget.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBudget {
    /// What it caps.
    pub kind: BudgetKind,
    /// Only issues by this plugin; absent = every plugin of the brand.
    #[serde(default)]
    pub plugin: Option<String>,
    /// Only the coupons this campaign issues (`coupon_value` budgets of the campaign's funding
    /// brand); absent = every issue.
    #[serde(default)]
    pub campaign_id: Option<String>,
    /// `day` or `month`.
    pub period: BudgetPeriod,
    /// Points (bonus) or cents (perk and coupon value) per period, 0..=1,000,000,000.
    pub amount: i64,
    /// Usage share that raises the alert, percent 1..=100 (default 80).
    #[serde(default = "default_alert")]
    pub alert_percent: i64,
    /// A name for people, ≤ 200 bytes.
    #[serde(default)]
    pub label: String,
}

fn default_alert() -> i64 {
    80
}

/// A change to a budget (the fields present change).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBudget {
    /// New amount per period (from now on, this period included).
    #[serde(default)]
    pub amount: Option<i64>,
    /// New alert threshold, percent.
    #[serde(default)]
    pub alert_percent: Option<i64>,
    /// `false` stops it applying (usage is kept).
    #[serde(default)]
    pub active: Option<bool>,
}

/// A budget with its usage in the current period.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BudgetView {
    /// Id.
    pub id: String,
    /// The funding brand.
    pub brand_id: String,
    /// What it caps.
    pub kind: BudgetKind,
    /// The one plugin it applies to, if any.
    pub plugin: Option<String>,
    /// The one campaign it applies to, if any.
    pub campaign_id: Option<String>,
    /// `day` or `month`.
    pub period: BudgetPeriod,
    /// Per period.
    pub amount: i64,
    /// Alert threshold, percent.
    pub alert_percent: i64,
    /// Applies to new issues.
    pub active: bool,
    /// Label.
    pub label: String,
    /// The current period, e.g. `2026-12`.
    pub period_key: String,
    /// Used in the current period.
    pub used: i64,
    /// `amount - used`, at least 0.
    pub remaining: i64,
    /// Used, in basis points of the amount (10,000 = all of it).
    pub used_bp: i64,
    /// When usage reached the alert threshold in this period, Unix ms.
    pub alerted_at_ms: Option<i64>,
}

/// What a reservation granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    /// Granted, ≤ asked.
    pub granted: i64,
    /// The budget that limited the grant, when it was cut.
    pub limited_by: Option<String>,
}

fn validate(amount: Option<i64>, alert: Option<i64>) -> DomainResult<()> {
    if let Some(a) = amount {
        if !(0..=MAX_AMOUNT).contains(&a) {
            return Err(DomainError::validation(format!(
                "amount must be 0..={MAX_AMOUNT}"
            )));
        }
    }
    if let Some(a) = alert {
        if !(1..=100).contains(&a) {
            return Err(DomainError::validation("alert_percent must be 1..=100"));
        }
    }
    Ok(())
}

/// Creates a budget for `brand_id`.
pub async fn create(
    conn: &mut AnyConnection,
    brand_id: &str,
    req: &NewBudget,
    actor: &str,
    now_ms: i64,
) -> DomainResult<String> {
    validate(Some(req.amount), Some(req.alert_percent))?;
    if let Some(plugin) = &req.plugin {
        if plugin.is_empty() || plugin.len() > MAX_PLUGIN_LEN {
            return Err(DomainError::validation(format!(
                "plugin must be 1..={MAX_PLUGIN_LEN} bytes"
            )));
        }
    }
    if req.label.len() > MAX_LABEL_LEN || req.label.chars().any(char::is_control) {
        return Err(DomainError::validation(format!(
            "label must be at most {MAX_LABEL_LEN} bytes without control characters"
        )));
    }
    crate::ledger::require_brand_exists(conn, brand_id).await?;
    if let Some(campaign) = &req.campaign_id {
        if req.kind != BudgetKind::CouponValue {
            return Err(DomainError::validation(
                "campaign_id scopes coupon_value budgets only: a campaign issues coupons",
            ));
        }
        let funding: Option<(String,)> =
            sqlx::query_as("SELECT funding_brand FROM campaigns WHERE id = $1")
                .bind(campaign)
                .fetch_optional(&mut *conn)
                .await?;
        match funding {
            None => return Err(DomainError::not_found("campaign", campaign)),
            Some((funding,)) if funding != brand_id => {
                return Err(DomainError::validation(format!(
                    "campaign {campaign} is funded by {funding}, not {brand_id}"
                )))
            }
            Some(_) => {}
        }
    }
    let (count,): (i64,) =
        sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM budgets WHERE brand_id = $1")
            .bind(brand_id)
            .fetch_one(&mut *conn)
            .await?;
    if count >= MAX_BUDGETS_PER_BRAND {
        return Err(DomainError::unprocessable(
            "budget_limit_reached",
            format!("a brand has at most {MAX_BUDGETS_PER_BRAND} budgets"),
        ));
    }
    let id = new_id();
    sqlx::query(
        "INSERT INTO budgets (id, brand_id, kind, plugin, period, amount, alert_percent, active,
            label, created_by, created_at, updated_at, campaign_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $10, $10, $11)",
    )
    .bind(&id)
    .bind(brand_id)
    .bind(req.kind.as_str())
    .bind(req.plugin.as_deref())
    .bind(req.period.as_str())
    .bind(req.amount)
    .bind(req.alert_percent)
    .bind(&req.label)
    .bind(actor)
    .bind(now_ms)
    .bind(req.campaign_id.as_deref())
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

/// Changes a budget of `brand_id`; unknown: 404.
pub async fn update(
    conn: &mut AnyConnection,
    brand_id: &str,
    budget_id: &str,
    req: &UpdateBudget,
    now_ms: i64,
) -> DomainResult<()> {
    validate(req.amount, req.alert_percent)?;
    let updated = sqlx::query(
        "UPDATE budgets SET amount = COALESCE($1, amount),
            alert_percent = COALESCE($2, alert_percent), active = COALESCE($3, active),
            updated_at = $4
         WHERE id = $5 AND brand_id = $6",
    )
    .bind(req.amount)
    .bind(req.alert_percent)
    .bind(req.active.map(i64::from))
    .bind(now_ms)
    .bind(budget_id)
    .bind(brand_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated != 1 {
        return Err(DomainError::not_found("budget", budget_id));
    }
    Ok(())
}

type BudgetRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    i64,
    i64,
    i64,
    String,
);

const BUDGET_COLUMNS: &str =
    "id, brand_id, kind, plugin, campaign_id, period, amount, alert_percent, active, label";

/// A brand's budgets with their usage in the current period (one budget when `only` is set).
pub async fn list(
    conn: &mut AnyConnection,
    brand_id: &str,
    only: Option<&str>,
    utc_offset_minutes: i64,
    now_ms: i64,
) -> DomainResult<Vec<BudgetView>> {
    let rows: Vec<BudgetRow> = sqlx::query_as(&format!(
        "SELECT {BUDGET_COLUMNS} FROM budgets WHERE brand_id = $1 AND ($2 = '' OR id = $2)
         ORDER BY created_at, id"
    ))
    .bind(brand_id)
    .bind(only.unwrap_or(""))
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, brand_id, kind, plugin, campaign_id, period, amount, alert_percent, active, label) in
        rows
    {
        let period = BudgetPeriod::parse(&period);
        let period_key = period.key(now_ms, utc_offset_minutes)?;
        let usage: Option<(i64, Option<i64>)> = sqlx::query_as(
            "SELECT used, alerted_at FROM budget_usage WHERE budget_id = $1 AND period_key = $2",
        )
        .bind(&id)
        .bind(&period_key)
        .fetch_optional(&mut *conn)
        .await?;
        let (used, alerted_at_ms) = usage.unwrap_or((0, None));
        out.push(BudgetView {
            id,
            brand_id,
            kind: BudgetKind::parse(&kind),
            plugin,
            campaign_id,
            period,
            amount,
            alert_percent,
            active: active != 0,
            label,
            period_key,
            used,
            remaining: (amount - used).max(0),
            used_bp: if amount > 0 {
                i64::try_from(i128::from(used) * 10_000 / i128::from(amount)).unwrap_or(i64::MAX)
            } else {
                0
            },
            alerted_at_ms,
        });
    }
    Ok(out)
}

/// A budget in force with what is left of it now, as 0.2.0 plugins see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InForce {
    /// The funding brand.
    pub brand_id: String,
    /// What it limits.
    pub kind: BudgetKind,
    /// The plugin it names; none for all the brand's plugins.
    pub plugin: Option<String>,
    /// The amount per period.
    pub amount: i64,
    /// What is left in the current period.
    pub remaining: i64,
    /// When the current period ends, Unix ms.
    pub period_ends_ms: i64,
}

/// Most budgets read for one plugin call's context (a brand sets a few per kind; the WIT hands a
/// plugin at most 32 of those that apply to it).
pub const MAX_IN_FORCE: i64 = 256;

/// Every active budget not scoped to a campaign with what is left of it now, in one read (usage joined on the current
/// day's or month's key).
pub async fn in_force(
    conn: &mut AnyConnection,
    utc_offset_minutes: i64,
    now_ms: i64,
) -> DomainResult<Vec<InForce>> {
    let day = BudgetPeriod::Day.key(now_ms, utc_offset_minutes)?;
    let month = BudgetPeriod::Month.key(now_ms, utc_offset_minutes)?;
    let rows: Vec<(String, String, Option<String>, String, i64, i64)> = sqlx::query_as(
        "SELECT b.brand_id, b.kind, b.plugin, b.period, b.amount,
                CAST(COALESCE(u.used, 0) AS BIGINT)
         FROM budgets b
         LEFT JOIN budget_usage u ON u.budget_id = b.id
              AND u.period_key = CASE WHEN b.period = 'day' THEN $1 ELSE $2 END
         WHERE b.active = 1 AND b.campaign_id IS NULL
         ORDER BY b.brand_id, b.created_at, b.id LIMIT $3",
    )
    .bind(&day)
    .bind(&month)
    .bind(MAX_IN_FORCE)
    .fetch_all(&mut *conn)
    .await?;
    let offset_ms = utc_offset_minutes.saturating_mul(60_000);
    let day_end = now_ms - (now_ms + offset_ms).rem_euclid(crate::foundation::clock::DAY_MS)
        + crate::foundation::clock::DAY_MS;
    let (y, m) = crate::foundation::clock::local_year_month(now_ms, utc_offset_minutes)?;
    let month_end = crate::foundation::clock::local_month_start_ms(
        i64::from(y) * 12 + i64::from(m),
        utc_offset_minutes,
    )?;
    Ok(rows
        .into_iter()
        .map(|(brand_id, kind, plugin, period, amount, used)| InForce {
            brand_id,
            kind: BudgetKind::parse(&kind),
            plugin,
            amount,
            remaining: (amount - used).max(0),
            period_ends_ms: if BudgetPeriod::parse(&period) == BudgetPeriod::Day {
                day_end
            } else {
                month_end
            },
        })
        .collect())
}

/// How much of a request a reservation may grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Cut to what is left (a bonus).
    UpTo,
    /// All of it or nothing (a perk, a coupon): nothing is reserved when it does not fit.
    Whole,
}

/// Reserves up to `wanted` from every active budget of `brand_id` of `kind` that applies to
/// `plugin` and `campaign` (unscoped budgets apply to every plugin and every issue; a
/// campaign's budget only to that campaign's issues), in the caller's transaction. The grant is
/// `wanted` clipped to the smallest remaining amount (0 when one is used up, or when `grant` is
/// [`Grant::Whole`] and it does not all fit); no budget: all of it.
#[allow(clippy::too_many_arguments)]
pub async fn reserve(
    conn: &mut AnyConnection,
    backend: Backend,
    brand_id: &str,
    kind: BudgetKind,
    plugin: Option<&str>,
    campaign: Option<&str>,
    wanted: i64,
    grant: Grant,
    utc_offset_minutes: i64,
    now_ms: i64,
) -> DomainResult<Reserved> {
    if wanted <= 0 {
        return Ok(Reserved {
            granted: 0,
            limited_by: None,
        });
    }
    let budgets: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT id, period, amount, alert_percent FROM budgets
         WHERE brand_id = $1 AND kind = $2 AND active = 1 AND (plugin IS NULL OR plugin = $3)
           AND (campaign_id IS NULL OR campaign_id = $4)
         ORDER BY id",
    )
    .bind(brand_id)
    .bind(kind.as_str())
    .bind(plugin.unwrap_or(""))
    .bind(campaign.unwrap_or(""))
    .fetch_all(&mut *conn)
    .await?;
    if budgets.is_empty() {
        return Ok(Reserved {
            granted: wanted,
            limited_by: None,
        });
    }
    // Lock every usage row first (in id order: no deadlock between two issues), then decide.
    let mut rows = Vec::with_capacity(budgets.len());
    for (id, period, amount, alert) in budgets {
        let key = BudgetPeriod::parse(&period).key(now_ms, utc_offset_minutes)?;
        sqlx::query(
            "INSERT INTO budget_usage (budget_id, period_key, used) VALUES ($1, $2, 0)
             ON CONFLICT (budget_id, period_key) DO NOTHING",
        )
        .bind(&id)
        .bind(&key)
        .execute(&mut *conn)
        .await?;
        let (used,): (i64,) = sqlx::query_as(&format!(
            "SELECT used FROM budget_usage WHERE budget_id = $1 AND period_key = $2{}",
            crate::foundation::store::for_update(backend)
        ))
        .bind(&id)
        .bind(&key)
        .fetch_one(&mut *conn)
        .await?;
        rows.push((id, key, amount, alert, used));
    }
    let mut granted = wanted;
    let mut limited_by = None;
    for (id, _, amount, _, used) in &rows {
        let remaining = (amount - used).max(0);
        if remaining < granted {
            granted = remaining;
            limited_by = Some(id.clone());
        }
    }
    if grant == Grant::Whole && granted < wanted {
        granted = 0;
    }
    if granted == 0 {
        return Ok(Reserved {
            granted,
            limited_by,
        });
    }
    for (id, key, amount, alert, used) in rows {
        let moved = sqlx::query(
            "UPDATE budget_usage SET used = used + $1
             WHERE budget_id = $2 AND period_key = $3 AND used + $1 <= $4",
        )
        .bind(granted)
        .bind(&id)
        .bind(&key)
        .bind(amount)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if moved != 1 {
            return Err(DomainError::internal(anyhow::anyhow!(
                "budget {id} refused {granted} after it was locked"
            )));
        }
        let after = used + granted;
        if i128::from(after) * 100 >= i128::from(amount) * i128::from(alert) {
            sqlx::query(
                "UPDATE budget_usage SET alerted_at = $1
                 WHERE budget_id = $2 AND period_key = $3 AND alerted_at IS NULL",
            )
            .bind(now_ms)
            .bind(&id)
            .bind(&key)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(Reserved {
        granted,
        limited_by,
    })
}

/// 422 `budget_exhausted`: an issue that cannot be cut (a perk) found its budget used up.
pub fn exhausted(brand_id: &str, budget_id: &str, wanted: i64) -> DomainError {
    DomainError::unprocessable(
        "budget_exhausted",
        format!(
            "brand {brand_id:?} has not enough budget left this period to fund {wanted} \
             (budget {budget_id})"
        ),
    )
    .with_extra(serde_json::json!({
        "brand_id": brand_id, "budget_id": budget_id, "wanted": wanted,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_keys_follow_the_local_calendar() {
        // 2026-11-30 20:00 UTC is already 2026-12-01 at UTC+8.
        let at = 1_796_068_800_000;
        assert_eq!(BudgetPeriod::Month.key(at, 0).expect("key"), "2026-11");
        assert_eq!(BudgetPeriod::Month.key(at, 480).expect("key"), "2026-12");
        assert_eq!(BudgetPeriod::Day.key(at, 480).expect("key"), "2026-12-01");
    }
}
