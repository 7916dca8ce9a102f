//! Webhooks for brands: subscriptions of endpoints to event types, and recording events.
//!
//! [`record`] is the transactional outbox: it runs in the caller's transaction, so an event
//! exists exactly when its cause commits. It fans out at once — one delivery row per active
//! subscription of the event's brand to its type — and writes nothing at all when no
//! subscription matches (one indexed read). The delivery worker (`workflows::webhooks`) signs
//! and posts the deliveries, retries them and logs every attempt.
//!
//! Scope: a subscription belongs to one brand and only receives that brand's events. A brand key
//! sees members masked (`domain::members`), so payloads are masked the same way before they are
//! stored: `phone`, `name` and `email` fields are masked, `birthday` and `blocked_reason`
//! dropped, wherever they appear in the payload.

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::new_id;

/// Largest stored payload: events carry ids and amounts, not documents; a bigger one is
/// replaced by a marker rather than failing the business write that caused it.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// What happened, as a subscription names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
#[schema(as = WebhookEventType)]
pub enum EventType {
    /// A purchase was recorded at the brand's counter.
    Purchase,
    /// A purchase at the brand was refunded.
    Refund,
    /// A perk was redeemed (the brand funds or honours it).
    Redemption,
    /// A coupon was honoured at the brand's counter.
    CouponHonoured,
    /// A member's tier changed (sent to the brand that caused it, or the member's brand).
    TierChanged,
    /// A member's lifecycle stage changed.
    StageChanged,
    /// A journey acted on a member for the brand.
    JourneyAction,
    /// A referral was rewarded at the brand.
    ReferralRewarded,
    /// A settlement period involving the brand was closed.
    SettlementPeriodClosed,
    /// A version of one of the brand's plugins changed status.
    PluginVersionStatus,
}

impl EventType {
    /// Every event type, in documentation order.
    pub const ALL: [EventType; 10] = [
        Self::Purchase,
        Self::Refund,
        Self::Redemption,
        Self::CouponHonoured,
        Self::TierChanged,
        Self::StageChanged,
        Self::JourneyAction,
        Self::ReferralRewarded,
        Self::SettlementPeriodClosed,
        Self::PluginVersionStatus,
    ];

