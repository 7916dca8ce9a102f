//! The paid membership card (付费会员): plans a brand sells for a fee per period, and what an
//! active card unlocks — benefit flags plugins see, a points multiplier on the base earn of
//! purchases, and a tier floor.
//!
//! A card is *active* while its row says `active` and `expires_at` is still ahead; a card past
//! its expiry gives nothing, even before anything marks it. Everything that reads benefits asks
//! [`active_card`] with the caller's `now_ms`, so the injected clock decides.

use sqlx::AnyConnection;

use crate::foundation::error::{DomainError, DomainResult};

/// What a member's active card unlocks right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveCard {
    /// The plan the card was bought on.
    pub plan_id: String,
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
    let row: Option<(String, String, i64, Option<String>, i64)> = sqlx::query_as(
        "SELECT p.id, p.benefits, p.points_multiplier_percent, p.tier_floor, c.expires_at
         FROM membership_cards c JOIN membership_plans p ON p.id = c.plan_id
         WHERE c.member_id = $1 AND c.status = 'active' AND c.expires_at > $2",
    )
    .bind(member_id)
    .bind(now_ms)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((plan_id, benefits, multiplier, tier_floor, expires_at_ms)) = row else {
        return Ok(None);
    };
    Ok(Some(ActiveCard {
        plan_id,
        benefits: parse_benefits(&benefits)?,
        points_multiplier_percent: u32::try_from(multiplier).map_err(DomainError::internal)?,
        tier_floor,
        expires_at_ms,
    }))
}

fn parse_benefits(text: &str) -> DomainResult<Vec<String>> {
    serde_json::from_str(text).map_err(DomainError::internal)
}
