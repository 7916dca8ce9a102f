//! The webhook delivery worker: claims due deliveries with a lease, signs and POSTs them, retries
//! failures with exponential backoff and full jitter, dead-letters them after
//! [`WebhooksConfig::max_attempts`], and logs every attempt. Also the SSRF guard every target
//! passes, at subscribe time ([`check_target`]) and again before each attempt, where the
//! connection goes only to the address that was checked (so a DNS answer that changes between
//! the check and the connection cannot reach a private address).
//!
//! Several workers (nodes on one PostgreSQL, or the periodic worker beside a manual run) are
//! safe: a delivery is claimed by a guarded `UPDATE` that sets a lease, and an attempt's outcome
//! is written only while its worker still holds the lease. A host killed mid-attempt leaves a
//! lease that expires; the delivery is then attempted again (receivers dedupe on
//! `Coalition-Webhook-Id`, which is the event's id and never changes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use utoipa::ToSchema;

use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::new_id;
use crate::workflows::Services;

/// Header: the event's id, the same on every attempt and replay (receivers dedupe on it).
pub const HEADER_ID: &str = "Coalition-Webhook-Id";
/// Header: Unix seconds when the attempt was signed.
pub const HEADER_TIMESTAMP: &str = "Coalition-Webhook-Timestamp";
/// Header: `v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
pub const HEADER_SIGNATURE: &str = "Coalition-Webhook-Signature";
/// Most bytes of a receiver's answer read; the answer is only logged, and a hostile receiver
/// must not make the worker buffer an unbounded body.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024;
/// Longest error text kept per attempt.
const MAX_ERROR_CHARS: usize = 500;
/// Deliveries claimed per pass; bounds one pass's memory and its hold on the database.
const CLAIM_BATCH: i64 = 50;
/// Attempts in flight at once per worker.
const MAX_CONCURRENT_ATTEMPTS: usize = 8;
/// The lease outlives the attempt's timeout by this much, so a slow database write after the
/// answer cannot let a second worker send the same delivery meanwhile.
const LEASE_MARGIN_MS: i64 = 30_000;
/// Shortest accepted poll interval, so a misconfiguration cannot spin the database.
const MIN_POLL_INTERVAL_MS: u64 = 10;
/// Longest accepted per-attempt timeout.
const MAX_TIMEOUT_MS: u64 = 120_000;
/// Most attempts per retry budget a configuration may ask for.
const MAX_MAX_ATTEMPTS: i64 = 50;
/// Longest retention of delivered events: ten years of delivery log is more than any audit of
/// a receiver needs, and a bound keeps `retention_days × DAY_MS` far from overflow.
pub const MAX_RETENTION_DAYS: i64 = 3_650;
/// Delivered deliveries purged per worker pass: the purge runs beside the deliveries, so a
/// backlog of old rows is worked off in small transactions rather than one long one.
const PURGE_BATCH: i64 = 200;

/// The `[webhooks]` configuration section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Run the delivery worker inside `coalition serve` (else `coalition jobs run
    /// webhook-deliveries` or `POST /jobs/webhook-deliveries` must).
    pub enabled: bool,
    /// Allow loopback, private, link-local and other non-public targets: for development and
    /// tests only, never in production.
    pub allow_private_targets: bool,
    /// How often the worker looks for due deliveries.
    pub poll_interval_ms: u64,
    /// Per-attempt timeout (connect, send, answer).
    pub timeout_ms: u64,
    /// Attempts per retry budget before a delivery is dead-lettered.
    pub max_attempts: i64,
    /// Backoff base: the n-th retry waits a random time in `[0, min(max, base * 2^(n-1))]`.
    pub retry_base_ms: i64,
    /// Backoff ceiling.
    pub retry_max_ms: i64,
    /// Active subscriptions per brand.
    pub max_subscriptions_per_brand: i64,
    /// Days a delivered event stays in the delivery log (with its attempts) before the worker
    /// purges it. Pending and dead deliveries are kept until they are delivered (a replay).
    pub retention_days: i64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_private_targets: false,
            poll_interval_ms: 1_000,
            timeout_ms: 10_000,
            max_attempts: 8,
            retry_base_ms: 30_000,
            retry_max_ms: 6 * 60 * 60 * 1000,
            max_subscriptions_per_brand: 20,
            retention_days: 30,
        }
    }
}