    /// The stored (and wire) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Purchase => "purchase",
            Self::Refund => "refund",
            Self::Redemption => "redemption",
            Self::CouponHonoured => "coupon-honoured",
            Self::TierChanged => "tier-changed",
            Self::StageChanged => "stage-changed",
            Self::JourneyAction => "journey-action",
            Self::ReferralRewarded => "referral-rewarded",
            Self::SettlementPeriodClosed => "settlement-period-closed",
            Self::PluginVersionStatus => "plugin-version-status",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

/// Records an event of `brand_id` in the caller's transaction: one outbox row and one delivery
/// per active subscription of that brand to `event_type`; nothing when none matches. The
/// payload (a JSON object of ids, amounts and codes) is masked as a brand key would see it.
pub async fn record(
    conn: &mut AnyConnection,
    brand_id: &str,
    event_type: EventType,
    member_id: Option<&str>,
    payload: serde_json::Value,
) -> DomainResult<()> {
    let subscriptions: Vec<(String,)> = sqlx::query_as(
        "SELECT e.subscription_id FROM webhook_subscription_events e
         JOIN webhook_subscriptions s ON s.id = e.subscription_id
         WHERE e.brand_id = $1 AND e.event_type = $2 AND s.active = 1
         ORDER BY e.subscription_id",
    )
    .bind(brand_id)
    .bind(event_type.as_str())
    .fetch_all(&mut *conn)
    .await?;
    if subscriptions.is_empty() {
        return Ok(());
    }
    let mut payload = payload;
    mask_personal_data(&mut payload);
    let mut text = serde_json::to_string(&payload).map_err(DomainError::internal)?;
    if text.len() > MAX_PAYLOAD_BYTES {
        tracing::warn!(
            brand_id,
            event_type = event_type.as_str(),
            bytes = text.len(),
            "webhook payload over the limit; sent as truncated"
        );
        text = serde_json::json!({ "truncated": true }).to_string();
    }
    let event_id = new_id();
    sqlx::query(
        "INSERT INTO webhook_events (id, brand_id, event_type, member_id, payload)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&event_id)
    .bind(brand_id)
    .bind(event_type.as_str())
    .bind(member_id)
    .bind(&text)
    .execute(&mut *conn)
    .await?;
    for (subscription_id,) in subscriptions {
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, event_id, subscription_id, brand_id)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(new_id())
        .bind(&event_id)
        .bind(&subscription_id)
        .bind(brand_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Masks personal fields wherever they appear, as a brand key's member view does.
pub fn mask_personal_data(value: &mut serde_json::Value) {
    use crate::domain::members::{mask_email, mask_name, mask_phone};
    match value {
        serde_json::Value::Object(map) => {
            map.remove("birthday");
            map.remove("blocked_reason");
            for (key, field) in map.iter_mut() {
                match (key.as_str(), &*field) {
                    ("phone", serde_json::Value::String(s)) => *field = mask_phone(s).into(),
                    ("name", serde_json::Value::String(s)) => *field = mask_name(s).into(),
                    ("email", serde_json::Value::String(s)) => *field = mask_email(s).into(),
                    _ => mask_personal_data(field),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(mask_personal_data),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Subscriptions

/// Most event types one subscription may name (there are only this many).
const MAX_EVENT_TYPES: usize = EventType::ALL.len();
/// Longest accepted endpoint URL.
pub const MAX_URL_LEN: usize = 2_000;
/// Random bytes of a signing secret: 256 bits, as many as the HMAC-SHA256 key block needs.
const SECRET_RANDOM_BYTES: usize = 32;
/// Prefix that makes signing secrets recognisable to secret scanners.
pub const SECRET_PREFIX: &str = "whsec_";
/// Most deliveries one page of the delivery log shows.
pub const MAX_DELIVERIES_PAGE: i64 = 200;
/// Attempts shown per delivery in the log (the latest ones).
const MAX_ATTEMPTS_SHOWN: i64 = 50;

/// What a brand (or an admin for it) asks to subscribe.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = WebhookSubscribeRequest)]
pub struct SubscribeRequest {
    /// The brand whose events are sent; a brand key may omit it (its own brand), an admin must
    /// name one.
    #[serde(default)]
    pub brand_id: Option<String>,
    /// Where to POST: `http` or `https`, a public address (see the SSRF rules in
    /// `docs/WEBHOOKS.md`).
    pub url: String,
    /// Event types to receive, at least one.
    pub event_types: Vec<EventType>,
}

/// A subscription as its brand sees it (never with its secret).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = WebhookSubscription)]
pub struct SubscriptionView {
    /// Id.
    pub id: String,
    /// The brand whose events it receives.
    pub brand_id: String,
    /// The endpoint.
    pub url: String,
    /// Event types it receives.
    pub event_types: Vec<EventType>,
    /// Whether it still receives events (deleted subscriptions stay for the delivery log).
    pub active: bool,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Unix ms.
    pub updated_at_ms: i64,
}

/// A new subscription, or a rotated secret: the signing secret is shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = WebhookSubscriptionWithSecret)]
pub struct SubscriptionWithSecret {
    /// The subscription.
    pub subscription: SubscriptionView,
    /// The HMAC-SHA256 key the signatures are made with; store it now, it is not shown again.
    pub secret: String,
}

/// A fresh signing secret.
pub fn generate_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; SECRET_RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", hex::encode(bytes))
}

type SubscriptionRow = (String, String, String, String, i64, i64, i64);

const SUBSCRIPTION_COLUMNS: &str = "id, brand_id, url, event_types, active, created_at, updated_at";

fn subscription_view(row: SubscriptionRow) -> SubscriptionView {
    let (id, brand_id, url, types, active, created_at_ms, updated_at_ms) = row;
    let event_types: Vec<String> = serde_json::from_str(&types).unwrap_or_default();
    SubscriptionView {
        id,
        brand_id,
        url,
        event_types: event_types
            .iter()
            .filter_map(|t| EventType::parse(t))
            .collect(),
        active: active == 1,
        created_at_ms,
        updated_at_ms,
    }
}

/// Creates a subscription of `brand_id` to `url` (already checked by the caller against the
/// SSRF rules) for `event_types`; refuses more than `max_per_brand` active ones.
pub async fn subscribe(
    conn: &mut AnyConnection,
    brand_id: &str,
    url: &str,
    event_types: &[EventType],
    max_per_brand: i64,
    now_ms: i64,
) -> DomainResult<SubscriptionWithSecret> {
    let mut types: Vec<EventType> = Vec::new();
    for t in event_types {
        if !types.contains(t) {
            types.push(*t);
        }
    }
    if types.is_empty() || types.len() > MAX_EVENT_TYPES {
        return Err(DomainError::bad_request(
            "invalid_event_types",
            "name at least one event type",
        ));
    }
    if url.is_empty() || url.len() > MAX_URL_LEN {
        return Err(DomainError::bad_request(
            "invalid_webhook_url",
            format!("the URL must be 1..={MAX_URL_LEN} characters"),
        ));
    }
    let brand: Option<(String,)> = sqlx::query_as("SELECT id FROM brands WHERE id = $1")
        .bind(brand_id)
        .fetch_optional(&mut *conn)
        .await?;
    if brand.is_none() {
        return Err(DomainError::bad_request(
            "unknown_brand",
            format!("brand {brand_id:?} does not exist"),
        ));
    }
    let (count,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM webhook_subscriptions WHERE brand_id = $1 AND active = 1",
    )
    .bind(brand_id)
    .fetch_one(&mut *conn)
    .await?;
    if count >= max_per_brand {
        return Err(DomainError::unprocessable(
            "webhook_subscription_limit",
            format!("a brand may have at most {max_per_brand} active subscriptions"),
        ));
    }
    let id = new_id();
    let secret = generate_secret();
    let names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
    let types_json = serde_json::to_string(&names).map_err(DomainError::internal)?;
    sqlx::query(
        "INSERT INTO webhook_subscriptions
            (id, brand_id, url, event_types, secret, active, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 1, $6, $6)",
    )
    .bind(&id)
    .bind(brand_id)
    .bind(url)
    .bind(&types_json)
    .bind(&secret)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    for t in &types {
        sqlx::query(
            "INSERT INTO webhook_subscription_events (subscription_id, brand_id, event_type)
             VALUES ($1, $2, $3)",
        )
        .bind(&id)
        .bind(brand_id)
        .bind(t.as_str())
        .execute(&mut *conn)
        .await?;
    }
    let subscription = subscription(&mut *conn, &id, None).await?;
    Ok(SubscriptionWithSecret {
        subscription,
        secret,
    })
}

/// One subscription; `scope` (a brand key's brand) hides other brands' subscriptions behind
/// `not_found`.
pub async fn subscription(
    conn: &mut AnyConnection,
    id: &str,
    scope: Option<&str>,
) -> DomainResult<SubscriptionView> {
    let row: Option<SubscriptionRow> = sqlx::query_as(&format!(
        "SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) if scope.is_none_or(|b| b == row.1) => Ok(subscription_view(row)),
        _ => Err(DomainError::not_found("webhook subscription", id)),
    }
}

/// The subscriptions of one brand, or of every brand (`None`), oldest first.
pub async fn subscriptions(
    conn: &mut AnyConnection,
    brand: Option<&str>,
) -> DomainResult<Vec<SubscriptionView>> {
    let rows: Vec<SubscriptionRow> = sqlx::query_as(&format!(
        "SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions
         WHERE ($1 IS NULL OR brand_id = $1) ORDER BY id"
    ))
    .bind(brand)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(subscription_view).collect())
}

/// Deletes a subscription: it receives no more events; its pending deliveries are dropped by
/// the worker (dead, "subscription deleted"); the row stays for the delivery log.
pub async fn unsubscribe(
    conn: &mut AnyConnection,
    id: &str,
    scope: Option<&str>,
    now_ms: i64,
) -> DomainResult<SubscriptionView> {
    subscription(&mut *conn, id, scope).await?;
    sqlx::query("UPDATE webhook_subscriptions SET active = 0, updated_at = $2 WHERE id = $1")
        .bind(id)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    subscription(&mut *conn, id, scope).await
}

/// Replaces a subscription's signing secret; deliveries signed from now on use the new one.
pub async fn rotate_secret(
    conn: &mut AnyConnection,
    id: &str,
    scope: Option<&str>,
    now_ms: i64,
) -> DomainResult<SubscriptionWithSecret> {
    let current = subscription(&mut *conn, id, scope).await?;
    if !current.active {
        return Err(DomainError::conflict(
            "webhook_subscription_deleted",
            "a deleted subscription has no secret to rotate",
        ));
    }
    let secret = generate_secret();
    sqlx::query("UPDATE webhook_subscriptions SET secret = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(&secret)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    Ok(SubscriptionWithSecret {
        subscription: subscription(&mut *conn, id, scope).await?,
        secret,
    })
}

// ---------------------------------------------------------------------------------------------
// The delivery log

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = WebhookDeliveryStatus)]
pub enum DeliveryStatus {
    /// Waiting for its (next) attempt.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Dead-lettered: every attempt of its budget failed (replay it by hand).
    Dead,
}

impl DeliveryStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "delivered" => Self::Delivered,
            "dead" => Self::Dead,
            _ => Self::Pending,
        }
    }
}

/// One attempt to deliver.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = WebhookAttempt)]
pub struct AttemptView {
    /// 1, 2, ... per delivery.
    pub attempt: i64,
    /// The receiver's HTTP status, if it answered.
    pub status_code: Option<i64>,
    /// What went wrong, if anything (a non-2xx answer, a timeout, a refused target).
    pub error: Option<String>,
    /// Unix ms.
    pub attempted_at_ms: i64,
}

/// A delivery of one event to one subscription, with its attempts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = WebhookDelivery)]
pub struct DeliveryView {
    /// Id.
    pub id: String,
    /// The event (also `Coalition-Webhook-Id`, the same on every attempt and replay).
    pub event_id: String,
    /// The event's type.
    pub event_type: EventType,
    /// The subscription.
    pub subscription_id: String,
    /// The brand.
    pub brand_id: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: i64,
    /// When the next attempt is due (pending only), Unix ms; 0 means at once.
    pub next_attempt_at_ms: Option<i64>,
    /// Unix ms of the successful attempt.
    pub delivered_at_ms: Option<i64>,
    /// The last attempt's status code.
    pub last_status_code: Option<i64>,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// The attempts, oldest first (at most the latest 50).
    pub log: Vec<AttemptView>,
}

/// Filters of the delivery log.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter<'a> {
    /// Only this brand's deliveries (a brand key always has it).
    pub brand: Option<&'a str>,
    /// Only this subscription's.
    pub subscription: Option<&'a str>,
    /// Only these.
    pub status: Option<DeliveryStatus>,
    /// Newest first, at most this many.
    pub limit: i64,
}

type DeliveryRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

const DELIVERY_COLUMNS: &str = "d.id, d.event_id, e.event_type, d.subscription_id, d.brand_id, \
     d.status, d.attempts, d.next_attempt_at, d.delivered_at, d.last_status_code, d.last_error";

async fn delivery_view(conn: &mut AnyConnection, row: DeliveryRow) -> DomainResult<DeliveryView> {
    let (
        id,
        event_id,
        event_type,
        subscription_id,
        brand_id,
        status,
        attempts,
        next_attempt_at,
        delivered_at_ms,
        last_status_code,
        last_error,
    ) = row;
    let mut log: Vec<(i64, Option<i64>, Option<String>, i64)> = sqlx::query_as(
        "SELECT attempt, status_code, error, attempted_at FROM webhook_attempts
         WHERE delivery_id = $1 ORDER BY attempt DESC LIMIT $2",
    )
    .bind(&id)
    .bind(MAX_ATTEMPTS_SHOWN)
    .fetch_all(&mut *conn)
    .await?;
    log.reverse();
    let status = DeliveryStatus::parse(&status);
    Ok(DeliveryView {
        id,
        event_id,
        event_type: EventType::parse(&event_type).ok_or_else(|| {
            DomainError::internal(anyhow::anyhow!("stored event type {event_type:?}"))
        })?,
        subscription_id,
        brand_id,
        status,
        attempts,
        next_attempt_at_ms: (status == DeliveryStatus::Pending).then_some(next_attempt_at),
        delivered_at_ms,
        last_status_code,
        last_error,
        log: log
            .into_iter()
            .map(
                |(attempt, status_code, error, attempted_at_ms)| AttemptView {
                    attempt,
                    status_code,
                    error,
                    attempted_at_ms,
                },
            )
            .collect(),
    })
}

/// The delivery log, newest first.
pub async fn deliveries(
    conn: &mut AnyConnection,
    filter: &DeliveryFilter<'_>,
) -> DomainResult<Vec<DeliveryView>> {
    let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d
         JOIN webhook_events e ON e.id = d.event_id
         WHERE ($1 IS NULL OR d.brand_id = $1) AND ($2 IS NULL OR d.subscription_id = $2)
           AND ($3 IS NULL OR d.status = $3)
         ORDER BY d.id DESC LIMIT $4"
    ))
    .bind(filter.brand)
    .bind(filter.subscription)
    .bind(filter.status.map(DeliveryStatus::as_str))
    .bind(filter.limit.clamp(1, MAX_DELIVERIES_PAGE))
    .fetch_all(&mut *conn)
    .await?;
    let mut views = Vec::with_capacity(rows.len());
    for row in rows {
        views.push(delivery_view(&mut *conn, row).await?);
    }
    Ok(views)
}

