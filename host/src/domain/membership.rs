//! The paid membership card (付费会员): plans a brand sells for a fee per period, and what an
//! active card unlocks — benefit flags plugins see, a points multiplier on the base earn of
//! purchases, and a tier floor.
//!
//! A card is *active* while its row says `active` and `expires_at` is still ahead; a card past
//! its expiry gives nothing, even before anything marks it. Everything that reads benefits asks
//! [`active_card`] with the caller's `now_ms`, so the injected clock decides.
//!
//! # Money
//! - **Periods are fixed lengths** ([`MONTH_MS`], [`YEAR_MS`]), so the pro-rata refund is one
//!   integer computation everywhere, with no calendar in it.
//! - **Buying** (`buy`) records one `membership_payments` row per paid period (the sale, then
//!   each renewal), unique per (selling brand, `purchase_id`). Cash is taken at the selling
//!   brand's counter; stored value is drawn by the ledger's own payment
//!   ([`stored_value::pay_for`]): the same guarded debit, the same fund order, the same
//!   `stored-value-redeemed` events for draws from another brand's fund.
//! - **Renewal** (the same plan bought again while the card is active) adds one period to the
//!   current expiry, not to now.
//! - **Cancellation** refunds each paid period not yet used up: `fee × unused ms / period ms`,
//!   rounded down (a renewal paid ahead is refunded whole), back the way it was paid (stored
//!   value into the funds it came from, by [`stored_value::give_back_for`]; cash owed at the
//!   selling counter). The card ends at once.
//! - **The fee ledger** (`membership_fees`) has one signed row per sale, renewal and refund,
//!   per owning and selling brand. A card sold by one brand for another brand's plan records a
//!   `membership-fee` settle event (the seller pays the owner the fee); a refund reverses it
//!   by a `refund` event of the refunded amount.

use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, AnyPool};
use utoipa::ToSchema;

use crate::domain::tiers::{self, TiersConfig};
use crate::foundation::clock::DAY_MS;
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::{new_id, Backend, UniqueAsConflict};
use crate::ledger::member_blocked;
use crate::ledger::outbox::{self, EventKind, NewEvent};
use crate::ledger::stored_value::{self, PaidFor};

/// A month of membership: a fixed 30 days, so every pro-rata refund is the same integer sum.
pub const MONTH_MS: i64 = 30 * DAY_MS;
/// A year of membership: a fixed 365 days.
pub const YEAR_MS: i64 = 365 * DAY_MS;
/// Longest plan id and `purchase_id`.
const MAX_ID_LEN: usize = 100;
/// Longest plan title.
const MAX_TITLE_LEN: usize = 200;
/// Most benefit flags on a plan: flags are switches plugins test, not a catalogue.
const MAX_BENEFITS: usize = 16;
/// Longest benefit flag.
const MAX_BENEFIT_LEN: usize = 40;
/// Largest fee, cents (100,000.00): a typo must not sell a card for a fortune.
const MAX_FEE_CENTS: i64 = 10_000_000;
/// Longest renewal notice window, days: a notice a year ahead is noise.
const MAX_NOTICE_DAYS: i64 = 90;
/// Multiplier bounds, percent: ×1 to ×5 keeps a card from out-earning every campaign.
const MULTIPLIER_PERCENT: std::ops::RangeInclusive<i64> = 100..=500;
/// Cards noticed per read of the renewal job; bounds memory at any member count.
const NOTICE_BATCH: i64 = 500;
/// Rows in a renewal listing, and history rows and notices in a member's view.
pub const LIST_MAX: i64 = 500;
const VIEW_ROWS: i64 = 50;

/// What a member's active card unlocks right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveCard {
    /// The plan the card was bought on.
    pub plan_id: String,
    /// The plan's owning brand (it receives the fee).
    pub brand_id: String,
    /// The plan's benefit flags (short kebab-case strings, e.g. `free-delivery`).
    pub benefits: Vec<String>,
    /// Multiplier on the base earn of purchases, percent (100 = ×1, up to 500).
    pub points_multiplier_percent: u32,
    /// While active the member's tier is at least this tier code.
    pub tier_floor: Option<String>,
    /// When the card stops giving anything, Unix ms.
    pub expires_at_ms: i64,
}

/// The member's card if one is active at `now_ms` (bought, not cancelled, not past its expiry).
pub async fn active_card(
    conn: &mut AnyConnection,
    member_id: &str,
    now_ms: i64,
) -> DomainResult<Option<ActiveCard>> {
    let row: Option<(String, String, String, i64, Option<String>, i64)> = sqlx::query_as(
        "SELECT p.id, p.brand_id, p.benefits, p.points_multiplier_percent, p.tier_floor,
                c.expires_at
         FROM membership_cards c JOIN membership_plans p ON p.id = c.plan_id
         WHERE c.member_id = $1 AND c.status = 'active' AND c.expires_at > $2",
    )
    .bind(member_id)
    .bind(now_ms)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((plan_id, brand_id, benefits, multiplier, tier_floor, expires_at_ms)) = row else {
        return Ok(None);
    };
    Ok(Some(ActiveCard {
        plan_id,
        brand_id,
        benefits: parse_benefits(&benefits)?,
        points_multiplier_percent: u32::try_from(multiplier).map_err(DomainError::internal)?,
        tier_floor,
        expires_at_ms,
    }))
}

fn parse_benefits(text: &str) -> DomainResult<Vec<String>> {
    serde_json::from_str(text).map_err(DomainError::internal)
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// The `[membership]` configuration section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipConfig {
    /// Most plans (active or not): a programme sells a handful of cards, not a catalogue.
    pub max_plans: i64,
    /// Renewal notice window of a plan created without one, days.
    pub default_renewal_notice_days: i64,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            max_plans: 50,
            default_renewal_notice_days: 7,
        }
    }
}

