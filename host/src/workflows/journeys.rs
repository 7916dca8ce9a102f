//! Journeys: host-side rules that act on members who meet a trigger — issue a coupon, grant
//! points funded by a brand, send an event to a brand's webhook — under a per-member frequency
//! cap, a total cap and a start/end window (docs/ENGAGEMENT.md).
//!
//! # Once per occurrence
//! Every trigger names an *occurrence* per member (`joined`, `stage:silent:<since>`,
//! `birthday:2026`, …). Acting on a member inserts `(journey, member, occurrence)` into
//! `journey_touches`, whose UNIQUE key makes the insert a no-op when the member was already
//! touched for that occurrence, in the same transaction (a savepoint per member) as the
//! actions. Two concurrent or repeated runs therefore never act twice.
//!
//! # Runs
//! A run walks the journey's candidates in member id order, [`JOURNEY_BATCH`] per
//! transaction. Each batch first locks the journey row (so the total cap and the per-member
//! counts it reads are exact, as for campaigns), then commits the touches, the actions and the
//! cursor (the last member id) together: an interrupted run resumes after its last batch.
//!
//! # Dry runs
//! [`dry_run`] runs the same candidate query read-only and reports how many members a run
//! would touch now (the total cap applied) and a sample of them.

use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Connection};
use utoipa::ToSchema;

use crate::domain::stages::Stage;
use crate::domain::webhooks::{self, EventType};
use crate::foundation::clock::{local_year_month, DAY_MS};
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::{for_update, new_id, Backend};
use crate::ledger::budgets::{self, BudgetKind, Grant};
use crate::ledger::outbox::{self, EventKind, NewEvent};
use crate::workflows::Services;

/// Members acted on per transaction: short commits (SQLite has one writer; the journey row is
/// locked for the batch) while amortising the candidate query.
pub const JOURNEY_BATCH: i64 = 200;
/// Longest journey title.
pub const MAX_TITLE_CHARS: usize = 200;
/// Most actions per journey: each is one write per touched member.
pub const MAX_ACTIONS: usize = 5;
/// Largest grant per member and action: a journey rewards, it does not fund a shopping spree.
pub const MAX_GRANT_POINTS: i64 = 1_000_000;
/// Largest per-member cap.
pub const MAX_PER_MEMBER_CAP: i64 = 1_000;
/// Largest total cap: ten million touches is beyond any coalition's member base.
pub const MAX_TOTAL_CAP: i64 = 10_000_000;
/// Longest `joined` look-back, days.
pub const MAX_JOINED_DAYS: i64 = 3_650;
/// Most tiers, tags or stages in an audience: each is one bound parameter.
pub const MAX_AUDIENCE_VALUES: usize = 32;
/// Members named in a dry run's sample.
pub const DRY_RUN_SAMPLE: usize = 10;
/// Journeys listed.
pub const MAX_JOURNEYS_LISTED: i64 = 500;
/// Coupon source kind of journey coupons.
pub const SOURCE_KIND: &str = "journey";

/// What starts a journey for a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[schema(as = JourneyTrigger)]
pub enum Trigger {
    /// The member joined within the last `within_days` days (1..=3650). Once per member.
    Joined {
        /// Look-back, days.
        within_days: i64,
    },
    /// The member has made a purchase. Once per member.
    FirstPurchase,
    /// The member's stage is `to` (once each time the member enters it).
    StageChanged {
        /// The stage entered.
        to: Stage,
    },
    /// The member's birthday is in the current month (programme time zone). Once a year.
    BirthdayMonth,
    /// The member is `within_points` or less below the next tier's threshold (in the ladder's
    /// qualifying unit: cents of spend or points). Once per tier the member is leaving.
    NearNextTier {
        /// Largest gap, 1..=1,000,000,000,000.
        within_points: i64,
    },
    /// The member bought at `brand_a` and never at `brand_b`. Once per member.
    BoughtAtNotAt {
        /// A brand the member bought at.
        brand_a: String,
        /// A brand the member never bought at.
        brand_b: String,
    },
}

impl Trigger {
    fn kind(&self) -> &'static str {
        match self {
            Self::Joined { .. } => "joined",
            Self::FirstPurchase => "first_purchase",
            Self::StageChanged { .. } => "stage_changed",
            Self::BirthdayMonth => "birthday_month",
            Self::NearNextTier { .. } => "near_next_tier",
            Self::BoughtAtNotAt { .. } => "bought_at_not_at",
        }
    }
}

/// Who a journey may touch, on top of its trigger: active, non-blacklisted members whose tier
/// is one of `tiers`, who have one of `tags`, whose stage is one of `stages` (each list ignored
/// when empty) and whose RFM scores are within `rfm` (the campaign segment's range, see
/// [`crate::domain::rfm`]; any when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = JourneyAudience)]
pub struct Audience {
    /// Tier codes.
    #[serde(default)]
    pub tiers: Vec<String>,
    /// Member tags (normalised like member tags).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Lifecycle stages.
    #[serde(default)]
    pub stages: Vec<Stage>,
    /// RFM score range (members who never bought have no score and never match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rfm: Option<crate::domain::rfm::RfmRange>,
}

