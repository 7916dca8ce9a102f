//! Risk controls on earning and redeeming: per-member and per-device redemption frequency
//! limits, a blacklist that blocks earning and redeeming, and real-name verification above a
//! configurable redemption value. Each refusal has its own stable error code.
//!
//! Callers run the checks inside the transaction of the write they guard, so a refusal changes
//! nothing, and record each accepted redemption in the same transaction so the frequency
//! counts can never disagree with the redemptions that exist.
//!
//! # Exact counts under concurrency
//! [`check_redemption`] first upserts a `risk_subjects` row for the member and for the device
//! (member first, then device: one lock order everywhere). On PostgreSQL the upsert holds the
//! row lock until the transaction ends, so two redemptions of one member (or one device) on
//! any nodes count one after the other and can never both see "one left"; on SQLite writers
//! are serial anyway.
//!
//! | refusal | status | code |
//! |---|---|---|
//! | member on the blacklist | 403 | `member_blacklisted` |
//! | device on the blacklist | 403 | `device_blacklisted` |
//! | too many redemptions by the member in a window | 429 | `redemption_rate_limited_member` |
//! | too many redemptions from the device in a window | 429 | `redemption_rate_limited_device` |
//! | value above the threshold, member not verified | 422 | `real_name_required` |
//!
//! Rate-limit problems carry `extra.retry_after_ms`, `extra.window_ms` and `extra.limit`.

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::foundation::error::{DomainError, DomainResult};

/// One hour, ms.
pub const HOUR_MS: i64 = 60 * 60 * 1000;
/// One day, ms.
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// Longest device id: app install ids and terminal ids are UUID-sized; more is not an id.
pub const MAX_DEVICE_ID_LEN: usize = 100;
/// Longest blacklist reason or verification reference: a sentence, not a document.
pub const MAX_REASON_LEN: usize = 500;
/// Most blacklist entries one listing returns; the list is managed by hand and stays short.
pub const MAX_BLACKLIST_PAGE: i64 = 500;

/// The `[risk]` configuration section. A limit of 0 turns that limit off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RiskConfig {
    /// Redemptions one member may make in any rolling hour.
    pub member_redemptions_per_hour: i64,
    /// Redemptions one member may make in any rolling day.
    pub member_redemptions_per_day: i64,
    /// Redemptions one device may make in any rolling hour (a shared counter terminal needs
    /// more than one member's phone).
    pub device_redemptions_per_hour: i64,
    /// Redemptions one device may make in any rolling day.
    pub device_redemptions_per_day: i64,
    /// A redemption worth more than this (cents) needs a real-name-verified member; 0 turns
    /// the rule off.
    pub real_name_above_cents: i64,
    /// Member look-ups by phone one counter key may make per minute, on each node. A counter
    /// serves a customer every half minute or so; 60 leaves room for retries and typos while
    /// making it impractical to walk the phone-number space to find who is a member.
    pub counter_phone_lookups_per_minute: i64,
}

impl Default for RiskConfig {
    fn default() -> Self {
        Self {
            member_redemptions_per_hour: 10,
            member_redemptions_per_day: 30,
            device_redemptions_per_hour: 60,
            device_redemptions_per_day: 500,
            real_name_above_cents: 50_000,
            counter_phone_lookups_per_minute: 60,
        }
    }
}

impl RiskConfig {
    /// Checks the section.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, value) in [
            (
                "member_redemptions_per_hour",
                self.member_redemptions_per_hour,
            ),
            (
                "member_redemptions_per_day",
                self.member_redemptions_per_day,
            ),
            (
                "device_redemptions_per_hour",
                self.device_redemptions_per_hour,
            ),
            (
                "device_redemptions_per_day",
                self.device_redemptions_per_day,
            ),
            ("real_name_above_cents", self.real_name_above_cents),
            (
                "counter_phone_lookups_per_minute",
                self.counter_phone_lookups_per_minute,
            ),
        ] {
            if value < 0 {
                anyhow::bail!("[risk] {name} must be >= 0 (0 turns it off), not {value}");
            }
        }
        Ok(())
    }
}