impl MembershipConfig {
    /// Checks the section.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=1000).contains(&self.max_plans),
            "membership.max_plans must be within 1..=1000"
        );
        anyhow::ensure!(
            (0..=MAX_NOTICE_DAYS).contains(&self.default_renewal_notice_days),
            "membership.default_renewal_notice_days must be within 0..={MAX_NOTICE_DAYS}"
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Requests and views

/// How long one paid period lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
// Its own schema name: settlement has a `Period` schema (a settlement period) too.
#[schema(as = PlanPeriod)]
pub enum Period {
    /// 30 days.
    Month,
    /// 365 days.
    Year,
}

impl Period {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Month => "month",
            Period::Year => "year",
        }
    }

    /// Its length, ms.
    pub fn ms(self) -> i64 {
        match self {
            Period::Month => MONTH_MS,
            Period::Year => YEAR_MS,
        }
    }

    fn parse(text: &str) -> DomainResult<Self> {
        match text {
            "month" => Ok(Period::Month),
            "year" => Ok(Period::Year),
            other => Err(DomainError::internal(anyhow::anyhow!(
                "stored period {other:?}"
            ))),
        }
    }
}

/// How a card's fee is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Payment {
    /// Cash (or card) at the selling brand's counter.
    Cash,
    /// Drawn from the member's stored value.
    StoredValue,
}

impl Payment {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Payment::Cash => "cash",
            Payment::StoredValue => "stored_value",
        }
    }

    fn parse(text: &str) -> Self {
        if text == "stored_value" {
            Payment::StoredValue
        } else {
            Payment::Cash
        }
    }
}

fn default_multiplier() -> i64 {
    100
}

fn default_true() -> bool {
    true
}

/// A new plan.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    /// Plan id, 1..=100 bytes.
    pub id: String,
    /// Display title, 1..=200 bytes.
    pub title: String,
    /// The owning brand: it receives the fee revenue.
    pub brand_id: String,
    /// Fee per period, cents, 1..=10,000,000.
    pub fee_cents: i64,
    /// `month` (30 days) or `year` (365 days).
    pub period: Period,
    /// Benefit flags plugins see (kebab-case, e.g. `free-delivery`), at most 16.
    #[serde(default)]
    pub benefits: Vec<String>,
    /// Multiplier on the base earn of purchases while the card is active, percent, 100..=500.
    #[serde(default = "default_multiplier")]
    pub points_multiplier_percent: i64,
    /// While the card is active the member's tier is at least this tier code.
    #[serde(default)]
    pub tier_floor: Option<String>,
    /// Days before expiry a renewal notice is recorded, 0..=90 (default
    /// `[membership] default_renewal_notice_days`).
    #[serde(default)]
    pub renewal_notice_days: Option<i64>,
    /// Whether the plan is on sale.
    #[serde(default = "default_true")]
    pub active: bool,
}

/// Changes to a plan (absent fields stay). A changed fee applies to sales and renewals from now
/// on; cards already paid keep what they paid.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanPatch {
    /// New title.
    #[serde(default)]
    pub title: Option<String>,
    /// New fee per period, cents.
    #[serde(default)]
    pub fee_cents: Option<i64>,
    /// New benefit flags (replacing the old).
    #[serde(default)]
    pub benefits: Option<Vec<String>>,
    /// New multiplier, percent.
    #[serde(default)]
    pub points_multiplier_percent: Option<i64>,
    /// New tier floor; `""` removes it.
    #[serde(default)]
    pub tier_floor: Option<String>,
    /// New notice window, days.
    #[serde(default)]
    pub renewal_notice_days: Option<i64>,
    /// On sale or not.
    #[serde(default)]
    pub active: Option<bool>,
}

/// A plan.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanView {
    /// Plan id.
    pub id: String,
    /// Display title.
    pub title: String,
    /// The owning brand.
    pub brand_id: String,
    /// Fee per period, cents.
    pub fee_cents: i64,
    /// `month` or `year`.
    pub period: Period,
    /// Benefit flags.
    pub benefits: Vec<String>,
    /// Multiplier on base earn, percent.
    pub points_multiplier_percent: i64,
    /// Tier floor while active.
    pub tier_floor: Option<String>,
    /// Notice window, days.
    pub renewal_notice_days: i64,
    /// On sale.
    pub active: bool,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Unix ms.
    pub updated_at_ms: i64,
}

/// Buying (or renewing) a card.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuyRequest {
    /// The selling brand's order id, unique per brand, 1..=100 bytes.
    pub purchase_id: String,
    /// The plan.
    pub plan_id: String,
    /// `cash` or `stored_value`.
    pub payment: Payment,
    /// The selling brand: a counter key sells for its own brand (and may omit it); an admin
    /// names it (default: the plan's owning brand).
    #[serde(default)]
    pub brand_id: Option<String>,
}

/// A card.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CardView {
    /// Card id.
    pub id: String,
    /// The member.
    pub member_id: String,
    /// The plan.
    pub plan_id: String,
    /// `active`, `cancelled` or `lapsed` (replaced after expiry).
    pub status: String,
    /// Whether it gives its benefits now (active and not past its expiry).
    pub in_force: bool,
    /// Unix ms.
    pub started_at_ms: i64,
    /// End of the last paid period, Unix ms.
    pub expires_at_ms: i64,
    /// When it was cancelled or replaced, Unix ms.
    pub ended_at_ms: Option<i64>,
}

/// One fee paid for a period of a card.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PaymentView {
    /// Payment id.
    pub id: String,
    /// `sale` or `renewal`.
    pub kind: String,
    /// `cash` or `stored_value`.
    pub payment: Payment,
    /// The selling brand.
    pub selling_brand: String,
    /// The plan's owning brand.
    pub owning_brand: String,
    /// The selling brand's order id.
    pub purchase_id: String,
    /// Fee, cents.
    pub fee_cents: i64,
    /// What cancellation refunded of it, cents.
    pub refunded_cents: i64,
    /// The paid period, Unix ms.
    pub period_start_ms: i64,
    /// End of the paid period, Unix ms.
    pub period_end_ms: i64,
    /// Unix ms.
    pub created_at_ms: i64,
}

/// The result of buying a card.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BuyView {
    /// The card after the sale or renewal.
    pub card: CardView,
    /// The fee just paid.
    pub payment: PaymentView,
}

/// What a cancellation gave back of one paid period.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RefundLine {
    /// The payment refunded.
    pub payment_id: String,
    /// `cash` (owed at the selling counter) or `stored_value` (back into the member's funds).
    pub payment: Payment,
    /// The brand that took the fee and gives it back.
    pub selling_brand: String,
    /// Cents.
    pub refund_cents: i64,
}