/// What a journey does to a member it touches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[schema(as = JourneyAction)]
pub enum Action {
    /// Issue one coupon of the template (its funding brand's coupon budgets apply).
    IssueCoupon {
        /// The coupon template.
        template_id: String,
    },
    /// Credit points funded by a brand (its bonus-points budgets apply; a points-issued settle
    /// event charges the brand).
    GrantPoints {
        /// The brand that pays for the points.
        funding_brand_id: String,
        /// Points, 1..=1,000,000.
        points: i64,
    },
    /// Send a `journey_action` event to the brand's webhook subscriptions.
    Webhook {
        /// The brand told.
        brand_id: String,
    },
}

impl Action {
    fn kind(&self) -> &'static str {
        match self {
            Self::IssueCoupon { .. } => "issue_coupon",
            Self::GrantPoints { .. } => "grant_points",
            Self::Webhook { .. } => "webhook",
        }
    }
}

/// A journey's status: only `active` journeys run; `ended` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = JourneyStatus)]
pub enum Status {
    /// Being prepared (dry runs only).
    Draft,
    /// Runs.
    Active,
    /// Stopped for now.
    Paused,
    /// Stopped for good.
    Ended,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Ended => "ended",
        }
    }

    fn parse(text: &str) -> DomainResult<Self> {
        Ok(match text {
            "draft" => Self::Draft,
            "active" => Self::Active,
            "paused" => Self::Paused,
            "ended" => Self::Ended,
            _ => {
                return Err(DomainError::internal(anyhow::anyhow!(
                    "unknown journey status {text:?}"
                )))
            }
        })
    }
}

/// Body of `POST /journeys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewJourney)]
pub struct NewJourney {
    /// Title, 1..=200 characters.
    pub title: String,
    /// What starts it for a member.
    pub trigger: Trigger,
    /// Who it may touch (default: every active member).
    #[serde(default)]
    pub audience: Audience,
    /// What it does, 1..=5 actions.
    pub actions: Vec<Action>,
    /// Most touches per member over all occurrences, 1..=1000 (default 1).
    #[serde(default)]
    pub per_member_cap: Option<i64>,
    /// Most touches in all, 1..=10,000,000 (default: none).
    #[serde(default)]
    pub total_cap: Option<i64>,
    /// Runs from, Unix ms.
    #[serde(default)]
    pub starts_at_ms: Option<i64>,
    /// Runs until (exclusive), Unix ms.
    #[serde(default)]
    pub ends_at_ms: Option<i64>,
    /// `draft` (default) or `active`.
    #[serde(default)]
    pub status: Option<Status>,
}

/// Body of `PATCH /journeys/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = JourneyPatch)]
pub struct JourneyPatch {
    /// The new status (`ended` is final).
    pub status: Status,
}

/// Touches and actions of a journey so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[schema(as = JourneyCounts)]
pub struct JourneyCounts {
    /// Touches (member × occurrence).
    pub touched: i64,
    /// Distinct members touched.
    pub members: i64,
    /// Coupons issued.
    pub issue_coupon: i64,
    /// Points grants.
    pub grant_points: i64,
    /// Webhook events.
    pub webhook: i64,
}

/// A journey.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = JourneyView)]
pub struct JourneyView {
    /// Id.
    pub id: String,
    /// Title.
    pub title: String,
    /// The brand that created it (`null`: the platform).
    pub owner_brand: Option<String>,
    /// Trigger.
    pub trigger: Trigger,
    /// Audience.
    pub audience: Audience,
    /// Actions.
    pub actions: Vec<Action>,
    /// Per-member cap.
    pub per_member_cap: i64,
    /// Total cap.
    pub total_cap: Option<i64>,
    /// Runs from, Unix ms.
    pub starts_at_ms: Option<i64>,
    /// Runs until, Unix ms.
    pub ends_at_ms: Option<i64>,
    /// Status.
    pub status: Status,
    /// Counts.
    pub counts: JourneyCounts,
    /// Unix ms.
    pub created_at_ms: i64,
}