/// One redemption about to happen.
#[derive(Debug, Clone)]
pub struct RedemptionAttempt<'a> {
    /// The member redeeming.
    pub member_id: &'a str,
    /// The device the request came from (app install id or counter terminal id), if known.
    pub device_id: Option<&'a str>,
    /// Face value of what is being redeemed, cents.
    pub value_cents: i64,
    /// What is being redeemed, e.g. `perk:<plugin>/<perk id>`; for the record.
    pub what: &'a str,
    /// The redemption's own id.
    pub redemption_id: &'a str,
}

/// Blacklist subjects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    /// A member id.
    Member,
    /// A device id (app install or counter terminal).
    Device,
}

impl SubjectKind {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::Member => "member",
            SubjectKind::Device => "device",
        }
    }
}

/// Refuses a redemption the risk rules forbid (see the module docs).
pub async fn check_redemption(
    conn: &mut AnyConnection,
    risk: &RiskConfig,
    attempt: &RedemptionAttempt<'_>,
    now_ms: i64,
) -> DomainResult<()> {
    let device_id = attempt.device_id.filter(|d| !d.is_empty());
    if let Some(device_id) = device_id {
        validate_device_id(device_id)?;
    }
    if is_blacklisted(conn, SubjectKind::Member, attempt.member_id).await? {
        return Err(member_blacklisted(attempt.member_id));
    }
    if let Some(device_id) = device_id {
        if is_blacklisted(conn, SubjectKind::Device, device_id).await? {
            return Err(DomainError::new(
                crate::foundation::error::ErrorKind::Forbidden,
                "device_blacklisted",
                format!("device {device_id:?} is blacklisted: it may not redeem"),
            ));
        }
    }
    if risk.real_name_above_cents > 0
        && attempt.value_cents > risk.real_name_above_cents
        && verified_at(conn, attempt.member_id).await?.is_none()
    {
        return Err(DomainError::unprocessable(
            "real_name_required",
            format!(
                "redemptions worth more than {} cents need a real-name verified member",
                risk.real_name_above_cents
            ),
        )
        .with_extra(serde_json::json!({
            "threshold_cents": risk.real_name_above_cents,
            "value_cents": attempt.value_cents,
        })));
    }

    touch_subject(conn, SubjectKind::Member, attempt.member_id, now_ms).await?;
    if let Some(device_id) = device_id {
        touch_subject(conn, SubjectKind::Device, device_id, now_ms).await?;
    }
    for (limit, window_ms) in [
        (risk.member_redemptions_per_hour, HOUR_MS),
        (risk.member_redemptions_per_day, DAY_MS),
    ] {
        if let Some(retry_after_ms) = rate_exceeded(
            conn,
            SubjectKind::Member,
            attempt.member_id,
            limit,
            window_ms,
            now_ms,
        )
        .await?
        {
            return Err(rate_limited(
                "redemption_rate_limited_member",
                format!("member {:?}", attempt.member_id),
                "redemptions",
                limit,
                window_ms,
                retry_after_ms,
            ));
        }
    }
    if let Some(device_id) = device_id {
        for (limit, window_ms) in [
            (risk.device_redemptions_per_hour, HOUR_MS),
            (risk.device_redemptions_per_day, DAY_MS),
        ] {
            if let Some(retry_after_ms) = rate_exceeded(
                conn,
                SubjectKind::Device,
                device_id,
                limit,
                window_ms,
                now_ms,
            )
            .await?
            {
                return Err(rate_limited(
                    "redemption_rate_limited_device",
                    format!("device {device_id:?}"),
                    "redemptions",
                    limit,
                    window_ms,
                    retry_after_ms,
                ));
            }
        }
    }
    Ok(())
}