impl WebhooksConfig {
    /// Checks the section.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.poll_interval_ms >= MIN_POLL_INTERVAL_MS,
            "webhooks.poll_interval_ms must be at least {MIN_POLL_INTERVAL_MS}"
        );
        anyhow::ensure!(
            (1..=MAX_TIMEOUT_MS).contains(&self.timeout_ms),
            "webhooks.timeout_ms must be 1..={MAX_TIMEOUT_MS}"
        );
        anyhow::ensure!(
            (1..=MAX_MAX_ATTEMPTS).contains(&self.max_attempts),
            "webhooks.max_attempts must be 1..={MAX_MAX_ATTEMPTS}"
        );
        anyhow::ensure!(
            self.retry_base_ms >= 0 && self.retry_max_ms >= self.retry_base_ms,
            "webhooks.retry_base_ms must be >= 0 and at most retry_max_ms"
        );
        anyhow::ensure!(
            self.max_subscriptions_per_brand >= 1,
            "webhooks.max_subscriptions_per_brand must be at least 1"
        );
        anyhow::ensure!(
            (1..=MAX_RETENTION_DAYS).contains(&self.retention_days),
            "webhooks.retention_days must be 1..={MAX_RETENTION_DAYS}"
        );
        Ok(())
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.timeout_ms).unwrap_or(i64::MAX / 2) + LEASE_MARGIN_MS
    }
}

// ---------------------------------------------------------------------------------------------
// Signing

/// The signature header's value for `body` signed at `timestamp` (Unix seconds) with `secret`:
/// `v1=` and the hex HMAC-SHA256 of `"{timestamp}.{body}"`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length, so this never fails.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` (a `Coalition-Webhook-Signature` value) is a valid signature of `body` at
/// `timestamp`; compares in constant time. Receivers written in Rust can use the same code.
pub fn verify(secret: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("v1=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

// ---------------------------------------------------------------------------------------------
// The SSRF guard

/// A target that passed the guard: the URL and the address to connect to.
#[derive(Debug, Clone)]
pub struct CheckedTarget {
    /// The parsed URL.
    pub url: reqwest::Url,
    /// The host name to pin (`None` for an IP literal).
    pub host: Option<String>,
    /// The checked address the connection must go to.
    pub addr: SocketAddr,
}

fn forbidden(detail: impl Into<String>) -> DomainError {
    DomainError::bad_request("webhook_target_forbidden", detail)
}

/// Whether an address is one a webhook may not reach: loopback, private (RFC 1918), link-local,
/// unique-local, shared (CGNAT), multicast, broadcast, unspecified, documentation, benchmarking
/// and reserved ranges, in IPv4 and IPv6 (IPv4-mapped, -compatible, NAT64 and 6to4 addresses
/// are judged by the IPv4 address inside).
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0                                   // "this network"
        || (a == 100 && (64..128).contains(&b))     // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0)           // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19))       // benchmarking
        || a >= 240 // reserved
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_forbidden_v4(v4);
    }
    let seg = ip.segments();
    // IPv4-compatible (::a.b.c.d, deprecated) and NAT64 (64:ff9b::/96): the IPv4 inside decides.
    let embedded = Ipv4Addr::new(
        (seg[6] >> 8) as u8,
        (seg[6] & 0xff) as u8,
        (seg[7] >> 8) as u8,
        (seg[7] & 0xff) as u8,
    );
    if seg[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return is_forbidden_v4(embedded);
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_forbidden_v4(embedded);
    }
    if seg[0] == 0x2002 {
        // 6to4: the IPv4 address is in segments 1 and 2.
        let v4 = Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            (seg[1] & 0xff) as u8,
            (seg[2] >> 8) as u8,
            (seg[2] & 0xff) as u8,
        );
        return is_forbidden_v4(v4);
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00          // unique local fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80          // link-local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0          // site-local (deprecated) fec0::/10
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation 2001:db8::/32
        || (seg[0] == 0x2001 && seg[1] == 0)     // Teredo 2001::/32
        || (seg[0] == 0x0100 && seg[1..4] == [0, 0, 0]) // discard-only 100::/64
}