/// Checks a new journey's fields (not the brands and templates it names).
pub fn validate(req: &NewJourney) -> DomainResult<Audience> {
    let title = req.title.trim();
    if title.is_empty()
        || title.chars().count() > MAX_TITLE_CHARS
        || title.chars().any(char::is_control)
    {
        return Err(DomainError::validation(format!(
            "title must be 1..={MAX_TITLE_CHARS} characters without control characters"
        )));
    }
    if req.actions.is_empty() || req.actions.len() > MAX_ACTIONS {
        return Err(DomainError::validation(format!(
            "a journey has 1..={MAX_ACTIONS} actions"
        )));
    }
    for action in &req.actions {
        if let Action::GrantPoints { points, .. } = action {
            if !(1..=MAX_GRANT_POINTS).contains(points) {
                return Err(DomainError::validation(format!(
                    "points must be within 1..={MAX_GRANT_POINTS}"
                )));
            }
        }
    }
    match &req.trigger {
        Trigger::Joined { within_days } if !(1..=MAX_JOINED_DAYS).contains(within_days) => {
            return Err(DomainError::validation(format!(
                "within_days must be within 1..={MAX_JOINED_DAYS}"
            )))
        }
        Trigger::NearNextTier { within_points }
            if !(1..=crate::ledger::MAX_POINTS_PER_OPERATION).contains(within_points) =>
        {
            return Err(DomainError::validation("within_points must be positive"))
        }
        Trigger::BoughtAtNotAt { brand_a, brand_b } if brand_a == brand_b => {
            return Err(DomainError::validation("brand_a and brand_b must differ"))
        }
        _ => {}
    }
    if req
        .per_member_cap
        .is_some_and(|c| !(1..=MAX_PER_MEMBER_CAP).contains(&c))
    {
        return Err(DomainError::validation(format!(
            "per_member_cap must be within 1..={MAX_PER_MEMBER_CAP}"
        )));
    }
    if req
        .total_cap
        .is_some_and(|c| !(1..=MAX_TOTAL_CAP).contains(&c))
    {
        return Err(DomainError::validation(format!(
            "total_cap must be within 1..={MAX_TOTAL_CAP}"
        )));
    }
    if let (Some(start), Some(end)) = (req.starts_at_ms, req.ends_at_ms) {
        if end <= start {
            return Err(DomainError::validation(
                "ends_at_ms must be after starts_at_ms",
            ));
        }
    }
    if matches!(req.status, Some(Status::Paused | Status::Ended)) {
        return Err(DomainError::validation("a new journey is draft or active"));
    }
    let a = &req.audience;
    if a.tiers.len() > MAX_AUDIENCE_VALUES
        || a.tags.len() > MAX_AUDIENCE_VALUES
        || a.stages.len() > MAX_AUDIENCE_VALUES
    {
        return Err(DomainError::validation(format!(
            "an audience has at most {MAX_AUDIENCE_VALUES} tiers, tags and stages each"
        )));
    }
    let mut tags = Vec::with_capacity(a.tags.len());
    for tag in &a.tags {
        tags.push(crate::domain::members::normalize_tag(tag)?);
    }
    tags.sort();
    tags.dedup();
    let mut tiers: Vec<String> = a.tiers.iter().map(|t| t.trim().to_owned()).collect();
    tiers.sort();
    tiers.dedup();
    if let Some(rfm) = &a.rfm {
        rfm.validate()?;
    }
    let mut stages = a.stages.clone();
    stages.sort_by_key(|s| s.as_str());
    stages.dedup();
    Ok(Audience {
        tiers,
        tags,
        stages,
        rfm: a.rfm.clone(),
    })
}

/// The brands a journey's actions spend or tell, each with what it is named for: a brand key
/// may create a journey only when every one is its own.
pub async fn funders(conn: &mut AnyConnection, actions: &[Action]) -> DomainResult<Vec<String>> {
    let mut brands = Vec::new();
    for action in actions {
        match action {
            Action::IssueCoupon { template_id } => {
                crate::foundation::ids::check_path_id("coupon template", template_id)?;
                let (owner, _) =
                    crate::domain::campaigns::template_owner(conn, template_id).await?;
                brands.push(owner);
            }
            Action::GrantPoints {
                funding_brand_id, ..
            } => brands.push(funding_brand_id.clone()),
            Action::Webhook { brand_id } => brands.push(brand_id.clone()),
        }
    }
    brands.sort();
    brands.dedup();
    Ok(brands)
}