/// The result of a cancellation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CancelView {
    /// The card, now cancelled.
    pub card: CardView,
    /// Total refunded, cents.
    pub refund_cents: i64,
    /// Of it, cash owed to the member at the selling counter, cents.
    pub cash_refund_cents: i64,
    /// Of it, returned to stored value, cents.
    pub stored_value_refund_cents: i64,
    /// Per paid period.
    pub refunds: Vec<RefundLine>,
}

/// A renewal notice.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NoticeView {
    /// The card.
    pub card_id: String,
    /// The expiry it announces, Unix ms.
    pub expires_at_ms: i64,
    /// When recorded, Unix ms.
    pub created_at_ms: i64,
}

/// One row of the fee ledger.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FeeView {
    /// `sale`, `renewal` or `refund`.
    pub kind: String,
    /// The payment.
    pub payment_id: String,
    /// The card.
    pub card_id: String,
    /// The plan's owning brand.
    pub owning_brand: String,
    /// The selling brand.
    pub selling_brand: String,
    /// `cash` or `stored_value`.
    pub payment: Payment,
    /// Signed cents (refunds negative).
    pub amount_cents: i64,
    /// Unix ms.
    pub created_at_ms: i64,
}

/// A member's membership.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MembershipView {
    /// The member.
    pub member_id: String,
    /// The newest card, if the member ever had one.
    pub card: Option<CardView>,
    /// Its plan.
    pub plan: Option<PlanView>,
    /// Benefit flags in force now (empty without an active card).
    pub benefits: Vec<String>,
    /// Renewal notices of the card, newest first.
    pub notices: Vec<NoticeView>,
    /// The member's fee ledger rows, newest first (at most 50).
    pub history: Vec<FeeView>,
}

/// A card expiring within a notice window.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RenewalLine {
    /// The card.
    pub card_id: String,
    /// The member.
    pub member_id: String,
    /// The plan.
    pub plan_id: String,
    /// The plan's owning brand.
    pub brand_id: String,
    /// Unix ms.
    pub expires_at_ms: i64,
    /// When its renewal notice for this expiry was recorded, if it was.
    pub noticed_at_ms: Option<i64>,
}

/// What the renewal-notice job did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct NoticeReport {
    /// Notices recorded by this run.
    pub noticed: i64,
}

/// Fee revenue of one owning brand.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevenueLine {
    /// The owning brand.
    pub brand_id: String,
    /// First sales, cents.
    pub sales_cents: i64,
    /// Renewals, cents.
    pub renewals_cents: i64,
    /// Refunds, cents (positive).
    pub refunds_cents: i64,
    /// Sales + renewals − refunds, cents.
    pub net_cents: i64,
    /// Of the net, what other brands sold (and owe through settlement), cents.
    pub sold_by_others_cents: i64,
    /// Cards of its plans in force now.
    pub active_cards: i64,
}

// ---------------------------------------------------------------------------------------------
// Validation