/// Parses and checks a webhook target: `http` or `https`, no credentials in the URL, a host,
/// and — unless `allow_private` — every address the host resolves to public. Returns the
/// address to connect to. Errors are `webhook_target_forbidden` (a refused address or scheme)
/// or `invalid_webhook_url`.
pub async fn check_target(url: &str, allow_private: bool) -> DomainResult<CheckedTarget> {
    let parsed = reqwest::Url::parse(url).map_err(|err| {
        DomainError::bad_request("invalid_webhook_url", format!("not a URL: {err}"))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(forbidden("only http and https targets are allowed"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(DomainError::bad_request(
            "invalid_webhook_url",
            "the URL may not carry credentials; verify the signature instead",
        ));
    }
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| DomainError::bad_request("invalid_webhook_url", "no port"))?;
    let Some(host_str) = parsed.host_str().filter(|h| !h.is_empty()) else {
        return Err(DomainError::bad_request(
            "invalid_webhook_url",
            "the URL has no host",
        ));
    };
    let literal = host_str
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host_str)
        .parse::<IpAddr>()
        .ok();
    let (host, addrs): (Option<String>, Vec<SocketAddr>) = match literal {
        Some(ip) => (None, vec![SocketAddr::new(ip, port)]),
        None => {
            let resolved = tokio::net::lookup_host((host_str, port))
                .await
                .map_err(|err| {
                    DomainError::bad_request(
                        "webhook_target_unresolvable",
                        format!("cannot resolve {host_str:?}: {err}"),
                    )
                })?
                .collect::<Vec<_>>();
            (Some(host_str.to_owned()), resolved)
        }
    };
    let Some(first) = addrs.first().copied() else {
        return Err(DomainError::bad_request(
            "webhook_target_unresolvable",
            "the host resolves to no address",
        ));
    };
    if !allow_private {
        if let Some(bad) = addrs.iter().find(|a| is_forbidden_ip(a.ip())) {
            return Err(forbidden(format!(
                "{} is not a public address (loopback, private, link-local and similar \
                 targets are refused)",
                bad.ip()
            )));
        }
    }
    Ok(CheckedTarget {
        url: parsed,
        host,
        addr: first,
    })
}

// ---------------------------------------------------------------------------------------------
// The worker

/// What one pass of the worker did.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
#[schema(as = WebhookDeliveryReport)]
pub struct DeliveryReport {
    /// Deliveries claimed.
    pub claimed: i64,
    /// Answered 2xx.
    pub delivered: i64,
    /// Failed and scheduled again.
    pub retried: i64,
    /// Failed for the last time of their budget (dead-lettered), or their subscription is gone.
    pub dead: i64,
    /// Delivered deliveries older than `retention_days` removed from the log, with their
    /// attempts (and their event, once no delivery of it is left).
    pub purged: i64,
}

/// A claimed delivery, with what it takes to send it.
#[derive(Debug)]
struct Claimed {
    id: String,
    event_id: String,
    event_type: String,
    brand_id: String,
    member_id: Option<String>,
    payload: String,
    url: String,
    secret: String,
    active: bool,
    attempts: i64,
    budget_start: i64,
}

/// How an attempt ended.
#[derive(Debug)]
struct Outcome {
    status_code: Option<i64>,
    error: Option<String>,
}

impl Outcome {
    fn succeeded(&self) -> bool {
        self.error.is_none() && self.status_code.is_some_and(|c| (200..300).contains(&c))
    }
}

/// One pass: claims up to [`CLAIM_BATCH`] due deliveries and attempts each once.
pub async fn run_once(services: &Services) -> DomainResult<DeliveryReport> {
    let worker = new_id();
    let config = &services.settings.webhooks;
    let now = services.now_ms();
    let due: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM webhook_deliveries
         WHERE status = 'pending' AND next_attempt_at <= $1
           AND (lease_until IS NULL OR lease_until <= $1)
         ORDER BY next_attempt_at, id LIMIT $2",
    )
    .bind(now)
    .bind(CLAIM_BATCH)
    .fetch_all(services.store.read())
    .await?;
    let mut claimed = Vec::new();
    for (id,) in due {
        let taken = sqlx::query(
            "UPDATE webhook_deliveries SET lease_owner = $2, lease_until = $3
             WHERE id = $1 AND status = 'pending' AND next_attempt_at <= $4
               AND (lease_until IS NULL OR lease_until <= $4)",
        )
        .bind(&id)
        .bind(&worker)
        .bind(now.saturating_add(config.lease_ms()))
        .bind(now)
        .execute(services.store.write())
        .await?
        .rows_affected();
        if taken == 1 {
            claimed.push(load_claimed(services, &id).await?);
        }
    }
    let mut report = DeliveryReport {
        claimed: i64::try_from(claimed.len()).unwrap_or(i64::MAX),
        ..DeliveryReport::default()
    };
    let results: Vec<DomainResult<Option<bool>>> = futures_util::stream::iter(claimed)
        .map(|delivery| attempt(services, &worker, delivery))
        .buffer_unordered(MAX_CONCURRENT_ATTEMPTS)
        .collect()
        .await;
    for result in results {
        match result? {
            Some(true) => report.delivered += 1,
            Some(false) => report.retried += 1,
            None => report.dead += 1,
        }
    }
    report.purged = purge(services, now).await?;
    Ok(report)
}