/// Creates a journey in the caller's transaction and returns it.
pub async fn create(
    conn: &mut AnyConnection,
    req: &NewJourney,
    audience: &Audience,
    owner_brand: Option<&str>,
    created_by: &str,
    now_ms: i64,
) -> DomainResult<JourneyView> {
    for action in &req.actions {
        match action {
            Action::IssueCoupon { template_id } => {
                let (_, status) =
                    crate::domain::campaigns::template_owner(conn, template_id).await?;
                if status != "active" {
                    return Err(DomainError::conflict(
                        "coupon_template_retired",
                        format!("coupon template {template_id:?} is retired"),
                    ));
                }
            }
            Action::GrantPoints {
                funding_brand_id, ..
            } => crate::ledger::require_brand_exists(conn, funding_brand_id).await?,
            Action::Webhook { brand_id } => {
                crate::ledger::require_brand_exists(conn, brand_id).await?
            }
        }
    }
    if let Trigger::BoughtAtNotAt { brand_a, brand_b } = &req.trigger {
        crate::ledger::require_brand_exists(conn, brand_a).await?;
        crate::ledger::require_brand_exists(conn, brand_b).await?;
    }
    let id = new_id();
    sqlx::query(
        "INSERT INTO journeys (id, title, owner_brand, trigger_kind, trigger_spec, audience,
            actions, per_member_cap, total_cap, touched, starts_at, ends_at, status, after_id,
            created_by, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $11, $12, '', $13, $14, $14)",
    )
    .bind(&id)
    .bind(req.title.trim())
    .bind(owner_brand)
    .bind(req.trigger.kind())
    .bind(to_json(&req.trigger)?)
    .bind(to_json(audience)?)
    .bind(to_json(&req.actions)?)
    .bind(req.per_member_cap.unwrap_or(1))
    .bind(req.total_cap)
    .bind(req.starts_at_ms)
    .bind(req.ends_at_ms)
    .bind(req.status.unwrap_or(Status::Draft).as_str())
    .bind(created_by)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    get(conn, &id).await
}

/// A journey part as its stored JSON.
fn to_json(value: &impl Serialize) -> DomainResult<String> {
    serde_json::to_string(value).map_err(DomainError::internal)
}

/// id, title, owner, trigger, audience, actions, per-member cap, total cap, touched, starts,
/// ends, status, cursor, created at.
type JourneyRow = (
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    i64,
    Option<i64>,
    i64,
    Option<i64>,
    Option<i64>,
    String,
    String,
    i64,
);

const JOURNEY_COLUMNS: &str = "id, title, owner_brand, trigger_spec, audience, actions, \
    per_member_cap, total_cap, touched, starts_at, ends_at, status, after_id, created_at";

/// A journey as stored.
struct Journey {
    view: JourneyView,
    touched: i64,
    after_id: String,
}

fn parse_row(row: JourneyRow) -> DomainResult<Journey> {
    let (
        id,
        title,
        owner_brand,
        trigger,
        audience,
        actions,
        per_member_cap,
        total_cap,
        touched,
        starts_at_ms,
        ends_at_ms,
        status,
        after_id,
        created_at_ms,
    ) = row;
    Ok(Journey {
        view: JourneyView {
            id,
            title,
            owner_brand,
            trigger: serde_json::from_str(&trigger).map_err(DomainError::internal)?,
            audience: serde_json::from_str(&audience).map_err(DomainError::internal)?,
            actions: serde_json::from_str(&actions).map_err(DomainError::internal)?,
            per_member_cap,
            total_cap,
            starts_at_ms,
            ends_at_ms,
            status: Status::parse(&status)?,
            counts: JourneyCounts::default(),
            created_at_ms,
        },
        touched,
        after_id,
    })
}

async fn load(conn: &mut AnyConnection, id: &str, lock: Option<Backend>) -> DomainResult<Journey> {
    let sql = format!(
        "SELECT {JOURNEY_COLUMNS} FROM journeys WHERE id = $1{}",
        lock.map(for_update).unwrap_or("")
    );
    let row: Option<JourneyRow> = sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    parse_row(row.ok_or_else(|| DomainError::not_found("journey", id))?)
}

async fn counts(conn: &mut AnyConnection, id: &str) -> DomainResult<JourneyCounts> {
    let (touched, members): (i64, i64) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT), CAST(COUNT(DISTINCT member_id) AS BIGINT)
         FROM journey_touches WHERE journey_id = $1",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT kind, CAST(COUNT(*) AS BIGINT) FROM journey_actions WHERE journey_id = $1
         GROUP BY kind",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let mut counts = JourneyCounts {
        touched,
        members,
        ..JourneyCounts::default()
    };
    for (kind, n) in rows {
        match kind.as_str() {
            "issue_coupon" => counts.issue_coupon = n,
            "grant_points" => counts.grant_points = n,
            "webhook" => counts.webhook = n,
            _ => {}
        }
    }
    Ok(counts)
}

/// A journey with its counts (404 if unknown).
pub async fn get(conn: &mut AnyConnection, id: &str) -> DomainResult<JourneyView> {
    let mut journey = load(conn, id, None).await?.view;
    journey.counts = counts(conn, id).await?;
    Ok(journey)
}