/// One delivery; `scope` hides other brands' deliveries behind `not_found`.
pub async fn delivery(
    conn: &mut AnyConnection,
    id: &str,
    scope: Option<&str>,
) -> DomainResult<DeliveryView> {
    let row: Option<DeliveryRow> = sqlx::query_as(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d
         JOIN webhook_events e ON e.id = d.event_id WHERE d.id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) if scope.is_none_or(|b| b == row.4) => delivery_view(conn, row).await,
        _ => Err(DomainError::not_found("webhook delivery", id)),
    }
}

/// Sends a delivery again (delivered, dead-lettered or waiting): due at once, with a fresh
/// retry budget. Refused while an attempt is in flight, and for a deleted subscription.
pub async fn replay(
    conn: &mut AnyConnection,
    id: &str,
    scope: Option<&str>,
    now_ms: i64,
) -> DomainResult<DeliveryView> {
    let current = delivery(&mut *conn, id, scope).await?;
    let (active,): (i64,) =
        sqlx::query_as("SELECT active FROM webhook_subscriptions WHERE id = $1")
            .bind(&current.subscription_id)
            .fetch_one(&mut *conn)
            .await?;
    if active != 1 {
        return Err(DomainError::conflict(
            "webhook_subscription_deleted",
            "the delivery's subscription was deleted",
        ));
    }
    let updated = sqlx::query(
        "UPDATE webhook_deliveries
         SET status = 'pending', next_attempt_at = 0, budget_start = attempts
         WHERE id = $1 AND (lease_until IS NULL OR lease_until <= $2)",
    )
    .bind(id)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated != 1 {
        return Err(DomainError::conflict(
            "webhook_delivery_in_flight",
            "an attempt of this delivery is in flight; replay it after it ends",
        ));
    }
    delivery(conn, id, scope).await
}

#[cfg(test)]
mod tests {
    use super::{mask_personal_data, EventType};

    #[test]
    fn every_event_type_parses_back() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(
                serde_json::to_value(t).expect("json"),
                serde_json::Value::from(t.as_str())
            );
        }
        assert_eq!(EventType::parse("nope"), None);
    }

    #[test]
    fn personal_fields_are_masked_at_any_depth() {
        let mut v = serde_json::json!({
            "member": { "phone": "+8613800138000", "name": "Alice", "birthday": "1990-01-01" },
            "lines": [{ "email": "alice@example.com" }],
            "amount_cents": 100
        });
        mask_personal_data(&mut v);
        assert_eq!(v["member"]["phone"], "+86138****8000");
        assert_eq!(v["member"]["name"], "A****");
        assert!(v["member"].get("birthday").is_none());
        assert_eq!(v["lines"][0]["email"], "a***@example.com");
        assert_eq!(v["amount_cents"], 100);
    }
}