/// Removes up to [`PURGE_BATCH`] deliveries delivered more than `retention_days` before
/// `now_ms`, their attempts, and their events once no delivery of them is left. A delivery
/// replayed meanwhile (no longer `delivered`) is left alone.
async fn purge(services: &Services, now_ms: i64) -> DomainResult<i64> {
    let days = services.settings.webhooks.retention_days;
    let cutoff = now_ms.saturating_sub(days.saturating_mul(crate::foundation::clock::DAY_MS));
    let old: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, event_id FROM webhook_deliveries
         WHERE status = 'delivered' AND delivered_at < $1
         ORDER BY delivered_at, id LIMIT $2",
    )
    .bind(cutoff)
    .bind(PURGE_BATCH)
    .fetch_all(services.store.read())
    .await?;
    if old.is_empty() {
        return Ok(0);
    }
    let mut purged = 0;
    let mut tx = services.store.begin().await?;
    for (id, event_id) in &old {
        // A no-op update that locks the row (PostgreSQL) and says whether it is still
        // delivered: a replay cannot slip in between this and the deletes.
        let still_delivered = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'delivered'
             WHERE id = $1 AND status = 'delivered'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if still_delivered == 0 {
            continue;
        }
        sqlx::query("DELETE FROM webhook_attempts WHERE delivery_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        purged +=
            sqlx::query("DELETE FROM webhook_deliveries WHERE id = $1 AND status = 'delivered'")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        sqlx::query(
            "DELETE FROM webhook_events WHERE id = $1
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries WHERE event_id = $1)",
        )
        .bind(event_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(i64::try_from(purged).unwrap_or(i64::MAX))
}

async fn load_claimed(services: &Services, id: &str) -> DomainResult<Claimed> {
    type Row = (
        String,
        String,
        String,
        Option<String>,
        String,
        String,
        String,
        i64,
        i64,
        i64,
    );
    let row: Row = sqlx::query_as(
        "SELECT d.event_id, e.event_type, d.brand_id, e.member_id, e.payload, s.url, s.secret,
                s.active, d.attempts, d.budget_start
         FROM webhook_deliveries d
         JOIN webhook_events e ON e.id = d.event_id
         JOIN webhook_subscriptions s ON s.id = d.subscription_id
         WHERE d.id = $1",
    )
    .bind(id)
    .fetch_one(services.store.write())
    .await?;
    let (event_id, event_type, brand_id, member_id, payload, url, secret, active, attempts, budget) =
        row;
    Ok(Claimed {
        id: id.to_owned(),
        event_id,
        event_type,
        brand_id,
        member_id,
        payload,
        url,
        secret,
        active: active == 1,
        attempts,
        budget_start: budget,
    })
}

/// The body of a delivery: the same bytes on every attempt, so a receiver may hash it.
fn body_of(delivery: &Claimed) -> DomainResult<Vec<u8>> {
    let data: serde_json::Value =
        serde_json::from_str(&delivery.payload).map_err(DomainError::internal)?;
    serde_json::to_vec(&serde_json::json!({
        "id": delivery.event_id,
        "type": delivery.event_type,
        "brand_id": delivery.brand_id,
        "member_id": delivery.member_id,
        "data": data,
    }))
    .map_err(DomainError::internal)
}

/// Attempts one claimed delivery and records the outcome: `Some(true)` delivered,
/// `Some(false)` to be retried, `None` dead.
async fn attempt(
    services: &Services,
    worker: &str,
    delivery: Claimed,
) -> DomainResult<Option<bool>> {
    let config = &services.settings.webhooks;
    let number = delivery.attempts + 1;
    let outcome = if delivery.active {
        send(config, &delivery, services.now_ms()).await
    } else {
        Outcome {
            status_code: None,
            error: Some("subscription deleted".to_owned()),
        }
    };
    let now = services.now_ms();
    let exhausted = number - delivery.budget_start >= config.max_attempts || !delivery.active;
    let (status, next_at, verdict) = if outcome.succeeded() {
        ("delivered", 0, Some(true))
    } else if exhausted {
        ("dead", 0, None)
    } else {
        let delay = backoff_ms(config, number - delivery.budget_start);
        ("pending", now.saturating_add(delay), Some(false))
    };
    if let Some(error) = &outcome.error {
        tracing::info!(
            delivery = %delivery.id, attempt = number, status, error = %error,
            "webhook attempt failed"
        );
    }
    let mut tx = services.store.begin().await?;
    let updated = sqlx::query(
        "UPDATE webhook_deliveries
         SET status = $3, attempts = $4, next_attempt_at = $5, lease_owner = NULL,
             lease_until = NULL, last_status_code = $6, last_error = $7, last_attempt_at = $8,
             delivered_at = CASE WHEN $3 = 'delivered' THEN $8 ELSE delivered_at END
         WHERE id = $1 AND lease_owner = $2",
    )
    .bind(&delivery.id)
    .bind(worker)
    .bind(status)
    .bind(number)
    .bind(next_at)
    .bind(outcome.status_code)
    .bind(outcome.error.as_deref())
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated != 1 {
        // The lease ran out and another worker took the delivery: its outcome counts.
        tx.rollback().await?;
        return Ok(Some(false));
    }
    sqlx::query(
        "INSERT INTO webhook_attempts (id, delivery_id, attempt, status_code, error, attempted_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(new_id())
    .bind(&delivery.id)
    .bind(number)
    .bind(outcome.status_code)
    .bind(outcome.error.as_deref())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(verdict)
}

/// Full jitter: a random wait in `[0, min(max, base * 2^(retry-1))]`.
fn backoff_ms(config: &WebhooksConfig, retry: i64) -> i64 {
    let exp = u32::try_from(retry.saturating_sub(1).clamp(0, 40)).unwrap_or(40);
    let ceiling = config
        .retry_base_ms
        .saturating_mul(1_i64.checked_shl(exp).unwrap_or(i64::MAX))
        .min(config.retry_max_ms)
        .max(0);
    if ceiling == 0 {
        0
    } else {
        rand::thread_rng().gen_range(0..=ceiling)
    }
}

fn truncate(text: String) -> String {
    if text.chars().count() <= MAX_ERROR_CHARS {
        text
    } else {
        text.chars().take(MAX_ERROR_CHARS).collect()
    }
}

/// Checks the target again, then POSTs the signed body to the checked address only.
async fn send(config: &WebhooksConfig, delivery: &Claimed, now_ms: i64) -> Outcome {
    let failed = |error: String| Outcome {
        status_code: None,
        error: Some(truncate(error)),
    };
    let target = match check_target(&delivery.url, config.allow_private_targets).await {
        Ok(target) => target,
        Err(err) => return failed(format!("{}: {}", err.code, err.detail)),
    };
    let body = match body_of(delivery) {
        Ok(body) => body,
        Err(err) => return failed(format!("cannot build the body: {err}")),
    };
    let timestamp = now_ms.div_euclid(1000);
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_millis(config.timeout_ms))
        .no_proxy();
    if let Some(host) = &target.host {
        builder = builder.resolve(host, target.addr);
    }
    let client = match builder.build() {
        Ok(client) => client,
        Err(err) => return failed(format!("cannot build the HTTP client: {err}")),
    };
    let response = client
        .post(target.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::USER_AGENT, "Coalition-Webhooks/1")
        .header(HEADER_ID, &delivery.event_id)
        .header(HEADER_TIMESTAMP, timestamp.to_string())
        .header(
            HEADER_SIGNATURE,
            signature(&delivery.secret, timestamp, &body),
        )
        .body(body)
        .send()
        .await;
    let mut response = match response {
        Ok(response) => response,
        Err(err) => return failed(describe(&err)),
    };
    let status = i64::from(response.status().as_u16());
    // Read (and drop) at most MAX_RESPONSE_BYTES of the answer, within the same timeout.
    let mut read = 0usize;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                read += chunk.len();
                if read > MAX_RESPONSE_BYTES {
                    break;
                }
            }
            Ok(None) => break,
            Err(err) => {
                return Outcome {
                    status_code: Some(status),
                    error: Some(truncate(describe(&err))),
                }
            }
        }
    }
    Outcome {
        status_code: Some(status),
        error: (!(200..300).contains(&status)).then(|| format!("the receiver answered {status}")),
    }
}