/// The brand that owns a journey (`None`: the platform's); 404 if unknown. For access checks.
pub async fn owner(conn: &mut AnyConnection, id: &str) -> DomainResult<Option<String>> {
    let row: Option<(Option<String>,)> =
        sqlx::query_as("SELECT owner_brand FROM journeys WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(|(b,)| b)
        .ok_or_else(|| DomainError::not_found("journey", id))
}

/// Journeys, newest first: every one, or one brand's.
pub async fn list(conn: &mut AnyConnection, brand: Option<&str>) -> DomainResult<Vec<JourneyView>> {
    let rows: Vec<JourneyRow> = sqlx::query_as(&format!(
        "SELECT {JOURNEY_COLUMNS} FROM journeys WHERE ($1 = '' OR owner_brand = $1)
         ORDER BY created_at DESC, id LIMIT $2"
    ))
    .bind(brand.unwrap_or(""))
    .bind(MAX_JOURNEYS_LISTED)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mut journey = parse_row(row)?.view;
        journey.counts = counts(conn, &journey.id).await?;
        out.push(journey);
    }
    Ok(out)
}

/// Changes a journey's status; `ended` is final (409 `journey_ended`).
pub async fn set_status(
    conn: &mut AnyConnection,
    backend: Backend,
    id: &str,
    status: Status,
    now_ms: i64,
) -> DomainResult<JourneyView> {
    let journey = load(conn, id, Some(backend)).await?;
    if journey.view.status == Status::Ended && status != Status::Ended {
        return Err(DomainError::conflict(
            "journey_ended",
            format!("journey {id:?} has ended"),
        ));
    }
    sqlx::query("UPDATE journeys SET status = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(status.as_str())
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    get(conn, id).await
}

// ---------------------------------------------------------------------------------------------
// Candidates

/// A bound value of the candidate query.
enum Bind {
    Text(String),
    Int(i64),
}

/// A query under construction, numbering its parameters as they are added.
#[derive(Default)]
struct Query {
    binds: Vec<Bind>,
}

impl Query {
    fn text(&mut self, value: impl Into<String>) -> String {
        self.binds.push(Bind::Text(value.into()));
        format!("${}", self.binds.len())
    }

    fn int(&mut self, value: i64) -> String {
        self.binds.push(Bind::Int(value));
        format!("${}", self.binds.len())
    }

    fn list(&mut self, values: impl IntoIterator<Item = String>) -> String {
        values
            .into_iter()
            .map(|v| self.text(v))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The next `limit` members after `after` who meet the journey's trigger and audience, have
/// not had this occurrence and are under the per-member cap: `(member, occurrence)`.
async fn candidates(
    conn: &mut AnyConnection,
    services: &Services,
    journey: &JourneyView,
    after: &str,
    limit: i64,
    now_ms: i64,
) -> DomainResult<Vec<(String, String)>> {
    let mut q = Query::default();
    let journey_p = q.text(journey.id.clone());
    let after_p = q.text(after);
    let cap_p = q.int(journey.per_member_cap);
    let mut joins = String::new();
    let (occurrence, condition) = match &journey.trigger {
        Trigger::Joined { within_days } => {
            let since = q.int(now_ms.saturating_sub(within_days.saturating_mul(DAY_MS)));
            ("'joined'".to_owned(), format!("m.created_at >= {since}"))
        }
        Trigger::FirstPurchase => (
            "'first_purchase'".to_owned(),
            "EXISTS (SELECT 1 FROM purchases p WHERE p.member_id = m.id)".to_owned(),
        ),
        Trigger::StageChanged { to } => {
            joins.push_str(" JOIN member_stages ms ON ms.member_id = m.id");
            let to = q.text(to.as_str());
            (
                "'stage:' || ms.stage || ':' || CAST(ms.since_at AS TEXT)".to_owned(),
                format!("ms.stage = {to}"),
            )
        }
        Trigger::BirthdayMonth => {
            let (year, month) =
                local_year_month(now_ms, services.settings.points.utc_offset_minutes)?;
            let pattern = q.text(format!("____-{month:02}-%"));
            let occurrence = q.text(format!("birthday:{year}"));
            (occurrence, format!("m.birthday LIKE {pattern}"))
        }
        Trigger::NearNextTier { within_points } => {
            let ladder = crate::domain::tiers::load_ladder(conn, &services.settings.tiers).await?;
            let tiers = &services.settings.tiers;
            let column = match tiers.basis {
                crate::domain::tiers::TierBasis::Spend => "spend_cents",
                crate::domain::tiers::TierBasis::Points => "points",
            };
            let mut next = String::from("CASE m.tier");
            for pair in ladder.windows(2) {
                let code = q.text(pair[0].code.clone());
                let threshold = q.int(pair[1].threshold);
                next.push_str(&format!(" WHEN {code} THEN {threshold}"));
            }
            next.push_str(" ELSE NULL END");
            let since = q.int(now_ms.saturating_sub(tiers.window_days.saturating_mul(DAY_MS)));
            let until = q.int(now_ms);
            let within = q.int(*within_points);
            let qualifying = format!(
                "(SELECT CAST(COALESCE(SUM(qe.{column}), 0) AS BIGINT) FROM qualifying_events qe
                  WHERE qe.member_id = m.id AND qe.occurred_at > {since}
                  AND qe.occurred_at <= {until})"
            );
            (
                "'near:' || m.tier".to_owned(),
                format!("({next}) - {qualifying} > 0 AND ({next}) - {qualifying} <= {within}"),
            )
        }
        Trigger::BoughtAtNotAt { brand_a, brand_b } => {
            let a = q.text(brand_a.clone());
            let b = q.text(brand_b.clone());
            (
                "'bought_at_not_at'".to_owned(),
                format!(
                    "EXISTS (SELECT 1 FROM purchases pa WHERE pa.member_id = m.id
                        AND pa.brand_id = {a})
                     AND NOT EXISTS (SELECT 1 FROM purchases pb WHERE pb.member_id = m.id
                        AND pb.brand_id = {b})"
                ),
            )
        }
    };
    let mut audience = String::new();
    let a = &journey.audience;
    if !a.tiers.is_empty() {
        audience.push_str(&format!(" AND m.tier IN ({})", q.list(a.tiers.clone())));
    }
    if !a.tags.is_empty() {
        audience.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM member_tags t WHERE t.member_id = m.id \
             AND t.tag IN ({}))",
            q.list(a.tags.clone())
        ));
    }
    if !a.stages.is_empty() {
        audience.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM member_stages sa WHERE sa.member_id = m.id \
             AND sa.stage IN ({}))",
            q.list(a.stages.iter().map(|s| s.as_str().to_owned()))
        ));
    }
    if let Some(rfm) = &a.rfm {
        audience.push_str(&format!(" AND {}", rfm.member_condition()));
    }
    let limit_p = q.int(limit);
    let sql = format!(
        "SELECT m.id, {occurrence} FROM members m{joins}
         WHERE m.id > {after_p} AND m.status = 'active'
           AND NOT EXISTS (SELECT 1 FROM risk_blacklist b
                WHERE b.kind = 'member' AND b.subject = m.id)
           AND {condition}{audience}
           AND NOT EXISTS (SELECT 1 FROM journey_touches jt WHERE jt.journey_id = {journey_p}
                AND jt.member_id = m.id AND jt.occurrence_key = {occurrence})
           AND (SELECT COUNT(*) FROM journey_touches jc WHERE jc.journey_id = {journey_p}
                AND jc.member_id = m.id) < {cap_p}
         ORDER BY m.id LIMIT {limit_p}"
    );
    let mut query = sqlx::query_as::<_, (String, String)>(&sql);
    for bind in q.binds {
        query = match bind {
            Bind::Text(v) => query.bind(v),
            Bind::Int(v) => query.bind(v),
        };
    }
    Ok(query.fetch_all(&mut *conn).await?)
}