/// Records an accepted redemption for the frequency limits, in the redemption's transaction.
/// Recording the same redemption id twice records it once.
pub async fn record_redemption(
    conn: &mut AnyConnection,
    attempt: &RedemptionAttempt<'_>,
    now_ms: i64,
) -> DomainResult<()> {
    let device_id = attempt.device_id.filter(|d| !d.is_empty());
    sqlx::query(
        "INSERT INTO risk_redemptions (id, member_id, device_id, value_cents, what, created_at)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
    )
    .bind(attempt.redemption_id)
    .bind(attempt.member_id)
    .bind(device_id)
    .bind(attempt.value_cents)
    .bind(attempt.what)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Refuses earning for a blacklisted member.
pub async fn check_earning(
    conn: &mut AnyConnection,
    config: &RiskConfig,
    member_id: &str,
    now_ms: i64,
) -> DomainResult<()> {
    let _ = (config, now_ms);
    if is_blacklisted(conn, SubjectKind::Member, member_id).await? {
        return Err(member_blacklisted(member_id));
    }
    Ok(())
}

/// The `member_blacklisted` refusal.
pub fn member_blacklisted(member_id: &str) -> DomainError {
    DomainError::new(
        crate::foundation::error::ErrorKind::Forbidden,
        "member_blacklisted",
        format!("member {member_id:?} is blacklisted: it may neither earn nor redeem"),
    )
}

/// Checks a device id's length and characters.
pub fn validate_device_id(device_id: &str) -> DomainResult<()> {
    if device_id.is_empty()
        || device_id.len() > MAX_DEVICE_ID_LEN
        || !device_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(DomainError::validation(format!(
            "device_id must be 1..={MAX_DEVICE_ID_LEN} printable ASCII characters"
        )));
    }
    Ok(())
}

/// Whether a member or device is on the blacklist.
pub async fn is_blacklisted(
    conn: &mut AnyConnection,
    kind: SubjectKind,
    subject: &str,
) -> DomainResult<bool> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT 1 FROM risk_blacklist WHERE kind = $1 AND subject = $2")
            .bind(kind.as_str())
            .bind(subject)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.is_some())
}

/// When the member was real-name verified, if ever.
pub async fn verified_at(conn: &mut AnyConnection, member_id: &str) -> DomainResult<Option<i64>> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT verified_at FROM member_verifications WHERE member_id = $1")
            .bind(member_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|(at,)| at))
}

async fn touch_subject(
    conn: &mut AnyConnection,
    kind: SubjectKind,
    subject: &str,
    now_ms: i64,
) -> DomainResult<()> {
    sqlx::query(
        "INSERT INTO risk_subjects (kind, subject, touched_at) VALUES ($1, $2, $3)
         ON CONFLICT (kind, subject) DO UPDATE SET touched_at = excluded.touched_at",
    )
    .bind(kind.as_str())
    .bind(subject)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// `Some(ms until one more redemption fits)` when `subject` already has `limit` redemptions
/// in the window ending now; `None` when it may redeem (or the limit is off).
async fn rate_exceeded(
    conn: &mut AnyConnection,
    kind: SubjectKind,
    subject: &str,
    limit: i64,
    window_ms: i64,
    now_ms: i64,
) -> DomainResult<Option<i64>> {
    if limit <= 0 {
        return Ok(None);
    }
    let column = match kind {
        SubjectKind::Member => "member_id",
        SubjectKind::Device => "device_id",
    };
    let since = now_ms.saturating_sub(window_ms);
    // The limit-th newest redemption in the window: while it is inside, the window is full;
    // one more fits once it leaves, at its time + window.
    let sql = format!(
        "SELECT created_at FROM risk_redemptions WHERE {column} = $1 AND created_at > $2
         ORDER BY created_at DESC LIMIT 1 OFFSET $3"
    );
    let row: Option<(i64,)> = sqlx::query_as(&sql)
        .bind(subject)
        .bind(since)
        .bind(limit - 1)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|(at,)| (at + window_ms - now_ms).max(1)))
}

