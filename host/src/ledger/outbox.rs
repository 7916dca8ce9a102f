//! The outbox of settleable events. Whatever moves points or money between brands records one
//! event here *in its own transaction*, so an event exists exactly when its cause does; the
//! settlement job turns pending events into lines later (and holds those it cannot settle).

use serde::Serialize;
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::foundation::error::DomainResult;
use crate::foundation::store::new_id;

/// What happened (the WIT `settle-kind` cases, spelled as in the WIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// Points issued by a brand (purchase earn and bonuses).
    PointsIssued,
    /// Points spent as payment at a brand's counter.
    PointsRedeemed,
    /// A perk redeemed: funded by one brand, honoured by another.
    PerkRedeemed,
    /// A coupon honoured at a brand's counter.
    CouponHonoured,
    /// A refund reversing an earlier event.
    Refund,
    /// Stored value held by one brand (`funding_brand`, which took the money at a top-up)
    /// spent at another (`honouring_brand`). Not a 0.1.0 `settle-kind`: settled by the
    /// platform's rule, never handed to a 0.1.0 settle hook.
    StoredValueRedeemed,
    /// The fee of a paid membership card sold at one brand (`funding_brand`, which took the
    /// money) for a plan owned by another (`honouring_brand`, which honours the card and is
    /// paid the fee). Not a 0.1.0 `settle-kind`: settled by the platform's rule.
    MembershipFee,
}

impl EventKind {
    /// The stored (and WIT) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PointsIssued => "points-issued",
            Self::PointsRedeemed => "points-redeemed",
            Self::PerkRedeemed => "perk-redeemed",
            Self::CouponHonoured => "coupon-honoured",
            Self::Refund => "refund",
            Self::StoredValueRedeemed => "stored-value-redeemed",
            Self::MembershipFee => "membership-fee",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "points-issued" => Self::PointsIssued,
            "points-redeemed" => Self::PointsRedeemed,
            "perk-redeemed" => Self::PerkRedeemed,
            "coupon-honoured" => Self::CouponHonoured,
            "refund" => Self::Refund,
            "stored-value-redeemed" => Self::StoredValueRedeemed,
            "membership-fee" => Self::MembershipFee,
            _ => return None,
        })
    }
}

/// An event to record.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// What happened.
    pub kind: EventKind,
    /// Where it happened.
    pub brand_id: &'a str,
    /// Who pays for it (perks and coupons); `brand_id` otherwise.
    pub funding_brand: &'a str,
    /// Who hands it over (perks and coupons); `brand_id` otherwise.
    pub honouring_brand: &'a str,
    /// The perk id or coupon template; for a refund, the kind of the event it reverses.
    pub reference: Option<&'a str>,
    /// The plugin that governs the event (the perk's or coupon's plugin), if any.
    pub plugin: Option<&'a str>,
    /// Points involved, >= 0.
    pub points: i64,
    /// Face value in cents, >= 0.
    pub value_cents: i64,
    /// The member, when there is one.
    pub member_id: Option<&'a str>,
    /// What caused it: `purchase`, `refund`, `redemption`, `coupon`, ...
    pub subject_kind: &'a str,
    /// Its id.
    pub subject_id: &'a str,
    /// For refunds: the event reversed.
    pub reverses_event_id: Option<&'a str>,
    /// When it happened, Unix ms.
    pub occurred_at: i64,
}

impl NewEvent<'_> {
    /// One event per (subject, kind, reference): recording it again is a no-op.
    pub fn dedupe_key(&self) -> String {
        dedupe_key(
            self.subject_kind,
            self.subject_id,
            self.kind,
            self.reference,
        )
    }
}

/// The key that makes an event unique: `subject_kind:subject_id:kind:reference`.
fn dedupe_key(
    subject_kind: &str,
    subject_id: &str,
    kind: EventKind,
    reference: Option<&str>,
) -> String {
    format!(
        "{subject_kind}:{subject_id}:{}:{}",
        kind.as_str(),
        reference.unwrap_or("")
    )
}

/// Records an event in the caller's transaction and returns its id; an event with the same
/// dedupe key that already exists is returned instead (so retries never double-settle).
/// Events with nothing to settle (no points and no value) are not recorded: `None`.
pub async fn record(
    conn: &mut AnyConnection,
    event: &NewEvent<'_>,
    now_ms: i64,
) -> DomainResult<Option<String>> {
    if event.points <= 0 && event.value_cents <= 0 {
        return Ok(None);
    }
    let key = event.dedupe_key();
    let existing: Option<(String,)> =
        sqlx::query_as("SELECT id FROM settle_events WHERE dedupe_key = $1")
            .bind(&key)
            .fetch_optional(&mut *conn)
            .await?;
    if let Some((id,)) = existing {
        return Ok(Some(id));
    }
    let id = new_id();
    sqlx::query(
        "INSERT INTO settle_events (id, kind, brand_id, funding_brand, honouring_brand, reference,
            plugin, points, value_cents, member_id, subject_kind, subject_id, reverses_event_id,
            dedupe_key, occurred_at, status, attempts, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 'pending', 0, $16)",
    )
    .bind(&id)
    .bind(event.kind.as_str())
    .bind(event.brand_id)
    .bind(event.funding_brand)
    .bind(event.honouring_brand)
    .bind(event.reference)
    .bind(event.plugin)
    .bind(event.points.max(0))
    .bind(event.value_cents.max(0))
    .bind(event.member_id)
    .bind(event.subject_kind)
    .bind(event.subject_id)
    .bind(event.reverses_event_id)
    .bind(&key)
    .bind(event.occurred_at)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(Some(id))
}

/// The id of the event recorded for (subject, kind, reference), if any: refunds use it to name
/// the event they reverse.
pub async fn find(
    conn: &mut AnyConnection,
    subject_kind: &str,
    subject_id: &str,
    kind: EventKind,
    reference: Option<&str>,
) -> DomainResult<Option<String>> {
    let key = dedupe_key(subject_kind, subject_id, kind, reference);
    let row: Option<(String,)> =
        sqlx::query_as("SELECT id FROM settle_events WHERE dedupe_key = $1")
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|(id,)| id))
}