fn in_window(journey: &JourneyView, now_ms: i64) -> bool {
    journey.starts_at_ms.is_none_or(|s| now_ms >= s)
        && journey.ends_at_ms.is_none_or(|e| now_ms < e)
}

/// What a dry run found.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = JourneyDryRun)]
pub struct DryRun {
    /// The journey.
    pub journey_id: String,
    /// Members a run now would touch (the total cap applied).
    pub would_touch: i64,
    /// Up to 10 of them, in id order.
    pub sample: Vec<String>,
    /// Whether a run now would act at all (status `active` and inside the window).
    pub runs_now: bool,
}

/// How many members a run now would touch, and a sample; writes nothing.
pub async fn dry_run(services: &Services, id: &str, now_ms: i64) -> DomainResult<DryRun> {
    let mut conn = services.store.read().acquire().await?;
    let journey = load(&mut conn, id, None).await?;
    let remaining = journey
        .view
        .total_cap
        .map_or(i64::MAX, |cap| (cap - journey.touched).max(0));
    let mut would_touch = 0_i64;
    let mut sample = Vec::new();
    let mut after = String::new();
    while would_touch < remaining {
        let batch = candidates(
            &mut conn,
            services,
            &journey.view,
            &after,
            JOURNEY_BATCH,
            now_ms,
        )
        .await?;
        for (member, _) in &batch {
            if would_touch >= remaining {
                break;
            }
            would_touch += 1;
            if sample.len() < DRY_RUN_SAMPLE {
                sample.push(member.clone());
            }
        }
        match batch.last() {
            Some((last, _)) if i64::try_from(batch.len()).unwrap_or(0) >= JOURNEY_BATCH => {
                after = last.clone()
            }
            _ => break,
        }
    }
    Ok(DryRun {
        journey_id: journey.view.id.clone(),
        would_touch,
        sample,
        runs_now: journey.view.status == Status::Active && in_window(&journey.view, now_ms),
    })
}

// ---------------------------------------------------------------------------------------------
// Runs