fn describe(err: &reqwest::Error) -> String {
    use std::error::Error;
    let mut text = if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Starts the delivery worker (if enabled); it stops when `shutdown` turns true or its sender
/// is dropped. A pass that found a full batch is followed at once by another.
pub fn spawn(services: Services, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let config = services.settings.webhooks.clone();
        if !config.enabled {
            let _ = shutdown.wait_for(|stop| *stop).await;
            return;
        }
        let period = Duration::from_millis(config.poll_interval_ms.max(MIN_POLL_INTERVAL_MS));
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                _ = interval.tick() => {
                    loop {
                        match run_once(&services).await {
                            Ok(report) if report.claimed >= CLAIM_BATCH => continue,
                            Ok(report) if report.claimed > 0 => {
                                tracing::debug!(?report, "webhook deliveries");
                            }
                            Ok(_) => {}
                            Err(err) => {
                                tracing::warn!(error = %err, "webhook delivery pass failed");
                            }
                        }
                        break;
                    }
                }
            }
        }
        tracing::debug!("webhook worker stopped");
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_a_changed_body_does_not() {
        let sig = signature("whsec_x", 1_700_000_000, b"{\"a\":1}");
        assert!(sig.starts_with("v1="));
        assert!(verify("whsec_x", 1_700_000_000, b"{\"a\":1}", &sig));
        assert!(!verify("whsec_x", 1_700_000_001, b"{\"a\":1}", &sig));
        assert!(!verify("whsec_x", 1_700_000_000, b"{\"a\":2}", &sig));
        assert!(!verify("whsec_y", 1_700_000_000, b"{\"a\":1}", &sig));
        assert!(!verify("whsec_x", 1_700_000_000, b"{\"a\":1}", "v1=zz"));
    }

    #[test]
    fn non_public_addresses_are_forbidden() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:c0a8:0101::1",
        ] {
            let ip: IpAddr = bad.parse().expect(bad);
            assert!(is_forbidden_ip(ip), "{bad} should be forbidden");
        }
        for good in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = good.parse().expect(good);
            assert!(!is_forbidden_ip(ip), "{good} should be allowed");
        }
    }

    #[tokio::test]
    async fn targets_are_checked_by_scheme_and_address() {
        let refused = |r: DomainResult<CheckedTarget>| r.err().map(|e| e.code);
        assert_eq!(
            refused(check_target("ftp://example.com/x", true).await),
            Some("webhook_target_forbidden")
        );
        assert_eq!(
            refused(check_target("http://127.0.0.1:9/x", false).await),
            Some("webhook_target_forbidden")
        );
        assert_eq!(
            refused(check_target("http://[::ffff:10.0.0.1]/x", false).await),
            Some("webhook_target_forbidden")
        );
        assert_eq!(
            refused(check_target("http://localhost:9/x", false).await),
            Some("webhook_target_forbidden")
        );
        assert_eq!(
            refused(check_target("http://u:p@8.8.8.8/x", false).await),
            Some("invalid_webhook_url")
        );
        assert_eq!(
            refused(check_target("not a url", false).await),
            Some("invalid_webhook_url")
        );
        assert!(check_target("http://127.0.0.1:9/x", true).await.is_ok());
        assert!(check_target("https://8.8.8.8/x", false).await.is_ok());
    }

    #[test]
    fn backoff_stays_within_its_ceiling() {
        let config = WebhooksConfig {
            retry_base_ms: 100,
            retry_max_ms: 1_000,
            ..WebhooksConfig::default()
        };
        for retry in 1..60 {
            let d = backoff_ms(&config, retry);
            assert!((0..=1_000).contains(&d));
            assert!(d <= 100 * (1 << (retry - 1).min(20)));
        }
        let zero = WebhooksConfig {
            retry_base_ms: 0,
            retry_max_ms: 0,
            ..WebhooksConfig::default()
        };
        assert_eq!(backoff_ms(&zero, 5), 0);
    }
}