fn check_id(field: &str, value: &str) -> DomainResult<()> {
    if value.is_empty() || value.len() > MAX_ID_LEN || value.chars().any(char::is_control) {
        return Err(DomainError::validation(format!(
            "{field} must be 1..={MAX_ID_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

fn check_title(title: &str) -> DomainResult<()> {
    if title.trim().is_empty() || title.len() > MAX_TITLE_LEN {
        return Err(DomainError::bad_request(
            "invalid_plan_title",
            format!("title must be 1..={MAX_TITLE_LEN} bytes"),
        ));
    }
    Ok(())
}

fn check_fee(fee_cents: i64) -> DomainResult<()> {
    if !(1..=MAX_FEE_CENTS).contains(&fee_cents) {
        return Err(DomainError::bad_request(
            "invalid_fee",
            format!("fee_cents must be 1..={MAX_FEE_CENTS}"),
        ));
    }
    Ok(())
}

fn check_multiplier(percent: i64) -> DomainResult<()> {
    if !MULTIPLIER_PERCENT.contains(&percent) {
        return Err(DomainError::bad_request(
            "invalid_multiplier",
            "points_multiplier_percent must be 100..=500 (100 = x1)",
        ));
    }
    Ok(())
}

fn check_notice_days(days: i64) -> DomainResult<()> {
    if !(0..=MAX_NOTICE_DAYS).contains(&days) {
        return Err(DomainError::bad_request(
            "invalid_notice_days",
            format!("renewal_notice_days must be 0..={MAX_NOTICE_DAYS}"),
        ));
    }
    Ok(())
}

/// A benefit flag is short kebab-case: lowercase letters and digits in words joined by `-`.
pub fn is_benefit_flag(flag: &str) -> bool {
    !flag.is_empty()
        && flag.len() <= MAX_BENEFIT_LEN
        && flag.split('-').all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

fn check_benefits(benefits: &[String]) -> DomainResult<()> {
    if benefits.len() > MAX_BENEFITS {
        return Err(DomainError::bad_request(
            "invalid_benefit",
            format!("a plan has at most {MAX_BENEFITS} benefit flags"),
        ));
    }
    for (i, flag) in benefits.iter().enumerate() {
        if !is_benefit_flag(flag) {
            return Err(DomainError::bad_request(
                "invalid_benefit",
                format!(
                    "benefit {flag:?} must be kebab-case (a-z, 0-9, words joined by '-'), \
                     1..={MAX_BENEFIT_LEN} bytes"
                ),
            ));
        }
        if benefits[..i].contains(flag) {
            return Err(DomainError::bad_request(
                "invalid_benefit",
                format!("benefit {flag:?} is listed twice"),
            ));
        }
    }
    Ok(())
}

async fn check_tier_floor(
    conn: &mut AnyConnection,
    tiers_config: &TiersConfig,
    floor: Option<&str>,
) -> DomainResult<()> {
    let Some(code) = floor else {
        return Ok(());
    };
    let ladder = tiers::load_ladder(conn, tiers_config).await?;
    if !ladder.iter().any(|t| t.code == code) {
        return Err(DomainError::bad_request(
            "unknown_tier",
            format!("tier_floor {code:?} is not a tier of the ladder"),
        )
        .with_extra(serde_json::json!({
            "tiers": ladder.iter().map(|t| t.code.clone()).collect::<Vec<_>>(),
        })));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Plans

type PlanRow = (
    String,
    String,
    String,
    i64,
    String,
    String,
    i64,
    Option<String>,
    i64,
    i64,
    i64,
    i64,
);

const PLAN_COLUMNS: &str = "id, title, brand_id, fee_cents, period, benefits, \
    points_multiplier_percent, tier_floor, renewal_notice_days, active, created_at, updated_at";

fn plan_view(row: PlanRow) -> DomainResult<PlanView> {
    let (id, title, brand_id, fee_cents, period, benefits, mult, floor, notice, active, c, u) = row;
    Ok(PlanView {
        id,
        title,
        brand_id,
        fee_cents,
        period: Period::parse(&period)?,
        benefits: parse_benefits(&benefits)?,
        points_multiplier_percent: mult,
        tier_floor: floor,
        renewal_notice_days: notice,
        active: active == 1,
        created_at_ms: c,
        updated_at_ms: u,
    })
}

/// One plan; unknown: 404.
pub async fn plan(conn: &mut AnyConnection, plan_id: &str) -> DomainResult<PlanView> {
    let row: Option<PlanRow> = sqlx::query_as(&format!(
        "SELECT {PLAN_COLUMNS} FROM membership_plans WHERE id = $1"
    ))
    .bind(plan_id)
    .fetch_optional(&mut *conn)
    .await?;
    plan_view(row.ok_or_else(|| DomainError::not_found("membership plan", plan_id))?)
}

/// Every plan (at most `max_plans` exist), or one brand's.
pub async fn plans(pool: &AnyPool, brand_id: Option<&str>) -> DomainResult<Vec<PlanView>> {
    let rows: Vec<PlanRow> = sqlx::query_as(&format!(
        "SELECT {PLAN_COLUMNS} FROM membership_plans
         WHERE ($1 IS NULL OR brand_id = $1) ORDER BY id"
    ))
    .bind(brand_id)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(plan_view).collect()
}

/// Creates a plan, in the caller's transaction.
pub async fn create_plan(
    conn: &mut AnyConnection,
    config: &MembershipConfig,
    tiers_config: &TiersConfig,
    req: &PlanRequest,
    now_ms: i64,
) -> DomainResult<PlanView> {
    check_id("id", &req.id)?;
    check_title(&req.title)?;
    check_fee(req.fee_cents)?;
    check_multiplier(req.points_multiplier_percent)?;
    check_benefits(&req.benefits)?;
    let notice_days = req
        .renewal_notice_days
        .unwrap_or(config.default_renewal_notice_days);
    check_notice_days(notice_days)?;
    check_tier_floor(conn, tiers_config, req.tier_floor.as_deref()).await?;
    let brand: Option<(String,)> = sqlx::query_as("SELECT id FROM brands WHERE id = $1")
        .bind(&req.brand_id)
        .fetch_optional(&mut *conn)
        .await?;
    if brand.is_none() {
        return Err(DomainError::bad_request(
            "unknown_brand",
            format!("brand {:?} does not exist", req.brand_id),
        ));
    }
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM membership_plans")
        .fetch_one(&mut *conn)
        .await?;
    if count >= config.max_plans {
        return Err(DomainError::unprocessable(
            "plan_limit_reached",
            format!(
                "at most {} plans ([membership] max_plans)",
                config.max_plans
            ),
        ));
    }
    let benefits = serde_json::to_string(&req.benefits).map_err(DomainError::internal)?;
    sqlx::query(
        "INSERT INTO membership_plans (id, title, brand_id, fee_cents, period, benefits,
            points_multiplier_percent, tier_floor, renewal_notice_days, active, created_at,
            updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
    )
    .bind(&req.id)
    .bind(&req.title)
    .bind(&req.brand_id)
    .bind(req.fee_cents)
    .bind(req.period.as_str())
    .bind(&benefits)
    .bind(req.points_multiplier_percent)
    .bind(req.tier_floor.as_deref())
    .bind(notice_days)
    .bind(i64::from(req.active))
    .bind(now_ms)
    .execute(&mut *conn)
    .await
    .unique_as(|| {
        DomainError::conflict("plan_exists", format!("plan {:?} already exists", req.id))
    })?;
    plan(conn, &req.id).await
}

/// Changes a plan, in the caller's transaction.
pub async fn update_plan(
    conn: &mut AnyConnection,
    tiers_config: &TiersConfig,
    plan_id: &str,
    patch: &PlanPatch,
    now_ms: i64,
) -> DomainResult<PlanView> {
    let mut current = plan(conn, plan_id).await?;
    if let Some(title) = &patch.title {
        check_title(title)?;
        current.title.clone_from(title);
    }
    if let Some(fee) = patch.fee_cents {
        check_fee(fee)?;
        current.fee_cents = fee;
    }
    if let Some(benefits) = &patch.benefits {
        check_benefits(benefits)?;
        current.benefits.clone_from(benefits);
    }
    if let Some(mult) = patch.points_multiplier_percent {
        check_multiplier(mult)?;
        current.points_multiplier_percent = mult;
    }
    if let Some(floor) = &patch.tier_floor {
        current.tier_floor = (!floor.is_empty()).then(|| floor.clone());
        check_tier_floor(conn, tiers_config, current.tier_floor.as_deref()).await?;
    }
    if let Some(days) = patch.renewal_notice_days {
        check_notice_days(days)?;
        current.renewal_notice_days = days;
    }
    if let Some(active) = patch.active {
        current.active = active;
    }
    let benefits = serde_json::to_string(&current.benefits).map_err(DomainError::internal)?;
    sqlx::query(
        "UPDATE membership_plans SET title = $1, fee_cents = $2, benefits = $3,
            points_multiplier_percent = $4, tier_floor = $5, renewal_notice_days = $6,
            active = $7, updated_at = $8 WHERE id = $9",
    )
    .bind(&current.title)
    .bind(current.fee_cents)
    .bind(&benefits)
    .bind(current.points_multiplier_percent)
    .bind(current.tier_floor.as_deref())
    .bind(current.renewal_notice_days)
    .bind(i64::from(current.active))
    .bind(now_ms)
    .bind(plan_id)
    .execute(&mut *conn)
    .await?;
    plan(conn, plan_id).await
}

// ---------------------------------------------------------------------------------------------
// Cards

type CardRow = (String, String, String, String, i64, i64, Option<i64>);

const CARD_COLUMNS: &str = "id, member_id, plan_id, status, started_at, expires_at, ended_at";

fn card_view(row: CardRow, now_ms: i64) -> CardView {
    let (id, member_id, plan_id, status, started, expires, ended) = row;
    CardView {
        in_force: status == "active" && expires > now_ms,
        id,
        member_id,
        plan_id,
        status,
        started_at_ms: started,
        expires_at_ms: expires,
        ended_at_ms: ended,
    }
}

async fn card(conn: &mut AnyConnection, card_id: &str, now_ms: i64) -> DomainResult<CardView> {
    let row: CardRow = sqlx::query_as(&format!(
        "SELECT {CARD_COLUMNS} FROM membership_cards WHERE id = $1"
    ))
    .bind(card_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(card_view(row, now_ms))
}

/// Locks the member's row for a card write (cards of one member queue on it) and refuses
/// blocked members. Unknown member: 404.
async fn lock_member(
    conn: &mut AnyConnection,
    backend: Backend,
    member_id: &str,
) -> DomainResult<String> {
    let sql = format!(
        "SELECT status FROM members WHERE id = $1{}",
        match backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    );
    let row: Option<(String,)> = sqlx::query_as(&sql)
        .bind(member_id)
        .fetch_optional(&mut *conn)
        .await?;
    let (status,) = row.ok_or_else(|| DomainError::not_found("member", member_id))?;
    Ok(status)
}

type PaymentRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
);

const PAYMENT_COLUMNS: &str = "id, kind, payment, selling_brand, owning_brand, purchase_id, \
    fee_cents, refunded_cents, period_start, period_end, created_at";

fn payment_view(row: PaymentRow) -> PaymentView {
    let (id, kind, payment, selling, owning, purchase_id, fee, refunded, start, end, at) = row;
    PaymentView {
        id,
        kind,
        payment: Payment::parse(&payment),
        selling_brand: selling,
        owning_brand: owning,
        purchase_id,
        fee_cents: fee,
        refunded_cents: refunded,
        period_start_ms: start,
        period_end_ms: end,
        created_at_ms: at,
    }
}

/// Buys (or renews) a card for `member_id` sold by `selling_brand`, in the caller's
/// transaction. The same plan bought while the card is in force renews it: one more period
/// from the current expiry.
pub async fn buy(
    conn: &mut AnyConnection,
    backend: Backend,
    selling_brand: &str,
    member_id: &str,
    req: &BuyRequest,
    now_ms: i64,
) -> DomainResult<BuyView> {
    check_id("purchase_id", &req.purchase_id)?;
    check_id("plan_id", &req.plan_id)?;
    let plan = plan(conn, &req.plan_id).await?;
    if !plan.active {
        return Err(DomainError::unprocessable(
            "plan_inactive",
            format!("plan {:?} is not on sale", plan.id),
        ));
    }
    let brand: Option<(String,)> = sqlx::query_as("SELECT status FROM brands WHERE id = $1")
        .bind(selling_brand)
        .fetch_optional(&mut *conn)
        .await?;
    match brand {
        None => {
            return Err(DomainError::bad_request(
                "unknown_brand",
                format!("brand {selling_brand:?} does not exist"),
            ))
        }
        Some((status,)) if status != "active" => {
            return Err(DomainError::unprocessable(
                "brand_suspended",
                format!("brand {selling_brand:?} is suspended and cannot sell cards"),
            ))
        }
        Some(_) => {}
    }
    if lock_member(conn, backend, member_id).await? != "active" {
        return Err(member_blocked(member_id));
    }
    let current: Option<CardRow> = sqlx::query_as(&format!(
        "SELECT {CARD_COLUMNS} FROM membership_cards WHERE member_id = $1 AND status = 'active'"
    ))
    .bind(member_id)
    .fetch_optional(&mut *conn)
    .await?;
    let period_ms = plan.period.ms();
    let (card_id, kind, period_start) = match current {
        Some((id, _, plan_id, _, _, expires, _)) if expires > now_ms => {
            if plan_id != plan.id {
                return Err(DomainError::conflict(
                    "membership_active",
                    format!(
                        "the member holds an active card of plan {plan_id:?}; cancel it before \
                         buying another plan"
                    ),
                )
                .with_extra(serde_json::json!({ "plan_id": plan_id, "expires_at_ms": expires })));
            }
            sqlx::query(
                "UPDATE membership_cards SET expires_at = $1 WHERE id = $2 AND status = 'active'",
            )
            .bind(expires.saturating_add(period_ms))
            .bind(&id)
            .execute(&mut *conn)
            .await?;
            (id, "renewal", expires)
        }
        previous => {
            if let Some((id, _, _, _, _, expires, _)) = previous {
                // Past its expiry it gives nothing already; it makes room for the new card.
                sqlx::query(
                    "UPDATE membership_cards SET status = 'lapsed', ended_at = $1 WHERE id = $2",
                )
                .bind(expires)
                .bind(&id)
                .execute(&mut *conn)
                .await?;
            }
            let id = new_id();
            sqlx::query(
                "INSERT INTO membership_cards (id, member_id, plan_id, status, started_at,
                    expires_at, created_at) VALUES ($1, $2, $3, 'active', $4, $5, $4)",
            )
            .bind(&id)
            .bind(member_id)
            .bind(&plan.id)
            .bind(now_ms)
            .bind(now_ms.saturating_add(period_ms))
            .execute(&mut *conn)
            .await
            .unique_as(|| {
                DomainError::conflict(
                    "membership_active",
                    "the member already holds an active card",
                )
            })?;
            (id, "sale", now_ms)
        }
    };
    let payment_id = new_id();
    let period_end = period_start.saturating_add(period_ms);
    sqlx::query(
        "INSERT INTO membership_payments (id, card_id, member_id, plan_id, owning_brand,
            selling_brand, purchase_id, kind, payment, fee_cents, period_start, period_end,
            refunded_cents, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, $13)",
    )
    .bind(&payment_id)
    .bind(&card_id)
    .bind(member_id)
    .bind(&plan.id)
    .bind(&plan.brand_id)
    .bind(selling_brand)
    .bind(&req.purchase_id)
    .bind(kind)
    .bind(req.payment.as_str())
    .bind(plan.fee_cents)
    .bind(period_start)
    .bind(period_end)
    .bind(now_ms)
    .execute(&mut *conn)
    .await
    .unique_as(|| {
        DomainError::conflict(
            "membership_purchase_exists",
            format!(
                "brand {selling_brand:?} already recorded purchase {:?}",
                req.purchase_id
            ),
        )
    })?;
    if req.payment == Payment::StoredValue {
        stored_value::pay_for(
            conn,
            backend,
            member_id,
            selling_brand,
            PaidFor::MembershipFee(&payment_id),
            plan.fee_cents,
            now_ms,
        )
        .await?;
    }
    record_fee(
        conn,
        kind,
        &payment_id,
        &card_id,
        member_id,
        (&plan.brand_id, selling_brand),
        req.payment,
        plan.fee_cents,
        now_ms,
    )
    .await?;
    if selling_brand != plan.brand_id {
        let event_id = outbox::record(
            conn,
            &NewEvent {
                kind: EventKind::MembershipFee,
                brand_id: selling_brand,
                funding_brand: selling_brand,
                honouring_brand: &plan.brand_id,
                reference: Some(&plan.id),
                plugin: None,
                points: 0,
                value_cents: plan.fee_cents,
                member_id: Some(member_id),
                subject_kind: "membership_payment",
                subject_id: &payment_id,
                reverses_event_id: None,
                occurred_at: now_ms,
            },
            now_ms,
        )
        .await?;
        sqlx::query("UPDATE membership_payments SET event_id = $1 WHERE id = $2")
            .bind(event_id)
            .bind(&payment_id)
            .execute(&mut *conn)
            .await?;
    }
    let row: PaymentRow = sqlx::query_as(&format!(
        "SELECT {PAYMENT_COLUMNS} FROM membership_payments WHERE id = $1"
    ))
    .bind(&payment_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(BuyView {
        card: card(conn, &card_id, now_ms).await?,
        payment: payment_view(row),
    })
}

#[allow(clippy::too_many_arguments)]
async fn record_fee(
    conn: &mut AnyConnection,
    kind: &str,
    payment_id: &str,
    card_id: &str,
    member_id: &str,
    (owning_brand, selling_brand): (&str, &str),
    payment: Payment,
    amount_cents: i64,
    now_ms: i64,
) -> DomainResult<()> {
    sqlx::query(
        "INSERT INTO membership_fees (id, kind, payment_id, card_id, member_id, owning_brand,
            selling_brand, payment, amount_cents, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(new_id())
    .bind(kind)
    .bind(payment_id)
    .bind(card_id)
    .bind(member_id)
    .bind(owning_brand)
    .bind(selling_brand)
    .bind(payment.as_str())
    .bind(amount_cents)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The pro-rata refund of one paid period at `now_ms`: `fee × unused / period`, rounded down.
/// A period not yet started is refunded whole; a period over refunds nothing.
pub fn pro_rata_refund(fee_cents: i64, period_start: i64, period_end: i64, now_ms: i64) -> i64 {
    let period = period_end - period_start;
    if period <= 0 || now_ms >= period_end {
        return 0;
    }
    let unused = period_end - now_ms.max(period_start);
    i64::try_from(i128::from(fee_cents) * i128::from(unused) / i128::from(period)).unwrap_or(0)
}

/// The member's newest card, if any.
async fn latest_card(conn: &mut AnyConnection, member_id: &str) -> DomainResult<Option<CardRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {CARD_COLUMNS} FROM membership_cards WHERE member_id = $1
         ORDER BY created_at DESC, id DESC LIMIT 1"
    ))
    .bind(member_id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Who may cancel: an admin (`None`), or a brand that owns the plan or sold a period of it.
async fn may_cancel(
    conn: &mut AnyConnection,
    card_id: &str,
    plan_id: &str,
    brand: Option<&str>,
) -> DomainResult<()> {
    let Some(brand) = brand else {
        return Ok(());
    };
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM membership_payments
         WHERE card_id = $1 AND (owning_brand = $2 OR selling_brand = $2)",
    )
    .bind(card_id)
    .bind(brand)
    .fetch_one(&mut *conn)
    .await?;
    if n == 0 {
        return Err(DomainError::forbidden(format!(
            "brand {brand:?} neither owns plan {plan_id:?} nor sold this card"
        )));
    }
    Ok(())
}

async fn cancellation(conn: &mut AnyConnection, card: CardView) -> DomainResult<CancelView> {
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT payment_id, payment, selling_brand, -amount_cents FROM membership_fees
         WHERE card_id = $1 AND kind = 'refund' ORDER BY created_at, id",
    )
    .bind(&card.id)
    .fetch_all(&mut *conn)
    .await?;
    let refunds: Vec<RefundLine> = rows
        .into_iter()
        .map(
            |(payment_id, payment, selling_brand, refund_cents)| RefundLine {
                payment_id,
                payment: Payment::parse(&payment),
                selling_brand,
                refund_cents,
            },
        )
        .collect();
    let sum = |p: Payment| {
        refunds
            .iter()
            .filter(|r| r.payment == p)
            .map(|r| r.refund_cents)
            .sum::<i64>()
    };
    Ok(CancelView {
        refund_cents: refunds.iter().map(|r| r.refund_cents).sum(),
        cash_refund_cents: sum(Payment::Cash),
        stored_value_refund_cents: sum(Payment::StoredValue),
        card,
        refunds,
    })
}

/// id, payment, owning brand, selling brand, fee, period start and end, settle event.
type RefundablePayment = (
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    Option<String>,
);

/// Cancels the member's card now with a pro-rata refund of every paid period not used up, in
/// the caller's transaction. `brand`: the acting brand (`None` for an admin). Cancelling a card
/// already cancelled answers with that cancellation; a card past its expiry:
/// `422 membership_expired`; no card: `404`.
pub async fn cancel(
    conn: &mut AnyConnection,
    backend: Backend,
    brand: Option<&str>,
    member_id: &str,
    now_ms: i64,
) -> DomainResult<CancelView> {
    lock_member(conn, backend, member_id).await?;
    let Some(row) = latest_card(conn, member_id).await? else {
        return Err(DomainError::not_found(
            "membership card of member",
            member_id,
        ));
    };
    let view = card_view(row, now_ms);
    may_cancel(conn, &view.id, &view.plan_id, brand).await?;
    match view.status.as_str() {
        "cancelled" => return cancellation(conn, view).await,
        "active" if view.in_force => {}
        _ => {
            return Err(DomainError::unprocessable(
                "membership_expired",
                format!(
                    "the member's card expired at {} ms; there is nothing to cancel",
                    view.expires_at_ms
                ),
            )
            .with_extra(serde_json::json!({ "expires_at_ms": view.expires_at_ms })))
        }
    }
    let payments: Vec<RefundablePayment> = sqlx::query_as(
        "SELECT id, payment, owning_brand, selling_brand, fee_cents, period_start,
                period_end, event_id FROM membership_payments
             WHERE card_id = $1 AND period_end > $2 AND refunded_cents = 0
             ORDER BY period_start, id",
    )
    .bind(&view.id)
    .bind(now_ms)
    .fetch_all(&mut *conn)
    .await?;
    for (payment_id, payment, owning, selling, fee, start, end, event_id) in payments {
        let refund = pro_rata_refund(fee, start, end, now_ms);
        if refund <= 0 {
            continue;
        }
        let updated = sqlx::query(
            "UPDATE membership_payments SET refunded_cents = $1
             WHERE id = $2 AND refunded_cents = 0",
        )
        .bind(refund)
        .bind(&payment_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if updated != 1 {
            return Err(DomainError::internal(anyhow::anyhow!(
                "membership payment {payment_id} was refunded under the member lock"
            )));
        }
        let payment = Payment::parse(&payment);
        if payment == Payment::StoredValue {
            stored_value::give_back_for(
                conn,
                backend,
                member_id,
                &selling,
                PaidFor::MembershipFee(&payment_id),
                &view.id,
                refund,
                now_ms,
            )
            .await?;
        }
        record_fee(
            conn,
            "refund",
            &payment_id,
            &view.id,
            member_id,
            (&owning, &selling),
            payment,
            -refund,
            now_ms,
        )
        .await?;
        if let Some(event_id) = event_id {
            outbox::record(
                conn,
                &NewEvent {
                    kind: EventKind::Refund,
                    brand_id: &selling,
                    funding_brand: &selling,
                    honouring_brand: &owning,
                    reference: Some(EventKind::MembershipFee.as_str()),
                    plugin: None,
                    points: 0,
                    value_cents: refund,
                    member_id: Some(member_id),
                    subject_kind: "membership_cancel",
                    subject_id: &payment_id,
                    reverses_event_id: Some(&event_id),
                    occurred_at: now_ms,
                },
                now_ms,
            )
            .await?;
        }
    }
    sqlx::query(
        "UPDATE membership_cards SET status = 'cancelled', ended_at = $1
         WHERE id = $2 AND status = 'active'",
    )
    .bind(now_ms)
    .bind(&view.id)
    .execute(&mut *conn)
    .await?;
    let card = card(conn, &view.id, now_ms).await?;
    cancellation(conn, card).await
}

// ---------------------------------------------------------------------------------------------
// Reads, renewals and revenue

/// kind, payment id, card id, owning brand, selling brand, payment, amount, created at.
type FeeRow = (String, String, String, String, String, String, i64, i64);

/// A member's membership: the newest card, its plan, notices and the fee history.
pub async fn view(pool: &AnyPool, member_id: &str, now_ms: i64) -> DomainResult<MembershipView> {
    let mut conn = pool.acquire().await?;
    let exists: Option<(String,)> = sqlx::query_as("SELECT id FROM members WHERE id = $1")
        .bind(member_id)
        .fetch_optional(&mut *conn)
        .await?;
    if exists.is_none() {
        return Err(DomainError::not_found("member", member_id));
    }
    let card = latest_card(&mut conn, member_id)
        .await?
        .map(|row| card_view(row, now_ms));
    let plan = match &card {
        Some(c) => Some(plan(&mut conn, &c.plan_id).await?),
        None => None,
    };
    let benefits = match (&card, &plan) {
        (Some(c), Some(p)) if c.in_force => p.benefits.clone(),
        _ => Vec::new(),
    };
    let notices: Vec<(String, i64, i64)> = match &card {
        Some(c) => {
            sqlx::query_as(
                "SELECT card_id, expires_at, created_at FROM membership_notices
                 WHERE card_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
            )
            .bind(&c.id)
            .bind(VIEW_ROWS)
            .fetch_all(&mut *conn)
            .await?
        }
        None => Vec::new(),
    };
    let history: Vec<FeeRow> = sqlx::query_as(
        "SELECT kind, payment_id, card_id, owning_brand, selling_brand, payment,
                amount_cents, created_at FROM membership_fees WHERE member_id = $1
             ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(member_id)
    .bind(VIEW_ROWS)
    .fetch_all(&mut *conn)
    .await?;
    Ok(MembershipView {
        member_id: member_id.to_owned(),
        card,
        plan,
        benefits,
        notices: notices
            .into_iter()
            .map(|(card_id, expires, at)| NoticeView {
                card_id,
                expires_at_ms: expires,
                created_at_ms: at,
            })
            .collect(),
        history: history
            .into_iter()
            .map(
                |(kind, payment_id, card_id, owning, selling, payment, amount, at)| FeeView {
                    kind,
                    payment_id,
                    card_id,
                    owning_brand: owning,
                    selling_brand: selling,
                    payment: Payment::parse(&payment),
                    amount_cents: amount,
                    created_at_ms: at,
                },
            )
            .collect(),
    })
}

/// Cards in force expiring within `within_days` (or, without it, within their plan's notice
/// window), soonest first, at most [`LIST_MAX`]; `brand_id` keeps one owning brand's plans.
pub async fn renewals(
    pool: &AnyPool,
    brand_id: Option<&str>,
    within_days: Option<i64>,
    now_ms: i64,
) -> DomainResult<Vec<RenewalLine>> {
    if let Some(days) = within_days {
        if !(0..=366).contains(&days) {
            return Err(DomainError::validation("within_days must be 0..=366"));
        }
    }
    let rows: Vec<(String, String, String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT c.id, c.member_id, c.plan_id, p.brand_id, c.expires_at,
            (SELECT n.created_at FROM membership_notices n
             WHERE n.card_id = c.id AND n.expires_at = c.expires_at)
         FROM membership_cards c JOIN membership_plans p ON p.id = c.plan_id
         WHERE c.status = 'active' AND c.expires_at > $1
           AND c.expires_at <= $1 + COALESCE($2, p.renewal_notice_days) * $3
           AND ($4 IS NULL OR p.brand_id = $4)
         ORDER BY c.expires_at, c.id LIMIT $5",
    )
    .bind(now_ms)
    .bind(within_days)
    .bind(DAY_MS)
    .bind(brand_id)
    .bind(LIST_MAX)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(card_id, member_id, plan_id, brand_id, expires, noticed)| RenewalLine {
                card_id,
                member_id,
                plan_id,
                brand_id,
                expires_at_ms: expires,
                noticed_at_ms: noticed,
            },
        )
        .collect())
}

/// The renewal-notice job: records one notice per card and expiry for every card in force
/// inside its plan's notice window. The notice row is unique per (card, expiry), so a second
/// run, or another node, records nothing twice; a renewal moves the expiry and so earns the
/// next period its own notice.
pub async fn record_notices(pool: &AnyPool, now_ms: i64) -> DomainResult<NoticeReport> {
    let mut report = NoticeReport::default();
    loop {
        let due: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT c.id, c.member_id, c.expires_at
             FROM membership_cards c JOIN membership_plans p ON p.id = c.plan_id
             WHERE c.status = 'active' AND c.expires_at > $1
               AND c.expires_at <= $1 + p.renewal_notice_days * $2
               AND NOT EXISTS (SELECT 1 FROM membership_notices n
                               WHERE n.card_id = c.id AND n.expires_at = c.expires_at)
             ORDER BY c.expires_at, c.id LIMIT $3",
        )
        .bind(now_ms)
        .bind(DAY_MS)
        .bind(NOTICE_BATCH)
        .fetch_all(pool)
        .await?;
        if due.is_empty() {
            return Ok(report);
        }
        for (card_id, member_id, expires) in due {
            report.noticed += i64::try_from(
                sqlx::query(
                    "INSERT INTO membership_notices (id, card_id, member_id, expires_at,
                        created_at) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (card_id, expires_at) DO NOTHING",
                )
                .bind(new_id())
                .bind(&card_id)
                .bind(&member_id)
                .bind(expires)
                .bind(now_ms)
                .execute(pool)
                .await?
                .rows_affected(),
            )
            .unwrap_or(0);
        }
    }
}

/// Fee revenue per owning brand (all, or one), from the fee ledger, with its cards in force.
pub async fn revenue(
    pool: &AnyPool,
    brand_id: Option<&str>,
    now_ms: i64,
) -> DomainResult<Vec<RevenueLine>> {
    let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT owning_brand,
            CAST(COALESCE(SUM(CASE WHEN kind = 'sale' THEN amount_cents ELSE 0 END), 0) AS BIGINT),
            CAST(COALESCE(SUM(CASE WHEN kind = 'renewal' THEN amount_cents ELSE 0 END), 0)
                AS BIGINT),
            CAST(COALESCE(SUM(CASE WHEN kind = 'refund' THEN -amount_cents ELSE 0 END), 0)
                AS BIGINT),
            CAST(COALESCE(SUM(CASE WHEN selling_brand <> owning_brand THEN amount_cents
                ELSE 0 END), 0) AS BIGINT)
         FROM membership_fees WHERE ($1 IS NULL OR owning_brand = $1)
         GROUP BY owning_brand ORDER BY owning_brand",
    )
    .bind(brand_id)
    .fetch_all(pool)
    .await?;
    let active: Vec<(String, i64)> = sqlx::query_as(
        "SELECT p.brand_id, CAST(COUNT(*) AS BIGINT)
         FROM membership_cards c JOIN membership_plans p ON p.id = c.plan_id
         WHERE c.status = 'active' AND c.expires_at > $1 GROUP BY p.brand_id",
    )
    .bind(now_ms)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(brand, sales, renewals, refunds, others)| RevenueLine {
            active_cards: active
                .iter()
                .find(|(b, _)| *b == brand)
                .map_or(0, |(_, n)| *n),
            brand_id: brand,
            sales_cents: sales,
            renewals_cents: renewals,
            refunds_cents: refunds,
            net_cents: sales + renewals - refunds,
            sold_by_others_cents: others,
        })
        .collect())
}

/// The tier rank a member holds at `now_ms`: the earned rank, raised to the active card's
/// tier floor (a floor not on the ladder raises nothing).
pub async fn effective_rank(
    conn: &mut AnyConnection,
    ladder: &[tiers::TierLevel],
    member_id: &str,
    earned_rank: usize,
    now_ms: i64,
) -> DomainResult<usize> {
    let floor = active_card(conn, member_id, now_ms)
        .await?
        .and_then(|card| card.tier_floor)
        .and_then(|code| ladder.iter().position(|t| t.code == code));
    Ok(floor.map_or(earned_rank, |f| f.max(earned_rank)))
}

/// The tier code a member holds at `now_ms`: `earned` (the stored `members.tier`), raised to
/// the active card's floor. What every reader that shows or hands on a tier should use.
pub async fn effective_tier_code(
    conn: &mut AnyConnection,
    tiers_config: &TiersConfig,
    member_id: &str,
    earned: &str,
    now_ms: i64,
) -> DomainResult<String> {
    let ladder = tiers::load_ladder(conn, tiers_config).await?;
    let earned_rank = tiers::rank_of(&ladder, earned);
    let rank = effective_rank(conn, &ladder, member_id, earned_rank, now_ms).await?;
    Ok(if rank == earned_rank {
        earned.to_owned()
    } else {
        ladder[rank].code.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pro_rata_is_exact_and_rounds_down() {
        let start = 1_000;
        let end = start + MONTH_MS;
        assert_eq!(pro_rata_refund(3000, start, end, start), 3000);
        assert_eq!(
            pro_rata_refund(3000, start, end, start + MONTH_MS / 2),
            1500
        );
        // 10 days used of 30: 20/30 of 1000 = 666.67 -> 666.
        assert_eq!(pro_rata_refund(1000, start, end, start + 10 * DAY_MS), 666);
        assert_eq!(pro_rata_refund(1000, start, end, end), 0);
        // A renewal paid ahead is refunded whole.
        assert_eq!(pro_rata_refund(1000, end, end + MONTH_MS, start), 1000);
    }

    #[test]
    fn benefit_flags_are_kebab_case() {
        assert!(is_benefit_flag("free-delivery"));
        assert!(is_benefit_flag("lounge2"));
        for bad in [
            "",
            "Free",
            "free--delivery",
            "-free",
            "free_delivery",
            "a b",
        ] {
            assert!(!is_benefit_flag(bad), "{bad:?}");
        }
    }
}