/// What one batch of a run did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[schema(as = JourneyBatchReport)]
pub struct BatchReport {
    /// Members touched.
    pub touched: i64,
    /// Candidates looked at.
    pub candidates: i64,
    /// Whether the pass is complete (or the journey cannot act now).
    pub finished: bool,
    /// The total cap is reached.
    pub cap_reached: bool,
    /// A funding brand's budget could not fund the next member's actions (the run stops;
    /// the next run tries again).
    pub budget_exhausted: bool,
}

/// Outcome of one member's actions.
enum Acted {
    Done,
    BudgetExhausted,
}

/// Runs one batch of a journey: locks it, acts on the next candidates, moves its cursor.
pub async fn run_batch(services: &Services, id: &str, now_ms: i64) -> DomainResult<BatchReport> {
    let store = &services.store;
    let backend = store.backend();
    let mut tx = store.begin().await?;
    let journey = load(&mut tx, id, Some(backend)).await?;
    let mut report = BatchReport::default();
    if journey.view.status != Status::Active || !in_window(&journey.view, now_ms) {
        report.finished = true;
        return Ok(report);
    }
    let mut touched_total = journey.touched;
    let cap = journey.view.total_cap.unwrap_or(i64::MAX);
    if touched_total >= cap {
        report.finished = true;
        report.cap_reached = true;
        return Ok(report);
    }
    let batch = candidates(
        &mut tx,
        services,
        &journey.view,
        &journey.after_id,
        JOURNEY_BATCH,
        now_ms,
    )
    .await?;
    report.candidates = i64::try_from(batch.len()).unwrap_or(i64::MAX);
    let mut cursor = journey.after_id.clone();
    for (member_id, occurrence) in &batch {
        if touched_total >= cap {
            report.cap_reached = true;
            break;
        }
        let mut member_tx = Connection::begin(&mut *tx).await?;
        let touch_id = new_id();
        let inserted = sqlx::query(
            "INSERT INTO journey_touches (id, journey_id, member_id, occurrence_key, created_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (journey_id, member_id, occurrence_key) DO NOTHING",
        )
        .bind(&touch_id)
        .bind(id)
        .bind(member_id)
        .bind(occurrence)
        .bind(now_ms)
        .execute(&mut *member_tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            match act(
                &mut member_tx,
                services,
                &journey.view,
                &touch_id,
                member_id,
                occurrence,
                now_ms,
            )
            .await?
            {
                Acted::Done => {
                    sqlx::query(
                        "UPDATE journeys SET touched = touched + 1, updated_at = $2
                         WHERE id = $1",
                    )
                    .bind(id)
                    .bind(now_ms)
                    .execute(&mut *member_tx)
                    .await?;
                    member_tx.commit().await?;
                    touched_total += 1;
                    report.touched += 1;
                }
                Acted::BudgetExhausted => {
                    member_tx.rollback().await?;
                    report.budget_exhausted = true;
                    break;
                }
            }
        } else {
            member_tx.rollback().await?;
        }
        cursor = member_id.clone();
    }
    let pass_done =
        !report.budget_exhausted && !report.cap_reached && report.candidates < JOURNEY_BATCH;
    report.finished = pass_done || report.cap_reached || report.budget_exhausted;
    let next = if pass_done { String::new() } else { cursor };
    sqlx::query("UPDATE journeys SET after_id = $2 WHERE id = $1")
        .bind(id)
        .bind(&next)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(report)
}