fn rate_limited(
    code: &'static str,
    who: String,
    what: &str,
    limit: i64,
    window_ms: i64,
    retry_after_ms: i64,
) -> DomainError {
    DomainError::new(
        crate::foundation::error::ErrorKind::RateLimited,
        code,
        format!(
            "{who} reached {limit} {what} per {} minutes; retry in {} s",
            window_ms / 60_000,
            (retry_after_ms + 999) / 1000
        ),
    )
    .with_extra(serde_json::json!({
        "limit": limit,
        "window_ms": window_ms,
        "retry_after_ms": retry_after_ms,
    }))
}

// ---------------------------------------------------------------------------------------------
// Counter look-ups by phone

/// The window of [`LookupLimiter`]: one minute.
pub const LOOKUP_WINDOW_MS: i64 = 60_000;
/// Keys whose windows are remembered; bounds memory whatever the number of keys.
pub const MAX_LOOKUP_KEYS: u64 = 100_000;

/// Member look-ups by phone per counter key, in fixed one-minute windows of the server's clock,
/// on this node (each node of a cluster counts its own). Kept in memory, bounded by moka: a
/// database round trip per look-up would cost more than the look-up. Written here rather than
/// with a rate-limit crate so that it reads the injected clock and shares the cache the server
/// already uses.
pub struct LookupLimiter {
    per_minute: i64,
    windows: moka::sync::Cache<String, std::sync::Arc<std::sync::Mutex<(i64, i64)>>>,
}

impl std::fmt::Debug for LookupLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupLimiter")
            .field("per_minute", &self.per_minute)
            .finish_non_exhaustive()
    }
}

impl LookupLimiter {
    /// A limiter allowing `per_minute` look-ups per key (0: unlimited).
    pub fn new(per_minute: i64) -> LookupLimiter {
        LookupLimiter {
            per_minute,
            windows: moka::sync::Cache::builder()
                .max_capacity(MAX_LOOKUP_KEYS)
                .time_to_idle(std::time::Duration::from_millis(
                    2 * LOOKUP_WINDOW_MS as u64,
                ))
                .build(),
        }
    }

    /// Counts one look-up by `key_id`, or refuses it with `phone_lookup_rate_limited` (429).
    pub fn check(&self, key_id: &str, now_ms: i64) -> DomainResult<()> {
        if self.per_minute <= 0 {
            return Ok(());
        }
        let window = now_ms.div_euclid(LOOKUP_WINDOW_MS);
        let slot = self.windows.get_with(key_id.to_owned(), || {
            std::sync::Arc::new(std::sync::Mutex::new((window, 0)))
        });
        let mut slot = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.0 != window {
            *slot = (window, 0);
        }
        if slot.1 >= self.per_minute {
            let retry_after_ms = ((window + 1) * LOOKUP_WINDOW_MS - now_ms).max(1);
            return Err(rate_limited(
                "phone_lookup_rate_limited",
                "this key".to_owned(),
                "member look-ups by phone",
                self.per_minute,
                LOOKUP_WINDOW_MS,
                retry_after_ms,
            ));
        }
        slot.1 += 1;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Blacklist and verification management

/// One blacklist entry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct BlacklistEntry {
    /// `member` or `device`.
    pub kind: String,
    /// The member id or device id.
    pub subject: String,
    /// Why.
    pub reason: String,
    /// The key that added it.
    pub created_by: String,
    /// When, Unix ms.
    pub created_at: i64,
}

/// Adds a subject to the blacklist; adding one that is there already keeps the first entry.
pub async fn blacklist_add(
    conn: &mut AnyConnection,
    kind: SubjectKind,
    subject: &str,
    reason: &str,
    created_by: &str,
    now_ms: i64,
) -> DomainResult<BlacklistEntry> {
    sqlx::query(
        "INSERT INTO risk_blacklist (kind, subject, reason, created_by, created_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kind, subject) DO NOTHING",
    )
    .bind(kind.as_str())
    .bind(subject)
    .bind(reason)
    .bind(created_by)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    blacklist_list_entry(conn, kind, subject)
        .await?
        .ok_or_else(|| DomainError::internal(anyhow::anyhow!("blacklist row vanished")))
}

/// One blacklist entry, if the subject is on the list.
pub async fn blacklist_list_entry(
    conn: &mut AnyConnection,
    kind: SubjectKind,
    subject: &str,
) -> DomainResult<Option<BlacklistEntry>> {
    let entry: Option<BlacklistEntry> = sqlx::query_as(
        "SELECT kind, subject, reason, created_by, created_at FROM risk_blacklist
         WHERE kind = $1 AND subject = $2",
    )
    .bind(kind.as_str())
    .bind(subject)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(entry)
}

/// Removes a subject from the blacklist; whether it was there.
pub async fn blacklist_remove(
    conn: &mut AnyConnection,
    kind: SubjectKind,
    subject: &str,
) -> DomainResult<bool> {
    let removed = sqlx::query("DELETE FROM risk_blacklist WHERE kind = $1 AND subject = $2")
        .bind(kind.as_str())
        .bind(subject)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(removed > 0)
}

/// The blacklist, newest first, optionally of one kind.
pub async fn blacklist_list(
    pool: &sqlx::AnyPool,
    kind: Option<SubjectKind>,
) -> DomainResult<Vec<BlacklistEntry>> {
    let entries: Vec<BlacklistEntry> = sqlx::query_as(
        "SELECT kind, subject, reason, created_by, created_at FROM risk_blacklist
         WHERE ($1 = '' OR kind = $1) ORDER BY created_at DESC, kind, subject LIMIT $2",
    )
    .bind(kind.map(SubjectKind::as_str).unwrap_or(""))
    .bind(MAX_BLACKLIST_PAGE)
    .fetch_all(pool)
    .await?;
    Ok(entries)
}

/// A member's real-name verification.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct MemberVerification {
    /// The member.
    pub member_id: String,
    /// The verifier's reference (e.g. the check's id at the identity provider).
    pub reference: String,
    /// The key that reported it.
    pub verified_by: String,
    /// The brand whose key reported it, if a brand did.
    pub verified_by_brand: Option<String>,
    /// When, Unix ms.
    pub verified_at: i64,
}