/// Performs a journey's actions for one member, in the caller's transaction.
async fn act(
    conn: &mut AnyConnection,
    services: &Services,
    journey: &JourneyView,
    touch_id: &str,
    member_id: &str,
    occurrence: &str,
    now_ms: i64,
) -> DomainResult<Acted> {
    let backend = services.store.backend();
    let points_config = &services.settings.points;
    let offset = points_config.utc_offset_minutes;
    for action in &journey.actions {
        let detail = match action {
            Action::IssueCoupon { template_id } => {
                let (funding_brand, plugin, value_cents): (String, String, i64) = sqlx::query_as(
                    "SELECT funding_brand, plugin, value_cents FROM coupon_templates
                         WHERE id = $1",
                )
                .bind(template_id)
                .fetch_one(&mut *conn)
                .await?;
                let reserved = budgets::reserve(
                    conn,
                    backend,
                    &funding_brand,
                    BudgetKind::CouponValue,
                    Some(&plugin),
                    None,
                    value_cents,
                    Grant::Whole,
                    offset,
                    now_ms,
                )
                .await?;
                if value_cents > 0 && reserved.granted < value_cents {
                    return Ok(Acted::BudgetExhausted);
                }
                let coupon = crate::domain::coupons::issue(
                    conn,
                    template_id,
                    member_id,
                    SOURCE_KIND,
                    touch_id,
                    now_ms,
                )
                .await?;
                serde_json::json!({ "template_id": template_id, "code": coupon.code })
            }
            Action::GrantPoints {
                funding_brand_id,
                points,
            } => {
                let reserved = budgets::reserve(
                    conn,
                    backend,
                    funding_brand_id,
                    BudgetKind::BonusPoints,
                    None,
                    None,
                    *points,
                    Grant::Whole,
                    offset,
                    now_ms,
                )
                .await?;
                if reserved.granted < *points {
                    return Ok(Acted::BudgetExhausted);
                }
                let reason: String = format!("journey: {}", journey.title)
                    .chars()
                    .take(crate::ledger::MAX_REASON_LEN / 4)
                    .collect();
                let adjustment = crate::ledger::adjust(
                    conn,
                    backend,
                    points_config,
                    member_id,
                    &crate::ledger::AdjustmentRequest {
                        points: *points,
                        reason,
                        brand_id: Some(funding_brand_id.clone()),
                    },
                    now_ms,
                )
                .await?;
                outbox::record(
                    conn,
                    &NewEvent {
                        kind: EventKind::PointsIssued,
                        brand_id: funding_brand_id,
                        funding_brand: funding_brand_id,
                        honouring_brand: funding_brand_id,
                        reference: None,
                        plugin: None,
                        points: *points,
                        value_cents: crate::ledger::points_value_cents(points_config, *points),
                        member_id: Some(member_id),
                        subject_kind: "journey",
                        subject_id: touch_id,
                        reverses_event_id: None,
                        occurred_at: now_ms,
                    },
                    now_ms,
                )
                .await?;
                serde_json::json!({
                    "funding_brand_id": funding_brand_id, "points": points,
                    "entry_id": adjustment.entry_id,
                })
            }
            Action::Webhook { brand_id } => {
                webhooks::record(
                    conn,
                    brand_id,
                    EventType::JourneyAction,
                    Some(member_id),
                    serde_json::json!({
                        "journey_id": journey.id, "journey_title": journey.title,
                        "member_id": member_id, "occurrence": occurrence,
                        "touch_id": touch_id, "at_ms": now_ms,
                    }),
                )
                .await?;
                serde_json::json!({ "brand_id": brand_id })
            }
        };
        sqlx::query(
            "INSERT INTO journey_actions (id, touch_id, journey_id, member_id, kind, detail,
                created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(new_id())
        .bind(touch_id)
        .bind(&journey.id)
        .bind(member_id)
        .bind(action.kind())
        .bind(detail.to_string())
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    }
    Ok(Acted::Done)
}

/// What a run of one journey did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[schema(as = JourneyRunLine)]
pub struct RunLine {
    /// The journey.
    pub journey_id: String,
    /// Members touched by this call.
    pub touched: i64,
    /// Transactions committed.
    pub batches: i64,
    /// Whether the pass finished (else the call ran out of time; call again to resume).
    pub finished: bool,
    /// The total cap is reached.
    pub cap_reached: bool,
    /// A budget stopped the run.
    pub budget_exhausted: bool,
}

/// What a journeys run did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[schema(as = JourneysRunReport)]
pub struct RunReport {
    /// One line per active journey run.
    pub journeys: Vec<RunLine>,
    /// When it ran, Unix ms.
    pub ran_at_ms: i64,
}

/// The journeys a run acts on: `only`, or every active one inside its window.
pub async fn runnable(
    services: &Services,
    only: Option<&str>,
    now_ms: i64,
) -> DomainResult<Vec<String>> {
    if let Some(id) = only {
        let mut conn = services.store.read().acquire().await?;
        load(&mut conn, id, None).await?;
        return Ok(vec![id.to_owned()]);
    }
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM journeys WHERE status = 'active'
           AND (starts_at IS NULL OR starts_at <= $1) AND (ends_at IS NULL OR ends_at > $1)
         ORDER BY id",
    )
    .bind(now_ms)
    .fetch_all(services.store.read())
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Runs journeys batch by batch until each finishes or `deadline` passes; `on_batch` sees
/// every batch (the CLI's progress bar).
pub async fn run(
    services: &Services,
    only: Option<&str>,
    now_ms: i64,
    deadline: Option<std::time::Instant>,
    mut on_batch: impl FnMut(&str, &BatchReport),
) -> DomainResult<RunReport> {
    let mut report = RunReport {
        ran_at_ms: now_ms,
        ..RunReport::default()
    };
    for id in runnable(services, only, now_ms).await? {
        let mut line = RunLine {
            journey_id: id.clone(),
            ..RunLine::default()
        };
        loop {
            let batch = run_batch(services, &id, now_ms).await?;
            on_batch(&id, &batch);
            line.batches += 1;
            line.touched += batch.touched;
            line.cap_reached |= batch.cap_reached;
            line.budget_exhausted |= batch.budget_exhausted;
            if batch.finished {
                line.finished = true;
                break;
            }
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                break;
            }
        }
        report.journeys.push(line);
    }
    Ok(report)
}