/// Records a member as real-name verified; a member verified before keeps the first record.
pub async fn verify_member(
    conn: &mut AnyConnection,
    member_id: &str,
    reference: &str,
    verified_by: &str,
    verified_by_brand: Option<&str>,
    now_ms: i64,
) -> DomainResult<MemberVerification> {
    sqlx::query(
        "INSERT INTO member_verifications (member_id, reference, verified_by, verified_by_brand,
            verified_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (member_id) DO NOTHING",
    )
    .bind(member_id)
    .bind(reference)
    .bind(verified_by)
    .bind(verified_by_brand)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    let verification = verification_of(conn, member_id)
        .await?
        .ok_or_else(|| DomainError::internal(anyhow::anyhow!("verification row vanished")))?;
    Ok(verification)
}

/// A member's verification, if any.
pub async fn verification_of(
    conn: &mut AnyConnection,
    member_id: &str,
) -> DomainResult<Option<MemberVerification>> {
    let row: Option<MemberVerification> = sqlx::query_as(
        "SELECT member_id, reference, verified_by, verified_by_brand, verified_at
         FROM member_verifications WHERE member_id = $1",
    )
    .bind(member_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row)
}

/// Validates a blacklist reason or verification reference.
pub fn validate_text(field: &str, value: &str) -> DomainResult<()> {
    let trimmed = value.trim();
    if trimmed.is_empty() || value.len() > MAX_REASON_LEN || value.chars().any(char::is_control) {
        return Err(DomainError::validation(format!(
            "{field} must be 1..={MAX_REASON_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_limits_are_refused() {
        let config = RiskConfig {
            member_redemptions_per_day: -1,
            ..RiskConfig::default()
        };
        assert!(config.validate().is_err());
        assert!(RiskConfig::default().validate().is_ok());
    }

    #[test]
    fn device_ids_are_bounded() {
        assert!(validate_device_id("till-3").is_ok());
        assert!(validate_device_id("").is_err());
        assert!(validate_device_id("has space").is_err());
        assert!(validate_device_id(&"x".repeat(MAX_DEVICE_ID_LEN + 1)).is_err());
    }
}
